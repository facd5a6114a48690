"""The test suite's tiers (docs/TESTING.md).

Every test is in exactly one tier, chosen by its markers:

- `sandbox`: needs the podman sandbox hosts (minutes each; `scripts/test.sh` runs them, `--fast` does not);
- `playbook`: runs processes on the controller (ansible-playbook, ansible-runner, the CLI, servers of the test
  equipment in worker processes) but no sandbox host;
- `unit`: everything else. A unit test must not start a process: the guard below fails it if it does, naming the
  tier it belongs in, so the fast tier stays fast and the marker stays true.

`unit` is given to every test that carries neither of the other two; modules mark `playbook` or `sandbox` themselves.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

TIERS = ("unit", "playbook", "sandbox")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        named = [tier for tier in TIERS if item.get_closest_marker(tier) is not None]
        if not named:
            item.add_marker(pytest.mark.unit)
        # With pytest-xdist's `--dist loadgroup` (scripts/test.sh): every test that uses the fleet runs on one
        # worker, in order (the deploy tests, then Molecule's scenarios on the same hosts); every other module
        # stays together on one worker, as its module fixtures and shared folders expect.
        uses_fleet = "deployment" in getattr(item, "fixturenames", ())
        item.add_marker(pytest.mark.xdist_group("fleet" if uses_fleet else item.nodeid.split("::", 1)[0]))


class ProcessInUnitTest(AssertionError):
    """A test of the unit tier started a process."""


def _refuse(what: str) -> Any:
    def refuse(*args: object, **kwargs: object) -> Any:
        raise ProcessInUnitTest(
            f"a unit test started a process ({what}); mark its module `pytestmark = pytest.mark.playbook` "
            "(or `sandbox` when it needs the sandbox hosts)"
        )

    return refuse


@pytest.fixture(autouse=True)
def _unit_tests_start_no_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    if request.node.get_closest_marker("unit") is not None:
        monkeypatch.setattr(subprocess.Popen, "_execute_child", _refuse("subprocess"))
        monkeypatch.setattr(os, "fork", _refuse("os.fork"))
        if hasattr(os, "posix_spawn"):
            monkeypatch.setattr(os, "posix_spawn", _refuse("os.posix_spawn"))
    yield


# The fleet (one deployed sandbox of two hosts) is shared by tests/deploy and tests/molecule: a session fixture of
# the whole suite, so that it is started once.
from tests.equipment.fleet import deployment  # noqa: E402,F401
