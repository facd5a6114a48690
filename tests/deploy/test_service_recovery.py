"""The endpoint survives a host restart and an engine crash without any Ansible run."""

from __future__ import annotations

import pytest
from tests.equipment.fleet import Deployment, in_host, podman, wait_healthy

pytestmark = pytest.mark.sandbox

START_TIMEOUT_S = 420  # the catalog's start_timeout_s for vllm-cpu


def _unit_property(deployment: Deployment, name: str) -> str:
    answer = in_host(deployment.container, f"systemctl show --property={name} --value {deployment.unit}")
    assert answer.returncode == 0, answer.stderr
    return answer.stdout.strip()


def test_engine_killed_is_restarted_by_systemd_and_healthy_again(deployment: Deployment) -> None:
    wait_healthy(deployment.base_url, START_TIMEOUT_S)
    main_pid = _unit_property(deployment, "MainPID")
    restarts_before = int(_unit_property(deployment, "NRestarts"))
    assert main_pid.isdigit() and int(main_pid) > 1, f"{deployment.unit} has no main process: {main_pid!r}"

    killed = in_host(deployment.container, f"kill -KILL {main_pid}")
    assert killed.returncode == 0, killed.stderr

    seconds = wait_healthy(deployment.base_url, START_TIMEOUT_S)
    assert int(_unit_property(deployment, "NRestarts")) == restarts_before + 1
    assert _unit_property(deployment, "MainPID") != main_pid
    print(f"engine killed -> healthy again in {seconds:.0f} s")


def test_host_restart_brings_the_endpoint_back(deployment: Deployment) -> None:
    wait_healthy(deployment.base_url, START_TIMEOUT_S)
    restarted = podman("restart", deployment.container, timeout=180)
    assert restarted.returncode == 0, restarted.stderr

    seconds = wait_healthy(deployment.base_url, START_TIMEOUT_S)
    assert _unit_property(deployment, "ActiveState") == "active"
    assert _unit_property(deployment, "UnitFileState") == "enabled"
    print(f"podman restart -> healthy in {seconds:.0f} s")
