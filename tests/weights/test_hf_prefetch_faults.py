"""Every transfer fault the Hub (or the path to it) can throw ends in a complete snapshot, sha256 right."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.equipment.hub_faults import Fault, FaultyHub
from tests.weights.helpers import Published, expected_digests, run_module, snapshot_digests

pytestmark = pytest.mark.playbook

SHARD_1 = "model-00001-of-00003.safetensors"  # 2,500,000 bytes
SHARD_2 = "model-00002-of-00003.safetensors"  # 1,600,000 bytes
SHARD_3 = "model-00003-of-00003.safetensors"  # 150,000 bytes


_hash_aside = "never"


@pytest.fixture(autouse=True, params=["never", "always"])
def hash_aside(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every fault twice: files hashed in the transfer's thread, and in a thread beside it."""
    global _hash_aside  # noqa: PLW0603 - read by prefetch() below, which every test calls
    _hash_aside = request.param
    yield request.param
    _hash_aside = "never"


def prefetch(hub: FaultyHub, model: Published, cache_dir: Path, **extra: object):
    args = {"repo": model.repo, "revision": "main", "cache_dir": str(cache_dir), "endpoint": hub.url}
    args["hash_aside"] = _hash_aside
    args.update(extra)
    run = run_module(args)
    if "hash_aside" in run.result:
        assert run.result["hash_aside"] is (_hash_aside == "always")
    return run


def resume_offset(range_header: str | None) -> int:
    assert range_header is not None and range_header.startswith("bytes=") and range_header.endswith("-")
    return int(range_header[len("bytes=") : -1])


def assert_complete(cache_dir: Path, model: Published) -> None:
    assert snapshot_digests(cache_dir, model.repo, model.commit) == expected_digests(model.files)
    blobs = cache_dir / f"models--{model.repo.replace('/', '--')}" / "blobs"
    assert not list(blobs.glob("*.incomplete")), "partial files left behind"


def test_dropped_connection_resumes_from_the_byte_it_reached(hub: FaultyHub, model: Published, cache_dir: Path):
    hub.faults.add(Fault("drop", filename=SHARD_1, at_byte=1_800_000))

    run = prefetch(hub, model, cache_dir)

    assert not run.failed, run.output
    assert_complete(cache_dir, model)
    gets = hub.gets(SHARD_1)
    assert [entry.fault for entry in gets] == ["drop", None]
    assert 0 < resume_offset(gets[1].range_header) <= 1_800_000, "the second request should resume, not restart"
    # Resuming means the server sent less than the file twice over.
    assert hub.stats.file_bytes_sent < sum(len(data) for data in model.files.values()) + 1_800_000
    assert run.result["commit"] == model.commit


def test_stalled_transfer_is_abandoned_and_resumed(hub: FaultyHub, model: Published, cache_dir: Path):
    # The server goes silent for 6 s after 50,000 bytes; with a 1 s stall timeout the client gives up on that
    # response and resumes with a Range request long before the server would have closed it.
    hub.faults.add(Fault("stall", filename=SHARD_2, at_byte=1_500_000, seconds=6))

    run = prefetch(hub, model, cache_dir, stall_timeout=1)

    assert not run.failed, run.output
    assert_complete(cache_dir, model)
    gets = hub.gets(SHARD_2)
    assert gets[0].fault == "stall"
    assert 0 < resume_offset(gets[1].range_header) <= 1_500_000
    assert gets[1].when - gets[0].when < 6, "the stall was waited out instead of detected"


def test_wrong_bytes_are_removed_and_fetched_again(hub: FaultyHub, model: Published, cache_dir: Path):
    hub.faults.add(Fault("corrupt", filename=SHARD_2, at_byte=4_321))

    run = prefetch(hub, model, cache_dir)

    assert not run.failed, run.output
    assert_complete(cache_dir, model)
    assert run.result["files_refetched_corrupt"] == [SHARD_2]
    assert [entry.fault for entry in hub.gets(SHARD_2)] == ["corrupt", None]


def test_rate_limit_is_retried_after_the_servers_retry_after(hub: FaultyHub, model: Published, cache_dir: Path):
    hub.faults.add(Fault("status", filename=SHARD_3, status=429, retry_after=1, times=2))

    run = prefetch(hub, model, cache_dir)

    assert not run.failed, run.output
    assert_complete(cache_dir, model)
    gets = hub.gets(SHARD_3)
    assert [entry.fault for entry in gets] == ["status", "status", None]
    assert gets[1].when - gets[0].when >= 0.95, "Retry-After: 1 was not honoured"
    assert gets[2].when - gets[1].when >= 0.95, "Retry-After: 1 was not honoured"


def test_server_errors_are_retried_with_backoff(hub: FaultyHub, model: Published, cache_dir: Path):
    hub.faults.add(Fault("status", filename=SHARD_1, status=500, times=3))
    hub.faults.add(Fault("api_status", filename="/api/*", status=503, times=2))

    run = prefetch(hub, model, cache_dir)

    assert not run.failed, run.output
    assert_complete(cache_dir, model)
    assert [entry.fault for entry in hub.gets(SHARD_1)] == ["status"] * 3 + [None]
    assert run.result["retries_used"] >= 5
    assert any("500" in line for line in run.result["retry_log"])


def test_a_fault_that_never_ends_gives_up_with_a_clear_error(hub: FaultyHub, model: Published, cache_dir: Path):
    hub.faults.add(Fault("status", filename=SHARD_1, status=500, times=1000))

    started = time.monotonic()
    run = prefetch(hub, model, cache_dir, retry_budget_s=1.5)
    took = time.monotonic() - started

    assert run.failed
    message = run.result["msg"]
    assert f"downloading {SHARD_1}: gave up after " in message
    assert "(retry_budget_s=1.5)" in message
    assert "500" in message and "re-run fetches it from the start" in message
    assert took < 30, f"the 1.5 s retry budget ran {took:.0f} s"
    snapshot = cache_dir / f"models--{model.repo.replace('/', '--')}" / "snapshots" / model.commit
    assert not (snapshot / SHARD_1).exists()
    # The run stops at the first file it gives up on; whatever else it fetched is complete and right.
    for name, digest in snapshot_digests(cache_dir, model.repo, model.commit).items():
        assert expected_digests(model.files)[name] == digest

    # The fault ends; a re-run completes the snapshot.
    hub.faults.clear()
    again = prefetch(hub, model, cache_dir)
    assert not again.failed, again.output
    assert_complete(cache_dir, model)


def test_every_fault_at_once_on_a_multi_shard_download(hub: FaultyHub, model: Published, cache_dir: Path):
    hub.faults.add(Fault("drop", filename=SHARD_1, at_byte=1_100_000))
    hub.faults.add(Fault("corrupt", filename=SHARD_1, at_byte=2_499_999))
    hub.faults.add(Fault("status", filename=SHARD_2, status=503))
    hub.faults.add(Fault("status", filename=SHARD_3, status=429, retry_after=1))
    hub.faults.add(Fault("drop", filename="config.json", at_byte=3))

    run = prefetch(hub, model, cache_dir, max_workers=4)

    assert not run.failed, run.output
    assert_complete(cache_dir, model)
    assert hub.faults.pending == []
