"""What an inventory says about a deployment, read with `ansible-inventory --list --export`.

`--export` keeps group variables on their groups (rather than merging them into each host), so the model,
engine and hardware are known even while the inventory has no hosts yet (a sandbox not started). Variables are
merged the way Ansible ranks them for one host: `all` < `glm_servers` < the host's own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glm_deploy import paths
from glm_deploy.errors import InputError

GROUP = "glm_servers"


@dataclass(frozen=True)
class InventoryView:
    """The hosts of `glm_servers` and the variables that describe the deployment."""

    path: Path
    hosts: list[str]
    group_vars: dict[str, Any]
    hostvars: dict[str, dict[str, Any]] = field(default_factory=dict)

    def vars_for(self, host: str | None = None) -> dict[str, Any]:
        """The group's variables overlaid with `host`'s (the first host's when None)."""
        merged = dict(self.group_vars)
        chosen = host if host is not None else (self.hosts[0] if self.hosts else None)
        if chosen is not None:
            merged.update(self.hostvars.get(chosen, {}))
        return merged

    def address(self, host: str) -> str:
        """Where the controller reaches `host` (ansible_host, else the inventory name)."""
        return str(self.hostvars.get(host, {}).get("ansible_host") or host)


def resolve_inventory(inventory: str | Path, project_dir: Path | None = None) -> Path:
    """An absolute inventory path; relative ones are looked up in the working directory, then the project."""
    candidate = Path(inventory).expanduser()
    if candidate.is_absolute():
        found = candidate
    elif candidate.exists():
        found = candidate.resolve()
    else:
        found = (project_dir or paths.project_root()) / candidate
    if not found.exists():
        raise InputError(
            f"inventory {str(inventory)!r} not found "
            f"(looked in {Path.cwd()} and {project_dir or paths.project_root()})",
            hint="pass -i with an inventory file or directory: inventories/sandbox, inventories/lambda",
        )
    return found


def _hosts_of(data: dict[str, Any], group: str, seen: set[str]) -> list[str]:
    """The hosts of `group` and of its child groups, in inventory order, each once."""
    if group in seen:
        return []
    seen.add(group)
    entry = data.get(group) or {}
    hosts = [str(host) for host in entry.get("hosts") or []]
    for child in entry.get("children") or []:
        hosts += [host for host in _hosts_of(data, str(child), seen) if host not in hosts]
    return hosts


def plain(value: Any) -> Any:
    """`value` without ansible-inventory's marks of untrusted text: ansible-core 2.19 lists a string an inventory
    plugin got from outside (the Lambda API's addresses and names) as {"__ansible_unsafe": text}."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def read_inventory(inventory: str | Path, *, project_dir: Path | None = None) -> InventoryView:
    """Run `ansible-inventory` on `inventory` and return its `glm_servers` view."""
    path = resolve_inventory(inventory, project_dir)
    root = project_dir or paths.project_root()
    executable = Path(sys.executable).parent / "ansible-inventory"
    environment = dict(os.environ)
    environment["ANSIBLE_CONFIG"] = str(root / "ansible.cfg")
    environment["ANSIBLE_COLLECTIONS_PATH"] = str(paths.collections_path())
    environment["PATH"] = os.pathsep.join([str(executable.parent), environment.get("PATH", os.defpath)])
    command = [
        str(executable) if executable.exists() else "ansible-inventory",
        "-i",
        str(path),
        "--list",
        "--export",
    ]
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, env=environment, timeout=120, check=False, cwd=root
        )
    except FileNotFoundError:
        raise InputError(
            "ansible-inventory is not installed beside this Python",
            hint="install glm-deploy with its dependencies",
        ) from None
    if completed.returncode != 0:
        raise InputError(
            f"ansible-inventory could not read inventory {str(path)!r}: {completed.stderr.strip()[-800:]}",
            hint="check the inventory with `ansible-inventory -i PATH --list`",
        )
    data = plain(json.loads(completed.stdout))
    group = data.get(GROUP) or {}
    group_vars = dict((data.get("all") or {}).get("vars") or {})
    group_vars.update(group.get("vars") or {})
    hostvars = (data.get("_meta") or {}).get("hostvars") or {}
    hosts = _hosts_of(data, GROUP, set())
    return InventoryView(
        path=path,
        hosts=hosts,
        group_vars=group_vars,
        hostvars={host: dict(hostvars.get(host) or {}) for host in hosts},
    )
