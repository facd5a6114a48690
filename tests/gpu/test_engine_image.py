"""The engine image: its Containerfile as rendered, and the in-image check run against fake CUDA trees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
import yaml
from ansible.plugins.filter.core import FilterModule as AnsibleCoreFilters

from .conftest import COLLECTION

ROLE = COLLECTION / "roles" / "engine_image"
CHECK = ROLE / "files" / "check_engine_image.py"
DIGEST = "vllm/vllm-openai@sha256:" + "d" * 64


def render_containerfile(**overrides: object) -> str:
    env = jinja2.Environment(trim_blocks=True, undefined=jinja2.StrictUndefined)  # noqa: S701 (not HTML)
    env.filters.update({k: f for k, f in AnsibleCoreFilters().filters().items() if k not in env.filters})
    variables: dict[str, object] = {
        "ansible_managed": "Ansible managed",
        "engine_image_plan": {"model": "glm-5.1-fp8", "engine": "vllm"},
        "engine_image_base": "vllm/vllm-openai:v0.19.0",
        "engine_image_model_type": "glm_moe_dsa",
        "engine_image_pip_index_url": "",
        "engine_image_deepgemm": True,
        "_engine_image_base_ref": DIGEST,
        "_engine_image_inputs": "e" * 64,
        "_engine_image_pip": ["transformers>=5.3.0", "transformers>=5.4.0"],
        "_engine_image_cuda_home": "/usr/local/cuda",
        "_engine_image_check_args": [
            "--transformers-minimum",
            "5.4.0",
            "--model-type",
            "glm_moe_dsa",
            "--architecture",
            "GlmMoeDsaForCausalLM",
            "--import-class",
            "--deepgemm",
        ],
        **overrides,
    }
    return env.from_string((ROLE / "templates" / "Containerfile.j2").read_text()).render(variables)


def instructions(containerfile: str) -> list[str]:
    """Dockerfile instructions with continuation lines joined and comments dropped."""
    joined = containerfile.replace("\\\n", " ")
    return [
        line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def test_containerfile_pins_the_base_by_digest_and_labels_its_inputs():
    lines = instructions(render_containerfile())
    assert lines[0] == f"FROM {DIGEST}"
    assert lines[1].startswith(f'LABEL org.glm-deploy.inputs="{"e" * 64}"')


def test_containerfile_upgrades_transformers_and_checks_inside():
    lines = instructions(render_containerfile())
    pip = [line for line in lines if line.startswith("RUN python3 -m pip install")]
    assert pip == ["RUN python3 -m pip install --no-cache-dir 'transformers>=5.3.0' 'transformers>=5.4.0'"]
    assert lines[-1] == (
        "RUN python3 /opt/glm-deploy/check_engine_image.py --strict --transformers-minimum 5.4.0 "
        "--model-type glm_moe_dsa --architecture GlmMoeDsaForCausalLM --import-class --deepgemm"
    )
    # The check runs after the installs, so a build whose transformers still cannot load the model fails.
    assert lines.index(pip[0]) < len(lines) - 1


def test_containerfile_sets_deepgemm_environment():
    env_line = next(line for line in instructions(render_containerfile()) if line.startswith("ENV "))
    assert "CUDA_HOME=/usr/local/cuda" in env_line
    assert "CPATH=/usr/local/cuda/include" in env_line
    assert "PATH=/usr/local/cuda/bin:" in env_line


def test_containerfile_without_upgrades_or_deepgemm():
    lines = instructions(render_containerfile(_engine_image_pip=[], engine_image_deepgemm=False))
    assert not any(line.startswith(("RUN python3 -m pip", "ENV ")) for line in lines)


def test_containerfile_uses_a_pip_mirror_when_given():
    text = render_containerfile(engine_image_pip_index_url="https://pypi.example/simple")
    assert "--index-url https://pypi.example/simple 'transformers>=5.3.0'" in text


def cuda_tree(root: Path, *, cutlass_major: int = 4, with_cuobjdump: bool = True) -> Path:
    """A folder shaped like /usr/local/cuda plus CUTLASS headers, with stand-in tools."""
    home = root / "cuda"
    (home / "bin").mkdir(parents=True)
    (home / "include" / "cutlass").mkdir(parents=True)
    (home / "include" / "cuda_runtime.h").write_text("/* stand-in */\n")
    (home / "include" / "cutlass" / "version.h").write_text(
        f"#define CUTLASS_MAJOR {cutlass_major}\n#define CUTLASS_MINOR 1\n#define CUTLASS_PATCH 0\n"
    )
    tools = ["nvcc", "cuobjdump"] if with_cuobjdump else ["nvcc"]
    for tool in tools:
        (home / "bin" / tool).write_text("#!/bin/sh\nexit 0\n")
        (home / "bin" / tool).chmod(0o755)
    return home


def run_check(*args: str, env: dict[str, str]) -> tuple[int, dict]:
    completed = subprocess.run(
        [sys.executable, str(CHECK), *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    return completed.returncode, json.loads(completed.stdout)


def image_env(home: Path | None, cpath: str | None) -> dict[str, str]:
    # Only the fake tree and the system folders: this machine's own tools must not answer for the "image".
    env = {"PATH": f"{home / 'bin'}:/usr/bin:/bin" if home else "/usr/bin:/bin", "HOME": os.environ["HOME"]}
    if home:
        env["CUDA_HOME"] = str(home)
    if cpath is not None:
        env["CPATH"] = cpath
    return env


@pytest.mark.playbook


def test_check_passes_on_a_complete_image(tmp_path):
    home = cuda_tree(tmp_path)
    rc, report = run_check(
        "--strict",
        "--transformers-minimum",
        "5.4.0",
        "--model-type",
        "glm_moe_dsa",
        "--deepgemm",
        env=image_env(home, str(home / "include")),
    )
    assert (rc, report["ok"], report["problems"]) == (0, True, [])
    assert report["deepgemm"]["cutlass_version"] == "4.1.0"
    assert report["deepgemm"]["nvcc"] == str(home / "bin" / "nvcc")


@pytest.mark.playbook


def test_check_reports_missing_cuobjdump_and_old_cutlass(tmp_path):
    home = cuda_tree(tmp_path, cutlass_major=3, with_cuobjdump=False)
    rc, report = run_check("--strict", "--deepgemm", env=image_env(home, str(home / "include")))
    assert rc == 1
    assert report["deepgemm"]["missing_tools"] is True
    problems = " | ".join(report["problems"])
    assert "cuobjdump is not in the image" in problems
    assert "CUTLASS 3.1.0" in problems and "older than 4.0" in problems


@pytest.mark.playbook


def test_check_reports_cpath_as_fixable_by_environment(tmp_path):
    home = cuda_tree(tmp_path)
    rc, report = run_check("--deepgemm", env=image_env(home, None))
    assert rc == 0  # without --strict the check only reports
    assert report["ok"] is False
    assert report["deepgemm"]["missing_tools"] is False
    assert report["problems"] == [
        f"CPATH (unset) names no folder with cuda_runtime.h: set CPATH={home}/include"
    ]


@pytest.mark.playbook


def test_check_reports_an_old_transformers_and_an_unknown_model_type(tmp_path):
    rc, report = run_check(
        "--strict",
        "--transformers-minimum",
        "99.0",
        "--model-type",
        "glm_moe_dsa_from_the_future",
        env=image_env(None, None),
    )
    assert rc == 1
    problems = " | ".join(report["transformers"]["problems"])
    assert "is older than the model's minimum 99.0" in problems
    assert "does not know model_type 'glm_moe_dsa_from_the_future'" in problems


@pytest.mark.parametrize("role", ["engine_image", "gpu_host", "gpu_preflight"])
def test_defaults_and_argument_specs_list_the_same_options(role):
    defaults = yaml.safe_load((COLLECTION / "roles" / role / "defaults" / "main.yml").read_text())
    specs = yaml.safe_load((COLLECTION / "roles" / role / "meta" / "argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    assert set(defaults) == set(options)
    for name, option in options.items():
        assert option.get("type") and option.get("description"), name
