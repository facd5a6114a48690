"""The controller's run history.

The history is `<state_dir>/history.jsonl`: one JSON object per run, oldest first, each naming the `Release`
(glm_deploy.release) the run served. Every write replaces the whole file atomically (write a temporary file, fsync,
rename) under a flock, so a crash never leaves half a line and two writers never interleave. Entries never hold
secret values: everything written passes through `redact()` with the secrets of the run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glm_deploy.release import Release

HISTORY_FILE_NAME = "history.jsonl"
REDACTED = "<redacted>"


@dataclass(frozen=True)
class HistoryEntry:
    """One run the controller made (or decided not to make, status "unchanged")."""

    run_id: str
    command: str
    inventory: str
    status: str
    started_at: str
    finished_at: str
    duration_s: float
    rc: int | None = None
    hosts: dict[str, dict[str, int]] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)
    release: Release | None = None
    host_releases: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Per host, its JIT caches by kind (path, bytes, files, warm, since, release_id, warmed_by) as the server role
    # reported them (fact glm_caches) after the endpoint answered; empty in entries written before it existed.
    host_caches: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Per host, every quality gate the run made there, in order (glm.deploy.quality_gate: release_id, set, score,
    # correct, total, floor, baseline, passed, message): a refused release and the gate of the release restored
    # after it both appear. Empty in entries written before the gate existed.
    host_quality: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    artifact_dir: str | None = None
    error: str | None = None
    controller: dict[str, Any] = field(default_factory=dict)
    # Why this entry exists when no one typed its command (an automatic rollback names the failed run).
    note: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("successful", "unchanged")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["release"] = self.release.to_dict() if self.release else None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HistoryEntry:
        names = {f.name for f in dataclasses.fields(cls)}
        values = {name: data[name] for name in names if name in data}
        release = data.get("release")
        values["release"] = Release.from_dict(release) if isinstance(release, Mapping) else None
        return cls(**values)


def redact(value: Any, secrets: Iterable[str]) -> Any:
    """`value` with every occurrence of a secret replaced (recursively through dicts, lists and strings)."""
    secret_values = sorted({secret for secret in secrets if secret}, key=len, reverse=True)
    if not secret_values:
        return value

    def scrub(item: Any) -> Any:
        if isinstance(item, str):
            for secret in secret_values:
                item = item.replace(secret, REDACTED)
            return item
        if isinstance(item, Mapping):
            return {scrub(key): scrub(inner) for key, inner in item.items()}
        if isinstance(item, list | tuple):
            return [scrub(inner) for inner in item]
        return item

    return scrub(value)


class HistoryStore:
    """The JSON-lines history under a state directory, keeping the newest `keep` entries."""

    def __init__(self, state_dir: Path, *, keep: int = 1000) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        self.path = Path(state_dir) / HISTORY_FILE_NAME
        self.keep = keep

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(self.path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)

    def _read_lines(self) -> list[str]:
        try:
            return [line for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except FileNotFoundError:
            return []

    def append(self, entry: HistoryEntry, *, secrets: Iterable[str] = ()) -> HistoryEntry:
        """Add `entry` (secrets redacted), rewrite the file atomically, and return the entry as written."""
        document = redact(entry.to_dict(), secrets)
        line = json.dumps(document, sort_keys=True)
        with self._locked():
            lines = [*self._read_lines(), line][-self.keep :]
            descriptor, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".history-")
            try:
                with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                    handle.write("\n".join(lines) + "\n")
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temporary, self.path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        return HistoryEntry.from_dict(document)

    def entries(self) -> list[HistoryEntry]:
        """Every entry, oldest first."""
        return [HistoryEntry.from_dict(json.loads(line)) for line in self._read_lines()]
