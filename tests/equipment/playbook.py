"""Run ansible-playbook from a test: the venv's own binary, the repository's collections, quiet and colourless.

`run_playbook` is what every test that drives a role or playbook through a real `ansible-playbook` process
shares: glm.deploy resolves from the repository's `collections/` folder, Ansible keeps its state under the
test's own folder (`home/.ansible`), the localhost and unparsed-inventory warnings are off and the output has no
colour codes. What a test needs beyond that (its PATH, the FAKE_* settings of a stand-in, an inventory, extra
command-line arguments, a working directory, a timeout) it passes in. The completed process comes back
unchecked: tests assert on its return code and output themselves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


def playbook_env(*, home: Path, env: Mapping[str, str] | None = None, drop_env: Sequence[str] = ()) -> dict[str, str]:
    """This process's environment, less variables whose names start with one of `drop_env`, plus the common
    Ansible settings, plus `env` (which wins)."""
    inherited = {key: value for key, value in os.environ.items() if not key.startswith(tuple(drop_env))}
    return {
        **inherited,
        "ANSIBLE_COLLECTIONS_PATH": str(REPO / "collections"),
        "ANSIBLE_HOME": str(home / ".ansible"),
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
        "ANSIBLE_NOCOLOR": "1",
        **(env or {}),
    }


def run_playbook(
    playbook: Path,
    *,
    home: Path,
    variables: Mapping[str, object] | None = None,
    inventory: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    drop_env: Sequence[str] = (),
    args: Sequence[str] = (),
    cwd: Path | None = None,
    timeout: int = 300,
) -> subprocess.CompletedProcess[str]:
    """Run the venv's ansible-playbook on `playbook` and return the completed process (not checked).

    `variables` go as one `-e` JSON document; `inventory` (a file, or a host list such as "localhost,") as `-i`;
    `args` follow them. The environment is `playbook_env(home=home, env=env, drop_env=drop_env)`.
    """
    command = [str(ANSIBLE_PLAYBOOK), str(playbook)]
    if inventory is not None:
        command += ["-i", str(inventory)]
    if variables is not None:
        command += ["-e", json.dumps(variables)]
    command += list(args)
    return subprocess.run(
        command,
        env=playbook_env(home=home, env=env, drop_env=drop_env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
