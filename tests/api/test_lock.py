"""The controller lock: a second run is refused naming the holder; a dead holder's lock is taken over."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from glm_deploy.errors import LockHeldError
from glm_deploy.lock import LOCK_FILE_NAME, ControllerLock, StaleLockWarning, current_holder

pytestmark = pytest.mark.playbook

# Holds the lock the way another glm-deploy process would, until its stdin closes. Given a pid, it records
# that (dead) pid instead, as an orphaned child still holding the descriptor would look.
HOLDER = """
import fcntl, json, os, socket, sys
from pathlib import Path
from glm_deploy.lock import ControllerLock
state_dir = Path(sys.argv[1])
if len(sys.argv) > 2:
    path = state_dir / "controller.lock"
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    record = {"pid": int(sys.argv[2]), "hostname": socket.gethostname(), "user": "ghost",
              "command": "glm-deploy deploy (orphan)", "started_at": "2026-01-01T00:00:00+00:00"}
    os.write(descriptor, json.dumps(record).encode())
else:
    ControllerLock(state_dir, command="glm-deploy deploy -i inventories/other").acquire()
print("locked", flush=True)
sys.stdin.read()
"""


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def start_holder(state_dir: Path, *extra: str) -> subprocess.Popen[str]:
    state_dir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(state_dir), *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "locked"
    return process


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    process = start_holder(tmp_path / "state")
    yield process
    assert process.stdin is not None
    process.stdin.close()
    process.wait(timeout=10)


def test_second_run_is_refused_naming_the_holder(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    lock = ControllerLock(tmp_path / "state", command="glm-deploy deploy -i inventories/sandbox")
    with pytest.raises(LockHeldError) as raised:
        lock.acquire()
    message = str(raised.value)
    assert f"pid {holder.pid}" in message
    assert socket.gethostname() in message
    assert "glm-deploy deploy -i inventories/other" in message
    assert raised.value.exit_code == 3
    assert raised.value.holder["pid"] == holder.pid
    assert current_holder(tmp_path / "state") == raised.value.holder
    assert not lock.held


def test_lock_is_free_again_when_the_holder_exits(tmp_path: Path) -> None:
    process = start_holder(tmp_path / "state")
    assert process.stdin is not None
    process.stdin.close()
    process.wait(timeout=10)
    # It exited without releasing (as a crash does): the kernel dropped the flock; its record names a dead pid
    with (
        pytest.warns(StaleLockWarning, match=f"pid {process.pid}"),
        ControllerLock(tmp_path / "state", command="glm-deploy verify") as lock,
    ):
        assert lock.held
        recorded = json.loads((tmp_path / "state" / LOCK_FILE_NAME).read_text())
        assert recorded["command"] == "glm-deploy verify"
    assert current_holder(tmp_path / "state") is None


def test_stale_record_of_a_dead_pid_is_taken_over_with_a_warning(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    gone = dead_pid()
    (state_dir / LOCK_FILE_NAME).write_text(
        json.dumps(
            {"pid": gone, "hostname": socket.gethostname(), "user": "x", "command": "glm-deploy deploy"}
        )
    )
    lock = ControllerLock(state_dir, command="glm-deploy deploy")
    with pytest.warns(StaleLockWarning, match=f"pid {gone}"):
        lock.acquire()
    assert lock.held
    lock.release()


def test_lock_held_by_an_orphan_of_a_dead_run_is_taken_over(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    gone = dead_pid()
    orphan = start_holder(state_dir, str(gone))
    try:
        lock = ControllerLock(state_dir, command="glm-deploy deploy")
        with pytest.warns(StaleLockWarning, match="no longer runs"):
            lock.acquire()
        assert lock.held
        assert json.loads((state_dir / LOCK_FILE_NAME).read_text())["command"] == "glm-deploy deploy"
        # A third run is refused by the new holder, not by the orphan.
        with pytest.raises(LockHeldError, match="pid"):
            ControllerLock(state_dir, command="glm-deploy verify").acquire()
        lock.release()
    finally:
        assert orphan.stdin is not None
        orphan.stdin.close()
        orphan.wait(timeout=10)
