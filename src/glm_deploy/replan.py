"""The renders of glm_plan in a run, and the decisions around them, as plain Python.

The plan role renders glm_plan once, before any host is reached, from the inventory's options:
`options_for_group` adds the head node's address to them when (and only when) the plan spans nodes. Two later
steps may render it again, each with one more input that only a host can give, and each checked here against the
plan it replaces, so a re-render can change nothing but what that input decides:

- the CUDA release the host's driver supports (gpu_preflight's re-plan, before any change to the host):
  `replan_skip_reason` says why a host keeps the plan as rendered ('' when it is rendered again);
  `replan_for_driver` renders it again and checks that only the image and what hangs on it changed, and that it
  runs the image the preflight chose;
- the commit a branch resolved to (the plan role's pin.yml, once the weights role has fetched that commit):
  `pin_to_commit` renders it again with that commit and checks that only the revision changed.

The roles only call these (through the glm.deploy filters of the same names) and show the result; a
`GlmDeployError` carries the fix.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from glm_deploy.catalog import Catalog
from glm_deploy.errors import GlmDeployError
from glm_deploy.render import PlanOptions, render_plan
from glm_deploy.render.context import check_nodes
from glm_deploy.validation import COMMIT, clip

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
# What a pin changes besides the revision words in the argv: the revision fields and the warning about a branch.
PIN_FIELDS = ("model_revision", "revision_pinned", "warnings")


def options_for_group(
    catalog: Catalog,
    options: Mapping[str, Any],
    *,
    model: str,
    engine: str,
    hardware: str,
    nodes: int | None,
    head_address: str,
) -> dict[str, Any]:
    """The options the plan role renders glm_plan with, for an inventory group whose first host is the head.

    A plan that spans nodes gets `head_address` (unless the options name one); a one-node plan is rendered without
    it, so a fleet of one-node replicas keeps the release the controller renders. Names the catalog does not know
    leave the options as they are: the render right after says what is wrong with them.
    """
    chosen = dict(options)
    if chosen.get("head_address") or not head_address:
        return chosen
    model_spec, engine_spec = catalog.models.get(model), catalog.engines.get(engine)
    hardware_spec = catalog.hardware.get(hardware)
    profile = model_spec.hardware.get(hardware) if model_spec is not None else None
    if model_spec is None or engine_spec is None or hardware_spec is None or profile is None or profile.nodes is None:
        return chosen
    if check_nodes(catalog, model_spec, hardware_spec, engine_spec, nodes or None) > 1:
        chosen["head_address"] = head_address
    return chosen


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
    return _with_head({**(options or {}), "cuda_version": cuda}, options, plan, catalog)


def _with_head(
    result: dict[str, Any], options: Mapping[str, Any] | None, plan: Mapping[str, Any], catalog: Catalog
) -> dict[str, Any]:
    """`result` plus the head address `plan` was rendered with, where `options` do not name one."""
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
    new = _render_again(catalog, old, replan_options(options, cuda, old, catalog))
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


def pin_to_commit(
    catalog: Catalog, old: Mapping[str, Any], *, options: Mapping[str, Any] | None, commit: str
) -> dict[str, Any]:
    """glm_plan rendered again with revision `commit`, when it names a branch or tag and `commit` is a commit.

    Returns {"plan", "options", "kept"}: "kept" says why the plan stays as it is ('' when it was pinned). The new
    plan must differ from the old one only in the revision: its fields, the warning about a branch, and the argv
    words that named the branch, which now name the commit; a `GlmDeployError` otherwise.
    """
    options = dict(options or {})
    if old.get("revision_pinned"):
        return {"plan": old, "options": options, "kept": f"the plan names commit {old.get('model_revision')}"}
    if not commit:
        return {"plan": old, "options": options, "kept": "no commit to pin to (plan_pin_commit is empty)"}
    if not COMMIT.fullmatch(commit):
        return {"plan": old, "options": options, "kept": f"plan_pin_commit {clip(commit)} is not a 40-hex commit"}
    pinned_options = {**options, "revision": commit}
    new = _render_again(catalog, old, _with_head(dict(pinned_options), options, old, catalog))
    branch = str(old.get("model_revision") or "")
    drift = [
        key
        for key in sorted(set(old) | set(new))
        if key not in PIN_FIELDS and not _same_but_revision(old.get(key), new.get(key), branch, commit)
    ]
    if drift or not new.get("revision_pinned") or new.get("model_revision") != commit:
        raise GlmDeployError(
            f"pinned to commit {commit}, the plan differs from glm_plan in more than its revision "
            f"({branch!r}): {', '.join(drift) or 'model_revision, revision_pinned'}. glm_plan_options "
            f"({_json(options)}) are not the options glm_plan was rendered with: leave glm_plan_options as the plan "
            f"role set them, or set revision={commit} in glm_options so the plan is rendered pinned."
        )
    return {"plan": new, "options": pinned_options, "kept": ""}


def _same_but_revision(old: object, new: object, branch: str, commit: str) -> bool:
    """Whether `new` is `old` with the words that named `branch` naming `commit` instead, at the same places."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        return old.keys() == new.keys() and all(
            _same_but_revision(old[key], new[key], branch, commit) for key in old
        )
    if isinstance(old, list) and isinstance(new, list):
        return len(old) == len(new) and all(
            _same_but_revision(a, b, branch, commit) for a, b in zip(old, new, strict=True)
        )
    return old == new or (old == branch and new == commit)


def _render_again(catalog: Catalog, old: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """The plan `old` was rendered for (model, engine, hardware, node count), rendered with `options`."""
    return render_plan(
        catalog,
        model=old["model"],
        engine=old["engine"],
        hardware=old["hardware"],
        nodes=int(old["node_count"]),
        options=PlanOptions.from_mapping(options),
    ).to_dict()


def _json(value: object) -> str:
    return json.dumps(value, sort_keys=True)
