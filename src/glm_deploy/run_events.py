"""ansible-runner's events, read once into one typed object.

ansible-runner hands every handler a nested dict (`event`, `event_data.host/task/task_action/res/ignore_errors`,
`stdout`, `created`). The Python API passes those dicts on unchanged (users know ansible-runner's format, and the
README's examples read it); inside glm-deploy every reader (the failures a run collects, the releases, caches and
quality scores the hosts report, the CLI's display, Lambda's launches) goes through `RunEvent.of(event)` instead of
digging in the dict by hand, so the format is decoded in one place and each reader names what it wants.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from glm_deploy.progress import Progress, parse_line

# A failed task, an unreachable host, or one failed item of a loop (the task fails after its last item).
FAILED_KINDS = frozenset({"runner_on_failed", "runner_on_unreachable", "runner_item_on_failed"})


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


@dataclass(frozen=True)
class RunEvent:
    """One ansible-runner event: its kind (`runner_on_ok`, `playbook_on_task_start`, ...) and what it carries."""

    kind: str
    host: str | None = None
    task: str | None = None
    action: str | None = None  # the task's module or action, e.g. glm.deploy.quality_gate
    play: str | None = None
    result: Mapping[str, Any] = field(default_factory=dict)  # the task's result (`res`), {} when none
    ignore_errors: bool = False
    stdout: str = ""
    created: str | None = None

    @classmethod
    def of(cls, event: Mapping[str, Any]) -> RunEvent:
        data = _mapping(event.get("event_data"))
        host = data.get("host")
        return cls(
            kind=str(event.get("event") or ""),
            host=str(host) if host is not None else None,
            task=_text(data.get("task") or data.get("name")),
            action=_text(data.get("task_action")),
            play=_text(data.get("play")),
            result=_mapping(data.get("res")),
            ignore_errors=bool(data.get("ignore_errors")),
            stdout=str(event.get("stdout") or ""),
            created=_text(event.get("created")),
        )

    @property
    def failed(self) -> bool:
        """A failed or unreachable host that the play does not ignore."""
        return self.kind in FAILED_KINDS and not self.ignore_errors

    @property
    def unreachable(self) -> bool:
        return self.kind == "runner_on_unreachable"

    @property
    def message(self) -> str:
        """What a failed task said: its msg, else stderr, else the reason; 'failed' when it said nothing."""
        result = self.result
        return str(result.get("msg") or result.get("stderr") or result.get("reason") or "failed").strip()

    @property
    def facts(self) -> Mapping[str, Any]:
        """The facts a successful task set (set_fact, a module's ansible_facts); {} otherwise."""
        return _mapping(self.result.get("ansible_facts")) if self.kind == "runner_on_ok" else {}

    def action_is(self, name: str) -> bool:
        """Whether the task ran module/action `name` (short or fully qualified)."""
        return self.action is not None and (self.action == name or self.action.endswith(f".{name}"))

    def created_at(self) -> datetime.datetime | None:
        """When ansible-runner made the event (timezone-aware), if it said."""
        return utc_time(self.created)

    def progress(self) -> list[tuple[str, Progress]]:
        """The transfer progress lines in this event's output (the weights download), as label and Progress."""
        found = (parse_line(line) for line in self.stdout.splitlines())
        return [parsed for parsed in found if parsed is not None]


def utc_time(text: object) -> datetime.datetime | None:
    """An ISO time as ansible-runner writes it (UTC, no zone) or with a zone; None for anything else."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def _text(value: object) -> str | None:
    return str(value) if value not in (None, "") else None
