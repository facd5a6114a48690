"""`glm-deploy up` / `down` and the cost guard of `up --max-hours` (glm_deploy.lambda_cloud).

Unit tests: the inputs `up` refuses before anything runs, the key's sources, the timer units (when they fire, what
they run, that no key is in them). One playbook-tier test runs the CLI against the Lambda Cloud stand-in:
`up --no-deploy` launches and installs the guard's units, a second `up` changes nothing, `down` terminates, and
the key is in no output and no file of the run's state folder.
"""

from __future__ import annotations

import datetime
import json
import re
import socket
from pathlib import Path

import pytest
import yaml
from tests.equipment.lambda_api import LambdaCloudStandIn

from glm_deploy import lambda_cloud, lambda_status
from glm_deploy.cli import build_parser, main
from glm_deploy.errors import InputError

B200 = "gpu_8x_b200_sxm6"
PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE7yZQxA0bU8lF0Kq2m5cA0p4z1p6D1vQx3v9eEwqQ1P glm@controller"


def settings(tmp_path: Path, **changes: object) -> lambda_cloud.LambdaUp:
    public = tmp_path / "id.pub"
    public.write_text(PUBLIC_KEY + "\n")
    values: dict[str, object] = {
        "region": "us-east-1",
        "instance_type": B200,
        "allow_cidrs": ("203.0.113.7/32",),
        "ssh_public_key_file": public,
        **changes,
    }
    return lambda_cloud.LambdaUp(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"region": "Texas"}, "--region 'Texas' is not a Lambda region name"),
        ({"instance_type": "b200"}, "--instance-type 'b200' is not a Lambda instance type"),
        ({"nodes": 0}, "--nodes 0 must be at least 1"),
        ({"allow_cidrs": ()}, "--allow-cidr is required"),
        ({"allow_cidrs": ("0.0.0.0/0",)}, "opens SSH and the endpoint to the whole internet"),
        ({"allow_cidrs": ("10.0.0.1/8",)}, "is not an IPv4 network"),
        ({"filesystem": "my weights"}, "--filesystem 'my weights' is not a filesystem name"),
        ({"ssh_public_key_file": Path("/nonexistent.pub")}, "is not a file"),
    ],
)
def test_up_refuses_inputs_before_anything_runs(tmp_path: Path, changes: dict[str, object], expected: str) -> None:
    with pytest.raises(InputError) as refused:
        settings(tmp_path, **changes).check()
    assert expected in str(refused.value)


def test_up_passes_its_settings_to_the_playbook(tmp_path: Path) -> None:
    checked = settings(tmp_path, nodes=2, filesystem="glm-weights", allow_cidrs=("0.0.0.0/0",), allow_world=True)
    variables = checked.check().extravars()
    assert variables["lambda_nodes"] == 2 and variables["lambda_filesystem"] == "glm-weights"
    assert variables["lambda_allow_world"] is True and variables["lambda_allow_cidrs"] == ["0.0.0.0/0"]


def test_the_key_comes_from_the_file_first_then_the_environment(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("from-file\nsecond line\n")
    assert lambda_cloud.api_key(key_file, environ={"LAMBDA_API_KEY": "from-env"}) == "from-file"
    assert lambda_cloud.api_key(None, environ={"LAMBDA_API_KEY": "from-env"}) == "from-env"
    with pytest.raises(InputError, match="no usable Lambda Cloud API key in LAMBDA_API_KEY"):
        lambda_cloud.api_key(None, environ={})


def test_the_cost_guard_fires_once_after_the_hours_and_holds_no_key(tmp_path: Path) -> None:
    now = datetime.datetime(2026, 12, 3, 14, 0, tzinfo=datetime.UTC)
    environment_file = tmp_path / "lambda.env"
    fires, units = lambda_cloud.render_down_timer(
        name_prefix="glm-",
        hours=2.5,
        environment_file=environment_file,
        api_key_file=None,
        executable="/opt/venv/bin/glm-deploy",
        now=now,
    )
    assert fires == "2026-12-03T16:30:00+00:00"
    service, timer = units["glm-deploy-lambda-down-glm.service"], units["glm-deploy-lambda-down-glm.timer"]
    assert "OnCalendar=2026-12-03 16:30:00 UTC" in timer and "Persistent=true" in timer
    assert "ExecStart=/opt/venv/bin/glm-deploy down --name-prefix glm-" in service
    assert f"EnvironmentFile={environment_file}" in service and "LAMBDA_API_KEY=" not in service
    assert all(text.startswith("# Written by `glm-deploy schedule`") for text in units.values())
    with pytest.raises(InputError, match="needs where the timer's `glm-deploy down` finds the Lambda API key"):
        lambda_cloud.render_down_timer(
            name_prefix="glm-", hours=1, environment_file=None, api_key_file=None, executable="glm-deploy"
        )
    with pytest.raises(InputError, match="--max-hours 0 must be above 0"):
        lambda_cloud.render_down_timer(
            name_prefix="glm-", hours=0, environment_file=environment_file, api_key_file=None, executable="x"
        )


@pytest.mark.playbook
def test_up_then_up_again_then_down_through_the_cli(
    api_key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        inventory = tmp_path / "inventory"
        (inventory / "group_vars").mkdir(parents=True)
        (inventory / "test.lambda_cloud.yml").write_text(yaml.safe_dump({"plugin": "glm.deploy.lambda_cloud"}))
        # the implicit localhost reads group_vars/all: the stand-in's instances answer SSH on the listener
        (inventory / "group_vars" / "all.yml").write_text(
            yaml.safe_dump(
                {
                    "lambda_ssh_port": listener.getsockname()[1],
                    "lambda_poll_interval": 0.05,
                    "lambda_launch_interval": 0,
                }
            )
        )
        key_file = tmp_path / "lambda-key"
        key_file.write_text(api_key + "\n")
        key_file.chmod(0o600)
        (tmp_path / "id.pub").write_text(PUBLIC_KEY + "\n")
        state, units = tmp_path / "state", tmp_path / "units"
        common = ["--api-key-file", str(key_file), "--state-dir", str(state), "--json"]
        up = ["up", "--no-deploy", "--region", "us-east-1", "--instance-type", B200, "--allow-cidr", "203.0.113.7"]
        up += ["--ssh-public-key", str(tmp_path / "id.pub"), "-i", str(inventory), *common]
        addresses = lambda number: ("127.0.0.1", f"10.19.0.{number}")  # noqa: E731
        with LambdaCloudStandIn(api_key, addresses=addresses) as api:
            monkeypatch.setenv("LAMBDA_API_URL", api.url)
            monkeypatch.delenv("LAMBDA_API_KEY", raising=False)
            assert main([*up, "--max-hours", "3", "--unit-dir", str(units)]) == 0
            first = json.loads(capsys.readouterr().out)
            # `status` takes the uptime from here: the launch up made, from the runner's events
            launched = lambda_status.read_launches(state)
            assert main(up) == 0
            second = json.loads(capsys.readouterr().out)
            assert lambda_status.read_launches(state) == launched  # a second up launches nothing
            assert main(["down", *common]) == 0
            down = json.loads(capsys.readouterr().out)
            assert lambda_status.read_launches(state) == {}  # down forgets what it terminated
            statuses = {instance.name: instance.status for instance in api.instances()}
    assert [(instance["name"], instance["ip"]) for instance in first["instances"]] == [("glm-1", "127.0.0.1")]
    assert [(record["name"], bool(record["launched_at"])) for record in launched.values()] == [("glm-1", True)]
    assert first["changed"] > 0 and second["changed"] == 0
    assert first["cost_guard"]["timer"] == "glm-deploy-lambda-down-glm.timer"
    service = (units / "glm-deploy-lambda-down-glm.service").read_text()
    assert f"--api-key-file {key_file}" in service
    assert down["terminated_ids"] and statuses == {"glm-1": "terminated"}
    kept = [path for path in state.rglob("*") if path.is_file()]
    assert kept and not [path for path in kept if api_key in path.read_text(errors="replace")]
    assert api_key not in json.dumps([first, second, down]) + service


def test_the_readme_up_command_is_one_the_cli_accepts() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    found = re.search(r"`GLM_API_KEY=\.\.\. HF_TOKEN=\.\.\. \.venv/bin/glm-deploy (up [^`]+)`", readme)
    assert found, "the README's Lambda section shows `glm-deploy up`"
    parsed = build_parser().parse_args(found[1].split())
    assert parsed.handler.__name__ == "run_up" and parsed.max_hours == 8 and parsed.allow_cidr == ["203.0.113.7/32"]
