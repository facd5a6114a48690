"""Runs one Molecule scenario of the collection against a throw-away sandbox that provides what its host needs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _sandbox(command: str, environment: dict[str, str], *, timeout: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "glm_deploy.cli", "sandbox", command],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_scenario(scenario: str, sandbox_name: str) -> str:
    """`molecule test --scenario-name SCENARIO`; returns its output, failing the test on a non-zero exit."""
    molecule = shutil.which("molecule") or str(Path(sys.executable).parent / "molecule")
    assert Path(molecule).exists(), "molecule is not installed: pip install -e '.[dev]'"
    environment = {**os.environ, "GLM_DEPLOY_SANDBOX_NAME": sandbox_name}
    # The sandbox provides what the scenario's host needs: the image, the Hub stand-in with the tiny model, and the
    # engine wheelhouse. Its own host is not used (--hosts 0 is not offered, so one idles beside the scenario's).
    up = _sandbox("up", environment, timeout=1800)
    assert up.returncode == 0, f"glm-deploy sandbox up failed:\n{up.stderr[-3000:]}"
    try:
        state = json.loads((REPO_ROOT / ".cache" / f"sandbox-{sandbox_name}" / "state.json").read_text())
        environment.update(
            GLM_MOLECULE_IMAGE=state["image"],
            GLM_MOLECULE_HF_ENDPOINT=state["hub"]["url"],
            GLM_MOLECULE_WHEELHOUSE=state["wheelhouse"],
            PATH=os.pathsep.join([str(Path(sys.executable).parent), environment.get("PATH", "")]),
        )
        run = subprocess.run(
            [molecule, "test", "--scenario-name", scenario],
            cwd=REPO_ROOT / "collection",
            env=environment,
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
        )
        output = run.stdout + run.stderr
        # Molecule's closing summary can say "Successful" after a failed idempotence step: judge by the exit code.
        assert run.returncode == 0, f"molecule test {scenario} failed (rc {run.returncode}):\n{output[-8000:]}"
        return output
    finally:
        _sandbox("down", environment, timeout=300)
