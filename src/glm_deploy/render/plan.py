"""A rendered plan (`Plan`) and its parts: what each node runs, in which container, with which secrets and caches.

`Plan.to_dict()` is the form the playbooks hold (`glm_plan`); `Plan.command(rank)` is what `glm-deploy plan` prints
for a node, the same argv the node's unit runs.
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass
from typing import Any

from glm_deploy.container_run import container_run_argv


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
    # The engine listens on host:engine_port; clients use port, which is the TLS terminator's when tls.mode is
    # not "off" (glm.deploy.tls_proxy) and the engine's own otherwise (then engine_port == port).
    host: str
    port: int
    engine_port: int
    tls: dict[str, Any]
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
