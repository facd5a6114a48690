"""What a run tells the controller, and what the controller records of it.

While a playbook runs, `HostReports` collects from ansible-runner's events what each host reported: the release
it serves (fact `glm_release`), its JIT caches (fact `glm_caches`) and every quality gate it ran. When the run
ends, `run_entry` turns the result and the reports into the history entry; a redeploy that a host rolled back
gets a second entry of its own (`automatic_rollback_entry`); `finish` gives the caller the outcome, or raises the
error that names the host, the step and the cause.
"""

from __future__ import annotations

import dataclasses
import datetime
import getpass
import os
import secrets
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glm_deploy.errors import RunCancelled, RunError
from glm_deploy.history import HistoryEntry, redact
from glm_deploy.release import Release
from glm_deploy.run_events import RunEvent
from glm_deploy.run_handle import EventHandler, RunOutcome
from glm_deploy.runner import RunResult
from glm_deploy.status import RELEASE_COMMANDS

# Host facts a role may set to tell the controller what it actually installed (e.g. the commit a branch
# resolved to, the image digest pulled, the venv lock hash); the controller records them per host in the
# history.
RELEASE_FACT = "glm_release"
# The server role's report of the host's JIT caches once the endpoint answers (server/tasks/caches.yml): per cache
# kind its path, bytes, files and whether it is warm.
CACHES_FACT = "glm_caches"


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def controller_identity() -> dict[str, Any]:
    """Who ran it: the controller's host name, user and process id."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return {"hostname": socket.gethostname(), "user": user, "pid": os.getpid()}


@dataclass(frozen=True)
class RunClock:
    """When a run started, by the wall clock (for people) and the monotonic clock (for its duration)."""

    started_at: str
    started: float

    @classmethod
    def start(cls) -> RunClock:
        return cls(now(), time.monotonic())

    def duration_s(self) -> float:
        return round(time.monotonic() - self.started, 3)


def quality_gate_result(event: Mapping[str, Any]) -> dict[str, Any] | None:
    """The scores of a glm.deploy.quality_gate task that passed or failed, from its runner event; else None."""
    return _gate_scores(RunEvent.of(event))


def _gate_scores(typed: RunEvent) -> dict[str, Any] | None:
    if typed.kind not in ("runner_on_ok", "runner_on_failed") or not typed.action_is("quality_gate"):
        return None
    result = typed.result
    accuracy = result.get("accuracy")
    if not isinstance(accuracy, Mapping):
        return None
    speculative = result.get("speculative")
    return {
        "release_id": result.get("release_id"),
        "passed": bool(result.get("passed")),
        "set": accuracy.get("set"),
        "score": accuracy.get("score"),
        "correct": accuracy.get("correct"),
        "total": accuracy.get("total"),
        "floor": accuracy.get("floor"),
        "baseline": accuracy.get("baseline"),
        "seconds": accuracy.get("seconds"),
        "speculative": dict(speculative) if isinstance(speculative, Mapping) else None,
        "message": result.get("message"),
    }


def agreed_release(reports: Sequence[Mapping[str, Any]]) -> Release | None:
    """The release the hosts report (all the same one), else None."""
    releases = [Release.from_dict(report) for report in reports if report.get("release_id")]
    if not releases or any(release.release_id != releases[0].release_id for release in releases):
        return None
    return releases[0]


@dataclass
class HostReports:
    """What each host reported during a run, collected from its runner events."""

    releases: dict[str, dict[str, Any]] = field(default_factory=dict)
    caches: dict[str, dict[str, Any]] = field(default_factory=dict)
    quality: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def collect(self, event: Mapping[str, Any]) -> None:
        typed = RunEvent.of(event)
        host = str(typed.host)
        gate = _gate_scores(typed)
        if gate is not None:
            self.quality.setdefault(host, []).append(gate)
        reported = typed.facts.get(RELEASE_FACT)
        if isinstance(reported, Mapping):
            self.releases[host] = dict(reported)
        caches = typed.facts.get(CACHES_FACT)
        if isinstance(caches, Mapping):
            self.caches[host] = {
                str(kind): dict(record) for kind, record in caches.items() if isinstance(record, Mapping)
            }

    def forwarding(self, on_event: EventHandler) -> EventHandler:
        """An event handler that collects each event, then hands it on to `on_event`."""

        def handle(event: dict[str, Any]) -> None:
            self.collect(event)
            on_event(event)

        return handle

    @property
    def rolled_back(self) -> dict[str, dict[str, Any]]:
        """The hosts that restored their previous release after the new one failed, with their reports."""
        return {host: report for host, report in self.releases.items() if report.get("outcome") == "rolled_back"}

    def served_release(self, command: str, expected: Release | None) -> Release | None:
        """The release the run left serving (or, for verify and benchmark, the one it checked): what the hosts
        report (with the venv lock or image digest only they know), else `expected`, with the commit the hosts
        fetched when the controller could not resolve it."""
        if command not in RELEASE_COMMANDS:
            # verify.yml and benchmark.yml report what each host's own record says it serves.
            return agreed_release(list(self.releases.values())) or expected
        if expected is None:
            return agreed_release(list(self.releases.values()))
        rolled_back = self.rolled_back
        served = [
            report for host, report in self.releases.items() if command == "rollback" or host not in rolled_back
        ]
        reported = agreed_release(served)
        if reported is not None:
            return reported
        if served and expected.model_commit is None:
            # Hosts that report only what they fetched: the commit the branch resolved to.
            commit = served[0].get("model_commit")
            if isinstance(commit, str) and commit:
                return dataclasses.replace(expected, model_commit=commit)
        return expected


def entry_without_run(
    command: str, status: str, release: Release, *, inventory: str, clock: RunClock, error: str | None = None
) -> HistoryEntry:
    """History for an outcome decided before any playbook ran (nothing to deploy, or no answer)."""
    return HistoryEntry(
        run_id=f"{status}-{secrets.token_hex(4)}",
        command=command,
        inventory=inventory,
        status=status,
        started_at=clock.started_at,
        finished_at=now(),
        duration_s=clock.duration_s(),
        release=release,
        error=error,
        controller=controller_identity(),
    )


def run_entry(
    command: str,
    *,
    inventory: str,
    run_id: str,
    release: Release | None,
    result: RunResult | None,
    failure: BaseException | None,
    cancelled: bool,
    clock: RunClock,
    reports: HostReports,
) -> HistoryEntry:
    """The history entry of a run that started a playbook, whatever became of it."""
    status = result.status if result is not None else ("canceled" if cancelled else "error")
    return HistoryEntry(
        run_id=result.run_id if result else run_id,
        command=command,
        inventory=inventory,
        status=status,
        started_at=clock.started_at,
        finished_at=now(),
        duration_s=clock.duration_s(),
        rc=result.rc if result else None,
        hosts={host: dataclasses.asdict(stats) for host, stats in result.hosts.items()} if result else {},
        failures=[dataclasses.asdict(item) for item in result.failures] if result else [],
        release=release,
        host_releases=reports.releases,
        host_caches=reports.caches,
        host_quality=reports.quality,
        artifact_dir=str(result.artifact_dir) if result else None,
        error=str(failure) if failure is not None else None,
        controller=controller_identity(),
    )


def automatic_rollback_entry(entry: HistoryEntry, rolled_back: Mapping[str, Mapping[str, Any]]) -> HistoryEntry:
    """The history of the rollback the hosts of a failed redeploy made on their own: they went back to what they
    served before."""
    first_host, first = next(iter(rolled_back.items()))
    return HistoryEntry(
        run_id=f"{entry.run_id}-rollback",
        command="rollback",
        inventory=entry.inventory,
        status="successful",
        started_at=entry.started_at,
        finished_at=entry.finished_at,
        duration_s=0.0,
        release=agreed_release(list(rolled_back.values())),
        host_releases={host: dict(report) for host, report in rolled_back.items()},
        hosts={host: entry.hosts.get(host, {}) for host in rolled_back},
        artifact_dir=entry.artifact_dir,
        controller=entry.controller,
        note=f"automatic, after release {first.get('failed_release')} failed on {first_host} in run "
        f"{entry.run_id}: {first.get('cause')}"
        + (f" [{first['journal_error']}]" if first.get("journal_error") else ""),
    )


def failed_run_error(command: str, result: RunResult, run_secrets: Mapping[str, str]) -> RunError:
    """The error for a run whose playbook failed: the host, the step and the cause, without secrets."""
    hint = (
        f"the run's output is in {result.artifact_dir}/stdout; fix the cause and run glm-deploy {command} "
        "again (finished steps are not redone)"
    )
    if result.failures:
        # A redeploy's or rollback's own last failure sums up the host's story (the cause, what was restored);
        # the failures before it were rescued.
        first = result.failures[-1] if command in ("redeploy", "rollback") else result.failures[0]
        others = len({failure.host for failure in result.failures} - {first.host})
        message = redact(first.message, run_secrets.values())
        if others:
            message += f" (and failures on {others} more host(s): see `glm-deploy history --json`)"
        return RunError(
            message, host=first.host, step=first.task, hint=hint, artifact_dir=str(result.artifact_dir)
        )
    unreachable = sorted(host for host, stats in result.hosts.items() if stats.unreachable)
    message = f"{Path(result.playbook).name} ended with status {result.status} (rc {result.rc})"
    if unreachable:
        message += f"; unreachable: {', '.join(unreachable)}"
    return RunError(message, hint=hint, artifact_dir=str(result.artifact_dir))


def finish(
    command: str,
    entry: HistoryEntry,
    result: RunResult | None,
    failure: BaseException | None,
    run_secrets: Mapping[str, str],
) -> RunOutcome:
    """The outcome of a run that started a playbook; raises what stopped it (cancelled, failed, or an error)."""
    if failure is not None:
        raise failure
    if result is None:
        raise RuntimeError(f"glm-deploy {command} ended without a result")
    if result.status == "canceled":
        raise RunCancelled(
            f"glm-deploy {command} (run {result.run_id}) was cancelled; hosts may be half-converged",
            hint=f"run glm-deploy {command} again to finish; the output so far is in {result.artifact_dir}/stdout",
            artifact_dir=str(result.artifact_dir),
        )
    if not result.ok:
        raise failed_run_error(command, result, run_secrets)
    return RunOutcome(command=command, entry=entry, result=result)
