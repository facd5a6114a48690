"""Molecule's container scenario on a one-host sandbox of its own (sandbox name `molecule-container`): the engine
image built inside the host (nested podman and crun; loaded from the controller's cache when its inputs are
unchanged), the tiny model served from it through the container unit template, idempotence, verify, and
systemd-analyze verify inside the host on the container unit of every hardware profile.

It needs no deployed host (prepare installs the engine venv the image is made from; converge is a first deploy with
the container runtime), so it runs on the worker beside the fleet's instead of at the end of the fleet's chain.
GLM_DEPLOY_CONTAINER_SANDBOX=1 uses a sandbox named `molecule-container` that is already up and leaves it up.
"""

from __future__ import annotations

import os
import re
import secrets
import string
from collections.abc import Iterator

import pytest
from tests.equipment.fleet import sandbox_cli

from glm_deploy.catalog import load_catalog

from .scenario import run_scenario

pytestmark = [pytest.mark.molecule, pytest.mark.sandbox]

NAME = "molecule-container"


@pytest.fixture(scope="module")
def container_sandbox() -> Iterator[dict[str, str]]:
    """The environment that names the one-host sandbox the scenario runs on."""
    environment = {**os.environ, "GLM_DEPLOY_SANDBOX_NAME": NAME}
    reuse = os.environ.get("GLM_DEPLOY_CONTAINER_SANDBOX") == "1"
    if not reuse:
        up = sandbox_cli("up", "--hosts", "1", env=environment)
        assert up.returncode == 0, f"glm-deploy sandbox up failed:\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}"
    try:
        yield environment
    finally:
        if not reuse:
            sandbox_cli("down", env=environment, timeout=300)


def test_container_scenario_passes(container_sandbox: dict[str, str]) -> None:
    api_key = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(40))
    output = run_scenario("container", container_sandbox, api_key)
    # The engine answered from inside the container (the scenario's own checks passed) ...
    assert "Check the unit, the container and the engine in it" in output
    # ... and systemd checked the container unit of every hardware profile of the catalog (the loop's labels name
    # each profile's unit; Molecule's framed output may wrap longer lines, not these).
    assert "systemd-analyze verify passed" in output
    for hardware in sorted(load_catalog().hardware):
        assert re.search(rf"item={re.escape(hardware)}-[a-z0-9.-]+ node 0\)", output), f"no unit checked for {hardware}"
