"""`glm-deploy up` against the Lambda Cloud stand-in, whose launch hands out a real host: the fleet's first sandbox
host, as the instance's public and private address. From a Lambda API key through the key, firewall and launch
(playbooks/lambda_launch.yml), the dynamic inventory (glm.deploy.lambda_cloud) and site.yml to a verified endpoint
that answers the fleet's API key; then a second `up` launches nothing and `down` leaves no instance.

The stand-in's instance type is the small dev box the catalog does not map (gpu_1x_a10); the inventory
configuration names its hardware (`hardware_by_instance_type: {gpu_1x_a10: cpu}`), as a user does for a type the
catalog has not recorded yet. The host is the fleet's, already deployed with the same plan, so site.yml converges
it: the unit is not restarted and the tests after this one find it as they left it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from tests.equipment.fleet import Deployment, host_url, in_host
from tests.equipment.lambda_api import LambdaCloudStandIn
from tests.equipment.playbook import REPO

from glm_deploy.sandbox.hosts import shared_filesystem
from glm_deploy.sandbox.hub import HubServer, HubStore
from glm_deploy.sandbox.hub_service import hub_root
from glm_deploy.sandbox.state import load_state

pytestmark = pytest.mark.sandbox

A10 = "gpu_1x_a10"


def _sandbox_group_vars(deployment: Deployment) -> dict[str, Any]:
    """What the sandbox inventory gives the fleet's hosts (static group_vars and the state file's), minus hosts."""
    listed = subprocess.run(
        [sys.executable, str(REPO / "inventories" / "sandbox" / "sandbox_inventory.py"), "--list"],
        capture_output=True,
        text=True,
        check=True,
    )
    inventory = json.loads(listed.stdout)
    static = yaml.safe_load((REPO / "inventories" / "sandbox" / "group_vars" / "glm_servers.yml").read_text())
    host = inventory["_meta"]["hostvars"][deployment.container]
    return {
        **static,
        **inventory["glm_servers"]["vars"],
        "ansible_ssh_private_key_file": host["ansible_ssh_private_key_file"],
    }


def _succeeds(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=1500, check=False)
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-6000:]
    return completed


def _cli(*args: str | Path, env: dict[str, str]) -> tuple[dict[str, Any], str, float]:
    started = time.monotonic()
    completed = _succeeds([sys.executable, "-m", "glm_deploy.cli", *map(str, args)], env)
    return json.loads(completed.stdout), completed.stderr, time.monotonic() - started


def _unit_started(deployment: Deployment) -> str:
    shown = in_host(deployment.container, f"systemctl show --property=ActiveEnterTimestampMonotonic {deployment.unit}")
    return shown.stdout.strip()


@dataclass
class LambdaSetup:
    """A Lambda inventory configuration over the sandbox's group_vars, an API key file and the CLI's arguments."""

    lambda_key: str
    inventory: Path
    common: list[str | Path]
    up: list[str | Path]


def _lambda_setup(deployment: Deployment, tmp_path: Path, allow: str, **group_vars: Any) -> LambdaSetup:
    lambda_key = f"secret_{uuid.uuid4().hex}{uuid.uuid4().hex}"
    inventory = tmp_path / "inventory"
    (inventory / "group_vars").mkdir(parents=True)
    (inventory / "test.lambda_cloud.yml").write_text(
        yaml.safe_dump(
            {"plugin": "glm.deploy.lambda_cloud", "name_prefix": "glm-", "hardware_by_instance_type": {A10: "cpu"}}
        )
    )
    sandbox_vars = {**_sandbox_group_vars(deployment), **group_vars}
    (inventory / "group_vars" / "glm_servers.yml").write_text(yaml.safe_dump(sandbox_vars))
    (inventory / "group_vars" / "all.yml").write_text(
        yaml.safe_dump({"lambda_poll_interval": 0.5, "lambda_launch_interval": 0})
    )
    key_file = tmp_path / "lambda-key"
    key_file.write_text(lambda_key + "\n")
    key_file.chmod(0o600)
    public_key = Path(f"{sandbox_vars['ansible_ssh_private_key_file']}.pub")
    common: list[str | Path] = ["--api-key-file", key_file, "--state-dir", tmp_path / "state", "--json"]
    up: list[str | Path] = ["up", "--region", "us-west-1", "--instance-type", A10, "--allow-cidr", allow]
    up += ["--ssh-public-key", public_key, "-i", inventory, *common]
    return LambdaSetup(lambda_key, inventory, common, up)


def test_up_launches_through_the_stand_in_and_serves_through_the_dynamic_inventory(
    deployment: Deployment, tmp_path: Path
) -> None:
    address = urlparse(deployment.base_url).hostname
    assert address
    setup = _lambda_setup(deployment, tmp_path, f"{address}/32")
    lambda_key, inventory, common, up = setup.lambda_key, setup.inventory, setup.common, setup.up
    state = tmp_path / "state"
    unit_before = _unit_started(deployment)

    with LambdaCloudStandIn(lambda_key, addresses=lambda number: (address, address)) as api:
        environment = {**os.environ, "LAMBDA_API_URL": api.url, "GLM_API_KEY": deployment.api_key}
        environment.pop("LAMBDA_API_KEY", None)
        first, first_log, first_s = _cli(*up, env=environment)
        again, _, again_s = _cli(*up[:-len(common) - 2], "--no-deploy", "-i", inventory, *common, env=environment)
        down, _, _ = _cli("down", *common, env=environment)
        statuses = [(instance.name, instance.status) for instance in api.instances()]

    print(f"\nglm-deploy up against the stand-in, onto a converged sandbox host: {first_s:.0f} s; "
          f"a second up (launch only): {again_s:.1f} s")
    assert [(instance["name"], instance["ip"], instance["status"]) for instance in first["instances"]] == [
        ("glm-1", address, "active")
    ]
    assert first["playbook"] == "lambda_up.yml" and first["endpoint"] == f"http://{address}:8000/v1"
    # site.yml ran on the instance through the dynamic inventory: the play's tasks are in the progress it printed.
    assert "Ask the plan's question set and score the answers" in first_log, first_log[-3000:]
    # The endpoint `up` printed serves the fleet's key, and the converge did not restart the unit.
    request = urllib.request.Request(
        f"{first['endpoint']}/models", headers={"Authorization": f"Bearer {deployment.api_key}"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200
        assert json.load(answer)["data"]
    assert _unit_started(deployment) == unit_before

    assert again["changed"] == 0 and [instance["name"] for instance in again["instances"]] == ["glm-1"]
    assert down["terminated_ids"] and statuses == [("glm-1", "terminated")]
    written = [path for path in state.rglob("*") if path.is_file()]
    assert written and not [path for path in written if lambda_key in path.read_text(errors="replace")]
    assert lambda_key not in json.dumps([first, again, down]) + first_log


def _weights_through_the_inventory(inventory: Path, env: dict[str, str]) -> str:
    """site.yml's plan and weights plays (`--tags weights`) on whatever the dynamic inventory lists now."""
    playbook = str(Path(sys.executable).parent / "ansible-playbook")
    completed = _succeeds([playbook, "site.yml", "-i", str(inventory), "--tags", "weights"], env)
    return completed.stdout


def test_a_relaunch_onto_another_host_with_the_same_filesystem_fetches_no_weights(
    deployment: Deployment, tmp_path: Path
) -> None:
    """Issue 12 item 4 end to end: `up --filesystem` launches an instance that mounts the filesystem, the weights go
    onto it (counted on a Hub of this test's own, serving the sandbox's store), `down` terminates the instance and
    keeps the filesystem, and a relaunch, which the stand-in hands out as the fleet's other host, finds the weights
    there and fetches 0 bytes. Only the plan and weights plays run (`--tags weights`): the fleet's engines are left
    as they are."""
    first_host, second_host = (urlparse(host_url(name, deployment.port)).hostname for name in deployment.hosts[:2])
    assert first_host and second_host and first_host != second_host
    folder, mount_point = shared_filesystem()
    filesystem = mount_point.rsplit("/", 1)[1]
    shutil.rmtree(folder / "glm-deploy", ignore_errors=True)  # what an earlier run of this test left there
    sandbox = load_state()
    assert sandbox is not None and sandbox.hub is not None
    pool = iter([(first_host, first_host), (second_host, second_host)])

    with HubServer(HubStore(hub_root()), host=sandbox.hub.host, port=0) as hub:
        setup = _lambda_setup(deployment, tmp_path, f"{first_host}/32", glm_hf_endpoint=hub.url)
        launch = [*setup.up, "--filesystem", filesystem, "--no-deploy"]
        with LambdaCloudStandIn(setup.lambda_key, addresses=lambda number: next(pool)) as api:
            environment = {**os.environ, "LAMBDA_API_URL": api.url, "GLM_API_KEY": deployment.api_key}
            environment["LAMBDA_API_KEY"] = setup.lambda_key  # the dynamic inventory's key, as a user sets it
            first, _, _ = _cli(*launch, env=environment)
            first_log = _weights_through_the_inventory(setup.inventory, environment)
            fetched_first = hub.stats.file_bytes_sent
            _cli("down", *setup.common, env=environment)
            second, _, _ = _cli(*launch, env=environment)
            second_log = _weights_through_the_inventory(setup.inventory, environment)
            fetched_again = hub.stats.file_bytes_sent - fetched_first
            file_gets = hub.stats.requests.get("file-get", 0)
            down, _, _ = _cli("down", *setup.common, env=environment)
            filesystems = [item.name for item in api.resources.filesystems.values()]

    print(f"\nweights onto the filesystem from the first instance: {fetched_first} bytes from the Hub; "
          f"after a relaunch onto another host: {fetched_again} bytes")
    assert [instance["ip"] for instance in first["instances"]] == [first_host]
    assert [instance["ip"] for instance in second["instances"]] == [second_host]
    snapshots = list((folder / "glm-deploy" / "hf" / "hub").glob("models--*/snapshots/*/config.json"))
    assert snapshots, f"no snapshot on the filesystem under {folder}:\n{first_log[-3000:]}"
    assert fetched_first > 0
    assert fetched_again == 0 and "Start the weights download" in second_log
    assert file_gets > 0 and hub.stats.file_bytes_sent == fetched_first
    # down terminates the instance and keeps the filesystem (and the weights on it).
    assert down["terminated_ids"] and filesystems == [filesystem]
