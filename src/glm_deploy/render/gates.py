"""What a plan hands to the roles that judge its release: the quality gate (question set, floors, which engine's
speculative-decoding metrics to read) and the benchmark workload with the published reference of that shape.
"""

from __future__ import annotations

from typing import Any

from glm_deploy.catalog import EngineSpec, HardwareSpec, ModelSpec


def speculative_method(engine: EngineSpec) -> str:
    """How the engine drafts tokens with GLM's MTP layer, as explanations and gate messages name it."""
    return "EAGLE over the MTP head" if engine.speculative_kind == "eagle" else "MTP"


def quality_gate(model: ModelSpec, engine: EngineSpec, speculative: bool) -> dict[str, Any]:
    spec = model.quality
    quality: dict[str, Any] = {
        "set": spec.question_set,
        "floor": spec.floor,
        "floor_source": spec.floor_source,
        "max_drop_points": spec.max_drop_points,
        "max_drop_points_source": spec.max_drop_points_source,
        "speculative": None,
    }
    if speculative:
        floor = spec.acceptance
        quality["speculative"] = {
            # vLLM and SGLang name their acceptance metrics differently; the CPU build is vLLM's.
            "engine": "sglang" if engine.name.startswith("sglang") else "vllm",
            "method": speculative_method(engine),
            "floor": None
            if floor is None
            else {
                "min_acceptance_length": floor.min_acceptance_length,
                "min_acceptance_rate": floor.min_acceptance_rate,
                "source": floor.source,
            },
        }
    return quality


def benchmark_workload(
    hardware: HardwareSpec, model: str, engine: str, speculative: bool, nodes: int
) -> dict[str, Any]:
    profile = hardware.benchmark
    benchmark: dict[str, Any] = {
        "input_len": profile.input_len,
        "output_len": profile.output_len,
        "num_prompts": profile.num_prompts,
        "max_concurrency": profile.max_concurrency,
        "source": profile.source,
    }
    # Published points were measured on one node with a given speculative setting; another layout would make
    # the comparison misleading, so the plan carries none.
    reference = profile.reference_for(model, engine, speculative) if nodes == 1 else None
    if reference is not None:
        benchmark["reference"] = dict(reference.metrics)
        benchmark["reference_source"] = reference.source
    return benchmark
