"""`glm-deploy deploy|verify|benchmark|status|history`: exit codes, --json shapes, secrets, the lock."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from typing import Any

import pytest
from tests.api.conftest import SECRET, Project, files_containing
from tests.api.test_lock import start_holder

from glm_deploy.cli import main

pytestmark = pytest.mark.playbook


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def json_of(out: str) -> Any:
    return json.loads(out)


def test_deploy_json_status_and_history(
    project: Project, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GLM_API_KEY", SECRET)
    code, out, err = run_cli(capsys, "deploy", "-i", str(project.inventory), "--json")
    assert code == 0, err
    document = json_of(out)
    assert document["command"] == "deploy" and document["ok"] is True and document["status"] == "successful"
    assert set(document["hosts"]) == {"localhost"}
    assert document["release"]["model"] == "glm-tiny"
    assert len(document["release"]["release_id"]) == 12
    # The progress display named each task on stderr as it started.
    assert "Record the options the controller passed" in err
    assert "Report the release this host installed" in err
    assert SECRET not in out + err
    assert files_containing(project.state_dir, SECRET) == []

    code, out, _ = run_cli(capsys, "status", "-i", str(project.inventory), "--json")
    assert code == 0
    status = json_of(out)
    assert status["current_release"]["release_id"] == document["release"]["release_id"]
    assert status["hosts"][0]["host"] == "localhost" and status["hosts"][0]["last_status"] == "successful"
    assert status["lock_holder"] is None

    code, out, _ = run_cli(capsys, "status", "-i", str(project.inventory))
    assert code == 0 and f"current release {document['release']['release_id']}" in out

    code, out, _ = run_cli(capsys, "history", "-i", str(project.inventory), "--json")
    assert code == 0
    [entry] = json_of(out)
    assert entry["run_id"] == document["run_id"] and entry["command"] == "deploy"


def test_deploy_creates_a_private_api_key_when_none_is_given(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(capsys, "deploy", "-i", str(project.inventory))
    assert code == 0, err
    key_file = project.root / ".cache" / "secrets" / "api_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text().strip()
    assert len(key) >= 32
    # The play received it; the controller's records do not hold it.
    assert (project.markers / "endpoint.env").read_text() == f"VLLM_API_KEY={key}\n"
    assert files_containing(project.state_dir, key) == []


def test_failed_run_exits_1_with_host_and_step(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "verify", "-i", str(project.inventory), "--json")
    assert code == 1
    document = json_of(out)
    assert document["ok"] is False and document["exit_code"] == 1
    assert document["host"] == "localhost" and document["step"] == "Probe the endpoint's health"
    assert "FAILED localhost: health check failed" in err

    code, out, _ = run_cli(capsys, "history", "-i", str(project.inventory))
    assert code == 0 and "verify" in out and "failed: localhost: Probe the endpoint's health" in out


def test_bad_input_exits_2(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "deploy", "-i", str(project.root / "no-such-inventory"), "--json")
    assert code == 2
    assert json_of(out)["type"] == "InputError"
    assert "no-such-inventory" in err
    code, _, err = run_cli(capsys, "deploy", "-i", str(project.inventory), "--model", "glm-99")
    assert code == 2 and "glm-99" in err
    assert project.deploy_markers() == []


def test_lock_held_exits_3_naming_the_holder(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    holder = start_holder(project.state_dir)
    try:
        code, out, err = run_cli(capsys, "deploy", "-i", str(project.inventory), "--json")
        assert code == 3
        document = json_of(out)
        assert document["holder"]["pid"] == holder.pid
        assert f"pid {holder.pid}" in err
        code, out, _ = run_cli(capsys, "status", "-i", str(project.inventory), "--json")
        assert code == 0 and json_of(out)["lock_holder"]["pid"] == holder.pid
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
    assert project.deploy_markers() == []


# A job started in the background by a non-interactive shell (as CI may run the tests) inherits SIGINT ignored,
# and Python then installs no KeyboardInterrupt handler: the CLI gets the handler a terminal session gives it.
CLI_WITH_CTRL_C = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = 'glm-deploy'; runpy.run_module('glm_deploy.cli', run_name='__main__')"
)


def test_ctrl_c_cancels_and_exits_130(project: Project) -> None:
    environment = {**os.environ, "GLM_DEPLOY_HOME": str(project.root)}
    process = subprocess.Popen(
        [sys.executable, "-c", CLI_WITH_CTRL_C, "benchmark", "-i", str(project.inventory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )
    assert process.stderr is not None
    deadline = time.monotonic() + 60
    for line in process.stderr:
        if "Run the load for a long time" in line:
            break
        assert time.monotonic() < deadline, "the long task never started"
    process.send_signal(signal.SIGINT)
    rest = process.stderr.read()
    assert process.wait(timeout=45) == 130, rest
    assert "cancelled" in rest
    history = [json.loads(line) for line in (project.state_dir / "history.jsonl").read_text().splitlines()]
    assert [(entry["command"], entry["status"]) for entry in history] == [("benchmark", "canceled")]
