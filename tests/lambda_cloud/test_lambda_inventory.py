"""The inventory plugin glm.deploy.lambda_cloud as a user runs it: the real `ansible-inventory` (and `ansible-doc`)
against the Lambda Cloud stand-in, which serves from this test's process.

What a user checks: the active instances are listed in glm_servers with ansible_host, glm_private_ip, glm_hardware
and the keyed groups; a wrong or missing key fails with one line naming LAMBDA_API_KEY; the key is in no output and
no cache file; a rate-limited API is waited out; an instance type the catalog does not know is refused; the filters
choose the hosts; the example configuration works as it is.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.equipment.lambda_api import LambdaCloudStandIn
from tests.equipment.playbook import REPO, playbook_env

pytestmark = pytest.mark.playbook

BIN = Path(sys.executable).parent
B200, H100, A10 = "gpu_8x_b200_sxm6", "gpu_8x_h100_sxm5", "gpu_1x_a10"
EXAMPLE = REPO / "inventories" / "examples" / "glm.lambda_cloud.yml"


def write_config(folder: Path, stand_in: LambdaCloudStandIn, **options: Any) -> Path:
    config = folder / "test.lambda_cloud.yml"
    config.write_text(yaml.safe_dump({"plugin": "glm.deploy.lambda_cloud", "api_url": stand_in.url, **options}))
    return config


def ansible(
    tool: str, *args: str, home: Path, env: dict[str, str], drop_env: tuple[str, ...] = ("LAMBDA_",)
) -> subprocess.CompletedProcess[str]:
    """Run the venv's ansible-inventory or ansible-doc from `home` (no ansible.cfg there), with no Lambda settings
    of this process's environment, only `env`'s."""
    return subprocess.run(
        [str(BIN / tool), *args],
        env=playbook_env(home=home, env=env, drop_env=drop_env),
        cwd=home,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def plain(value: Any) -> Any:
    """The --list output without its marks of untrusted text: ansible-core 2.19 writes a string an inventory plugin
    got from outside (an API) as {"__ansible_unsafe": text}, so that it is never rendered as a template."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def inventory_list(config: Path, home: Path, env: dict[str, str], *extra: str) -> dict[str, Any]:
    completed = ansible("ansible-inventory", "-i", str(config), "--list", *extra, home=home, env=env)
    assert completed.returncode == 0, completed.stderr
    assert "WARNING" not in completed.stderr, completed.stderr
    listing: dict[str, Any] = plain(json.loads(completed.stdout))
    return listing


def failure_line(completed: subprocess.CompletedProcess[str], start: str) -> str:
    """The one line of the output where the plugin's message starts (Ansible repeats it under "caused by")."""
    lines = [line for line in completed.stderr.splitlines() if start in line]
    assert lines, completed.stderr
    assert "Traceback" not in completed.stderr
    return lines[0][lines[0].index(start) :]


def refusal_line(config: Path, home: Path, api_key: str) -> str:
    """The plugin's one-line refusal of `config`'s inventory (ansible-inventory told to fail on it, and failing)."""
    completed = ansible(
        "ansible-inventory",
        "-i",
        str(config),
        "--list",
        home=home,
        env={"LAMBDA_API_KEY": api_key, "ANSIBLE_INVENTORY_UNPARSED_FAILED": "1"},
    )
    assert completed.returncode != 0
    return failure_line(completed, "the glm.deploy.lambda_cloud inventory plugin")


@pytest.fixture
def fleet(stand_in: LambdaCloudStandIn) -> LambdaCloudStandIn:
    """An account with two B200 nodes, an H100 node, one booting, one terminated and a dev box of a type the
    catalog does not know."""
    stand_in.boot_polls = None
    stand_in.add_instance("glm-node-2", B200, "us-east-1", tags={"project": "glm"})
    stand_in.add_instance("glm-node-1", B200, "us-east-1", tags={"project": "glm"}, file_system_names=["weights"])
    stand_in.add_instance("glm-h100", H100, "us-west-1", tags={"project": "other"})
    stand_in.add_instance("glm-booting", B200, "us-east-1", status="booting", tags={"project": "glm"})
    stand_in.add_instance("glm-gone", B200, "us-south-1", status="terminated")
    stand_in.add_instance("dev-a10", A10, "us-west-1")
    return stand_in


def test_the_active_instances_are_listed_with_their_addresses_hardware_and_groups(
    fleet: LambdaCloudStandIn, api_key: str, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path,
        fleet,
        name_prefix="glm-",
        keyed_groups=[
            {"key": "lambda_region", "prefix": "lambda_region"},
            {"key": "glm_hardware", "prefix": "hardware"},
        ],
        compose={"glm_node_label": "lambda_name ~ '@' ~ lambda_region"},
        groups={"expensive": "lambda_price_cents_per_hour > 3000"},
    )
    env = {"LAMBDA_API_KEY": api_key}
    listing = inventory_list(config, tmp_path, env)

    assert listing["glm_servers"]["hosts"] == ["glm-h100", "glm-node-1", "glm-node-2"]
    assert sorted(listing["hardware_b200"]["hosts"]) == ["glm-node-1", "glm-node-2"]
    assert listing["hardware_h100"]["hosts"] == ["glm-h100"]
    assert listing["lambda_region_us_west_1"]["hosts"] == ["glm-h100"]
    assert sorted(listing["expensive"]["hosts"]) == ["glm-node-1", "glm-node-2"]
    node = listing["_meta"]["hostvars"]["glm-node-1"]
    stand_in_node = fleet.instance(node["lambda_id"])
    assert node["ansible_host"] == stand_in_node.ip and node["ansible_host"].startswith("198.51.100.")
    assert node["glm_private_ip"] == stand_in_node.private_ip and node["glm_private_ip"].startswith("10.19.0.")
    assert node["glm_hardware"] == "b200"
    assert node["glm_node_label"] == "glm-node-1@us-east-1"
    assert node["lambda_instance_type"] == B200 and node["lambda_status"] == "active"
    assert node["lambda_file_system_names"] == ["weights"]
    assert listing["_meta"]["hostvars"]["glm-h100"]["glm_hardware"] == "h100"
    assert not any("jupyter" in name for name in node)

    graph = ansible("ansible-inventory", "-i", str(config), "--graph", home=tmp_path, env=env)
    assert graph.returncode == 0, graph.stderr
    assert "  |--@glm_servers:\n  |  |--glm-h100\n  |  |--glm-node-1\n  |  |--glm-node-2\n" in graph.stdout
    assert "@hardware_b200:" in graph.stdout
    for output in (json.dumps(listing), graph.stdout, graph.stderr):
        assert api_key not in output
        assert stand_in_node.jupyter_token not in output


def test_a_wrong_key_fails_with_one_line_naming_the_key_variable(
    fleet: LambdaCloudStandIn, api_key: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, fleet)
    wrong = "wrong_" + api_key[::-1]
    strict = {"ANSIBLE_INVENTORY_UNPARSED_FAILED": "1"}
    completed = ansible(
        "ansible-inventory", "-i", str(config), "--list", home=tmp_path, env={"LAMBDA_API_KEY": wrong, **strict}
    )
    assert completed.returncode != 0
    line = failure_line(completed, "the glm.deploy.lambda_cloud inventory plugin")
    assert line == (
        f"the glm.deploy.lambda_cloud inventory plugin ({config}): the Lambda Cloud API refused the API key from "
        "LAMBDA_API_KEY (global/invalid-api-key: API key was invalid, expired, or deleted. Check your API key or "
        "create a new one, then try again.); set LAMBDA_API_KEY to a valid key from https://cloud.lambda.ai/api-keys"
    )
    assert wrong not in completed.stdout + completed.stderr
    assert [(record.status, record.authenticated) for record in fleet.requests] == [(401, False)]

    missing = ansible("ansible-inventory", "-i", str(config), "--list", home=tmp_path, env=strict)
    assert missing.returncode != 0
    line = failure_line(missing, "the glm.deploy.lambda_cloud inventory plugin")
    assert line.endswith(
        "no Lambda Cloud API key: set LAMBDA_API_KEY (or the option api_key_file, LAMBDA_API_KEY_FILE) to a key "
        "from https://cloud.lambda.ai/api-keys"
    )
    assert len(fleet.requests) == 1, "without a key, nothing is sent"


def test_the_key_is_in_no_output_and_no_cache_file_and_the_cache_is_used(
    fleet: LambdaCloudStandIn, api_key: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    cache = tmp_path / "cache"
    config = write_config(
        tmp_path,
        fleet,
        name_prefix="glm-",
        cache=True,
        cache_plugin="ansible.builtin.jsonfile",
        cache_connection=str(cache),
        cache_timeout=3600,
    )
    key_file = tmp_path / "secret" / "lambda-key"
    key_file.parent.mkdir()
    key_file.write_text(api_key + "\n")
    key_file.chmod(0o600)
    outputs = []
    for env in ({"LAMBDA_API_KEY": api_key}, {"LAMBDA_API_KEY_FILE": str(key_file)}):
        completed = ansible(
            "ansible-inventory", "-i", str(config), "--list", "--flush-cache", "-vvvv", home=home, env=env
        )
        assert completed.returncode == 0, completed.stderr
        outputs.append(completed.stdout + completed.stderr)
        assert json.loads(completed.stdout[completed.stdout.index("\n{") :])["glm_servers"]["hosts"] == [
            "glm-h100",
            "glm-node-1",
            "glm-node-2",
        ]
    cache_files = [path for path in cache.rglob("*") if path.is_file()]
    assert any("glm-node-1" in path.read_text() for path in cache_files), "the inventory cache holds the instances"
    tokens = [instance.jupyter_token for instance in fleet.instances()]
    searched = [path for path in [*home.rglob("*"), *cache.rglob("*"), config] if path.is_file()]
    for text in [*outputs, *(path.read_text(errors="replace") for path in searched)]:
        assert api_key not in text
        assert not any(token in text for token in tokens)

    # The cache answers until it is flushed: a new instance shows only after --flush-cache.
    fleet.add_instance("glm-node-3", B200, "us-east-1")
    requests_before = len(fleet.requests)
    cached = inventory_list(config, home, {"LAMBDA_API_KEY": api_key})
    assert "glm-node-3" not in cached["glm_servers"]["hosts"]
    assert len(fleet.requests) == requests_before
    fresh = inventory_list(config, home, {"LAMBDA_API_KEY": api_key}, "--flush-cache")
    assert "glm-node-3" in fresh["glm_servers"]["hosts"]


def test_a_rate_limited_api_is_waited_out(fleet: LambdaCloudStandIn, api_key: str, tmp_path: Path) -> None:
    fleet.rate_limit(times=2, retry_after=1)
    config = write_config(tmp_path, fleet, name_prefix="glm-node")
    started = time.monotonic()
    listing = inventory_list(config, tmp_path, {"LAMBDA_API_KEY": api_key})
    assert time.monotonic() - started >= 2
    assert listing["glm_servers"]["hosts"] == ["glm-node-1", "glm-node-2"]
    assert [record.status for record in fleet.requests] == [429, 429, 200]


def test_an_instance_type_the_catalog_does_not_know_is_refused(
    fleet: LambdaCloudStandIn, api_key: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, fleet)
    line = refusal_line(config, tmp_path, api_key)
    (dev_box,) = [instance for instance in fleet.instances() if instance.name == "dev-a10"]
    assert (
        f"Lambda instance 'dev-a10' (id {dev_box.id}) is of type 'gpu_1x_a10', which glm-deploy's catalog does not "
        "map to hardware (known: " in line
    )
    assert "gpu_8x_b200_sxm6 -> b200" in line and "leave it out with the option instance_types or name_prefix" in line


def test_a_type_the_catalog_does_not_know_is_listed_with_the_hardware_the_configuration_names(
    fleet: LambdaCloudStandIn, api_key: str, tmp_path: Path
) -> None:
    # Lambda adds instance types before the catalog records them: the configuration names their hardware, and wins
    # over the catalog's own mapping.
    config = write_config(tmp_path, fleet, hardware_by_instance_type={A10: "cpu", B200: "h200"})
    listing = inventory_list(config, tmp_path, {"LAMBDA_API_KEY": api_key})
    hostvars = listing["_meta"]["hostvars"]
    assert hostvars["dev-a10"]["glm_hardware"] == "cpu"
    assert {hostvars[name]["glm_hardware"] for name in ("glm-node-1", "glm-node-2")} == {"h200"}
    assert hostvars["glm-h100"]["glm_hardware"] == "h100"  # the catalog's, where the configuration is silent


@pytest.mark.parametrize("hardware", ["a10", "", 7, "b200\n"])
def test_a_configured_hardware_the_catalog_does_not_have_is_refused(
    fleet: LambdaCloudStandIn, api_key: str, tmp_path: Path, hardware: object
) -> None:
    config = write_config(tmp_path, fleet, hardware_by_instance_type={A10: hardware})
    line = refusal_line(config, tmp_path, api_key)
    assert f"hardware_by_instance_type maps '{A10}' to" in line and "which is not hardware of the catalog" in line
    assert "b200" in line.split("one of:")[1]


def test_filters_choose_the_hosts(fleet: LambdaCloudStandIn, api_key: str, tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        fleet,
        statuses=["active", "booting"],
        tags={"project": "glm"},
        regions=["us-east-1"],
        instance_types=[B200],
        hostname_source="id",
        group="lambda_b200",
    )
    listing = inventory_list(config, tmp_path, {"LAMBDA_API_KEY": api_key})
    hostvars = listing["_meta"]["hostvars"]
    by_name = {variables["lambda_name"]: variables for variables in hostvars.values()}
    assert sorted(by_name) == ["glm-booting", "glm-node-1", "glm-node-2"]
    assert sorted(listing["lambda_b200"]["hosts"]) == sorted(hostvars)
    assert set(hostvars) == {variables["lambda_id"] for variables in hostvars.values()}
    assert "ansible_host" not in by_name["glm-booting"] and by_name["glm-booting"]["lambda_status"] == "booting"
    assert "glm_servers" not in listing


def test_the_example_configuration_lists_the_glm_instances(
    fleet: LambdaCloudStandIn, api_key: str, tmp_path: Path
) -> None:
    listing = inventory_list(EXAMPLE, tmp_path, {"LAMBDA_API_KEY": api_key, "LAMBDA_API_URL": fleet.url})
    assert listing["glm_servers"]["hosts"] == ["glm-h100", "glm-node-1", "glm-node-2"]
    assert sorted(listing["hardware_b200"]["hosts"]) == ["glm-node-1", "glm-node-2"]


def test_ansible_doc_renders_the_plugin(tmp_path: Path) -> None:
    completed = ansible("ansible-doc", "-t", "inventory", "glm.deploy.lambda_cloud", home=tmp_path, env={})
    assert completed.returncode == 0, completed.stderr
    text = " ".join(completed.stdout.split())
    for expected in ("LAMBDA_API_KEY", "api_key_file", "name_prefix", "keyed_groups", "cache_plugin", "EXAMPLES"):
        assert expected in text, expected
    assert "[WARNING]" not in completed.stderr, completed.stderr
