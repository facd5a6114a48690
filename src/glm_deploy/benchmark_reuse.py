"""`glm-deploy benchmark --if-new`: a release that was already measured is not measured again.

A benchmark measures a release; the history records which one (the release each host reports from its own record,
playbooks/tasks/report_release.yml). When the release the hosts serve now has a successful benchmark in the
history, `--if-new` reuses it: it names that run and prints the figures stored for it under results/ instead of
loading the endpoint for minutes (scripts/sandbox.sh's second run). Without the flag the benchmark always runs.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glm_deploy.history import HistoryEntry
from glm_deploy.release import Release

# The figures a person reads first, as vLLM's bench serve names them.
FIGURES = (
    ("output tok/s", "output_throughput"),
    ("TTFT mean ms", "mean_ttft_ms"),
    ("TPOT mean ms", "mean_tpot_ms"),
)
# The benchmark role names each result after its run's stamp (benchmark_result_stamp).
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
RESULT_NAME = re.compile(r"[0-9]{8}T[0-9]{6}Z")


@dataclass(frozen=True)
class ReusedBenchmark:
    """The benchmark run that measured the serving release, and its result files on the controller by host."""

    release: Release
    entry: HistoryEntry
    results: dict[str, Path]

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": "benchmark",
            "ok": True,
            "status": "reused",
            "release": self.release.to_dict(),
            "measured_by": self.entry.run_id,
            "measured_at": self.entry.finished_at,
            "results": {host: str(path) for host, path in self.results.items()},
        }

    def text(self) -> str:
        lines = [
            f"benchmark reused: release {self.release.release_id} was measured by run {self.entry.run_id} "
            f"(finished {self.entry.finished_at}); `glm-deploy benchmark` without --if-new measures again",
        ]
        for host, path in self.results.items():
            figures = json.loads(path.read_text(encoding="utf-8"))
            shown = ", ".join(
                f"{label} {figures[key]:.1f}" for label, key in FIGURES if isinstance(figures.get(key), int | float)
            )
            lines.append(f"  {host}: {shown or 'no figures'} ({path})")
        return "\n".join(lines)


def benchmarks_of(entries: Sequence[HistoryEntry], release: Release | None) -> list[HistoryEntry]:
    """The successful benchmarks that measured `release`, newest first."""
    if release is None:
        return []
    return [
        entry
        for entry in reversed(entries)
        if entry.command == "benchmark"
        and entry.ok
        and entry.release is not None
        and entry.release.release_id == release.release_id
    ]


def _stamp(moment: str) -> str:
    return datetime.datetime.fromisoformat(moment).astimezone(datetime.UTC).strftime(STAMP_FORMAT)


def stored_results(results_dir: Path, entry: HistoryEntry) -> dict[str, Path]:
    """Each host's result of the benchmark run `entry` under `results_dir`: `<host>/<stamp>.json` with a stamp inside
    the run (a sweep's points carry a `-c<N>` suffix and are not the profile's figures)."""
    earliest, latest = _stamp(entry.started_at), _stamp(entry.finished_at)
    found: dict[str, Path] = {}
    for host in entry.hosts:
        candidates = sorted(
            path
            for path in (results_dir / host).glob("*.json")
            if RESULT_NAME.fullmatch(path.stem) and earliest <= path.stem <= latest
        )
        if candidates:
            found[host] = candidates[-1]
    return found


def reusable_benchmark(
    entries: Sequence[HistoryEntry], current: Release | None, results_dir: Path
) -> ReusedBenchmark | None:
    """The newest benchmark of `current` (the release the hosts serve) whose result for every host it measured is
    still on the controller; None when there is none."""
    for entry in benchmarks_of(entries, current):
        results = stored_results(results_dir, entry)
        if current is not None and entry.hosts and set(results) == set(entry.hosts):
            return ReusedBenchmark(release=current, entry=entry, results=results)
    return None
