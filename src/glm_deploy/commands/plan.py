"""`glm-deploy plan`: render and print what a deployment will run, node by node, and why."""

from __future__ import annotations

import argparse
import json

from glm_deploy.catalog import load_catalog
from glm_deploy.render import Plan, PlanOptions, render_plan


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="print the exact command each node runs for a model, engine and hardware",
        description=(
            "Render the deployment plan: the command to paste on each node (docker run ... or the native "
            "engine), the environment, and why each non-obvious flag is there. Nothing is run."
        ),
    )
    parser.add_argument(
        "--model", required=True, help="catalog model, e.g. glm-5.1-fp8 (see `glm-deploy catalog`)"
    )
    parser.add_argument("--engine", required=True, help="sglang, vllm or vllm-cpu")
    parser.add_argument("--hardware", required=True, help="b200, h200, h100, mi300x, mi325x, mi355x or cpu")
    parser.add_argument(
        "--nodes", type=int, help="nodes to span (default: what the model needs on the hardware)"
    )
    parser.add_argument("--json", action="store_true", help="print the plan as JSON (Plan.to_dict())")
    options = parser.add_argument_group("options")
    options.add_argument("--port", type=int, help="API port (default 8000)")
    options.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    options.add_argument("--served-name", help="model name clients send (default: the catalog name)")
    options.add_argument("--max-model-len", type=int, help="context length cap")
    options.add_argument("--max-num-seqs", type=int, help="concurrent sequences cap")
    options.add_argument("--mem-fraction", type=float, help="share of GPU memory for weights and KV cache")
    options.add_argument("--kv-cache-dtype", help="KV cache dtype (auto, fp8, fp8_e4m3, ...)")
    options.add_argument(
        "--speculative",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="speculative decoding (default: the model's default where the engine and hardware support it)",
    )
    options.add_argument("--dp-attention", action="store_true", default=None, help="SGLang DP attention")
    options.add_argument("--index-cache", action="store_true", default=None, help="SGLang IndexCache")
    options.add_argument(
        "--extra-arg",
        dest="extra_args",
        action="append",
        metavar="ARG",
        help="one more engine argument (repeat; use --extra-arg=--flag for values starting with -)",
    )
    options.add_argument("--engine-version", help="engine version to pin (must be in the catalog)")
    options.add_argument("--image", help="container image to use instead of the catalog's")
    options.add_argument("--revision", help="model revision: a 40-hex commit pins the weights")
    options.add_argument("--head-address", help="private IP of the head node (multi-node)")
    options.add_argument("--network-interface", help="private network interface for NCCL/Gloo (multi-node)")
    options.add_argument("--hf-home", help="host directory of the Hugging Face cache")
    options.add_argument("--cache-root", help="host directory of the JIT caches")
    options.add_argument("--runtime", choices=("container", "native"), help="container or native engine")
    options.add_argument("--cuda-version", help="CUDA version the host driver supports, e.g. 12.8")
    options.add_argument(
        "--no-api-key",
        dest="api_key_required",
        action="store_false",
        default=None,
        help="serve without an API key (not recommended)",
    )
    parser.set_defaults(handler=run)


_OPTION_NAMES = (
    "port",
    "host",
    "served_name",
    "max_model_len",
    "max_num_seqs",
    "mem_fraction",
    "kv_cache_dtype",
    "speculative",
    "dp_attention",
    "index_cache",
    "extra_args",
    "engine_version",
    "image",
    "revision",
    "head_address",
    "network_interface",
    "hf_home",
    "cache_root",
    "runtime",
    "cuda_version",
    "api_key_required",
)


def options_from_args(args: argparse.Namespace) -> PlanOptions:
    return PlanOptions.from_mapping({name: getattr(args, name) for name in _OPTION_NAMES})


def format_text(plan: Plan) -> str:
    version = plan.engine_version or "unknown (floating tag)"
    lines = [
        f"Plan: {plan.model_display_name} on {plan.hardware} with {plan.engine} {version} ({plan.runtime})",
    ]
    if plan.image:
        lines.append(f"  image:    {plan.image}")
    if plan.image_build:
        lines.append(
            f"            built from {plan.image_build['base']} + pip {' '.join(plan.image_build['pip'])}"
        )
    if plan.native:
        lines.append(f"  venv:     {plan.native['venv_path']} ({plan.native['requirement']})")
    lines.append(
        f"  layout:   {plan.node_count} node(s) x {plan.gpus_per_node} GPUs (tp {plan.tensor_parallel}, "
        f"pp {plan.pipeline_parallel}); speculative decoding {'on' if plan.speculative else 'off'}"
    )
    lines.append(
        f"  weights:  {plan.model_repo} @ {plan.model_revision} ({plan.disk_bytes / 10**9:.1f} GB); "
        f"first start may take up to {plan.start_timeout_s // 60} min"
    )
    lines.append(f"  endpoint: http://{plan.host}:{plan.port}/v1, model name {plan.served_model_name!r}")
    for node in plan.nodes:
        lines.append("")
        lines.append(f"Node {node.rank} ({node.role}):")
        lines.append("  " + plan.shell_command(node.rank))
    if plan.secret_env or plan.secret_files:
        lines.append("")
        lines.append("Secrets (never on the command line; files of mode 0600, owner root):")
        for name in plan.secret_env:
            lines.append(f"  {plan.env_file}: {name}=<your API key>")
        for secret in plan.secret_files:
            lines.append(f"  {secret.path}: {secret.key}: <your API key>")
    if plan.explanations:
        lines.append("")
        lines.append("Why these flags:")
        width = max(len(entry.flag) for entry in plan.explanations)
        for entry in plan.explanations:
            lines.append(f"  {entry.flag:<{width}}  {entry.why}")
    if plan.warnings:
        lines.append("")
        lines.append("Warnings:")
        for warning in plan.warnings:
            lines.append(f"  - {warning}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    plan = render_plan(
        load_catalog(),
        model=args.model,
        engine=args.engine,
        hardware=args.hardware,
        nodes=args.nodes,
        options=options_from_args(args),
    )
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2))
    else:
        print(format_text(plan))
    return 0
