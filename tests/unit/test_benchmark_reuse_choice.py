"""Which stored benchmark `glm-deploy benchmark --if-new` reuses (glm_deploy.benchmark_reuse): only a successful
benchmark of the release the hosts serve whose profile result is on the controller for every host it measured."""

from __future__ import annotations

import json
from pathlib import Path

from glm_deploy.benchmark_reuse import reusable_benchmark
from glm_deploy.catalog import load_catalog
from glm_deploy.history import HistoryEntry
from glm_deploy.release import Release
from glm_deploy.render import PlanOptions, render_plan


def release(commit: str) -> Release:
    plan = render_plan(
        load_catalog(), model="glm-tiny", engine="vllm-cpu", hardware="cpu", options=PlanOptions(revision=commit)
    )
    return Release.from_plan(plan)


SERVED, OTHER = release("a" * 40), release("b" * 40)


def benchmark_entry(run_id: str, served: Release, *, status: str = "successful", minute: int = 0) -> HistoryEntry:
    return HistoryEntry(
        run_id=run_id,
        command="benchmark",
        inventory="inventories/sandbox",
        status=status,
        started_at=f"2026-12-03T14:{minute:02d}:00+00:00",
        finished_at=f"2026-12-03T14:{minute + 1:02d}:30+00:00",
        duration_s=90.0,
        hosts={"h1": {"ok": 3}},
        release=served,
    )


def store(results: Path, name: str) -> Path:
    path = results / "h1" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"output_throughput": 10.0}))
    return path


def test_the_newest_benchmark_of_the_served_release_is_reused(tmp_path: Path) -> None:
    older = store(tmp_path, "20261203T140010Z.json")
    newer = store(tmp_path, "20261203T141010Z.json")
    entries = [benchmark_entry("r1", SERVED), benchmark_entry("r2", SERVED, minute=10)]

    reused = reusable_benchmark(entries, SERVED, tmp_path)

    assert reused is not None and reused.entry.run_id == "r2" and reused.results == {"h1": newer}
    assert older.exists()


def test_another_release_a_failed_run_or_no_release_is_measured_again(tmp_path: Path) -> None:
    store(tmp_path, "20261203T140010Z.json")

    assert reusable_benchmark([benchmark_entry("r1", OTHER)], SERVED, tmp_path) is None
    assert reusable_benchmark([benchmark_entry("r1", SERVED, status="failed")], SERVED, tmp_path) is None
    assert reusable_benchmark([benchmark_entry("r1", SERVED)], None, tmp_path) is None


def test_a_sweep_or_a_missing_result_is_not_reused(tmp_path: Path) -> None:
    store(tmp_path, "20261203T140010Z-c1.json")
    entries = [benchmark_entry("sweep", SERVED)]

    assert reusable_benchmark(entries, SERVED, tmp_path) is None, "a sweep point is not the profile's result"
    assert reusable_benchmark(entries, SERVED, tmp_path / "elsewhere") is None, "results deleted"


def test_an_older_run_with_its_result_is_reused_when_the_newest_has_none(tmp_path: Path) -> None:
    kept = store(tmp_path, "20261203T140010Z.json")
    store(tmp_path, "20261203T141010Z-c2.json")
    entries = [benchmark_entry("profile", SERVED), benchmark_entry("sweep", SERVED, minute=10)]

    reused = reusable_benchmark(entries, SERVED, tmp_path)

    assert reused is not None and reused.entry.run_id == "profile" and reused.results == {"h1": kept}
