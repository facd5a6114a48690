"""The benchmark playbook against the deployed sandbox endpoint: vLLM's own `vllm bench serve` with the catalog's
cpu profile, its result brought back to the controller, and the summary printed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.equipment.fleet import Deployment

from glm_deploy.catalog import load_catalog
from glm_deploy.runner import PlaybookRunner

pytestmark = pytest.mark.sandbox


def test_benchmark_runs_and_brings_its_result_home(deployment: Deployment, tmp_path: Path) -> None:
    profile = load_catalog().hardware["cpu"].benchmark
    results_dir = tmp_path / "results"
    events: list[dict[str, object]] = []
    result = PlaybookRunner(state_dir=tmp_path / "runner").run(
        "benchmark.yml",
        inventory=deployment.inventory,
        extravars={"glm_results_dir": str(results_dir)},
        secrets={"glm_api_key": deployment.api_key},
        event_handler=events.append,
    )
    assert result.ok

    saved = sorted(results_dir.glob(f"{deployment.container}/*.json"))
    assert len(saved) == 1, f"expected one result under {results_dir}, found {saved}"
    figures = json.loads(saved[0].read_text())
    assert figures["completed"] == profile.num_prompts
    assert figures["failed"] == 0
    assert figures["output_throughput"] > 0
    assert figures["mean_ttft_ms"] > 0
    assert figures["p99_itl_ms"] >= figures["mean_itl_ms"] > 0

    printed = "\n".join(str(event.get("stdout", "")) for event in events)
    for label in ("output tok/s", "total tok/s", "TTFT mean", "TPOT mean", "ITL mean", "ITL p99"):
        assert label in printed, f"summary row {label!r} missing from the playbook output"
    assert f"completed {profile.num_prompts}/{profile.num_prompts}" in printed
    assert deployment.api_key not in printed
