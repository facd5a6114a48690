"""Benchmarks (select with `pytest -m benchmark`): prefetch throughput against parallel curl, and re-run cost.

1. A few GB (4 GiB) in several shards served on loopback by the sandbox Hub server, running in a process of
   its own (as a real Hub shares no interpreter with its clients), once over HTTP and once over HTTPS (a
   certificate made for the run; clients trust its CA through SSL_CERT_FILE and `curl --cacert`):
   hf_prefetch (8 workers, sha256-verifying every byte before linking it) against 8 parallel `curl`
   processes fetching the same files from the same server, and, over HTTP, against curl followed by
   sha256sum (the same guarantee). The sides run ROUNDS times, alternating (in a rotated order each round, so
   a load spike does not always hit the same side); the medians count. Printed: each side's median throughput
   and runs, client and server CPU seconds, the ratio of the medians, the median of the per-round ratios,
   and the load average before and after; then one core's sha256 rate and what it allows against curl's rate
   per connection (no file is verified sooner than one core hashes it). The ratio is printed, not asserted: on a
   shared machine it measures the neighbours too.
2. The cost of a re-run over a cache holding hundreds of files, once with tiny files and once with ~1 GB,
   to show it depends on the file count, not on the bytes held.

Sizes scale down to the free space of the temporary directory (GLM_BENCH_TOTAL_BYTES overrides the total,
GLM_BENCH_ROUNDS the number of rounds, GLM_BENCH_SIDES a comma-separated subset of the sides).
GLM_BENCH_COLLECTIONS=DIR runs the module from another collections tree (DIR/ansible_collections/glm/deploy),
e.g. an older checkout, to compare engines on the same machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.equipment.hub_faults import FaultyHub, make_test_pki
from tests.weights.helpers import REPO_ROOT, run_module

from glm_deploy.sandbox.hub import HubStore

pytestmark = [pytest.mark.benchmark, pytest.mark.playbook]

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


class HubProcess:
    """`python -m glm_deploy.sandbox.hub` serving `root`, in its own process; HTTPS when given a certificate."""

    def __init__(self, root: Path, work: Path, tls: tuple[Path, Path] | None = None) -> None:
        port_file = work / f"port-{'https' if tls else 'http'}"
        argv = [sys.executable, "-m", "glm_deploy.sandbox.hub", "--root", str(root), "--port", "0"]
        argv += ["--port-file", str(port_file)]
        if tls is not None:
            argv += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "src"))
        self.process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            assert self.process.poll() is None, f"the Hub server exited with {self.process.returncode}"
            assert time.monotonic() < deadline, "the Hub server did not start listening in 30 s"
            time.sleep(0.05)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{int(port_file.read_text())}"

    def cpu_seconds(self) -> float:
        """CPU time the server process has used (user + system)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@contextlib.contextmanager
def hub_process(root: Path, work: Path, tls: tuple[Path, Path] | None = None) -> Iterator[HubProcess]:
    server = HubProcess(root, work, tls)
    try:
        yield server
    finally:
        server.close()


def curl_all(urls: list[str], target: Path, *, verify: bool = False, cacert: Path | None = None) -> float:
    """Fetch every URL with its own curl process, all at once; with `verify`, each then runs sha256sum
    on its file (what a user of curl must add to get the guarantee hf_prefetch gives)."""
    target.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    processes = []
    tls = ["--cacert", str(cacert)] if cacert is not None else []
    for index, url in enumerate(urls):
        output = str(target / f"{index}.bin")
        argv = ["curl", "--silent", "--fail", *tls, "--output", output, url]
        if verify:
            argv = [
                "sh",
                "-c",
                'out="$1"; shift; "$@" && sha256sum "$out" >/dev/null',
                "sh",
                output,
                *["curl", "--silent", "--fail", *tls, "--output", output, url],
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
    store = HubStore(tmp_path / "store")
    commit = store.publish_directory("zai-org/GLM-bench", source)
    shutil.rmtree(source)
    names = sorted(store.resolve("zai-org/GLM-bench", commit).files)
    pki = make_test_pki(tmp_path / "pki")
    collections = {"PYTHONPATH": os.environ["GLM_BENCH_COLLECTIONS"]} if "GLM_BENCH_COLLECTIONS" in os.environ else {}

    load_before = load_average()
    sides = ["curl", "curl+sha256sum", "hf_prefetch", "curl https", "hf_prefetch https"]
    if "GLM_BENCH_SIDES" in os.environ:
        chosen = [side.strip() for side in os.environ["GLM_BENCH_SIDES"].split(",")]
        unknown = sorted(set(chosen) - set(sides))
        assert not unknown, f"GLM_BENCH_SIDES names unknown sides {unknown}; the sides are {sides}"
        sides = [side for side in sides if side in chosen]
    times: dict[str, list[float]] = {side: [] for side in sides}
    cpu: dict[str, list[float]] = {side: [] for side in sides}
    server_cpu: dict[str, list[float]] = {side: [] for side in sides}
    module_times: dict[str, list[float]] = {side: [] for side in sides if side.startswith("hf_prefetch")}
    with (
        hub_process(store.root, tmp_path) as http,
        hub_process(store.root, tmp_path, (pki.cert_file, pki.key_file)) as https,
    ):

        def urls(server: HubProcess) -> list[str]:
            return [f"{server.url}/zai-org/GLM-bench/resolve/{commit}/{name}" for name in names]

        def curl(side: str, round_index: int) -> None:
            target = tmp_path / f"curl-{round_index}"
            secure = side.endswith("https")
            times[side].append(
                curl_all(
                    urls(https if secure else http),
                    target,
                    verify="sha256sum" in side,
                    cacert=pki.ca_file if secure else None,
                )
            )
            shutil.rmtree(target)

        def prefetch(side: str, round_index: int) -> None:
            cache_dir = tmp_path / f"cache-{round_index}"
            secure = side.endswith("https")
            started = time.perf_counter()
            run = run_module(
                {
                    "repo": "zai-org/GLM-bench",
                    "revision": commit,
                    "cache_dir": str(cache_dir),
                    "endpoint": (https if secure else http).url,
                    "max_workers": SHARDS,
                },
                # The standard way to trust a CA, honoured by huggingface_hub's client and the module alike.
                env={**collections, **({"SSL_CERT_FILE": str(pki.ca_file)} if secure else {})},
            )
            times[side].append(time.perf_counter() - started)
            assert not run.failed, run.output
            assert run.result["bytes_fetched"] == total_bytes
            assert run.result["files_verified"] == SHARDS
            module_times[side].append(run.result["elapsed_s"])
            shutil.rmtree(cache_dir)

        work: dict[str, Callable[[str, int], None]] = {
            side: prefetch if side.startswith("hf_prefetch") else curl for side in sides
        }
        for round_index in range(ROUNDS):
            for offset in range(len(sides)):
                side = sides[(round_index + offset) % len(sides)]
                server = https if side.endswith("https") else http
                before, server_before = child_cpu_seconds(), server.cpu_seconds()
                work[side](side, round_index)
                cpu[side].append(child_cpu_seconds() - before)
                server_cpu[side].append(server.cpu_seconds() - server_before)
    load_after = load_average()

    rate = {side: total_bytes / statistics.median(values) for side, values in times.items()}

    def runs(values: list[float]) -> str:
        return ", ".join(f"{value:.2f}s" for value in values)

    def ratio(mine: str, theirs: str) -> str:
        per_round = [other / own for other, own in zip(times[theirs], times[mine], strict=True)]
        return (
            f"{rate[mine] / rate[theirs]:.2f}  (per round: {', '.join(f'{value:.2f}' for value in per_round)}, "
            f"median {statistics.median(per_round):.2f})"
        )

    lines = [
        f"prefetch vs curl, {SHARDS} shards x {shard_size / MIB:.0f} MiB = {total_bytes / MIB:.0f} MiB, "
        f"loopback, Hub server in its own process, {ROUNDS} alternating rounds, medians",
        f"  load average (1/5/15 min) before {load_before}, after {load_after}, on {os.cpu_count()} CPUs",
    ]
    for side in sides:
        lines.append(
            f"  {side + ' x' + str(SHARDS):<21}: {rate[side] / MIB:8.1f} MiB/s  (runs: {runs(times[side])}; "
            f"client CPU {runs(cpu[side])}; server CPU {runs(server_cpu[side])})"
        )
    for side, values in module_times.items():
        lines.append(f"  {side} module's own elapsed (after interpreter start and imports): {runs(values)}")
    comparisons = [
        ("hf_prefetch", "curl", "hf_prefetch/curl, http (medians)"),
        ("hf_prefetch", "curl+sha256sum", "hf_prefetch/(curl + sha256sum), http"),
        ("hf_prefetch https", "curl https", "hf_prefetch/curl, https (medians)"),
    ]
    lines += [
        f"  ratio {label:<42}: {ratio(mine, theirs)}"
        for mine, theirs, label in comparisons
        if mine in sides and theirs in sides
    ]
    # What bounds a verified download: sha256 is one sequential chain per file, so no file is verified sooner
    # than one core hashes it, while curl's copy is done when its bytes land.
    hash_rate = sha256_rate()
    lines.append(f"  sha256 on one core (hashlib, 256 MiB buffer, median of 3): {hash_rate / MIB:8.1f} MiB/s")
    for side in ("curl", "curl https"):
        if side in sides:
            per_connection = shard_size / statistics.median(times[side])
            lines.append(
                f"  {side}: {per_connection / MIB:.1f} MiB/s per connection; a verified download of one shard can "
                f"reach at most {min(1.0, hash_rate / per_connection):.2f} of it"
            )
    print("\n" + "\n".join(lines))


def sha256_rate() -> float:
    data = os.urandom(256 * MIB)
    runs = []
    for _ in range(3):
        started = time.perf_counter()
        hashlib.sha256(data).digest()
        runs.append(time.perf_counter() - started)
    return len(data) / statistics.median(runs)


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
