"""Sandbox hosts have fixed addresses on their network, so a restarted host comes back where the endpoint, the
state file and the inventory say it is (podman gives a container started without `--ip` a new address each start)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from glm_deploy.sandbox import hosts
from glm_deploy.sandbox.environment import STATE_DIR_ENV, SandboxError


def _inspect(*subnets: dict[str, str]) -> list[dict[str, Any]]:
    return [{"name": "glm-sandbox", "subnets": list(subnets)}]


def test_the_ipv4_subnet_and_gateway_are_read_from_podman_network_inspect() -> None:
    network = hosts.network_from_inspect(
        _inspect({"subnet": "fd00::/64", "gateway": "fd00::1"}, {"subnet": "10.89.3.0/24", "gateway": "10.89.3.1"})
    )
    assert network.gateway == "10.89.3.1"
    assert network.subnet == ipaddress.IPv4Network("10.89.3.0/24")


@pytest.mark.parametrize("inspected", [[], _inspect(), _inspect({"subnet": "fd00::/64", "gateway": "fd00::1"})])
def test_a_network_without_an_ipv4_subnet_is_refused_with_the_fix(inspected: list[dict[str, Any]]) -> None:
    with pytest.raises(SandboxError) as raised:
        hosts.network_from_inspect(inspected)
    assert "no IPv4 subnet" in str(raised.value)
    assert "podman network rm" in (raised.value.hint or "")


def test_every_host_has_its_own_address_the_same_on_every_call() -> None:
    network = hosts.Network(gateway="10.89.0.1", subnet=ipaddress.IPv4Network("10.89.0.0/24"))
    addresses = [network.host_address(index) for index in range(1, hosts.MAX_HOSTS + 1)]
    assert addresses == [network.host_address(index) for index in range(1, hosts.MAX_HOSTS + 1)]
    assert len(set(addresses)) == hosts.MAX_HOSTS
    assert network.gateway not in addresses
    assert all(ipaddress.IPv4Address(address) in network.subnet for address in addresses)
    assert addresses[0] == "10.89.0.11"


def test_a_subnet_too_small_for_the_host_is_refused() -> None:
    network = hosts.Network(gateway="10.89.0.1", subnet=ipaddress.IPv4Network("10.89.0.0/28"))
    assert network.host_address(4) == "10.89.0.14"
    with pytest.raises(SandboxError, match="no room for host 5"):
        network.host_address(5)


def test_hosts_start_on_their_fixed_address(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[list[str]] = []
    monkeypatch.setattr(hosts, "_container_by_name", lambda name: None)
    monkeypatch.setattr(hosts, "run", lambda argv, **kwargs: started.append(list(argv)))
    hosts._start_host("glm-sandbox-2", "localhost/glm-sandbox:abc", "10.89.0.12")
    argv = started[0]
    assert argv[argv.index("--ip") + 1] == "10.89.0.12"


def test_a_running_host_on_another_address_or_without_the_filesystem_is_replaced(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path))
    calls: list[list[str]] = []
    folder, mount_point = hosts.shared_filesystem()
    existing: dict[str, Any] = {
        "Config": {"Labels": {hosts.CONTAINER_LABEL: hosts.sandbox_name()}},
        "State": {"Running": True},
        "ImageName": "localhost/glm-sandbox:abc",
        "NetworkSettings": {"Networks": {hosts.sandbox_name(): {"IPAddress": "10.89.0.2"}}},
        "Mounts": [{"Source": str(folder), "Destination": mount_point}],
    }
    monkeypatch.setattr(hosts, "_container_by_name", lambda name: existing)
    monkeypatch.setattr(hosts, "run", lambda argv, **kwargs: calls.append(list(argv)))
    monkeypatch.setattr(hosts, "progress", lambda message: None)
    hosts._start_host("glm-sandbox-1", "localhost/glm-sandbox:abc", "10.89.0.11")
    assert calls[0][:3] == ["podman", "rm", "--force"]
    assert "10.89.0.11" in calls[1]

    # The new host mounts the shared folder where Lambda mounts a filesystem.
    assert f"{folder}:{mount_point}:rw" in calls[1] and folder.is_dir()
    assert mount_point == f"/lambda/nfs/{hosts.sandbox_name()}"

    calls.clear()
    existing["NetworkSettings"] = {"Networks": {hosts.sandbox_name(): {"IPAddress": "10.89.0.11"}}}
    hosts._start_host("glm-sandbox-1", "localhost/glm-sandbox:abc", "10.89.0.11")
    assert calls == []

    # A host started before the sandbox shared a filesystem is replaced too.
    existing["Mounts"] = []
    hosts._start_host("glm-sandbox-1", "localhost/glm-sandbox:abc", "10.89.0.11")
    assert calls[0][:3] == ["podman", "rm", "--force"] and f"{folder}:{mount_point}:rw" in calls[1]
