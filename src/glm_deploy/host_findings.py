"""One problem a preflight check found on a host (`Finding`): which check, what is wrong, what to do about it.

A problem that a later role of the same play will fix (the NVIDIA container toolkit, a driver branch the user asked
for) names that role and does not block. glm_deploy.preflight and glm_deploy.nvidia_checks make them.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

# Fixers: what a later role of the play can fix. gpu_host always installs and configures the NVIDIA container
# toolkit and starts Fabric Manager; it installs a driver branch (and its Fabric Manager) only when asked to.
GPU_HOST_ROLE = "gpu_host"
GPU_HOST_DRIVER = "gpu_host_driver"


@dataclass(frozen=True)
class Finding:
    """One problem on a host: which check, what is wrong, what to do."""

    check: str
    problem: str
    fix: str
    severity: str = "error"  # "error" blocks the run; "warning" is shown and the run goes on
    fixable_by: str | None = None  # the role of this play that fixes it, when it will run
    blocking: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "problem": self.problem,
            "fix": self.fix,
            "severity": self.severity,
            "fixable_by": self.fixable_by,
            "blocking": self.blocking,
        }

    def __str__(self) -> str:
        later = (
            f" (the {self.fixable_by} role of this run will fix it)"
            if self.fixable_by and not self.blocking
            else ""
        )
        return f"[{self.check}] {self.problem}{later}. Fix: {self.fix}"


def make_finding(
    check: str,
    problem: str,
    fix: str,
    *,
    fixers: Collection[str],
    fixable_by: str | None = None,
    severity: str = "error",
) -> Finding:
    """A finding that blocks the run when it is an error no role of this play (`fixers`) will fix."""
    fixed_later = fixable_by is not None and fixable_by in fixers
    return Finding(
        check,
        problem,
        fix,
        severity,
        fixable_by if fixed_later else None,
        blocking=severity == "error" and not fixed_later,
    )
