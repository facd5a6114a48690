"""playbooks/lambda_launch.yml and lambda_down.yml run by the real ansible-playbook against the Lambda Cloud
stand-in (serving from this test's process), with the dynamic inventory glm.deploy.lambda_cloud: the stand-in's
instances answer at 127.0.0.1, where a socket of this test stands in for their SSH. No sandbox host is started, so
site.yml (which lambda_up.yml imports after lambda_launch.yml) is only syntax-checked here.

What a user checks: check mode launches nothing; `up` makes the key, filesystem, firewall ruleset and both nodes,
and the nodes are the hosts of glm_servers; a second run changes nothing; `down` leaves no instance and keeps the
filesystem; a capacity error names the regions with capacity and leaves nothing billing; the key is in no output.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.equipment.lambda_api import LambdaCloudStandIn
from tests.equipment.playbook import REPO, playbook_env, run_playbook

pytestmark = pytest.mark.playbook

PLAYBOOKS = REPO / "playbooks"
PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE7yZQxA0bU8lF0Kq2m5cA0p4z1p6D1vQx3v9eEwqQ1P glm@controller"


class Account:
    def __init__(self, api: LambdaCloudStandIn, key: str, folder: Path, ssh_port: int) -> None:
        self.api, self.key, self.folder, self.ssh_port = api, key, folder, ssh_port
        self.inventory = folder / "inventory"
        self.inventory.mkdir()
        (self.inventory / "test.lambda_cloud.yml").write_text(
            yaml.safe_dump({"plugin": "glm.deploy.lambda_cloud", "name_prefix": "glm-"})
        )
        self.outputs: list[str] = []

    def run(self, playbook: str, *args: str, **variables: Any) -> subprocess.CompletedProcess[str]:
        settings = {
            "lambda_region": "us-east-1",
            "lambda_instance_type": "gpu_8x_b200_sxm6",
            "lambda_allow_cidrs": ["203.0.113.7/32"],
            "lambda_nodes": 2,
            "lambda_filesystem": "glm-weights",
            "lambda_ssh_public_key": PUBLIC_KEY,
            "lambda_ssh_port": self.ssh_port,
            "lambda_poll_interval": 0.05,
            "lambda_launch_interval": 0.3,
            **variables,
        }
        completed = run_playbook(
            PLAYBOOKS / playbook,
            home=self.folder,
            variables=settings,
            inventory=self.inventory,
            env={"LAMBDA_API_KEY": self.key, "LAMBDA_API_URL": self.api.url},
            drop_env=("LAMBDA_",),
            args=args,
            cwd=REPO,
        )
        self.outputs.append(completed.stdout + completed.stderr)
        return completed


def recap(output: str) -> dict[str, int]:
    found = re.search(r"localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", output)
    assert found, output[-3000:]
    return dict(zip(("ok", "changed", "unreachable", "failed"), map(int, found.groups()), strict=True))


@pytest.fixture
def account(api_key: str, tmp_path: Path) -> Iterator[Account]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        addresses = lambda number: ("127.0.0.1", f"10.19.0.{number}")  # noqa: E731
        with LambdaCloudStandIn(api_key, addresses=addresses, launch_interval_s=0.25) as api:
            yield Account(api, api_key, tmp_path, listener.getsockname()[1])


def test_up_is_idempotent_check_mode_changes_nothing_and_down_keeps_the_filesystem(account: Account) -> None:
    checked = account.run("lambda_launch.yml", "--check")
    assert checked.returncode == 0, checked.stdout[-3000:]
    assert account.api.instances() == [] and account.api.resources.filesystems == {}
    first = account.run("lambda_launch.yml")
    assert first.returncode == 0, first.stdout[-3000:]
    assert recap(first.stdout)["changed"] == 4  # key, filesystem, ruleset, the instances (one looped task)
    instances = account.api.instances()
    assert sorted((instance.name, instance.status) for instance in instances) == [
        ("glm-1", "active"),
        ("glm-2", "active"),
    ]
    assert all(instance.file_system_names == ["glm-weights"] for instance in instances)
    second = account.run("lambda_launch.yml")
    assert second.returncode == 0 and recap(second.stdout)["changed"] == 0, second.stdout[-3000:]
    down = account.run("lambda_down.yml")
    assert down.returncode == 0, down.stdout[-3000:]
    assert {instance.status for instance in account.api.instances()} == {"terminated"}
    assert [filesystem.name for filesystem in account.api.resources.filesystems.values()] == ["glm-weights"]
    again = account.run("lambda_down.yml")
    assert again.returncode == 0 and recap(again.stdout)["changed"] == 0
    assert all(account.key not in output for output in account.outputs)


def test_a_capacity_error_names_the_regions_and_nothing_is_left(account: Account) -> None:
    failed = account.run("lambda_launch.yml", lambda_region="us-west-1", lambda_nodes=1)
    assert failed.returncode != 0
    assert "regions with capacity for it: us-east-1, us-south-1" in failed.stdout
    assert account.api.instances() == []
    requests = len(account.api.requests)
    world = account.run("lambda_launch.yml", lambda_allow_cidrs=["0.0.0.0/0"])
    assert world.returncode != 0 and "set lambda_allow_world: true to mean it" in world.stdout
    # refused before any request of its own (the inventory plugin's listing is the only one)
    assert [(record.method, record.path) for record in account.api.requests[requests:]] == [
        ("GET", "/api/v1/instances")
    ]
    assert all(account.key not in output for output in account.outputs)


def test_lambda_up_and_down_pass_ansible_syntax_check(tmp_path: Path) -> None:
    for playbook in ("lambda_up.yml", "lambda_down.yml"):
        completed = subprocess.run(
            [str(Path(sys.executable).parent / "ansible-playbook"), "--syntax-check", str(PLAYBOOKS / playbook)],
            env=playbook_env(home=tmp_path),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert completed.returncode == 0, completed.stdout + completed.stderr
