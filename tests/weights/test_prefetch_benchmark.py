"""Benchmarks (select with `pytest -m benchmark`): prefetch throughput against parallel curl, and re-run cost.

1. A few GB in several shards served by the sandbox Hub server on loopback: hf_prefetch (8 workers,
   hashing every byte as it arrives) against 8 parallel `curl` processes fetching the same files from the
   same server. Each side runs twice, alternating, and the better run of each counts. Printed: both
   throughputs, the ratio, and each side's client CPU time (on a shared machine the steadier figure).
2. The cost of a re-run over a cache holding hundreds of files, once with tiny files and once with ~1 GB,
   to show it depends on the file count, not on the bytes held.

Sizes scale down to the free space of the temporary directory (GLM_BENCH_TOTAL_BYTES overrides the total).
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from tests.equipment.hub_faults import FaultyHub
from tests.weights.helpers import run_module

pytestmark = pytest.mark.benchmark

SHARDS = 8
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


def test_prefetch_throughput_against_parallel_curl(tmp_path: Path):
    free = shutil.disk_usage(tmp_path).free
    # Store + prefetch cache + curl copies: three copies of the data, and keep a quarter of the disk free.
    total = int(os.environ.get("GLM_BENCH_TOTAL_BYTES", min(2 * 1024 * MIB, (free * 3 // 4) // 3)))
    shard_size = total // SHARDS
    assert shard_size >= 16 * MIB, f"only {free} bytes free in {tmp_path}: too little for a meaningful benchmark"
    source = tmp_path / "source"
    source.mkdir()
    for index in range(1, SHARDS + 1):
        write_random(source / f"model-{index:05d}-of-{SHARDS:05d}.safetensors", shard_size)
    with FaultyHub(tmp_path / "store") as hub:
        commit = hub.store.publish_directory("zai-org/GLM-bench", source)
        shutil.rmtree(source)
        names = sorted(hub.store.resolve("zai-org/GLM-bench", commit).files)
        urls = [f"{hub.url}/zai-org/GLM-bench/resolve/{commit}/{name}" for name in names]
        curl_times, verified_times, prefetch_times, module_times = [], [], [], []
        curl_cpu, verified_cpu, prefetch_cpu = [], [], []
        for round_index in range(2):
            curl_dir = tmp_path / f"curl-{round_index}"
            cpu = child_cpu_seconds()
            curl_times.append(curl_all(urls, curl_dir))
            curl_cpu.append(child_cpu_seconds() - cpu)
            shutil.rmtree(curl_dir)
            cpu = child_cpu_seconds()
            verified_times.append(curl_all(urls, curl_dir, verify=True))
            verified_cpu.append(child_cpu_seconds() - cpu)
            shutil.rmtree(curl_dir)
            cache_dir = tmp_path / f"cache-{round_index}"
            cpu = child_cpu_seconds()
            started = time.perf_counter()
            run = run_module(
                {
                    "repo": "zai-org/GLM-bench",
                    "revision": commit,
                    "cache_dir": str(cache_dir),
                    "endpoint": hub.url,
                    "max_workers": SHARDS,
                }
            )
            prefetch_times.append(time.perf_counter() - started)
            prefetch_cpu.append(child_cpu_seconds() - cpu)
            assert not run.failed, run.output
            assert run.result["bytes_fetched"] == SHARDS * shard_size
            module_times.append(run.result["elapsed_s"])
            shutil.rmtree(cache_dir)

    total_bytes = SHARDS * shard_size
    curl_rate = total_bytes / min(curl_times)
    verified_rate = total_bytes / min(verified_times)
    prefetch_rate = total_bytes / min(prefetch_times)

    def runs(times: list[float]) -> str:
        return ", ".join(f"{value:.2f}s" for value in times)

    print(
        f"\nprefetch vs curl, {SHARDS} shards x {shard_size / MIB:.0f} MiB = {total_bytes / MIB:.0f} MiB, "
        "loopback"
        f"\n  curl x{SHARDS} parallel : {curl_rate / MIB:8.1f} MiB/s  (runs: {runs(curl_times)})"
        f"\n  curl + sha256sum     : {verified_rate / MIB:8.1f} MiB/s  (runs: {runs(verified_times)})"
        f"\n  hf_prefetch (process): {prefetch_rate / MIB:8.1f} MiB/s  (runs: {runs(prefetch_times)}; "
        f"module's own elapsed {runs(module_times)})"
        f"\n  ratio prefetch/curl  : {prefetch_rate / curl_rate:8.2f}"
        f"\n  ratio prefetch/(curl + sha256sum): {prefetch_rate / verified_rate:.2f}"
        f"\n  client CPU seconds   : curl {runs(curl_cpu)}; curl + sha256sum {runs(verified_cpu)}; "
        f"hf_prefetch {runs(prefetch_cpu)} "
        f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
    )


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
