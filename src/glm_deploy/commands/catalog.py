"""`glm-deploy catalog`: list the models, engines and hardware glm-deploy knows."""

from __future__ import annotations

import argparse
import json
from typing import Any

from glm_deploy.catalog import Catalog, load_catalog, parse_version


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "catalog",
        help="list the models, engines and hardware in the catalog",
        description="List the models, engines and hardware glm-deploy can plan for.",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(handler=run)


def summarize(catalog: Catalog) -> dict[str, list[dict[str, Any]]]:
    """The catalog in a form a person (or a script) can scan: one entry per model, engine and hardware."""
    models = [
        {
            "name": model.name,
            "display_name": model.display_name,
            "hf_repo": model.hf_repo,
            "revision": model.revision,
            "precision": model.precision,
            "disk_bytes": model.disk_bytes,
            "context_length": model.context_length,
            "engines": list(model.engines),
            "hardware": {
                name: {"gpus": profile.gpus, "nodes": profile.nodes}
                for name, profile in model.hardware.items()
                if profile.unsupported is None
            },
            "speculative_engines": sorted(model.speculative.engines),
        }
        for model in catalog.models.values()
    ]
    engines: list[dict[str, Any]] = []
    for engine in catalog.engines.values():
        versions: set[str] = {image.version for image in engine.images if image.version}
        if engine.native:
            versions.add(engine.native.version)
        ordered_versions: list[str] = sorted(versions, key=parse_version)
        engines.append(
            {
                "name": engine.name,
                "display_name": engine.display_name,
                "runtimes": list(engine.runtimes),
                "versions": ordered_versions,
                "images": [image.image for image in engine.images],
                "known_bad": [{"version": bad.version, "reason": bad.reason} for bad in engine.known_bad],
            }
        )
    hardware = [
        {
            "name": spec.name,
            "display_name": spec.display_name,
            "vendor": spec.vendor,
            "gpus_per_node": spec.gpus_per_node,
            "gpu_memory_gib": spec.gpu_memory_gib,
            "arch": spec.arch,
            "fp8": spec.fp8,
            "fp4": spec.fp4,
            "engines": list(spec.engine_flags),
        }
        for spec in catalog.hardware.values()
    ]
    return {"models": models, "engines": engines, "hardware": hardware}


def _size(size_bytes: int) -> str:
    if size_bytes >= 10**12:
        return f"{size_bytes / 10**12:.1f} TB"
    if size_bytes >= 10**9:
        return f"{size_bytes / 10**9:.0f} GB"
    return f"{size_bytes / 10**6:.0f} MB"


def format_text(summary: dict[str, list[dict[str, Any]]]) -> str:
    lines = ["Models (hardware: GPUs x nodes):"]
    for model in summary["models"]:
        fits = ", ".join(f"{name} {fit['gpus']}x{fit['nodes']}" for name, fit in model["hardware"].items())
        lines.append(
            f"  {model['name']:<24} {model['hf_repo']:<28} {model['precision']:<6} "
            f"{_size(model['disk_bytes']):>8}"
            f"  engines: {', '.join(model['engines'])}; hardware: {fits}"
        )
    lines.append("")
    lines.append("Engines:")
    for engine in summary["engines"]:
        bad = "; ".join(f"avoid {entry['version']}: {entry['reason']}" for entry in engine["known_bad"])
        lines.append(
            f"  {engine['name']:<10} {engine['display_name']:<32} versions: {', '.join(engine['versions'])}"
            f" ({'/'.join(engine['runtimes'])})" + (f"; {bad}" if bad else "")
        )
    lines.append("")
    lines.append("Hardware:")
    for spec in summary["hardware"]:
        precisions = "/".join(name for name in ("fp8", "fp4") if spec[name]) or "-"
        lines.append(
            f"  {spec['name']:<8} {spec['display_name']:<28} {spec['gpus_per_node']} GPUs x "
            f"{spec['gpu_memory_gib']} GiB, {spec['arch']}, {precisions}; "
            f"engines: {', '.join(spec['engines'])}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    summary = summarize(load_catalog())
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_text(summary))
    return 0
