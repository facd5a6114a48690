"""What a user may choose for a plan (`PlanOptions`), read from a mapping, and the checks of the values.

The checks here refuse a value that cannot work for the chosen model and engine before anything is rendered
from it: ranges, patterns of names and paths, options an engine has no flag for, and extra arguments that would
carry a secret or fight the catalog's own flags.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from glm_deploy.catalog import RUNTIMES, EngineSpec, ModelSpec
from glm_deploy.catalog_types import SharedFilesystemWeights
from glm_deploy.errors import InputError
from glm_deploy.validation import IMAGE_REFERENCE, check_host, check_one_line, check_pattern, clip, secret_flag

# Where glm-deploy keeps its state on a host: the Hugging Face cache, the JIT caches, the engine venvs.
STATE_ROOT = "/var/lib/glm-deploy"
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

_T = TypeVar("_T")

# off: the engine serves plain HTTP itself; internal: nginx with a certificate from the controller's CA
# (glm_deploy.tls); acme: nginx with a certificate certbot gets for tls_domain.
TLS_MODES = ("off", "internal", "acme")
LOOPBACK = "127.0.0.1"
_ENGINE_PORT_OFFSET = 10000
_DNS_NAME = re.compile(r"(?=.{1,253}\Z)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}")


def _option(default: _T, help_text: str, **cli: Any) -> _T:
    """A plan option: its default and the help of its command-line flag (`glm-deploy plan`). `cli` holds what the
    field's name and type do not give: `flag` (another spelling), `choices`, `metavar`."""
    return dataclasses.field(default=default, metadata={"help": help_text, **cli})


@dataclass(frozen=True)
class PlanOptions:
    """What a user may choose; `None` means "what the catalog says for this model, engine and hardware".

    Each field is an option of `from_mapping` (inventory `glm_options`, the lookup's `options`) and a flag of
    `glm-deploy plan`, read by its type: a new option is declared here once.
    """

    port: int = _option(DEFAULT_PORT, f"API port clients use (default {DEFAULT_PORT}; the TLS port behind tls)")
    # Unset: every address without TLS (the API key and the firewall guard it), loopback behind the TLS terminator.
    host: str | None = _option(None, "address the engine listens on (default 0.0.0.0; 127.0.0.1 behind tls)")
    tls: str = _option(
        "off",
        "TLS terminator (nginx) in front of the engine: internal (a CA the controller makes), acme "
        "(certbot, needs tls_domain) or off (default)",
        choices=TLS_MODES,
    )
    tls_domain: str | None = _option(None, "DNS name of the endpoint, in its certificate (acme needs it)")
    engine_port: int | None = _option(None, "port the engine listens on behind tls (default: port + 10000)")
    served_name: str | None = _option(None, "model name clients send (default: the catalog name)")
    max_model_len: int | None = _option(None, "context length cap")
    max_num_seqs: int | None = _option(None, "concurrent sequences cap")
    mem_fraction: float | None = _option(None, "share of GPU memory for weights and KV cache")
    kv_cache_dtype: str | None = _option(None, "KV cache dtype (auto, fp8, fp8_e4m3, ...)")
    speculative: bool | None = _option(
        None, "speculative decoding (default: the model's default where the engine and hardware support it)"
    )
    dp_attention: bool = _option(False, "SGLang DP attention")
    index_cache: bool = _option(False, "SGLang IndexCache")
    extra_args: tuple[str, ...] = _option(
        (),
        "one more engine argument (repeat; use --extra-arg=--flag for values starting with -)",
        flag="--extra-arg",
        metavar="ARG",
    )
    engine_version: str | None = _option(None, "engine version to pin (must be in the catalog)")
    image: str | None = _option(None, "container image to use instead of the catalog's")
    revision: str | None = _option(None, "model revision: a 40-hex commit pins the weights")
    head_address: str | None = _option(None, "private IP of the head node (multi-node)")
    network_interface: str | None = _option(None, "private network interface for NCCL/Gloo (multi-node)")
    hf_home: str = _option(f"{STATE_ROOT}/hf", "host directory of the Hugging Face cache")
    cache_root: str = _option(f"{STATE_ROOT}/cache", "host directory of the JIT caches")
    runtime: str | None = _option(None, "container or native engine", choices=RUNTIMES)
    api_key_required: bool = _option(True, "serve without an API key (not recommended)", flag="--no-api-key")
    cuda_version: str | None = _option(None, "CUDA version the host driver supports, e.g. 12.8")

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


# The options' types, resolved once (the annotations are strings under `from __future__ import annotations`).
_OPTION_HINTS = typing.get_type_hints(PlanOptions)


def option_type(name: str) -> type:
    """The type an option's value takes: int, float, bool, str, or tuple (of strings); `None` always means unset."""
    hint = _OPTION_HINTS[name]
    if isinstance(hint, types.UnionType):
        hint = next(member for member in typing.get_args(hint) if member is not type(None))
    base = typing.get_origin(hint) or hint
    if not isinstance(base, type):
        raise TypeError(f"PlanOptions.{name} has the type {hint}, which options cannot be read as")
    return base


def _coerce_option(name: str, value: Any) -> Any:
    kind = option_type(name)
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise InputError(f"option {name} must be an integer, got {clip(value)}")
        try:
            return int(value)
        except ValueError:
            raise InputError(f"option {name} must be an integer, got {clip(value)}") from None
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "false", "no", "off"):
            return value.lower() in ("true", "yes", "on")
        raise InputError(f"option {name} must be true or false, got {clip(value)}")
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise InputError(f"option {name} must be a number, got {clip(value)}")
        try:
            return float(value)
        except ValueError:
            raise InputError(f"option {name} must be a number, got {clip(value)}") from None
    if kind is tuple:
        if isinstance(value, str):
            return tuple(shlex.split(value))
        if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
            return tuple(value)
        raise InputError(f"option {name} must be a list of strings, got {clip(value)}")
    if not isinstance(value, str):
        raise InputError(f"option {name} must be a string, got {clip(value)}")
    return value


def engine_host(options: PlanOptions) -> str:
    """The address the engine listens on: the option, else loopback behind TLS, else every address."""
    if options.host is not None:
        return options.host
    return LOOPBACK if options.tls != "off" else "0.0.0.0"  # noqa: S104 - the API key and the firewall guard it


def engine_port(options: PlanOptions) -> int:
    """The port the engine listens on: the API port without TLS; behind TLS `engine_port`, else port + 10000
    (port - 10000 near the top of the range), so that nginx can hold the API port on every address."""
    if options.tls == "off":
        return options.port
    if options.engine_port is not None:
        return options.engine_port
    offset = _ENGINE_PORT_OFFSET if options.port + _ENGINE_PORT_OFFSET <= 65535 else -_ENGINE_PORT_OFFSET
    return options.port + offset


def check_tls_options(options: PlanOptions) -> None:
    """Refuse a TLS setting that cannot work or would leave the engine reachable without TLS."""
    if options.tls not in TLS_MODES:
        raise InputError(f"tls {clip(options.tls)} is not a TLS mode", hint=f"one of: {', '.join(TLS_MODES)}")
    if options.tls_domain is not None:
        check_pattern(
            "tls_domain", options.tls_domain, _DNS_NAME, "a DNS name", "e.g. glm.example.com (not an IP address)"
        )
    if options.tls == "acme" and options.tls_domain is None:
        raise InputError(
            "tls acme needs tls_domain, the DNS name the certificate is for",
            hint="set tls_domain to a name whose A record points at the host, or use tls: internal",
        )
    if options.engine_port is not None:
        if options.tls == "off":
            raise InputError(
                "engine_port applies only behind TLS (tls internal or acme)",
                hint="without TLS the engine listens on port; drop engine_port",
            )
        if not 1 <= options.engine_port <= 65535 or options.engine_port == options.port:
            raise InputError(
                f"engine_port {options.engine_port} must be a TCP port other than port {options.port}",
                hint="nginx holds port on every address; the engine needs a port of its own on loopback",
            )
    if options.tls != "off" and options.host is not None and options.host not in (LOOPBACK, "::1", "localhost"):
        raise InputError(
            f"host {clip(options.host)} with tls {options.tls} would serve the engine without TLS there",
            hint="drop host: behind TLS the engine listens on 127.0.0.1 (a multi-node plan's peers meet at "
            "head_address, which is not this address)",
        )


def extra_flag_names(extra_args: Sequence[str]) -> list[str]:
    return [arg.split("=", 1)[0] for arg in extra_args if arg.startswith("--")]


def normalised_flag_is(argument: str, flag: str) -> bool:
    """Whether `argument` sets `flag` in any spelling the engines accept (`_` for `-`, `--flag=value`)."""
    return argument.startswith("--") and argument.split("=", 1)[0].replace("_", "-").lower() == flag


def check_text_options(options: PlanOptions) -> None:
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


def check_options(options: PlanOptions, model: ModelSpec, engine: EngineSpec) -> tuple[str, list[str]]:
    """Refuse option values that cannot work for this model and engine; return the served name and the flags
    extra_args sets."""
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
    if options.host is not None:
        check_host("host", options.host)
    check_tls_options(options)
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
        if getattr(options, option_name) is not None and not engine.flag_names.get(key):
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
        reason = index_cache.reason or f"it is published for {', '.join(index_cache.engines)} only"
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
    extra_flags = extra_flag_names(options.extra_args)
    for flag in extra_flags:
        if flag.startswith("--speculative"):
            raise InputError(
                f"extra_args sets {clip(flag, 40, quote=False)}, "
                "which conflicts with the catalog's speculative decoding",
                hint="use the option speculative (true/false) instead",
            )
    return served_name, extra_flags


# A shared filesystem's mount point on the host (the inventory's glm_filesystem_mount): absolute, single '/' between
# names of letters, digits and ._-, no '.' or '..' component.
_MOUNT = re.compile(r"(/[A-Za-z0-9_-][A-Za-z0-9._-]{0,254})+")


def options_on_filesystem(
    options: Mapping[str, Any], mount: object, storage: SharedFilesystemWeights
) -> dict[str, Any]:
    """`options` with the HF cache on the shared filesystem mounted at `mount` (the inventory's
    glm_filesystem_mount; the catalog's shared_filesystem_weights says where under it), so the weights outlive the
    instance. Unchanged when there is no mount (None or empty) or the options name hf_home themselves: what the
    inventory chose wins. The plan role (filter glm.deploy.options_on_filesystem) and `Deployment.settings` both
    call this, so the playbooks and the controller render the same plan."""
    chosen = dict(options)
    if mount is None or mount == "" or chosen.get("hf_home") is not None:
        return chosen
    if not isinstance(mount, str):
        raise InputError(f"glm_filesystem_mount must be a path, got {clip(mount)}")
    check_pattern(
        "glm_filesystem_mount",
        mount,
        _MOUNT,
        "an absolute mount point",
        "names of letters, digits and ._- between single '/', no '..', like /lambda/nfs/glm-weights",
    )
    chosen["hf_home"] = f"{mount.rstrip('/')}/{storage.hf_home_folder}"
    return chosen
