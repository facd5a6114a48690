"""The plan's JIT caches and their warm-up.

Each cache directory is keyed by what the compiled kernels depend on (image, GPU arch, tensor parallelism, flags),
so no plan reuses another's kernels and a new served name or port keeps a warm cache. The warm-up fills them before
the cut-over: a precompile command with the server's own flags, or settings that make the first start compile
everything before it serves.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

from glm_deploy.catalog import Flags
from glm_deploy.render.context import RenderContext, present
from glm_deploy.render.engine import EngineBuild, slug
from glm_deploy.render.options import engine_port
from glm_deploy.render.plan import NodePlan, Warmup


def caches(
    context: RenderContext, build: EngineBuild, flags: Flags, tensor_parallel: int
) -> tuple[dict[str, str], list[str], dict[str, str]]:
    """Cache directories keyed by image, GPU arch, tp and flags, so no plan reuses another's kernels."""
    not_kernel_flags = {
        context.names.get(key) for key in ("served_name", "host", "port", "revision", "tokenizer_revision")
    }
    not_kernel_flags.add(context.engine.api_key.flag)
    runs = build.image or (build.native or {}).get("requirement") or context.engine.name
    kernel_inputs = {
        "image": runs,
        "engine_version": build.engine_version,
        "arch": context.hardware.arch,
        "flags": {k: v for k, v in flags.items() if k not in not_kernel_flags},
        "extra_args": list(context.options.extra_args),
    }
    flags_hash = hashlib.sha256(json.dumps(kernel_inputs, sort_keys=True).encode()).hexdigest()[:12]
    short_name = build.image or (build.native or {}).get("venv") or context.engine.name
    cache_key = slug(
        f"{short_name.split('/')[-1]}-{context.hardware.arch}-tp{tensor_parallel}-{flags_hash}"
    ).lower()
    cache_env: dict[str, str] = {"HF_HOME": context.options.hf_home}
    cache_dirs: list[str] = [context.options.hf_home]
    cache_kinds: dict[str, str] = {}
    for kind_name, variables in context.engine.caches.items():
        path = f"{context.options.cache_root}/{kind_name}/{cache_key}"
        cache_dirs.append(path)
        cache_kinds[kind_name] = path
        for variable in variables:
            cache_env[variable] = path
    return cache_env, cache_dirs, cache_kinds


def uses_deepgemm(context: RenderContext) -> bool:
    """FP8 GEMMs go through DeepGEMM's JIT on NVIDIA (the test preflight's gpu_needs.deepgemm makes)."""
    return context.hardware.vendor == "nvidia" and context.model.precision == "fp8"


def warmup_env(context: RenderContext, env: dict[str, str]) -> None:
    """The environment the engine's warm-up needs at every start (vLLM: compile everything first)."""
    spec = context.engine.warmup
    if spec is None or (spec.needs == "deepgemm" and not uses_deepgemm(context)):
        return
    env.update(spec.env)
    for name in spec.env:
        context.explanations[name] = f"{spec.why} ({spec.source})"


def render_warmup(
    context: RenderContext, nodes: Sequence[NodePlan], launcher_prefix: str | None, cache_kinds: Mapping[str, str]
) -> Warmup | None:
    """The plan's warm-up: per node, the precompile command with the node's own flags (the launcher
    swapped, the flags the catalog drops left out, its own loopback host and port); None when the engine has
    none or the plan compiles nothing at run time. `launcher_prefix` is the venv's bin folder (native)."""
    spec = context.engine.warmup
    if spec is None or (spec.needs == "deepgemm" and not uses_deepgemm(context)):
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
    host, port = present(spec.host, "warmup.host"), present(spec.port, "warmup.port")
    taken = {context.options.port, engine_port(context.options)}
    while port in taken:
        port += 1  # never the endpoint's own ports: the release that serves (and its TLS terminator) hold them
    replace: dict[str, str | None] = {
        str(context.names[key]): None for key in spec.drop_flags if context.names.get(key)
    }
    if context.engine.api_key.flag:
        replace[context.engine.api_key.flag] = None  # the warm-up answers no one; its server needs no key
    replace[str(context.names["host"])] = host
    replace[str(context.names["port"])] = str(port)
    launcher = list(spec.launcher)
    if launcher_prefix is not None:
        launcher[0] = f"{launcher_prefix}/{launcher[0]}"
    skip = len(context.engine.launcher)
    argvs = [[*launcher, *_replace_flags(node.argv[skip:], replace)] for node in nodes]
    context.explanations[f"warmup {' '.join(spec.launcher)}"] = (
        f"{spec.why}; the server role runs it before the cut-over while the caches are cold ({spec.source})"
    )
    timeout_s = present(spec.timeout_s, "warmup.timeout_s")
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
