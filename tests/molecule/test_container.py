"""Molecule's container scenario on the fleet's second host: the engine image built inside it (nested podman and
crun), the tiny model served from it through the container unit template, idempotence, verify, and systemd-analyze
verify inside the host on the container unit of every hardware profile. It is the fleet's last test
(tests/conftest.py, FLEET_ORDER): the host stays on the container runtime."""

from __future__ import annotations

import re

import pytest
from tests.equipment.fleet import Deployment

from glm_deploy.catalog import load_catalog

from .scenario import run_scenario

pytestmark = [pytest.mark.molecule, pytest.mark.sandbox]


def test_container_scenario_passes(deployment: Deployment) -> None:
    output = run_scenario("container", deployment, limit=deployment.hosts[1])
    # The engine answered from inside the container (the scenario's own checks passed) ...
    assert "Check the unit, the container and the engine in it" in output
    # ... and systemd checked the container unit of every hardware profile of the catalog (the loop's labels name
    # each profile's unit; Molecule's framed output may wrap longer lines, not these).
    assert "systemd-analyze verify passed" in output
    for hardware in sorted(load_catalog().hardware):
        assert re.search(rf"item={re.escape(hardware)}-[a-z0-9.-]+ node 0\)", output), f"no unit checked for {hardware}"
