"""The controller lock: two glm-deploy runs against the same state directory never overlap.

The lock is an `fcntl.flock` on `<state_dir>/controller.lock`. The kernel drops a flock when its holder exits,
so a crashed run never blocks the next one. The file also holds JSON naming the holder (pid, hostname, user,
command, started_at), which a refused run shows so a person knows whom to wait for.

A lock can still look held by a dead process: a child that inherited the descriptor outlives its parent, or
the state directory is shared and the holder's record is all that is left. When the recorded pid is on this
host and no longer runs, the lock is taken over (the old file is replaced) with a warning.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import getpass
import json
import os
import socket
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any

from glm_deploy.errors import LockHeldError

LOCK_FILE_NAME = "controller.lock"


class StaleLockWarning(UserWarning):
    """A lock left behind by a process that no longer runs was taken over."""


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        # It exists but belongs to someone else.
        return True
    return True


def read_holder(path: Path) -> dict[str, Any]:
    """The holder a lock file records ({} when it records none or cannot be read)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, PermissionError):
        return {}
    try:
        data = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def describe_holder(holder: dict[str, Any]) -> str:
    """`glm-deploy deploy (pid 1234 on ctl-1, user ubuntu, since 2026-11-22T07:10:00+00:00)`."""
    if not holder:
        return "an unknown process (the lock file records no holder)"
    return (
        f"`{holder.get('command', '?')}` (pid {holder.get('pid', '?')} on {holder.get('hostname', '?')}, "
        f"user {holder.get('user', '?')}, since {holder.get('started_at', '?')})"
    )


def _is_stale(holder: dict[str, Any]) -> bool:
    pid = holder.get("pid")
    return holder.get("hostname") == socket.gethostname() and isinstance(pid, int) and not pid_alive(pid)


class ControllerLock:
    """An exclusive, non-blocking lock on `<state_dir>/controller.lock`; use as a context manager or call
    `acquire()` / `release()`."""

    def __init__(self, state_dir: Path, *, command: str) -> None:
        self.path = Path(state_dir) / LOCK_FILE_NAME
        self.command = command
        self._descriptor: int | None = None

    @property
    def held(self) -> bool:
        return self._descriptor is not None

    def _record(self) -> dict[str, Any]:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = str(os.getuid())
        return {
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "user": user,
            "command": self.command,
            "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def acquire(self) -> None:
        """Take the lock, or raise `LockHeldError` naming the holder."""
        if self._descriptor is not None:
            raise RuntimeError(f"{self.path} is already held by this object")
        descriptor = self._open()
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(descriptor)
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = read_holder(self.path)
            if not _is_stale(holder):
                raise LockHeldError(
                    f"another glm-deploy run holds the controller lock {self.path}: "
                    f"{describe_holder(holder)}",
                    holder=holder,
                    hint="wait for it to finish (`glm-deploy status` shows it), or stop it; two runs must "
                    "not change the same hosts at once",
                ) from None
            # The recorded holder is dead but something (an orphaned child) still has the file locked: a fresh
            # file at the same path is a new lock that the orphan does not hold.
            warnings.warn(
                f"taking over the controller lock {self.path} from {describe_holder(holder)}: that "
                "process no longer runs",
                StaleLockWarning,
                stacklevel=2,
            )
            self.path.unlink(missing_ok=True)
            descriptor = self._open()
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(descriptor)
                raise LockHeldError(
                    f"another glm-deploy run took the controller lock {self.path} at the same moment: "
                    f"{describe_holder(read_holder(self.path))}",
                    holder=read_holder(self.path),
                ) from None
        else:
            previous = read_holder(self.path)
            if previous and _is_stale(previous):
                warnings.warn(
                    f"taking over the controller lock {self.path} left by {describe_holder(previous)}: "
                    "that process no longer runs",
                    StaleLockWarning,
                    stacklevel=2,
                )
        record = json.dumps(self._record()).encode()
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, record, 0)
        os.fsync(descriptor)
        self._descriptor = descriptor

    def release(self) -> None:
        """Drop the lock (and its holder record). Does nothing when not held."""
        descriptor, self._descriptor = self._descriptor, None
        if descriptor is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(descriptor, 0)
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        os.close(descriptor)

    def __enter__(self) -> ControllerLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


def current_holder(state_dir: Path) -> dict[str, Any] | None:
    """Who holds the lock now (None when nobody does). Probes with a shared non-blocking flock."""
    path = Path(state_dir) / LOCK_FILE_NAME
    if not path.exists():
        return None
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            holder = read_holder(path)
            return None if _is_stale(holder) else holder or {"command": "?"}
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        return None
    finally:
        os.close(descriptor)
