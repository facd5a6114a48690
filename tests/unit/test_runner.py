"""The Python API's runner drives real ansible-playbook runs (against localhost) through ansible-runner."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest

from glm_deploy.errors import GlmDeployError, RunCancelled, RunError
from glm_deploy.runner import PlaybookRunner

SECRET = "sk-glm-test-7f3a9c0e5d"  # a made-up key: the test looks for it in everything the run left behind


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "inventory.ini"
    path.write_text(
        "[glm_servers]\nlocalhost ansible_connection=local "
        "ansible_python_interpreter='{{ ansible_playbook_python }}'\n"
    )
    return path


def write_playbook(directory: Path, body: str) -> Path:
    path = directory / "play.yml"
    path.write_text(body)
    return path


def test_run_returns_typed_result_and_streams_events(tmp_path: Path, inventory: Path) -> None:
    marker = tmp_path / "marker.txt"
    playbook = write_playbook(
        tmp_path,
        f"""
- name: Trivial play
  hosts: glm_servers
  gather_facts: false
  tasks:
    - name: Write a file
      ansible.builtin.copy:
        content: "{{{{ greeting }}}}\\n"
        dest: {marker}
        mode: "0644"
    - name: Probe that changes nothing
      ansible.builtin.command: "true"
      changed_when: false
""",
    )
    events: list[dict[str, Any]] = []
    runner = PlaybookRunner(state_dir=tmp_path / "state", keep_runs=3)

    result = runner.run(playbook, inventory=inventory, extravars={"greeting": "hello"}, event_handler=events.append)

    assert result.ok
    assert result.status == "successful"
    assert result.rc == 0
    assert set(result.hosts) == {"localhost"}
    assert result.hosts["localhost"].changed == 1
    assert result.hosts["localhost"].ok == 2
    assert result.changed == 1
    assert marker.read_text() == "hello\n"
    assert (result.artifact_dir / "stdout").is_file()
    task_names = [e["event_data"].get("task") for e in events if e.get("event") == "runner_on_ok"]
    assert task_names == ["Write a file", "Probe that changes nothing"]

    # A second run changes nothing: the result says so.
    second = runner.run(playbook, inventory=inventory, extravars={"greeting": "hello"})
    assert second.changed == 0
    assert second.run_id != result.run_id


def test_failure_raises_run_error_naming_host_and_step(tmp_path: Path, inventory: Path) -> None:
    playbook = write_playbook(
        tmp_path,
        """
- name: Failing play
  hosts: glm_servers
  gather_facts: false
  tasks:
    - name: Check the weights are complete
      ansible.builtin.fail:
        msg: "3 files missing from the snapshot"
""",
    )
    runner = PlaybookRunner(state_dir=tmp_path / "state")
    with pytest.raises(RunError) as caught:
        runner.run(playbook, inventory=inventory)
    error = caught.value
    assert isinstance(error, GlmDeployError)
    assert error.host == "localhost"
    assert error.step == "Check the weights are complete"
    assert "3 files missing from the snapshot" in str(error)
    assert "host localhost" in str(error)
    assert error.artifact_dir is not None and Path(error.artifact_dir, "stdout").is_file()

    result = runner.run(playbook, inventory=inventory, raise_on_failure=False)
    assert not result.ok
    assert result.hosts["localhost"].failures == 1
    assert result.failures[0].task == "Check the weights are complete"


def test_secrets_reach_the_play_but_not_the_artifacts(
    tmp_path: Path, inventory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", SECRET)  # a secret in the caller's environment must not be copied either
    # The secrets file is made under tempfile's directory: give this test its own, so that other runs on the
    # machine cannot be mistaken for a leftover of this one.
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    out = tmp_path / "key-length.txt"
    playbook = write_playbook(
        tmp_path,
        f"""
- name: Uses a secret
  hosts: glm_servers
  gather_facts: false
  tasks:
    - name: Record only the key's length
      ansible.builtin.copy:
        content: "{{{{ glm_api_key | length }}}}"
        dest: {out}
        mode: "0600"
      no_log: true
""",
    )
    state = tmp_path / "state"
    PlaybookRunner(state_dir=state).run(playbook, inventory=inventory, secrets={"glm_api_key": SECRET})
    assert out.read_text() == str(len(SECRET))
    leaked = [p for p in state.rglob("*") if p.is_file() and SECRET in p.read_text(errors="replace")]
    assert leaked == []
    assert list(private_tmp.iterdir()) == []  # the secrets file and its directory are gone


def test_artifacts_are_rotated(tmp_path: Path, inventory: Path) -> None:
    playbook = write_playbook(
        tmp_path,
        """
- name: Quick
  hosts: glm_servers
  gather_facts: false
  tasks:
    - name: Ping
      ansible.builtin.ping:
""",
    )
    runner = PlaybookRunner(state_dir=tmp_path / "state", keep_runs=2)
    ids = [runner.run(playbook, inventory=inventory).run_id for _ in range(3)]
    kept = {p.name for p in (tmp_path / "state" / "runner" / "artifacts").iterdir()}
    assert ids[-1] in kept
    assert len(kept) == 2


def test_cancel_stops_a_run(tmp_path: Path, inventory: Path) -> None:
    playbook = write_playbook(
        tmp_path,
        """
- name: Slow
  hosts: glm_servers
  gather_facts: false
  tasks:
    - name: Wait a long time
      ansible.builtin.command: sleep 60
      changed_when: false
""",
    )
    cancel = threading.Event()

    def cancel_when_started(event: dict[str, Any]) -> None:
        if event.get("event") == "playbook_on_task_start":
            cancel.set()

    runner = PlaybookRunner(state_dir=tmp_path / "state")
    with pytest.raises(RunCancelled):
        runner.run(playbook, inventory=inventory, event_handler=cancel_when_started, cancel=cancel)


def test_missing_playbook_and_inventory_are_clear_errors(tmp_path: Path, inventory: Path) -> None:
    runner = PlaybookRunner(state_dir=tmp_path / "state")
    with pytest.raises(RunError, match=r"playbook 'nope\.yml' not found"):
        runner.run("nope.yml", inventory=inventory)
    playbook = write_playbook(tmp_path, "- name: X\n  hosts: all\n  tasks: []\n")
    with pytest.raises(RunError, match=r"inventory .* not found"):
        runner.run(playbook, inventory=tmp_path / "missing")
