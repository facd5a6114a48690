"""`glm-deploy benchmark --sweep` and `Deployment.benchmark(sweep=...)`: the concurrencies, the stamp and the results
folder reach the play; afterwards each host's table and picture are written, beside the last good release's sweep.

The benchmark playbook here stands in for the benchmark role's output: it puts vLLM result documents (the CPU
fixtures, tests/fixtures/benchmark/cpu) where the role fetches them, `<results>/<host>/<stamp>-c<N>.json`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from tests.api.conftest import SECRET, Project

from glm_deploy.cli import main
from glm_deploy.deployment import Deployment
from glm_deploy.errors import InputError

pytestmark = pytest.mark.playbook

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "benchmark" / "cpu"

SWEEP_PLAYBOOK = """
- name: Stand-in for the benchmark role
  hosts: glm_servers
  gather_facts: false
  tasks:
    - name: Record what the controller asked for
      ansible.builtin.copy:
        content: "{{ {'concurrencies': benchmark_concurrencies, 'stamp': benchmark_result_stamp,
                      'results': glm_results_dir} | to_json }}"
        dest: "{{ marker_dir }}/sweep-request.json"
        mode: "0644"
    - name: Make the host's results folder on the controller, as fetch does
      ansible.builtin.file:
        path: "{{ glm_results_dir }}/{{ inventory_hostname }}"
        state: directory
        mode: "0755"
    - name: Leave one vLLM result per concurrency where the role fetches them
      ansible.builtin.copy:
        src: "{{ fixtures }}/20260301T130000Z-c{{ item }}.json"
        dest: "{{ glm_results_dir }}/{{ inventory_hostname }}/{{ benchmark_result_stamp }}-c{{ item }}.json"
        mode: "0644"
      loop: "{{ benchmark_concurrencies }}"
"""


@pytest.fixture
def sweep_project(project: Project) -> Project:
    project.playbooks["benchmark"].write_text(SWEEP_PLAYBOOK)
    group_vars = project.inventory / "group_vars" / "glm_servers.yml"
    group_vars.write_text(group_vars.read_text() + f"fixtures: {FIXTURES}\n")
    return project


def request_of(project: Project) -> dict[str, object]:
    request: dict[str, object] = json.loads((project.markers / "sweep-request.json").read_text())
    return request


def test_cli_sweep_prints_the_table_and_writes_the_files(
    sweep_project: Project, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("GLM_API_KEY", SECRET)
    code = main(["benchmark", "-i", str(sweep_project.inventory), "--sweep", "1,2,4"])
    out, err = capsys.readouterr()
    assert code == 0, err
    request = request_of(sweep_project)
    assert request["concurrencies"] == [1, 2, 4]
    assert request["results"] == str(sweep_project.root / "results")
    stamp = str(request["stamp"])
    name = f"sweep-localhost-{stamp}"
    for suffix in ("md", "csv", "json", "png", "svg"):
        path = sweep_project.root / "results" / f"{name}.{suffix}"
        assert path.is_file(), f"{path} not written"
        assert str(path) in out
    assert "| concurrency | prompts | output tok/s |" in out
    assert [line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| ")][1:] == ["1", "2", "4"]
    assert "no GPUs" in out
    assert SECRET not in out + err


def test_cli_sweep_without_matplotlib_says_how_to_get_the_picture(
    sweep_project: Project, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GLM_API_KEY", SECRET)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code = main(["benchmark", "-i", str(sweep_project.inventory), "--sweep", "1,4", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    [sweep] = json.loads(out)["sweeps"]
    assert sweep["host"] == "localhost"
    assert [point["concurrency"] for point in sweep["points"]] == [1, 4]
    assert [Path(path).suffix for path in sweep["files"]] == [".md", ".csv", ".json"]
    assert "pip install 'glm-deploy[plot]'" in sweep["plot_note"]


def test_cli_refuses_a_bad_sweep_before_running(
    sweep_project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["benchmark", "-i", str(sweep_project.inventory), "--sweep", "8,4"])
    _, err = capsys.readouterr()
    assert code == 2
    assert "sweep concurrencies must ascend without repeats, got 8,4" in err
    assert not (sweep_project.markers / "sweep-request.json").exists()


def test_sweep_applies_to_benchmark_only(sweep_project: Project) -> None:
    deployment = Deployment(sweep_project.inventory, secrets={"glm_api_key": SECRET})
    with pytest.raises(InputError, match="a sweep applies to benchmark, not verify"):
        deployment.start("verify", sweep=[1, 2])


def test_second_sweep_after_a_new_release_draws_the_first_as_last_good(sweep_project: Project) -> None:
    group_vars = sweep_project.inventory / "group_vars" / "glm_servers.yml"
    original = group_vars.read_text()
    deployment = Deployment(sweep_project.inventory, secrets={"glm_api_key": SECRET})
    deployment.deploy()
    [first] = deployment.benchmark(sweep=[1, 2, 4]).sweeps
    assert first.report.baseline is None

    # A new model commit: another release, deployed successfully.
    group_vars.write_text(original + "reported_commit: " + "f" * 40 + "\n")
    deployment = Deployment(sweep_project.inventory, secrets={"glm_api_key": SECRET})
    deployment.deploy()
    [second] = deployment.benchmark(sweep=[1, 2, 4]).sweeps
    assert second.report.subject.release_id != first.report.subject.release_id
    assert second.report.baseline is not None
    assert second.report.baseline.release_id == first.report.subject.release_id
    assert second.report.baseline.stamp == first.report.stamp
    assert f"Last good release {first.report.subject.release_id}" in second.markdown.read_text()
