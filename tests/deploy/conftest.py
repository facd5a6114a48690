"""A deployed sandbox for the deploy-path tests: `glm-deploy sandbox up`, then site.yml through ansible-runner.

One sandbox (its own name, so it never touches a developer's `glm-sandbox`) serves every test of the session;
the endpoint API key is generated here so that the tests know exactly which string must never leak.
GLM_DEPLOY_E2E_INVENTORY=PATH runs site.yml against hosts that are already up instead (podman containers named
like their inventory hosts); nothing is started or removed then.
"""

from __future__ import annotations

import json
import os
import secrets
import string
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SANDBOX_NAME = "glm-deploy-e2e"


@dataclass
class Deployment:
    container: str
    port: int
    unit: str
    api_key: str
    artifacts: Path
    output: str
    environment: dict[str, str]
    inventory: Path

    @property
    def base_url(self) -> str:
        # Looked up every time: a restarted container may come back on another address.
        template = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
        inspected = podman("inspect", "--format", template, self.container)
        address = inspected.stdout.split()[0] if inspected.returncode == 0 and inspected.stdout.split() else "unknown"
        return f"http://{address}:{self.port}"


def sandbox_cli(*args: str, env: dict[str, str], timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "glm_deploy.cli", "sandbox", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=False)


def in_host(container: str, command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return podman("exec", container, "bash", "-c", command, timeout=timeout)


def health_status(base_url: str) -> int | None:
    try:
        with urllib.request.urlopen(f"{base_url}/health", timeout=5) as answer:
            return int(answer.status)
    except (urllib.error.URLError, OSError):
        return None


def wait_healthy(base_url: str, timeout: float) -> float:
    """Seconds until /health answered 200; fails the test with the elapsed time otherwise."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if health_status(base_url) == 200:
            return time.monotonic() - started
        time.sleep(2)
    pytest.fail(f"{base_url}/health did not answer 200 within {timeout:.0f} s")


def _deploy(inventory: Path, runner_state: Path, api_key: str) -> tuple[Path, str]:
    from glm_deploy.runner import PlaybookRunner

    result = PlaybookRunner(state_dir=runner_state).run(
        "site.yml", inventory=inventory, secrets={"glm_api_key": api_key}, raise_on_failure=False
    )
    artifacts = runner_state / "runner" / "artifacts"
    output = "\n".join(path.read_text(errors="replace") for path in artifacts.rglob("stdout") if path.is_file())
    assert result.ok, f"site.yml failed:\n{output[-6000:]}"
    return artifacts, output


@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    api_key = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(40))
    runner_state = tmp_path_factory.mktemp("runner")
    given = os.environ.get("GLM_DEPLOY_E2E_INVENTORY")
    if given:
        listed = subprocess.run(
            [str(Path(sys.executable).parent / "ansible-inventory"), "-i", given, "--list"],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        host = json.loads(listed.stdout)["glm_servers"]["hosts"][0]
        artifacts, output = _deploy(Path(given), runner_state, api_key)
        yield Deployment(
            host, 8000, "glm-glm-tiny.service", api_key, artifacts, output, dict(os.environ), Path(given)
        )
        return
    environment = {**os.environ, "GLM_DEPLOY_SANDBOX_NAME": SANDBOX_NAME}
    up = sandbox_cli("up", env=environment)
    assert up.returncode == 0, f"glm-deploy sandbox up failed:\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}"
    try:
        state_dir = REPO_ROOT / ".cache" / f"sandbox-{SANDBOX_NAME}"
        host = json.loads((state_dir / "state.json").read_text())["hosts"][0]["name"]
        os.environ["GLM_DEPLOY_SANDBOX_NAME"] = SANDBOX_NAME  # the inventory script reads it
        inventory = REPO_ROOT / "inventories" / "sandbox"
        artifacts, output = _deploy(inventory, runner_state, api_key)
        yield Deployment(host, 8000, "glm-glm-tiny.service", api_key, artifacts, output, environment, inventory)
    finally:
        sandbox_cli("down", env=environment, timeout=300)
