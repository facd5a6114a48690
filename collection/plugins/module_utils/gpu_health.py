# -*- coding: utf-8 -*-
# Copyright: glm-deploy developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Pure parsers for the GPU health readings of nvidia-smi: what makes a GPU unusable although it is listed.

Like gpu_parse.py (whose GpuParseError and helpers this uses), every function takes text and returns plain data,
so the gpu_facts module on a host and unit tests on recorded outputs run the same code; nothing here runs a
command or imports from glm_deploy.
"""

from __future__ import absolute_import, division, print_function

import re

from ansible_collections.glm.deploy.plugins.module_utils.gpu_parse import (
    GPU_SECTION_RE,
    GpuParseError,
    gpu_error_value,
    not_available,
)

__metaclass__ = type

# GPU health: what makes a GPU unusable for a full-GPU CUDA workload although it is listed. Each reading is
# read from the stable --query-gpu / --query-remapped-rows interfaces where the driver knows the field, and
# from the `nvidia-smi -q` report (already read for the fabric) where it does not.
# (fact key, --query-gpu or --query-remapped-rows field or None, path in `nvidia-smi -q` or None, kind)
HEALTH_READINGS = (
    ("mig_current", "mig.mode.current", ("MIG Mode", "Current"), "mode"),
    ("mig_pending", "mig.mode.pending", ("MIG Mode", "Pending"), "mode"),
    ("reset_required", "reset_status.reset_required", ("GPU Reset Status", "Reset Required"), "flag"),
    (
        "drain_and_reset_recommended",
        "reset_status.drain_and_reset_recommended",
        ("GPU Reset Status", "Drain and Reset Recommended"),
        "flag",
    ),
    # Drivers from the 570/580 branches report a recovery action (None, Reset, Reboot, Drain P2P, Drain and
    # Reset) in the -q report instead of the reset status.
    ("recovery_action", None, ("GPU Recovery Action",), "text"),
    ("retired_pages_pending", "retired_pages.pending", ("Retired Pages", "Pending Page Blacklist"), "flag"),
    ("remapped_rows_pending", "remapped_rows.pending", ("Remapped Rows", "Pending"), "flag"),
    ("remapped_rows_failure", "remapped_rows.failure", ("Remapped Rows", "Remapping Failure Occurred"), "flag"),
    ("uncorrectable_ecc_volatile", "ecc.errors.uncorrected.volatile.total", None, "count"),
)
# remapped_rows.* exist only for --query-remapped-rows, which lists GPUs by bus id.
NVIDIA_HEALTH_FIELDS = (
    "index",
    "pci.bus_id",
    *(field for _key, field, _path, _kind in HEALTH_READINGS if field and not field.startswith("remapped_rows.")),
)
# The reset status (drivers up to the 550 branch) and the recovery action (later ones) say the same thing: a
# driver that reports one is not missing the other.
_ALTERNATIVE_READINGS = {
    "recovery_action": ("reset_required", "drain_and_reset_recommended"),
    "reset_required": ("recovery_action",),
    "drain_and_reset_recommended": ("recovery_action",),
}
NVIDIA_REMAPPED_ROWS_FIELDS = ("gpu_bus_id", "remapped_rows.pending", "remapped_rows.failure")

_UNKNOWN_FIELD_RE = re.compile(r'Field "(?P<field>[^"]+)" is not a valid field to query')


def nvidia_health_args(fields=NVIDIA_HEALTH_FIELDS):
    return ["--query-gpu=" + ",".join(fields), "--format=csv,noheader"]


def nvidia_remapped_rows_args():
    return ["--query-remapped-rows=" + ",".join(NVIDIA_REMAPPED_ROWS_FIELDS), "--format=csv,noheader"]


def unknown_query_field(text):
    """The field an older nvidia-smi refused ('Field "X" is not a valid field to query.'), else None."""
    match = _UNKNOWN_FIELD_RE.search(text or "")
    return match.group("field") if match else None


def _health_value(kind, value):
    """(reading, error): the reading in a plain form, or the error nvidia-smi printed instead of it."""
    value = (value or "").strip()
    if gpu_error_value(value):
        return None, value
    if not_available(value) or value.lower() == "[insufficient permissions]":
        return None, None
    lowered = value.lower()
    if kind == "flag":
        if lowered in ("yes", "true", "enabled") or (lowered.isdigit() and int(lowered) > 0):
            return True, None
        if lowered in ("no", "false", "disabled", "0"):
            return False, None
        return None, None
    if kind == "count":
        return (int(lowered), None) if lowered.isdigit() else (None, None)
    return value, None


def _csv_rows(source, text, fields):
    rows = []
    for line in (text or "").splitlines():
        if not line.strip():
            continue
        values = [value.strip() for value in line.split(",")]
        if len(values) != len(fields):
            raise GpuParseError(
                source,
                "expected %d comma-separated fields (%s), got %d in line %r"
                % (len(fields), ",".join(fields), len(values), line),
                text,
            )
        rows.append(dict(zip(fields, values, strict=True)))
    return rows


def parse_nvidia_health_query(text, fields=NVIDIA_HEALTH_FIELDS):
    """Parse `nvidia-smi --query-gpu=index,pci.bus_id,<health fields> --format=csv,noheader`.

    Returns {pci_bus_id: {"index", "readings": {key: value}, "errors": {field: printed}}}; fields missing from
    `fields` (an older driver refused them) are simply absent from the readings.
    """
    source = "nvidia-smi " + " ".join(nvidia_health_args(fields))
    by_field = dict((field, (key, kind)) for key, field, _path, kind in HEALTH_READINGS if field)
    result = {}
    for row in _csv_rows(source, text, fields):
        index = row["index"]
        if not index.isdigit():
            raise GpuParseError(source, "GPU index %r is not a number" % index, text)
        entry = {"index": int(index), "readings": {}, "errors": {}}
        for field in fields[2:]:
            key, kind = by_field[field]
            reading, error = _health_value(kind, row[field])
            if error:
                entry["errors"][field] = error
            else:
                # None (printed [N/A]) still counts as answered: the field does not apply to this GPU.
                entry["readings"][key] = reading
        result[_bus_key(row["pci.bus_id"])] = entry
    return result


def parse_nvidia_remapped_rows(text):
    """Parse `nvidia-smi --query-remapped-rows=gpu_bus_id,remapped_rows.pending,remapped_rows.failure
    --format=csv,noheader` into {pci_bus_id: {"readings", "errors"}}. Flags may print as Yes/No or 1/0."""
    source = "nvidia-smi " + " ".join(nvidia_remapped_rows_args())
    result = {}
    for row in _csv_rows(source, text, NVIDIA_REMAPPED_ROWS_FIELDS):
        entry = {"readings": {}, "errors": {}}
        for field, key in (
            ("remapped_rows.pending", "remapped_rows_pending"),
            ("remapped_rows.failure", "remapped_rows_failure"),
        ):
            reading, error = _health_value("flag", row[field])
            if error:
                entry["errors"][field] = error
            else:
                entry["readings"][key] = reading
        result[_bus_key(row["gpu_bus_id"])] = entry
    return result


def _bus_key(bus_id):
    """The query prints 00000000:18:00.0, -q sections and some tools 0000:18:00.0: compare the last 3 parts."""
    parts = (bus_id or "").strip().lower().split(":")
    return ":".join([parts[0].lstrip("0") or "0", *parts[1:]]) if len(parts) == 3 else bus_id.strip().lower()


def parse_nvidia_smi_q_values(text):
    """Every `Key : Value` line of `nvidia-smi -q`, per GPU, keyed by its section path.

    Returns {pci_bus_id: {("MIG Mode", "Current"): "Disabled", ("GPU Recovery Action",): "None", ...}}.
    Sections are the indented headings without a value ("MIG Mode", "Remapped Rows"); indentation decides
    nesting, so "Pending" under "Remapped Rows" and under "MIG Mode" stay apart.
    """
    result = {}
    values = None
    stack = []  # (indent, heading)
    for raw_line in (text or "").splitlines():
        line = raw_line.rstrip()
        section = GPU_SECTION_RE.match(line)
        if section:
            values = {}
            result[_bus_key(section.group("bus"))] = values
            stack = []
            continue
        if values is None or not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if ":" not in line:
            stack.append((indent, line.strip()))
            continue
        key, _sep, value = line.partition(":")
        path = (*(heading for _indent, heading in stack), key.strip())
        values.setdefault(path, value.strip())
    return result


_TABLE_GPU_ROW_RE = re.compile(r"^\|\s+(?P<index>\d+)\s+\S")


def parse_nvidia_smi_table_errors(text):
    """GPUs whose rows in the default `nvidia-smi` table show ERR! (NVML could not read them): {index: [rows]}.

    Each GPU takes the rows from its `|   N  NAME ...` line to the next `+---` border; the Processes table
    below is not read.
    """
    result = {}
    current = None
    for raw_line in (text or "").splitlines():
        line = raw_line.rstrip()
        if "Processes:" in line:
            break
        if line.startswith("+"):
            current = None
            continue
        row = _TABLE_GPU_ROW_RE.match(line)
        if row and current is None:
            current = int(row.group("index"))
        if current is not None and "ERR!" in line:
            result.setdefault(current, []).append(" ".join(line.split()))
    return result


def build_health(gpus, failed=(), *, query=None, remapped=None, q_values=None, table_errors=None, unread=()):
    """Combine the health readings of every source into one entry per GPU plus what could not be read.

    gpus / failed: from parse_nvidia_query_with_failures; query: parse_nvidia_health_query; remapped:
    parse_nvidia_remapped_rows; q_values: parse_nvidia_smi_q_values; table_errors:
    parse_nvidia_smi_table_errors; unread: notes on sources that could not be read at all.
    A reading comes from the first source that has it (query, remapped rows, then -q).
    """
    query = query or {}
    remapped = remapped or {}
    q_values = q_values or {}
    table_errors = table_errors or {}
    entries = []
    answered = set()
    for gpu in sorted(list(gpus) + list(failed), key=lambda item: item["index"]):
        bus = _bus_key(gpu["pci_bus_id"])
        entry = dict((key, None) for key, _field, _path, _kind in HEALTH_READINGS)
        entry.update(index=gpu["index"], pci_bus_id=gpu["pci_bus_id"], errors=dict(gpu.get("errors") or {}))
        for source in (query.get(bus), remapped.get(bus)):
            if source:
                for key, reading in source["readings"].items():
                    answered.add(key)
                    if entry[key] is None:
                        entry[key] = reading
                entry["errors"].update(source["errors"])
        report = q_values.get(bus, {})
        for key, _field, path, kind in HEALTH_READINGS:
            if entry[key] is None and path and path in report:
                answered.add(key)
                reading, error = _health_value(kind, report[path])
                if error:
                    entry["errors"][" / ".join(path)] = error
                else:
                    entry[key] = reading
        for row in table_errors.get(gpu["index"], []):
            entry["errors"].setdefault("nvidia-smi table", row)
        entries.append(entry)
    notes = list(unread)
    for key, field, path, _kind in HEALTH_READINGS:
        if entries and key not in answered and not answered.intersection(_ALTERNATIVE_READINGS.get(key, ())):
            where = " or ".join(
                part for part in (field, path and "`nvidia-smi -q` " + " / ".join(path)) if part
            )
            notes.append("%s (%s): not reported by this driver or GPU" % (key, where))
    return {"gpus": entries, "unread": notes}
