"""Releases and the controller's run history.

A `Release` names what a host serves: the model repository and the commit its revision resolved to, the engine
and its version with the container image (and digest, when known) or the native venv's requirement (and lock
hash), and a hash of the rendered plan, so that any change to a flag is a different release.

The history is `<state_dir>/history.jsonl`: one JSON object per run, oldest first. Every write replaces the
whole file atomically (write a temporary file, fsync, rename) under a flock, so a crash never leaves half a
line and two writers never interleave. Entries never hold secret values: everything written passes through
`redact()` with the secrets of the run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glm_deploy.render import Plan

HISTORY_FILE_NAME = "history.jsonl"
REDACTED = "<redacted>"


def plan_hash(plan: Plan | Mapping[str, Any]) -> str:
    """sha256 of the plan's canonical JSON: equal plans, equal hashes."""
    document = plan.to_dict() if isinstance(plan, Plan) else dict(plan)
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Release:
    """What a deployment serves. `model_commit`, `image_digest` and `venv_lock` are None until known."""

    model: str
    model_repo: str
    model_revision: str
    model_commit: str | None
    engine: str
    engine_version: str | None
    runtime: str
    image: str | None
    image_digest: str | None
    venv_requirement: str | None
    venv_lock: str | None
    served_model_name: str
    plan_hash: str

    @classmethod
    def from_plan(
        cls,
        plan: Plan,
        *,
        model_commit: str | None = None,
        image_digest: str | None = None,
        venv_lock: str | None = None,
    ) -> Release:
        if model_commit is None and plan.revision_pinned:
            model_commit = plan.model_revision
        return cls(
            model=plan.model,
            model_repo=plan.model_repo,
            model_revision=plan.model_revision,
            model_commit=model_commit,
            engine=plan.engine,
            engine_version=plan.engine_version,
            runtime=plan.runtime,
            image=plan.image,
            image_digest=image_digest,
            venv_requirement=str(plan.native["requirement"]) if plan.native else None,
            venv_lock=venv_lock,
            served_model_name=plan.served_model_name,
            plan_hash=plan_hash(plan),
        )

    @classmethod
    def from_plan_document(
        cls,
        plan: Mapping[str, Any],
        *,
        model_commit: str | None = None,
        image_digest: str | None = None,
        venv_lock: str | None = None,
    ) -> Release:
        """`from_plan` for a plan as a mapping (`Plan.to_dict()`, what the playbooks carry as glm_plan)."""
        revision = str(plan["model_revision"])
        if model_commit is None and plan.get("revision_pinned"):
            model_commit = revision
        native = plan.get("native")
        return cls(
            model=str(plan["model"]),
            model_repo=str(plan["model_repo"]),
            model_revision=revision,
            model_commit=model_commit,
            engine=str(plan["engine"]),
            engine_version=plan.get("engine_version"),
            runtime=str(plan["runtime"]),
            image=plan.get("image"),
            image_digest=image_digest,
            venv_requirement=str(native["requirement"]) if isinstance(native, Mapping) else None,
            venv_lock=venv_lock,
            served_model_name=str(plan["served_model_name"]),
            plan_hash=plan_hash(plan),
        )

    def identity(self) -> dict[str, Any]:
        """The fields that make two releases the same release (the branch name alone does not)."""
        return {
            "model_repo": self.model_repo,
            "model_commit": self.model_commit,
            "engine": self.engine,
            "engine_version": self.engine_version,
            "image": self.image_digest or self.image,
            "venv": self.venv_lock or self.venv_requirement,
            "plan_hash": self.plan_hash,
        }

    @property
    def release_id(self) -> str:
        """A short id for people: the first 12 hex digits of the identity's hash."""
        canonical = json.dumps(self.identity(), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    def same_as(self, other: Release | None) -> bool:
        """Whether `other` is the same release; unknown commits never compare equal. An image digest or venv
        lock known on one side only (the controller learns them from the hosts) compares by image or
        requirement."""
        if other is None or self.model_commit is None or other.model_commit is None:
            return False
        mine, theirs = self.identity(), other.identity()
        if self.image_digest is None or other.image_digest is None:
            mine["image"], theirs["image"] = self.image, other.image
        if self.venv_lock is None or other.venv_lock is None:
            mine["venv"], theirs["venv"] = self.venv_requirement, other.venv_requirement
        return mine == theirs

    def describe(self) -> str:
        commit = (self.model_commit or "?")[:12]
        engine = f"{self.engine} {self.engine_version or '?'}"
        where = self.image_digest or self.image or self.venv_requirement or self.runtime
        return f"{self.model_repo}@{commit} on {engine} ({where}), plan {self.plan_hash[:12]}"

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "release_id": self.release_id}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Release:
        names = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {name: data.get(name) for name in names}
        return cls(**values)


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
