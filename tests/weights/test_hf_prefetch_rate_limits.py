"""The Hub's rate limits and the retry budget: every wait the server names (Retry-After, the IETF draft's
RateLimit header) is honoured, on every path that talks to the Hub; retries end by time, not by count; a file
that fails for good lets the transfers in flight finish; and the messages say what is true.

Waits of the real Hub last minutes (`"resolvers";r=0;t=300`). Against the fault-injecting Hub the windows are
2 s; the long ones run in-process on a clock that advances without sleeping.
"""

from __future__ import annotations

import contextlib
import email.message
import email.utils
import json
import threading
import time
import types
from pathlib import Path
from typing import Any

import pytest
from ansible_collections.glm.deploy.plugins.module_utils.hub_download.errors import PrefetchError
from ansible_collections.glm.deploy.plugins.module_utils.hub_download.prefetch import Prefetch
from ansible_collections.glm.deploy.plugins.module_utils.hub_download.retry import Clock, parse_ratelimit, server_wait
from ansible_collections.glm.deploy.plugins.module_utils.hub_download.settings import Settings
from tests.equipment.hub_faults import Fault, FaultyHub
from tests.weights.helpers import Published, expected_digests, run_module, snapshot_digests

SHARD_1 = "model-00001-of-00003.safetensors"  # 2,500,000 bytes
SHARD_2 = "model-00002-of-00003.safetensors"  # 1,600,000 bytes
SHARD_3 = "model-00003-of-00003.safetensors"  # 150,000 bytes
TOKEN = "hf_glmDeployTestTokenNeverPrintMe1234567890"
POLICY = '"api";q=500;w=300, "resolvers";q=3000;w=300'


# -- the headers ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"resolvers";r=0;t=300', [("resolvers", 0, 300)]),
        ('"api";r=489;t=189', [("api", 489, 189)]),
        ('"api";r=10;t=50, "resolvers";r=0;t=120', [("api", 10, 50), ("resolvers", 0, 120)]),
        ('"api";r=10;t=50,"resolvers";r=0;t=120', [("api", 10, 50), ("resolvers", 0, 120)]),
        # A quoted policy name may hold the list's and the parameters' separators.
        ('"a, b;c=1";r=0;t=7', [("a, b;c=1", 0, 7)]),
        ('"say \\"hi\\", then";r=0;t=3', [('say \\"hi\\", then', 0, 3)]),
        # Parameters in any order, unknown ones and a partition key beside them.
        ('"day";t=86400;pk=:cHsdsRa894==:;r=0', [("day", 0, 86400)]),
        ("resolvers;r=0;t=5", [("resolvers", 0, 5)]),
        ('("a" "b");r=0;t=9', [('("a" "b")', 0, 9)]),
        # Missing parameters, wrong types, negative numbers, garbage: the member says nothing.
        ('"api";r=0', []),
        ('"api";t=30', []),
        ('"api";r=0;t=abc', []),
        ('"api";r=-1;t=30', []),
        ('"api";r=0;t=1.5', []),
        ('"api";r=0;t=99999999999999999999', []),
        ("", []),
        ("garbage", []),
        (";;;,,,", []),
        ('"unterminated;r=0;t=5', []),
        ('"ok";r=0;t=4, nonsense, "bad";r=x;t=1', [("ok", 0, 4)]),
    ],
)
def test_ratelimit_header_is_read_as_a_structured_field_list(value: str, expected: list[tuple[str, int, int]]):
    assert parse_ratelimit(value) == expected


NOW = 1_700_000_000.0


def answer(status: int, *headers: tuple[str, str]) -> Exception:
    """An error as huggingface_hub and the module's own transfers raise it: a response with a status and
    headers (an email.message.Message, as urllib gives them, so a header may come more than once)."""
    message = email.message.Message()
    for name, value in headers:
        message[name] = value
    error = Exception(f"HTTP {status}")
    error.response = types.SimpleNamespace(status_code=status, headers=message)  # type: ignore[attr-defined]
    return error


@pytest.mark.parametrize(
    ("error", "seconds", "reason"),
    [
        (answer(429, ("RateLimit", '"resolvers";r=0;t=300')), 300, "RateLimit t=300"),
        (answer(429, ("Retry-After", "7")), 7, "Retry-After 7"),
        (answer(429, ("Retry-After", email.utils.formatdate(NOW + 120, usegmt=True))), 120, "Retry-After "),
        (answer(429, ("Retry-After", email.utils.formatdate(NOW - 60, usegmt=True))), 0, "Retry-After "),
        # Both: the longer wait, since retrying before it would only earn another 429.
        (answer(429, ("Retry-After", "5"), ("RateLimit", '"api";r=0;t=40')), 40, "RateLimit t=40, Retry-After 5"),
        (answer(429, ("Retry-After", "90"), ("RateLimit", '"api";r=0;t=40')), 90, "Retry-After 90, RateLimit t=40"),
        # Several policies: the largest t of those exhausted; a policy with requests left does not hold us back.
        (
            answer(429, ("RateLimit", '"api";r=3;t=250, "resolvers";r=0;t=20, "pages";r=0;t=60')),
            60,
            "RateLimit t=60 for 'pages'",
        ),
        (answer(429, ("RateLimit", '"api";r=0;t=20'), ("RateLimit", '"resolvers";r=0;t=45')), 45, "t=45"),
        (answer(503, ("Retry-After", "30")), 30, "Retry-After 30"),
    ],
)
def test_the_wait_comes_from_retry_after_or_the_exhausted_ratelimit_policies(
    error: Exception, seconds: float, reason: str
):
    wait = server_wait(error, NOW)

    assert wait is not None
    assert wait.seconds == pytest.approx(seconds, abs=1)
    assert reason in wait.reason


@pytest.mark.parametrize(
    "error",
    [
        answer(429),
        answer(429, ("RateLimit", '"api";r=5;t=300')),  # requests left: the header names no wait
        answer(429, ("RateLimit", "garbage;;;")),
        answer(429, ("Retry-After", "soon")),
        answer(429, ("Retry-After", "-5")),
        answer(503, ("RateLimit", '"api";r=0;t=30')),  # RateLimit speaks of rate limits, which a 503 is not
        answer(500, ("Retry-After", "30")),
        Exception("no response at all"),
    ],
)
def test_no_usable_wait_falls_back_to_backoff(error: Exception):
    assert server_wait(error, NOW) is None


# -- the retry policy on a simulated clock ----------------------------------------------------------------------
class SimulatedClock(Clock):
    """Time that passes only when the code under test waits (or a call takes `call_seconds`)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []
        self.during_wait: list[Any] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return NOW + self.now

    def wait(self, event: Any, seconds: float) -> bool:
        self.waits.append(seconds)
        for look in self.during_wait:
            look()
        self.now += seconds
        return bool(event.is_set())


def make_job(tmp_path: Path, clock: SimulatedClock, **params: Any) -> Prefetch:
    settings = Settings(
        {"repo": "zai-org/GLM-tiny", "cache_dir": str(tmp_path / "hub"), "retry_backoff": 2.0, **params},
        check_mode=False,
    )
    return Prefetch(settings, hub=None, clock=clock)


def failing(errors: list[Exception], result: str = "done") -> Any:
    def call() -> str:
        if errors:
            raise errors.pop(0)
        return result

    return call


def rate_limited(seconds: int) -> Exception:
    return answer(429, ("RateLimit", f'"resolvers";r=0;t={seconds}'))


def test_a_five_minute_window_within_the_budget_is_waited_for(tmp_path: Path):
    clock = SimulatedClock()
    job = make_job(tmp_path, clock, retry_budget_s=900)

    result = job._with_retries("reading the metadata", failing([rate_limited(300), rate_limited(300)]))

    assert result == "done"
    assert clock.waits == [300, 300]
    assert job.retry_log[0].endswith("-> rate limited by the Hub: waiting 300 s (RateLimit t=300)")


def test_the_budget_is_time_and_caps_the_last_wait(tmp_path: Path):
    clock = SimulatedClock()
    job = make_job(tmp_path, clock, retry_budget_s=1000)

    with pytest.raises(PrefetchError) as raised:
        job._with_retries("reading the metadata of zai-org/GLM-tiny@main", failing([rate_limited(300)] * 100))

    assert clock.waits == [300, 300, 300, 100], "no wait may run past the budget"
    message = str(raised.value)
    assert "gave up after 5 attempts in 1000 s (retry_budget_s=1000)" in message
    assert "The Hub's rate limit (RateLimit t=300) outlasted the retry budget: raise retry_budget_s" in message
    assert "set HF_TOKEN" in message


def test_errors_without_a_named_wait_back_off_until_the_budget_ends(tmp_path: Path):
    clock = SimulatedClock()
    job = make_job(tmp_path, clock, retry_budget_s=600)

    with pytest.raises(PrefetchError, match=r"gave up after \d+ attempts in 600 s"):
        job._with_retries("downloading x", failing([ConnectionResetError("reset by peer")] * 1000))

    # Exponential from retry_backoff (with jitter), capped at 60 s, cut at the end of the budget.
    assert 1.5 <= clock.waits[0] <= 2.0
    assert max(clock.waits) <= 60
    assert sum(clock.waits) == pytest.approx(600)
    assert len(clock.waits) > 8, "a count of 8 retries would have given up long before the budget"


def test_progress_restarts_the_budget(tmp_path: Path):
    clock = SimulatedClock()
    job = make_job(tmp_path, clock, retry_budget_s=500)
    received = [0]

    def call() -> str:
        received[0] += 1
        if received[0] <= 4:
            raise rate_limited(300)  # each attempt moved bytes before the answer (see progress below)
        return "done"

    assert job._with_retries("downloading x", call, progress=lambda: received[0]) == "done"
    assert clock.waits == [300, 300, 300, 300]


def test_zero_budget_gives_up_at_the_first_failure(tmp_path: Path):
    clock = SimulatedClock()
    job = make_job(tmp_path, clock, retry_budget_s=0)

    with pytest.raises(PrefetchError, match="gave up after 1 attempts"):
        job._with_retries("reading the metadata", failing([rate_limited(2)]))
    assert clock.waits == []


def test_the_wait_shows_in_the_progress_file_while_it_runs(tmp_path: Path):
    clock = SimulatedClock()
    progress = tmp_path / "progress.json"
    job = make_job(tmp_path, clock, retry_budget_s=900, progress_file=str(progress))
    seen: list[dict[str, Any]] = []
    clock.during_wait.append(lambda: seen.append(json.loads(progress.read_text())))

    job._with_retries("reading the metadata of zai-org/GLM-tiny@main", failing([rate_limited(300)]))

    assert seen[0]["waiting"] == [
        "reading the metadata of zai-org/GLM-tiny@main: rate limited by the Hub: waiting 300 s "
        "(RateLimit t=300), 300 s left"
    ]
    assert job.progress_snapshot()["waiting"] == [], "a wait that ended is no longer shown"


def test_a_full_disk_is_not_retried_for_the_whole_budget(tmp_path: Path):
    clock = SimulatedClock()
    job = make_job(tmp_path, clock, retry_budget_s=900)

    with pytest.raises(PrefetchError, match="Free space on that filesystem"):
        job._with_retries("downloading x", failing([OSError(28, "No space left on device")]))
    assert clock.waits == []


# -- against the fault-injecting Hub ------------------------------------------------------------------------------
def prefetch(hub: FaultyHub, model: Published, cache_dir: Path, **extra: object):
    args = {"repo": model.repo, "revision": "main", "cache_dir": str(cache_dir), "endpoint": hub.url}
    args.update(extra)
    return run_module(args)


def assert_complete(cache_dir: Path, model: Published) -> None:
    assert snapshot_digests(cache_dir, model.repo, model.commit) == expected_digests(model.files)


@pytest.mark.parametrize(
    ("headers", "path"),
    [
        ({"rate_limit": '"resolvers";r=0;t=2'}, "processes"),
        ({"rate_limit": '"resolvers";r=0;t=2'}, "threads"),
        ({"rate_limit": '"resolvers";r=0;t=2'}, "xet"),
        ({"retry_after": 2}, "processes"),
        # HTTP-dates have whole seconds: 3 s after the answer is at least 2 s away when the client reads it.
        ({"retry_after_date_in": 3}, "processes"),
        ({"retry_after": 1, "rate_limit": '"resolvers";r=0;t=2'}, "processes"),
        (
            {"rate_limit": '"api";r=100;t=250, "resolvers";r=0;t=2', "rate_limit_policy": POLICY},
            "processes",
        ),
    ],
    ids=[
        "ratelimit-only",
        "ratelimit-threads",
        "ratelimit-xet",
        "retry-after",
        "http-date",
        "both",
        "several-policies",
    ],
)
@pytest.mark.playbook
def test_a_file_rate_limited_by_header_waits_as_long_as_the_hub_says(
    hub: FaultyHub, model: Published, cache_dir: Path, headers: dict[str, Any], path: str
):
    hub.faults.add(Fault("status", filename=SHARD_3, status=429, **headers))
    options: dict[str, object] = {"max_workers": 1} if path == "threads" else {"xet": path == "xet"}

    run = prefetch(hub, model, cache_dir, **options)

    assert not run.failed, run.output
    assert_complete(cache_dir, model)
    gets = hub.gets(SHARD_3)
    assert [entry.fault for entry in gets] == ["status", None]
    assert gets[1].when - gets[0].when >= 1.9, "the wait the Hub named (2 s) was not honoured"
    assert gets[1].when - gets[0].when < 30, "a policy with requests left (t=250) held the download back"
    if path != "xet":  # huggingface_hub waits inside its own download before this module sees the error
        # An HTTP-date has whole seconds: made 3 s ahead up to a second before the client reads it, it names 2 or 3 s.
        named = ("waiting 2 s", "waiting 3 s") if "retry_after_date_in" in headers else ("waiting 2 s",)
        assert any(
            f"rate limited by the Hub: {wait}" in line for line in run.result["retry_log"] for wait in named
        ), run.result


@pytest.mark.playbook


def test_a_malformed_ratelimit_header_falls_back_to_backoff(hub: FaultyHub, model: Published, cache_dir: Path):
    hub.faults.add(Fault("status", filename=SHARD_3, status=429, rate_limit='"resolvers";r=zero;t=;;'))

    run = prefetch(hub, model, cache_dir)

    assert not run.failed, run.output
    assert_complete(cache_dir, model)
    gets = hub.gets(SHARD_3)
    assert gets[1].when - gets[0].when < 1.5, "helpers set retry_backoff 0.2 s; nothing asked for longer"
    assert any("-> retry in" in line for line in run.result["retry_log"])


@pytest.mark.playbook


def test_metadata_rate_limited_by_header_waits_as_long_as_the_hub_says(
    hub: FaultyHub, model: Published, cache_dir: Path
):
    hub.faults.add(Fault("api_status", filename="/api/*", status=429, rate_limit='"api";r=0;t=2'))

    started = time.monotonic()
    run = prefetch(hub, model, cache_dir)

    assert not run.failed, run.output
    assert time.monotonic() - started >= 2
    assert any(
        line.startswith("reading the metadata") and "rate limited by the Hub: waiting 2 s (RateLimit t=2)" in line
        for line in run.result["retry_log"]
    ), run.result["retry_log"]


@pytest.mark.playbook


def test_unavailable_with_retry_after_waits_as_long_as_the_hub_says(hub: FaultyHub, model: Published, cache_dir: Path):
    hub.faults.add(Fault("status", filename=SHARD_2, status=503, retry_after=2))

    run = prefetch(hub, model, cache_dir)

    assert not run.failed, run.output
    gets = hub.gets(SHARD_2)
    assert gets[1].when - gets[0].when >= 1.9
    assert any("the Hub is unavailable (503): waiting 2 s (Retry-After 2)" in line for line in run.result["retry_log"])


@pytest.mark.playbook


def test_a_rate_limit_longer_than_the_budget_fails_saying_so(hub: FaultyHub, model: Published, cache_dir: Path):
    hub.faults.add(Fault("status", filename=SHARD_3, status=429, rate_limit='"resolvers";r=0;t=300', times=100))

    started = time.monotonic()
    run = prefetch(hub, model, cache_dir, retry_budget_s=2)

    assert run.failed
    assert time.monotonic() - started < 60, "a wait ran past the 2 s budget"
    message = run.result["msg"]
    assert f"downloading {SHARD_3}: gave up after 2 attempts" in message
    assert "(retry_budget_s=2)" in message
    assert "The Hub's rate limit (RateLimit t=300) outlasted the retry budget" in message


# -- a final failure lets transfers in flight finish -------------------------------------------------------------
@pytest.mark.parametrize("xet", [False, True], ids=["processes", "threads-xet"])
@pytest.mark.playbook
def test_transfers_in_flight_finish_when_another_file_fails(
    hub: FaultyHub, model: Published, cache_dir: Path, xet: bool
):
    # Two at once, largest first: shard 1 trickles in over 4 s; shard 2 finishes, then shard 3 fails for good
    # (404) while shard 1 is still arriving. tokenizer.json and config.json are not started yet.
    hub.faults.add(Fault("slow", filename=SHARD_1, seconds=4))
    hub.faults.add(Fault("status", filename=SHARD_3, status=404, times=100))

    run = prefetch(hub, model, cache_dir, max_workers=2, xet=xet)

    assert run.failed
    digests = snapshot_digests(cache_dir, model.repo, model.commit)
    assert digests == {name: expected_digests(model.files)[name] for name in (SHARD_1, SHARD_2)}
    assert hub.gets("config.json") == [] and hub.gets("tokenizer.json") == [], "a new file started after the failure"
    message = run.result["msg"]
    assert "404" in message and SHARD_3 in message
    assert "2 of 5 files were finished and verified before the run stopped (kept in the cache)" in message
    assert sorted(run.result["fetched"]) == [SHARD_1, SHARD_2]
    assert sorted(run.result["files_not_finished"]) == sorted(["config.json", "tokenizer.json", SHARD_3])
    # What was finished is recorded as verified: the re-run fetches only the rest.
    hub.faults.clear()
    again = prefetch(hub, model, cache_dir, xet=xet)
    assert not again.failed, again.output
    assert sorted(again.result["fetched"]) == sorted(["config.json", "tokenizer.json", SHARD_3])


# -- messages that say what is true ------------------------------------------------------------------------------
@pytest.mark.parametrize("status", [404, 401])
@pytest.mark.playbook
def test_a_missing_repository_with_a_token_is_not_found_or_not_accessible(
    hub: FaultyHub, model: Published, cache_dir: Path, status: int
):
    if status == 401:  # what the Hub answers for a repository it will not show to this caller
        hub.faults.add(Fault("api_status", filename="/api/*", status=401, error_code="RepoNotFound"))
    repo = "zai-org/GLM-does-not-exist" if status == 404 else model.repo

    run = prefetch(hub, Published(repo, model.commit, model.files), cache_dir, token=TOKEN)

    assert run.failed
    message = run.result["msg"]
    assert f"repository {repo} (revision 'main') was not found at {hub.url}, or the token given has no access" in (
        message
    )
    assert "HF_TOKEN" not in message, "a token was given: asking for one misleads"
    assert TOKEN not in run.output


@pytest.mark.playbook


def test_metadata_that_never_answers_claims_no_partial_files(hub: FaultyHub, model: Published, cache_dir: Path):
    hub.faults.add(Fault("api_status", filename="/api/*", status=503, times=1000))

    run = prefetch(hub, model, cache_dir, retry_budget_s=1)

    assert run.failed
    message = run.result["msg"]
    assert message.startswith(f"reading the metadata of {model.repo}@main: gave up after ")
    assert "Nothing was downloaded" in message
    assert "kept" not in message and "resumes" not in message
    assert not cache_dir.exists() or not any(path.is_file() for path in cache_dir.rglob("*"))


@pytest.mark.playbook


def test_waits_in_worker_processes_reach_the_progress_file(
    hub: FaultyHub, model: Published, cache_dir: Path, tmp_path: Path
):
    progress = tmp_path / "progress.json"
    hub.faults.add(Fault("status", filename=SHARD_3, status=429, rate_limit='"resolvers";r=0;t=3'))
    seen: list[list[str]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.2):
            with contextlib.suppress(OSError, ValueError):  # not written yet, or caught mid-rewrite
                seen.append(json.loads(progress.read_text()).get("waiting", []))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        run = prefetch(hub, model, cache_dir, progress_file=str(progress))
    finally:
        done.set()
        watcher.join()

    assert not run.failed, run.output
    assert run.result["download_workers"].startswith("processes")
    assert any(
        note.startswith(f"downloading {SHARD_3}: rate limited by the Hub: waiting 3 s (RateLimit t=3)")
        for notes in seen
        for note in notes
    ), seen
