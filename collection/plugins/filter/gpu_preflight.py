"""Controller-side filter: the GPU-host preflight of glm_deploy, fed with what glm.deploy.gpu_facts read.

Filters run on the controller, where glm-deploy is installed, so the checks and the image choice are the same
Python code the CLI and the tests use (glm_deploy.preflight); the role only gathers facts on the host and
asserts on the result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ansible.errors import AnsibleFilterError
from ansible_collections.glm.deploy.plugins.plugin_utils.glm_deploy_package import glm_deploy_imports

DOCUMENTATION = r"""
name: gpu_preflight
short_description: Check a GPU host against a glm-deploy plan
description:
  - Takes the result of M(glm.deploy.gpu_facts) and the plan (C(glm_plan)) and returns the image for this
    host's driver plus every finding (wrong GPU, too few GPUs, GPU memory, disk, driver too old for the
    image, Fabric Manager, NVIDIA runtime, AMD devices).
  - C(image) is the image that will run (the explicit image, else the plan's) as checked against the driver;
    C(driver_image) is the catalog's own choice for this driver whatever the plan holds (what a plan rendered
    with option C(cuda_version=driver_cuda) runs), and C(driver_cuda) the CUDA release the driver supports
    (nvidia-smi's header, else derived from the driver version; null on AMD hosts).
options:
  _input:
    description: The registered result of M(glm.deploy.gpu_facts).
    type: dict
    required: true
  plan:
    description: The plan (Plan.to_dict()), as the glm.deploy.plan role sets it in C(glm_plan).
    type: dict
    required: true
  explicit_image:
    description: An image the user asked for; checked against the driver instead of the plan's image.
    type: str
  fixers:
    description: Roles of this play that run after the preflight and fix what they own (e.g. gpu_host).
    type: list
    elements: str
  kv_reserve_gib:
    description: GPU memory each GPU must keep for the KV cache beyond its share of the weights.
    type: float
  cache_reserve_gib:
    description: Disk kept for JIT caches and images beyond the weights.
    type: float
"""


def gpu_preflight(
    host_facts: Mapping[str, Any],
    plan: Mapping[str, Any],
    *,
    explicit_image: str | None = None,
    fixers: Sequence[str] = (),
    kv_reserve_gib: float | None = None,
    cache_reserve_gib: float | None = None,
) -> dict[str, Any]:
    with glm_deploy_imports("the glm.deploy.gpu_preflight filter"):
        from glm_deploy.catalog import load_catalog
        from glm_deploy.errors import GlmDeployError
        from glm_deploy.images import choose_image, driver_cuda
        from glm_deploy.preflight import DEFAULT_CACHE_RESERVE_GIB, DEFAULT_KV_RESERVE_GIB
        from glm_deploy.preflight import gpu_preflight as run_preflight
    if not isinstance(host_facts, Mapping) or "gpu" not in host_facts:
        raise AnsibleFilterError(
            f"glm.deploy.gpu_preflight expects the registered result of glm.deploy.gpu_facts, got {host_facts!r:.200}"
        )
    catalog = load_catalog()
    try:
        result = run_preflight(
            catalog,
            host_facts,
            plan,
            explicit_image=explicit_image or None,
            fixers=list(fixers or ()),
            kv_reserve_gib=DEFAULT_KV_RESERVE_GIB if kv_reserve_gib is None else float(kv_reserve_gib),
            cache_reserve_gib=(DEFAULT_CACHE_RESERVE_GIB if cache_reserve_gib is None else float(cache_reserve_gib)),
        )
    except GlmDeployError as error:
        raise AnsibleFilterError(str(error)) from None
    answer = result.to_dict()
    # The catalog's image for this driver, as if the plan had been rendered with the driver's CUDA: the
    # gpu_preflight role re-renders glm_plan with driver_cuda and checks that the new plan runs this image.
    gpu = host_facts.get("gpu") or {}
    hardware = catalog.hardware.get(str(plan.get("hardware")))
    answer["driver_cuda"] = None
    answer["driver_image"] = None
    if hardware is None or gpu.get("vendor") != hardware.vendor or plan.get("runtime", "container") != "container":
        return answer
    driver_version = str(gpu.get("driver_version") or "0")
    try:
        if hardware.vendor == "nvidia":
            answer["driver_cuda"] = gpu.get("cuda_version") or driver_cuda(catalog.cuda_driver_minimum, driver_version)
        answer["driver_image"] = choose_image(
            catalog,
            str(plan.get("engine")),
            driver_version=driver_version,
            engine_version=plan.get("engine_version"),
            explicit_image=None,
            model=plan.get("model"),
            vendor=hardware.vendor,
            gpu_arch=gpu.get("arch") if isinstance(gpu.get("arch"), str) else None,
            host_cuda=gpu.get("cuda_version"),
        ).to_dict()
    except GlmDeployError:
        # No catalog image fits this driver: the findings above already say so (and how to fix it).
        pass
    return answer


class FilterModule:
    """glm.deploy GPU-host filters."""

    def filters(self) -> dict[str, object]:
        return {"gpu_preflight": gpu_preflight}
