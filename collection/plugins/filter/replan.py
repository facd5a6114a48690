"""Filters of the gpu_preflight role's re-plan: glm_plan rendered again for the driver's CUDA release.

The decisions (whether a host keeps its plan, the options to render with, what may differ) are glm_deploy.replan's
Python; the role calls them here and shows the result. Controller-side, imported when a filter runs, so that
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


class FilterModule:
    """glm.deploy filters of the GPU preflight's re-plan."""

    def filters(self) -> dict[str, object]:
        return {"replan_skip_reason": replan_skip_reason, "replan_for_driver": replan_for_driver}
