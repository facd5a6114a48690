"""Preflight checks for a GPU host, run before anything on the host changes.

`check_gpu_host` is a pure function: it reads the facts the `glm.deploy.gpu_facts` module returns
(GPUs, driver, fabric, Docker runtimes, AMD devices, free disk), the plan (`Plan.to_dict()`) and the
catalog's hardware entry, and returns findings. Each finding says what is wrong on this host and what to do
about it. A finding that a later role of the same play will fix (the NVIDIA container toolkit, a driver branch
the user asked for) names that role and does not block (glm_deploy.host_findings). The NVIDIA-only checks (driver,
Fabric Manager, NVLink, each GPU's health) are in glm_deploy.nvidia_checks.

`gpu_preflight` wraps it with the image choice (glm_deploy.images): the chosen image's CUDA release is what
the driver is checked against, and a refused image becomes a finding rather than an exception, so the user
sees every problem of a host at once.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from glm_deploy.catalog import Catalog, HardwareSpec
from glm_deploy.errors import InputError
from glm_deploy.host_findings import GPU_HOST_DRIVER, GPU_HOST_ROLE, Finding, make_finding
from glm_deploy.images import DriverTooOldError, ImageChoice, choose_image
from glm_deploy.nvidia_checks import health_checks, nvidia_checks

GIB = 1024**3
MIB = 1024**2
# Engines keep part of each GPU outside their weight + KV pool (activations, CUDA graphs, NCCL buffers):
# SGLang's static fraction is 0.8-0.9 and vLLM's default utilisation 0.9, so 0.9 is the most the pool can use.
DEFAULT_USABLE_GPU_FRACTION = 0.9
# A KV cache smaller than this serves little more than one long request.
DEFAULT_KV_RESERVE_GIB = 8.0
# JIT caches (DeepGEMM, inductor, Triton, FlashInfer), engine images and their layers.
DEFAULT_CACHE_RESERVE_GIB = 64.0


@dataclass(frozen=True)
class PreflightResult:
    findings: tuple[Finding, ...]
    image: ImageChoice | None
    needs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def blocking(self) -> tuple[Finding, ...]:
        return tuple(finding for finding in self.findings if finding.blocking)

    def to_dict(self) -> dict[str, Any]:
        return {
            "findings": [finding.to_dict() for finding in self.findings],
            "blocking": [str(finding) for finding in self.blocking],
            "warnings": [str(finding) for finding in self.findings if not finding.blocking],
            "image": self.image.to_dict() if self.image else None,
            "needs": dict(self.needs),
        }


def _gib(value: float) -> str:
    return f"{value / GIB:.1f} GiB"


def _matching_hardware(names: list[str], known: Mapping[str, HardwareSpec]) -> list[str]:
    return sorted(
        name
        for name, spec in known.items()
        if spec.gpu_name_patterns
        and all(
            any(re.search(pattern, gpu, re.IGNORECASE) for pattern in spec.gpu_name_patterns) for gpu in names
        )
    )


def weights_bytes(plan: Mapping[str, Any]) -> int:
    """The bytes the weights take on disk and, spread over the plan's GPUs, in GPU memory."""
    value = plan.get("weights_bytes", plan.get("disk_bytes"))
    if not isinstance(value, int) or value <= 0:
        raise InputError(
            f"plan has no positive weights_bytes/disk_bytes (got {value!r})",
            hint="render the plan with glm_deploy.render.render_plan",
        )
    return value


def check_gpu_host(
    gpu: Mapping[str, Any],
    plan: Mapping[str, Any],
    *,
    hardware: HardwareSpec,
    disk: Mapping[str, Any],
    docker: Mapping[str, Any],
    devices: Mapping[str, Any] | None = None,
    health: Mapping[str, Any] | None = None,
    image_cuda: str | None = None,
    cuda_driver_minimum: Mapping[str, int] | None = None,
    known_hardware: Mapping[str, HardwareSpec] | None = None,
    fixers: Collection[str] = (),
    kv_reserve_gib: float = DEFAULT_KV_RESERVE_GIB,
    cache_reserve_gib: float = DEFAULT_CACHE_RESERVE_GIB,
    usable_gpu_fraction: float = DEFAULT_USABLE_GPU_FRACTION,
) -> list[Finding]:
    """Everything wrong with this host for this plan; an empty list means go ahead.

    gpu, docker, devices, disk, health: the `gpu`, `docker`, `devices`, `disk` and `health` results of
    glm.deploy.gpu_facts; health None means facts from a gpu_facts that did not read it.
    disk may carry `weights_present_bytes` (weights already in the cache from an earlier run).
    fixers: roles of this play that run after the preflight and may fix what they own (e.g. "gpu_host").
    """
    findings: list[Finding] = []
    names = [str(entry["name"]) for entry in gpu.get("gpus", [])]
    count = int(gpu.get("count", len(names)))
    vendor = str(gpu.get("vendor"))
    wanted_per_node = int(plan.get("gpus_per_node") or hardware.gpus_per_node)
    nodes = int(plan.get("node_count") or 1)

    # What is on the host against what the catalog says the plan's hardware is.
    if vendor != hardware.vendor:
        findings.append(
            make_finding(
                "gpu_vendor",
                f"this host has {vendor} GPUs ({', '.join(sorted(set(names))) or 'none'}); the plan is for "
                f"{hardware.display_name} ({hardware.vendor})",
                _hardware_fix(names, hardware, known_hardware),
                fixers=fixers,
            )
        )
    else:
        wrong = sorted(
            {
                name
                for name in names
                if not any(re.search(pattern, name, re.IGNORECASE) for pattern in hardware.gpu_name_patterns)
            }
        )
        if wrong:
            findings.append(
                make_finding(
                    "gpu_model",
                    f"GPU model {', '.join(wrong)} is not {hardware.display_name} (expected a name matching "
                    f"{' or '.join(hardware.gpu_name_patterns)})",
                    _hardware_fix(names, hardware, known_hardware),
                    fixers=fixers,
                )
            )
    if count < wanted_per_node:
        # A GPU that answers nvidia-smi only with errors is not counted; the host may well have enough GPUs.
        readable = {entry.get("index") for entry in gpu.get("gpus", [])}
        broken = [
            str(entry.get("index"))
            for entry in (health or {}).get("gpus") or []
            if entry.get("errors") and entry.get("index") not in readable
        ]
        findings.append(
            make_finding(
                "gpu_count",
                f"this host has {count} GPU(s); the plan needs {wanted_per_node} per node on {nodes} node(s)"
                + (f" (GPU {', '.join(broken)} answers only with errors, see gpu_error)" if broken else ""),
                (f"recover GPU {', '.join(broken)} (see gpu_error), or " if broken else "")
                + f"use an instance with {wanted_per_node} GPUs ({hardware.display_name}), or a plan "
                "with fewer "
                "GPUs per node (more nodes, or a smaller/lower-precision model)",
                fixers=fixers,
            )
        )

    # GPU memory: each GPU holds its share of the weights plus a KV cache.
    weights = weights_bytes(plan)
    gpus_in_plan = max(1, wanted_per_node * nodes)
    share = weights / gpus_in_plan
    memory_mib = int(gpu.get("memory_mib") or 0)
    usable = memory_mib * MIB * usable_gpu_fraction
    needed = share + kv_reserve_gib * GIB
    if memory_mib and needed > usable:
        nodes_needed = _nodes_for(weights, wanted_per_node, memory_mib, usable_gpu_fraction, kv_reserve_gib)
        findings.append(
            make_finding(
                "gpu_memory",
                f"each GPU needs {_gib(share)} of weights ({_gib(weights)} over {gpus_in_plan} GPUs) plus a "
                f"{kv_reserve_gib:.0f} GiB KV cache = {_gib(needed)}, but {_gib(memory_mib * MIB)} "
                "GPUs leave "
                f"{_gib(usable)} to the engine",
                f"spread the model over more GPUs (nodes: {nodes_needed})"
                if nodes_needed
                else "use GPUs with more memory or a lower-precision model",
                fixers=fixers,
            )
        )

    # Disk: the weights (minus what an earlier run already downloaded) plus the JIT and image caches.
    free = int(disk.get("free_bytes") or 0)
    present = int(disk.get("weights_present_bytes") or 0)
    disk_needed = max(0, weights - present) + int(cache_reserve_gib * GIB)
    if free < disk_needed:
        findings.append(
            make_finding(
                "disk",
                f"{disk.get('checked_path', disk.get('path'))} has {_gib(free)} free; the weights need "
                f"{_gib(max(0, weights - present))} more and the caches ~{cache_reserve_gib:.0f} GiB "
                f"({_gib(disk_needed)} in all)",
                f"free {_gib(disk_needed - free)} there, or attach a larger file system at "
                f"{disk.get('path')} "
                "(Lambda: a persistent file system keeps the weights between instances)",
                fixers=fixers,
            )
        )

    if vendor == "nvidia" and hardware.vendor == "nvidia":
        findings += nvidia_checks(gpu, hardware, image_cuda, cuda_driver_minimum or {}, fixers)
        findings += health_checks(health, fixers)

    if plan.get("runtime", "container") == "container":
        findings += _container_checks(vendor, docker, devices or {}, fixers)
    return findings


def _nodes_for(weights: int, per_node: int, memory_mib: int, fraction: float, kv_gib: float) -> int | None:
    per_gpu = memory_mib * MIB * fraction - kv_gib * GIB
    if per_gpu <= 0 or per_node <= 0:
        return None
    for nodes in range(1, 9):
        if weights / (per_node * nodes) <= per_gpu:
            return nodes
    return None


def _hardware_fix(names: list[str], hardware: HardwareSpec, known: Mapping[str, HardwareSpec] | None) -> str:
    matching = _matching_hardware(names, known or {}) if names else []
    if matching:
        return (
            f"deploy with hardware {' or '.join(matching)} (what this host has), or run on a "
            f"{hardware.display_name} host"
        )
    return f"run on a {hardware.display_name} host, or add this GPU to the catalog's hardware.yml"


def _container_checks(
    vendor: str, docker: Mapping[str, Any], devices: Mapping[str, Any], fixers: Collection[str]
) -> list[Finding]:
    findings: list[Finding] = []
    if not docker.get("present"):
        findings.append(
            make_finding(
                "docker",
                f"Docker is not usable here ({docker.get('error') or 'not installed'}); the engine "
                "runs as a container",
                "install Docker (`apt-get install docker.io` on Ubuntu 24.04; Lambda's image ships "
                "it) and start it",
                fixers=fixers,
            )
        )
        return findings
    if docker.get("error"):
        findings.append(
            make_finding(
                "docker",
                f"Docker does not answer: {docker['error']}",
                "start it (`systemctl start docker`) and check `docker info`",
                fixers=fixers,
            )
        )
        return findings
    if vendor == "nvidia" and not docker.get("nvidia_runtime"):
        findings.append(
            make_finding(
                "container_runtime",
                "Docker has no NVIDIA runtime (runtimes: "
                f"{', '.join(docker.get('runtimes') or []) or 'none'}); "
                "containers would not see the GPUs",
                "install nvidia-container-toolkit and run `nvidia-ctk runtime configure "
                "--runtime=docker` then "
                "restart Docker (the gpu_host role does both)",
                fixers=fixers,
                fixable_by=GPU_HOST_ROLE,
            )
        )
    if vendor == "amd":
        missing = [path for path, key in (("/dev/kfd", "kfd"), ("/dev/dri", "dri")) if not devices.get(key)]
        if missing:
            findings.append(
                make_finding(
                    "amd_devices",
                    f"{' and '.join(missing)} missing: the amdgpu kernel driver is not loaded, so "
                    "containers cannot "
                    "reach the GPUs",
                    "install the amdgpu-dkms driver of your ROCm release and reboot; check `dmesg | "
                    "grep amdgpu`",
                    fixers=fixers,
                )
            )
    return findings


def _choose(
    catalog: Catalog,
    plan: Mapping[str, Any],
    gpu: Mapping[str, Any],
    hardware: HardwareSpec,
    image: str | None,
) -> ImageChoice:
    return choose_image(
        catalog,
        str(plan.get("engine")),
        driver_version=str(gpu.get("driver_version") or "0"),
        engine_version=plan.get("engine_version"),
        explicit_image=image,
        model=plan.get("model"),
        vendor=str(gpu.get("vendor") or hardware.vendor),
        gpu_arch=gpu.get("arch") if isinstance(gpu.get("arch"), str) else None,
        host_cuda=gpu.get("cuda_version"),
    )


def _image_findings(
    catalog: Catalog,
    plan: Mapping[str, Any],
    gpu: Mapping[str, Any],
    hardware: HardwareSpec,
    *,
    explicit_image: str | None,
    fixers: Collection[str],
) -> tuple[ImageChoice | None, list[Finding]]:
    """Check the image that will run (explicit, else the plan's) against this host's driver."""
    # A derived image (transformers upgrade) is built on the host from a catalog image: that base is what
    # meets the driver, and what the catalog knows the CUDA release of.
    image_build = plan.get("image_build") or {}
    to_run = explicit_image or image_build.get("base") or plan.get("image") or None
    try:
        image = _choose(catalog, plan, gpu, hardware, to_run)
    except InputError as error:
        return None, [
            make_finding(
                "image",
                error.message,
                error.hint or "choose another image",
                fixers=fixers,
                fixable_by=GPU_HOST_DRIVER if isinstance(error, DriverTooOldError) else None,
            )
        ]
    findings = [
        make_finding("image", warning, "see the warning", fixers=fixers, severity="warning")
        for warning in image.warnings
    ]
    container = plan.get("container") or {}
    container_env = container.get("env") or {}
    missing_env = {name: value for name, value in image.env.items() if container_env.get(name) != value}
    if missing_env:
        settings = ", ".join(f"{name}={value}" for name, value in missing_env.items())
        findings.append(
            make_finding(
                "image",
                f"{image.reason}, but the plan's container environment lacks {settings}",
                f"render the plan with option cuda_version={gpu.get('cuda_version')} (this host's CUDA), "
                "which adds it",
                fixers=fixers,
            )
        )
    if not explicit_image and to_run:
        try:
            best = _choose(catalog, plan, gpu, hardware, None)
        except InputError:
            best = None
        if best is not None and best.image != image.image:
            findings.append(
                make_finding(
                    "image",
                    f"the plan runs {image.image} (CUDA {image.cuda}); {best.image} (CUDA {best.cuda}) is "
                    f"the catalog's image for this driver ({gpu.get('driver_version')})",
                    f"render the plan with option cuda_version={gpu.get('cuda_version')} to use it",
                    fixers=fixers,
                    severity="warning",
                )
            )
    return image, findings


def gpu_preflight(
    catalog: Catalog,
    host_facts: Mapping[str, Any],
    plan: Mapping[str, Any],
    *,
    explicit_image: str | None = None,
    fixers: Collection[str] = (),
    kv_reserve_gib: float = DEFAULT_KV_RESERVE_GIB,
    cache_reserve_gib: float = DEFAULT_CACHE_RESERVE_GIB,
) -> PreflightResult:
    """Check the image the plan runs and every host requirement; host_facts is the gpu_facts module's result.

    explicit_image overrides the plan's image (the user's `image` option); without either the catalog's image
    for this driver is chosen.
    """
    hardware_name = str(plan.get("hardware"))
    if hardware_name not in catalog.hardware:
        raise InputError(
            f"plan hardware {hardware_name!r} is not in the catalog",
            hint=f"use one of: {', '.join(sorted(catalog.hardware))}",
        )
    hardware = catalog.hardware[hardware_name]
    gpu = host_facts.get("gpu") or {}
    image: ImageChoice | None = None
    findings: list[Finding] = []
    if plan.get("runtime", "container") == "container" and gpu.get("vendor") == hardware.vendor:
        image, findings = _image_findings(
            catalog, plan, gpu, hardware, explicit_image=explicit_image, fixers=fixers
        )
    findings += check_gpu_host(
        gpu,
        plan,
        hardware=hardware,
        disk=host_facts.get("disk") or {},
        docker=host_facts.get("docker") or {},
        devices=host_facts.get("devices") or {},
        health=host_facts.get("health"),
        image_cuda=image.cuda if image else None,
        cuda_driver_minimum=catalog.cuda_driver_minimum,
        known_hardware=catalog.hardware,
        fixers=fixers,
        kv_reserve_gib=kv_reserve_gib,
        cache_reserve_gib=cache_reserve_gib,
    )
    return PreflightResult(tuple(findings), image, needs=_needs(catalog, plan, hardware))


def _needs(catalog: Catalog, plan: Mapping[str, Any], hardware: HardwareSpec) -> dict[str, Any]:
    """What the later GPU roles need to know about this deployment that the plan does not spell out."""
    model = catalog.models.get(str(plan.get("model")))
    precision = model.precision if model else None
    return {
        "vendor": hardware.vendor,
        "arch": hardware.arch,
        "fabric_manager": hardware.hgx_fabric_manager,
        # Blackwell is supported by NVIDIA's open kernel modules only; they are recommended from Turing on.
        "open_kernel_modules": hardware.vendor == "nvidia",
        # FP8 GEMMs go through DeepGEMM's JIT on NVIDIA: nvcc, cuobjdump and CUTLASS headers inside the image.
        "deepgemm": hardware.vendor == "nvidia" and precision == "fp8",
        "precision": precision,
        "transformers_minimum": model.min_transformers if model else None,
        "model_type": model.model_type if model else None,
        "architecture": model.architecture if model else None,
    }
