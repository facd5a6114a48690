"""What a user checks after (and between) downloads: idempotence, check mode, revisions, resume, repair."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from tests.equipment.hub_faults import FaultyHub
from tests.weights.helpers import (
    REPO_ID,
    Published,
    expected_digests,
    make_model_files,
    run_module,
    snapshot_digests,
)

pytestmark = pytest.mark.playbook

SHARD_1 = "model-00001-of-00003.safetensors"


def args_for(hub: FaultyHub, cache_dir: Path, revision: str = "main", **extra: object) -> dict[str, object]:
    args: dict[str, object] = {
        "repo": REPO_ID,
        "revision": revision,
        "cache_dir": str(cache_dir),
        "endpoint": hub.url,
    }
    args.update(extra)
    return args


def repo_folder(cache_dir: Path) -> Path:
    return cache_dir / f"models--{REPO_ID.replace('/', '--')}"


def total_bytes(model: Published) -> int:
    return sum(len(data) for data in model.files.values())


def test_second_run_changes_nothing_and_transfers_nothing(hub: FaultyHub, model: Published, cache_dir: Path):
    first = run_module(args_for(hub, cache_dir))
    assert not first.failed, first.output
    assert first.result["changed"] is True
    assert first.result["files_fetched"] == 5
    assert first.result["bytes_fetched"] == total_bytes(model)
    # Each file in a forked worker process; the parent merged what they verified into one record (the re-run
    # below hashes nothing, so all five are in it).
    assert first.result["download_workers"] == "processes 5"
    assert first.result["files_verified"] == 5
    assert (repo_folder(cache_dir) / "refs" / "main").read_text() == model.commit

    hub.stats.reset()
    second = run_module(args_for(hub, cache_dir))

    assert not second.failed, second.output
    assert second.result["changed"] is False
    assert second.result["files_fetched"] == 0
    assert second.result["files_verified"] == 0, "a re-run re-hashed files it had verified before"
    assert second.result["download_workers"] == "none"
    assert second.result["hash_aside"] is False
    assert hub.stats.file_bytes_sent == 0
    assert hub.stats.requests.get("file-get", 0) == 0
    assert hub.stats.requests.get("file-head", 0) == 0
    assert snapshot_digests(cache_dir, REPO_ID, model.commit) == expected_digests(model.files)


def test_check_mode_reports_what_it_would_fetch_and_writes_nothing(hub: FaultyHub, model: Published, cache_dir: Path):
    progress_file = cache_dir.parent / "progress.json"
    run = run_module(args_for(hub, cache_dir, progress_file=str(progress_file)), check_mode=True)

    assert not run.failed, run.output
    assert run.result["changed"] is True
    assert sorted(run.result["would_fetch_files"]) == sorted(model.files)
    assert run.result["would_fetch_bytes"] == total_bytes(model)
    assert run.result["commit"] == model.commit
    assert not cache_dir.exists()
    assert not progress_file.exists()
    assert hub.stats.file_bytes_sent == 0

    assert not run_module(args_for(hub, cache_dir)).failed
    after = run_module(args_for(hub, cache_dir), check_mode=True)
    assert after.result["changed"] is False
    assert after.result["would_fetch_files"] == []
    assert after.result["would_fetch_bytes"] == 0
    # Complete and verified at the ref: the weights role skips the async download on this answer.
    assert (after.result["would_verify_files"], after.result["would_move_ref"]) == ([], False)
    (cache_dir / ("models--" + REPO_ID.replace("/", "--")) / "refs" / "main").unlink()
    moved = run_module(args_for(hub, cache_dir), check_mode=True)
    moved_ref = (moved.result["changed"], moved.result["would_move_ref"], moved.result["would_fetch_files"])
    assert moved_ref == (True, True, [])


def test_a_new_revision_fetches_only_what_changed_and_keeps_the_old_commit(
    hub: FaultyHub, model: Published, cache_dir: Path
):
    assert not run_module(args_for(hub, cache_dir)).failed
    revision_2 = dict(model.files)
    revision_2["config.json"] = b'{"model_type": "glm4_moe", "revision": 2}'
    revision_2[SHARD_1] = make_model_files(2, [2_500_000])["model-00001-of-00001.safetensors"]
    commit_2 = hub.store.publish(REPO_ID, revision_2)
    hub.stats.reset()

    run = run_module(args_for(hub, cache_dir))

    assert not run.failed, run.output
    assert run.result["commit"] == commit_2 != model.commit
    assert sorted(run.result["fetched"]) == ["config.json", SHARD_1]
    assert hub.stats.file_bytes_sent == len(revision_2["config.json"]) + len(revision_2[SHARD_1])
    assert (repo_folder(cache_dir) / "refs" / "main").read_text() == commit_2
    assert snapshot_digests(cache_dir, REPO_ID, commit_2) == expected_digests(revision_2)
    # Rolling back to the first commit costs nothing: it is still complete in the cache.
    assert snapshot_digests(cache_dir, REPO_ID, model.commit) == expected_digests(model.files)
    pinned = run_module(args_for(hub, cache_dir, revision=model.commit))
    assert pinned.result["changed"] is False
    assert pinned.result["commit"] == model.commit


@pytest.mark.parametrize("hash_aside", ["never", "always"])
def test_a_partial_file_from_an_interrupted_run_is_resumed(
    hub: FaultyHub, model: Published, cache_dir: Path, hash_aside: str
):
    # A run that was killed leaves `<blob>.incomplete`; the next run must continue it, not start over. Its bytes
    # are hashed first: inline, or by the thread beside the transfer while the rest arrives.
    import hashlib

    shard = model.files[SHARD_1]
    blobs = repo_folder(cache_dir) / "blobs"
    blobs.mkdir(parents=True)
    kept = 2 * 1024 * 1024
    (blobs / f"{hashlib.sha256(shard).hexdigest()}.incomplete").write_bytes(shard[:kept])

    run = run_module(args_for(hub, cache_dir, hash_aside=hash_aside))

    assert not run.failed, run.output
    assert run.result["hash_aside"] is (hash_aside == "always")
    assert run.result["bytes_fetched"] == total_bytes(model) - kept
    assert [entry.range_header for entry in hub.gets(SHARD_1)] == [f"bytes={kept}-"]
    assert snapshot_digests(cache_dir, REPO_ID, model.commit) == expected_digests(model.files)


def test_bytes_changed_on_disk_are_found_and_replaced(hub: FaultyHub, model: Published, cache_dir: Path):
    assert not run_module(args_for(hub, cache_dir)).failed
    blob = (repo_folder(cache_dir) / "snapshots" / model.commit / SHARD_1).resolve()
    data = bytearray(blob.read_bytes())
    data[1000] ^= 0x55
    blob.write_bytes(bytes(data))  # same size, new mtime: the verification record no longer matches

    run = run_module(args_for(hub, cache_dir))

    assert not run.failed, run.output
    assert run.result["files_refetched_corrupt"] == [SHARD_1]
    assert run.result["fetched"] == [SHARD_1]
    assert snapshot_digests(cache_dir, REPO_ID, model.commit) == expected_digests(model.files)


def test_verify_rehashes_everything_and_catches_a_change_that_kept_size_and_mtime(
    hub: FaultyHub, model: Published, cache_dir: Path
):
    assert not run_module(args_for(hub, cache_dir)).failed
    blob = (repo_folder(cache_dir) / "snapshots" / model.commit / SHARD_1).resolve()
    stat = blob.stat()
    with blob.open("r+b") as handle:
        handle.seek(5)
        original = handle.read(1)
        handle.seek(5)
        handle.write(bytes([original[0] ^ 0xFF]))
    os.utime(blob, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    quick = run_module(args_for(hub, cache_dir))
    assert quick.result["files_verified"] == 0  # presence and size only: the change is invisible here

    full = run_module(args_for(hub, cache_dir, verify=True))

    assert not full.failed, full.output
    assert full.result["files_verified"] == 5
    assert full.result["files_refetched_corrupt"] == [SHARD_1]
    assert snapshot_digests(cache_dir, REPO_ID, model.commit) == expected_digests(model.files)


def test_a_dangling_snapshot_link_is_repaired(hub: FaultyHub, model: Published, cache_dir: Path):
    assert not run_module(args_for(hub, cache_dir)).failed
    link = repo_folder(cache_dir) / "snapshots" / model.commit / SHARD_1
    link.resolve().unlink()  # what a broken mount or a half-cleaned cache leaves: a link to nothing
    assert link.is_symlink() and not link.exists()

    run = run_module(args_for(hub, cache_dir))

    assert not run.failed, run.output
    assert run.result["fetched"] == [SHARD_1]
    assert snapshot_digests(cache_dir, REPO_ID, model.commit) == expected_digests(model.files)


def test_allow_and_ignore_patterns_select_the_files(hub: FaultyHub, model: Published, cache_dir: Path):
    run = run_module(
        args_for(hub, cache_dir, allow_patterns=["*.json", "*.safetensors"], ignore_patterns=["model-0000[23]*"])
    )

    assert not run.failed, run.output
    assert sorted(snapshot_digests(cache_dir, REPO_ID, model.commit)) == [
        "config.json",
        SHARD_1,
        "tokenizer.json",
    ]
    assert run.result["files_total"] == 3


def test_progress_file_ends_with_every_byte_counted(hub: FaultyHub, model: Published, cache_dir: Path, tmp_path: Path):
    progress_file = tmp_path / "state" / "progress.json"

    run = run_module(args_for(hub, cache_dir, progress_file=str(progress_file)))

    assert not run.failed, run.output
    progress = json.loads(progress_file.read_text())
    assert progress["phase"] == "done"
    assert progress["commit"] == model.commit
    assert progress["bytes_done"] == progress["bytes_total"] == total_bytes(model)
    assert progress["files_done"] == progress["files_total"] == 5


def test_xet_mode_falls_back_to_plain_http_where_the_hub_offers_no_xet(
    hub: FaultyHub, model: Published, cache_dir: Path
):
    run = run_module(args_for(hub, cache_dir, xet=True, hash_aside="always"))

    assert not run.failed, run.output
    assert run.result["files_fetched"] == 5
    assert run.result["download_workers"] == "threads 5"  # huggingface_hub's Xet client runs its own threads
    assert run.result["hash_aside"] is False  # its downloads are hashed after they end, whatever was asked
    assert snapshot_digests(cache_dir, REPO_ID, model.commit) == expected_digests(model.files)
    again = run_module(args_for(hub, cache_dir, xet=True))
    assert again.result["changed"] is False


def test_one_worker_downloads_in_this_process(hub: FaultyHub, model: Published, cache_dir: Path):
    run = run_module(args_for(hub, cache_dir, max_workers=1))

    assert not run.failed, run.output
    assert run.result["download_workers"] == "threads 1"
    assert run.result["files_fetched"] == 5
    assert snapshot_digests(cache_dir, REPO_ID, model.commit) == expected_digests(model.files)
    assert run_module(args_for(hub, cache_dir)).result["files_verified"] == 0
