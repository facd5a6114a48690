"""Molecule's default scenario on the fleet: converge site.yml again on both deployed hosts, idempotence (a second
converge changes nothing), check mode (changes nothing, passes), verify."""

from __future__ import annotations

import pytest
from tests.equipment.fleet import Deployment

from .scenario import run_scenario

pytestmark = [pytest.mark.molecule, pytest.mark.sandbox]


def test_default_scenario_passes(deployment: Deployment) -> None:
    output = run_scenario("default", deployment)
    # Idempotence ran (Molecule fails the run when the second converge changed anything) ...
    assert "idempotence" in output
    # ... and the custom check-mode step (check.yml) ran and passed, on both hosts.
    assert "Check that check mode passed and changed nothing" in output
    for host in deployment.hosts:
        assert host in output, f"the scenario did not reach {host}"
