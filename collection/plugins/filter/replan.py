"""Filters around the renders of glm_plan: the options the plan role renders it with (options_for_group), and
the two checked re-renders, for the driver's CUDA release (gpu_preflight's replan_*) and for the commit the
weights resolved a branch to (the plan role's pin_to_commit).

The decisions (whether a host keeps its plan, the options to render with, what may differ) are glm_deploy.replan's
Python; the roles call them here and show the result. Controller-side, imported when a filter runs, so that
without the package the task fails saying how to install it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleFilterError
from ansible_collections.glm.deploy.plugins.plugin_utils.glm_deploy_package import glm_deploy_imports


def replan_skip_reason(
    plan: Mapping[str, Any],
    *,
    replan: bool,
    options: Mapping[str, Any] | None,
    preflight_image: str | None,
    gpu_vendor: str | None,
) -> str:
    """Why this host keeps `plan` as rendered; '' when it is rendered again for the driver's CUDA release."""
    with glm_deploy_imports("the glm.deploy.replan_skip_reason filter"):
        from glm_deploy import replan as replanning
    return replanning.replan_skip_reason(
        replan=bool(replan),
        options=options,
        preflight_image=preflight_image,
        runtime=str(plan.get("runtime")),
        gpu_vendor=gpu_vendor,
    )


def replan_for_driver(
    plan: Mapping[str, Any],
    *,
    options: Mapping[str, Any] | None,
    cuda: str,
    chosen: Mapping[str, Any],
    driver_version: str,
) -> dict[str, Any]:
    """{plan, options}: `plan` rendered again with cuda_version=`cuda`, checked against the preflight's choice."""
    with glm_deploy_imports("the glm.deploy.replan_for_driver filter"):
        from glm_deploy import replan as replanning
        from glm_deploy.catalog import load_catalog
        from glm_deploy.errors import GlmDeployError
    try:
        return replanning.replan_for_driver(
            load_catalog(), plan, options=options, cuda=str(cuda), chosen=chosen, driver_version=str(driver_version)
        )
    except GlmDeployError as error:
        raise AnsibleFilterError(str(error)) from None


def options_for_group(
    options: Mapping[str, Any],
    *,
    model: str,
    engine: str,
    hardware: str,
    nodes: int | str | None,
    head_address: str,
) -> dict[str, Any]:
    """`options` plus head_address when the plan spans nodes (a one-node plan is rendered without it)."""
    with glm_deploy_imports("the glm.deploy.options_for_group filter"):
        from glm_deploy import replan as replanning
        from glm_deploy.catalog import load_catalog
        from glm_deploy.errors import GlmDeployError
    if not isinstance(options, Mapping):
        raise AnsibleFilterError(
            f"glm.deploy.options_for_group takes the plan options (a mapping), got {type(options).__name__}"
        )
    try:
        return replanning.options_for_group(
            load_catalog(),
            options,
            model=str(model),
            engine=str(engine),
            hardware=str(hardware),
            nodes=int(nodes or 0),
            head_address=str(head_address or ""),
        )
    except (GlmDeployError, ValueError) as error:
        raise AnsibleFilterError(f"glm.deploy.options_for_group: {error}") from None


def pin_to_commit(plan: Mapping[str, Any], *, options: Mapping[str, Any] | None, commit: str) -> dict[str, Any]:
    """{plan, options, kept}: `plan` rendered again with revision `commit`, or kept and why."""
    with glm_deploy_imports("the glm.deploy.pin_to_commit filter"):
        from glm_deploy import replan as replanning
        from glm_deploy.catalog import load_catalog
        from glm_deploy.errors import GlmDeployError
    try:
        return replanning.pin_to_commit(load_catalog(), plan, options=options, commit=str(commit or ""))
    except GlmDeployError as error:
        raise AnsibleFilterError(str(error)) from None


class FilterModule:
    """glm.deploy filters around the renders of glm_plan."""

    def filters(self) -> dict[str, object]:
        return {
            "replan_skip_reason": replan_skip_reason,
            "replan_for_driver": replan_for_driver,
            "options_for_group": options_for_group,
            "pin_to_commit": pin_to_commit,
        }
