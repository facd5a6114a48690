#!/usr/bin/env python3
"""Dynamic part of `inventories/sandbox`: the hosts `glm-deploy sandbox up` started, read from its state file.

The state file lives in the ignored state folder (`.cache/sandbox/state.json` at the repository root,
`.cache/sandbox-<name>/` for a sandbox named by GLM_DEPLOY_SANDBOX_NAME, or
`$GLM_DEPLOY_SANDBOX_DIR/state.json`), so starting a sandbox leaves the repository unchanged. Static
settings (model, engine, SSH user, become) are in `group_vars/glm_servers.yml` beside this script.

With no sandbox running this prints an empty `glm_servers` group; `glm-deploy sandbox up` starts one.
Standard library only: Ansible runs this with whatever python3 is first on PATH.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

GROUP = "glm_servers"


def _state_file() -> Path:
    override = os.environ.get("GLM_DEPLOY_SANDBOX_DIR")
    if override:
        return Path(override) / "state.json"
    # The same rule as glm_deploy.sandbox.environment.state_dir: another sandbox name, another folder.
    name = os.environ.get("GLM_DEPLOY_SANDBOX_NAME", "glm-sandbox")
    folder = "sandbox" if name == "glm-sandbox" else f"sandbox-{name}"
    # inventories/sandbox/<this file> -> repository root (resolve: ./sandbox at the root is a symlink).
    return Path(__file__).resolve().parents[2] / ".cache" / folder / "state.json"


def _inventory() -> dict[str, object]:
    try:
        state = json.loads(_state_file().read_text())
    except FileNotFoundError:
        state = {}
    hostvars: dict[str, dict[str, object]] = {}
    for host in state.get("hosts", []):
        hostvars[host["name"]] = {
            "ansible_host": host["ip"],
            "ansible_port": host.get("port", 22),
            "ansible_user": state["ssh_user"],
            "ansible_ssh_private_key_file": state["ssh_key"],
        }
    group_vars: dict[str, object] = {}
    hub = state.get("hub")
    if hub:
        group_vars["glm_hf_endpoint"] = hub["url"]
        group_vars["glm_sandbox_model_revisions"] = hub.get("revisions", {})
    if state.get("wheelhouse"):
        group_vars["glm_wheelhouse"] = state["wheelhouse"]
    if state.get("image"):
        # The hosts' own image: playbooks/sandbox_engine_image.yml builds the engine image on top of it.
        group_vars["glm_sandbox_image"] = state["image"]
    if state.get("image_recipe"):
        # What that image is made of, without the controller's SSH key: the engine image's cache key.
        group_vars["glm_sandbox_image_recipe"] = state["image_recipe"]
    return {
        "all": {"children": ["ungrouped", GROUP]},
        GROUP: {"hosts": sorted(hostvars), "vars": group_vars},
        "_meta": {"hostvars": hostvars},
    }


def main(argv: list[str]) -> int:
    inventory = _inventory()
    if len(argv) >= 2 and argv[1] == "--list":
        json.dump(inventory, sys.stdout, indent=2, sort_keys=True)
    elif len(argv) >= 3 and argv[1] == "--host":
        hostvars = inventory["_meta"]["hostvars"]  # type: ignore[index]
        json.dump(hostvars.get(argv[2], {}), sys.stdout, indent=2, sort_keys=True)
    else:
        print("usage: sandbox_inventory.py --list | --host NAME", file=sys.stderr)
        return 2
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
