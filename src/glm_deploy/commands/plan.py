"""`glm-deploy plan`: render and print what a deployment will run, node by node, and why."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from glm_deploy.catalog import load_catalog
from glm_deploy.render import Plan, PlanOptions, render_plan
from glm_deploy.render.options import option_type


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
    add_option_arguments(parser.add_argument_group("options"))
    parser.set_defaults(handler=run)


def add_option_arguments(group: argparse._ArgumentGroup) -> None:
    """One flag per plan option, from PlanOptions' fields: the name spelled with dashes (or the field's `flag`), the
    value read by the field's type, the field's help. Every flag defaults to None: unset takes the option's default."""
    for field in dataclasses.fields(PlanOptions):
        flag = field.metadata.get("flag", "--" + field.name.replace("_", "-"))
        common: dict[str, Any] = {"dest": field.name, "default": None, "help": field.metadata["help"]}
        kind = option_type(field.name)
        if kind is bool:
            # A switch with no default has --x and --no-x; one that is off sets on, one that is on sets off.
            switch: dict[object, Any] = {None: argparse.BooleanOptionalAction, False: "store_true", True: "store_false"}
            group.add_argument(flag, action=switch[field.default], **common)
        elif kind is tuple:
            group.add_argument(flag, action="append", metavar=field.metadata.get("metavar"), **common)
        else:
            group.add_argument(flag, type=kind, choices=field.metadata.get("choices"), **common)


def options_from_args(args: argparse.Namespace) -> PlanOptions:
    names = [field.name for field in dataclasses.fields(PlanOptions)]
    return PlanOptions.from_mapping({name: getattr(args, name) for name in names})


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
    if plan.tls.get("mode", "off") == "off":
        lines.append(f"  endpoint: http://{plan.host}:{plan.port}/v1, model name {plan.served_model_name!r}")
    else:
        lines.append(f"  endpoint: https://<host>:{plan.port}/v1, model name {plan.served_model_name!r}")
        lines.append(
            f"            TLS ({plan.tls['mode']}) by nginx; the engine listens on {plan.host}:{plan.engine_port}"
        )
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
