"""What a run records, from the events the hosts send: the release each host serves, its caches and quality gates,
the automatic rollback of a failed redeploy, the error a failed run raises, and what `status` reads back. These are
the steps `Deployment` runs after a playbook (glm_deploy.run_record, glm_deploy.status), checked without one."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from glm_deploy.catalog import load_catalog
from glm_deploy.errors import RunCancelled, RunError
from glm_deploy.history import HistoryEntry
from glm_deploy.release import Release
from glm_deploy.render import PlanOptions, render_plan
from glm_deploy.run_record import (
    HostReports,
    RunClock,
    automatic_rollback_entry,
    failed_run_error,
    finish,
    run_entry,
)
from glm_deploy.runner import Failure, HostStats, RunResult
from glm_deploy.status import host_caches_entry, host_release, last_serving

SECRET = "sk-run-record-test-0f3a"
COMMIT_A, COMMIT_B = "a" * 40, "b" * 40


def _release(commit: str) -> Release:
    plan = render_plan(
        load_catalog(), model="glm-tiny", engine="vllm-cpu", hardware="cpu", options=PlanOptions(revision=commit)
    )
    return Release.from_plan(plan)


A, B = _release(COMMIT_A), _release(COMMIT_B)


def _ok(host: str, facts: dict[str, Any]) -> dict[str, Any]:
    return {"event": "runner_on_ok", "event_data": {"host": host, "res": {"ansible_facts": facts}}}


def _gate(host: str, *, passed: bool, event: str = "runner_on_ok") -> dict[str, Any]:
    result = {
        "release_id": B.release_id,
        "passed": passed,
        "accuracy": {"set": "sums", "score": 0.95 if passed else 0.2, "correct": 57, "total": 60, "floor": 0.9},
        "message": "accuracy gate",
    }
    return {"event": event, "event_data": {"host": host, "task_action": "glm.deploy.quality_gate", "res": result}}


def _result(status: str = "successful", failures: tuple[Failure, ...] = (), **hosts: HostStats) -> RunResult:
    return RunResult(
        run_id="run-1",
        playbook="/p/playbooks/redeploy.yml",
        status=status,
        rc=0 if status == "successful" else 2,
        hosts=hosts or {"h1": HostStats(ok=3)},
        artifact_dir=Path("/state/runs/run-1"),
        failures=failures,
    )


def test_reports_collect_releases_caches_and_every_gate_and_hand_events_on() -> None:
    reports = HostReports()
    seen: list[dict[str, Any]] = []
    handle = reports.forwarding(seen.append)
    events = [
        {"event": "playbook_on_task_start", "event_data": {"task": "Download"}},
        _ok("h1", {"glm_release": {**B.to_dict(), "outcome": "kept"}}),
        _ok("h1", {"glm_caches": {"triton": {"warm": True, "bytes": 10}, "bad": "not a record"}}),
        _gate("h1", passed=False, event="runner_on_failed"),
        _gate("h1", passed=True),
        {"event": "runner_on_ok", "event_data": {"host": "h2", "task_action": "debug", "res": {"msg": "hi"}}},
    ]
    for event in events:
        handle(event)
    assert seen == events
    assert reports.releases == {"h1": {**B.to_dict(), "outcome": "kept"}}
    assert reports.caches == {"h1": {"triton": {"warm": True, "bytes": 10}}}
    assert [gate["passed"] for gate in reports.quality["h1"]] == [False, True]
    assert reports.quality["h1"][1]["score"] == 0.95 and reports.quality["h1"][1]["release_id"] == B.release_id
    assert reports.rolled_back == {}


def test_the_served_release_is_what_the_hosts_agree_on() -> None:
    expected = Release.from_plan(
        render_plan(load_catalog(), model="glm-tiny", engine="vllm-cpu", hardware="cpu")
    )
    reports = HostReports(releases={"h1": B.to_dict(), "h2": B.to_dict()})
    assert reports.served_release("redeploy", expected) == B
    # Hosts that disagree name nothing; the controller's own release stays.
    reports.releases["h2"] = A.to_dict()
    resolved = dataclasses.replace(expected, model_commit=COMMIT_A)
    assert reports.served_release("redeploy", resolved) == resolved
    # Hosts that only say what they fetched give the commit the branch resolved to.
    fetched = HostReports(releases={"h1": {"model_commit": COMMIT_B}})
    assert fetched.served_release("deploy", expected).model_commit == COMMIT_B
    # A verify serves nothing new: it names the release the hosts report from their own record, else the one the
    # controller knows of.
    assert HostReports(releases={"h1": B.to_dict()}).served_release("verify", expected) == B
    assert HostReports().served_release("verify", expected) == expected
    assert HostReports().served_release("benchmark", None) is None


def test_a_rolled_back_host_does_not_name_the_redeploy_but_the_rollback() -> None:
    reports = HostReports(
        releases={
            "h1": {**A.to_dict(), "outcome": "rolled_back", "failed_release": B.release_id, "cause": "verify: 500",
                   "journal_error": "CUDA error"},
            "h2": {**A.to_dict(), "outcome": "kept"},
        }
    )
    assert set(reports.rolled_back) == {"h1"}
    assert reports.served_release("redeploy", B).release_id == A.release_id  # h2's report alone
    assert reports.served_release("rollback", B).release_id == A.release_id

    entry = run_entry(
        "redeploy",
        inventory="inventories/test",
        run_id="run-1",
        release=B,
        result=_result("failed", (Failure("h1", "Gate", "verify: 500"),), h1=HostStats(failures=1)),
        failure=None,
        cancelled=False,
        clock=RunClock.start(),
        reports=reports,
    )
    rollback = automatic_rollback_entry(entry, reports.rolled_back)
    assert (rollback.run_id, rollback.command, rollback.status) == ("run-1-rollback", "rollback", "successful")
    assert rollback.release is not None and rollback.release.release_id == A.release_id
    assert list(rollback.host_releases) == ["h1"] and rollback.hosts == {"h1": entry.hosts["h1"]}
    assert rollback.note == (
        f"automatic, after release {B.release_id} failed on h1 in run run-1: verify: 500 [CUDA error]"
    )


def test_a_run_entry_records_what_ran_or_why_nothing_did() -> None:
    reports = HostReports(caches={"h1": {"triton": {"warm": True}}})
    clock = RunClock.start()
    entry = run_entry(
        "deploy", inventory="inv", run_id="run-1", release=A, result=_result(), failure=None, cancelled=False,
        clock=clock, reports=reports,
    )
    assert (entry.status, entry.rc, entry.hosts["h1"]["ok"], entry.host_caches) == ("successful", 0, 3, reports.caches)
    assert entry.artifact_dir == "/state/runs/run-1" and entry.controller["pid"] > 0
    no_result = dict(
        inventory="inv", run_id="run-2", release=A, result=None, failure=OSError("boom"), clock=clock, reports=reports
    )
    assert run_entry("deploy", cancelled=True, **no_result).status == "canceled"
    errored = run_entry("deploy", cancelled=False, **no_result)
    assert (errored.status, errored.run_id, errored.error) == ("error", "run-2", "boom")


def test_a_failed_run_names_the_host_and_step_without_the_secret() -> None:
    failures = (
        Failure("h1", "Stage the weights", "first failure"),
        Failure("h2", "Gate on the verify checks", "rescued"),
        Failure("h1", "Stop the roll, naming the cause", f"release failed with key {SECRET}"),
    )
    result = _result("failed", failures, h1=HostStats(failures=2), h2=HostStats(failures=1))
    redeploy = failed_run_error("redeploy", result, {"glm_api_key": SECRET})
    assert (redeploy.host, redeploy.step) == ("h1", "Stop the roll, naming the cause")
    assert SECRET not in str(redeploy) and "<redacted>" in str(redeploy)
    assert "and failures on 1 more host(s)" in str(redeploy)
    assert "/state/runs/run-1/stdout" in str(redeploy)
    deploy = failed_run_error("deploy", result, {})
    assert (deploy.host, deploy.step) == ("h1", "Stage the weights")

    unreachable = failed_run_error("deploy", _result("failed", h1=HostStats(unreachable=1)), {})
    assert unreachable.host is None and "redeploy.yml ended with status failed (rc 2); unreachable: h1" in str(
        unreachable
    )


def test_finish_returns_the_outcome_or_raises_what_stopped_the_run() -> None:
    entry = HistoryEntry("run-1", "deploy", "inv", "successful", "t0", "t1", 1.0)
    outcome = finish("deploy", entry, _result(), None, {})
    assert outcome.ok and outcome.result is not None and outcome.entry is entry
    with pytest.raises(RunCancelled, match="was cancelled"):
        finish("deploy", entry, _result("canceled"), None, {})
    with pytest.raises(RunError, match="Stage"):
        finish("deploy", entry, _result("failed", (Failure("h1", "Stage", "no"),)), None, {})
    with pytest.raises(OSError, match="boom"):
        finish("deploy", entry, None, OSError("boom"), {})


def _entry(run_id: str, command: str, status: str, release: Release | None, **fields: Any) -> HistoryEntry:
    return HistoryEntry(run_id, command, "inv", status, "t0", f"t-{run_id}", 1.0, release=release, **fields)


def test_status_reads_what_each_host_serves_from_the_history() -> None:
    deployed = _entry("1", "deploy", "successful", A, hosts={"h1": {}, "h2": {}},
                      host_caches={"h1": {"triton": {"warm": True}}})
    failed = _entry(
        "2", "redeploy", "failed", B, hosts={"h1": {}, "h2": {}},
        host_releases={"h1": {**A.to_dict(), "outcome": "rolled_back"}, "h2": {**B.to_dict(), "outcome": "kept"}},
    )
    rollback = _entry("2-rollback", "rollback", "successful", A, hosts={"h1": {}},
                      host_releases={"h1": {**A.to_dict(), "outcome": "rolled_back"}})
    verified = _entry("3", "verify", "successful", None, hosts={"h1": {}})
    entries = [deployed, failed, rollback, verified]

    assert last_serving(entries) is rollback
    assert host_release(entries, "h1") == A  # the rollback entry names it, not the failed redeploy
    assert host_release(entries, "h2") == A  # a failed run's report is not what a host serves
    assert host_release(entries, "h3") is None
    assert host_caches_entry(entries, "h1") is deployed and host_caches_entry(entries, "h2") is None
