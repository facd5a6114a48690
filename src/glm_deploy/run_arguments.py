"""The arguments of a run, checked before anything starts: a redeploy's target, a roll's serial, a benchmark floor.

Each check raises `InputError` naming the argument, the value and what would work.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from glm_deploy.errors import InputError
from glm_deploy.render import PlanOptions
from glm_deploy.validation import clip

# What `redeploy(to=...)` may change besides the plan options.
TARGET_SETTINGS = ("model", "engine", "hardware", "nodes")


def check_target(to: Mapping[str, Any] | None) -> dict[str, Any]:
    """A redeploy's target: plan options and TARGET_SETTINGS, each checked by name."""
    if to is None:
        return {}
    if not isinstance(to, Mapping):
        raise InputError(f"to= must be a mapping of settings, got {clip(to)}", hint='e.g. to={"revision": "v2"}')
    known = {option.name for option in dataclasses.fields(PlanOptions)} | set(TARGET_SETTINGS)
    unknown = sorted(set(to) - known)
    if unknown:
        raise InputError(
            f"unknown redeploy setting(s) {clip(', '.join(unknown))}",
            hint=f"one of {', '.join(sorted(known))}",
        )
    return dict(to)


# How many hosts a roll moves at once: a positive count, or a share such as "25%" (also checked in schedules).
# \Z, not $: `$` also matches before a trailing newline.
SERIAL_PATTERN = re.compile(r"(?:[1-9][0-9]{0,5}|(?:[1-9][0-9]?|100)%)\Z")


def check_serial(serial: int | str) -> int | str:
    """How many hosts a roll moves at once: a positive count, or a share of the hosts such as "25%"."""
    text = str(serial).strip()
    if isinstance(serial, bool) or not SERIAL_PATTERN.match(text):
        raise InputError(
            f"serial must be a positive number of hosts or a share such as 25%, got {clip(serial)}",
            hint="serial=1 (the default) moves one host at a time",
        )
    return int(text) if text.isdigit() else text


def check_floor(floor: Mapping[str, float]) -> dict[str, float]:
    """A benchmark floor: result keys of `vllm bench serve` (output_throughput, ...) to their minimums."""
    checked: dict[str, float] = {}
    for key, minimum in floor.items():
        try:
            checked[str(key)] = float(minimum)
        except (TypeError, ValueError):
            raise InputError(
                f"benchmark floor {key} must be a number, got {minimum!r}",
                hint="e.g. output_throughput=300 (tokens/s)",
            ) from None
    return checked
