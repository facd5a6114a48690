"""The Lambda Cloud lifecycle modules (lambda_ssh_key, lambda_filesystem, lambda_firewall_ruleset, lambda_instance)
run in this process against the stand-in serving from a thread: each module's own `main()` with its arguments as
Ansible hands them over, its JSON answer read from stdout. Waits that would take minutes (a boot that never ends,
an instance turning unhealthy) drive the module's logic with a clock and a sleep of the test's own.

What a user checks: a second run changes nothing; check mode changes nothing; a capacity error names the regions
that have capacity; a 429 is waited out and a launch is not repeated; launches are spaced; quota is reported; a
launch that does not come up is terminated, so nothing bills; bad inputs fail before any request; the key is in no
output.
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.equipment.lambda_api import LambdaCloudStandIn

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "collections") not in sys.path:
    sys.path.insert(0, str(REPO / "collections"))

from ansible.module_utils.testing import patch_module_args  # noqa: E402
from ansible_collections.glm.deploy.plugins.module_utils import lambda_cloud_launch as launch_utils  # noqa: E402
from ansible_collections.glm.deploy.plugins.module_utils.lambda_cloud_api import LambdaCloudClient  # noqa: E402
from ansible_collections.glm.deploy.plugins.modules import (  # noqa: E402
    lambda_filesystem,
    lambda_firewall_ruleset,
    lambda_instance,
    lambda_ssh_key,
)

B200, H100 = "gpu_8x_b200_sxm6", "gpu_8x_h100_sxm5"
PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE7yZQxA0bU8lF0Kq2m5cA0p4z1p6D1vQx3v9eEwqQ1P glm@controller"
MODULES = {
    "ssh_key": lambda_ssh_key,
    "filesystem": lambda_filesystem,
    "firewall_ruleset": lambda_firewall_ruleset,
    "instance": lambda_instance,
}


@pytest.fixture
def ssh_port() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts connections, standing in for the instances' SSH."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


@pytest.fixture
def api(api_key: str) -> Iterator[LambdaCloudStandIn]:
    """The stand-in with instances reachable at 127.0.0.1 (their SSH is `ssh_port`)."""
    with LambdaCloudStandIn(api_key, addresses=lambda number: ("127.0.0.1", f"10.19.0.{number}")) as stand_in:
        yield stand_in


@pytest.fixture(autouse=True)
def no_lambda_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("LAMBDA_API_KEY", "LAMBDA_API_KEY_FILE", "LAMBDA_API_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(launch_utils.tempfile, "gettempdir", lambda: str(tmp_path))


def run(
    module: str, api: LambdaCloudStandIn, key: str | None, check: bool = False, **arguments: Any
) -> tuple[dict[str, Any], str]:
    """(result, raw stdout) of the module's main() with `arguments`, the key in api_key unless None."""
    arguments = {"api_url": api.url, **arguments}
    if key is not None:
        arguments["api_key"] = key
    if check:
        arguments["_ansible_check_mode"] = True
    output = io.StringIO()
    with patch_module_args(arguments), contextlib.redirect_stdout(output), pytest.raises(SystemExit):
        MODULES[module].main()
    return json.loads(output.getvalue()), output.getvalue()


def instance_args(ssh_port: int, **changes: Any) -> dict[str, Any]:
    arguments = {
        "name": "glm-1",
        "region": "us-east-1",
        "instance_type": B200,
        "ssh_key_name": "glm-deploy",
        "tags": {"glm-deploy": "true"},
        "ssh_port": ssh_port,
        "poll_interval": 0.01,
        "launch_interval": 0,
        "boot_timeout": 30,
        "ssh_timeout": 10,
    }
    arguments.update(changes)
    return arguments


def changing_requests(api: LambdaCloudStandIn) -> list[tuple[str, str]]:
    return [(record.method, record.path) for record in api.requests if record.method != "GET"]


# ---------------------------------------------------------------------------------------------- resources


def test_ssh_key_is_added_once_checked_and_removed(api: LambdaCloudStandIn, api_key: str) -> None:
    checked, _ = run("ssh_key", api, api_key, check=True, name="glm-deploy", public_key=PUBLIC_KEY)
    assert checked["changed"] is True and changing_requests(api) == []
    added, _ = run("ssh_key", api, api_key, name="glm-deploy", public_key=PUBLIC_KEY)
    again, _ = run("ssh_key", api, api_key, name="glm-deploy", public_key=PUBLIC_KEY.replace("glm@controller", "x"))
    assert (added["changed"], again["changed"]) == (True, False)
    assert again["ssh_key"]["id"] == added["ssh_key"]["id"]
    other, _ = run("ssh_key", api, api_key, name="glm-deploy", public_key=PUBLIC_KEY.replace("AAAAIE7", "AAAAIE8"))
    assert other["failed"] and "exists with another public key" in other["msg"] and "state: absent" in other["msg"]
    private, _ = run("ssh_key", api, api_key, name="x", public_key="-----BEGIN OPENSSH PRIVATE KEY----- abc")
    assert private["failed"] and "never a private key" in private["msg"]
    removed, _ = run("ssh_key", api, api_key, name="glm-deploy", state="absent")
    gone, _ = run("ssh_key", api, api_key, name="glm-deploy", state="absent")
    assert (removed["changed"], gone["changed"], api.resources.ssh_keys) == (True, False, {})


def test_filesystem_is_listed_and_created_at_their_own_paths_and_kept_in_its_region(
    api: LambdaCloudStandIn, api_key: str
) -> None:
    created, _ = run("filesystem", api, api_key, name="glm-weights", region="us-east-1")
    again, _ = run("filesystem", api, api_key, name="glm-weights", region="us-east-1")
    assert (created["changed"], again["changed"]) == (True, False)
    assert created["filesystem"]["mount_point"] == "/lambda/nfs/glm-weights"
    assert ("POST", "/api/v1/filesystems") in changing_requests(api)
    assert {record.path for record in api.requests if record.method == "GET"} == {"/api/v1/file-systems"}
    moved, _ = run("filesystem", api, api_key, name="glm-weights", region="us-west-1")
    assert moved["failed"] and "is in us-east-1, not us-west-1" in moved["msg"]
    bad, _ = run("filesystem", api, api_key, name="9weights", region="us-east-1")
    assert bad["failed"] and "letters first" in bad["msg"]
    api.add_instance("glm-1", B200, "us-east-1", file_system_names=["glm-weights"])
    in_use, _ = run("filesystem", api, api_key, name="glm-weights", state="absent")
    assert in_use["failed"] and "terminate the instances that use it first" in in_use["msg"]
    assert len(api.resources.filesystems) == 1


@pytest.mark.parametrize(
    ("cidrs", "expected"),
    [
        (["0.0.0.0/0"], "opens the port to the whole internet"),
        (["203.0.113.7/24"], "did you mean 203.0.113.0/24"),
        (["2001:db8::/32"], "is not an IPv4 network"),
        ([], "allow_cidrs is empty"),
    ],
)
def test_firewall_ruleset_refuses_networks_before_any_request(
    api: LambdaCloudStandIn, api_key: str, cidrs: list[str], expected: str
) -> None:
    result, _ = run("firewall_ruleset", api, api_key, name="glm-endpoint", region="us-east-1", allow_cidrs=cidrs)
    assert result["failed"] and expected in result["msg"]
    assert "\n" not in result["msg"] and api.requests == []


def test_firewall_ruleset_opens_the_ports_to_the_networks_only_and_updates_in_place(
    api: LambdaCloudStandIn, api_key: str
) -> None:
    arguments = {"name": "glm-endpoint", "region": "us-east-1", "ports": [22, 8000], "allow_cidrs": ["203.0.113.7"]}
    checked, _ = run("firewall_ruleset", api, api_key, check=True, **arguments)
    assert checked["changed"] is True and changing_requests(api) == []
    created, _ = run("firewall_ruleset", api, api_key, **arguments)
    again, _ = run("firewall_ruleset", api, api_key, **arguments)
    assert (created["changed"], again["changed"]) == (True, False)
    rules = {(rule["port_range"][0], rule["source_network"]) for rule in created["firewall_ruleset"]["rules"]}
    assert rules == {(22, "203.0.113.7/32"), (8000, "203.0.113.7/32")}
    widened, _ = run("firewall_ruleset", api, api_key, **dict(arguments, allow_cidrs=["0.0.0.0/0"], allow_world=True))
    assert widened["changed"] is True and widened["firewall_ruleset"]["id"] == created["firewall_ruleset"]["id"]
    assert changing_requests(api)[-1] == ("PATCH", f"/api/v1/firewall-rulesets/{created['firewall_ruleset']['id']}")
    removed, _ = run("firewall_ruleset", api, api_key, name="glm-endpoint", state="absent")
    assert removed["changed"] is True and api.resources.rulesets == {}


# ---------------------------------------------------------------------------------------------- instances


def test_instance_launches_waits_for_active_and_ssh_and_a_second_run_changes_nothing(
    api: LambdaCloudStandIn, api_key: str, ssh_port: int
) -> None:
    run("firewall_ruleset", api, api_key, name="glm-endpoint", region="us-east-1", allow_cidrs=["203.0.113.7"])
    arguments = instance_args(ssh_port, filesystem="glm-weights", firewall_ruleset="glm-endpoint")
    checked, _ = run("instance", api, api_key, check=True, **arguments)
    assert checked["changed"] is True and api.instances() == []
    first, _ = run("instance", api, api_key, **arguments)
    assert (first["changed"], first["launched"], first["instance"]["status"]) == (True, True, "active")
    assert first["instance"]["ip"] == "127.0.0.1" and "jupyter_token" not in first["instance"]
    (made,) = api.instances()
    assert made.file_system_names == ["glm-weights"] and made.tags == {"glm-deploy": "true"}
    assert made.firewall_ruleset_ids == list(api.resources.rulesets)
    launches = len(changing_requests(api))
    second, _ = run("instance", api, api_key, **arguments)
    checked_again, _ = run("instance", api, api_key, check=True, **arguments)
    assert (second["changed"], second["launched"], checked_again["changed"]) == (False, False, False)
    assert len(changing_requests(api)) == launches
    moved, _ = run("instance", api, api_key, **dict(arguments, region="us-south-1"))
    assert moved["failed"] and "cannot change type or region" in moved["msg"]


def test_instance_absent_terminates_and_waits_and_check_mode_only_tells(
    api: LambdaCloudStandIn, api_key: str, ssh_port: int
) -> None:
    instance_id = api.add_instance("glm-1", B200, "us-east-1")
    checked, _ = run("instance", api, api_key, check=True, name="glm-1", state="absent")
    assert checked["changed"] is True and api.instance(instance_id).status == "active"
    removed, _ = run("instance", api, api_key, name="glm-1", state="absent", poll_interval=0.01)
    assert removed["terminated_ids"] == [instance_id] and api.instance(instance_id).status == "terminated"
    again, _ = run("instance", api, api_key, name="glm-1", state="absent")
    assert again["changed"] is False


def test_capacity_error_names_the_regions_with_capacity(api: LambdaCloudStandIn, api_key: str, ssh_port: int) -> None:
    result, _ = run("instance", api, api_key, **instance_args(ssh_port, region="us-west-1"))
    assert result["failed"]
    assert "no capacity for gpu_8x_b200_sxm6 in us-west-1 now" in result["msg"]
    assert "regions with capacity for it: us-east-1, us-south-1" in result["msg"]
    api.no_capacity(B200)
    nowhere, _ = run("instance", api, api_key, **instance_args(ssh_port))
    assert nowhere["failed"] and "nor in any other region" in nowhere["msg"]
    assert api.instances() == []


def test_quota_error_says_what_to_do(api: LambdaCloudStandIn, api_key: str, ssh_port: int) -> None:
    api.quota_instances = 1
    api.add_instance("other", H100, "us-east-1")
    result, _ = run("instance", api, api_key, **instance_args(ssh_port))
    assert result["failed"] and "global/quota-exceeded" in result["msg"] and "ask Lambda Support" in result["msg"]
    assert [instance.name for instance in api.instances()] == ["other"]


def test_a_rate_limited_launch_is_waited_out_and_sent_once(
    api: LambdaCloudStandIn, api_key: str, ssh_port: int
) -> None:
    api.rate_limit(2, retry_after=0)
    result, _ = run("instance", api, api_key, **instance_args(ssh_port))
    assert result["changed"] is True and result["rate_limit_waits"] == [0.0, 0.0]
    assert len(api.instances()) == 1


def test_launches_are_spaced_by_the_launch_interval(api: LambdaCloudStandIn, api_key: str, ssh_port: int) -> None:
    api.launch_interval_s = 1.2  # the stand-in answers 429 to launches closer than this
    spaced = {"launch_interval": 1.5, "wait": False}
    first, _ = run("instance", api, api_key, **instance_args(ssh_port, **spaced))
    second, _ = run("instance", api, api_key, **instance_args(ssh_port, name="glm-2", **spaced))
    assert first["launch_paced_s"] == 0 and 0 < second["launch_paced_s"] <= 1.5
    assert second["rate_limit_waits"] == [] and len(api.instances()) == 2


class FakeTime:
    """A clock that moves only when slept on; `on_sleep` runs at each sleep (a test's way to change the world)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.on_sleep: Any = None

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        if self.on_sleep is not None:
            self.on_sleep()


def lifecycle(api: LambdaCloudStandIn, api_key: str, fake: FakeTime, tmp_path: Path) -> Any:
    client = LambdaCloudClient(api_key, api_url=api.url, sleep=fake.sleep)
    return launch_utils.InstanceLifecycle(
        client, launch_interval=12, pace_file=str(tmp_path / "pace"), sleep=fake.sleep, clock=fake.clock
    )


def test_a_launch_stuck_booting_past_its_timeout_is_terminated(api_key: str, ssh_port: int, tmp_path: Path) -> None:
    fake = FakeTime()
    with LambdaCloudStandIn(api_key, boot_polls=None) as api:
        with pytest.raises(launch_utils.LaunchError) as failed:
            launch_utils.ensure_present(
                lifecycle(api, api_key, fake, tmp_path), instance_args(ssh_port, boot_timeout=600, poll_interval=120)
            )
        (instance,) = api.instances()
    assert "is still booting after 600 s (boot_timeout): terminated it, so nothing bills" in str(failed.value)
    assert instance.status == "terminating" and failed.value.instance["id"] == instance.id


def test_an_instance_turning_unhealthy_is_terminated(
    api: LambdaCloudStandIn, api_key: str, ssh_port: int, tmp_path: Path
) -> None:
    api.boot_polls = 100
    fake = FakeTime()
    fake.on_sleep = lambda: [api.set_status(made.id, "unhealthy") for made in api.instances()]
    with pytest.raises(launch_utils.LaunchError) as failed:
        launch_utils.ensure_present(lifecycle(api, api_key, fake, tmp_path), instance_args(ssh_port))
    (instance,) = api.instances()
    assert "turned unhealthy while booting: terminated it" in str(failed.value)
    assert instance.status == "terminating"


def test_an_instance_whose_ssh_never_answers_is_terminated_and_one_not_ours_is_left(
    api: LambdaCloudStandIn, api_key: str, tmp_path: Path
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        fake = FakeTime()
        with pytest.raises(launch_utils.LaunchError) as failed:
            launch_utils.ensure_present(
                lifecycle(api, api_key, fake, tmp_path), instance_args(port, ssh_timeout=60, poll_interval=20)
            )
        assert "did not answer within 60 s (ssh_timeout" in str(failed.value) and "terminated it" in str(failed.value)
        theirs = api.add_instance("glm-2", B200, "us-east-1")
        with pytest.raises(launch_utils.LaunchError) as left:
            launch_utils.ensure_present(
                lifecycle(api, api_key, fake, tmp_path),
                instance_args(port, name="glm-2", ssh_timeout=60, poll_interval=20),
            )
    assert "not launched by this task, so it is left as it is" in str(left.value)
    assert api.instance(theirs).status == "active"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"region": "Virginia"}, "region 'Virginia' is not a Lambda region name"),
        ({"name": "glm 1"}, "name 'glm 1': use 1-64 letters"),
        ({"instance_type": "8x-b200"}, "instance_type '8x-b200' is not a Lambda instance type"),
        ({"filesystem": "weights/x"}, "filesystem 'weights/x'"),
        ({"tags": {"bad key": "x"}}, "tags: 'bad key'"),
    ],
)
def test_instance_inputs_are_refused_before_any_request(
    api: LambdaCloudStandIn, api_key: str, ssh_port: int, changes: dict[str, Any], expected: str
) -> None:
    result, _ = run("instance", api, api_key, **instance_args(ssh_port, **changes))
    assert result["failed"] and expected in result["msg"] and "\n" not in result["msg"]
    assert api.requests == []


def test_the_key_is_in_no_output(api: LambdaCloudStandIn, api_key: str, ssh_port: int, tmp_path: Path) -> None:
    outputs = [
        run("ssh_key", api, api_key, name="glm-deploy", public_key=PUBLIC_KEY)[1],
        run("instance", api, api_key, **instance_args(ssh_port))[1],
        run("instance", api, api_key, **instance_args(ssh_port, region="us-west-1", name="glm-2"))[1],
        run("instance", api, f"{api_key}x", name="glm-1", state="absent")[1],
    ]
    key_file = tmp_path / "key"
    key_file.write_text(api_key + "\n")
    from_file, raw = run("filesystem", api, None, name="glm-weights", region="us-east-1", api_key_file=str(key_file))
    outputs.append(raw)
    assert from_file["changed"] is True
    assert "LAMBDA_API_KEY" in json.loads(outputs[3])["msg"]  # the wrong key: named by where it came from
    assert all(api_key not in output for output in outputs)
    missing, _ = run("filesystem", api, None, name="glm-weights", region="us-east-1")
    assert missing["failed"] and missing["msg"].startswith("no Lambda Cloud API key: set LAMBDA_API_KEY")


def test_a_launch_goes_unpaced_when_the_pace_file_cannot_be_opened(
    api: LambdaCloudStandIn, api_key: str, ssh_port: int, tmp_path: Path
) -> None:
    fake = FakeTime()
    client = LambdaCloudClient(api_key, api_url=api.url, sleep=fake.sleep)
    lifecycle = launch_utils.InstanceLifecycle(
        client, pace_file=str(tmp_path / "missing" / "pace"), sleep=fake.sleep, clock=fake.clock
    )
    result = launch_utils.ensure_present(lifecycle, instance_args(ssh_port, wait=False))
    assert result["launched"] is True and lifecycle.paced_s == 0 and len(api.instances()) == 1
