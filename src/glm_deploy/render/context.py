"""The catalog entries a plan is rendered from, looked up by name and checked to work together.

`RenderContext` holds them for the rendering steps (`engine`, `jit`, `renderer`), with the warnings and the
explanations each step adds. The checks here refuse a model, engine, hardware, node count or engine version that
cannot work, naming the input, the value and what would.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from glm_deploy.catalog import Catalog, EngineSpec, HardwareSpec, ModelSpec, known_bad_for
from glm_deploy.errors import CatalogError, InputError
from glm_deploy.render.options import PlanOptions
from glm_deploy.validation import clip
from glm_deploy.versions import is_version, version_at_least

_T = TypeVar("_T")

# Lambda's B200 images ship driver 570 (CUDA 12.8) [facts, seed 004]: the safe guess until preflight reports
# the host's own CUDA version through the option `cuda_version`.
ASSUMED_HOST_CUDA = "12.8"


def present(value: _T | None, what: str) -> _T:
    """A value the catalog loader guarantees; its absence is a bug in the catalog, not in the user's input."""
    if value is None:
        raise CatalogError(f"catalog inconsistency: {what} is missing")
    return value


def known(names: Sequence[str]) -> str:
    return ", ".join(names)


def _lookup(
    catalog: Catalog, model: str, engine: str, hardware: str
) -> tuple[ModelSpec, EngineSpec, HardwareSpec]:
    if model not in catalog.models:
        raise InputError(f"unknown model {clip(model)}", hint=f"known models: {known(list(catalog.models))}")
    if engine not in catalog.engines:
        raise InputError(f"unknown engine {clip(engine)}", hint=f"known engines: {known(list(catalog.engines))}")
    if hardware not in catalog.hardware:
        raise InputError(
            f"unknown hardware {clip(hardware)}", hint=f"known hardware: {known(list(catalog.hardware))}"
        )
    return catalog.models[model], catalog.engines[engine], catalog.hardware[hardware]


def _hardware_with(catalog: Catalog, model: ModelSpec, engine: str | None = None) -> list[str]:
    return [
        name
        for name, profile in model.hardware.items()
        if profile.unsupported is None and (engine is None or engine in catalog.hardware[name].engine_flags)
    ]


def _check_pairing(catalog: Catalog, model: ModelSpec, engine: EngineSpec, hardware: HardwareSpec) -> None:
    if engine.name not in model.engines:
        reason = model.unsupported_engines.get(engine.name)
        raise InputError(
            f"model {model.name!r} cannot run on engine {engine.name!r}" + (f": {reason}" if reason else ""),
            hint=f"engines for {model.name}: {known(model.engines)}",
        )
    if model.precision == "nvfp4" and not (hardware.vendor == "nvidia" and hardware.fp4):
        raise InputError(
            f"model {model.name!r} has NVFP4 weights, which need NVIDIA Blackwell FP4 tensor cores; "
            f"hardware {hardware.name!r} ({hardware.display_name}) has none",
            hint=f"use hardware {known(_hardware_with(catalog, model))}, or an FP8 model such as glm-5-fp8",
        )
    if model.precision == "fp8" and not hardware.fp8:
        raise InputError(
            f"model {model.name!r} has FP8 weights; hardware {hardware.name!r} has no FP8 support",
            hint=f"use hardware {known(_hardware_with(catalog, model))}",
        )
    profile = model.hardware.get(hardware.name)
    if profile is None or profile.unsupported is not None:
        reason = profile.unsupported if profile else "the catalog has no configuration for this pair"
        raise InputError(
            f"model {model.name!r} cannot run on hardware {hardware.name!r}: {reason}",
            hint=f"hardware for {model.name}: {known(_hardware_with(catalog, model))}",
        )
    if engine.name not in hardware.engine_flags:
        engines_here = [name for name in hardware.engine_flags if name in model.engines]
        raise InputError(
            f"engine {engine.name!r} has no profile for hardware {hardware.name!r} in the catalog",
            hint=f"engines for {model.name} on {hardware.name}: {known(engines_here) or 'none'}",
        )


def check_nodes(
    catalog: Catalog, model: ModelSpec, hardware: HardwareSpec, engine: EngineSpec, nodes: int | None
) -> int:
    profile = model.hardware[hardware.name]
    needed = present(profile.nodes, f"models.{model.name}.hardware.{hardware.name}.nodes")
    gpus = present(profile.gpus, f"models.{model.name}.hardware.{hardware.name}.gpus")
    if nodes is None:
        nodes = needed
    if nodes < 1:
        raise InputError(f"--nodes must be at least 1, got {nodes}")
    if nodes < needed:
        hint = f"use --nodes {needed}"
        alternative = profile.smaller_alternative
        if alternative:
            alt_profile = catalog.models[alternative].hardware.get(hardware.name)
            if alt_profile and alt_profile.nodes:
                hint += (
                    f", or the smaller model {alternative!r}, which fits on {alt_profile.nodes} node(s) of "
                    f"{hardware.name}"
                )
        raise InputError(
            f"model {model.name!r} on hardware {hardware.name!r} needs {gpus} GPUs: {needed} node(s) of "
            f"{hardware.gpus_per_node}; --nodes {nodes} gives {nodes * hardware.gpus_per_node}",
            hint=hint,
        )
    if nodes > needed:
        raise InputError(
            f"--nodes {nodes} does not fit model {model.name!r} on hardware {hardware.name!r}: the catalog's "
            f"layout uses exactly {needed} node(s) ({gpus} GPUs)",
            hint=f"use --nodes {needed}; for more throughput deploy independent replicas",
        )
    if nodes > 1 and engine.multi_node is None:
        raise InputError(f"engine {engine.name!r} cannot span nodes; the plan needs {nodes}")
    return nodes


def check_version(model: ModelSpec, engine: EngineSpec, version: str, warnings: list[str]) -> None:
    if not is_version(version):
        raise InputError(
            f"engine_version {clip(version)} is not a version",
            hint="give digits and dots, e.g. 0.19.1 or 0.5.10",
        )
    bad = known_bad_for(engine, model, version)
    if bad is not None:
        raise InputError(
            f"{engine.name} {version} is a known-bad version for {model.name}: {bad.reason}",
            hint=f"source: {bad.source}; pick another engine_version",
        )
    minimum = model.min_engine_versions.get(engine.name)
    if minimum is None:
        warnings.append(
            f"no published minimum {engine.name} version for {model.name}; {version} is unchecked"
        )
    elif not version_at_least(version, minimum):
        raise InputError(
            f"{engine.name} {version} is older than {model.name} needs (>= {minimum})",
            hint=f"use engine_version {minimum} or newer, or leave it unset to take the catalog's image",
        )


class RenderContext:
    """One plan being rendered: the catalog entries chosen for it (checked to work together), the user's options,
    and the warnings and explanations gathered on the way."""

    def __init__(
        self, catalog: Catalog, model: str, engine: str, hardware: str, options: PlanOptions
    ) -> None:
        self.catalog = catalog
        self.options = options
        self.model, self.engine, self.hardware = _lookup(catalog, model, engine, hardware)
        _check_pairing(catalog, self.model, self.engine, self.hardware)
        self.profile = self.model.hardware[self.hardware.name]
        self.hardware_flags = self.hardware.engine_flags[self.engine.name]
        self.names = self.engine.flag_names
        self.warnings: list[str] = []
        self.explanations: dict[str, str] = {}
        self.host_cuda = options.cuda_version or ASSUMED_HOST_CUDA

    def runtime(self) -> str:
        """The runtime the user chose, else the engine's first; refused when the engine has no such runtime."""
        runtime = self.options.runtime or self.engine.runtimes[0]
        if runtime not in self.engine.runtimes:
            raise InputError(
                f"runtime {clip(runtime)} is not available for engine {self.engine.name!r}",
                hint=f"runtimes for {self.engine.name}: {known(self.engine.runtimes)}",
            )
        return runtime
