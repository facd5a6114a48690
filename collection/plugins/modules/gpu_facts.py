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
  - glm-deploy developers
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
    vendor: {description: nvidia or amd, type: str}
    count: {description: number of GPUs, type: int}
    gpus:
      description: >-
        one entry per GPU (index, name, memory_mib, driver_version, compute_capability or arch,
        pci_bus_id)
      type: list
    names: {description: distinct product names, type: list}
    memory_mib: {description: memory of the smallest GPU in MiB, type: int}
    driver_version: {description: driver version, type: str}
    driver_major: {description: driver branch, type: int}
    cuda_version: {description: highest CUDA version the driver supports (NVIDIA), type: str}
    compute_capability: {description: compute capability (NVIDIA), type: str}
    fabric_manager: {description: present, active and state of nvidia-fabricmanager.service, type: dict}
    fabric_state: {description: n/a, completed, or the first unhealthy fabric state, type: str}
    nvlink: {description: link counts from nvidia-smi nvlink -s, or null, type: dict}
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
from ansible_collections.glm.deploy.plugins.module_utils.gpu_parse import (  # noqa: E402
    NVIDIA_QUERY_ARGS,
    GpuParseError,
    build_facts,
    parse_amd_smi_static,
    parse_docker_runtimes,
    parse_nvidia_query,
    parse_nvidia_smi_header,
    parse_nvidia_smi_q_fabric,
    parse_nvlink_status,
    parse_rocm_smi,
    parse_systemctl_show,
    snippet,
)


class ToolFailed(Exception):
    pass


def _run(module, argv):
    rc, out, err = module.run_command(argv, environ_update={"LC_ALL": "C"})
    if rc != 0:
        raise ToolFailed(
            "`%s` exited with %d; it printed: %s" % (" ".join(argv), rc, snippet((out or "") + (err or "")))
        )
    return out


def read_nvidia(module, nvidia_smi):
    gpus = parse_nvidia_query(_run(module, [nvidia_smi, *NVIDIA_QUERY_ARGS]))
    header = parse_nvidia_smi_header(_run(module, [nvidia_smi]))
    fabric = parse_nvidia_smi_q_fabric(_run(module, [nvidia_smi, "-q"]))
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
    return build_facts(
        "nvidia", gpus, header=header, fabric=fabric, fabric_manager=fabric_manager, nvlink=nvlink
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
    return facts


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
            gpu = read_nvidia(module, nvidia_smi)
        elif amd_smi or rocm_smi:
            gpu = read_amd(module, amd_smi, rocm_smi)
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
    module.exit_json(changed=False, gpu=gpu, docker=docker, devices=devices, disk=disk)


if __name__ == "__main__":
    main()
