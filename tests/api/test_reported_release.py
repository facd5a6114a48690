"""Every command reports the release the hosts actually serve (issue 14, item 6).

The hosts' own record (releases/state.json and the current release's release.json, which glm.deploy.server
writes when it activates a release) is the truth: `verify` and `benchmark` report it through
playbooks/tasks/report_release.yml, and the controller's history, `status()` and the CLI name that release, not
one the controller derives from today's plan (whose id no host has).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.api.conftest import SECRET, Project

from glm_deploy.deployment import Deployment
from glm_deploy.release import Release

pytestmark = pytest.mark.playbook

REPO = Path(__file__).resolve().parents[2]
REPORT_TASKS = REPO / "playbooks" / "tasks" / "report_release.yml"

REPORTING_PLAYBOOK = f"""
- name: Throwaway run that reports the host's release like verify.yml and benchmark.yml
  hosts: glm_servers
  gather_facts: false
  tasks:
    - name: Report the release this host serves
      ansible.builtin.import_tasks: {REPORT_TASKS}
"""


def record_on_host(root: Path, release: Release, plan: dict[str, object], *, previous: str | None = None) -> None:
    """What glm.deploy.server leaves on a host that serves `release`: its release.json and state.json."""
    folder = root / "releases" / release.release_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "release.json").write_text(json.dumps({**release.to_dict(), "plan": plan}))
    state = {"current": release.release_id, "previous": previous, "events": []}
    (root / "releases" / "state.json").write_text(json.dumps(state))


@pytest.fixture
def reporting(project: Project, tmp_path: Path) -> tuple[Deployment, Path]:
    """A Deployment whose deploy and verify playbooks report the host's record under `host_root`."""
    host_root = tmp_path / "host-state"
    (project.root / "collections").symlink_to(REPO / "collections")
    group_vars = project.inventory / "group_vars" / "glm_servers.yml"
    group_vars.write_text(group_vars.read_text() + f"server_state_root: {host_root}\n")
    for command in ("deploy", "verify", "benchmark"):
        project.playbooks[command].write_text(REPORTING_PLAYBOOK)
    deployment = Deployment(project.inventory, state_dir=project.state_dir, secrets={"glm_api_key": SECRET})
    return deployment, host_root


def served(deployment: Deployment, commit: str) -> tuple[Release, dict[str, object]]:
    plan = deployment.plan()
    return Release.from_plan(plan, model_commit=commit, venv_lock="sha256-" + commit[:8]), plan.to_dict()


def test_verify_and_benchmark_record_the_release_the_host_serves(reporting: tuple[Deployment, Path]) -> None:
    deployment, host_root = reporting
    release, plan = served(deployment, "a" * 40)
    record_on_host(host_root, release, plan)

    deployed = deployment.deploy()
    assert deployed.entry.release is not None and deployed.entry.release.release_id == release.release_id

    verified = deployment.verify()
    made_up = Release.from_plan(deployment.plan())
    assert verified.entry.release is not None
    assert verified.entry.release.release_id == release.release_id, (
        f"verify recorded {verified.entry.release.release_id}, the host serves {release.release_id} "
        f"(a release made from the plan would be {made_up.release_id})"
    )
    assert verified.entry.host_releases["localhost"]["release_id"] == release.release_id

    measured = deployment.start("benchmark").wait()
    assert measured.entry.release is not None and measured.entry.release.release_id == release.release_id

    status = deployment.status()
    assert status.current_release is not None and status.current_release.release_id == release.release_id
    assert status.hosts[0].release is not None and status.hosts[0].release.release_id == release.release_id
    assert [entry.command for entry in deployment.history()] == ["deploy", "verify", "benchmark"]


def test_verify_follows_the_host_when_its_release_changed_behind_the_controller(
    reporting: tuple[Deployment, Path],
) -> None:
    """A plain ansible-playbook run moved the host on: verify names what the host serves now, not the history's."""
    deployment, host_root = reporting
    first, plan = served(deployment, "b" * 40)
    record_on_host(host_root, first, plan)
    deployment.deploy()
    second, _ = served(deployment, "c" * 40)
    record_on_host(host_root, second, plan, previous=first.release_id)

    verified = deployment.verify()

    assert verified.entry.release is not None and verified.entry.release.release_id == second.release_id
    assert verified.entry.host_releases["localhost"]["previous"] == first.release_id


def test_verify_of_a_host_without_a_record_makes_no_release_up(reporting: tuple[Deployment, Path]) -> None:
    deployment, _host_root = reporting

    verified = deployment.verify()

    assert verified.entry.release is None, "no host and no deploy names a release: none is recorded"


def test_the_cli_prints_the_served_release_after_verify(reporting: tuple[Deployment, Path], project: Project) -> None:
    deployment, host_root = reporting
    release, plan = served(deployment, "d" * 40)
    record_on_host(host_root, release, plan)

    verify = subprocess.run(
        [sys.executable, "-m", "glm_deploy.cli", "verify", "-i", str(project.inventory), "--json"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "GLM_API_KEY": SECRET},
        timeout=300,
    )

    assert verify.returncode == 0, verify.stderr
    assert json.loads(verify.stdout)["release"]["release_id"] == release.release_id
