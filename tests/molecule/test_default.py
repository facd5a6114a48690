"""Molecule's default scenario on the fleet: converge site.yml again on both deployed hosts, idempotence (a second
converge changes nothing), check mode (changes nothing, passes), verify. It is the fleet's first test
(tests/conftest.py, FLEET_ORDER), on the hosts as the fleet deployed them."""

from __future__ import annotations

import pytest
from tests.equipment.fleet import Deployment

from .scenario import run_scenario

pytestmark = [pytest.mark.molecule, pytest.mark.sandbox]


def test_default_scenario_passes(deployment: Deployment) -> None:
    output = run_scenario("default", deployment.environment, deployment.api_key)
    # Every step of the sequence ran and passed: idempotence (Molecule fails it when the second converge changed
    # anything) and the custom check-mode step (check.yml: check mode passes and changes nothing), on both hosts.
    for action in ("converge", "idempotence", "side_effect", "verify"):
        assert f"{action}: Executed: Successful" in output, f"{action} did not pass"
    for host in deployment.hosts:
        assert host in output, f"the scenario did not reach {host}"
