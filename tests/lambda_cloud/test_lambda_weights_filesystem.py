"""Weights that outlive the instance (issue 12 item 4): an instance with a Lambda filesystem attached gets
glm_filesystem_name and glm_filesystem_mount from the inventory, a name or mount point that would reach a path
unchecked is refused, the plan's hf_home (and so the weights role's cache and the engine's HF_HOME) resolves to a
folder on the mount, the playbooks and the controller render the same plan, the hosts sharing the filesystem
download once, and the catalog records the placement decision as unmeasured.

All in this process: recorded API answers, the renderer, Ansible's templar on the roles' own defaults and vars.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template
from tests.equipment.lambda_api import recorded
from tests.equipment.load import load_plugin

from glm_deploy.catalog import load_catalog
from glm_deploy.deployment import Deployment
from glm_deploy.errors import CatalogError, InputError
from glm_deploy.inventory import InventoryView
from glm_deploy.render import PlanOptions, render_plan
from glm_deploy.render.options import options_on_filesystem

REPO = Path(__file__).resolve().parents[2]
ROLES = REPO / "collection" / "roles"
HARDWARE = {"gpu_8x_b200_sxm6": "b200", "gpu_8x_h100_sxm5": "h100"}
MOUNT = "/lambda/nfs/my-filesystem"
HF_HOME = f"{MOUNT}/glm-deploy/hf"


def instance(name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(item for item in recorded("instances.json")["data"] if item["name"] == name)
    return copy.deepcopy(found)


# ------------------------------------------------------------------------------------- inventory host vars


def test_an_instance_with_a_filesystem_gets_its_name_and_mount(lambda_instances: Any) -> None:
    variables = lambda_instances.host_variables(instance("glm-node-1"), HARDWARE)
    assert variables["glm_filesystem_name"] == "my-filesystem"
    assert variables["glm_filesystem_mount"] == MOUNT


def test_an_instance_without_a_filesystem_gets_neither(lambda_instances: Any) -> None:
    variables = lambda_instances.host_variables(instance("glm-h100-1"), HARDWARE)
    assert "glm_filesystem_name" not in variables and "glm_filesystem_mount" not in variables


def test_the_mount_point_chosen_at_launch_wins_and_without_one_lambdas_default_is_used(lambda_instances: Any) -> None:
    node = instance("glm-node-1")
    node["file_system_mounts"][0]["mount_point"] = "/data/glm-weights"
    assert lambda_instances.host_variables(node, HARDWARE)["glm_filesystem_mount"] == "/data/glm-weights"
    del node["file_system_mounts"]
    node["file_system_names"] = ["weights-2"]
    assert lambda_instances.host_variables(node, HARDWARE)["glm_filesystem_mount"] == "/lambda/nfs/weights-2"


@pytest.mark.parametrize("name", ["../etc", "fs/../../root", "my fs", "9-starts-with-a-digit", "x" * 61, ""])
def test_a_filesystem_name_that_would_reach_a_path_unchecked_is_refused(lambda_instances: Any, name: str) -> None:
    node = instance("glm-node-1")
    node["file_system_names"] = [name]
    del node["file_system_mounts"]
    with pytest.raises(lambda_instances.InstanceError) as raised:
        lambda_instances.host_variables(node, HARDWARE)
    assert f"has the filesystem {name!r} attached, which is not a Lambda filesystem name" in str(raised.value)
    assert "'glm-node-1'" in str(raised.value)


@pytest.mark.parametrize("mount", ["/etc", "/lambda/nfs/../../etc", "/data//x", "relative/path", "/data/a b"])
def test_a_mount_point_outside_what_lambda_accepts_is_refused(lambda_instances: Any, mount: str) -> None:
    node = instance("glm-node-1")
    node["file_system_mounts"][0]["mount_point"] = mount
    with pytest.raises(lambda_instances.InstanceError, match="which is not a mount point Lambda accepts"):
        lambda_instances.host_variables(node, HARDWARE)


# --------------------------------------------------------------------------------------- the plan's hf_home


def test_the_plan_keeps_the_hf_cache_on_the_mount() -> None:
    catalog = load_catalog()
    options = options_on_filesystem({"port": 8000}, MOUNT, catalog.shared_filesystem_weights)
    assert options == {"port": 8000, "hf_home": HF_HOME}
    plan = render_plan(
        catalog, model="glm-tiny", engine="vllm-cpu", hardware="cpu", options=PlanOptions.from_mapping(options)
    )
    assert plan.cache_env["HF_HOME"] == HF_HOME
    assert HF_HOME in plan.cache_dirs


def test_an_hf_home_the_inventory_chose_wins_and_no_mount_changes_nothing() -> None:
    storage = load_catalog().shared_filesystem_weights
    assert options_on_filesystem({"hf_home": "/srv/hf"}, MOUNT, storage) == {"hf_home": "/srv/hf"}
    assert options_on_filesystem({"port": 1}, "", storage) == {"port": 1}
    assert options_on_filesystem({"port": 1}, None, storage) == {"port": 1}


@pytest.mark.parametrize("mount", ["lambda/nfs/x", "/lambda/nfs/../etc", "/a b", "/x:y", "//x"])
def test_a_mount_that_is_not_a_plain_absolute_path_is_refused(mount: str) -> None:
    with pytest.raises(InputError, match=r"glm_filesystem_mount .* is not an absolute mount point"):
        options_on_filesystem({}, mount, load_catalog().shared_filesystem_weights)


def test_the_controller_renders_the_same_plan_as_the_plan_role(tmp_path: Path) -> None:
    """Deployment.settings applies the same rule to the first host's glm_filesystem_mount, so the release id the
    controller records is the one the hosts serve; the plan role's filter is the same function."""
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all: {}\n")
    deployment = Deployment(inventory, state_dir=tmp_path / "state")
    deployment._view = InventoryView(
        path=inventory,
        hosts=["glm-1"],
        group_vars={"glm_model": "glm-tiny", "glm_engine": "vllm-cpu", "glm_hardware": "cpu"},
        hostvars={"glm-1": {"glm_filesystem_mount": MOUNT}},
    )
    assert deployment.settings()["options"] == {"hf_home": HF_HOME}
    assert deployment.plan().cache_env["HF_HOME"] == HF_HOME
    plan_filters = load_plugin("glm_plan_options_filter", REPO / "collection/plugins/filter/plan_options.py")
    on_filesystem = plan_filters.FilterModule().filters()["options_on_filesystem"]
    assert on_filesystem({}, MOUNT) == deployment.settings()["options"]
    assert on_filesystem({"port": 8000}, "") == {"port": 8000}


# ------------------------------------------------------------------------------- the roles' own variables


def role_variables(role: str, *files: str) -> dict[str, Any]:
    variables: dict[str, Any] = {}
    for name in files:
        data = yaml.safe_load((ROLES / role / name).read_text()) or {}
        for key, value in data.items():
            variables[key] = trust_as_template(value) if isinstance(value, str) else value
    return variables


def template(expression: str, variables: dict[str, Any]) -> Any:
    return Templar(loader=DataLoader(), variables=variables).template(trust_as_template(expression))


def test_the_weights_cache_follows_the_plans_hf_home() -> None:
    weights = role_variables("weights", "defaults/main.yml")
    on_mount = {**weights, "glm_plan": {"cache_env": {"HF_HOME": HF_HOME}}}
    assert template("{{ weights_cache_dir }}", on_mount) == f"{HF_HOME}/hub"
    assert template("{{ weights_cache_dir }}", dict(weights)) == "/var/lib/glm-deploy/hf/hub"


def test_the_plan_role_takes_the_mount_from_the_inventory() -> None:
    plan = role_variables("plan", "defaults/main.yml")
    assert template("{{ plan_filesystem_mount }}", {**plan, "glm_filesystem_mount": MOUNT}) == MOUNT
    assert template("{{ plan_filesystem_mount }}", dict(plan)) == ""


def test_hosts_sharing_a_filesystem_download_once() -> None:
    """The first host (in play order) of those sharing the mount downloads in the first wave; the others follow it
    and find the files there; a host with a cache of its own downloads at once."""
    hostvars = {
        "glm-1": {"glm_filesystem_mount": MOUNT},
        "glm-2": {"glm_filesystem_mount": MOUNT},
        "other": {"glm_filesystem_mount": "/lambda/nfs/other"},
        "local": {},
    }
    weights = role_variables("weights", "defaults/main.yml", "vars/main.yml")
    waves = {}
    for host, own in hostvars.items():
        mount = own.get("glm_filesystem_mount")
        variables = {
            **weights,
            **own,
            "hostvars": hostvars,
            "ansible_play_hosts": list(hostvars),
            "inventory_hostname": host,
            "glm_plan": {"cache_env": {"HF_HOME": f"{mount}/glm-deploy/hf" if mount else "/var/lib/glm-deploy/hf"}},
        }
        waves[host] = template("{{ _weights_downloads_first | bool }}", variables)
    assert waves == {"glm-1": True, "glm-2": False, "other": True, "local": True}


def test_a_host_whose_cache_is_not_under_its_mount_does_not_wait() -> None:
    weights = role_variables("weights", "defaults/main.yml", "vars/main.yml")
    hostvars = {"glm-1": {"glm_filesystem_mount": MOUNT}, "glm-2": {"glm_filesystem_mount": MOUNT}}
    variables = {
        **weights,
        **hostvars["glm-2"],
        "hostvars": hostvars,
        "ansible_play_hosts": ["glm-1", "glm-2"],
        "inventory_hostname": "glm-2",
        "weights_cache_dir": "/var/lib/glm-deploy/hf/hub",
    }
    assert template("{{ _weights_downloads_first | bool }}", variables) is True


# ------------------------------------------------------------------------------------------ the decision


def test_the_catalog_records_the_placement_as_unmeasured_with_a_source() -> None:
    decision = load_catalog().shared_filesystem_weights
    assert decision.placement == "hf_cache_on_filesystem"
    assert decision.measured is False
    assert decision.alternative.startswith("copy_to_local_nvme")
    assert "Unmeasured" in decision.why
    assert "lambda-cloud-openapi.json" in decision.source and "/lambda/nfs/<name>" in decision.source


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"placement": "copy_to_local_nvme"}, r"placement is 'copy_to_local_nvme'; built: hf_cache_on_filesystem"),
        ({"hf_home_folder": "../hf"}, r"hf_home_folder '\.\./hf' must be a relative folder"),
        ({"hf_home_folder": "/hf"}, r"hf_home_folder '/hf' must be a relative folder"),
    ],
)
def test_a_placement_not_built_or_a_folder_outside_the_mount_is_refused(
    tmp_path: Path, change: dict[str, str], message: str
) -> None:
    source = Path(str(resources.files("glm_deploy").joinpath("catalog")))
    for file in source.glob("*.yml"):
        (tmp_path / file.name).write_text(file.read_text())
    data = yaml.safe_load((tmp_path / "hardware.yml").read_text())
    data["shared_filesystem_weights"].update(change)
    (tmp_path / "hardware.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(CatalogError, match=message):
        load_catalog(tmp_path)
