"""The sandbox's state file: what `inventories/sandbox` reads to find the hosts and the Hub stand-in.

It lives in the state folder (ignored by git), so starting a sandbox changes nothing in the repository. The
inventory script (`inventories/sandbox/sandbox_inventory.py`) reads the same JSON without importing
glm_deploy.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from glm_deploy.sandbox.environment import SandboxError, state_dir

STATE_VERSION = 1
STATE_FILE = "state.json"


@dataclass
class HostState:
    name: str
    ip: str
    port: int = 22


@dataclass
class HubState:
    url: str
    host: str
    port: int
    pid: int
    root: str
    log: str
    repo_id: str
    revisions: dict[str, str] = field(default_factory=dict)  # model revision ("1", "2") -> commit sha
    branches: dict[str, str] = field(default_factory=dict)  # model revision -> branch it was published on


@dataclass
class SandboxState:
    network: str
    image: str
    ssh_user: str
    ssh_key: str
    hosts: list[HostState] = field(default_factory=list)
    hub: HubState | None = None
    wheelhouse: str | None = None
    # The digest of what the image is made of except the controller's SSH key: the same on every clone and key.
    image_recipe: str = ""
    version: int = STATE_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SandboxState:
        hub = data.get("hub")
        return cls(
            network=str(data["network"]),
            image=str(data["image"]),
            ssh_user=str(data["ssh_user"]),
            ssh_key=str(data["ssh_key"]),
            hosts=[HostState(**host) for host in data.get("hosts", [])],
            hub=HubState(**hub) if hub else None,
            wheelhouse=data.get("wheelhouse"),
            image_recipe=str(data.get("image_recipe") or ""),
            version=int(data.get("version", STATE_VERSION)),
        )


def state_path() -> Path:
    return state_dir() / STATE_FILE


def load_state() -> SandboxState | None:
    path = state_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise SandboxError(
            f"the sandbox state file {path} cannot be read ({error})",
            hint="run `glm-deploy sandbox down` and then `glm-deploy sandbox up` to rebuild it",
        ) from error
    try:
        return SandboxState.from_dict(data)
    except (KeyError, TypeError) as error:
        raise SandboxError(
            f"the sandbox state file {path} is not in the expected format ({error!r})",
            hint="run `glm-deploy sandbox down` and then `glm-deploy sandbox up` to rebuild it",
        ) from error


def save_state(state: SandboxState) -> Path:
    """Write the state atomically: the inventory never reads a half-written file."""
    path = state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".state-", delete=False) as handle:
        json.dump(state.to_dict(), handle, indent=2, sort_keys=True)
        handle.write("\n")
    Path(handle.name).chmod(0o644)
    os.replace(handle.name, path)
    return path


def clear_state() -> None:
    state_path().unlink(missing_ok=True)
