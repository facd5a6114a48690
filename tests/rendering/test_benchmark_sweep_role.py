"""The benchmark role on localhost with a stand-in `vllm`: one run per concurrency of a sweep, prompts scaled per
concurrent request, results fetched as <stamp>-c<N>.json; the single run unchanged; bad sweeps refused first.

The stand-in records the arguments it was given and writes a result document with vLLM's field names, so the
role's own tasks (the tokenizer lookup in a Hub cache, the async run, slurp, fetch, the checks and the summary)
run as they do on a host.
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.equipment.playbook import run_playbook

pytestmark = pytest.mark.playbook

SECRET = "sk-glm-bench-test-1f2e3d4c"
COMMIT = "0123456789abcdef0123456789abcdef01234567"

PLAYBOOK = """
- name: Benchmark with a stand-in client
  hosts: localhost
  connection: local
  gather_facts: false
  roles:
    - role: glm.deploy.benchmark
"""

STAND_IN = """#!{python}
import json, os, sys
args = sys.argv[1:]
def option(name):
    return args[args.index(name) + 1]
concurrency, prompts = int(option("--max-concurrency")), int(option("--num-prompts"))
target = os.path.join(option("--result-dir"), option("--result-filename"))
with open(target + ".argv", "w") as handle:
    json.dump({{"argv": args, "key_in_env": os.environ.get("OPENAI_API_KEY") == "{secret}"}}, handle)
failed = 1 if str(concurrency) == os.environ.get("FAKE_FAIL_AT_CONCURRENCY") else 0
tpot = 30.0 + 10 * concurrency
with open(target, "w") as handle:
    json.dump({{
        "backend": "openai-chat", "num_prompts": prompts, "max_concurrency": concurrency, "duration": 2.0,
        "completed": prompts - failed, "failed": failed, "errors": ["HTTP 500"] * failed,
        "output_throughput": 12.5 * concurrency, "total_token_throughput": 60.0 * concurrency,
        "mean_ttft_ms": 100.0, "median_ttft_ms": 95.0, "p50_ttft_ms": 95.0, "p99_ttft_ms": 180.0,
        "mean_tpot_ms": tpot, "median_tpot_ms": tpot, "p50_tpot_ms": tpot, "p99_tpot_ms": tpot * 1.2,
        "mean_itl_ms": tpot, "median_itl_ms": tpot, "p50_itl_ms": tpot, "p99_itl_ms": tpot * 1.5,
    }}, handle)
print("============ Serving Benchmark Result ============")
"""


def prepare(tmp_path: Path) -> dict[str, Any]:
    tools = tmp_path / "venv" / "bin"
    tools.mkdir(parents=True)
    vllm = tools / "vllm"
    vllm.write_text(STAND_IN.format(python=sys.executable, secret=SECRET))
    # The role runs its tokenizer lookup with the python beside `vllm`: this one has huggingface_hub.
    python = tools / "python"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    for tool in (vllm, python):
        tool.chmod(tool.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    repo = tmp_path / "hub" / "models--glm-deploy--glm-tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    (repo / "snapshots" / COMMIT).mkdir(parents=True)
    (repo / "snapshots" / COMMIT / "tokenizer.json").write_text("{}")
    return {
        "ansible_python_interpreter": sys.executable,
        "benchmark_plan": {
            "hardware": "cpu",
            "model_repo": "glm-deploy/glm-tiny",
            "model_revision": "main",
            "served_model_name": "glm-tiny",
            "port": 8000,
            "cache_env": {"HF_HUB_CACHE": str(tmp_path / "hub")},
        },
        # The catalog's cpu profile.
        "benchmark_profile": {"input_len": 64, "output_len": 16, "num_prompts": 20, "max_concurrency": 4},
        "benchmark_api_key": SECRET,
        "benchmark_vllm": str(vllm),
        "benchmark_host_results_dir": str(tmp_path / "host-results"),
        "benchmark_results_dir": str(tmp_path / "results"),
        "benchmark_result_stamp": "20260301T120000Z",
        # The stand-in answers at once; the default 10 s between checks would only slow the test.
        "benchmark_poll_s": 1,
    }


def run(tmp_path: Path, variables: dict[str, Any], env: dict[str, str] | None = None) -> Any:
    playbook = tmp_path / "benchmark.yml"
    playbook.write_text(PLAYBOOK)
    return run_playbook(playbook, home=tmp_path, variables=variables, inventory="localhost,", env=env)


def recorded_argv(tmp_path: Path, name: str) -> dict[str, Any]:
    recorded: dict[str, Any] = json.loads((tmp_path / "host-results" / f"localhost-{name}.argv").read_text())
    return recorded


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_sweep_runs_each_concurrency_with_scaled_prompts(tmp_path: Path) -> None:
    variables = prepare(tmp_path)
    completed = run(tmp_path, {**variables, "benchmark_concurrencies": [1, 2, 4]})
    assert completed.returncode == 0, completed.stdout[-4000:]
    fetched = sorted(path.name for path in (tmp_path / "results" / "localhost").glob("*.json"))
    assert fetched == [f"20260301T120000Z-c{n}.json" for n in (1, 2, 4)]
    prompts = {}
    for concurrency in (1, 2, 4):
        recorded = recorded_argv(tmp_path, f"20260301T120000Z-c{concurrency}.json")
        argv = recorded["argv"]
        assert option(argv, "--max-concurrency") == str(concurrency)
        prompts[concurrency] = int(option(argv, "--num-prompts"))
        assert option(argv, "--percentile-metrics") == "ttft,tpot,itl,e2el"
        assert option(argv, "--metric-percentiles") == "50,99"
        assert recorded["key_in_env"] and SECRET not in argv
    # 20 prompts at c=4 is 5 per concurrent request: c=2 gets 10, c=1 would get 5 but a point sends at least 8;
    # the point at the profile's concurrency is the profile's own run.
    assert prompts == {1: 8, 2: 10, 4: 20}
    assert "concurrency 2: completed 10/10" in completed.stdout
    assert SECRET not in completed.stdout


def test_without_a_sweep_the_profile_runs_once_as_before(tmp_path: Path) -> None:
    completed = run(tmp_path, prepare(tmp_path))
    assert completed.returncode == 0, completed.stdout[-4000:]
    assert [path.name for path in (tmp_path / "results" / "localhost").glob("*.json")] == ["20260301T120000Z.json"]
    argv = recorded_argv(tmp_path, "20260301T120000Z.json")["argv"]
    assert (option(argv, "--max-concurrency"), option(argv, "--num-prompts")) == ("4", "20")
    assert "completed 20/20" in completed.stdout


def test_a_failed_request_stops_the_sweep_at_its_concurrency(tmp_path: Path) -> None:
    completed = run(
        tmp_path,
        {**prepare(tmp_path), "benchmark_concurrencies": [1, 2]},
        env={"FAKE_FAIL_AT_CONCURRENCY": "1"},
    )
    assert completed.returncode != 0
    assert "1 of 8 benchmark requests at concurrency 1 failed" in completed.stdout
    assert "HTTP 500" in completed.stdout
    # The failed point's result is kept for a person to read; the next concurrency never runs.
    assert (tmp_path / "results" / "localhost" / "20260301T120000Z-c1.json").is_file()
    assert not (tmp_path / "host-results" / "localhost-20260301T120000Z-c2.json").exists()


@pytest.mark.parametrize(
    "concurrencies",
    [[4, 2], [2, 2], [0, 1], [1, 2048], list(range(1, 18))],
    ids=["descending", "repeated", "zero", "too-high", "too-many"],
)
def test_bad_sweeps_are_refused_before_anything_runs(tmp_path: Path, concurrencies: list[int]) -> None:
    completed = run(tmp_path, {**prepare(tmp_path), "benchmark_concurrencies": concurrencies})
    assert completed.returncode != 0
    assert "benchmark_concurrencies must be at most 16 whole numbers from 1 to 1024 in ascending order" in (
        completed.stdout
    )
    assert not (tmp_path / "host-results").exists()


def test_a_sweep_of_words_is_refused_by_the_argument_spec(tmp_path: Path) -> None:
    completed = run(tmp_path, {**prepare(tmp_path), "benchmark_concurrencies": ["one", "two"]})
    assert completed.returncode != 0
    assert "benchmark_concurrencies" in completed.stdout
    assert not (tmp_path / "host-results").exists()



def test_every_public_variable_has_a_default_a_spec_and_a_line_in_the_readme() -> None:
    role = Path(__file__).resolve().parents[2] / "collection" / "roles" / "benchmark"
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text())
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    assert set(defaults) == set(specs)
    readme = (role / "README.md").read_text()
    for name, spec in specs.items():
        assert spec.get("type") and spec.get("description"), name
        assert f"`{name}`" in readme, f"{name} missing from the role README"
