"""Reading recorded GET /api/v1/instances answers (tests/fixtures/lambda, written from the examples of Lambda's
OpenAPI description) into inventory hosts: which instances are kept, in what order, under what names, with what
variables; and the catalog's mapping of Lambda instance types to glm-deploy hardware that glm_hardware comes from."""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.equipment.lambda_api import SPEC_FILE, recorded
from tests.equipment.openapi_check import OpenApi

from glm_deploy.catalog import load_catalog
from glm_deploy.errors import CatalogError

HARDWARE = {"gpu_8x_b200_sxm6": "b200", "gpu_8x_h100_sxm5": "h100"}


@pytest.fixture
def instances() -> list[dict[str, Any]]:
    listing: list[dict[str, Any]] = recorded("instances.json")["data"]
    return listing


def names(selected: list[dict[str, Any]]) -> list[str]:
    return [instance["name"] for instance in selected]


def test_the_recorded_answers_are_in_the_described_shape() -> None:
    api = OpenApi(json.loads(SPEC_FILE.read_text()))
    schema = api.response_schema("/api/v1/instances", "get", 200)
    assert api.problems(recorded("instances.json"), schema) == []
    assert (
        api.problems(recorded("instance-types.json"), api.response_schema("/api/v1/instance-types", "get", 200)) == []
    )
    for name, answer in recorded("errors.json").items():
        assert "code" in answer["body"]["error"] and "message" in answer["body"]["error"], name


def test_by_default_active_instances_are_kept_in_the_order_of_their_names(
    lambda_instances: Any, instances: list[dict[str, Any]]
) -> None:
    selected = lambda_instances.select(instances)
    assert names(selected) == ["My Instance", "glm-h100-1", "glm-node-1", "glm-node-2"]
    assert names(lambda_instances.select(list(reversed(instances)))) == names(selected)


@pytest.mark.parametrize(
    ("filters", "kept"),
    [
        ({"name_prefix": "glm-node"}, ["glm-node-1", "glm-node-2"]),
        ({"regions": ["us-west-1"]}, ["My Instance", "glm-h100-1"]),
        ({"instance_types": ["gpu_8x_h100_sxm5"]}, ["glm-h100-1"]),
        ({"tags": {"project": "glm", "role": "server"}}, ["glm-node-1", "glm-node-2"]),
        ({"tags": {"role": None}}, ["glm-node-1", "glm-node-2"]),
        ({"tags": {"project": "other"}}, []),
        ({"statuses": ["booting", "terminated"]}, ["glm-node-3", "glm-old"]),
        ({"statuses": [], "name_prefix": "glm-"}, ["glm-h100-1", "glm-node-1", "glm-node-2", "glm-node-3", "glm-old"]),
        (
            {"name_prefix": "glm-", "instance_types": ["gpu_8x_b200_sxm6"], "regions": ["us-east-1"]},
            ["glm-node-1", "glm-node-2"],
        ),
    ],
)
def test_filters(
    lambda_instances: Any, instances: list[dict[str, Any]], filters: dict[str, Any], kept: list[str]
) -> None:
    assert names(lambda_instances.select(instances, **filters)) == kept


def test_filters_that_cannot_match_are_refused(lambda_instances: Any) -> None:
    with pytest.raises(lambda_instances.InstanceError, match=r"statuses names 'running', which Lambda never reports"):
        lambda_instances.check_filters(["active", "running"], None)
    with pytest.raises(lambda_instances.InstanceError, match="tags must map tag keys to values"):
        lambda_instances.check_filters(["active"], ["project"])


def test_host_variables_of_an_active_instance(lambda_instances: Any, instances: list[dict[str, Any]]) -> None:
    node = next(instance for instance in instances if instance["name"] == "glm-node-1")
    variables = lambda_instances.host_variables(node, HARDWARE)
    assert variables["ansible_host"] == "198.51.100.2"
    assert variables["glm_private_ip"] == "10.0.2.100"
    assert variables["glm_hardware"] == "b200"
    assert variables["lambda_id"] == "1a2b3c4d5e6f40718293a4b5c6d7e8f9"
    assert variables["lambda_region"] == "us-east-1"
    assert variables["lambda_instance_type"] == "gpu_8x_b200_sxm6"
    assert variables["lambda_price_cents_per_hour"] == 3992
    assert variables["lambda_specs"] == {"vcpus": 124, "memory_gib": 1800, "storage_gib": 6144, "gpus": 8}
    assert variables["lambda_tags"] == {"project": "glm", "role": "server"}
    assert variables["lambda_file_system_mounts"] == [
        {"mount_point": "/lambda/nfs/my-filesystem", "file_system_id": "a098b0c7ff041399e34823a0be62549"}
    ]
    assert variables["glm_filesystem_mount"] == "/lambda/nfs/my-filesystem"
    glm_variables = {"ansible_host", "glm_private_ip", "glm_hardware", "glm_filesystem_name", "glm_filesystem_mount"}
    assert set(variables) - glm_variables == {
        name for name in variables if name.startswith("lambda_")
    }
    text = repr(variables)
    assert node["jupyter_token"] not in text and "jupyter" not in text


def test_a_booting_instance_has_no_address_yet(lambda_instances: Any, instances: list[dict[str, Any]]) -> None:
    booting = next(instance for instance in instances if instance["status"] == "booting")
    variables = lambda_instances.host_variables(booting, HARDWARE)
    assert "ansible_host" not in variables and "glm_private_ip" not in variables
    assert variables["lambda_ip"] is None and variables["glm_hardware"] == "b200"


def test_an_instance_type_the_catalog_does_not_map_is_refused(
    lambda_instances: Any, instances: list[dict[str, Any]]
) -> None:
    unknown = next(instance for instance in instances if instance["name"] == "My Instance")
    with pytest.raises(lambda_instances.InstanceError) as raised:
        lambda_instances.host_variables(unknown, HARDWARE)
    assert str(raised.value) == (
        "Lambda instance 'My Instance' (id 4d5e6f7a8b9c40314c5d6e7f80910213) is of type 'gpu_8x_example', which "
        "glm-deploy's catalog does not map to hardware (known: gpu_8x_b200_sxm6 -> b200, gpu_8x_h100_sxm5 -> h100): "
        "leave it out with the option instance_types or name_prefix, or name its hardware in the option "
        "hardware_by_instance_type (for instance {gpu_8x_example: h200})"
    )


def test_hostnames_are_names_or_ids_and_never_collide(lambda_instances: Any, instances: list[dict[str, Any]]) -> None:
    selected = lambda_instances.select(instances, name_prefix="glm-node")
    assert [name for name, _ in lambda_instances.hostnames(selected)] == ["glm-node-1", "glm-node-2"]
    assert [name for name, _ in lambda_instances.hostnames(selected, "id")] == [
        "1a2b3c4d5e6f40718293a4b5c6d7e8f9",
        "0920582c7ff041399e34823a0be62549",
    ]
    unnamed = dict(copy.deepcopy(selected[0]), name="")
    assert lambda_instances.hostnames([unnamed])[0][0] == unnamed["id"]
    twin = dict(copy.deepcopy(selected[1]), name="glm-node-1")
    with pytest.raises(lambda_instances.InstanceError, match=r"two Lambda instances are named 'glm-node-1' \(ids"):
        lambda_instances.hostnames([selected[0], twin])


def test_the_public_record_drops_the_jupyter_secrets(lambda_instances: Any, instances: list[dict[str, Any]]) -> None:
    record = lambda_instances.public_record(instances[0])
    assert "jupyter_token" not in record and "jupyter_url" not in record
    assert "jupyter_token" in instances[0], "the answer itself is left as it was"
    assert record["id"] == instances[0]["id"]


# ------------------------------------------------------------------------------------------ the catalog


def test_the_catalog_maps_lambda_instance_types_to_hardware() -> None:
    catalog = load_catalog()
    found = catalog.hardware_for_lambda_instance_type("gpu_8x_b200_sxm6")
    assert found is not None and found.name == "b200"
    found = catalog.hardware_for_lambda_instance_type("gpu_8x_h100_sxm5")
    assert found is not None and found.name == "h100"
    assert catalog.hardware_for_lambda_instance_type("gpu_8x_example") is None
    for hardware in catalog.hardware.values():
        if hardware.lambda_instance_types:
            assert hardware.lambda_instance_types_source, hardware.name


def _catalog_copy(tmp_path: Path, change: Any) -> Path:
    target = tmp_path / "catalog"
    source = Path(str(resources.files("glm_deploy").joinpath("catalog")))
    target.mkdir()
    for file in source.glob("*.yml"):
        (target / file.name).write_text(file.read_text())
    data = yaml.safe_load((target / "hardware.yml").read_text())
    change(data["hardware"])
    (target / "hardware.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    return target


def test_a_lambda_instance_type_under_two_hardware_entries_is_refused(tmp_path: Path) -> None:
    def change(hardware: dict[str, Any]) -> None:
        hardware["h200"]["lambda_instance_types"] = ["gpu_8x_b200_sxm6"]
        hardware["h200"]["lambda_instance_types_source"] = "made up for the test"

    with pytest.raises(CatalogError, match=r"hardware\.h200\.lambda_instance_types lists 'gpu_8x_b200_sxm6', which "):
        load_catalog(_catalog_copy(tmp_path, change))


def test_lambda_instance_types_without_their_source_are_refused(tmp_path: Path) -> None:
    def change(hardware: dict[str, Any]) -> None:
        del hardware["b200"]["lambda_instance_types_source"]

    with pytest.raises(
        CatalogError, match=r"hardware\.b200 lists lambda_instance_types but no lambda_instance_types_source"
    ):
        load_catalog(_catalog_copy(tmp_path, change))
