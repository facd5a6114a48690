"""Every entry point of a role that a playbook calls (`tasks_from:`) has an argument spec, so Ansible validates its
inputs before the first task, like `main`: the spec lists every public variable of the role that the entry point's
tasks, the task files they import, the role's vars and the templates they name read, and nothing else.

Ansible looks the spec up by the `tasks_from` value as written, so the playbooks name entry points without `.yml`
(`tasks_from: activate`): with `activate.yml` the spec named `activate` would silently not apply."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.equipment.playbook import REPO

COLLECTION = REPO / "collection"
ROLES = COLLECTION / "roles"
YAML_FILES = [
    *sorted((REPO / "playbooks").rglob("*.yml")),
    *sorted(ROLES.rglob("tasks/*.yml")),
    *sorted((COLLECTION / "extensions").rglob("*.yml")),
]


INCLUDE_ROLE = ("ansible.builtin.include_role", "ansible.builtin.import_role", "include_role", "import_role")


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def _entry_points() -> set[tuple[str, str]]:
    """(role, entry point) for every include_role/import_role with tasks_from in the playbooks and the collection."""
    found = set()
    for path in YAML_FILES:
        for task in _walk(yaml.safe_load(path.read_text())):
            for action in INCLUDE_ROLE:
                call = task.get(action)
                if isinstance(call, dict) and call.get("tasks_from"):
                    role = str(call["name"]).removeprefix("glm.deploy.")
                    found.add((role, str(call["tasks_from"])))
    return found


ENTRY_POINTS = sorted(_entry_points())


def _specs(role: str) -> dict[str, Any]:
    specs: dict[str, Any] = yaml.safe_load((ROLES / role / "meta" / "argument_specs.yml").read_text())
    return specs["argument_specs"]


def _read_by(role: str, entry_point: str) -> set[str]:
    """The role's public variables (`<role>_*`) that the entry point reads: its task file and the task files it
    imports or includes, the role's vars/main.yml entries they use, and the templates they name."""
    folder = ROLES / role
    vars_file = folder / "vars" / "main.yml"
    role_vars = yaml.safe_load(vars_file.read_text()) if vars_file.exists() else {}
    texts: list[str] = []
    pending = [folder / "tasks" / f"{entry_point}.yml"]
    seen: set[Path] = set()
    while pending:
        path = pending.pop()
        if path in seen or not path.exists():
            continue
        seen.add(path)
        text = path.read_text()
        texts.append(text)
        pending += [folder / "tasks" / name for name in re.findall(r"(?:import|include)_tasks: ([\w.-]+\.yml)", text)]
        pending += [folder / "templates" / name for name in re.findall(r"[\w.-]+\.j2", text)]
        for name in set(re.findall(rf"\b_{role}_\w+", text)) & set(role_vars):
            pending_text = str(role_vars[name])
            texts.append(pending_text)
            pending += [folder / "templates" / template for template in re.findall(r"[\w.-]+\.j2", pending_text)]
    return set(re.findall(rf"(?<![\w.]){role}_[a-z0-9_]+", "\n".join(texts)))


def test_the_playbooks_call_entry_points_besides_main() -> None:
    assert ("server", "activate") in ENTRY_POINTS and ("plan", "pin") in ENTRY_POINTS


@pytest.mark.parametrize(("role", "entry_point"), ENTRY_POINTS, ids=[f"{r}:{e}" for r, e in ENTRY_POINTS])
def test_every_entry_point_a_playbook_calls_has_an_argument_spec(role: str, entry_point: str) -> None:
    assert (ROLES / role / "tasks" / f"{entry_point}.yml").exists(), f"call {role}'s {entry_point} without .yml"
    specs = _specs(role)
    assert entry_point in specs, f"roles/{role}/meta/argument_specs.yml has no entry point {entry_point!r}"
    spec = specs[entry_point]
    assert spec.get("short_description") and spec.get("options")
    for name, option in spec["options"].items():
        assert option.get("type") and option.get("description"), f"{role}:{entry_point} option {name}"
        main = specs["main"]["options"].get(name)
        assert main is None or main == option, f"{role}:{entry_point} describes {name} differently from main"
    defaults_file = ROLES / role / "defaults" / "main.yml"
    defaults = yaml.safe_load(defaults_file.read_text()) or {}
    read = _read_by(role, entry_point)
    assert set(spec["options"]) == read, f"{role}:{entry_point} reads {sorted(read)}"
    for name, option in spec["options"].items():
        assert name in defaults or option.get("required"), f"{role}:{entry_point} {name} has no default"
