"""The JIT cache report end to end on localhost: the server role's caches.yml marks and measures the caches and
sets glm_caches, the controller records it in the history, and `status` (API and CLI) shows it without contacting
a host. Old history lines, written before caches were recorded, still load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.api.conftest import SECRET, Project

from glm_deploy import cli
from glm_deploy.deployment import Deployment
from glm_deploy.history import HistoryStore

pytestmark = pytest.mark.playbook

REPO = Path(__file__).resolve().parents[2]

CACHES_PLAYBOOK = """
- name: Throwaway deploy that reports its caches through the server role
  hosts: glm_servers
  gather_facts: false
  tasks:
    - name: Report the release this host serves
      ansible.builtin.set_fact:
        glm_release:
          model_commit: 0123456789abcdef0123456789abcdef01234567
    - name: Record the caches
      ansible.builtin.include_role:
        name: glm.deploy.server
        tasks_from: caches.yml
      vars:
        server_plan:
          cache_kinds:
            deep_gemm: "{{ cache_root }}/deep_gemm/key"
            inductor: "{{ cache_root }}/inductor/key"
        _server_warmed_by: {deep_gemm: warmup}
        _server_release: {release_id: aaaaaaaaaaaa}
"""


@pytest.fixture
def cache_project(project: Project, tmp_path: Path) -> tuple[Project, Path]:
    # The collection as the installed project has it, so the play resolves glm.deploy.*.
    (project.root / "collections").symlink_to(REPO / "collections")
    project.playbooks["deploy"].write_text(CACHES_PLAYBOOK)
    cache_root = tmp_path / "cache"
    (cache_root / "deep_gemm" / "key").mkdir(parents=True)
    (cache_root / "deep_gemm" / "key" / "kernel.cubin").write_bytes(b"k" * 4096)
    (cache_root / "inductor" / "key").mkdir(parents=True)
    group_vars = project.inventory / "group_vars" / "glm_servers.yml"
    group_vars.write_text(group_vars.read_text() + f"cache_root: {cache_root}\n")
    return project, cache_root


def test_deploy_records_the_caches_and_status_shows_them(
    cache_project: tuple[Project, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    project, cache_root = cache_project
    deployment = Deployment(project.inventory, state_dir=project.state_dir, secrets={"glm_api_key": SECRET})
    outcome = deployment.deploy()
    assert outcome.ok

    marker = json.loads((cache_root / "deep_gemm" / "key" / ".glm-deploy-warm.json").read_text())
    assert (marker["release_id"], marker["warmed_by"]) == ("aaaaaaaaaaaa", "warmup")
    inductor_marker = json.loads((cache_root / "inductor" / "key" / ".glm-deploy-warm.json").read_text())
    assert inductor_marker["warmed_by"] == "first_start"

    [entry] = deployment.history()
    recorded = entry.host_caches["localhost"]
    assert recorded["deep_gemm"]["warm"] is True and recorded["deep_gemm"]["bytes"] == 4096
    assert recorded["deep_gemm"]["path"] == str(cache_root / "deep_gemm" / "key")

    [host] = deployment.status().hosts
    assert host.caches_warm is True and host.caches_run_id == entry.run_id
    assert host.caches is not None and host.caches["deep_gemm"]["files"] == 1
    assert host.to_dict()["caches_warm"] is True

    assert cli.main(["status", "-i", str(project.inventory), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["hosts"][0]["caches"]["deep_gemm"]["warmed_by"] == "warmup"
    assert shown["hosts"][0]["caches_warm"] is True
    assert cli.main(["status", "-i", str(project.inventory)]) == 0
    text = capsys.readouterr().out
    assert "JIT caches warm, 4.00 KiB in 1 files: deep_gemm 4.00 KiB (warmup), inductor 0 B (first start)" in text


def test_status_reads_history_written_before_caches_were_recorded(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    old_line = {
        "run_id": "20260101-old",
        "command": "deploy",
        "inventory": str(project.inventory),
        "status": "successful",
        "started_at": "2026-01-01T00:00:00+00:00",
        "finished_at": "2026-01-01T00:10:00+00:00",
        "duration_s": 600.0,
        "rc": 0,
        "hosts": {"localhost": {"ok": 3, "changed": 1, "failures": 0, "unreachable": 0, "skipped": 0}},
        "release": None,
        "host_releases": {},
    }
    project.state_dir.mkdir(parents=True)
    (project.state_dir / "history.jsonl").write_text(json.dumps(old_line) + "\n")
    [entry] = HistoryStore(project.state_dir).entries()
    assert entry.host_caches == {}
    [host] = Deployment(project.inventory, state_dir=project.state_dir).status().hosts
    assert (host.last_run_id, host.caches, host.caches_warm) == ("20260101-old", None, None)
    assert cli.main(["status", "-i", str(project.inventory)]) == 0
    assert "JIT caches: not reported yet" in capsys.readouterr().out


def test_cold_caches_are_named(cache_project: tuple[Project, Path], capsys: pytest.CaptureFixture[str]) -> None:
    project, cache_root = cache_project
    # The inductor directory was never created: the start did not fill it, so it stays cold.
    (cache_root / "inductor" / "key").rmdir()
    deployment = Deployment(project.inventory, state_dir=project.state_dir, secrets={"glm_api_key": SECRET})
    assert deployment.deploy().ok
    [host] = deployment.status().hosts
    assert host.caches_warm is False
    assert cli.main(["status", "-i", str(project.inventory)]) == 0
    assert "JIT caches cold (inductor)" in capsys.readouterr().out
