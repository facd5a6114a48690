"""Benchmarks (select with `pytest -m benchmark`): prefetch throughput against parallel curl, and re-run cost.

1. A few GB (4 GiB) in several shards served by the sandbox Hub server on loopback: hf_prefetch (8 workers,
   sha256-verifying every byte before linking it) against 8 parallel `curl` processes fetching the same
   files from the same server, and against curl followed by sha256sum (the same guarantee). The three run
   ROUNDS times, alternating (and in a rotated order each round, so a load spike does not always hit the
   same side); the medians count. Printed: each side's median throughput and runs, the ratio of the
   medians, the median of the per-round ratios, client CPU seconds, and the load average before and after.
   The ratio is printed, not asserted: on a shared machine it measures the neighbours too.
2. The cost of a re-run over a cache holding hundreds of files, once with tiny files and once with ~1 GB,
   to show it depends on the file count, not on the bytes held.

Sizes scale down to the free space of the temporary directory (GLM_BENCH_TOTAL_BYTES overrides the total,
GLM_BENCH_ROUNDS the number of rounds). GLM_BENCH_COLLECTIONS=DIR runs the module from another collections
tree (DIR/ansible_collections/glm/deploy), e.g. an older checkout, to compare engines on the same machine.
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import pytest
from tests.equipment.hub_faults import FaultyHub
from tests.weights.helpers import run_module

pytestmark = pytest.mark.benchmark

SHARDS = 8
ROUNDS = int(os.environ.get("GLM_BENCH_ROUNDS", "3"))
MIB = 1024 * 1024


def write_random(path: Path, size: int) -> None:
    with path.open("wb") as handle:
        remaining = size
        while remaining > 0:
            chunk = os.urandom(min(remaining, 16 * MIB))
            handle.write(chunk)
            remaining -= len(chunk)


def child_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def own_cpu_seconds() -> float:
    """CPU time of this process, which during a transfer is the Hub server's (it serves from a thread here)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def curl_all(urls: list[str], target: Path, *, verify: bool = False) -> float:
    """Fetch every URL with its own curl process, all at once; with `verify`, each then runs sha256sum
    on its file (what a user of curl must add to get the guarantee hf_prefetch gives)."""
    target.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    processes = []
    for index, url in enumerate(urls):
        output = str(target / f"{index}.bin")
        argv = ["curl", "--silent", "--fail", "--output", output, url]
        if verify:
            argv = [
                "sh",
                "-c",
                'curl --silent --fail --output "$1" "$2" && sha256sum "$1" >/dev/null',
                "sh",
                output,
                url,
            ]
        processes.append(subprocess.Popen(argv))
    codes = [process.wait() for process in processes]
    elapsed = time.perf_counter() - started
    assert codes == [0] * len(urls)
    return elapsed


def load_average() -> str:
    return "/".join(f"{value:.1f}" for value in os.getloadavg())


def test_prefetch_throughput_against_parallel_curl(tmp_path: Path):
    free = shutil.disk_usage(tmp_path).free
    # Store + prefetch cache + curl copies: three copies of the data, and keep a quarter of the disk free.
    # 4 GiB by default: the module's fixed cost (interpreter, Ansible and huggingface_hub imports, metadata,
    # about 0.5 s of CPU) is then a small part of the figure, as it is of any real download.
    total = int(os.environ.get("GLM_BENCH_TOTAL_BYTES", min(4 * 1024 * MIB, (free * 3 // 4) // 3)))
    shard_size = total // SHARDS
    assert shard_size >= 16 * MIB, f"only {free} bytes free in {tmp_path}: too little for a meaningful benchmark"
    assert ROUNDS >= 1, f"GLM_BENCH_ROUNDS={ROUNDS}: give at least 1"
    total_bytes = SHARDS * shard_size
    source = tmp_path / "source"
    source.mkdir()
    for index in range(1, SHARDS + 1):
        write_random(source / f"model-{index:05d}-of-{SHARDS:05d}.safetensors", shard_size)
    load_before = load_average()
    times: dict[str, list[float]] = {"curl": [], "curl+sha256sum": [], "hf_prefetch": []}
    cpu: dict[str, list[float]] = {side: [] for side in times}
    server_cpu: dict[str, list[float]] = {side: [] for side in times}
    module_times: list[float] = []
    with FaultyHub(tmp_path / "store") as hub:
        commit = hub.store.publish_directory("zai-org/GLM-bench", source)
        shutil.rmtree(source)
        names = sorted(hub.store.resolve("zai-org/GLM-bench", commit).files)
        urls = [f"{hub.url}/zai-org/GLM-bench/resolve/{commit}/{name}" for name in names]

        def curl(round_index: int) -> None:
            target = tmp_path / f"curl-{round_index}"
            times["curl"].append(curl_all(urls, target))
            shutil.rmtree(target)

        def curl_verified(round_index: int) -> None:
            target = tmp_path / f"curl-sha-{round_index}"
            times["curl+sha256sum"].append(curl_all(urls, target, verify=True))
            shutil.rmtree(target)

        def prefetch(round_index: int) -> None:
            cache_dir = tmp_path / f"cache-{round_index}"
            started = time.perf_counter()
            run = run_module(
                {
                    "repo": "zai-org/GLM-bench",
                    "revision": commit,
                    "cache_dir": str(cache_dir),
                    "endpoint": hub.url,
                    "max_workers": SHARDS,
                },
                env={"PYTHONPATH": os.environ["GLM_BENCH_COLLECTIONS"]}
                if "GLM_BENCH_COLLECTIONS" in os.environ
                else None,
            )
            times["hf_prefetch"].append(time.perf_counter() - started)
            assert not run.failed, run.output
            assert run.result["bytes_fetched"] == total_bytes
            assert run.result["files_verified"] == SHARDS
            module_times.append(run.result["elapsed_s"])
            shutil.rmtree(cache_dir)

        sides = [("curl", curl), ("hf_prefetch", prefetch), ("curl+sha256sum", curl_verified)]
        for round_index in range(ROUNDS):
            for offset in range(len(sides)):
                side, work = sides[(round_index + offset) % len(sides)]
                before, server_before = child_cpu_seconds(), own_cpu_seconds()
                work(round_index)
                cpu[side].append(child_cpu_seconds() - before)
                server_cpu[side].append(own_cpu_seconds() - server_before)
    load_after = load_average()

    rate = {side: total_bytes / statistics.median(values) for side, values in times.items()}
    round_ratios = [curl_time / mine for curl_time, mine in zip(times["curl"], times["hf_prefetch"], strict=True)]

    def runs(values: list[float]) -> str:
        return ", ".join(f"{value:.2f}s" for value in values)

    lines = [
        f"prefetch vs curl, {SHARDS} shards x {shard_size / MIB:.0f} MiB = {total_bytes / MIB:.0f} MiB, "
        f"loopback, {ROUNDS} alternating rounds, medians",
        f"  load average (1/5/15 min) before {load_before}, after {load_after}, on {os.cpu_count()} CPUs",
    ]
    for side in ("curl", "curl+sha256sum", "hf_prefetch"):
        lines.append(
            f"  {side + ' x' + str(SHARDS):<18}: {rate[side] / MIB:8.1f} MiB/s  (runs: {runs(times[side])}; "
            f"client CPU {runs(cpu[side])}; server CPU {runs(server_cpu[side])})"
        )
    lines += [
        f"  hf_prefetch module's own elapsed (after interpreter start and imports): {runs(module_times)}",
        f"  ratio hf_prefetch/curl (medians)          : {rate['hf_prefetch'] / rate['curl']:.2f}"
        f"  (per round: {', '.join(f'{value:.2f}' for value in round_ratios)}, "
        f"median {statistics.median(round_ratios):.2f})",
        f"  ratio hf_prefetch/(curl + sha256sum)      : {rate['hf_prefetch'] / rate['curl+sha256sum']:.2f}",
    ]
    print("\n" + "\n".join(lines))


@pytest.mark.parametrize("file_size", [1024, 2_600_000], ids=["400-tiny-files", "400-files-1GB"])
def test_rerun_cost_over_hundreds_of_files(tmp_path: Path, file_size: int):
    count = 400
    source = tmp_path / "source"
    (source / "shards").mkdir(parents=True)
    for index in range(count):
        write_random(source / "shards" / f"part-{index:04d}.safetensors", file_size)
    cache_dir = tmp_path / "cache"
    with FaultyHub(tmp_path / "store") as hub:
        hub.store.publish_directory("zai-org/GLM-many", source)
        shutil.rmtree(source)
        args = {"repo": "zai-org/GLM-many", "cache_dir": str(cache_dir), "endpoint": hub.url}
        first = run_module(args)
        assert not first.failed, first.output
        hub.stats.reset()
        times = []
        for _ in range(3):
            started = time.perf_counter()
            again = run_module(args)
            times.append(time.perf_counter() - started)
            assert again.result["changed"] is False
            assert again.result["files_verified"] == 0
        assert hub.stats.file_bytes_sent == 0
    print(
        f"\nre-run over {count} files ({count * file_size / MIB:.0f} MiB held): "
        f"best {min(times):.2f}s, runs {', '.join(f'{t:.2f}s' for t in times)} "
        f"(module's own elapsed {again.result['elapsed_s']:.2f}s; "
        f"first download {first.result['elapsed_s']:.2f}s)"
    )
