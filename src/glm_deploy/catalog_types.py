"""The typed objects the catalog is read into (`catalog.load_catalog`), and the names its entries may use.

The catalog reader (`catalog_reader.read_fields`) reads most fields from the entry's key of the same name, by the
field's type: a text, number or switch must be there, a `| None` field and a list or map may be left out (None,
empty). `REQUIRED` and `OFF_UNLESS_SET` mark the fields that differ from their type's rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# A list the entry must give (a field's metadata, read by catalog_reader.read_fields).
REQUIRED = {"required": True}
# A switch that is off unless the entry sets it.
OFF_UNLESS_SET = {"default": False}

# A flag's value in the catalog: a string, or True for a bare switch (False/None remove a flag).
FlagValue = str | bool
Flags = dict[str, FlagValue]

VENDORS = ("nvidia", "amd", "cpu")
PRECISIONS = ("fp8", "bf16", "nvfp4")
ENGINE_KINDS = ("sglang", "vllm")
RUNTIMES = ("container", "native")


@dataclass(frozen=True)
class ImageSpec:
    image: str
    version: str | None
    cuda: str | None
    rocm: str | None
    archs: tuple[str, ...]
    models: tuple[str, ...]
    preferred: bool = field(metadata=OFF_UNLESS_SET)
    floating: bool = field(metadata=OFF_UNLESS_SET)
    source: str


@dataclass(frozen=True)
class KnownBad:
    version: str
    reason: str
    source: str
    engine: str | None = None


@dataclass(frozen=True)
class TransformersUpgrade:
    versions: tuple[str, ...] = field(metadata=REQUIRED)
    models: tuple[str, ...] = field(metadata=REQUIRED)
    requirement: str
    source: str


@dataclass(frozen=True)
class MultiNodeSpec:
    layout: str
    nnodes_flag: str
    node_rank_flag: str
    head_address_flag: str
    head_port: int | None
    worker_flags: Flags
    source: str


@dataclass(frozen=True)
class ApiKeySpec:
    method: str  # "env" or "config_file"
    env: str | None
    config_key: str | None
    flag: str | None
    source: str


@dataclass(frozen=True)
class NativeSpec:
    package: str
    version: str
    python: str
    remove_packages: tuple[str, ...]
    system_packages: tuple[str, ...]
    needs_vllm_dist_info: bool = field(metadata=OFF_UNLESS_SET)
    source: str


# What makes a warm-up worth running: `deepgemm` = the plan's FP8 GEMMs go through DeepGEMM's JIT (FP8 weights
# on NVIDIA, the test preflight.gpu_needs uses), `always` = every plan of the engine.
WARMUP_NEEDS = ("deepgemm", "always")


@dataclass(frozen=True)
class WarmupSpec:
    """An engine's JIT warm-up: a precompile command (`launcher`, run before the cut-over with the server's own
    flags) or, without one, environment that makes the engine's first start compile everything before serving."""

    needs: str
    launcher: tuple[str, ...]
    drop_flags: tuple[str, ...]
    host: str | None
    port: int | None
    timeout_s: int | None
    caches: tuple[str, ...] = field(metadata=REQUIRED)
    env: dict[str, str]
    why: str
    source: str


@dataclass(frozen=True)
class EngineSpec:
    name: str
    display_name: str
    kind: str
    runtimes: tuple[str, ...] = field(metadata=REQUIRED)
    launcher: tuple[str, ...] = field(metadata=REQUIRED)
    default_port: int
    flag_names: dict[str, str | None]
    default_mem_fraction: float | None
    common_args: Flags
    common_args_why: dict[str, str]
    api_key: ApiKeySpec
    multi_node: MultiNodeSpec | None
    speculative_kind: str | None
    caches: dict[str, tuple[str, ...]]
    startup_base_s: int
    startup_jit_s: int
    images: tuple[ImageSpec, ...]
    known_bad: tuple[KnownBad, ...]
    transformers_upgrades: tuple[TransformersUpgrade, ...]
    native: NativeSpec | None
    warmup: WarmupSpec | None = None


@dataclass(frozen=True)
class HardwareEngineFlags:
    args: Flags
    by_precision: dict[str, Flags]
    mem_fraction: float | None
    env: dict[str, str]
    why: dict[str, str]
    source: str


# Metrics a published reference may carry: the keys of `vllm bench serve`'s result JSON, so the benchmark role
# can put a run beside its reference key by key.
BENCHMARK_METRICS = (
    "output_throughput",
    "total_token_throughput",
    "request_throughput",
    *(f"{stat}_{metric}_ms" for metric in ("ttft", "tpot", "itl", "e2el") for stat in ("mean", "median", "p99")),
)


@dataclass(frozen=True)
class BenchmarkReference:
    """A published result of the hardware's workload for one model, engine and speculative setting."""

    model: str
    engine: str
    speculative: bool
    metrics: dict[str, float]
    source: str


@dataclass(frozen=True)
class BenchmarkProfile:
    """The workload `vllm bench serve` runs on this hardware, with the published results of that shape."""

    input_len: int
    output_len: int
    num_prompts: int
    max_concurrency: int
    references: tuple[BenchmarkReference, ...]
    source: str

    def reference_for(self, model: str, engine: str, speculative: bool) -> BenchmarkReference | None:
        for reference in self.references:
            if (reference.model, reference.engine, reference.speculative) == (model, engine, speculative):
                return reference
        return None


@dataclass(frozen=True)
class HardwareSpec:
    name: str
    display_name: str
    vendor: str
    gpu_name_patterns: tuple[str, ...]
    gpu_memory_gib: int
    arch: str
    compute_capability: str | None
    gpus_per_node: int
    fp8: bool
    fp4: bool
    hgx_fabric_manager: bool
    # The Lambda Cloud instance types (`instance_type.name` in Lambda's API) that are this hardware; the inventory
    # plugin glm.deploy.lambda_cloud sets a host's glm_hardware from them.
    lambda_instance_types: tuple[str, ...]
    lambda_instance_types_source: str | None
    load_bytes_per_s: int
    engine_flags: dict[str, HardwareEngineFlags]
    benchmark: BenchmarkProfile
    source: str


@dataclass(frozen=True)
class SharedFilesystemWeights:
    """Where the weights go on a host with a shared network filesystem attached (a Lambda filesystem, mounted at
    /lambda/nfs/<name>; the inventory's glm_filesystem_mount): `placement` is the one chosen, `alternative` the one
    not taken, `measured` whether load speed decided it, `hf_home_folder` the HF cache's folder under the mount."""

    placement: str
    alternative: str
    measured: bool
    hf_home_folder: str
    why: str
    source: str


# What shared_filesystem_weights.placement may be: the HF cache kept on the filesystem itself is the one built.
WEIGHTS_PLACEMENTS = ("hf_cache_on_filesystem",)


@dataclass(frozen=True)
class SpeculativeEngine:
    args: Flags
    env: dict[str, str]
    mem_fraction: float | None
    source: str


@dataclass(frozen=True)
class SpeculativeSpec:
    default: bool
    engines: dict[str, SpeculativeEngine]
    unsupported_reason: str | None
    unsupported_hardware: dict[str, str]  # vendor -> why not
    source: str


@dataclass(frozen=True)
class IndexCacheSpec:
    supported: bool
    engines: tuple[str, ...]
    args: Flags
    why: str | None
    reason: str | None
    source: str


@dataclass(frozen=True)
class AcceptanceFloor:
    """The lowest speculative-decoding acceptance a release may show over the gate's prompts."""

    min_acceptance_length: float
    min_acceptance_rate: float | None
    source: str


@dataclass(frozen=True)
class QualitySpec:
    """The accuracy gate of a model: a question set, its floor and the largest drop from the last good release."""

    question_set: str
    floor: float
    floor_source: str
    max_drop_points: float
    max_drop_points_source: str
    acceptance: AcceptanceFloor | None


@dataclass(frozen=True)
class ModelHardware:
    gpus: int | None
    nodes: int | None
    max_model_len: int | None
    smaller_alternative: str | None
    unsupported: str | None
    source: str


@dataclass(frozen=True)
class Parsers:
    tool: str | None
    reasoning: str | None
    source: str


@dataclass(frozen=True)
class ModelSpec:
    name: str
    display_name: str
    family: str
    hf_repo: str
    revision: str
    architecture: str
    model_type: str
    precision: str
    disk_bytes: int
    context_length: int
    min_transformers: str
    engines: tuple[str, ...] = field(metadata=REQUIRED)
    unsupported_engines: dict[str, str]
    min_engine_versions: dict[str, str | None]
    known_bad: tuple[KnownBad, ...]
    parsers: Parsers
    has_mtp: bool
    speculative: SpeculativeSpec
    index_cache: IndexCacheSpec
    dp_attention_args: dict[str, Flags]
    sampling: dict[str, Any]
    hardware: dict[str, ModelHardware]
    quality: QualitySpec
    source: str


@dataclass(frozen=True)
class Catalog:
    models: dict[str, ModelSpec]
    engines: dict[str, EngineSpec]
    hardware: dict[str, HardwareSpec]
    cuda_driver_minimum: dict[str, int]
    shared_filesystem_weights: SharedFilesystemWeights
    raw: dict[str, Any] = field(repr=False)

    def hardware_for_lambda_instance_type(self, instance_type: str) -> HardwareSpec | None:
        """The hardware whose `lambda_instance_types` lists `instance_type` (one at most: load_catalog checks)."""
        for spec in self.hardware.values():
            if instance_type in spec.lambda_instance_types:
                return spec
        return None
