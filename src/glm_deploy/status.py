"""What the controller knows about a deployment without contacting a host: `glm-deploy status`.

Everything here is read from the history (glm_deploy.history): the current release (the last successful deploy,
redeploy or rollback), each host's last run, the release it serves and its JIT caches as it last reported them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from glm_deploy.history import HistoryEntry
from glm_deploy.inventory import InventoryView
from glm_deploy.release import Release

# Commands after which the hosts serve a release the history records.
RELEASE_COMMANDS = ("deploy", "redeploy", "rollback")


@dataclass(frozen=True)
class HostStatus:
    """The controller's last word about one host."""

    host: str
    address: str
    last_command: str | None = None
    last_status: str | None = None
    last_run_id: str | None = None
    last_finished_at: str | None = None
    release: Release | None = None
    # The JIT caches by kind as the host last reported them (glm_caches), and the run that recorded them.
    caches: dict[str, dict[str, Any]] | None = None
    caches_run_id: str | None = None
    caches_recorded_at: str | None = None

    @property
    def caches_warm(self) -> bool | None:
        """Whether every JIT cache was warm at the last report; None when no report is recorded."""
        if not self.caches:
            return None
        return all(bool(record.get("warm")) for record in self.caches.values())

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["release"] = self.release.to_dict() if self.release else None
        data["caches_warm"] = self.caches_warm
        return data


@dataclass(frozen=True)
class DeploymentStatus:
    """What the controller knows: the current release (the last successful deploy), each host's last run, the
    lock."""

    inventory: str
    state_dir: str
    current_release: Release | None
    current_since: str | None
    last_run: HistoryEntry | None
    hosts: list[HostStatus] = field(default_factory=list)
    lock_holder: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "inventory": self.inventory,
            "state_dir": self.state_dir,
            "current_release": self.current_release.to_dict() if self.current_release else None,
            "current_since": self.current_since,
            "last_run": self.last_run.to_dict() if self.last_run else None,
            "hosts": [host.to_dict() for host in self.hosts],
            "lock_holder": self.lock_holder,
        }


def last_serving(entries: Sequence[HistoryEntry]) -> HistoryEntry | None:
    """The last successful deploy, redeploy or rollback (automatic ones included) that names its release."""
    for entry in reversed(entries):
        if entry.command in RELEASE_COMMANDS and entry.ok and entry.release is not None:
            return entry
    return None


def host_release(entries: Sequence[HistoryEntry], host: str) -> Release | None:
    """What `host` serves, by the history: the last release a successful run (or an automatic rollback)
    reported for it, or the release of the last successful run that included it."""
    for entry in reversed(entries):
        if entry.command not in RELEASE_COMMANDS:
            continue
        reported = entry.host_releases.get(host)
        if reported and reported.get("release_id") and (entry.ok or reported.get("outcome") == "rolled_back"):
            if entry.command == "redeploy" and reported.get("outcome") == "rolled_back":
                continue  # the rollback entry that follows names it
            return Release.from_dict(reported)
        if entry.ok and host in entry.hosts and entry.release is not None:
            return entry.release
    return None


def host_caches_entry(entries: Sequence[HistoryEntry], host: str) -> HistoryEntry | None:
    """The last deploy, redeploy or rollback in which `host` reported its JIT caches (fact glm_caches)."""
    for entry in reversed(entries):
        if entry.command in RELEASE_COMMANDS and entry.host_caches.get(host):
            return entry
    return None


def host_status(entries: Sequence[HistoryEntry], view: InventoryView, host: str) -> HostStatus:
    """One host's last run, the release it serves and its JIT caches, by the history."""
    last = next((entry for entry in reversed(entries) if host in entry.hosts), None)
    caches_entry = host_caches_entry(entries, host)
    return HostStatus(
        host=host,
        address=view.address(host),
        last_command=last.command if last else None,
        last_status=last.status if last else None,
        last_run_id=last.run_id if last else None,
        last_finished_at=last.finished_at if last else None,
        release=host_release(entries, host),
        caches=dict(caches_entry.host_caches[host]) if caches_entry else None,
        caches_run_id=caches_entry.run_id if caches_entry else None,
        caches_recorded_at=caches_entry.finished_at if caches_entry else None,
    )


def deployment_status(
    entries: Sequence[HistoryEntry],
    view: InventoryView,
    *,
    inventory: str,
    state_dir: str,
    lock_holder: dict[str, Any] | None,
) -> DeploymentStatus:
    """The current release, each inventory host's status and the lock's holder."""
    current = last_serving(entries)
    return DeploymentStatus(
        inventory=inventory,
        state_dir=state_dir,
        current_release=current.release if current else None,
        current_since=current.finished_at if current else None,
        last_run=entries[-1] if entries else None,
        hosts=[host_status(entries, view, host) for host in view.hosts],
        lock_holder=lock_holder,
    )
