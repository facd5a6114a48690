"""A command running in a background thread (`RunHandle`) and what it did once finished (`RunOutcome`).

`Deployment.start(...)` returns a `RunHandle`: iterate its `events()` (ansible-runner's events as they happen),
`cancel()` it, or `wait()` for the `RunOutcome`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from glm_deploy import benchmark_report
from glm_deploy.history import HistoryEntry
from glm_deploy.runner import RunResult

EventHandler = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class RunOutcome:
    """What a finished command did: its history entry, and the ansible-runner result when a playbook ran."""

    command: str
    entry: HistoryEntry
    result: RunResult | None = None
    # A benchmark sweep's report per host (benchmark(sweep=...)): the table's and the picture's files.
    sweeps: tuple[benchmark_report.WrittenReport, ...] = ()

    @property
    def ok(self) -> bool:
        return self.entry.ok

    @property
    def changed(self) -> bool:
        """False for `deploy(if_changed=True)` when the resolved release was already deployed."""
        return self.entry.status != "unchanged"

    def to_dict(self) -> dict[str, Any]:
        document = {"command": self.command, "ok": self.ok, **self.entry.to_dict()}
        if self.sweeps:
            document["sweeps"] = [written.to_dict() for written in self.sweeps]
        return document


_DONE = object()


class RunHandle:
    """A command running in a background thread: iterate `events()`, `cancel()` it, `wait()` for its
    outcome."""

    def __init__(self, command: str, target: Callable[[EventHandler, threading.Event], RunOutcome]) -> None:
        self.command = command
        self._cancel = threading.Event()
        self._queue: queue.Queue[object] = queue.Queue()
        self._outcome: RunOutcome | None = None
        self._error: BaseException | None = None
        # Waiting on an Event rather than Thread.join: a KeyboardInterrupt during join() can leave the thread
        # looking finished while it still runs (CPython's tstate lock), and Ctrl-C is how people cancel.
        self._finished = threading.Event()

        def body() -> None:
            try:
                self._outcome = target(self._queue.put, self._cancel)
            except BaseException as error:
                self._error = error
            finally:
                self._finished.set()
                self._queue.put(_DONE)

        self._thread = threading.Thread(target=body, name=f"glm-deploy-{command}", daemon=True)
        self._thread.start()

    def events(self) -> Iterator[dict[str, Any]]:
        """ansible-runner's events as they happen, ending when the run ends. One consumer only."""
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, dict):
                yield item

    def cancel(self) -> None:
        """Ask the run to stop; ansible-runner ends the playbook, and `wait()` raises `RunCancelled`."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def done(self) -> bool:
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> RunOutcome:
        """The outcome; raises what the run raised. `TimeoutError` when still running after `timeout`
        seconds."""
        if not self._finished.wait(timeout):
            raise TimeoutError(f"glm-deploy {self.command} still runs after {timeout}s")
        if self._error is not None:
            raise self._error
        if self._outcome is None:
            raise RuntimeError(f"glm-deploy {self.command} ended without an outcome")
        return self._outcome
