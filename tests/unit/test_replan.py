"""glm_deploy.replan: the gpu_preflight role's decisions about rendering glm_plan again, as plain Python.

The role-level behaviour (real ansible-playbook, nvidia-smi stand-ins) is in tests/gpu/test_gpu_preflight_replan.py;
these pin each decision on its own, including the branches that need a host the play tests do not build.
"""

from __future__ import annotations

import copy

import pytest

from glm_deploy.catalog import load_catalog
from glm_deploy.errors import GlmDeployError
from glm_deploy.images import choose_image
from glm_deploy.render import PlanOptions, render_plan
from glm_deploy.replan import head_address, plan_drift, replan_for_driver, replan_options, replan_skip_reason

CATALOG = load_catalog()


def _plan(model: str = "glm-5.1-fp8", engine: str = "vllm", options: dict | None = None) -> dict:
    return render_plan(
        CATALOG, model=model, engine=engine, hardware="b200", options=PlanOptions.from_mapping(options or {})
    ).to_dict()


def _chosen(plan: dict, driver: str) -> dict:
    return choose_image(
        CATALOG,
        plan["engine"],
        driver_version=driver,
        engine_version=plan["engine_version"],
        explicit_image=None,
        model=plan["model"],
        vendor="nvidia",
        gpu_arch=None,
        host_cuda=None,
    ).to_dict()


DEFAULTS = {"replan": True, "options": {}, "preflight_image": "", "runtime": "container", "gpu_vendor": "nvidia"}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"replan": False}, "gpu_preflight_replan is false"),
        ({"options": {"cuda_version": "12.9"}}, "option cuda_version=12.9 is set in the plan options"),
        ({"options": {"image": "my/image:1"}}, "option image=my/image:1 is set in the plan options"),
        ({"preflight_image": "my/image:2"}, "gpu_preflight_image=my/image:2 is set"),
        ({"runtime": "native"}, "the plan runs native, not a container"),
        ({"gpu_vendor": "amd"}, "this host has amd GPUs, whose images do not depend on a CUDA driver"),
        ({"gpu_vendor": None}, "this host has no GPUs, whose images do not depend on a CUDA driver"),
    ],
)
def test_each_reason_to_keep_the_plan_is_named(change: dict, reason: str) -> None:
    assert replan_skip_reason(**{**DEFAULTS, **change}) == reason


def test_a_container_plan_on_nvidia_without_overrides_is_rendered_again() -> None:
    assert replan_skip_reason(**DEFAULTS) == ""
    # Empty overrides are not overrides.
    empty = {"options": {"cuda_version": "", "image": None}, "preflight_image": "  "}
    assert replan_skip_reason(**{**DEFAULTS, **empty}) == ""


def test_the_head_address_is_read_back_from_a_multi_node_plan() -> None:
    plan = _plan("glm-5", "sglang", {"head_address": "10.0.0.5"})
    assert plan["node_count"] == 2
    assert head_address(plan, CATALOG) == "10.0.0.5"
    options = replan_options({}, "13.0", plan, CATALOG)
    assert options == {"cuda_version": "13.0", "head_address": "10.0.0.5"}
    # An address the user gave is theirs; a one-node plan has none.
    assert replan_options({"head_address": "h"}, "13.0", plan, CATALOG)["head_address"] == "h"
    assert head_address(_plan(), CATALOG) == ""


def test_only_what_follows_the_image_may_differ() -> None:
    old = _plan()
    new = _plan(options={"cuda_version": "13.0"})
    assert old["image"] != new["image"] and old["cache_dirs"] != new["cache_dirs"]
    assert plan_drift(old, new) == []
    for key, value in (("port", 9999), ("served_model_name", "other"), ("node_count", 3)):
        changed = copy.deepcopy(new)
        changed[key] = value
        assert plan_drift(old, changed) == [key]
    changed = copy.deepcopy(new)
    changed["nodes"][0]["argv"] = [*changed["nodes"][0]["argv"], "--extra"]
    assert plan_drift(old, changed) == ["argv"]


def test_driver_580_moves_the_plan_to_the_cuda_13_image_and_keeps_the_options() -> None:
    old = _plan()
    chosen = _chosen(old, "580.95.05")
    result = replan_for_driver(CATALOG, old, options={}, cuda="13.0", chosen=chosen, driver_version="580.95.05")
    assert result["plan"]["image"] == chosen["image"] != old["image"]
    assert result["options"] == {"cuda_version": "13.0"}


def test_options_other_than_the_plans_are_refused_with_the_fix() -> None:
    old = _plan()
    with pytest.raises(GlmDeployError) as raised:
        replan_for_driver(
            CATALOG, old, options={"port": 8123}, cuda="13.0", chosen=_chosen(old, "580.95.05"), driver_version="580"
        )
    message = str(raised.value)
    assert "differs from glm_plan in more than its image: port" in message
    assert "set option cuda_version=13.0 in glm_options" in message


def test_a_renderer_and_preflight_disagreement_is_reported_as_a_bug() -> None:
    old = _plan()
    chosen = {**_chosen(old, "580.95.05"), "image": "somebody/else:1"}
    with pytest.raises(GlmDeployError) as raised:
        replan_for_driver(CATALOG, old, options={}, cuda="13.0", chosen=chosen, driver_version="580.95.05")
    assert str(raised.value).startswith("bug: glm_plan rendered with cuda_version=13.0")
    assert "set option image=somebody/else:1 in glm_options" in str(raised.value)
