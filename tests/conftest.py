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

import contextlib
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

TIERS = ("unit", "playbook", "sandbox")


# The fleet's tests live here, in the order they run: pytest-xdist's scheduler only sees node ids, so the fleet is
# named by path. Molecule's default scenario first, on the hosts as the fleet deployed them (its converge then
# changes nothing, as the idempotence step after it); the deploy tests; TLS switched on on the first host last (that
# host keeps it). Molecule's container scenario is not the fleet's: it brings a sandbox host of its own.
FLEET_ORDER = ("tests/molecule/test_default.py", "tests/deploy/", "tests/tls/")
FLEET_PATHS = FLEET_ORDER


def _in_fleet(nodeid: str) -> bool:
    return nodeid.startswith(FLEET_PATHS)


# The longest module off the fleet starts first on the other worker.
LONGEST_OFF_FLEET = "tests/molecule/test_container.py"


def _fleet_rank(nodeid: str) -> int:
    """Where a test runs: the fleet's tests in FLEET_ORDER, then every other test (stable order otherwise)."""
    return next((rank for rank, prefix in enumerate(FLEET_ORDER) if nodeid.startswith(prefix)), len(FLEET_ORDER))


def _order(nodeid: str) -> int:
    """The fleet's chain first (in FLEET_ORDER), then the longest module off it, then the rest."""
    rank = _fleet_rank(nodeid)
    if rank < len(FLEET_ORDER):
        return rank
    return rank if nodeid.startswith(LONGEST_OFF_FLEET) else rank + 1


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        named = [tier for tier in TIERS if item.get_closest_marker(tier) is not None]
        if not named:
            item.add_marker(pytest.mark.unit)
        if "deployment" in getattr(item, "fixturenames", ()) and not _in_fleet(item.nodeid):
            raise pytest.UsageError(
                f"{item.nodeid} uses the fleet (the deployment fixture): put it under {' or '.join(FLEET_PATHS)}, "
                "which one worker runs in order"
            )
    # The fleet's chain is the longest: it starts first, in FLEET_ORDER, and the container scenario right after it,
    # so that xdist hands it to the other worker first (stable order otherwise).
    items.sort(key=lambda item: _order(item.nodeid))


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """With `-n N --dist loadscope` (scripts/test.sh): the fleet's tests are one unit of work, run by one worker in
    order (the deploy tests, then Molecule's scenarios on the same hosts); every other module is a unit of its own,
    so its module fixtures and shared folders stay on one worker."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling  # only when pytest-xdist distributes

    class FleetScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return "fleet" if _in_fleet(nodeid) else nodeid.split("::", 1)[0]

    return FleetScheduling(config, log)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Warm what a library does once per machine with a process, before any unit test's guard is on.

    matplotlib (the `plot` extra) lists the system fonts with `fc-list` the first time its font manager loads and
    keeps the list in its cache folder. On a machine where that never happened (a fresh CI machine) the first unit
    test that draws would start that process: the guard below would fail it, and the cache would never be written.
    """
    with contextlib.suppress(ImportError):
        import matplotlib.font_manager  # noqa: F401 - imported for its side effect, the font cache


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
