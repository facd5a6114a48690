"""Run one of the collection's modules as Ansible runs it on a host: its own Python process, the arguments in a JSON
file, the result as JSON on stdout, the collection importable (`ansible_collections.glm.deploy...`, as the module's
AnsiballZ payload makes it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO / "collections"


def run_module_file(module: str, args_dir: Path, *, check_mode: bool = False, **arguments: Any) -> dict[str, Any]:
    """Run `collection/plugins/modules/<module>.py` with `arguments`; returns its result (a failure included)."""
    if check_mode:
        arguments["_ansible_check_mode"] = True
    args_file = args_dir / f"{module}-args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": arguments}))
    environment = dict(os.environ)
    # The repository's collection first; a PYTHONPATH already set stays after it.
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(COLLECTIONS), os.environ.get("PYTHONPATH")]))
    completed = subprocess.run(
        [sys.executable, "-m", f"ansible_collections.glm.deploy.plugins.modules.{module}", str(args_file)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )
    try:
        result: dict[str, Any] = json.loads(completed.stdout)
    except ValueError:
        raise AssertionError(f"{module} printed no JSON (rc {completed.returncode}):\n{completed.stderr}") from None
    return result
