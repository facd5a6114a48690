"""The Lambda Cloud stand-in answers as Lambda's OpenAPI description says: its paths, fields, authentication and
error codes, checked against the description's own schemas, and its states and faults do what the tests that use
it rely on. It serves in a thread of this process, so these are unit tests."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from tests.equipment.lambda_api import RATE_LIMIT_CODE, LambdaCloudStandIn

B200 = "gpu_8x_b200_sxm6"
LAUNCH = "/api/v1/instance-operations/launch"
TERMINATE = "/api/v1/instance-operations/terminate"


def call(
    api: LambdaCloudStandIn, method: str, path: str, body: Any = None, authorization: str | None = None
) -> tuple[int, dict[str, str], Any]:
    """(status, headers, JSON document) of one request, with the stand-in's key as a Bearer token unless told."""
    request = urllib.request.Request(api.url + path, method=method)
    request.add_header("Authorization", authorization if authorization is not None else f"Bearer {api._api_key}")
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, data=data, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def conforms(api: LambdaCloudStandIn, path: str, method: str, status: int, document: Any) -> None:
    """The answer matches the description's schema for this operation and status."""
    problems = api.api.problems(document, api.api.response_schema(path, method, status))
    assert problems == [], problems


def launch_body(**changes: Any) -> dict[str, Any]:
    body = {"region_name": "us-east-1", "instance_type_name": B200, "ssh_key_names": ["glm-deploy"], "name": "glm-a"}
    body.update(changes)
    return body


def test_listing_getting_and_instance_types_answer_in_the_described_shape(stand_in: LambdaCloudStandIn) -> None:
    instance_id = stand_in.add_instance(
        "glm-node-1", B200, "us-east-1", tags={"project": "glm"}, file_system_names=["weights"]
    )
    stand_in.add_instance("glm-node-2", B200, "us-east-1", status="booting")

    status, _, listing = call(stand_in, "GET", "/api/v1/instances")
    assert status == 200
    conforms(stand_in, "/api/v1/instances", "get", 200, listing)
    assert [instance["status"] for instance in listing["data"]] == ["active", "booting"]
    active, booting = listing["data"]
    assert (active["ip"], active["private_ip"]) == ("198.51.100.10", "10.19.0.10")
    assert active["tags"] == [{"key": "project", "value": "glm"}]
    assert active["file_system_mounts"][0]["mount_point"] == "/lambda/nfs/weights"
    assert "ip" not in booting and "private_ip" not in booting

    status, _, one = call(stand_in, "GET", f"/api/v1/instances/{instance_id}")
    assert status == 200
    conforms(stand_in, "/api/v1/instances/{id}", "get", 200, one)
    assert one["data"]["name"] == "glm-node-1"

    status, _, types = call(stand_in, "GET", "/api/v1/instance-types")
    assert status == 200
    conforms(stand_in, "/api/v1/instance-types", "get", 200, types)
    assert [region["name"] for region in types["data"][B200]["regions_with_capacity_available"]] == [
        "us-east-1",
        "us-south-1",
    ]


@pytest.mark.parametrize("scheme", ["bearer", "basic-base64-with-colon", "basic-raw"])
def test_every_authorization_the_description_allows_is_accepted(stand_in: LambdaCloudStandIn, scheme: str) -> None:
    key = stand_in._api_key
    header = {
        "bearer": f"Bearer {key}",
        "basic-base64-with-colon": "Basic " + base64.b64encode(f"{key}:".encode()).decode(),
        "basic-raw": f"Basic {key}",
    }[scheme]
    status, _, _ = call(stand_in, "GET", "/api/v1/instances", authorization=header)
    assert status == 200


@pytest.mark.parametrize("header", ["", "Bearer wrong-key", "Token {key}", "Basic d3Jvbmc6"])
def test_a_missing_or_wrong_key_is_the_described_401(stand_in: LambdaCloudStandIn, header: str) -> None:
    status, _, document = call(stand_in, "GET", "/api/v1/instances", authorization=header.format(key=stand_in._api_key))
    assert status == 401
    conforms(stand_in, "/api/v1/instances", "get", 401, document)
    assert document["error"] == {
        "code": "global/invalid-api-key",
        "message": "API key was invalid, expired, or deleted.",
        "suggestion": "Check your API key or create a new one, then try again.",
    }


def test_a_launch_boots_then_runs_and_a_terminate_ends_it(stand_in: LambdaCloudStandIn) -> None:
    status, _, launched = call(stand_in, "POST", LAUNCH, launch_body(tags=[{"key": "project", "value": "glm"}]))
    assert status == 200
    conforms(stand_in, LAUNCH, "post", 200, launched)
    (instance_id,) = launched["data"]["instance_ids"]
    path = f"/api/v1/instances/{instance_id}"

    seen = [call(stand_in, "GET", path)[2]["data"] for _ in range(2)]
    assert [instance["status"] for instance in seen] == ["booting", "active"]
    assert "ip" not in seen[0] and seen[1]["ip"].startswith("198.51.100.")
    assert seen[1]["tags"] == [{"key": "project", "value": "glm"}]

    status, _, ended = call(stand_in, "POST", TERMINATE, {"instance_ids": [instance_id]})
    assert status == 200
    conforms(stand_in, TERMINATE, "post", 200, ended)
    assert ended["data"]["terminated_instances"][0]["status"] == "terminating"
    assert [call(stand_in, "GET", path)[2]["data"]["status"] for _ in range(2)] == ["terminating", "terminated"]
    # Terminated instances stay listed, and cannot be terminated again.
    status, _, document = call(stand_in, "POST", TERMINATE, {"instance_ids": [instance_id]})
    assert status == 404 and document["error"]["code"] == "global/object-does-not-exist"


def test_an_instance_that_never_boots_stays_booting(api_key: str) -> None:
    with LambdaCloudStandIn(api_key, boot_polls=None) as api:
        instance_id = call(api, "POST", LAUNCH, launch_body())[2]["data"]["instance_ids"][0]
        statuses = {call(api, "GET", f"/api/v1/instances/{instance_id}")[2]["data"]["status"] for _ in range(5)}
    assert statuses == {"booting"}


def test_set_status_makes_an_instance_unhealthy(stand_in: LambdaCloudStandIn) -> None:
    instance_id = stand_in.add_instance("glm-node-1", B200, "us-east-1")
    stand_in.set_status(instance_id, "unhealthy")
    assert call(stand_in, "GET", f"/api/v1/instances/{instance_id}")[2]["data"]["status"] == "unhealthy"


def test_rate_limit_answers_the_next_requests_with_429_and_retry_after(stand_in: LambdaCloudStandIn) -> None:
    stand_in.rate_limit(times=2, retry_after=3)
    answers = [call(stand_in, "GET", "/api/v1/instances") for _ in range(3)]
    assert [status for status, _, _ in answers] == [429, 429, 200]
    assert answers[0][1]["Retry-After"] == "3"
    assert answers[0][2]["error"]["code"] == RATE_LIMIT_CODE


def test_launches_closer_than_the_launch_interval_are_rate_limited(api_key: str) -> None:
    with LambdaCloudStandIn(api_key, launch_interval_s=12, boot_polls=0) as api:
        assert call(api, "POST", LAUNCH, launch_body(name="a"))[0] == 200
        status, headers, document = call(api, "POST", LAUNCH, launch_body(name="b"))
    assert status == 429
    assert 1 <= int(headers["Retry-After"]) <= 12
    assert document["error"]["code"] == RATE_LIMIT_CODE


def test_no_capacity_fails_the_launch_and_leaves_the_region_out_of_instance_types(stand_in: LambdaCloudStandIn) -> None:
    stand_in.no_capacity(B200, "us-east-1")
    status, _, document = call(stand_in, "POST", LAUNCH, launch_body())
    assert status == 400
    conforms(stand_in, LAUNCH, "post", 400, document)
    assert document["error"]["code"] == "instance-operations/launch/insufficient-capacity"
    regions = call(stand_in, "GET", "/api/v1/instance-types")[2]["data"][B200]["regions_with_capacity_available"]
    assert [region["name"] for region in regions] == ["us-south-1"]
    assert call(stand_in, "POST", LAUNCH, launch_body(region_name="us-south-1"))[0] == 200


def test_a_launch_over_the_quota_is_refused(api_key: str) -> None:
    with LambdaCloudStandIn(api_key, quota_instances=1) as api:
        assert call(api, "POST", LAUNCH, launch_body(name="a"))[0] == 200
        status, _, document = call(api, "POST", LAUNCH, launch_body(name="b"))
        conforms(api, LAUNCH, "post", 400, document)
    assert status == 400
    assert document["error"]["code"] == "global/quota-exceeded"
    assert document["error"]["suggestion"] == "Contact Support to increase your quota."


def test_a_launch_body_against_the_request_schema_is_refused_naming_the_field(stand_in: LambdaCloudStandIn) -> None:
    body = launch_body(hostname="Not A Hostname")
    del body["ssh_key_names"]
    status, _, document = call(stand_in, "POST", LAUNCH, body)
    assert status == 400
    assert document["error"]["code"] == "global/invalid-parameters"
    assert "body.ssh_key_names: required" in document["error"]["suggestion"]
    assert "body.hostname" in document["error"]["suggestion"]
    status, _, document = call(stand_in, "POST", LAUNCH, launch_body(ssh_key_names=["a", "b"]))
    assert status == 400 and "exactly one SSH key" in document["error"]["suggestion"]


def test_unknown_instances_types_and_paths_are_the_described_not_founds(stand_in: LambdaCloudStandIn) -> None:
    status, _, document = call(stand_in, "GET", "/api/v1/instances/0123")
    assert status == 404
    conforms(stand_in, "/api/v1/instances/{id}", "get", 404, document)
    status, _, document = call(stand_in, "POST", LAUNCH, launch_body(instance_type_name="gpu_9x_imaginary"))
    assert status == 404 and "gpu_9x_imaginary" in document["error"]["message"]
    conforms(stand_in, LAUNCH, "post", 404, document)
    status, _, document = call(stand_in, "GET", "/api/v1/nothing-here")
    assert status == 404 and document["error"]["code"] == "global/not-found"


def test_fail_next_answers_a_provider_error(stand_in: LambdaCloudStandIn) -> None:
    stand_in.fail_next(503, "provider/internal-unavailable", message="Provider unavailable", suggestion="Try again")
    status, _, document = call(stand_in, "GET", "/api/v1/instances")
    assert status == 503 and document["error"]["code"] == "provider/internal-unavailable"
    assert call(stand_in, "GET", "/api/v1/instances")[0] == 200


def test_the_request_log_never_holds_the_key(stand_in: LambdaCloudStandIn) -> None:
    call(stand_in, "GET", "/api/v1/instances")
    call(stand_in, "GET", "/api/v1/instances", authorization="Bearer wrong")
    call(stand_in, "POST", LAUNCH, launch_body())
    assert [(record.method, record.status, record.authenticated) for record in stand_in.requests] == [
        ("GET", 200, True),
        ("GET", 401, False),
        ("POST", 200, True),
    ]
    assert stand_in._api_key not in repr(stand_in.requests)


def test_ssh_keys_filesystems_and_rulesets_answer_in_the_described_shape(stand_in: LambdaCloudStandIn) -> None:
    key = {"name": "glm-deploy", "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA glm"}
    rule = {"protocol": "tcp", "port_range": [22, 22], "source_network": "203.0.113.7/32", "description": "ssh"}
    answers = [
        ("/api/v1/ssh-keys", "post", *call(stand_in, "POST", "/api/v1/ssh-keys", key)),
        ("/api/v1/ssh-keys", "get", *call(stand_in, "GET", "/api/v1/ssh-keys")),
        ("/api/v1/ssh-keys", "post", *call(stand_in, "POST", "/api/v1/ssh-keys", {"name": "made"})),
        (
            "/api/v1/filesystems",
            "post",
            *call(stand_in, "POST", "/api/v1/filesystems", {"name": "w", "region": "us-east-1"}),
        ),
        ("/api/v1/file-systems", "get", *call(stand_in, "GET", "/api/v1/file-systems")),
        ("/api/v1/filesystems", "post", *call(stand_in, "POST", "/api/v1/filesystems", {"name": "9", "region": "x"})),
        (
            "/api/v1/firewall-rulesets",
            "post",
            *call(
                stand_in, "POST", "/api/v1/firewall-rulesets", {"name": "fw", "region": "us-east-1", "rules": [rule]}
            ),
        ),
        ("/api/v1/firewall-rulesets", "get", *call(stand_in, "GET", "/api/v1/firewall-rulesets")),
    ]
    for path, method, status, _, document in answers:
        conforms(stand_in, path, method, status, document)
    assert [answer[2] for answer in answers] == [200, 200, 200, 200, 200, 400, 200, 200]
    assert "private_key" in answers[2][4]["data"] and "private_key" not in answers[0][4]["data"]
    ruleset_id = answers[6][4]["data"]["id"]
    stand_in.add_instance("glm-1", B200, "us-east-1", firewall_ruleset_ids=[ruleset_id], file_system_names=["w"])
    status, _, document = call(stand_in, "DELETE", f"/api/v1/firewall-rulesets/{ruleset_id}")
    conforms(stand_in, "/api/v1/firewall-rulesets/{id}", "delete", status, document)
    assert document["error"]["code"] == "firewall-rulesets/firewall-ruleset-in-use"
    status, _, document = call(stand_in, "DELETE", f"/api/v1/filesystems/{answers[3][4]['data']['id']}")
    conforms(stand_in, "/api/v1/filesystems/{id}", "delete", status, document)
    assert document["error"]["code"] == "filesystems/filesystem-in-use"
