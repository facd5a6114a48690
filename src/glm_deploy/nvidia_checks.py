"""The NVIDIA-only checks of a GPU host: the driver against the image's CUDA release, Fabric Manager and the NVLink
fabric on HGX systems, and each GPU's health (MIG mode, a pending reset, memory repairs, error states) as
glm.deploy.gpu_facts read it. glm_deploy.preflight.check_gpu_host runs them on NVIDIA hosts.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from glm_deploy.catalog import HardwareSpec
from glm_deploy.host_findings import GPU_HOST_DRIVER, GPU_HOST_ROLE, Finding, make_finding
from glm_deploy.images import driver_cuda, fit


def nvidia_checks(
    gpu: Mapping[str, Any],
    hardware: HardwareSpec,
    image_cuda: str | None,
    table: Mapping[str, int],
    fixers: Collection[str],
) -> list[Finding]:
    """The driver against the image's CUDA release (`table`: the catalog's minimum driver per CUDA release),
    Fabric Manager and the fabric on HGX hardware, and inactive NVLink links."""
    findings: list[Finding] = []
    driver = str(gpu.get("driver_version") or "")
    if image_cuda and driver and "." in image_cuda:
        host_cuda = gpu.get("cuda_version") or driver_cuda(table, driver)
        result = fit(image_cuda, host_cuda, driver, table)
        if not result.usable:
            findings.append(
                make_finding(
                    "driver",
                    f"the engine image needs CUDA {image_cuda}: {result.explanation}",
                    f"set gpu_host_driver_branch to {table.get(image_cuda, 'a newer branch')} (the "
                    "gpu_host role installs it and reboots), or use an image built for this driver's CUDA",
                    fixers=fixers,
                    fixable_by=GPU_HOST_DRIVER,
                )
            )
    if hardware.hgx_fabric_manager:
        manager = gpu.get("fabric_manager") or {}
        major = gpu.get("driver_major")
        if not manager.get("present"):
            findings.append(
                make_finding(
                    "fabric_manager",
                    "nvidia-fabricmanager.service is not installed; on HGX systems CUDA fails (error 802, "
                    "'system not yet initialized') without it while nvidia-smi looks fine",
                    f"install nvidia-fabricmanager-{major} at exactly the driver's version {driver} "
                    "and enable it (set gpu_host_driver_branch to let the gpu_host role do it)",
                    fixers=fixers,
                    fixable_by=GPU_HOST_DRIVER,
                )
            )
        elif not manager.get("active"):
            findings.append(
                make_finding(
                    "fabric_manager",
                    f"nvidia-fabricmanager.service is {manager.get('state')}; on HGX systems CUDA "
                    "fails (error 802) while it is down",
                    "read `journalctl -u nvidia-fabricmanager` (a version different from the driver's "
                    f"{driver} is the usual cause), then `systemctl restart nvidia-fabricmanager`",
                    fixers=fixers,
                    fixable_by=GPU_HOST_ROLE,
                )
            )
        if gpu.get("fabric_healthy") is False:
            findings.append(
                make_finding(
                    "fabric",
                    f"the NVLink fabric is not ready: state {gpu.get('fabric_state')!r} on GPU(s) "
                    f"{', '.join(gpu.get('fabric_unhealthy_gpus') or [])}; CUDA will fail with error 802",
                    "start Fabric Manager and wait for `nvidia-smi -q` to show Fabric State "
                    "Completed; if it stays "
                    "so, reboot the host (and report it to the provider if it persists)",
                    fixers=fixers,
                )
            )
    nvlink = gpu.get("nvlink") or {}
    if nvlink.get("links_inactive"):
        findings.append(
            make_finding(
                "nvlink",
                f"{nvlink['links_inactive']} of {nvlink.get('links_total')} NVLink links are inactive (GPUs "
                f"{', '.join(str(index) for index in nvlink.get('gpus_with_inactive_links', []))}); tensor "
                "parallelism over the missing links is slow or fails",
                "check `nvidia-smi nvlink -s` and `nvidia-smi topo -m`; restart Fabric Manager or reboot",
                fixers=fixers,
                severity="error" if hardware.hgx_fabric_manager else "warning",
            )
        )
    return findings


def _reset_fix(index: int) -> str:
    return (
        f"stop every process on it and reset it (`sudo nvidia-smi -i {index} -r`) or reboot the host; "
        "`sudo dmesg | grep -i xid` shows what happened, and if it comes back report the GPU to the provider"
    )


# Recovery actions the 570+ drivers report (NVML_GPU_RECOVERY_ACTION_*), with what each asks of the operator.
_RECOVERY_FIXES = {
    "reset": "reset",
    "reboot": "reboot the host (the fault may have left the OS in an inconsistent state)",
    "drain p2p": "stop every GPU process that uses peer-to-peer traffic, then read `nvidia-smi -q` again",
    "drain and reset": "reset",
}


def _gpu_health_findings(entry: Mapping[str, Any], fixers: Collection[str]) -> list[Finding]:
    """What makes this one GPU unusable for a whole-GPU CUDA workload although nvidia-smi lists it."""
    index = int(entry.get("index", -1))
    gpu = f"GPU {index}"
    findings: list[Finding] = []
    errors = entry.get("errors") or {}
    if errors:
        read = ", ".join(f"{field} = {value}" for field, value in sorted(errors.items()))
        findings.append(
            make_finding(
                "gpu_error",
                f"{gpu}: nvidia-smi could not read it ({read}); the GPU is in an error state, as after an Xid error",
                _reset_fix(index),
                fixers=fixers,
            )
        )
    current, pending = entry.get("mig_current"), entry.get("mig_pending")
    if str(current).lower() == "enabled":
        fix = f"run `sudo nvidia-smi -i {index} -mig 0`, then reset the GPU (`sudo nvidia-smi -i {index} -r`) or reboot"
        if str(pending).lower() == "disabled":
            fix = f"MIG is already set to turn off: reset the GPU (`sudo nvidia-smi -i {index} -r`) or reboot"
        findings.append(
            make_finding(
                "gpu_mig",
                f"{gpu}: MIG mode is Enabled (pending {pending or 'unknown'}): CUDA sees MIG slices, not the full GPU",
                fix,
                fixers=fixers,
            )
        )
    elif str(pending).lower() == "enabled":
        findings.append(
            make_finding(
                "gpu_mig",
                f"{gpu}: MIG mode is {current or 'unknown'} but Enabled is pending: the next GPU reset or reboot "
                "(the gpu_host role may reboot) splits it into MIG slices",
                f"run `sudo nvidia-smi -i {index} -mig 0` before deploying",
                fixers=fixers,
            )
        )
    action = str(entry.get("recovery_action") or "none").strip().lower()
    if entry.get("reset_required") or entry.get("drain_and_reset_recommended") or action in _RECOVERY_FIXES:
        said = [
            reason
            for reason, present in (
                ("reset required", entry.get("reset_required")),
                ("drain and reset recommended", entry.get("drain_and_reset_recommended")),
                (f"recovery action {entry.get('recovery_action')}", action in _RECOVERY_FIXES),
            )
            if present
        ]
        recovery = _RECOVERY_FIXES.get(action, "reset")
        findings.append(
            make_finding(
                "gpu_reset",
                f"{gpu}: nvidia-smi reports {', '.join(said)}: an unrecoverable error occurred on it",
                _reset_fix(index) if recovery == "reset" else recovery,
                fixers=fixers,
            )
        )
    if entry.get("remapped_rows_failure"):
        findings.append(
            make_finding(
                "gpu_memory_errors",
                f"{gpu}: row remapping failed (more bad memory rows than spares); its memory is not reliable",
                "the GPU needs replacing: report it to the provider and use another host",
                fixers=fixers,
            )
        )
    pending_repairs = [
        what
        for what, present in (
            ("remapped memory rows", entry.get("remapped_rows_pending")),
            ("memory pages to retire", entry.get("retired_pages_pending")),
        )
        if present
    ]
    if pending_repairs:
        findings.append(
            make_finding(
                "gpu_memory_errors",
                f"{gpu}: {' and '.join(pending_repairs)} are pending after uncorrectable memory errors; the bad "
                "memory stays in use until the GPU is reset",
                f"reset the GPU (`sudo nvidia-smi -i {index} -r`) or reboot the host before deploying",
                fixers=fixers,
            )
        )
    uncorrectable = entry.get("uncorrectable_ecc_volatile")
    if isinstance(uncorrectable, int) and uncorrectable > 0:
        findings.append(
            make_finding(
                "gpu_memory_errors",
                f"{gpu}: {uncorrectable} uncorrectable ECC error(s) since the driver loaded",
                f"read `nvidia-smi -i {index} -q -d ECC,ROW_REMAPPER,PAGE_RETIREMENT`; reset the GPU if a repair "
                "is pending, and report it to the provider if the count keeps growing",
                fixers=fixers,
                severity="warning",
            )
        )
    return findings


def health_checks(health: Mapping[str, Any] | None, fixers: Collection[str]) -> list[Finding]:
    """Per-GPU health (MIG, reset required, memory repairs, error values) plus one note on what was not read."""
    if health is None:
        return [
            make_finding(
                "gpu_health",
                "GPU health (MIG mode, reset status, memory errors) was not read on this host",
                "run the gpu_facts module of this collection version, or check `nvidia-smi -q` by hand",
                fixers=fixers,
                severity="warning",
            )
        ]
    findings: list[Finding] = []
    for entry in health.get("gpus") or []:
        findings += _gpu_health_findings(entry, fixers)
    unread = [str(note) for note in health.get("unread") or []]
    if unread:
        findings.append(
            make_finding(
                "gpu_health",
                f"could not read: {'; '.join(unread)}",
                "check these by hand with `nvidia-smi -q`, or update the driver (newer nvidia-smi reports them)",
                fixers=fixers,
                severity="warning",
            )
        )
    return findings
