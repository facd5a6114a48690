"""The plan carries the hardware's benchmark workload, with a published reference only where one exists."""

from __future__ import annotations

import json

import pytest

from glm_deploy.catalog import Catalog, load_catalog
from glm_deploy.render import PlanOptions, render_plan

PROFILE_KEYS = {"input_len", "output_len", "num_prompts", "max_concurrency"}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def test_cpu_plan_carries_the_tiny_profile_without_reference(catalog: Catalog) -> None:
    plan = render_plan(catalog, model="glm-tiny", engine="vllm-cpu", hardware="cpu").to_dict()
    benchmark = json.loads(json.dumps(plan))["benchmark"]  # what the lookup hands to Ansible
    assert {key: benchmark[key] for key in PROFILE_KEYS} == {
        "input_len": 64,
        "output_len": 16,
        "num_prompts": 20,
        "max_concurrency": 4,
    }
    assert "reference" not in benchmark
    assert "reference_source" not in benchmark


def test_b200_glm51_sglang_plan_carries_the_published_reference(catalog: Catalog) -> None:
    plan = render_plan(catalog, model="glm-5.1-fp8", engine="sglang", hardware="b200")
    assert plan.speculative
    benchmark = plan.to_dict()["benchmark"]
    assert {key: benchmark[key] for key in PROFILE_KEYS} == {
        "input_len": 8192,
        "output_len": 2048,
        "num_prompts": 512,
        "max_concurrency": 32,
    }
    assert benchmark["reference"] == {"output_throughput": 1345, "mean_ttft_ms": 1073, "mean_tpot_ms": 22.8}
    assert "SGLang+EAGLE" in benchmark["reference_source"]


def test_b200_glm51_vllm_plan_carries_its_own_reference(catalog: Catalog) -> None:
    benchmark = render_plan(catalog, model="glm-5.1-fp8", engine="vllm", hardware="b200").to_dict()["benchmark"]
    assert benchmark["reference"] == {"output_throughput": 1265}
    assert "vLLM+MTP" in benchmark["reference_source"]


def test_no_reference_without_speculative_decoding(catalog: Catalog) -> None:
    # The published point was measured with EAGLE; a run without it is not comparable.
    plan = render_plan(
        catalog, model="glm-5.1-fp8", engine="sglang", hardware="b200", options=PlanOptions(speculative=False)
    )
    assert not plan.speculative
    benchmark = plan.to_dict()["benchmark"]
    assert benchmark["num_prompts"] == 512
    assert "reference" not in benchmark


@pytest.mark.parametrize(
    ("model", "engine", "hardware"),
    [("glm-5.1-fp8", "sglang", "h200"), ("glm-5-fp8", "sglang", "b200"), ("glm-5.1-fp8", "sglang", "mi300x")],
)
def test_no_reference_where_none_is_published(catalog: Catalog, model: str, engine: str, hardware: str) -> None:
    benchmark = render_plan(catalog, model=model, engine=engine, hardware=hardware).to_dict()["benchmark"]
    assert set(benchmark) >= PROFILE_KEYS
    assert benchmark["input_len"] == 4 * benchmark["output_len"]
    assert "reference" not in benchmark
    assert "reference_source" not in benchmark
