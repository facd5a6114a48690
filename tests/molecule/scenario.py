"""Runs one Molecule scenario of the collection on sandbox hosts.

The scenarios bring no hosts of their own: Molecule's default driver with `managed: false` links the sandbox
inventory, which lists the hosts of the sandbox that GLM_DEPLOY_SANDBOX_NAME names in the environment given. The
default scenario runs on the fleet (tests/equipment/fleet.py: a converged re-run, which is what idempotence and check
mode are about); the container scenario on a one-host sandbox of its own. The API key goes in as GLM_API_KEY, so a
converge keeps the key the other tests know, and the output is searched for it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_scenario(scenario: str, environment: dict[str, str], api_key: str, *, limit: str | None = None) -> str:
    """`molecule test --scenario-name SCENARIO` on the sandbox that `environment` names (or the hosts LIMIT names);
    returns its output."""
    molecule = shutil.which("molecule") or str(Path(sys.executable).parent / "molecule")
    assert Path(molecule).exists(), "molecule is not installed: pip install -e '.[dev]'"
    environment = {
        **environment,
        "GLM_API_KEY": api_key,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    if limit:
        environment["GLM_MOLECULE_LIMIT"] = limit
    def molecule_run(action: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [molecule, action, "--scenario-name", scenario],
            cwd=REPO_ROOT / "collection",
            env=environment,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    # Molecule keeps a scenario's state (for one, "prepared") in the project's .ansible across runs; the hosts are
    # new this session, so an earlier run's state would skip the container scenario's prepare.
    reset = molecule_run("reset", 300)
    assert reset.returncode == 0, f"molecule reset {scenario} failed:\n{(reset.stdout + reset.stderr)[-3000:]}"
    run = molecule_run("test", 3600)
    # Molecule colours its output; the tests read the words.
    output = re.sub(r"\x1b\[[0-9;]*m", "", run.stdout + run.stderr)
    # Molecule's closing summary can say "Successful" after a failed idempotence step: judge by the exit code.
    assert run.returncode == 0, f"molecule test {scenario} failed (rc {run.returncode}):\n{output[-8000:]}"
    assert api_key not in output, f"the API key appeared in molecule's output of {scenario}"
    return output
