# Copyright: glm-deploy developers
# Apache License 2.0 (see LICENSE)
"""The progress file: a JSON snapshot (phase, bytes done/total, rate, ETA, the waits the Hub asked for) rewritten
every second, so a caller polling the async job can show it. Progress is a courtesy: writing it never fails the
download.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from typing import Any

from ansible_collections.glm.deploy.plugins.module_utils.hub_download.cache_layout import RemoteFile

_PROGRESS_INTERVAL_S = 1.0
_RATE_WINDOW_S = 20.0


class ProgressReport:
    """The progress side of `Prefetch` (mixed into it). It works on the state `Prefetch.__init__` sets: settings,
    clock, commit, _lock, _progress_state, _waiting, _notes, _in_worker and verified_now, and reads the bytes on
    disk with `_usable_bytes` (cache_layout.py)."""

    def _phase(self, phase: str, files: list[RemoteFile] | None = None) -> None:
        with self._lock:
            self._progress_state["phase"] = phase
            if files is not None:
                self._progress_state["files"] = files
                self._progress_state["samples"] = []

    def _current_waits(self) -> list[str]:
        """The waits the Hub asked for that are still running, with the seconds left (call with the lock held)."""
        notes = self._notes
        while notes is not None and not notes.empty():  # what worker processes sent since the last look
            what, note, until = notes.get()
            self._waiting[what] = (until, note)
        now = self.clock.monotonic()
        for what in [what for what, (until, _note) in self._waiting.items() if until <= now]:
            del self._waiting[what]
        return [f"{what}: {note}, {until - now:.0f} s left" for what, (until, note) in sorted(self._waiting.items())]

    def progress_snapshot(self) -> dict[str, Any]:
        with self._lock:
            phase = self._progress_state.get("phase", "resolving")
            files: list[RemoteFile] = list(self._progress_state.get("files", []))
            samples: list[tuple[float, int]] = self._progress_state.setdefault("samples", [])
            waiting = self._current_waits()
        total = sum(item.size for item in files)
        done = 0
        files_done = 0
        if phase == "downloading":
            for item in files:
                got = self._usable_bytes(item)
                done += got
                files_done += got == item.size
        elif phase == "verifying":
            verified = set(self.verified_now)
            done = sum(item.size for item in files if item.name in verified)
            files_done = sum(1 for item in files if item.name in verified)
        elif phase == "done":
            done, files_done = total, len(files)
        now = time.monotonic()
        samples.append((now, done))
        while samples and now - samples[0][0] > _RATE_WINDOW_S:
            samples.pop(0)
        rate = 0.0
        if len(samples) >= 2 and samples[-1][0] > samples[0][0]:
            rate = max(0.0, (samples[-1][1] - samples[0][1]) / (samples[-1][0] - samples[0][0]))
        eta = (total - done) / rate if rate > 0 else None
        return {
            "repo": self.settings.repo,
            "revision": self.settings.revision,
            "commit": self.commit or None,
            "phase": phase,
            "files_total": len(files),
            "files_done": files_done,
            "bytes_total": total,
            "bytes_done": done,
            "rate_bytes_per_s": round(rate, 1),
            "eta_s": round(eta, 1) if eta is not None else None,
            "waiting": waiting,
            "updated": time.time(),
        }

    def write_progress(self, extra: dict[str, Any] | None = None) -> None:
        target = self.settings.progress_file
        if target is None or self.settings.check_mode:
            return  # check mode writes nothing, not even progress
        snapshot = self.progress_snapshot()
        if extra:
            snapshot.update(extra)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=target.parent, prefix=".progress-", delete=False) as handle:
                json.dump(snapshot, handle)
            os.chmod(handle.name, 0o644)
            os.replace(handle.name, target)
        except OSError:
            pass  # progress is a courtesy; it must never fail the download

    def progress_loop(self, finished: threading.Event) -> None:
        while not finished.wait(_PROGRESS_INTERVAL_S):
            self.write_progress()

    def _note_wait(self, what: str, note: str, until: float) -> None:
        """Show a wait the server asked for in the progress file, so a person watching the play sees why the
        bytes stopped. A worker process hands it to the parent, which alone writes that file."""
        if self._in_worker:
            if self._notes is not None:
                with contextlib.suppress(Exception):  # progress is a courtesy; it must never fail the download
                    self._notes.put((what, note, until))
            return
        with self._lock:
            self._waiting[what] = (until, note)
        self.write_progress()
