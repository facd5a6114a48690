"""The fleet: one deployed sandbox shared by every test that needs a deployment (tests/deploy, then Molecule's
scenarios in tests/molecule): `glm-deploy sandbox up --hosts 2`, then site.yml through the `Deployment` API (so the
redeploy tests find a history), as a fleet of two one-node replicas. tests/conftest.py makes `deployment` a fixture
of the whole suite.

One sandbox (its own name, so it never touches a developer's `glm-sandbox`) serves every test of the session;
the endpoint API key is generated here so that the tests know exactly which string must never leak. Most tests
look at the first host; the redeploy tests use both.
GLM_DEPLOY_E2E_SANDBOX=NAME deploys to a sandbox of that name that is already up (`GLM_DEPLOY_SANDBOX_NAME=NAME
glm-deploy sandbox up --hosts 2`) instead; nothing is started or removed then.
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
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from glm_deploy.deployment import Deployment as DeploymentApi
from glm_deploy.errors import GlmDeployError

REPO_ROOT = Path(__file__).resolve().parents[2]
SANDBOX_NAME = "glm-deploy-e2e"
UNIT = "glm-glm-tiny.service"


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
    hosts: list[str] = field(default_factory=list)
    state_dir: Path | None = None
    hub_revisions: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return host_url(self.container, self.port)

    def api(self) -> DeploymentApi:
        """The Python API on this deployment's inventory and controller state."""
        return DeploymentApi(self.inventory, state_dir=self.state_dir, secrets={"glm_api_key": self.api_key})


def host_url(container: str, port: int) -> str:
    # Looked up every time, from podman itself (the host restart test compares it with the recorded address).
    template = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
    inspected = podman("inspect", "--format", template, container)
    address = inspected.stdout.split()[0] if inspected.returncode == 0 and inspected.stdout.split() else "unknown"
    return f"http://{address}:{port}"


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


def _deploy(inventory: Path, state_dir: Path, api_key: str) -> tuple[Path, str]:
    handle = DeploymentApi(inventory, state_dir=state_dir, secrets={"glm_api_key": api_key}).start("deploy")
    artifacts = state_dir / "runner" / "artifacts"
    try:
        handle.wait()
    except GlmDeployError as error:
        output = "\n".join(path.read_text(errors="replace") for path in artifacts.rglob("stdout") if path.is_file())
        pytest.fail(f"site.yml failed: {error}\n{output[-6000:]}")
    output = "\n".join(path.read_text(errors="replace") for path in artifacts.rglob("stdout") if path.is_file())
    return artifacts, output


@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    api_key = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(40))
    state = tmp_path_factory.mktemp("controller")
    existing = os.environ.get("GLM_DEPLOY_E2E_SANDBOX")
    name = existing or SANDBOX_NAME
    environment = {**os.environ, "GLM_DEPLOY_SANDBOX_NAME": name}
    if not existing:
        up = sandbox_cli("up", "--hosts", "2", env=environment)
        assert up.returncode == 0, f"glm-deploy sandbox up failed:\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}"
    try:
        sandbox_state = json.loads((REPO_ROOT / ".cache" / f"sandbox-{name}" / "state.json").read_text())
        hosts = [host["name"] for host in sandbox_state["hosts"]]
        hub = sandbox_state["hub"]
        revisions = {hub["branches"][number]: commit for number, commit in hub["revisions"].items()}
        os.environ["GLM_DEPLOY_SANDBOX_NAME"] = name  # the inventory script reads it
        inventory = REPO_ROOT / "inventories" / "sandbox"
        artifacts, output = _deploy(inventory, state, api_key)
        yield Deployment(
            hosts[0], 8000, UNIT, api_key, artifacts, output, environment, inventory, hosts, state, revisions
        )
    finally:
        if not existing:
            sandbox_cli("down", env=environment, timeout=300)
