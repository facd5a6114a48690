"""Every hardware profile names the benchmark workload its plan carries, and bad profiles are refused at load."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from glm_deploy.catalog import BENCHMARK_METRICS, Catalog, load_catalog
from glm_deploy.errors import CatalogError

GPU_HARDWARE = ("b200", "h200", "h100", "mi300x", "mi325x", "mi355x")


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture
def catalog_copy(tmp_path: Path) -> Path:
    target = tmp_path / "catalog"
    shutil.copytree(Path(str(resources.files("glm_deploy").joinpath("catalog"))), target)
    return target


def _edit_hardware(directory: Path, change: Any) -> None:
    path = directory / "hardware.yml"
    data = yaml.safe_load(path.read_text())
    change(data["hardware"])
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_every_hardware_has_a_benchmark_profile_with_a_source(catalog: Catalog) -> None:
    for name, spec in catalog.hardware.items():
        profile = spec.benchmark
        assert profile.source, name
        assert 0 < profile.max_concurrency <= profile.num_prompts, name


@pytest.mark.parametrize("hardware", GPU_HARDWARE)
def test_gpu_profiles_keep_the_seeds_shape(catalog: Catalog, hardware: str) -> None:
    profile = catalog.hardware[hardware].benchmark
    assert (profile.input_len, profile.output_len) == (8192, 2048)
    assert profile.input_len == 4 * profile.output_len


def test_b200_runs_the_seeds_workload_exactly(catalog: Catalog) -> None:
    profile = catalog.hardware["b200"].benchmark
    assert (profile.input_len, profile.output_len, profile.num_prompts, profile.max_concurrency) == (
        8192,
        2048,
        512,
        32,
    )


def test_cpu_profile_is_tiny_and_keeps_the_ratio(catalog: Catalog) -> None:
    profile = catalog.hardware["cpu"].benchmark
    assert (profile.input_len, profile.output_len, profile.num_prompts, profile.max_concurrency) == (64, 16, 20, 4)
    assert profile.input_len == 4 * profile.output_len
    assert profile.references == ()


def test_references_name_known_entries_metrics_and_sources(catalog: Catalog) -> None:
    count = 0
    for spec in catalog.hardware.values():
        for reference in spec.benchmark.references:
            count += 1
            assert reference.model in catalog.models
            assert reference.engine in catalog.engines
            assert reference.source
            assert reference.metrics
            assert set(reference.metrics) <= set(BENCHMARK_METRICS)
    assert count == 4


def test_b200_glm51_sglang_reference_matches_the_facts(catalog: Catalog) -> None:
    reference = catalog.hardware["b200"].benchmark.reference_for("glm-5.1-fp8", "sglang", speculative=True)
    assert reference is not None
    assert reference.metrics == {"output_throughput": 1345, "mean_ttft_ms": 1073, "mean_tpot_ms": 22.8}
    assert "§ Benchmark" in reference.source
    assert "UNVERIFIED" not in reference.source


def test_glm52_engine_attribution_is_marked_unverified(catalog: Catalog) -> None:
    # The facts file gives GLM-5.2's two B200 points without naming their engines.
    for engine, throughput in (("sglang", 1454), ("vllm", 1264)):
        reference = catalog.hardware["b200"].benchmark.reference_for("glm-5.2-fp8", engine, speculative=True)
        assert reference is not None
        assert reference.metrics["output_throughput"] == throughput
        assert "UNVERIFIED" in reference.source


def test_missing_profile_is_refused(catalog_copy: Path) -> None:
    _edit_hardware(catalog_copy, lambda hardware: hardware["h100"].pop("benchmark"))
    with pytest.raises(CatalogError, match=r"hardware\.h100 lacks the key 'benchmark'"):
        load_catalog(catalog_copy)


def test_zero_prompts_is_refused(catalog_copy: Path) -> None:
    _edit_hardware(catalog_copy, lambda hardware: hardware["cpu"]["benchmark"].update(num_prompts=0))
    with pytest.raises(CatalogError, match=r"hardware\.cpu\.benchmark\.num_prompts must be a positive integer"):
        load_catalog(catalog_copy)


def test_reference_with_unknown_metric_is_refused(catalog_copy: Path) -> None:
    def change(hardware: dict[str, Any]) -> None:
        hardware["b200"]["benchmark"]["references"][0]["tokens_per_second"] = 1345

    _edit_hardware(catalog_copy, change)
    with pytest.raises(CatalogError, match=r"'tokens_per_second', which is not a key of vLLM's benchmark result"):
        load_catalog(catalog_copy)


def test_reference_without_source_is_refused(catalog_copy: Path) -> None:
    _edit_hardware(catalog_copy, lambda hardware: hardware["b200"]["benchmark"]["references"][1].pop("source"))
    with pytest.raises(CatalogError, match=r"references\[1\] lacks the key 'source'"):
        load_catalog(catalog_copy)


def test_reference_to_unknown_model_is_refused(catalog_copy: Path) -> None:
    _edit_hardware(
        catalog_copy, lambda hardware: hardware["b200"]["benchmark"]["references"][0].update(model="glm-9")
    )
    with pytest.raises(CatalogError, match=r"references\[0\] names unknown model 'glm-9'"):
        load_catalog(catalog_copy)
