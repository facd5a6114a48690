# Controller-side helper of the collection's wait actions (hf_prefetch_wait, cache_warmup_wait): both poll an async
# job on the target the way ansible.builtin.async_status does.
from __future__ import annotations

from typing import Any


def async_status(action: Any, jid: str, mode: str, task_vars: dict[str, Any]) -> dict[str, Any]:
    """Run async_status for `jid` on the action's host (mode `status` or `cleanup`), in its async folder."""
    async_dir = action._remote_expand_user(action.get_shell_option("async_dir", default="~/.ansible_async"))
    result: dict[str, Any] = action._execute_module(
        module_name="ansible.legacy.async_status",
        module_args={"jid": jid, "mode": mode, "_async_dir": async_dir},
        task_vars=task_vars,
    )
    return result


# The first poll comes this soon: a job that has nothing to do (a converged re-run) ends in about a second.
FIRST_POLL_S = 0.5


class PollDelays:
    """Delays between polls: FIRST_POLL_S, then doubling up to `interval` and staying there. A wait that would end
    right away costs about a second instead of one whole interval, and a wait of hours still polls every `interval`
    seconds (each poll is an SSH round trip)."""

    def __init__(self, interval: float, first: float = FIRST_POLL_S) -> None:
        self.interval = max(float(interval), 0.0)
        self._next = min(first, self.interval)

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.interval)
        return delay
