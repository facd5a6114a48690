"""The renderer: (model, engine, hardware, nodes, options) -> `Plan`, one step after another.

`render_plan` checks the inputs (`options`, `context`), chooses what runs the engine (`engine`), lays the model out
over the nodes, renders the flags every node shares and each node's own, keys the JIT caches and plans their
warm-up (`jit`), and names the gates the release must pass (`gates`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from glm_deploy.catalog import Catalog, Flags, SpeculativeEngine
from glm_deploy.errors import CatalogError, InputError
from glm_deploy.render.context import RenderContext, check_nodes, known, present
from glm_deploy.render.engine import EngineBuild, engine_build
from glm_deploy.render.gates import benchmark_workload, quality_gate, speculative_method
from glm_deploy.render.jit import caches, render_warmup, warmup_env
from glm_deploy.render.options import PlanOptions, check_options, check_text_options, engine_host, engine_port
from glm_deploy.render.plan import ContainerSpec, Explanation, Mount, NodePlan, Plan, SecretFile
from glm_deploy.validation import COMMIT, check_revision, clip, control_character

CONFIG_ROOT = "/etc/glm-deploy"


def _argv_from_flags(flags: Flags) -> list[str]:
    argv: list[str] = []
    for flag, value in flags.items():
        if value is False:
            continue
        argv.append(flag)
        if value is not True:
            argv.append(value)
    return argv


def _check_rendered_text(plan_words: Sequence[str], what: str) -> None:
    """The second wall: what the catalog put into the plan holds no control character either."""
    for word in plan_words:
        found = control_character(word)
        if found is not None:
            raise CatalogError(f"catalog inconsistency: {what} {clip(word)} holds the control character {found}")


def _format_fraction(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".") if value != 1 else "1.0"


class _Renderer(RenderContext):
    """The rendering steps that read the whole context: layout, flags, secrets, environment, nodes, container."""

    # ------------------------------------------------------------------ layout and speculative decoding

    def layout(self, node_count: int) -> tuple[int, int, int]:
        """(tensor parallel, pipeline parallel, GPUs per node)."""
        gpus = present(self.profile.gpus, f"models.{self.model.name}.hardware.{self.hardware.name}.gpus")
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
                    hint=f"engines with one: {known(list(spec.engines)) or 'none'}; "
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
                "each deploy and redeploy pins the unit to the commit it fetched (one commit for every host of a "
                "roll), but the next one follows the branch to where it points then; to serve one commit always, "
                "set option revision=<commit>"
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
                kind = speculative_method(engine)
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

    # ------------------------------------------------------------------ environment, nodes, container

    def common_env(self, env: dict[str, str], cache_env: dict[str, str], build: EngineBuild) -> None:
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
            multi = present(multi, f"engines.{self.engine.name}.multi_node")
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
    check_text_options(options)
    renderer = _Renderer(catalog, model, engine, hardware, options)
    model_spec, engine_spec, hardware_spec = renderer.model, renderer.engine, renderer.hardware
    node_count = check_nodes(catalog, model_spec, hardware_spec, engine_spec, nodes)
    runtime = renderer.runtime()
    served_name, extra_flags = check_options(options, model_spec, engine_spec)
    build = engine_build(renderer, runtime)
    tensor_parallel, pipeline_parallel, gpus_per_node = renderer.layout(node_count)
    speculative = renderer.speculative()
    revision, revision_pinned = renderer.revision()
    flags, env = renderer.flags(revision, tensor_parallel, pipeline_parallel, speculative)
    flags[str(renderer.names["served_name"])] = served_name
    flags[str(renderer.names["host"])] = engine_host(options)
    flags[str(renderer.names["port"])] = str(engine_port(options))
    secret_env, secret_files = renderer.secrets(flags, served_name)
    renderer.check_extra_args(flags, extra_flags)
    cache_env, cache_dirs, cache_kinds = caches(renderer, build, flags, tensor_parallel)
    renderer.common_env(env, cache_env, build)
    warmup_env(renderer, env)
    if build.native is not None:
        launcher = [f"{build.native['venv_path']}/bin/{engine_spec.launcher[0]}", *engine_spec.launcher[1:]]
    else:
        launcher = list(engine_spec.launcher)
    node_plans = renderer.nodes(node_count, launcher, flags, env)
    for node_plan in node_plans:
        _check_rendered_text(node_plan.argv, f"node {node_plan.rank} argv word")
        _check_rendered_text([*node_plan.env, *node_plan.env.values()], f"node {node_plan.rank} environment")
    _check_rendered_text([*cache_env, *cache_env.values()], "cache environment")
    launcher_prefix = f"{build.native['venv_path']}/bin" if build.native is not None else None
    warmup = render_warmup(renderer, node_plans, launcher_prefix, cache_kinds)
    env_file = f"{CONFIG_ROOT}/{served_name}.env"
    container = None
    if runtime == "container":
        image = present(build.image, "container image")
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
        host=engine_host(options),
        port=options.port,
        engine_port=engine_port(options),
        tls={"mode": options.tls, "domain": options.tls_domain},
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
        benchmark=benchmark_workload(
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
        quality=quality_gate(model_spec, engine_spec, speculative is not None),
    )


def _shown(flag: str, nodes: Sequence[NodePlan], env: Mapping[str, str]) -> bool:
    """Explain only what the plan holds: a flag of some node, an environment variable, or a docker option."""
    if flag.startswith(("--ipc ", "--network ", "--volume ", "warmup ")):
        return True
    return flag in env or any(flag in node.argv or flag in node.env for node in nodes)
