"""The known-good stack lock: per model x engine x hardware, the release that passed every gate.

`glm-deploy lock` writes `stack.lock.yml` (a file a team commits) from the controller's history: the newest
successful deploy or redeploy whose quality gates passed on every host it ran on. Each entry names what makes the
release reproducible (model commit, engine and version, image digest or venv lock, the plan's hash, which covers
every flag) and why it is trusted (each host's gate score against the floor, the newest benchmark of it).

A schedule that follows a moving target (`follow: {revision: main}`) with `canary: true` runs `canary_redeploy`:
the first host takes the new release alone and must pass every gate; only then does the lock move to it, and the
rest of the fleet is redeployed to exactly the locked release (its commit, engine version and image), never to
whatever the branch points at by then. A canary that fails is rolled back by the redeploy and the lock stays.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from glm_deploy.errors import GlmDeployError, InputError
from glm_deploy.history import HistoryEntry
from glm_deploy.release import Release

if TYPE_CHECKING:
    from glm_deploy.deployment import Deployment
    from glm_deploy.run_handle import RunOutcome

LOCK_FILE = "stack.lock.yml"
LOCK_VERSION = 1
# Commands that put a release on hosts through the verify gate.
GATED_COMMANDS = ("deploy", "redeploy")
HEADER = (
    "# glm-deploy stack lock: per model/engine/hardware, the release that passed every gate.\n"
    "# Written by `glm-deploy lock` (and by canary redeploys); commit it, and redeploy the fleet with\n"
    "# `glm-deploy redeploy --from-lock` to serve exactly these releases.\n"
)


class LockRefused(GlmDeployError):
    """No release can be locked: none passed every gate, or the file is not a stack lock."""


def stack_key(model: str, engine: str, hardware: str) -> str:
    return f"{model}/{engine}/{hardware}"


@dataclass(frozen=True)
class LockedRelease:
    key: str
    release: Release
    gates: dict[str, Any]
    run_id: str
    locked_at: str
    benchmark: dict[str, Any] | None = None
    canary: str | None = None
    hosts: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "release_id": self.release.release_id,
            "release": self.release.to_dict(),
            "gates": self.gates,
            "benchmark": self.benchmark,
            "run_id": self.run_id,
            "locked_at": self.locked_at,
            "canary": self.canary,
            "hosts": list(self.hosts),
        }

    def target(self) -> dict[str, Any]:
        """The redeploy target that serves exactly this release: the commit, not the branch."""
        return release_target(self.release)


def release_target(release: Release) -> dict[str, Any]:
    """The redeploy settings that serve exactly `release`: its commit, engine version and (container) image."""
    target: dict[str, Any] = {"revision": release.model_commit}
    if release.engine_version:
        target["engine_version"] = release.engine_version
    if release.runtime == "container" and release.image:
        target["image"] = release.image
    return target


def gates_of(entry: HistoryEntry) -> dict[str, Any] | None:
    """The gate record of a run whose every host's last quality gate passed (None otherwise)."""
    if entry.command not in GATED_COMMANDS or not entry.ok or not entry.host_quality:
        return None
    last = {host: gates[-1] for host, gates in entry.host_quality.items() if gates}
    if not last or not all(gate.get("passed") for gate in last.values()):
        return None
    if entry.release is not None and any(
        gate.get("release_id") not in (None, entry.release.release_id) for gate in last.values()
    ):
        return None
    scores = {host: float(gate.get("score") or 0.0) for host, gate in last.items()}
    first = next(iter(last.values()))
    return {
        "set": first.get("set"),
        "floor": first.get("floor"),
        "min_score": min(scores.values()),
        "scores": scores,
        "speculative": {host: gate.get("speculative") for host, gate in last.items() if gate.get("speculative")},
    }


def newest_benchmark(results_dir: Path, hosts: list[str], since: str) -> dict[str, Any] | None:
    """The newest `vllm bench serve` result of these hosts written after `since` (an ISO time), summarised."""
    try:
        threshold = datetime.datetime.fromisoformat(since).timestamp()
    except ValueError:
        return None
    found: list[tuple[float, Path]] = []
    for host in hosts:
        folder = results_dir / host
        if folder.is_dir():
            found += [(path.stat().st_mtime, path) for path in folder.glob("*.json")]
    found = [(when, path) for when, path in found if when >= threshold]
    if not found:
        return None
    _, newest = max(found)
    try:
        data = json.loads(newest.read_text())
    except (OSError, ValueError):
        return None
    keys = ("output_throughput", "mean_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "max_concurrency", "completed")
    summary = {key: data[key] for key in keys if key in data}
    summary["file"] = str(newest)
    return summary


def lock_from_history(
    entries: list[HistoryEntry], *, key: str, results_dir: Path | None = None, canary: str | None = None
) -> LockedRelease:
    """The newest gated release in `entries` (oldest first) for `key`."""
    for entry in reversed(entries):
        gates = gates_of(entry)
        if gates is None or entry.release is None:
            continue
        return LockedRelease(
            key=key,
            release=entry.release,
            gates=gates,
            run_id=entry.run_id,
            locked_at=_now(),
            benchmark=(
                newest_benchmark(results_dir, list(entry.host_quality), entry.started_at) if results_dir else None
            ),
            canary=canary,
            hosts=sorted(entry.host_quality),
        )
    raise LockRefused(
        f"no deploy or redeploy in the history passed every quality gate on every host, so there is nothing to lock "
        f"for {key}",
        hint="run `glm-deploy deploy` (or verify a deployed release) first; a release the gate refused is never locked",
    )


def read_lock(path: Path) -> dict[str, Any]:
    """The lock file's entries by stack key ({} when the file does not exist)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    try:
        document = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise LockRefused(f"{path} is not YAML: {str(error)[:200]}") from None
    if not isinstance(document, Mapping) or not isinstance(document.get("stacks", {}), Mapping):
        raise LockRefused(f"{path} is not a glm-deploy stack lock (no 'stacks' mapping)")
    return dict(document.get("stacks") or {})


def locked_release(path: Path, key: str) -> Release:
    """The release the lock names for `key`."""
    entry = read_lock(path).get(key)
    if not isinstance(entry, Mapping) or not isinstance(entry.get("release"), Mapping):
        raise LockRefused(f"{path} locks no release for {key}", hint="run `glm-deploy lock` after a gated deploy")
    release = Release.from_dict(entry["release"])
    if not release.model_commit:
        raise LockRefused(f"{path}: the release locked for {key} has no model commit, so it cannot be reproduced")
    return release


def write_lock(path: Path, locked: LockedRelease) -> None:
    """Put `locked` into the lock file under its key (other keys kept), atomically."""
    stacks = read_lock(path)
    stacks[locked.key] = locked.to_dict()
    document = {"version": LOCK_VERSION, "stacks": dict(sorted(stacks.items()))}
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(HEADER)
            yaml.safe_dump(document, handle, sort_keys=False, default_flow_style=False, width=120)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class CanaryOutcome:
    canary: RunOutcome
    locked: LockedRelease | None
    fleet: RunOutcome | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "canary": self.canary.to_dict(),
            "locked": self.locked.to_dict() if self.locked else None,
            "fleet": self.fleet.to_dict() if self.fleet else None,
        }


def canary_redeploy(
    deployment: Deployment,
    lock_path: Path,
    *,
    to: Mapping[str, Any] | None = None,
    if_changed: bool = False,
    serial: int | str = 1,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> CanaryOutcome:
    """Redeploy the first host alone; lock its release only when every gate passed; then move the rest to it.

    A failing canary raises the redeploy's RunError (it was rolled back on that host) and leaves the lock as it was.
    """
    hosts = deployment.inventory_view().hosts
    if not hosts:
        raise InputError(f"{deployment.inventory} lists no host in glm_servers")
    canary, rest = hosts[0], hosts[1:]
    first = deployment.redeploy(to=to, if_changed=if_changed, limit=canary, on_event=on_event)
    if not first.changed:
        return CanaryOutcome(first, None, None)
    settings = deployment.settings(to)
    key = stack_key(str(settings["model"]), str(settings["engine"]), str(settings["hardware"]))
    gated = dataclasses.replace(first.entry, host_quality={canary: first.entry.host_quality.get(canary, [])})
    locked = lock_from_history([gated], key=key, results_dir=deployment.results_dir(), canary=canary)
    write_lock(lock_path, locked)
    fleet = None
    if rest:
        fleet = deployment.redeploy(
            to={**(to or {}), **locked.target()}, serial=serial, limit=",".join(rest), on_event=on_event
        )
    return CanaryOutcome(first, locked, fleet)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
