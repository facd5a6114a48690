"""`glm-deploy sandbox up/status/down` for real: a systemd host in podman, reached over SSH and by Ansible.

These tests run a sandbox of their own (name `glm-sbx-test`, state under `.cache/sandbox-glm-sbx-test`), so
they never touch a sandbox the user has running; they share its image.
They need root and podman, like `glm-deploy sandbox up` itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sandbox_helpers import REPO_ROOT, free_port, glm_deploy

pytestmark = pytest.mark.sandbox

NAME = "glm-sbx-test"
HOST = f"{NAME}-1"
# Only the name: the state folder follows it (.cache/sandbox-glm-sbx-test) and the SSH key, hence the image,
# is shared with the default sandbox, so the suite builds no image of its own when one exists.
ENV = {"GLM_DEPLOY_SANDBOX_NAME": NAME}
STATE_FILE = REPO_ROOT / ".cache" / f"sandbox-{NAME}" / "state.json"
BIN = Path(sys.executable).parent


def _podman(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=False)


def _container_id() -> str:
    return _podman("container", "inspect", HOST, "--format", "{{.Id}}").stdout.strip()


def _up(hub_port: int) -> dict[str, Any]:
    completed = glm_deploy(
        "sandbox", "up", "--hosts", "1", "--no-wheelhouse", "--hub-port", str(hub_port), "--json", env=ENV
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report: dict[str, Any] = json.loads(completed.stdout)
    return report


def _ssh(report: dict[str, Any], command: str) -> subprocess.CompletedProcess[str]:
    host = report["hosts"][0]
    return subprocess.run(
        [
            "ssh",
            "-i",
            report["ssh_key"],
            "-p",
            str(host["port"]),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            f"{report['ssh_user']}@{host['ip']}",
            command,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _ansible(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        cwd=REPO_ROOT,
        env={**os.environ, **ENV},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def sandbox() -> Iterator[dict[str, Any]]:
    if os.geteuid() != 0:
        pytest.fail("the sandbox tests need root (rootful podman), as `glm-deploy sandbox up` does")
    hub_port = free_port()
    report = _up(hub_port)
    report["hub_port"] = hub_port
    try:
        yield report
    finally:
        # Whatever a test did, leave no host, network or hub behind.
        glm_deploy("sandbox", "down", env=ENV)


def test_up_starts_a_booted_host_and_the_hub(sandbox: dict[str, Any]) -> None:
    [host] = sandbox["hosts"]
    assert host["name"] == HOST
    assert host["container"] == "running"
    assert host["systemd"] in {"running", "degraded"}
    assert host["in_inventory"] is True
    assert sandbox["hub"]["answering"] is True
    assert sandbox["hub"]["repo_id"] == "glm-deploy/glm-tiny"
    assert set(sandbox["hub"]["revisions"]) == {"1", "2", "3"}


def test_ssh_as_ubuntu_with_the_sandbox_key_and_passwordless_sudo(sandbox: dict[str, Any]) -> None:
    key = Path(sandbox["ssh_key"])
    assert key.stat().st_mode & 0o777 == 0o600
    completed = _ssh(sandbox, "id -un; sudo -n id -u; systemctl is-system-running; python3 --version")
    assert completed.returncode == 0, completed.stderr
    user, root_uid, systemd, python = completed.stdout.split("\n")[:4]
    assert (user, root_uid) == ("ubuntu", "0")
    assert systemd in {"running", "degraded"}
    # The engine wheelhouse's torch is a cp311 build: the hosts must run Python 3.11.
    assert python.startswith("Python 3.11.")


def test_ansible_reaches_the_host_through_the_sandbox_inventory(sandbox: dict[str, Any]) -> None:
    ping = _ansible("ansible", "-i", "sandbox", "glm_servers", "-m", "ansible.builtin.ping", "-o")
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert f"{HOST} | SUCCESS" in ping.stdout and '"ping": "pong"' in ping.stdout
    become = _ansible("ansible", "-i", "sandbox", "glm_servers", "-m", "ansible.builtin.command", "-a", "id -u", "-o")
    assert become.returncode == 0, become.stdout + become.stderr
    assert "(stdout) 0" in become.stdout


def test_inventory_carries_the_sandbox_settings_and_hub_endpoint(sandbox: dict[str, Any]) -> None:
    completed = _ansible("ansible-inventory", "-i", "sandbox", "--host", HOST)
    assert completed.returncode == 0, completed.stderr
    hostvars = json.loads(completed.stdout)
    assert (hostvars["glm_model"], hostvars["glm_engine"], hostvars["glm_hardware"]) == (
        "glm-tiny",
        "vllm-cpu",
        "cpu",
    )
    assert hostvars["glm_hf_endpoint"] == sandbox["hub"]["url"]
    assert hostvars["ansible_host"] == sandbox["hosts"][0]["ip"]


def test_the_host_downloads_from_the_hub_over_the_sandbox_network(sandbox: dict[str, Any]) -> None:
    url = f"{sandbox['hub']['url']}/api/models/glm-deploy/glm-tiny/revision/main"
    completed = _ssh(sandbox, f"curl -sf {url}")
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["sha"] == sandbox["hub"]["revisions"]["1"]


def test_the_state_stays_out_of_git(sandbox: dict[str, Any]) -> None:
    assert STATE_FILE.is_file()
    ignored = subprocess.run(["git", "check-ignore", "-q", str(STATE_FILE)], cwd=REPO_ROOT, check=False)
    assert ignored.returncode == 0, f"{STATE_FILE} is not ignored by git"


def test_status_reports_healthy(sandbox: dict[str, Any]) -> None:
    completed = glm_deploy("sandbox", "status", "--json", env=ENV)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    report = json.loads(completed.stdout)
    assert [host["name"] for host in report["hosts"]] == [HOST]
    assert report["hub"]["url"] == sandbox["hub"]["url"]
    text = glm_deploy("sandbox", "status", env=ENV)
    assert HOST in text.stdout and sandbox["hub"]["url"] in text.stdout


def test_up_again_keeps_a_healthy_host(sandbox: dict[str, Any]) -> None:
    before = _container_id()
    report = _up(sandbox["hub_port"])
    assert _container_id() == before
    assert report["hosts"][0]["ip"] == sandbox["hosts"][0]["ip"]


def test_up_replaces_a_stale_container(sandbox: dict[str, Any]) -> None:
    before = _container_id()
    assert _podman("stop", "--time", "5", HOST).returncode == 0
    report = _up(sandbox["hub_port"])
    assert _container_id() != before
    assert report["hosts"][0]["container"] == "running"
    assert _ssh(report, "true").returncode == 0


def test_down_removes_hosts_network_and_hub(sandbox: dict[str, Any]) -> None:
    hub_pid = sandbox["hub"]["pid"]
    completed = glm_deploy("sandbox", "down", env=ENV)
    assert completed.returncode == 0, completed.stderr
    assert HOST in completed.stdout
    listed = _podman("ps", "--all", "--filter", f"label=io.glm-deploy.sandbox={NAME}", "--format", "{{.Names}}")
    assert listed.stdout.strip() == ""
    assert _podman("network", "exists", NAME).returncode != 0
    assert not Path(f"/proc/{hub_pid}/cmdline").exists() or not Path(f"/proc/{hub_pid}/cmdline").read_bytes()
    assert not STATE_FILE.exists()
    status = glm_deploy("sandbox", "status", env=ENV)
    assert status.returncode == 1 and "no sandbox hosts" in status.stdout
    inventory = _ansible("ansible-inventory", "-i", "sandbox", "--list")
    assert inventory.returncode == 0, inventory.stderr
    # ansible-inventory leaves out a group without hosts.
    assert json.loads(inventory.stdout).get("glm_servers", {}).get("hosts", []) == []
    assert HOST not in inventory.stdout
