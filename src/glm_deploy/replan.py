"""Rendering glm_plan again for the CUDA release a host's driver supports (the gpu_preflight role's re-plan).

The plan role renders glm_plan before any host is reached, for the CUDA release the renderer assumes (12.8,
Lambda's driver 570). Once the preflight has read the driver, the plan is rendered again with the same inputs plus
option cuda_version, so its image, container and cache directories are those of the image chosen for the driver.
The decisions live here, in Python, and the role only calls them (through the glm.deploy filters of the same
names) and shows the result:

- `replan_skip_reason`: why a host keeps the plan as rendered ('' when it is rendered again);
- `replan_for_driver`: the plan rendered again, checked to differ from the old one only in what follows the image,
  and to run the image the preflight chose; a `GlmDeployError` with the fix otherwise.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from glm_deploy.catalog import Catalog
from glm_deploy.errors import GlmDeployError
from glm_deploy.render import PlanOptions, render_plan

# What must be equal in the old and new plan: everything but the image and what hangs on it.
SAME_KEYS = (
    "model",
    "engine",
    "engine_version",
    "hardware",
    "runtime",
    "served_model_name",
    "host",
    "port",
    "model_revision",
    "revision_pinned",
    "node_count",
    "gpus_per_node",
    "tensor_parallel",
    "pipeline_parallel",
    "speculative",
    "env_file",
    "secret_env",
    "secret_files",
)
# Environment that follows the image (besides the cache directories): the minor-version compatibility switch.
IMAGE_ENVIRONMENT = ("NVIDIA_DISABLE_REQUIRE",)
PLACEHOLDER_HEAD = "HEAD_ADDRESS"


def replan_skip_reason(
    *,
    replan: bool,
    options: Mapping[str, Any] | None,
    preflight_image: str | None,
    runtime: str,
    gpu_vendor: str | None,
) -> str:
    """Why this host keeps the plan as rendered, or '' when it is rendered again for the driver's CUDA."""
    options = options or {}
    if not replan:
        return "gpu_preflight_replan is false"
    for option in ("cuda_version", "image"):
        value = str(options.get(option) or "")
        if value:
            return f"option {option}={value} is set in the plan options"
    if (preflight_image or "").strip():
        return f"gpu_preflight_image={preflight_image} is set"
    if runtime != "container":
        return f"the plan runs {runtime}, not a container"
    if gpu_vendor != "nvidia":
        return f"this host has {gpu_vendor or 'no'} GPUs, whose images do not depend on a CUDA driver"
    return ""


def head_address(plan: Mapping[str, Any], catalog: Catalog) -> str:
    """The head address a multi-node plan was rendered with, read back from the head node's argv ('' if none).

    glm_plan does not record its options; the plan role adds head_address on a multi-node plan, and the head's
    argv carries it after the engine's head-address flag (with the head port appended by some engines).
    """
    if int(plan["node_count"]) <= 1:
        return ""
    multi_node = catalog.engines[plan["engine"]].multi_node
    if multi_node is None or not multi_node.head_address_flag:
        return ""
    argv: Sequence[str] = plan["nodes"][0]["argv"]
    if multi_node.head_address_flag not in argv:
        return ""
    value = str(argv[list(argv).index(multi_node.head_address_flag) + 1])
    suffix = f":{multi_node.head_port}"
    if multi_node.head_port is not None and value.endswith(suffix):
        value = value[: -len(suffix)]
    return "" if value == PLACEHOLDER_HEAD else value


def replan_options(
    options: Mapping[str, Any] | None, cuda: str, plan: Mapping[str, Any], catalog: Catalog
) -> dict[str, Any]:
    """The plan options plus cuda_version, and the multi-node head address glm_plan was rendered with."""
    result = {**(options or {}), "cuda_version": cuda}
    head = head_address(plan, catalog)
    if head and "head_address" not in (options or {}):
        result["head_address"] = head
    return result


def _view(plan: Mapping[str, Any], volatile: set[str]) -> dict[str, Any]:
    """What a re-plan must keep: the SAME_KEYS, every node's argv and environment, the cache root."""
    view = {key: plan.get(key) for key in SAME_KEYS}
    view["argv"] = [node["argv"] for node in plan["nodes"]]
    view["node env"] = [
        {name: value for name, value in node["env"].items() if name not in volatile} for node in plan["nodes"]
    ]
    view["hf_home"] = plan.get("cache_env", {}).get("HF_HOME", "")
    view["cache_root"] = list(dict.fromkeys(os.path.dirname(os.path.dirname(d)) for d in plan["cache_dirs"][1:]))
    return view


def plan_drift(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What differs between two plans besides the image and what follows it (cache directories, image env)."""
    volatile = set(old.get("cache_env", {})) | set(new.get("cache_env", {})) | set(IMAGE_ENVIRONMENT)
    before, after = _view(old, volatile), _view(new, volatile)
    return [key for key in before if before[key] != after.get(key)]


def _base_image(plan: Mapping[str, Any]) -> str:
    """The image that meets the driver: the plan's image, or the base a derived image is built on."""
    return str((plan.get("image_build") or {}).get("base") or plan["image"])


def replan_for_driver(
    catalog: Catalog,
    old: Mapping[str, Any],
    *,
    options: Mapping[str, Any] | None,
    cuda: str,
    chosen: Mapping[str, Any],
    driver_version: str,
) -> dict[str, Any]:
    """glm_plan rendered again for `cuda`, checked against the old plan and the image the preflight chose.

    Returns {"plan": the new plan, "options": the options it was rendered with}.
    """
    rendered_options = replan_options(options, cuda, old, catalog)
    new = render_plan(
        catalog,
        model=old["model"],
        engine=old["engine"],
        hardware=old["hardware"],
        nodes=int(old["node_count"]),
        options=PlanOptions.from_mapping(rendered_options),
    ).to_dict()
    drift = plan_drift(old, new)
    if drift:
        raise GlmDeployError(
            f"rendered again with cuda_version={cuda}, the plan differs from glm_plan in more than its image: "
            f"{', '.join(drift)}. gpu_preflight_plan_options ({_json(options or {})}) are not the options glm_plan "
            "was rendered with: set them to the plan role's plan_options, or set option "
            f"cuda_version={cuda} in glm_options so the plan role renders the plan for this driver and this role "
            "keeps it."
        )
    container = new.get("container") or {}
    wanted_env = dict(chosen.get("env") or {})
    if (
        _base_image(new) != chosen["image"]
        or container.get("image") != new["image"]
        or any(container.get("env", {}).get(name) != value for name, value in wanted_env.items())
    ):
        raise GlmDeployError(
            f"bug: glm_plan rendered with cuda_version={cuda} runs {_base_image(new)} (container image "
            f"{container.get('image')}, environment {_json(container.get('env', {}))}), but the preflight chose "
            f"{chosen['image']} (environment {_json(wanted_env)}) for driver {driver_version}: {chosen.get('reason')}. "
            "The renderer (glm_deploy.render) and the preflight (glm_deploy.images.choose_image) disagree; please "
            f"report it. Until it is fixed, set option image={chosen['image']} in glm_options."
        )
    return {"plan": new, "options": {**(options or {}), "cuda_version": cuda}}


def _json(value: object) -> str:
    return json.dumps(value, sort_keys=True)
