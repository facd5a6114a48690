# -*- coding: utf-8 -*-
# Copyright: glm-deploy developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Pure parsers for the outputs of nvidia-smi, systemctl, docker, amd-smi and rocm-smi: what GPUs a host has.

The readings of their health (MIG, reset and recovery state, retired pages, remapped rows, ECC errors) are parsed
in gpu_health.py, with the shared GpuParseError and helpers from here.

Every function takes text and returns plain data (dicts, lists, str, int), so the same code is exercised by
the gpu_facts module on a host and by unit tests against recorded or reconstructed outputs. Nothing here
runs a command or imports from glm_deploy: this file is shipped to the target host with the module.

When a tool prints something these parsers do not understand they raise GpuParseError quoting the start of the
output, so a changed driver or a broken GPU shows up as a readable error instead of a KeyError.
"""

from __future__ import absolute_import, division, print_function

import json
import re

__metaclass__ = type

NVIDIA_QUERY_FIELDS = ("index", "name", "memory.total", "driver_version", "compute_cap", "pci.bus_id")
NVIDIA_QUERY_ARGS = [
    "--query-gpu=" + ",".join(NVIDIA_QUERY_FIELDS),
    "--format=csv,noheader,nounits",
]

# Fabric states nvidia-smi -q prints; "Completed" with status "Success" is the only healthy one where a fabric
# exists.
FABRIC_NOT_APPLICABLE = ("n/a", "not supported", "not_supported")
FABRIC_HEALTHY_STATE = "completed"
FABRIC_HEALTHY_STATUS = ("success", "n/a")

_SNIPPET_CHARS = 240


class GpuParseError(ValueError):
    """A tool printed something the parser cannot interpret; the message quotes what it printed."""

    def __init__(self, source, problem, text):
        self.source = source
        self.problem = problem
        self.snippet = snippet(text)
        super(GpuParseError, self).__init__(
            "could not read the output of `%s`: %s; it printed: %s" % (source, problem, self.snippet)
        )


def snippet(text, limit=_SNIPPET_CHARS):
    """The start of a tool's output, quoted so that empty or whitespace-only output is visible."""
    text = text or ""
    shortened = text.strip()
    if len(shortened) > limit:
        shortened = shortened[:limit] + "..."
    return repr(shortened)


def not_available(value):
    return value.strip().lower() in ("[n/a]", "n/a", "[not supported]", "not supported", "")


# nvidia-smi prints "[N/A]" / "[Not Supported]" where a field does not apply to a GPU, and other bracketed
# words ("[Unknown Error]", "[GPU requires reset]", "[GPU is lost]") where NVML failed to read the GPU; the
# default table prints "ERR!" for the latter. Those mean the GPU is in trouble (typically after an Xid error),
# not that the field is unknown. "[Insufficient Permissions]" says nothing about the GPU.
_NOT_A_GPU_ERROR = ("[n/a]", "[not supported]", "[insufficient permissions]")


def gpu_error_value(value):
    """True when nvidia-smi printed an error in place of a reading."""
    value = (value or "").strip()
    lowered = value.lower()
    if lowered in _NOT_A_GPU_ERROR:
        return False
    return "err!" in lowered or (lowered.startswith("[") and lowered.endswith("]"))


def parse_nvidia_query(text):
    """Parse `nvidia-smi --query-gpu=index,name,memory.total,driver_version,compute_cap,pci.bus_id
    --format=csv,noheader,nounits` into one dict per GPU; a GPU that answers with an error value fails."""
    return _parse_nvidia_query(text, keep_failed=None)


def parse_nvidia_query_with_failures(text):
    """Like parse_nvidia_query, but a GPU whose fields nvidia-smi could not read ("[Unknown Error]",
    "[GPU requires reset]", "ERR!") is set aside instead of failing the whole read.

    Returns (gpus, failed): failed holds {index, pci_bus_id, errors: {field: value}} per such GPU, so the
    preflight can name the GPU and say how to recover it while still reading the healthy ones.
    """
    failed = []
    gpus = _parse_nvidia_query(text, keep_failed=failed)
    return gpus, failed


def _parse_nvidia_query(text, keep_failed):
    source = "nvidia-smi " + " ".join(NVIDIA_QUERY_ARGS)
    lines = [line for line in (text or "").splitlines() if line.strip()]
    if not lines:
        raise GpuParseError(source, "no GPU lines (the driver sees no GPU)", text)
    gpus = []
    for line in lines:
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != len(NVIDIA_QUERY_FIELDS):
            raise GpuParseError(
                source,
                "expected %d comma-separated fields (%s), got %d in line %r"
                % (len(NVIDIA_QUERY_FIELDS), ",".join(NVIDIA_QUERY_FIELDS), len(fields), line),
                text,
            )
        errors = dict(
            (field, value) for field, value in zip(NVIDIA_QUERY_FIELDS, fields, strict=True) if gpu_error_value(value)
        )
        if errors and keep_failed is not None and fields[0].isdigit():
            keep_failed.append({"index": int(fields[0]), "pci_bus_id": fields[5], "errors": errors})
            continue
        index, name, memory, driver, compute_cap, bus_id = fields
        if not index.isdigit():
            raise GpuParseError(source, "GPU index %r is not a number in line %r" % (index, line), text)
        if not memory.isdigit():
            raise GpuParseError(
                source, "memory.total %r is not a whole number of MiB in line %r" % (memory, line), text
            )
        if not re.match(r"^\d+\.\d+(\.\d+)?$", driver):
            raise GpuParseError(
                source, "driver_version %r is not a version in line %r" % (driver, line), text
            )
        if not_available(compute_cap):
            compute_cap = None
        elif not re.match(r"^\d+\.\d+$", compute_cap):
            raise GpuParseError(
                source, "compute_cap %r is not MAJOR.MINOR in line %r" % (compute_cap, line), text
            )
        gpus.append(
            {
                "index": int(index),
                "name": name,
                "memory_mib": int(memory),
                "driver_version": driver,
                "compute_capability": compute_cap,
                "pci_bus_id": bus_id,
            }
        )
    drivers = sorted(set(gpu["driver_version"] for gpu in gpus))
    if len(drivers) > 1:
        raise GpuParseError(source, "GPUs report different driver versions %s" % ", ".join(drivers), text)
    return gpus


_HEADER_RE = re.compile(
    r"Driver Version:\s*(?P<driver>\d+(?:\.\d+)+)\s+CUDA Version:\s*(?P<cuda>\d+\.\d+|N/A)",
)


def parse_nvidia_smi_header(text):
    """Read the driver version and the highest CUDA version the driver supports from plain `nvidia-smi`."""
    match = _HEADER_RE.search(text or "")
    if not match:
        raise GpuParseError("nvidia-smi", "no 'Driver Version: ... CUDA Version: ...' header line", text)
    cuda = match.group("cuda")
    return {"driver_version": match.group("driver"), "cuda_version": None if cuda == "N/A" else cuda}


GPU_SECTION_RE = re.compile(r"^GPU (?P<bus>[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-9A-Fa-f])\s*$")
_KEY_VALUE_RE = re.compile(r"^(?P<indent>\s*)(?P<key>[^:]+?)\s*:\s*(?P<value>.*?)\s*$")


def parse_nvidia_smi_q_fabric(text):
    """Read each GPU's Fabric section (State, Status) from `nvidia-smi -q`.

    Returns a list of {pci_bus_id, state, status}; state is None when the GPU has no Fabric section (older
    drivers). HGX systems whose GPUs talk through NVSwitches report State "Completed" and Status "Success"
    once Fabric Manager has trained the fabric; anything else means CUDA will fail to initialise (error 802).
    """
    gpus = []
    current = None
    in_fabric = False
    fabric_indent = None
    child_indent = None
    for raw_line in (text or "").splitlines():
        line = raw_line.rstrip()
        section = GPU_SECTION_RE.match(line)
        if section:
            current = {"pci_bus_id": section.group("bus"), "state": None, "status": None}
            gpus.append(current)
            in_fabric = False
            continue
        if current is None or not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if line.strip() == "Fabric":
            in_fabric = True
            fabric_indent = indent
            child_indent = None
            continue
        if in_fabric:
            if indent <= fabric_indent:
                in_fabric = False
                continue
            # Only the Fabric section's own State/Status count, not those of nested sub-sections (Health).
            if child_indent is None:
                child_indent = indent
            if indent != child_indent:
                continue
            pair = _KEY_VALUE_RE.match(line)
            if not pair:
                continue
            key = pair.group("key").strip().lower()
            if key == "state" and current["state"] is None:
                current["state"] = pair.group("value")
            elif key == "status" and current["status"] is None:
                current["status"] = pair.group("value")
    if not gpus:
        raise GpuParseError("nvidia-smi -q", "no 'GPU 0000xxxx:xx:xx.x' sections", text)
    return gpus


def summarise_fabric(fabric_gpus):
    """Reduce per-GPU fabric states to {state, healthy, unhealthy_gpus}.

    state is "n/a" when no GPU takes part in a fabric (PCIe cards, older drivers), "completed" when every
    GPU's fabric is trained, otherwise the first problematic state as nvidia-smi printed it.
    """
    applicable = [
        gpu
        for gpu in fabric_gpus
        if gpu["state"] is not None and gpu["state"].strip().lower() not in FABRIC_NOT_APPLICABLE
    ]
    if not applicable:
        return {"state": "n/a", "healthy": None, "unhealthy_gpus": []}
    unhealthy = [
        gpu
        for gpu in applicable
        if gpu["state"].strip().lower() != FABRIC_HEALTHY_STATE
        or (gpu["status"] or "n/a").strip().lower() not in FABRIC_HEALTHY_STATUS
    ]
    if not unhealthy:
        return {"state": "completed", "healthy": True, "unhealthy_gpus": []}
    first = unhealthy[0]
    state = first["state"]
    if first["status"] and first["status"].strip().lower() not in FABRIC_HEALTHY_STATUS:
        state = "%s (status: %s)" % (first["state"], first["status"])
    return {
        "state": state,
        "healthy": False,
        "unhealthy_gpus": [gpu["pci_bus_id"] for gpu in unhealthy],
    }


def parse_systemctl_show(text, unit="nvidia-fabricmanager.service"):
    """Parse `systemctl show --property=LoadState,ActiveState,SubState UNIT` into {present, active, state}."""
    values = {}
    for line in (text or "").splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    if "LoadState" not in values or "ActiveState" not in values:
        raise GpuParseError(
            "systemctl show --property=LoadState,ActiveState,SubState " + unit,
            "no LoadState= / ActiveState= lines",
            text,
        )
    present = values["LoadState"] not in ("not-found", "masked")
    return {
        "present": present,
        "active": present and values["ActiveState"] == "active",
        "state": values["ActiveState"] + ("/" + values["SubState"] if values.get("SubState") else ""),
        "load_state": values["LoadState"],
    }


_NVLINK_GPU_RE = re.compile(r"^GPU (?P<index>\d+): (?P<name>.*?)(?: \(UUID: (?P<uuid>[^)]*)\))?\s*$")
_NVLINK_LINK_RE = re.compile(r"^\s*Link (?P<link>\d+): (?P<value>.+?)\s*$")


def parse_nvlink_status(text):
    """Parse `nvidia-smi nvlink -s`: per GPU the links and whether each is up.

    Active links print their speed ("Link 0: 50 GB/s"); down links print "<inactive>". A GPU without NVLink
    prints no Link lines at all.
    """
    gpus = []
    current = None
    for raw_line in (text or "").splitlines():
        line = raw_line.rstrip()
        if not line.strip():
            continue
        header = _NVLINK_GPU_RE.match(line)
        if header:
            current = {"index": int(header.group("index")), "links": 0, "active": 0, "inactive": 0}
            gpus.append(current)
            continue
        link = _NVLINK_LINK_RE.match(line)
        if link and current is not None:
            current["links"] += 1
            if "inactive" in link.group("value").lower():
                current["inactive"] += 1
            else:
                current["active"] += 1
            continue
        raise GpuParseError("nvidia-smi nvlink -s", "unexpected line %r" % line, text)
    if not gpus:
        raise GpuParseError("nvidia-smi nvlink -s", "no 'GPU N: NAME' lines", text)
    return {
        "links_total": sum(gpu["links"] for gpu in gpus),
        "links_active": sum(gpu["active"] for gpu in gpus),
        "links_inactive": sum(gpu["inactive"] for gpu in gpus),
        "gpus_with_inactive_links": [gpu["index"] for gpu in gpus if gpu["inactive"]],
        "gpus": gpus,
    }


def parse_docker_runtimes(text):
    """Parse `docker info --format '{{json .Runtimes}}'` and `{{json .DefaultRuntime}}` on two lines."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    source = "docker info --format '{{json .Runtimes}}' / '{{json .DefaultRuntime}}'"
    if len(lines) != 2:
        raise GpuParseError(source, "expected two JSON lines", text)
    try:
        runtimes = json.loads(lines[0])
        default = json.loads(lines[1])
    except ValueError as error:
        raise GpuParseError(source, "not JSON (%s)" % error, text) from None
    if not isinstance(runtimes, dict):
        raise GpuParseError(source, "Runtimes is not an object", text)
    return {"runtimes": sorted(runtimes), "default_runtime": default}


def _as_mib(value, unit):
    unit = (unit or "MB").strip().lower()
    factors = {"b": 1.0 / (1024 * 1024), "kb": 1.0 / 1024, "mb": 1.0, "mib": 1.0, "gb": 1024.0, "gib": 1024.0}
    if unit not in factors:
        raise ValueError("unknown memory unit %r" % unit)
    return round(float(value) * factors[unit])


def _amd_vram_mib(vram, text):
    size = vram.get("size") if isinstance(vram, dict) else None
    try:
        if isinstance(size, dict):
            return _as_mib(size["value"], size.get("unit"))
        if isinstance(size, (int, float)):
            return int(size)
        if isinstance(size, str):
            match = re.match(r"^\s*([\d.]+)\s*([A-Za-z]+)?\s*$", size)
            if match:
                return _as_mib(match.group(1), match.group(2))
    except (KeyError, ValueError) as error:
        raise GpuParseError("amd-smi static --json", "vram size %r: %s" % (size, error), text) from None
    raise GpuParseError("amd-smi static --json", "no vram.size in %r" % (vram,), text)


def parse_amd_smi_static(text):
    """Parse `amd-smi static --json` (a list of GPUs, or {"gpu_data": [...]} in newer amd-smi releases)."""
    source = "amd-smi static --json"
    try:
        data = json.loads(text or "")
    except ValueError as error:
        raise GpuParseError(source, "not JSON (%s)" % error, text) from None
    if isinstance(data, dict) and isinstance(data.get("gpu_data"), list):
        data = data["gpu_data"]
    if not isinstance(data, list) or not data:
        raise GpuParseError(source, "expected a non-empty list of GPUs", text)
    gpus = []
    for entry in data:
        if not isinstance(entry, dict) or "asic" not in entry:
            raise GpuParseError(source, "a GPU entry has no 'asic' section", text)
        asic = entry["asic"]
        driver = entry.get("driver") or {}
        name = asic.get("market_name")
        if not name:
            raise GpuParseError(source, "GPU %r has no asic.market_name" % entry.get("gpu"), text)
        gpus.append(
            {
                "index": int(entry.get("gpu", len(gpus))),
                "name": name,
                "memory_mib": _amd_vram_mib(entry.get("vram"), text),
                "driver_version": driver.get("version"),
                "arch": asic.get("target_graphics_version"),
                "pci_bus_id": (entry.get("bus") or {}).get("bdf"),
            }
        )
    return gpus


def parse_rocm_smi(text):
    """Parse `rocm-smi --showproductname --showmeminfo vram --json` (one object per card)."""
    source = "rocm-smi --showproductname --showmeminfo vram --json"
    try:
        data = json.loads(text or "")
    except ValueError as error:
        raise GpuParseError(source, "not JSON (%s)" % error, text) from None
    cards = sorted(
        (key for key in (data if isinstance(data, dict) else {}) if re.match(r"^card\d+$", key)),
        key=lambda key: int(key[4:]),
    )
    if not cards:
        raise GpuParseError(source, "no 'cardN' entries", text)
    gpus = []
    for key in cards:
        card = data[key]
        name = card.get("Card Series") or card.get("Card series")
        total = card.get("VRAM Total Memory (B)")
        if not name or total is None:
            raise GpuParseError(source, "%s lacks 'Card Series' or 'VRAM Total Memory (B)'" % key, text)
        gpus.append(
            {
                "index": int(key[4:]),
                "name": name,
                "memory_mib": int(int(total) // (1024 * 1024)),
                "driver_version": None,
                "arch": card.get("GFX Version"),
                "pci_bus_id": None,
            }
        )
    return gpus


def driver_major(driver_version):
    """570.148.08 -> 570; None stays None."""
    if not driver_version:
        return None
    head = str(driver_version).split(".", maxsplit=1)[0]
    return int(head) if head.isdigit() else None


def build_facts(vendor, gpus, *, header=None, fabric=None, fabric_manager=None, nvlink=None):
    """Combine parsed outputs into the facts the preflight checks read."""
    names = sorted(set(gpu["name"] for gpu in gpus))
    driver_version = gpus[0].get("driver_version") if gpus else None
    if header and header.get("driver_version"):
        driver_version = header["driver_version"]
    capabilities = sorted(set(gpu.get("compute_capability") for gpu in gpus if gpu.get("compute_capability")))
    arches = sorted(set(gpu.get("arch") for gpu in gpus if gpu.get("arch")))
    fabric_summary = (
        summarise_fabric(fabric)
        if fabric is not None
        else {"state": "unknown", "healthy": None, "unhealthy_gpus": []}
    )
    return {
        "vendor": vendor,
        "count": len(gpus),
        "gpus": gpus,
        "names": names,
        "memory_mib": min(gpu["memory_mib"] for gpu in gpus) if gpus else 0,
        "driver_version": driver_version,
        "driver_major": driver_major(driver_version),
        "cuda_version": (header or {}).get("cuda_version"),
        "compute_capability": capabilities[0] if len(capabilities) == 1 else (capabilities or None),
        "arch": arches[0] if len(arches) == 1 else (arches or None),
        "fabric_manager": fabric_manager or {"present": False, "active": False, "state": "not checked"},
        "fabric_state": fabric_summary["state"],
        "fabric_healthy": fabric_summary["healthy"],
        "fabric_unhealthy_gpus": fabric_summary["unhealthy_gpus"],
        "nvlink": nvlink,
    }
