#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: glm-deploy developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Read a GPU host's GPUs, driver, fabric, container runtime and free disk without changing anything."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: gpu_facts
short_description: Read the GPUs, driver, CUDA version, fabric and container runtime of a GPU host
description:
  - Runs C(nvidia-smi) (query CSV, header, C(-q) fabric section, C(nvlink -s)) and C(systemctl show
    nvidia-fabricmanager.service) on NVIDIA hosts, or C(amd-smi static --json) (falling back to
    C(rocm-smi)) on AMD hosts, and returns structured facts.
  - On NVIDIA hosts also reads each GPU's health (MIG mode, reset status, pages pending retirement, remapped
    rows, error values); a field an older driver does not know is listed in C(health.unread), not fatal.
  - Also reports Docker's registered runtimes, the AMD device nodes and the free space where weights will
    live, so that one call gives the preflight checks everything they read.
  - Fails with the tool's own output quoted when a tool is missing, exits non-zero or prints something
    unexpected.
  - Read-only; supports check mode.
version_added: "0.1.0"
options:
  vendor:
    description:
      - Which GPU tools to read. V(auto) uses C(nvidia-smi) when it is on PATH, else C(amd-smi), else
        C(rocm-smi).
    type: str
    choices: [auto, nvidia, amd]
    default: auto
  disk_path:
    description:
      - Where weights and caches will be written; free space is measured on the file system holding it (or its
        nearest existing parent when it does not exist yet).
    type: path
    default: /var/lib/glm-deploy
  weights_dir:
    description:
      - The model's folder in the Hugging Face cache (C(hub/models--ORG--NAME)). The bytes of the regular
        files under it (blobs; snapshots are symlinks) are reported as C(disk.weights_present_bytes), so a
        re-run does not ask for disk space the weights already use. Missing folder counts as 0.
    type: path
  check_docker:
    description: Whether to read Docker's runtimes (C(docker info)).
    type: bool
    default: true
author:
  - glm-deploy developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Read the GPU host
  glm.deploy.gpu_facts:
    disk_path: /var/lib/glm-deploy
  register: __gpu_preflight_facts
"""

RETURN = r"""
gpu:
  description: GPU facts.
  returned: always
  type: dict
  contains:
    vendor:
      description: C(nvidia) or C(amd).
      type: str
    count:
      description: Number of GPUs the driver could read (a GPU that answers only with errors is in RV(health)).
      type: int
    gpus:
      description: >-
        One entry per GPU (index, name, memory_mib, driver_version, compute_capability or arch,
        pci_bus_id).
      type: list
      elements: dict
    names:
      description: Distinct product names.
      type: list
      elements: str
    memory_mib:
      description: Memory of the smallest GPU in MiB.
      type: int
    driver_version:
      description: Driver version.
      type: str
    driver_major:
      description: Driver branch.
      type: int
    cuda_version:
      description: Highest CUDA version the driver supports (NVIDIA).
      type: str
    compute_capability:
      description: Compute capability (NVIDIA).
      type: str
    arch:
      description: GPU architecture, such as C(gfx942) (AMD).
      type: str
    fabric_manager:
      description: C(present), C(active) and C(state) of nvidia-fabricmanager.service.
      type: dict
    fabric_state:
      description: C(n/a), C(completed), or the first unhealthy fabric state.
      type: str
    fabric_healthy:
      description: Whether every GPU's NVLink fabric is trained; null where no GPU takes part in a fabric.
      type: bool
    fabric_unhealthy_gpus:
      description: PCI bus ids of the GPUs whose fabric is not ready.
      type: list
      elements: str
    nvlink:
      description: Link counts from C(nvidia-smi nvlink -s); null where the GPUs have no NVLink.
      type: dict
health:
  description: >-
    Per-GPU health that makes a listed GPU unusable for a whole-GPU CUDA workload, read from
    C(nvidia-smi --query-gpu), C(--query-remapped-rows), C(-q) and the default table (NVIDIA).
  returned: always
  type: dict
  contains:
    gpus:
      description: >-
        One entry per GPU with index, pci_bus_id, mig_current, mig_pending (C(Enabled)/C(Disabled)),
        reset_required, drain_and_reset_recommended, retired_pages_pending, remapped_rows_pending,
        remapped_rows_failure (booleans), recovery_action (text), uncorrectable_ecc_volatile (count), each
        null where not reported, and errors (field -> the error nvidia-smi printed instead of a value).
      type: list
      elements: dict
    unread:
      description: What could not be read and why (an older driver that does not know a field, a failed query).
      type: list
      elements: str
docker:
  description: present, runtimes, default_runtime, nvidia_runtime, error.
  returned: always
  type: dict
devices:
  description: Whether /dev/kfd and /dev/dri exist (AMD containers need both).
  returned: always
  type: dict
disk:
  description: path, checked_path (nearest existing parent), free_bytes, total_bytes, weights_present_bytes.
  returned: always
  type: dict
"""

import os  # noqa: E402 (Ansible modules put DOCUMENTATION first; imports follow it)
import stat  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.glm.deploy.plugins.module_utils.gpu_health import (  # noqa: E402
    NVIDIA_HEALTH_FIELDS,
    build_health,
    nvidia_health_args,
    nvidia_remapped_rows_args,
    parse_nvidia_health_query,
    parse_nvidia_remapped_rows,
    parse_nvidia_smi_q_values,
    parse_nvidia_smi_table_errors,
    unknown_query_field,
)
from ansible_collections.glm.deploy.plugins.module_utils.gpu_parse import (  # noqa: E402
    NVIDIA_QUERY_ARGS,
    GpuParseError,
    build_facts,
    parse_amd_smi_static,
    parse_docker_runtimes,
    parse_nvidia_query_with_failures,
    parse_nvidia_smi_header,
    parse_nvidia_smi_q_fabric,
    parse_nvlink_status,
    parse_rocm_smi,
    parse_systemctl_show,
    snippet,
)


class ToolFailed(Exception):
    pass


LC_ALL = {"LC_ALL": "C"}


def _run(module, argv):
    rc, out, err = module.run_command(argv, environ_update=LC_ALL)
    if rc != 0:
        raise ToolFailed(
            "`%s` exited with %d; it printed: %s" % (" ".join(argv), rc, snippet((out or "") + (err or "")))
        )
    return out


def read_nvidia(module, nvidia_smi):
    """(gpu facts, health facts) of an NVIDIA host."""
    gpus, failed = parse_nvidia_query_with_failures(_run(module, [nvidia_smi, *NVIDIA_QUERY_ARGS]))
    table = _run(module, [nvidia_smi])
    header = parse_nvidia_smi_header(table)
    report = _run(module, [nvidia_smi, "-q"])
    fabric = parse_nvidia_smi_q_fabric(report)
    systemctl = module.get_bin_path("systemctl")
    fabric_manager = {"present": False, "active": False, "state": "systemctl not found"}
    if systemctl:
        # `systemctl show` exits 0 for unknown units too (LoadState=not-found), so rc != 0 is a real failure.
        fabric_manager = parse_systemctl_show(
            _run(
                module,
                [
                    systemctl,
                    "show",
                    "--property=LoadState,ActiveState,SubState",
                    "nvidia-fabricmanager.service",
                ],
            )
        )
    # PCIe cards and some drivers have no NVLink to report; that is a fact, not a failure.
    rc, out, _err = module.run_command([nvidia_smi, "nvlink", "-s"], environ_update={"LC_ALL": "C"})
    nvlink = None
    if rc == 0 and out.strip():
        nvlink = parse_nvlink_status(out)
    facts = build_facts(
        "nvidia", gpus, header=header, fabric=fabric, fabric_manager=fabric_manager, nvlink=nvlink
    )
    return facts, read_nvidia_health(module, nvidia_smi, gpus, failed, table=table, report=report)


def read_nvidia_health(module, nvidia_smi, gpus, failed, *, table, report):
    """MIG mode, reset status, pending/failed memory repairs and error values of every GPU.

    None of this may fail the module: an older nvidia-smi that refuses a field is asked again without it,
    and whatever stays unread is listed in `unread` for the preflight to show.
    """
    unread = []
    fields = list(NVIDIA_HEALTH_FIELDS)
    query = {}
    # Each refusal names one field, so this asks at most once per health field.
    while len(fields) > 2:
        rc, out, err = module.run_command([nvidia_smi, *nvidia_health_args(fields)], environ_update=LC_ALL)
        refused = unknown_query_field((out or "") + (err or ""))
        if rc != 0 and refused in fields[2:]:
            fields.remove(refused)
            continue
        try:
            if rc != 0:
                raise ToolFailed("exited with %d" % rc)
            query = parse_nvidia_health_query(out, tuple(fields))
        except (GpuParseError, ToolFailed) as error:
            unread.append(
                "`nvidia-smi %s`: %s; it printed: %s"
                % (" ".join(nvidia_health_args(fields)), error, snippet((out or "") + (err or "")))
            )
        break
    remapped = {}
    rc, out, err = module.run_command([nvidia_smi, *nvidia_remapped_rows_args()], environ_update=LC_ALL)
    try:
        if rc != 0:
            raise ToolFailed("exited with %d" % rc)
        remapped = parse_nvidia_remapped_rows(out)
    except (GpuParseError, ToolFailed) as error:
        unread.append(
            "`nvidia-smi %s`: %s; it printed: %s"
            % (" ".join(nvidia_remapped_rows_args()), error, snippet((out or "") + (err or "")))
        )
    return build_health(
        gpus,
        failed,
        query=query,
        remapped=remapped,
        q_values=parse_nvidia_smi_q_values(report),
        table_errors=parse_nvidia_smi_table_errors(table),
        unread=unread,
    )


def read_amd(module, amd_smi, rocm_smi):
    if amd_smi:
        gpus = parse_amd_smi_static(_run(module, [amd_smi, "static", "--json"]))
    else:
        gpus = parse_rocm_smi(
            _run(module, [rocm_smi, "--showproductname", "--showmeminfo", "vram", "--json"])
        )
    facts = build_facts("amd", gpus)
    facts["fabric_state"] = "n/a"
    facts["fabric_manager"] = {"present": False, "active": False, "state": "not used on AMD"}
    return facts, {"gpus": [], "unread": ["GPU health (partition mode, RAS errors) is not read on AMD hosts"]}


def read_docker(module):
    docker = module.get_bin_path("docker")
    if not docker:
        return {
            "present": False,
            "runtimes": [],
            "default_runtime": None,
            "nvidia_runtime": False,
            "error": "docker is not on PATH",
        }
    rc, out, err = module.run_command(
        [docker, "info", "--format", "{{json .Runtimes}}\n{{json .DefaultRuntime}}"],
        environ_update={"LC_ALL": "C"},
    )
    if rc != 0:
        return {
            "present": True,
            "runtimes": [],
            "default_runtime": None,
            "nvidia_runtime": False,
            "error": "`docker info` exited with %d: %s" % (rc, snippet((out or "") + (err or ""))),
        }
    parsed = parse_docker_runtimes(out)
    parsed.update({"present": True, "nvidia_runtime": "nvidia" in parsed["runtimes"], "error": None})
    return parsed


def bytes_under(folder):
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            info = os.lstat(os.path.join(root, name))
            if stat.S_ISREG(info.st_mode):
                total += info.st_size
    return total


def read_disk(path, weights_dir=None):
    checked = path
    while not os.path.exists(checked):
        parent = os.path.dirname(checked.rstrip("/")) or "/"
        if parent == checked:
            break
        checked = parent
    stats = os.statvfs(checked)
    return {
        "path": path,
        "checked_path": checked,
        "free_bytes": stats.f_bavail * stats.f_frsize,
        "total_bytes": stats.f_blocks * stats.f_frsize,
        "weights_present_bytes": (
            bytes_under(weights_dir) if weights_dir and os.path.isdir(weights_dir) else 0
        ),
    }


def main():
    module = AnsibleModule(
        argument_spec=dict(
            vendor=dict(type="str", default="auto", choices=["auto", "nvidia", "amd"]),
            disk_path=dict(type="path", default="/var/lib/glm-deploy"),
            weights_dir=dict(type="path"),
            check_docker=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    vendor = module.params["vendor"]
    nvidia_smi = module.get_bin_path("nvidia-smi") if vendor in ("auto", "nvidia") else None
    amd_smi = module.get_bin_path("amd-smi") if vendor in ("auto", "amd") and not nvidia_smi else None
    rocm_smi = module.get_bin_path("rocm-smi") if vendor in ("auto", "amd") and not nvidia_smi else None
    try:
        if nvidia_smi:
            gpu, health = read_nvidia(module, nvidia_smi)
        elif amd_smi or rocm_smi:
            gpu, health = read_amd(module, amd_smi, rocm_smi)
        else:
            wanted = {
                "auto": "nvidia-smi, amd-smi or rocm-smi",
                "nvidia": "nvidia-smi",
                "amd": "amd-smi or rocm-smi",
            }
            module.fail_json(
                msg="no GPU tool found: looked for %s on PATH (%s). Install the GPU driver (NVIDIA: the "
                "nvidia-utils package of the driver branch; AMD: ROCm's amd-smi), or run this play against a "
                "GPU host." % (wanted[vendor], os.environ.get("PATH", "")),
            )
            return
        docker = (
            read_docker(module)
            if module.params["check_docker"]
            else {
                "present": None,
                "runtimes": [],
                "default_runtime": None,
                "nvidia_runtime": None,
                "error": "not checked",
            }
        )
    except (GpuParseError, ToolFailed) as error:
        module.fail_json(msg=str(error))
        return
    devices = {"kfd": os.path.exists("/dev/kfd"), "dri": os.path.isdir("/dev/dri")}
    disk = read_disk(module.params["disk_path"], module.params["weights_dir"])
    module.exit_json(changed=False, gpu=gpu, health=health, docker=docker, devices=devices, disk=disk)


if __name__ == "__main__":
    main()
