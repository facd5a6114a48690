"""Molecule's default scenario: converge site.yml on a sandbox host, idempotence, check mode, verify, destroy."""

from __future__ import annotations

import pytest

from .scenario import run_scenario

pytestmark = [pytest.mark.molecule, pytest.mark.sandbox]


def test_default_scenario_passes() -> None:
    output = run_scenario("default", sandbox_name="glm-molecule")
    # The custom check-mode step (check.yml) ran and passed.
    assert "Check that check mode passed and changed nothing" in output
