"""`glm-deploy status` with Lambda Cloud: each instance's type, region, uptime and hourly price.

Against the Lambda stand-in serving from this process (GET /instances, GET /instance-types through the
collection's own client) and runner events shaped like the ones `glm-deploy up` sees. What a user checks: the
deployment's instances with the price of their type from GET /instance-types, the uptime from when `up` launched
them (the API gives no launch time), what they cost per hour together, a clear line instead of a failed status when
the API cannot be asked, and the key in no output.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path
from typing import Any

import pytest
from tests.equipment.lambda_api import LambdaCloudStandIn

from glm_deploy import lambda_status
from glm_deploy.commands import deployment as deployment_commands
from glm_deploy.status import DeploymentStatus

B200, H100 = "gpu_8x_b200_sxm6", "gpu_8x_h100_sxm5"
NOW = datetime.datetime(2026, 12, 3, 12, 0, tzinfo=datetime.UTC)


def lambda_inventory(folder: Path, name_prefix: str = "glm-") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "glm.lambda_cloud.yml").write_text(f"plugin: glm.deploy.lambda_cloud\nname_prefix: {name_prefix}\n")
    return folder


def launch_event(instance_id: str, name: str, *, launched: bool, created: str, boot: float = 0, ssh: float = 0) -> Any:
    """An ansible-runner event of one lambda_instance loop item, as `up` receives it."""
    return {
        "event": "runner_item_on_ok",
        "created": created,
        "event_data": {
            "res": {
                "changed": launched,
                "launched": launched,
                "boot_wait_s": boot,
                "ssh_wait_s": ssh,
                "instance": {"id": instance_id, "name": name, "status": "active"},
            }
        },
    }


def test_up_records_when_it_launched_each_instance_and_down_forgets_them(tmp_path: Path) -> None:
    events = [
        {"event": "playbook_on_task_start", "event_data": {"task": "Ensure the instances run"}},
        launch_event("id-1", "glm-1", launched=True, created="2026-12-03T10:05:00", boot=240, ssh=60),
        launch_event("id-2", "glm-2", launched=False, created="2026-12-03T10:05:30"),
    ]
    launches = lambda_status.record_launches(tmp_path, events)
    # The launch was the result's time less the boot and SSH waits; an instance found running is only "seen".
    assert launches["id-1"]["launched_at"] == "2026-12-03T10:00:00+00:00"
    assert launches["id-2"] == {"name": "glm-2", "launched_at": None, "seen_at": "2026-12-03T10:05:30+00:00"}
    # A second `up` that finds them running changes neither.
    again = launch_event("id-1", "glm-1", launched=False, created="2026-12-03T11:00:00")
    lambda_status.record_launches(tmp_path, [again])
    assert lambda_status.read_launches(tmp_path)["id-1"]["launched_at"] == "2026-12-03T10:00:00+00:00"
    lambda_status.forget_launches(tmp_path, ["id-1", "not-recorded"])
    assert set(lambda_status.read_launches(tmp_path)) == {"id-2"}


def test_status_lists_type_region_uptime_and_the_price_from_instance_types(
    lambda_api: Any, stand_in: LambdaCloudStandIn, api_key: str, tmp_path: Path
) -> None:
    first = stand_in.add_instance("glm-1", B200, "us-east-1")
    second = stand_in.add_instance("glm-2", H100, "us-west-1")
    stand_in.add_instance("dev-box", B200, "us-east-1")
    stand_in.add_instance("glm-old", H100, "us-east-1", status="terminated")
    state = tmp_path / "state"
    lambda_status.record_launches(
        state, [launch_event(first, "glm-1", launched=True, created="2026-12-03T09:30:00", boot=1800)]
    )
    client = lambda_api.LambdaCloudClient(api_key, api_url=stand_in.url)

    cloud = lambda_status.status_for(lambda_inventory(tmp_path / "inventory"), state, client=client, now=NOW)

    assert cloud is not None and cloud.error is None
    rows = {instance.name: instance for instance in cloud.instances}
    assert set(rows) == {"glm-1", "glm-2"}  # not another prefix's, not a terminated one
    assert (rows["glm-1"].instance_type, rows["glm-1"].region, rows["glm-1"].price_cents_per_hour) == (
        B200,
        "us-east-1",
        3992,
    )
    assert rows["glm-1"].uptime_s == 3 * 3600  # launched 09:00 (result at 09:30 after a 30 min boot)
    assert rows["glm-2"].id == second and rows["glm-2"].price_cents_per_hour == 2392
    assert rows["glm-2"].uptime_s is None  # not launched by this controller: no launch time to go by
    assert cloud.hourly_cents == 3992 + 2392
    assert [request.path for request in stand_in.requests][-2:] == ["/api/v1/instances", "/api/v1/instance-types"]
    text = "\n".join(lambda_status.describe(cloud))
    assert f"glm-1 ({first}): active, {B200} in us-east-1, up 3h00m (launched 2026-12-03T09:00:00+00:00)" in text
    assert "$39.92/h" in text and "$23.92/h" in text
    assert "glm-2" in text and "uptime unknown (not launched by this controller's glm-deploy up)" in text
    assert "billing now: $63.84/h for 2 instance(s)" in text


def test_no_lambda_inventory_and_no_record_means_no_section(tmp_path: Path) -> None:
    static = tmp_path / "hosts.yml"
    static.write_text("all: {}\n")
    assert lambda_status.status_for(static, tmp_path / "state", environ={}) is None


def test_a_wrong_key_is_one_line_in_the_section_and_the_key_is_in_no_output(
    stand_in: LambdaCloudStandIn, tmp_path: Path
) -> None:
    wrong = "secret_wrong_" + "0" * 40
    environ = {"LAMBDA_API_KEY": wrong, "LAMBDA_API_URL": stand_in.url}
    cloud = lambda_status.status_for(lambda_inventory(tmp_path / "inventory"), tmp_path / "state", environ=environ)
    assert cloud is not None and cloud.instances == []
    assert cloud.error is not None and "LAMBDA_API_KEY" in cloud.error
    output = "\n".join(lambda_status.describe(cloud)) + json.dumps(cloud.to_dict())
    assert "cannot list them:" in output and wrong not in output


def test_glm_deploy_status_shows_the_lambda_section(
    stand_in: LambdaCloudStandIn, api_key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """The command itself, with the deployment's own status (the history; read elsewhere) stubbed."""
    stand_in.add_instance("glm-1", B200, "us-east-1")
    inventory = lambda_inventory(tmp_path / "inventory")

    class Stub:
        def __init__(self) -> None:
            self.inventory, self.state_dir = inventory, tmp_path / "state"

        def status(self) -> DeploymentStatus:
            return DeploymentStatus(
                inventory=str(inventory), state_dir=str(self.state_dir), current_release=None, current_since=None,
                last_run=None,
            )

    monkeypatch.setattr(deployment_commands, "_deployment", lambda args: Stub())
    monkeypatch.setenv("LAMBDA_API_KEY", api_key)
    monkeypatch.setenv("LAMBDA_API_URL", stand_in.url)
    monkeypatch.delenv("LAMBDA_API_KEY_FILE", raising=False)

    assert deployment_commands.show_status(argparse.Namespace(json=False)) == 0
    text = capsys.readouterr().out
    assert "Lambda Cloud instances (hourly prices from GET /api/v1/instance-types):" in text
    assert f"{B200} in us-east-1" in text and "$39.92/h" in text

    assert deployment_commands.show_status(argparse.Namespace(json=True)) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["lambda"]["hourly_cents"] == 3992
    assert document["lambda"]["instances"][0]["instance_type"] == B200
    assert api_key not in json.dumps(document) and api_key not in text
