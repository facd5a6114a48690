"""The endpoint survives a host restart and an engine crash without any Ansible run."""

from __future__ import annotations

import json

import pytest
from tests.equipment.fleet import Deployment, host_url, in_host, podman, sandbox_cli, wait_healthy

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


def _recorded_address(deployment: Deployment) -> str:
    """The host's address as `glm-deploy sandbox status` reports it (from the state file the inventory reads)."""
    status = sandbox_cli("status", "--json", env=deployment.environment, timeout=120)
    assert status.returncode == 0, status.stderr
    hosts = {host["name"]: host for host in json.loads(status.stdout)["hosts"]}
    return str(hosts[deployment.container]["ip"])


def test_host_restart_brings_the_endpoint_back(deployment: Deployment) -> None:
    # The endpoint as the user was given it: the recorded address, not one looked up again after the restart.
    recorded = _recorded_address(deployment)
    endpoint = f"http://{recorded}:{deployment.port}"
    wait_healthy(endpoint, START_TIMEOUT_S)
    restarted = podman("restart", deployment.container, timeout=180)
    assert restarted.returncode == 0, restarted.stderr

    seconds = wait_healthy(endpoint, START_TIMEOUT_S)
    assert host_url(deployment.container, deployment.port) == endpoint, "the host came back on another address"
    assert _recorded_address(deployment) == recorded
    assert _unit_property(deployment, "ActiveState") == "active"
    assert _unit_property(deployment, "UnitFileState") == "enabled"
    print(f"podman restart -> healthy in {seconds:.0f} s")
