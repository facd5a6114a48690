"""Load and validate the catalog of models, engines and hardware (`glm_deploy/catalog/*.yml`).

The YAML files are the only place a flag, an image tag, a size or a GPU count is written. This module turns
them into typed, frozen objects and checks that they agree with each other (every model names known engines
and hardware, every entry names its source), so a mistake in the data is a `CatalogError` at load time rather
than a strange plan later.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from glm_deploy.errors import CatalogError

# `as` marks the version helpers as re-exported: callers read them through this module too (commands.catalog).
from glm_deploy.versions import is_version as is_version  # noqa: PLC0414
from glm_deploy.versions import parse_version as parse_version  # noqa: PLC0414
from glm_deploy.versions import version_at_least as version_at_least  # noqa: PLC0414
from glm_deploy.versions import version_matches as version_matches  # noqa: PLC0414

# A flag's value in the catalog: a string, or True for a bare switch (False/None remove a flag).
FlagValue = str | bool
Flags = dict[str, FlagValue]

CATALOG_FILES = ("models.yml", "engines.yml", "hardware.yml")
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
    preferred: bool
    floating: bool
    source: str


@dataclass(frozen=True)
class KnownBad:
    version: str
    reason: str
    source: str
    engine: str | None = None


@dataclass(frozen=True)
class TransformersUpgrade:
    versions: tuple[str, ...]
    models: tuple[str, ...]
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
    needs_vllm_dist_info: bool
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
    caches: tuple[str, ...]
    env: dict[str, str]
    why: str
    source: str


@dataclass(frozen=True)
class EngineSpec:
    name: str
    display_name: str
    kind: str
    runtimes: tuple[str, ...]
    launcher: tuple[str, ...]
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
    lambda_instance_types: tuple[str, ...]
    load_bytes_per_s: int
    engine_flags: dict[str, HardwareEngineFlags]
    benchmark: BenchmarkProfile
    source: str


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
    engines: tuple[str, ...]
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
    raw: dict[str, Any] = field(repr=False)


# ---------------------------------------------------------------------------------------------- known bad


def known_bad_for(engine: EngineSpec, model: ModelSpec | None, version: str | None) -> KnownBad | None:
    """The catalog entry marking `version` of `engine` bad: the engine's own list, and `model`'s entries.

    An entry naming a series (`0.20`) covers every release in it; a pre-release entry names one build.
    """
    if version is None:
        return None
    model_bad = tuple(bad for bad in model.known_bad if bad.engine == engine.name) if model else ()
    for bad in (*engine.known_bad, *model_bad):
        if version_matches(bad.version, version):
            return bad
    return None


# ---------------------------------------------------------------------------------------------- reading


class _Reader:
    """Typed access to one YAML mapping that reports the path of a bad entry."""

    def __init__(self, data: object, where: str) -> None:
        if not isinstance(data, Mapping):
            raise CatalogError(f"catalog entry {where} must be a mapping, got {type(data).__name__}")
        self.data: Mapping[str, Any] = data
        self.where = where

    def _get(self, key: str, required: bool) -> Any:
        if key not in self.data:
            if required:
                raise CatalogError(f"catalog entry {self.where} lacks the key {key!r}")
            return None
        return self.data[key]

    def text(self, key: str) -> str:
        value = self._get(key, True)
        if not isinstance(value, str) or not value:
            raise CatalogError(f"catalog entry {self.where}.{key} must be a non-empty string, got {value!r}")
        return value

    def opt_text(self, key: str) -> str | None:
        value = self._get(key, False)
        if value is None:
            return None
        if not isinstance(value, str):
            raise CatalogError(f"catalog entry {self.where}.{key} must be a string or null, got {value!r}")
        return value

    def integer(self, key: str) -> int:
        value = self._get(key, True)
        if not isinstance(value, int) or isinstance(value, bool):
            raise CatalogError(f"catalog entry {self.where}.{key} must be an integer, got {value!r}")
        return value

    def opt_integer(self, key: str) -> int | None:
        value = self._get(key, False)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            raise CatalogError(f"catalog entry {self.where}.{key} must be an integer or null, got {value!r}")
        return value

    def opt_float(self, key: str) -> float | None:
        value = self._get(key, False)
        if value is None:
            return None
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise CatalogError(f"catalog entry {self.where}.{key} must be a number or null, got {value!r}")
        return float(value)

    def boolean(self, key: str, default: bool | None = None) -> bool:
        value = self._get(key, default is None)
        if value is None:
            return bool(default)
        if not isinstance(value, bool):
            raise CatalogError(f"catalog entry {self.where}.{key} must be true or false, got {value!r}")
        return value

    def str_list(self, key: str, required: bool = False) -> tuple[str, ...]:
        value = self._get(key, required)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise CatalogError(f"catalog entry {self.where}.{key} must be a list of strings, got {value!r}")
        return tuple(value)

    def sub(self, key: str) -> _Reader:
        return _Reader(self._get(key, True), f"{self.where}.{key}")

    def opt_sub(self, key: str) -> _Reader | None:
        value = self._get(key, False)
        return None if value is None else _Reader(value, f"{self.where}.{key}")

    def str_map(self, key: str) -> dict[str, str]:
        value = self._get(key, False)
        if value is None:
            return {}
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise CatalogError(f"catalog entry {self.where}.{key} must map strings to strings, got {value!r}")
        return dict(value)

    def flags(self, key: str) -> Flags:
        value = self._get(key, False)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise CatalogError(f"catalog entry {self.where}.{key} must map flags to values, got {value!r}")
        flags: Flags = {}
        for flag, flag_value in value.items():
            if not isinstance(flag, str) or not flag.startswith("--"):
                raise CatalogError(f"catalog entry {self.where}.{key}: {flag!r} is not a --flag")
            if not isinstance(flag_value, str | bool):
                # Numbers must be quoted so that `0.80` is not rendered as `0.8` by accident.
                raise CatalogError(
                    f"catalog entry {self.where}.{key}.{flag} must be a quoted string or true, "
                    f"got {flag_value!r}"
                )
            flags[flag] = flag_value
        return flags

    def items(self, key: str) -> list[tuple[str, _Reader]]:
        value = self._get(key, True)
        if not isinstance(value, Mapping):
            raise CatalogError(f"catalog entry {self.where}.{key} must be a mapping, got {value!r}")
        return [(name, _Reader(entry, f"{self.where}.{key}.{name}")) for name, entry in value.items()]

    def entries(self, key: str) -> list[_Reader]:
        value = self._get(key, False)
        if value is None:
            return []
        if not isinstance(value, list):
            raise CatalogError(f"catalog entry {self.where}.{key} must be a list, got {value!r}")
        return [_Reader(entry, f"{self.where}.{key}[{index}]") for index, entry in enumerate(value)]


def _known_bad(reader: _Reader) -> KnownBad:
    version = reader.data.get("version")
    if not isinstance(version, str):
        raise CatalogError(f"catalog entry {reader.where}.version must be a quoted string, got {version!r}")
    return KnownBad(
        version=version,
        reason=reader.text("reason"),
        source=reader.text("source"),
        engine=reader.opt_text("engine"),
    )


def _engine(name: str, reader: _Reader) -> EngineSpec:
    kind = reader.text("kind")
    if kind not in ENGINE_KINDS:
        raise CatalogError(
            f"catalog entry {reader.where}.kind is {kind!r}; known kinds: {', '.join(ENGINE_KINDS)}"
        )
    runtimes = reader.str_list("runtimes", required=True)
    for runtime in runtimes:
        if runtime not in RUNTIMES:
            raise CatalogError(f"catalog entry {reader.where}.runtimes has unknown runtime {runtime!r}")
    flag_names_reader = reader.sub("flag_names")
    flag_names: dict[str, str | None] = {
        key: flag_names_reader.opt_text(key) for key in flag_names_reader.data
    }
    for required in ("served_name", "host", "port", "revision"):
        if not flag_names.get(required):
            raise CatalogError(f"catalog entry {reader.where}.flag_names lacks {required!r}")
    api = reader.sub("api_key")
    api_key = ApiKeySpec(
        method=api.text("method"),
        env=api.opt_text("env"),
        config_key=api.opt_text("config_key"),
        flag=api.opt_text("flag"),
        source=api.text("source"),
    )
    if api_key.method not in ("env", "config_file"):
        raise CatalogError(
            f"catalog entry {api.where}.method must be env or config_file, got {api_key.method!r}"
        )
    multi = reader.opt_sub("multi_node")
    multi_node = None
    if multi is not None:
        multi_node = MultiNodeSpec(
            layout=multi.text("layout"),
            nnodes_flag=multi.text("nnodes_flag"),
            node_rank_flag=multi.text("node_rank_flag"),
            head_address_flag=multi.text("head_address_flag"),
            head_port=multi.opt_integer("head_port"),
            worker_flags=multi.flags("worker_flags"),
            source=multi.text("source"),
        )
    caches_reader = reader.sub("caches")
    caches = {kind_name: caches_reader.str_list(kind_name, required=True) for kind_name in caches_reader.data}
    startup = reader.sub("startup")
    startup.text("source")
    images = tuple(
        ImageSpec(
            image=image.text("image"),
            version=image.opt_text("version"),
            cuda=image.opt_text("cuda"),
            rocm=image.opt_text("rocm"),
            archs=image.str_list("archs"),
            models=image.str_list("models"),
            preferred=image.boolean("preferred", default=False),
            floating=image.boolean("floating", default=False),
            source=image.text("source"),
        )
        for image in reader.entries("images")
    )
    native_reader = reader.opt_sub("native")
    native = None
    if native_reader is not None:
        native = NativeSpec(
            package=native_reader.text("package"),
            version=native_reader.text("version"),
            python=native_reader.text("python"),
            remove_packages=native_reader.str_list("remove_packages"),
            system_packages=native_reader.str_list("system_packages"),
            needs_vllm_dist_info=native_reader.boolean("needs_vllm_dist_info", default=False),
            source=native_reader.text("source"),
        )
    if "native" in runtimes and native is None:
        raise CatalogError(f"catalog entry {reader.where} runs natively but has no `native:` section")
    if "container" in runtimes and not images:
        raise CatalogError(f"catalog entry {reader.where} runs in containers but lists no images")
    upgrades = tuple(
        TransformersUpgrade(
            versions=upgrade.str_list("versions", required=True),
            models=upgrade.str_list("models", required=True),
            requirement=upgrade.text("requirement"),
            source=upgrade.text("source"),
        )
        for upgrade in reader.entries("transformers_upgrades")
    )
    reader.text("launcher_source")
    reader.text("flag_names_source")
    reader.text("caches_source")
    warmup_reader = reader.opt_sub("warmup")
    warmup = _warmup(warmup_reader, flag_names, caches) if warmup_reader is not None else None
    return EngineSpec(
        name=name,
        display_name=reader.text("display_name"),
        kind=kind,
        runtimes=runtimes,
        launcher=reader.str_list("launcher", required=True),
        default_port=reader.integer("default_port"),
        flag_names=flag_names,
        default_mem_fraction=reader.opt_float("default_mem_fraction"),
        common_args=reader.flags("common_args"),
        common_args_why=reader.str_map("common_args_why"),
        api_key=api_key,
        multi_node=multi_node,
        speculative_kind=reader.opt_text("speculative_kind"),
        caches=caches,
        startup_base_s=startup.integer("base_s"),
        startup_jit_s=startup.integer("jit_s"),
        images=images,
        known_bad=tuple(_known_bad(entry) for entry in reader.entries("known_bad")),
        transformers_upgrades=upgrades,
        native=native,
        warmup=warmup,
    )


def _warmup(
    reader: _Reader, flag_names: Mapping[str, str | None], caches: Mapping[str, tuple[str, ...]]
) -> WarmupSpec:
    needs = reader.text("needs")
    if needs not in WARMUP_NEEDS:
        raise CatalogError(f"catalog entry {reader.where}.needs is {needs!r}; known: {', '.join(WARMUP_NEEDS)}")
    launcher = reader.str_list("launcher")
    drop_flags = reader.str_list("drop_flags")
    for key in drop_flags:
        if key not in flag_names:
            raise CatalogError(
                f"catalog entry {reader.where}.drop_flags names {key!r}, which is not a key of the engine's "
                f"flag_names ({', '.join(flag_names)})"
            )
    warmup_caches = reader.str_list("caches", required=True)
    for kind in warmup_caches:
        if kind not in caches:
            raise CatalogError(
                f"catalog entry {reader.where}.caches names {kind!r}, which is not one of the engine's caches "
                f"({', '.join(caches)})"
            )
    spec = WarmupSpec(
        needs=needs,
        launcher=launcher,
        drop_flags=drop_flags,
        host=reader.opt_text("host"),
        port=reader.opt_integer("port"),
        timeout_s=reader.opt_integer("timeout_s"),
        caches=warmup_caches,
        env=reader.str_map("env"),
        why=reader.text("why"),
        source=reader.text("source"),
    )
    if launcher and (spec.host is None or spec.port is None or not spec.timeout_s or spec.timeout_s <= 0):
        raise CatalogError(
            f"catalog entry {reader.where} has a launcher, so it needs host, port and a positive timeout_s "
            "(the precompile command starts a server of its own)"
        )
    if not launcher and not spec.env:
        raise CatalogError(
            f"catalog entry {reader.where} has neither a launcher (a precompile command) nor env (settings that "
            "make the first start compile everything): it would warm nothing"
        )
    return spec


def _positive(reader: _Reader, key: str) -> int:
    value = reader.integer(key)
    if value <= 0:
        raise CatalogError(f"catalog entry {reader.where}.{key} must be a positive integer, got {value}")
    return value


def _benchmark_reference(reader: _Reader) -> BenchmarkReference:
    known = ("model", "engine", "speculative", "source")
    metrics: dict[str, float] = {}
    for key in reader.data:
        if key in known:
            continue
        if key not in BENCHMARK_METRICS:
            raise CatalogError(
                f"catalog entry {reader.where} has {key!r}, which is not a key of vLLM's benchmark result; "
                f"known: {', '.join(BENCHMARK_METRICS)}"
            )
        value = reader.opt_float(key)
        if value is None or value <= 0:
            raise CatalogError(f"catalog entry {reader.where}.{key} must be a positive number, got {value!r}")
        metrics[key] = value
    if not metrics:
        raise CatalogError(f"catalog entry {reader.where} names no metric; known: {', '.join(BENCHMARK_METRICS)}")
    return BenchmarkReference(
        model=reader.text("model"),
        engine=reader.text("engine"),
        speculative=reader.boolean("speculative"),
        metrics=metrics,
        source=reader.text("source"),
    )


def _benchmark(reader: _Reader) -> BenchmarkProfile:
    profile = BenchmarkProfile(
        input_len=_positive(reader, "input_len"),
        output_len=_positive(reader, "output_len"),
        num_prompts=_positive(reader, "num_prompts"),
        max_concurrency=_positive(reader, "max_concurrency"),
        references=tuple(_benchmark_reference(entry) for entry in reader.entries("references")),
        source=reader.text("source"),
    )
    if profile.max_concurrency > profile.num_prompts:
        raise CatalogError(
            f"catalog entry {reader.where}: max_concurrency {profile.max_concurrency} exceeds num_prompts "
            f"{profile.num_prompts}, so the run never reaches that concurrency"
        )
    seen: set[tuple[str, str, bool]] = set()
    for index, reference in enumerate(profile.references):
        key = (reference.model, reference.engine, reference.speculative)
        if key in seen:
            raise CatalogError(
                f"catalog entry {reader.where}.references[{index}] repeats model {reference.model}, engine "
                f"{reference.engine}, speculative {reference.speculative}: keep one"
            )
        seen.add(key)
    return profile


def _hardware(name: str, reader: _Reader) -> HardwareSpec:
    vendor = reader.text("vendor")
    if vendor not in VENDORS:
        raise CatalogError(
            f"catalog entry {reader.where}.vendor is {vendor!r}; known vendors: {', '.join(VENDORS)}"
        )
    patterns = reader.str_list("gpu_name_patterns")
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as error:
            raise CatalogError(
                f"catalog entry {reader.where}.gpu_name_patterns: bad regex {pattern!r}: {error}"
            ) from None
    engine_flags: dict[str, HardwareEngineFlags] = {}
    for engine_name, flags_reader in reader.items("engine_flags"):
        by_precision_reader = flags_reader.opt_sub("by_precision")
        by_precision = (
            {precision: by_precision_reader.flags(precision) for precision in by_precision_reader.data}
            if by_precision_reader is not None
            else {}
        )
        engine_flags[engine_name] = HardwareEngineFlags(
            args=flags_reader.flags("args"),
            by_precision=by_precision,
            mem_fraction=flags_reader.opt_float("mem_fraction"),
            env=flags_reader.str_map("env"),
            why=flags_reader.str_map("why"),
            source=flags_reader.text("source"),
        )
    return HardwareSpec(
        name=name,
        display_name=reader.text("display_name"),
        vendor=vendor,
        gpu_name_patterns=patterns,
        gpu_memory_gib=reader.integer("gpu_memory_gib"),
        arch=reader.text("arch"),
        compute_capability=reader.opt_text("compute_capability"),
        gpus_per_node=reader.integer("gpus_per_node"),
        fp8=reader.boolean("fp8"),
        fp4=reader.boolean("fp4"),
        hgx_fabric_manager=reader.boolean("hgx_fabric_manager"),
        lambda_instance_types=reader.str_list("lambda_instance_types"),
        load_bytes_per_s=reader.integer("load_bytes_per_s"),
        engine_flags=engine_flags,
        benchmark=_benchmark(reader.sub("benchmark")),
        source=reader.text("source"),
    )


# A question set's name becomes a file name on the host: letters, digits, dots, dashes.
_QUESTION_SET = re.compile(r"[a-z0-9][a-z0-9.-]{0,63}")


def _quality(reader: _Reader) -> QualitySpec:
    floor = reader.opt_float("floor")
    if floor is None or not 0.0 < floor <= 1.0:
        raise CatalogError(f"catalog entry {reader.where}.floor must be a score in (0, 1], got {floor!r}")
    drop = reader.opt_float("max_drop_points")
    if drop is None or drop < 0:
        raise CatalogError(f"catalog entry {reader.where}.max_drop_points must be 0 or more points, got {drop!r}")
    question_set = reader.text("set")
    if not _QUESTION_SET.fullmatch(question_set):
        raise CatalogError(f"catalog entry {reader.where}.set {question_set!r} is not a question set name")
    acceptance_reader = reader.opt_sub("acceptance")
    acceptance = None
    if acceptance_reader is not None:
        length = acceptance_reader.opt_float("min_acceptance_length")
        if length is None or length < 1.0:
            raise CatalogError(
                f"catalog entry {acceptance_reader.where}.min_acceptance_length must be 1 or more tokens per step"
            )
        rate = acceptance_reader.opt_float("min_acceptance_rate")
        if rate is not None and not 0.0 <= rate <= 1.0:
            raise CatalogError(f"catalog entry {acceptance_reader.where}.min_acceptance_rate must be in [0, 1]")
        acceptance = AcceptanceFloor(length, rate, acceptance_reader.text("source"))
    return QualitySpec(
        question_set=question_set,
        floor=floor,
        floor_source=reader.text("floor_source"),
        max_drop_points=drop,
        max_drop_points_source=reader.text("max_drop_points_source"),
        acceptance=acceptance,
    )


def _model(name: str, reader: _Reader) -> ModelSpec:
    precision = reader.text("precision")
    if precision not in PRECISIONS:
        raise CatalogError(
            f"catalog entry {reader.where}.precision is {precision!r}; known: {', '.join(PRECISIONS)}"
        )
    spec_reader = reader.sub("speculative")
    speculative_engines: dict[str, SpeculativeEngine] = {}
    for engine_name in spec_reader.data:
        if engine_name in ("default", "unsupported_reason", "unsupported_hardware", "source"):
            continue
        engine_reader = spec_reader.sub(engine_name)
        speculative_engines[engine_name] = SpeculativeEngine(
            args=engine_reader.flags("args"),
            env=engine_reader.str_map("env"),
            mem_fraction=engine_reader.opt_float("mem_fraction"),
            source=engine_reader.text("source"),
        )
    speculative = SpeculativeSpec(
        default=spec_reader.boolean("default"),
        engines=speculative_engines,
        unsupported_reason=spec_reader.opt_text("unsupported_reason"),
        unsupported_hardware=spec_reader.str_map("unsupported_hardware"),
        source=spec_reader.text("source"),
    )
    if not speculative_engines and speculative.unsupported_reason is None:
        raise CatalogError(f"catalog entry {spec_reader.where} names no engine and no unsupported_reason")
    index_reader = reader.sub("index_cache")
    index_cache = IndexCacheSpec(
        supported=index_reader.boolean("supported"),
        engines=index_reader.str_list("engines"),
        args=index_reader.flags("args"),
        why=index_reader.opt_text("why"),
        reason=index_reader.opt_text("reason"),
        source=index_reader.text("source"),
    )
    hardware: dict[str, ModelHardware] = {}
    for hardware_name, entry in reader.items("hardware"):
        profile = ModelHardware(
            gpus=entry.opt_integer("gpus"),
            nodes=entry.opt_integer("nodes"),
            max_model_len=entry.opt_integer("max_model_len"),
            smaller_alternative=entry.opt_text("smaller_alternative"),
            unsupported=entry.opt_text("unsupported"),
            source=entry.text("source"),
        )
        if profile.unsupported is None and (profile.gpus is None or profile.nodes is None):
            raise CatalogError(f"catalog entry {entry.where} needs gpus and nodes, or unsupported: <why>")
        hardware[hardware_name] = profile
    parsers_reader = reader.sub("parsers")
    min_versions_reader = reader.sub("min_engine_versions")
    min_versions = {
        engine_name: min_versions_reader.opt_text(engine_name) for engine_name in min_versions_reader.data
    }
    dp_reader = reader.opt_sub("dp_attention_args")
    dp_args = (
        {engine_name: dp_reader.flags(engine_name) for engine_name in dp_reader.data} if dp_reader else {}
    )
    sampling = reader.data.get("sampling")
    if not isinstance(sampling, Mapping) or "source" not in sampling:
        raise CatalogError(f"catalog entry {reader.where}.sampling must be a mapping with a source")
    reader.text("revision_source")
    reader.text("min_transformers_source")
    reader.text("min_engine_versions_source")
    return ModelSpec(
        name=name,
        display_name=reader.text("display_name"),
        family=reader.text("family"),
        hf_repo=reader.text("hf_repo"),
        revision=reader.text("revision"),
        architecture=reader.text("architecture"),
        model_type=reader.text("model_type"),
        precision=precision,
        disk_bytes=reader.integer("disk_bytes"),
        context_length=reader.integer("context_length"),
        min_transformers=reader.text("min_transformers"),
        engines=reader.str_list("engines", required=True),
        unsupported_engines=reader.str_map("unsupported_engines"),
        min_engine_versions=min_versions,
        known_bad=tuple(_known_bad(entry) for entry in reader.entries("known_bad")),
        parsers=Parsers(
            tool=parsers_reader.opt_text("tool"),
            reasoning=parsers_reader.opt_text("reasoning"),
            source=parsers_reader.text("source"),
        ),
        has_mtp=reader.boolean("has_mtp"),
        speculative=speculative,
        index_cache=index_cache,
        dp_attention_args=dp_args,
        sampling=dict(sampling),
        hardware=hardware,
        quality=_quality(reader.sub("quality")),
        source=reader.text("source"),
    )


def _check_references(catalog: Catalog) -> None:
    """Every name one file uses must exist in the file that defines it."""
    engines, hardware, models = catalog.engines, catalog.hardware, catalog.models
    for model in models.values():
        where = f"models.{model.name}"
        for engine_name in (*model.engines, *model.unsupported_engines, *model.min_engine_versions):
            if engine_name not in engines:
                raise CatalogError(f"catalog entry {where} names unknown engine {engine_name!r}")
        for engine_name in model.engines:
            if engine_name not in model.min_engine_versions:
                raise CatalogError(f"catalog entry {where}.min_engine_versions lacks {engine_name!r}")
        for hardware_name, profile in model.hardware.items():
            if hardware_name not in hardware:
                raise CatalogError(f"catalog entry {where}.hardware names unknown hardware {hardware_name!r}")
            if profile.smaller_alternative and profile.smaller_alternative not in models:
                raise CatalogError(f"catalog entry {where}.hardware.{hardware_name} names unknown model")
        for engine_name in model.speculative.engines:
            if engine_name not in model.engines:
                raise CatalogError(f"catalog entry {where}.speculative names engine {engine_name!r} it lacks")
        for bad in model.known_bad:
            if bad.engine not in engines:
                raise CatalogError(f"catalog entry {where}.known_bad names unknown engine {bad.engine!r}")
    for engine in engines.values():
        for image in engine.images:
            for model_name in image.models:
                if model_name not in models:
                    raise CatalogError(
                        f"catalog entry engines.{engine.name} image {image.image} names unknown model"
                    )
            if image.cuda is not None and image.cuda not in catalog.cuda_driver_minimum:
                raise CatalogError(
                    f"catalog entry engines.{engine.name} image {image.image}: CUDA {image.cuda} "
                    "is missing from cuda_driver_minimum"
                )
        for upgrade in engine.transformers_upgrades:
            for model_name in upgrade.models:
                if model_name not in models:
                    raise CatalogError(
                        f"catalog entry engines.{engine.name}.transformers_upgrades: unknown model"
                    )
    for spec in hardware.values():
        for engine_name in spec.engine_flags:
            if engine_name not in engines:
                raise CatalogError(f"catalog entry hardware.{spec.name}.engine_flags names unknown engine")
        for index, reference in enumerate(spec.benchmark.references):
            where = f"hardware.{spec.name}.benchmark.references[{index}]"
            if reference.model not in models:
                raise CatalogError(f"catalog entry {where} names unknown model {reference.model!r}")
            if reference.engine not in engines:
                raise CatalogError(f"catalog entry {where} names unknown engine {reference.engine!r}")


def _read_yaml(directory: Path | None, filename: str) -> dict[str, Any]:
    if directory is None:
        text = resources.files("glm_deploy").joinpath("catalog", filename).read_text(encoding="utf-8")
        origin = f"glm_deploy/catalog/{filename}"
    else:
        path = directory / filename
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise CatalogError(f"cannot read catalog file {path}: {error.strerror}") from None
        origin = str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise CatalogError(f"catalog file {origin} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise CatalogError(f"catalog file {origin} must hold a mapping at the top")
    return data


def load_catalog(path: Path | None = None) -> Catalog:
    """Load the catalog from the directory `path` (default: the one shipped inside the package)."""
    raw: dict[str, Any] = {}
    for filename in CATALOG_FILES:
        for key, value in _read_yaml(path, filename).items():
            if key.startswith("_"):
                continue  # YAML anchors shared between entries, not data of their own
            raw[key] = value
    top = _Reader(raw, "catalog")
    driver_minimum_reader = top.sub("cuda_driver_minimum")
    cuda_driver_minimum = {
        str(cuda): driver_minimum_reader.integer(cuda) for cuda in driver_minimum_reader.data
    }
    catalog = Catalog(
        models={name: _model(name, entry) for name, entry in top.items("models")},
        engines={name: _engine(name, entry) for name, entry in top.items("engines")},
        hardware={name: _hardware(name, entry) for name, entry in top.items("hardware")},
        cuda_driver_minimum=cuda_driver_minimum,
        raw=raw,
    )
    _check_references(catalog)
    return catalog
