"""The pure renderer: (model, engine, hardware, nodes, options) -> `Plan`.

No I/O happens here: the same function serves `glm-deploy plan`, the `glm.deploy.plan` lookup that playbooks
call, and the tests. Every flag, image and size comes from the catalog; this module only decides which
catalog entries apply and refuses combinations that cannot work, with a message that names the input, the
value and what would work instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from glm_deploy.catalog import (
    Catalog,
    EngineSpec,
    Flags,
    HardwareSpec,
    ImageSpec,
    ModelSpec,
    SpeculativeEngine,
    known_bad_for,
)
from glm_deploy.container_run import container_run_argv
from glm_deploy.errors import CatalogError, InputError
from glm_deploy.images import DriverTooOldError, ImageChoice, NoImageError, choose_image, version_from_tag
from glm_deploy.validation import (
    COMMIT,
    IMAGE_REFERENCE,
    check_host,
    check_one_line,
    check_pattern,
    check_revision,
    clip,
    control_character,
    secret_flag,
)
from glm_deploy.versions import is_version, parse_version, version_at_least, version_matches

_T = TypeVar("_T")

STATE_ROOT = "/var/lib/glm-deploy"
CONFIG_ROOT = "/etc/glm-deploy"
# Lambda's B200 images ship driver 570 (CUDA 12.8) [facts, seed 004]: the safe guess until preflight reports
# the host's own CUDA version through the option `cuda_version`.
ASSUMED_HOST_CUDA = "12.8"
DEFAULT_PORT = 8000
# Matched with fullmatch (validation.check_pattern): `$` would accept a trailing newline.
_SERVED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_TOKEN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
# NCCL_SOCKET_IFNAME / GLOO_SOCKET_IFNAME: interface names or prefixes, `^` (exclude) or `=` (exact) first,
# comma-separated.
_INTERFACE = re.compile(r"[=^]?[A-Za-z0-9_.:-]{1,15}(?:,[=^]?[A-Za-z0-9_.:-]{1,15})*")
_CUDA = re.compile(r"\d+\.\d+")
# Absolute paths written into units, Environment= and --volume SOURCE:TARGET: no whitespace, no ':'.
_PATH = re.compile(r"/[^\s:]{0,4095}")
# No engine flag name comes near these; a longer one is a mistake that would otherwise surface only when the unit
# starts (and fill its error line).
_MAX_FLAG_CHARS = 100
_MAX_ARGUMENT_CHARS = 16384


@dataclass(frozen=True)
class PlanOptions:
    """What a user may choose; `None` means "what the catalog says for this model, engine and hardware"."""

    port: int = DEFAULT_PORT
    host: str = "0.0.0.0"  # noqa: S104 - an endpoint is meant to be reached; the API key and firewall guard it
    served_name: str | None = None
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    mem_fraction: float | None = None
    kv_cache_dtype: str | None = None
    speculative: bool | None = None
    dp_attention: bool = False
    index_cache: bool = False
    extra_args: tuple[str, ...] = ()
    engine_version: str | None = None
    image: str | None = None
    revision: str | None = None
    head_address: str | None = None
    network_interface: str | None = None
    hf_home: str = f"{STATE_ROOT}/hf"
    cache_root: str = f"{STATE_ROOT}/cache"
    runtime: str | None = None
    api_key_required: bool = True
    cuda_version: str | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> PlanOptions:
        """Build options from a plain mapping (inventory `glm_options`, JSON), checking names and types."""
        if not data:
            return cls()
        known = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for name, value in data.items():
            if name not in known:
                raise InputError(
                    f"unknown plan option {clip(name)}",
                    hint=f"known options: {', '.join(sorted(known))}",
                )
            if value is None:
                continue
            values[name] = _coerce_option(name, value)
        return cls(**values)


_INT_OPTIONS = ("port", "max_model_len", "max_num_seqs")
_BOOL_OPTIONS = ("speculative", "dp_attention", "index_cache", "api_key_required")
_FLOAT_OPTIONS = ("mem_fraction",)


def _coerce_option(name: str, value: Any) -> Any:
    if name in _INT_OPTIONS:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise InputError(f"option {name} must be an integer, got {clip(value)}")
        try:
            return int(value)
        except ValueError:
            raise InputError(f"option {name} must be an integer, got {clip(value)}") from None
    if name in _BOOL_OPTIONS:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "false", "no", "off"):
            return value.lower() in ("true", "yes", "on")
        raise InputError(f"option {name} must be true or false, got {clip(value)}")
    if name in _FLOAT_OPTIONS:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise InputError(f"option {name} must be a number, got {clip(value)}")
        try:
            return float(value)
        except ValueError:
            raise InputError(f"option {name} must be a number, got {clip(value)}") from None
    if name == "extra_args":
        if isinstance(value, str):
            return tuple(shlex.split(value))
        if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
            return tuple(value)
        raise InputError(f"option extra_args must be a list of strings, got {clip(value)}")
    if not isinstance(value, str):
        raise InputError(f"option {name} must be a string, got {clip(value)}")
    return value


@dataclass(frozen=True)
class NodePlan:
    rank: int
    role: str  # "head" or "worker"
    argv: list[str]
    env: dict[str, str]


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool


@dataclass(frozen=True)
class ContainerSpec:
    image: str
    entrypoint: str
    env: dict[str, str]
    env_file: str | None
    mounts: list[Mount]
    ipc: str
    shm_size: str
    network: str
    gpus: str | None
    devices: list[str]
    group_add: list[str]


@dataclass(frozen=True)
class SecretFile:
    """A file the server role writes (mode 0600, owner root) holding one secret under `key`."""

    path: str
    format: str
    key: str
    secret: str  # which secret: "api_key"


@dataclass(frozen=True)
class Explanation:
    flag: str
    why: str


@dataclass(frozen=True)
class Warmup:
    """The JIT warm-up of a plan whose kernels compile at run time (DeepGEMM's FP8 GEMMs).

    `nodes[rank]` is the precompile command the server role runs on that node before the cut-over, with the
    server's own flags, while the plan's caches are cold; `nodes` is None when the engine has no such command and
    its first start is the warm-up (`env`, also in every node's environment, tells it to compile everything before
    it serves). `caches` are the cache kinds it fills, `cache_dirs` their directories (keys of `Plan.cache_kinds`).
    """

    kind: str  # "command" (a precompile step before the cut-over) or "first_start"
    nodes: list[list[str]] | None
    env: dict[str, str]
    caches: list[str]
    cache_dirs: list[str]
    timeout_s: int | None
    why: str
    source: str


@dataclass(frozen=True)
class Plan:
    model: str
    model_display_name: str
    engine: str
    engine_version: str | None
    hardware: str
    runtime: str
    image: str | None
    image_build: dict[str, Any] | None
    native: dict[str, Any] | None
    served_model_name: str
    unit_name: str
    host: str
    port: int
    model_repo: str
    model_revision: str
    revision_pinned: bool
    model_architecture: str
    model_type: str
    min_transformers: str
    node_count: int
    gpus_per_node: int
    tensor_parallel: int
    pipeline_parallel: int
    speculative: bool
    nodes: list[NodePlan]
    container: ContainerSpec | None
    cache_env: dict[str, str]
    cache_dirs: list[str]
    secret_env: list[str]
    secret_files: list[SecretFile]
    env_file: str
    start_timeout_s: int
    disk_bytes: int
    sampling: dict[str, Any]
    # The workload for `vllm bench serve` (glm.deploy.benchmark): input_len, output_len, num_prompts,
    # max_concurrency, and `reference` + `reference_source` only where a result of that shape is published.
    benchmark: dict[str, Any]
    explanations: list[Explanation]
    warnings: list[str]
    # The engine's JIT cache directories by kind (deep_gemm, inductor, ...): `cache_dirs` without the HF home.
    cache_kinds: dict[str, str] = dataclasses.field(default_factory=dict)
    warmup: Warmup | None = None
    # The accuracy gate (glm.deploy.quality_gate): the model's question set, floor, allowed drop and, when the plan
    # turns speculative decoding on, the acceptance floor and which engine's metrics to read.
    quality: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def command(self, rank: int) -> list[str]:
        """The whole command node `rank` runs: its unit's `docker run` (glm_deploy.container_run, the argv the
        server unit's ExecStart runs, with the role's default docker CLI), or the native engine with its
        environment."""
        node = self.nodes[rank]
        if self.container is None:
            env_words = [f"{name}={value}" for name, value in sorted(node.env.items())]
            return ["env", *env_words, *node.argv]
        plan = self.to_dict()
        return container_run_argv(plan, node=plan["nodes"][rank], env_file=self.env_file)

    def shell_command(self, rank: int) -> str:
        """`command(rank)` quoted for a POSIX shell, one option per line."""
        lines: list[str] = []
        for word in self.command(rank):
            quoted = shlex.quote(word)
            # A new line for every option and every VAR=value; values and positionals follow their option.
            starts_line = word.startswith("-") or (self.container is None and "=" in word)
            if lines and not starts_line and not (self.container is None and "=" in lines[-1]):
                lines[-1] = f"{lines[-1]} {quoted}"
            else:
                lines.append(quoted)
        return " \\\n    ".join(lines)


# ---------------------------------------------------------------------------------------------- helpers


def _present(value: _T | None, what: str) -> _T:
    """A value the catalog loader guarantees; its absence is a bug in the catalog, not in the user's input."""
    if value is None:
        raise CatalogError(f"catalog inconsistency: {what} is missing")
    return value


def _known(names: Sequence[str]) -> str:
    return ", ".join(names)


def _lookup(
    catalog: Catalog, model: str, engine: str, hardware: str
) -> tuple[ModelSpec, EngineSpec, HardwareSpec]:
    if model not in catalog.models:
        raise InputError(f"unknown model {clip(model)}", hint=f"known models: {_known(list(catalog.models))}")
    if engine not in catalog.engines:
        raise InputError(f"unknown engine {clip(engine)}", hint=f"known engines: {_known(list(catalog.engines))}")
    if hardware not in catalog.hardware:
        raise InputError(
            f"unknown hardware {clip(hardware)}", hint=f"known hardware: {_known(list(catalog.hardware))}"
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
            hint=f"engines for {model.name}: {_known(model.engines)}",
        )
    if model.precision == "nvfp4" and not (hardware.vendor == "nvidia" and hardware.fp4):
        raise InputError(
            f"model {model.name!r} has NVFP4 weights, which need NVIDIA Blackwell FP4 tensor cores; "
            f"hardware {hardware.name!r} ({hardware.display_name}) has none",
            hint=f"use hardware {_known(_hardware_with(catalog, model))}, or an FP8 model such as glm-5-fp8",
        )
    if model.precision == "fp8" and not hardware.fp8:
        raise InputError(
            f"model {model.name!r} has FP8 weights; hardware {hardware.name!r} has no FP8 support",
            hint=f"use hardware {_known(_hardware_with(catalog, model))}",
        )
    profile = model.hardware.get(hardware.name)
    if profile is None or profile.unsupported is not None:
        reason = profile.unsupported if profile else "the catalog has no configuration for this pair"
        raise InputError(
            f"model {model.name!r} cannot run on hardware {hardware.name!r}: {reason}",
            hint=f"hardware for {model.name}: {_known(_hardware_with(catalog, model))}",
        )
    if engine.name not in hardware.engine_flags:
        engines_here = [name for name in hardware.engine_flags if name in model.engines]
        raise InputError(
            f"engine {engine.name!r} has no profile for hardware {hardware.name!r} in the catalog",
            hint=f"engines for {model.name} on {hardware.name}: {_known(engines_here) or 'none'}",
        )


def _check_nodes(
    catalog: Catalog, model: ModelSpec, hardware: HardwareSpec, engine: EngineSpec, nodes: int | None
) -> int:
    profile = model.hardware[hardware.name]
    needed = _present(profile.nodes, f"models.{model.name}.hardware.{hardware.name}.nodes")
    gpus = _present(profile.gpus, f"models.{model.name}.hardware.{hardware.name}.gpus")
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


def _check_version(model: ModelSpec, engine: EngineSpec, version: str, warnings: list[str]) -> None:
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


def _select_image(
    catalog: Catalog,
    model: ModelSpec,
    engine: EngineSpec,
    hardware: HardwareSpec,
    *,
    wanted_version: str | None,
    host_cuda: str,
) -> tuple[ImageSpec, ImageChoice]:
    """The catalog image to run (`images.choose_image`, the one preflight checks hosts with)."""
    try:
        choice = choose_image(
            catalog,
            engine.name,
            driver_version=None,
            engine_version=wanted_version,
            explicit_image=None,
            model=model.name,
            vendor=hardware.vendor,
            gpu_arch=hardware.arch if hardware.vendor == "amd" else None,
            host_cuda=host_cuda if hardware.vendor == "nvidia" else None,
        )
    except NoImageError as error:
        versions = sorted({i.version for i in engine.images if i.version}, key=parse_version)
        wanted = f" version {wanted_version}" if wanted_version else ""
        hint = (
            f"catalog versions: {_known(versions) or 'none'}; or pass option image=<repo:tag> "
            "(and cuda_version=<host CUDA> if the host driver is newer)"
        )
        if isinstance(error, DriverTooOldError):
            raise InputError(
                f"the catalog has no {engine.name}{wanted} image for {model.name} on {hardware.name} "
                f"(host CUDA {host_cuda}): {error.message}",
                hint=f"{error.hint}; {hint}" if error.hint else hint,
            ) from error
        raise InputError(
            f"the catalog has no {engine.name}{wanted} image for {model.name} on {hardware.name} "
            f"(host CUDA {host_cuda})",
            hint=hint,
        ) from error
    return _present(choice.spec, f"engines.{engine.name} image {choice.image}"), choice


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")


def _argv_from_flags(flags: Flags) -> list[str]:
    argv: list[str] = []
    for flag, value in flags.items():
        if value is False:
            continue
        argv.append(flag)
        if value is not True:
            argv.append(value)
    return argv


def _replace_flags(argv: Sequence[str], replace: Mapping[str, str | None]) -> list[str]:
    """`argv` with the value of each flag in `replace` swapped (or the flag and its value dropped for None)."""
    words: list[str] = []
    index = 0
    while index < len(argv):
        word = argv[index]
        if word in replace:
            value = replace[word]
            if value is not None:
                words += [word, value]
            index += 2  # every replaceable flag takes a value (host, port, name, config file)
            continue
        words.append(word)
        index += 1
    return words


def _extra_flag_names(extra_args: Sequence[str]) -> list[str]:
    return [arg.split("=", 1)[0] for arg in extra_args if arg.startswith("--")]


def normalised_flag_is(argument: str, flag: str) -> bool:
    """Whether `argument` sets `flag` in any spelling the engines accept (`_` for `-`, `--flag=value`)."""
    return argument.startswith("--") and argument.split("=", 1)[0].replace("_", "-").lower() == flag


def _check_text_options(options: PlanOptions) -> None:
    """Refuse control characters in every text option and extra argument, before any other check reads them.

    Every option's text reaches a unit, an env file or a command line, and systemd ends a unit-file line at LF, CR
    and NUL: one such character would let a value add directives of its own. Walking all fields keeps an option
    added later covered too.
    """
    for field in dataclasses.fields(options):
        value = getattr(options, field.name)
        if isinstance(value, str):
            check_one_line(field.name, value)
        elif isinstance(value, tuple):
            for item in value:
                check_one_line(field.name, str(item))


def _check_rendered_text(plan_words: Sequence[str], what: str) -> None:
    """The second wall: what the catalog put into the plan holds no control character either."""
    for word in plan_words:
        found = control_character(word)
        if found is not None:
            raise CatalogError(f"catalog inconsistency: {what} {clip(word)} holds the control character {found}")


def _format_fraction(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".") if value != 1 else "1.0"


# ---------------------------------------------------------------------------------------------- render


@dataclass
class _EngineBuild:
    """What runs the engine: a catalog image, a user's image, or a native venv."""

    image: str | None = None
    image_spec: ImageSpec | None = None
    engine_version: str | None = None
    image_build: dict[str, Any] | None = None
    native: dict[str, Any] | None = None
    # What the chosen image needs in its container on this host (NVIDIA_DISABLE_REQUIRE under minor compat).
    image_env: dict[str, str] = dataclasses.field(default_factory=dict)


class _Renderer:
    """One plan being rendered: the chosen catalog entries, and the warnings and reasons gathered."""

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

    # ------------------------------------------------------------------ checks

    def runtime(self) -> str:
        runtime = self.options.runtime or self.engine.runtimes[0]
        if runtime not in self.engine.runtimes:
            raise InputError(
                f"runtime {clip(runtime)} is not available for engine {self.engine.name!r}",
                hint=f"runtimes for {self.engine.name}: {_known(self.engine.runtimes)}",
            )
        return runtime

    def check_options(self) -> tuple[str, list[str]]:
        """Refuse option values that cannot work; return the served name and the flags extra_args sets."""
        options, model, engine = self.options, self.model, self.engine
        if not 1 <= options.port <= 65535:
            raise InputError(
                f"port {options.port} is out of range", hint="use a TCP port between 1 and 65535"
            )
        served_name = options.served_name or model.name
        check_pattern(
            "served_name",
            served_name,
            _SERVED_NAME,
            "usable as a model and unit name",
            "use letters, digits, '.', '_' and '-' (at most 63, starting with a letter or digit)",
        )
        check_host("host", options.host)
        if options.mem_fraction is not None and not 0 < options.mem_fraction <= 1:
            raise InputError(
                f"mem_fraction {options.mem_fraction} is out of range",
                hint="use a number in (0, 1], e.g. 0.85",
            )
        if options.max_model_len is not None and not 0 < options.max_model_len <= model.context_length:
            raise InputError(
                f"max_model_len {options.max_model_len} does not fit {model.name}",
                hint=f"use a length between 1 and the model's context length {model.context_length}",
            )
        if options.max_num_seqs is not None and options.max_num_seqs < 1:
            raise InputError(f"max_num_seqs {options.max_num_seqs} must be at least 1")
        if options.network_interface is not None:
            check_pattern(
                "network_interface",
                options.network_interface,
                _INTERFACE,
                "a plain interface name or list",
                "an interface name or prefix such as eth1, or a list such as ^docker,lo",
            )
        if options.head_address is not None:
            check_host("head_address", options.head_address)
        if options.cuda_version is not None:
            check_pattern("cuda_version", options.cuda_version, _CUDA, "MAJOR.MINOR", "e.g. 12.8 or 13.0")
        for name, path in (("hf_home", options.hf_home), ("cache_root", options.cache_root)):
            check_pattern(name, path, _PATH, "an absolute path without whitespace or ':'")
        if options.kv_cache_dtype is not None:
            check_pattern(
                "kv_cache_dtype", options.kv_cache_dtype, _TOKEN, "a dtype name", "e.g. auto, fp8, fp8_e4m3"
            )
        if options.image is not None:
            check_pattern(
                "image",
                options.image,
                IMAGE_REFERENCE,
                "an image reference",
                "e.g. vllm/vllm-openai:v0.19.1 or registry:5000/name@sha256:<digest>",
            )
        for option_name, key in (
            ("mem_fraction", "mem_fraction"),
            ("kv_cache_dtype", "kv_cache_dtype"),
            ("max_num_seqs", "max_num_seqs"),
        ):
            if getattr(options, option_name) is not None and not self.names.get(key):
                raise InputError(
                    f"option {option_name} does not apply to engine {engine.name}",
                    hint="the hardware profile sizes it (e.g. VLLM_CPU_KVCACHE_SPACE on the CPU engine)",
                )
        if options.dp_attention and engine.kind != "sglang":
            raise InputError(
                f"option dp_attention is an SGLang feature; engine {engine.name!r} has no DP attention",
                hint="use --engine sglang, or drop dp_attention",
            )
        index_cache = model.index_cache
        if options.index_cache and not (index_cache.supported and engine.name in index_cache.engines):
            reason = index_cache.reason or f"it is published for {_known(index_cache.engines)} only"
            raise InputError(
                f"option index_cache is not available for {model.name} on {engine.name}: {reason}",
                hint="drop index_cache",
            )
        for argument in options.extra_args:
            flag_name = argument.split("=", 1)[0] if argument.startswith("--") else ""
            if len(flag_name) > _MAX_FLAG_CHARS or len(argument) > _MAX_ARGUMENT_CHARS:
                raise InputError(
                    f"extra_args {clip(argument)} is longer than an engine flag or value can be",
                    hint=f"flag names up to {_MAX_FLAG_CHARS} characters, arguments up to {_MAX_ARGUMENT_CHARS}",
                )
            secret = secret_flag(argument)
            if secret is not None or normalised_flag_is(argument, "--config"):
                raise InputError(
                    f"extra_args must not carry {clip(argument.split('=', 1)[0], 40, quote=False)} "
                    f"({secret or '--config'}): secrets never go on a command line",
                    hint="the API key comes from glm_api_key (an EnvironmentFile / config file of mode 0600)",
                )
        extra_flags = _extra_flag_names(options.extra_args)
        for flag in extra_flags:
            if flag.startswith("--speculative"):
                raise InputError(
                    f"extra_args sets {clip(flag, 40, quote=False)}, "
                    "which conflicts with the catalog's speculative decoding",
                    hint="use the option speculative (true/false) instead",
                )
        return served_name, extra_flags

    # ------------------------------------------------------------------ engine build

    def engine_build(self, runtime: str) -> _EngineBuild:
        options, model, engine = self.options, self.model, self.engine
        build = _EngineBuild(engine_version=options.engine_version)
        if build.engine_version is not None:
            _check_version(model, engine, build.engine_version, self.warnings)
        if runtime == "native":
            self._native(build)
        elif options.image is not None:
            self._users_image(build, options.image)
        else:
            self._catalog_image(build)
        if build.image is not None and build.engine_version is not None:
            self._transformers_upgrade(build, build.image, build.engine_version)
        return build

    def _native(self, build: _EngineBuild) -> None:
        native = _present(self.engine.native, f"engines.{self.engine.name}.native")
        if self.options.image is not None:
            raise InputError(f"option image does not apply to the native runtime of {self.engine.name}")
        if build.engine_version is not None and build.engine_version != native.version:
            raise InputError(
                f"engine_version {build.engine_version} is not in the catalog for {self.engine.name}",
                hint=f"the catalog installs {native.package}=={native.version}",
            )
        if build.engine_version is None:
            build.engine_version = native.version
            _check_version(self.model, self.engine, native.version, self.warnings)
        venv = f"{self.engine.name}-{native.version}"
        build.native = {
            "venv": venv,
            "venv_path": f"{STATE_ROOT}/venvs/{venv}",
            "package": native.package,
            "version": native.version,
            "requirement": f"{native.package}=={native.version}",
            "python": native.python,
            "remove_packages": list(native.remove_packages),
            "system_packages": list(native.system_packages),
            "needs_vllm_dist_info": native.needs_vllm_dist_info,
            "source": native.source,
        }

    def _users_image(self, build: _EngineBuild, image: str) -> None:
        build.image = image
        if build.engine_version is None:
            build.engine_version = version_from_tag(image)
            if build.engine_version is not None:
                _check_version(self.model, self.engine, build.engine_version, self.warnings)
            else:
                self.warnings.append(
                    f"image {image} is not from the catalog and its tag names no version: "
                    "no minimum or known-bad check was possible; pass engine_version"
                )
        self.warnings.append(f"image {image} is not from the catalog: its CUDA/driver fit is unchecked")

    def _catalog_image(self, build: _EngineBuild) -> None:
        spec, choice = _select_image(
            self.catalog,
            self.model,
            self.engine,
            self.hardware,
            wanted_version=build.engine_version,
            host_cuda=self.host_cuda,
        )
        build.image_spec, build.image, build.image_env = spec, spec.image, dict(choice.env)
        if build.engine_version is None and spec.version is not None:
            build.engine_version = spec.version
            _check_version(self.model, self.engine, spec.version, self.warnings)
        self.warnings.extend(choice.warnings)
        if "UNVERIFIED" in spec.source:
            self.warnings.append(f"image {spec.image}: {spec.source}")
        if self.hardware.vendor == "nvidia" and self.options.cuda_version is None:
            self.warnings.append(
                f"host CUDA version assumed {ASSUMED_HOST_CUDA} (Lambda's driver 570); preflight passes "
                "the real one as option cuda_version"
            )

    def _transformers_upgrade(self, build: _EngineBuild, image: str, version: str) -> None:
        for upgrade in self.engine.transformers_upgrades:
            if self.model.name not in upgrade.models:
                continue
            if not any(version_matches(pattern, version) for pattern in upgrade.versions):
                continue
            derived = (
                f"localhost/glm-deploy/{_slug(image.rsplit('/', maxsplit=1)[-1])}-"
                f"{_slug(upgrade.requirement)}".lower()
            )
            build.image_build = {
                "base": image,
                "pip": [upgrade.requirement],
                "image": derived,
                "source": upgrade.source,
            }
            self.warnings.append(
                f"{self.engine.name} {version} needs {upgrade.requirement} for {self.model.name}: "
                f"the engine role builds {derived} from {image}"
            )
            build.image = derived

    # ------------------------------------------------------------------ layout and speculative decoding

    def layout(self, node_count: int) -> tuple[int, int, int]:
        """(tensor parallel, pipeline parallel, GPUs per node)."""
        gpus = _present(self.profile.gpus, f"models.{self.model.name}.hardware.{self.hardware.name}.gpus")
        multi = self.engine.multi_node
        if (
            node_count > 1
            and multi is not None
            and multi.layout == "tensor_parallel_per_node_pipeline_across_nodes"
        ):
            return gpus // node_count, node_count, gpus // node_count
        # A CPU plan has no GPUs; it still runs one engine process.
        return max(gpus, 1), 1, gpus // node_count

    def speculative(self) -> SpeculativeEngine | None:
        """The speculative configuration to apply, or None when it is off."""
        spec, wanted = self.model.speculative, self.options.speculative
        engine_config = spec.engines.get(self.engine.name)
        vendor_reason = spec.unsupported_hardware.get(self.hardware.vendor)
        if wanted:
            if spec.unsupported_reason:
                raise InputError(
                    f"option speculative is not available for {self.model.name}: {spec.unsupported_reason}",
                    hint="drop speculative or set it false",
                )
            if vendor_reason:
                raise InputError(
                    f"option speculative is not available on hardware {self.hardware.name}: {vendor_reason}",
                    hint="set speculative false",
                )
            if engine_config is None:
                raise InputError(
                    f"option speculative: the catalog has no {self.engine.name} speculative configuration "
                    f"for {self.model.name}",
                    hint=f"engines with one: {_known(list(spec.engines)) or 'none'}; "
                    "or set speculative false",
                )
            return engine_config
        if wanted is None and spec.default:
            if vendor_reason:
                self.warnings.append(f"speculative decoding left off: {vendor_reason}")
                return None
            return engine_config
        return None

    # ------------------------------------------------------------------ flags

    def revision(self) -> tuple[str, bool]:
        revision = check_revision("revision", self.options.revision or self.model.revision)
        pinned = bool(COMMIT.fullmatch(revision))
        if not pinned:
            self.warnings.append(
                f"revision {revision!r} of {self.model.hf_repo} is a branch or tag, not a 40-hex commit: "
                "the weights can change under a redeploy; pin it with option revision=<commit>"
            )
        return revision, pinned

    def flags(
        self,
        revision: str,
        tensor_parallel: int,
        pipeline_parallel: int,
        speculative: SpeculativeEngine | None,
    ) -> tuple[Flags, dict[str, str]]:
        """The flags every node shares, in the order a person reads them, and the environment they need."""
        model, engine, names, why = self.model, self.engine, self.names, self.explanations
        flags: Flags = {}
        if names.get("model"):
            flags[str(names["model"])] = model.hf_repo
        flags[str(names["revision"])] = revision
        tokenizer_revision_flag = names.get("tokenizer_revision")
        if tokenizer_revision_flag:
            flags[tokenizer_revision_flag] = revision
            why[tokenizer_revision_flag] = (
                "the tokenizer comes from the same snapshot as the weights; left unset, it would follow the "
                "default branch, which the offline cache may not hold"
            )
        tp_flag = names.get("tensor_parallel")
        if tp_flag:
            flags[tp_flag] = str(tensor_parallel)
            why[tp_flag] = (
                f"{self.profile.gpus} GPUs hold {model.display_name} on {self.hardware.name} "
                f"({self.profile.source})"
            )
        pp_flag = names.get("pipeline_parallel")
        if pp_flag and pipeline_parallel > 1:
            flags[pp_flag] = str(pipeline_parallel)
            why[pp_flag] = "one pipeline stage per node; tensor parallelism stays inside a node's NVLink"
        for key, parser in (
            ("tool_parser", model.parsers.tool),
            ("reasoning_parser", model.parsers.reasoning),
        ):
            parser_flag = names.get(key)
            if parser_flag and parser:
                flags[parser_flag] = parser
        # Auto tool choice needs a tool parser; without one the engine refuses to start.
        flags.update(
            {
                k: v
                for k, v in engine.common_args.items()
                if model.parsers.tool or k != "--enable-auto-tool-choice"
            }
        )
        why.update(engine.common_args_why)
        flags.update(self.hardware_flags.args)
        flags.update(self.hardware_flags.by_precision.get(model.precision, {}))
        why.update(self.hardware_flags.why)
        env: dict[str, str] = dict(self.hardware_flags.env)
        if speculative is not None:
            flags.update(speculative.args)
            env.update(speculative.env)
            first = next(iter(speculative.args), None)
            if first:
                kind = _speculative_method(engine)
                why[first] = (
                    f"speculative decoding ({kind}): drafts tokens with the model's own MTP layer for lower "
                    f"latency at low concurrency ({speculative.source})"
                )
            for name in speculative.env:
                why[name] = f"needed by speculative decoding for {model.name} ({speculative.source})"
        self._memory_and_lengths(flags, speculative)
        if self.options.dp_attention:
            flags["--dp"] = str(tensor_parallel)
            flags["--enable-dp-attention"] = True
            flags.update(model.dp_attention_args.get(engine.name, {}))
            why["--enable-dp-attention"] = (
                "data-parallel attention (dp = tp): more throughput at high concurrency, more latency at low"
            )
        if self.options.index_cache:
            flags.update(model.index_cache.args)
            for flag in model.index_cache.args:
                why[flag] = f"{model.index_cache.why} ({model.index_cache.source})"
        return flags, env

    def _memory_and_lengths(self, flags: Flags, speculative: SpeculativeEngine | None) -> None:
        options, names, why = self.options, self.names, self.explanations
        mem_flag = names.get("mem_fraction")
        candidates: list[tuple[float | None, str]] = [
            (options.mem_fraction, "set by option mem_fraction"),
            (
                speculative.mem_fraction if speculative else None,
                f"the speculative recipe's value ({speculative.source if speculative else ''})",
            ),
            (
                self.hardware_flags.mem_fraction,
                self.hardware_flags.why.get(str(mem_flag), f"the {self.hardware.name} profile's value"),
            ),
            (self.engine.default_mem_fraction, "the common recipe's value"),
        ]
        chosen = next(((value, reason) for value, reason in candidates if value is not None), None)
        if mem_flag and chosen is not None:
            flags[mem_flag] = _format_fraction(chosen[0])
            why[mem_flag] = f"share of GPU memory for weights and KV cache: {chosen[1]}"
        kv_flag = names.get("kv_cache_dtype")
        if kv_flag and options.kv_cache_dtype is not None:
            flags[kv_flag] = options.kv_cache_dtype
            why[kv_flag] = "set by option kv_cache_dtype"
        max_len_flag = names.get("max_model_len")
        max_model_len = options.max_model_len or self.profile.max_model_len
        if max_len_flag and max_model_len is not None:
            flags[max_len_flag] = str(max_model_len)
            why[max_len_flag] = (
                "set by option max_model_len"
                if options.max_model_len
                else f"caps the context so the KV cache fits after the weights ({self.profile.source})"
            )
        seqs_flag = names.get("max_num_seqs")
        if seqs_flag and options.max_num_seqs is not None:
            flags[seqs_flag] = str(options.max_num_seqs)

    def secrets(self, flags: Flags, served_name: str) -> tuple[list[str], list[SecretFile]]:
        """Where the API key travels: an environment variable or a mode-0600 file, never argv."""
        if not self.options.api_key_required:
            self.warnings.append(
                "api_key_required is false: the endpoint answers anyone who can reach its port"
            )
            return [], []
        api = self.engine.api_key
        if api.method == "env" and api.env:
            return [api.env], []
        if api.method == "config_file" and api.flag and api.config_key:
            path = f"{CONFIG_ROOT}/{served_name}.{self.engine.name}.yaml"
            flags[api.flag] = path
            self.explanations[api.flag] = (
                f"the API key is read from this mode-0600 file, never from the command line ({api.source})"
            )
            return [], [SecretFile(path=path, format="yaml", key=api.config_key, secret="api_key")]  # noqa: S106
        raise CatalogError(
            f"catalog entry engines.{self.engine.name}.api_key names no env and no config file"
        )

    def check_extra_args(self, flags: Flags, extra_flags: Sequence[str]) -> None:
        """extra_args may add flags, not repeat rendered ones: engines would take the last value silently."""
        option_for_flag = {
            str(self.names[key]): key
            for key in (
                *("max_model_len", "max_num_seqs", "mem_fraction", "kv_cache_dtype"),
                *("served_name", "host", "port", "revision"),
            )
            if self.names.get(key)
        }
        if self.names.get("tokenizer_revision"):
            option_for_flag[str(self.names["tokenizer_revision"])] = "revision"
        for flag in extra_flags:
            if flag in flags:
                where = f"option {option_for_flag[flag]}" if flag in option_for_flag else "the catalog"
                raise InputError(
                    f"extra_args sets {clip(flag, 40, quote=False)}, "
                    f"which the plan already renders as {clip(flags[flag])}",
                    hint=f"set it through {where} instead of extra_args, or drop it",
                )

    # ------------------------------------------------------------------ caches, nodes, container

    def caches(
        self, build: _EngineBuild, flags: Flags, tensor_parallel: int
    ) -> tuple[dict[str, str], list[str], dict[str, str]]:
        """Cache directories keyed by image, GPU arch, tp and flags, so no plan reuses another's kernels."""
        not_kernel_flags = {
            self.names.get(key) for key in ("served_name", "host", "port", "revision", "tokenizer_revision")
        }
        not_kernel_flags.add(self.engine.api_key.flag)
        runs = build.image or (build.native or {}).get("requirement") or self.engine.name
        kernel_inputs = {
            "image": runs,
            "engine_version": build.engine_version,
            "arch": self.hardware.arch,
            "flags": {k: v for k, v in flags.items() if k not in not_kernel_flags},
            "extra_args": list(self.options.extra_args),
        }
        flags_hash = hashlib.sha256(json.dumps(kernel_inputs, sort_keys=True).encode()).hexdigest()[:12]
        short_name = build.image or (build.native or {}).get("venv") or self.engine.name
        cache_key = _slug(
            f"{short_name.split('/')[-1]}-{self.hardware.arch}-tp{tensor_parallel}-{flags_hash}"
        ).lower()
        cache_env: dict[str, str] = {"HF_HOME": self.options.hf_home}
        cache_dirs: list[str] = [self.options.hf_home]
        cache_kinds: dict[str, str] = {}
        for kind_name, variables in self.engine.caches.items():
            path = f"{self.options.cache_root}/{kind_name}/{cache_key}"
            cache_dirs.append(path)
            cache_kinds[kind_name] = path
            for variable in variables:
                cache_env[variable] = path
        return cache_env, cache_dirs, cache_kinds

    # ------------------------------------------------------------------ JIT warm-up

    def uses_deepgemm(self) -> bool:
        """FP8 GEMMs go through DeepGEMM's JIT on NVIDIA (the test preflight's gpu_needs.deepgemm makes)."""
        return self.hardware.vendor == "nvidia" and self.model.precision == "fp8"

    def warmup_env(self, env: dict[str, str]) -> None:
        """The environment the engine's warm-up needs at every start (vLLM: compile everything first)."""
        spec = self.engine.warmup
        if spec is None or (spec.needs == "deepgemm" and not self.uses_deepgemm()):
            return
        env.update(spec.env)
        for name in spec.env:
            self.explanations[name] = f"{spec.why} ({spec.source})"

    def warmup(
        self, nodes: Sequence[NodePlan], launcher_prefix: str | None, cache_kinds: Mapping[str, str]
    ) -> Warmup | None:
        """The plan's warm-up: per node, the precompile command with the node's own flags (the launcher
        swapped, the flags the catalog drops left out, its own loopback host and port); None when the engine has
        none or the plan compiles nothing at run time. `launcher_prefix` is the venv's bin folder (native)."""
        spec = self.engine.warmup
        if spec is None or (spec.needs == "deepgemm" and not self.uses_deepgemm()):
            return None
        dirs = [cache_kinds[kind] for kind in spec.caches]
        if not spec.launcher:
            return Warmup(
                kind="first_start",
                nodes=None,
                env=dict(spec.env),
                caches=list(spec.caches),
                cache_dirs=dirs,
                timeout_s=None,
                why=spec.why,
                source=spec.source,
            )
        host, port = _present(spec.host, "warmup.host"), _present(spec.port, "warmup.port")
        if port == self.options.port:
            port += 1  # never the endpoint's own port: the release that serves may hold it
        replace: dict[str, str | None] = {
            str(self.names[key]): None for key in spec.drop_flags if self.names.get(key)
        }
        if self.engine.api_key.flag:
            replace[self.engine.api_key.flag] = None  # the warm-up answers no one; its server needs no key
        replace[str(self.names["host"])] = host
        replace[str(self.names["port"])] = str(port)
        launcher = list(spec.launcher)
        if launcher_prefix is not None:
            launcher[0] = f"{launcher_prefix}/{launcher[0]}"
        skip = len(self.engine.launcher)
        argvs = [[*launcher, *_replace_flags(node.argv[skip:], replace)] for node in nodes]
        self.explanations[f"warmup {' '.join(spec.launcher)}"] = (
            f"{spec.why}; the server role runs it before the cut-over while the caches are cold ({spec.source})"
        )
        timeout_s = _present(spec.timeout_s, "warmup.timeout_s")
        return Warmup(
            kind="command",
            nodes=argvs,
            env=dict(spec.env),
            caches=list(spec.caches),
            cache_dirs=dirs,
            timeout_s=timeout_s,
            why=spec.why,
            source=spec.source,
        )

    def common_env(self, env: dict[str, str], cache_env: dict[str, str], build: _EngineBuild) -> None:
        why = self.explanations
        env.update(cache_env)
        env["HF_HUB_OFFLINE"] = "1"
        why["HF_HUB_OFFLINE"] = (
            "the weights role downloads and verifies the weights first; the engine must never fetch at start"
        )
        if self.engine.kind == "vllm":
            env["VLLM_NO_USAGE_STATS"] = "1"
            why["VLLM_NO_USAGE_STATS"] = "vLLM sends usage statistics unless told not to"
        spec = build.image_spec
        if build.image_env and spec is not None:
            env.update(build.image_env)
            for name in build.image_env:
                why[name] = (
                    f"image {spec.image} is built for CUDA {spec.cuda}, the host driver offers "
                    f"{self.host_cuda}: CUDA minor-version compatibility runs it, but nvidia-container-cli "
                    "refuses without this"
                )
            self.warnings.append(
                f"image built for CUDA {spec.cuda} on a CUDA {self.host_cuda} host: runs through "
                "minor-version compatibility (NVIDIA_DISABLE_REQUIRE=1); a driver >= "
                f"{self.catalog.cuda_driver_minimum.get(str(spec.cuda), '?')} avoids it"
            )

    def nodes(
        self, node_count: int, launcher: list[str], flags: Flags, env: dict[str, str]
    ) -> list[NodePlan]:
        options = self.options
        positional = [self.model.hf_repo] if not self.names.get("model") else []
        multi = self.engine.multi_node
        head = options.head_address
        if node_count > 1:
            multi = _present(multi, f"engines.{self.engine.name}.multi_node")
            if head is None:
                head = "HEAD_ADDRESS"
                self.warnings.append(
                    "multi-node plan without head_address: replace HEAD_ADDRESS with the head node's "
                    "private IP (the plan role passes it from the inventory)"
                )
            if options.network_interface is None:
                self.warnings.append(
                    "multi-node plan without network_interface: set it to the private interface so NCCL/Gloo "
                    "do not pick a public one"
                )
            else:
                self.explanations["NCCL_SOCKET_IFNAME"] = (
                    "keeps NCCL and Gloo on the private interface between the nodes"
                )
            self.explanations[multi.nnodes_flag] = f"the model spans {node_count} nodes ({multi.source})"
            self.explanations[multi.head_address_flag] = (
                "every node meets the head node (rank 0) at this address"
            )
            for flag in multi.worker_flags:
                self.explanations[flag] = "worker nodes run engine processes only; the head serves the API"
        plans: list[NodePlan] = []
        for rank in range(node_count):
            node_flags: Flags = dict(flags)
            node_env = dict(env)
            if node_count > 1 and multi is not None:
                node_flags[multi.nnodes_flag] = str(node_count)
                node_flags[multi.node_rank_flag] = str(rank)
                node_flags[multi.head_address_flag] = (
                    f"{head}:{multi.head_port}" if multi.head_port else str(head)
                )
                if rank > 0:
                    node_flags.update(multi.worker_flags)
                if options.network_interface:
                    node_env["NCCL_SOCKET_IFNAME"] = options.network_interface
                    node_env["GLOO_SOCKET_IFNAME"] = options.network_interface
            argv = [*launcher, *positional, *_argv_from_flags(node_flags), *options.extra_args]
            plans.append(NodePlan(rank=rank, role="head" if rank == 0 else "worker", argv=argv, env=node_env))
        return plans

    def container(  # noqa: PLR0917 - one call site, every argument named by its role there
        self,
        image: str,
        entrypoint: str,
        env: dict[str, str],
        cache_dirs: list[str],
        secret_files: list[SecretFile],
        env_file: str,
    ) -> ContainerSpec:
        vendor = self.hardware.vendor
        mounts = [Mount(source=path, target=path, read_only=False) for path in cache_dirs]
        mounts += [Mount(source=secret.path, target=secret.path, read_only=True) for secret in secret_files]
        self.explanations["--ipc host"] = (
            "NCCL and the engines' worker processes share memory through /dev/shm"
        )
        self.explanations["--network host"] = (
            "multi-node NCCL and the API port need the host's own interfaces"
        )
        self.explanations[f"--volume {self.options.hf_home}"] = (
            "the whole Hugging Face cache: a snapshot directory alone is symlinks into blobs/"
        )
        return ContainerSpec(
            image=image,
            entrypoint=entrypoint,
            env=dict(env),
            env_file=env_file,
            mounts=mounts,
            ipc="host",
            shm_size="32g",
            network="host",
            gpus="all" if vendor == "nvidia" else None,
            devices=["/dev/kfd", "/dev/dri"] if vendor == "amd" else [],
            group_add=["video"] if vendor == "amd" else [],
        )

    def start_timeout_s(self, node_count: int) -> int:
        """Engine start, JIT compilation and reading the weights (each node reads its share in parallel)."""
        load_s = self.model.disk_bytes / max(self.hardware.load_bytes_per_s, 1) / node_count
        total = self.engine.startup_base_s + self.engine.startup_jit_s + load_s
        return int(math.ceil(total / 60.0) * 60)


def render_plan(
    catalog: Catalog,
    *,
    model: str,
    engine: str,
    hardware: str,
    nodes: int | None = None,
    options: PlanOptions | None = None,
) -> Plan:
    """Render the deployment plan, or raise InputError naming what cannot work and what would."""
    options = options or PlanOptions()
    _check_text_options(options)
    renderer = _Renderer(catalog, model, engine, hardware, options)
    model_spec, engine_spec, hardware_spec = renderer.model, renderer.engine, renderer.hardware
    node_count = _check_nodes(catalog, model_spec, hardware_spec, engine_spec, nodes)
    runtime = renderer.runtime()
    served_name, extra_flags = renderer.check_options()
    build = renderer.engine_build(runtime)
    tensor_parallel, pipeline_parallel, gpus_per_node = renderer.layout(node_count)
    speculative = renderer.speculative()
    revision, revision_pinned = renderer.revision()
    flags, env = renderer.flags(revision, tensor_parallel, pipeline_parallel, speculative)
    flags[str(renderer.names["served_name"])] = served_name
    flags[str(renderer.names["host"])] = options.host
    flags[str(renderer.names["port"])] = str(options.port)
    secret_env, secret_files = renderer.secrets(flags, served_name)
    renderer.check_extra_args(flags, extra_flags)
    cache_env, cache_dirs, cache_kinds = renderer.caches(build, flags, tensor_parallel)
    renderer.common_env(env, cache_env, build)
    renderer.warmup_env(env)
    if build.native is not None:
        launcher = [f"{build.native['venv_path']}/bin/{engine_spec.launcher[0]}", *engine_spec.launcher[1:]]
    else:
        launcher = list(engine_spec.launcher)
    node_plans = renderer.nodes(node_count, launcher, flags, env)
    for node_plan in node_plans:
        _check_rendered_text(node_plan.argv, f"node {node_plan.rank} argv word")
        _check_rendered_text([*node_plan.env, *node_plan.env.values()], f"node {node_plan.rank} environment")
    _check_rendered_text([*cache_env, *cache_env.values()], "cache environment")
    warmup = renderer.warmup(
        node_plans, f"{build.native['venv_path']}/bin" if build.native is not None else None, cache_kinds
    )
    env_file = f"{CONFIG_ROOT}/{served_name}.env"
    container = None
    if runtime == "container":
        image = _present(build.image, "container image")
        container = renderer.container(image, launcher[0], env, cache_dirs, secret_files, env_file)
    if "UNVERIFIED" in renderer.profile.source:
        renderer.warnings.append(f"{model_spec.name} on {hardware_spec.name}: {renderer.profile.source}")
    return Plan(
        model=model_spec.name,
        model_display_name=model_spec.display_name,
        engine=engine_spec.name,
        engine_version=build.engine_version,
        hardware=hardware_spec.name,
        runtime=runtime,
        image=build.image,
        image_build=build.image_build,
        native=build.native,
        served_model_name=served_name,
        unit_name=f"glm-{served_name}.service",
        host=options.host,
        port=options.port,
        model_repo=model_spec.hf_repo,
        model_revision=revision,
        revision_pinned=revision_pinned,
        model_architecture=model_spec.architecture,
        model_type=model_spec.model_type,
        min_transformers=model_spec.min_transformers,
        node_count=node_count,
        gpus_per_node=gpus_per_node,
        tensor_parallel=tensor_parallel,
        pipeline_parallel=pipeline_parallel,
        speculative=speculative is not None,
        nodes=node_plans,
        container=container,
        cache_env=cache_env,
        cache_dirs=cache_dirs,
        secret_env=secret_env,
        secret_files=secret_files,
        env_file=env_file,
        start_timeout_s=renderer.start_timeout_s(node_count),
        disk_bytes=model_spec.disk_bytes,
        sampling=dict(model_spec.sampling),
        benchmark=_benchmark(
            hardware_spec, model_spec.name, engine_spec.name, speculative is not None, node_count
        ),
        explanations=[
            Explanation(flag=flag, why=why)
            for flag, why in renderer.explanations.items()
            if _shown(flag, node_plans, env)
        ],
        warnings=renderer.warnings,
        cache_kinds=cache_kinds,
        warmup=warmup,
        quality=_quality(model_spec, engine_spec, speculative is not None),
    )


def _speculative_method(engine: EngineSpec) -> str:
    """How the engine drafts tokens with GLM's MTP layer, as explanations and gate messages name it."""
    return "EAGLE over the MTP head" if engine.speculative_kind == "eagle" else "MTP"


def _quality(model: ModelSpec, engine: EngineSpec, speculative: bool) -> dict[str, Any]:
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
            "method": _speculative_method(engine),
            "floor": None
            if floor is None
            else {
                "min_acceptance_length": floor.min_acceptance_length,
                "min_acceptance_rate": floor.min_acceptance_rate,
                "source": floor.source,
            },
        }
    return quality


def _benchmark(hardware: HardwareSpec, model: str, engine: str, speculative: bool, nodes: int) -> dict[str, Any]:
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


def _shown(flag: str, nodes: Sequence[NodePlan], env: Mapping[str, str]) -> bool:
    """Explain only what the plan holds: a flag of some node, an environment variable, or a docker option."""
    if flag.startswith(("--ipc ", "--network ", "--volume ", "warmup ")):
        return True
    return flag in env or any(flag in node.argv or flag in node.env for node in nodes)
