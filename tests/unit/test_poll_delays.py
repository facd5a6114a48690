"""The wait actions (weights download, JIT warm-up, endpoint health) poll soon first, then back off to their
interval: a job with nothing to do (a converged re-run) costs about a second, not a whole interval."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "collections") not in sys.path:
    sys.path.insert(0, str(REPO / "collections"))

from ansible_collections.glm.deploy.plugins.plugin_utils.async_poll import FIRST_POLL_S, PollDelays  # noqa: E402

ACTIONS = REPO / "collection" / "plugins" / "action"


def test_delays_double_from_the_first_poll_up_to_the_interval_and_stay_there() -> None:
    delays = PollDelays(15)
    assert [delays.next() for _ in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0, 15.0]


def test_a_job_that_ends_at_once_is_seen_within_about_a_second() -> None:
    delays = PollDelays(30)
    assert delays.next() + delays.next() <= 2 * FIRST_POLL_S + 1


def test_an_interval_below_the_first_poll_is_kept() -> None:
    delays = PollDelays(0.2)
    assert [delays.next() for _ in range(3)] == [0.2, 0.2, 0.2]


def test_every_wait_action_sleeps_by_the_delays_not_a_fixed_interval() -> None:
    for name in ("hf_prefetch_wait", "cache_warmup_wait", "wait_healthy"):
        source = (ACTIONS / f"{name}.py").read_text()
        assert "PollDelays(interval)" in source, name
        assert "time.sleep(interval)" not in source, name
