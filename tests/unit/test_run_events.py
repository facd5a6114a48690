"""RunEvent: ansible-runner's event dicts read once, in the shapes ansible-runner writes them."""

from __future__ import annotations

import datetime

from glm_deploy.progress import Progress, format_line
from glm_deploy.run_events import RunEvent, utc_time


def _event(kind: str, **data: object) -> dict[str, object]:
    extra = {key: data.pop(key) for key in ("stdout", "created") if key in data}
    return {"event": kind, "uuid": "u", "counter": 1, "event_data": data, **extra}


def test_a_failed_task_names_its_host_task_and_message() -> None:
    typed = RunEvent.of(
        _event("runner_on_failed", host="h1", task="Start the unit", task_action="ansible.builtin.systemd",
               res={"msg": "", "stderr": "unit failed\n"})
    )
    assert (typed.failed, typed.unreachable, typed.host, typed.task) == (True, False, "h1", "Start the unit")
    assert typed.message == "unit failed"
    assert typed.action_is("systemd") and typed.action_is("ansible.builtin.systemd") and not typed.action_is("d")


def test_ignored_failures_and_other_kinds_are_not_failures() -> None:
    assert not RunEvent.of(_event("runner_on_failed", host="h", res={"msg": "x"}, ignore_errors=True)).failed
    assert not RunEvent.of(_event("runner_on_ok", host="h", res={"msg": "x"})).failed
    assert RunEvent.of(_event("runner_item_on_failed", host="h", res={})).message == "failed"
    unreachable = RunEvent.of(_event("runner_on_unreachable", host="h", res={"msg": "ssh: no route"}))
    assert unreachable.failed and unreachable.unreachable and unreachable.message == "ssh: no route"


def test_facts_come_only_from_a_task_that_succeeded() -> None:
    facts = {"glm_release": {"release_id": "r1"}}
    assert RunEvent.of(_event("runner_on_ok", host="h", res={"ansible_facts": facts})).facts == facts
    assert RunEvent.of(_event("runner_on_failed", host="h", res={"ansible_facts": facts})).facts == {}
    assert RunEvent.of(_event("runner_on_ok", host="h", res={"ansible_facts": "not a mapping"})).facts == {}


def test_missing_or_malformed_parts_read_as_empty() -> None:
    for raw in ({}, {"event": "verbose"}, {"event": "x", "event_data": None}, {"event": "x", "event_data": [1]}):
        typed = RunEvent.of(raw)
        assert typed.host is None and typed.task is None and typed.result == {} and typed.progress() == []
    assert RunEvent.of({"event": "x", "event_data": {"res": ["a list"]}}).result == {}


def test_progress_lines_in_the_output_are_read_back_whole() -> None:
    progress = Progress(bytes_done=3 * 2**30, bytes_total=8 * 2**30, rate_bytes_per_s=2**20, eta_s=95.0,
                        files_done=2, files_total=8)
    stdout = f"ok: [h1]\n{format_line('weights h1', progress)}\nsomething else"
    [(label, read)] = RunEvent.of(_event("runner_on_ok", host="h1", stdout=stdout)).progress()
    assert label == "weights h1"
    assert (read.bytes_done, read.bytes_total, read.files_done, read.eta_s) == (3 * 2**30, 8 * 2**30, 2, 95.0)


def test_times_without_a_zone_are_utc() -> None:
    at = RunEvent.of(_event("runner_on_ok", created="2026-12-03T21:00:00.5")).created_at()
    assert at == datetime.datetime(2026, 12, 3, 21, 0, 0, 500000, tzinfo=datetime.UTC)
    assert utc_time("2026-12-03T21:00:00+01:00") == datetime.datetime(2026, 12, 3, 20, 0, tzinfo=datetime.UTC)
    assert utc_time("yesterday") is None and utc_time(None) is None and utc_time(5) is None
