"""Load and validate the catalog of models, engines and hardware (`glm_deploy/catalog/*.yml`).

The YAML files are the only place a flag, an image tag, a size or a GPU count is written. This module turns
them into typed, frozen objects (`catalog_types`, read field by field with `catalog_reader.read_fields`) and checks
that they agree with each other (every model names known engines and hardware, every entry names its source), so a
mistake in the data is a `CatalogError` at load time rather than a strange plan later.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from glm_deploy.catalog_reader import Reader, read_fields
from glm_deploy.catalog_types import (
    BENCHMARK_METRICS,
    ENGINE_KINDS,
    PRECISIONS,
    RUNTIMES,
    VENDORS,
    WARMUP_NEEDS,
    WEIGHTS_PLACEMENTS,
    AcceptanceFloor,
    ApiKeySpec,
    BenchmarkProfile,
    BenchmarkReference,
    Catalog,
    EngineSpec,
    Flags,
    FlagValue,
    HardwareEngineFlags,
    HardwareSpec,
    ImageSpec,
    IndexCacheSpec,
    KnownBad,
    ModelHardware,
    ModelSpec,
    MultiNodeSpec,
    NativeSpec,
    Parsers,
    QualitySpec,
    SharedFilesystemWeights,
    SpeculativeEngine,
    SpeculativeSpec,
    TransformersUpgrade,
    WarmupSpec,
)
from glm_deploy.errors import CatalogError

# The version helpers are read through this module too (commands.catalog).
from glm_deploy.versions import is_version, parse_version, version_at_least, version_matches

# Callers import the catalog's types from here, where the catalog is loaded.
__all__ = [
    "BENCHMARK_METRICS",
    "CATALOG_FILES",
    "ENGINE_KINDS",
    "PRECISIONS",
    "RUNTIMES",
    "VENDORS",
    "WARMUP_NEEDS",
    "AcceptanceFloor",
    "ApiKeySpec",
    "BenchmarkProfile",
    "BenchmarkReference",
    "Catalog",
    "EngineSpec",
    "FlagValue",
    "Flags",
    "HardwareEngineFlags",
    "HardwareSpec",
    "ImageSpec",
    "IndexCacheSpec",
    "KnownBad",
    "ModelHardware",
    "ModelSpec",
    "MultiNodeSpec",
    "NativeSpec",
    "Parsers",
    "QualitySpec",
    "SpeculativeEngine",
    "SpeculativeSpec",
    "TransformersUpgrade",
    "WarmupSpec",
    "is_version",
    "known_bad_for",
    "load_catalog",
    "parse_version",
    "version_at_least",
    "version_matches",
]

CATALOG_FILES = ("models.yml", "engines.yml", "hardware.yml")


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


# ---------------------------------------------------------------------------------------------- engines


def _known_bad(reader: Reader) -> KnownBad:
    version = reader.data.get("version")
    if not isinstance(version, str):
        raise CatalogError(f"catalog entry {reader.where}.version must be a quoted string, got {version!r}")
    return read_fields(KnownBad, reader, version=version)


def _engine(name: str, reader: Reader) -> EngineSpec:
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
    api_key = read_fields(ApiKeySpec, reader.sub("api_key"))
    if api_key.method not in ("env", "config_file"):
        raise CatalogError(
            f"catalog entry {reader.where}.api_key.method must be env or config_file, got {api_key.method!r}"
        )
    multi = reader.opt_sub("multi_node")
    caches_reader = reader.sub("caches")
    caches = {kind_name: caches_reader.str_list(kind_name, required=True) for kind_name in caches_reader.data}
    startup = reader.sub("startup")
    startup.text("source")
    images = tuple(read_fields(ImageSpec, image) for image in reader.entries("images"))
    native_reader = reader.opt_sub("native")
    native = read_fields(NativeSpec, native_reader) if native_reader is not None else None
    if "native" in runtimes and native is None:
        raise CatalogError(f"catalog entry {reader.where} runs natively but has no `native:` section")
    if "container" in runtimes and not images:
        raise CatalogError(f"catalog entry {reader.where} runs in containers but lists no images")
    reader.text("launcher_source")
    reader.text("flag_names_source")
    reader.text("caches_source")
    warmup_reader = reader.opt_sub("warmup")
    return read_fields(
        EngineSpec,
        reader,
        name=name,
        flag_names=flag_names,
        api_key=api_key,
        multi_node=read_fields(MultiNodeSpec, multi) if multi is not None else None,
        caches=caches,
        startup_base_s=startup.integer("base_s"),
        startup_jit_s=startup.integer("jit_s"),
        images=images,
        known_bad=tuple(_known_bad(entry) for entry in reader.entries("known_bad")),
        transformers_upgrades=tuple(
            read_fields(TransformersUpgrade, upgrade) for upgrade in reader.entries("transformers_upgrades")
        ),
        native=native,
        warmup=_warmup(warmup_reader, flag_names, caches) if warmup_reader is not None else None,
    )


def _warmup(
    reader: Reader, flag_names: Mapping[str, str | None], caches: Mapping[str, tuple[str, ...]]
) -> WarmupSpec:
    needs = reader.text("needs")
    if needs not in WARMUP_NEEDS:
        raise CatalogError(f"catalog entry {reader.where}.needs is {needs!r}; known: {', '.join(WARMUP_NEEDS)}")
    spec = read_fields(WarmupSpec, reader)
    for key in spec.drop_flags:
        if key not in flag_names:
            raise CatalogError(
                f"catalog entry {reader.where}.drop_flags names {key!r}, which is not a key of the engine's "
                f"flag_names ({', '.join(flag_names)})"
            )
    for kind in spec.caches:
        if kind not in caches:
            raise CatalogError(
                f"catalog entry {reader.where}.caches names {kind!r}, which is not one of the engine's caches "
                f"({', '.join(caches)})"
            )
    if spec.launcher and (spec.host is None or spec.port is None or not spec.timeout_s or spec.timeout_s <= 0):
        raise CatalogError(
            f"catalog entry {reader.where} has a launcher, so it needs host, port and a positive timeout_s "
            "(the precompile command starts a server of its own)"
        )
    if not spec.launcher and not spec.env:
        raise CatalogError(
            f"catalog entry {reader.where} has neither a launcher (a precompile command) nor env (settings that "
            "make the first start compile everything): it would warm nothing"
        )
    return spec


# ---------------------------------------------------------------------------------------------- hardware


def _positive(reader: Reader, key: str) -> int:
    value = reader.integer(key)
    if value <= 0:
        raise CatalogError(f"catalog entry {reader.where}.{key} must be a positive integer, got {value}")
    return value


def _benchmark_reference(reader: Reader) -> BenchmarkReference:
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
    return read_fields(BenchmarkReference, reader, metrics=metrics)


def _benchmark(reader: Reader) -> BenchmarkProfile:
    profile = read_fields(
        BenchmarkProfile,
        reader,
        input_len=_positive(reader, "input_len"),
        output_len=_positive(reader, "output_len"),
        num_prompts=_positive(reader, "num_prompts"),
        max_concurrency=_positive(reader, "max_concurrency"),
        references=tuple(_benchmark_reference(entry) for entry in reader.entries("references")),
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


def _hardware(name: str, reader: Reader) -> HardwareSpec:
    vendor = reader.text("vendor")
    if vendor not in VENDORS:
        raise CatalogError(
            f"catalog entry {reader.where}.vendor is {vendor!r}; known vendors: {', '.join(VENDORS)}"
        )
    for pattern in reader.str_list("gpu_name_patterns"):
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
        engine_flags[engine_name] = read_fields(HardwareEngineFlags, flags_reader, by_precision=by_precision)
    spec = read_fields(
        HardwareSpec,
        reader,
        name=name,
        engine_flags=engine_flags,
        benchmark=_benchmark(reader.sub("benchmark")),
    )
    if spec.lambda_instance_types and not spec.lambda_instance_types_source:
        raise CatalogError(
            f"catalog entry {reader.where} lists lambda_instance_types but no lambda_instance_types_source: "
            "name where the instance type names come from"
        )
    return spec


# ---------------------------------------------------------------------------------------------- models


# A question set's name becomes a file name on the host: letters, digits, dots, dashes.
_QUESTION_SET = re.compile(r"[a-z0-9][a-z0-9.-]{0,63}")


def _quality(reader: Reader) -> QualitySpec:
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
        acceptance = read_fields(
            AcceptanceFloor, acceptance_reader, min_acceptance_length=length, min_acceptance_rate=rate
        )
    return read_fields(
        QualitySpec, reader, question_set=question_set, floor=floor, max_drop_points=drop, acceptance=acceptance
    )


def _speculative(reader: Reader) -> SpeculativeSpec:
    engines = {
        engine_name: read_fields(SpeculativeEngine, reader.sub(engine_name))
        for engine_name in reader.data
        if engine_name not in ("default", "unsupported_reason", "unsupported_hardware", "source")
    }
    speculative = read_fields(SpeculativeSpec, reader, engines=engines)
    if not engines and speculative.unsupported_reason is None:
        raise CatalogError(f"catalog entry {reader.where} names no engine and no unsupported_reason")
    return speculative


def _model(name: str, reader: Reader) -> ModelSpec:
    precision = reader.text("precision")
    if precision not in PRECISIONS:
        raise CatalogError(
            f"catalog entry {reader.where}.precision is {precision!r}; known: {', '.join(PRECISIONS)}"
        )
    speculative = _speculative(reader.sub("speculative"))
    index_cache = read_fields(IndexCacheSpec, reader.sub("index_cache"))
    hardware: dict[str, ModelHardware] = {}
    for hardware_name, entry in reader.items("hardware"):
        profile = read_fields(ModelHardware, entry)
        if profile.unsupported is None and (profile.gpus is None or profile.nodes is None):
            raise CatalogError(f"catalog entry {entry.where} needs gpus and nodes, or unsupported: <why>")
        hardware[hardware_name] = profile
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
    return read_fields(
        ModelSpec,
        reader,
        name=name,
        min_engine_versions=min_versions,
        known_bad=tuple(_known_bad(entry) for entry in reader.entries("known_bad")),
        parsers=read_fields(Parsers, reader.sub("parsers")),
        speculative=speculative,
        index_cache=index_cache,
        dp_attention_args=dp_args,
        sampling=dict(sampling),
        hardware=hardware,
        quality=_quality(reader.sub("quality")),
    )


# ---------------------------------------------------------------------------------------------- the whole catalog


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
    lambda_types: dict[str, str] = {}
    for spec in hardware.values():
        for instance_type in spec.lambda_instance_types:
            if instance_type in lambda_types:
                raise CatalogError(
                    f"catalog entry hardware.{spec.name}.lambda_instance_types lists {instance_type!r}, which "
                    f"hardware.{lambda_types[instance_type]} lists too: a Lambda instance type is one hardware"
                )
            lambda_types[instance_type] = spec.name
        for engine_name in spec.engine_flags:
            if engine_name not in engines:
                raise CatalogError(f"catalog entry hardware.{spec.name}.engine_flags names unknown engine")
        for index, reference in enumerate(spec.benchmark.references):
            where = f"hardware.{spec.name}.benchmark.references[{index}]"
            if reference.model not in models:
                raise CatalogError(f"catalog entry {where} names unknown model {reference.model!r}")
            if reference.engine not in engines:
                raise CatalogError(f"catalog entry {where} names unknown engine {reference.engine!r}")


def _shared_filesystem_weights(reader: Reader) -> SharedFilesystemWeights:
    spec = read_fields(SharedFilesystemWeights, reader)
    if spec.placement not in WEIGHTS_PLACEMENTS:
        raise CatalogError(
            f"catalog entry {reader.where}.placement is {spec.placement!r}; built: {', '.join(WEIGHTS_PLACEMENTS)}"
        )
    parts = spec.hf_home_folder.split("/")
    if not all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", part) for part in parts):
        raise CatalogError(
            f"catalog entry {reader.where}.hf_home_folder {spec.hf_home_folder!r} must be a relative folder of "
            "letters, digits and ._- (no '..', no leading '/')"
        )
    return spec


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
    top = Reader(raw, "catalog")
    driver_minimum_reader = top.sub("cuda_driver_minimum")
    cuda_driver_minimum = {
        str(cuda): driver_minimum_reader.integer(cuda) for cuda in driver_minimum_reader.data
    }
    catalog = Catalog(
        models={name: _model(name, entry) for name, entry in top.items("models")},
        engines={name: _engine(name, entry) for name, entry in top.items("engines")},
        hardware={name: _hardware(name, entry) for name, entry in top.items("hardware")},
        cuda_driver_minimum=cuda_driver_minimum,
        shared_filesystem_weights=_shared_filesystem_weights(top.sub("shared_filesystem_weights")),
        raw=raw,
    )
    _check_references(catalog)
    return catalog
