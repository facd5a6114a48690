"""The collection's Lambda Cloud client (module_utils/lambda_cloud_api.py) against the stand-in over real HTTP,
and its reading of recorded error answers: where the key comes from, 429s waited out within bounds, errors told by
the API's error.code, and the key in no message."""

from __future__ import annotations

import email.utils
import json
import time
from pathlib import Path
from typing import Any

import pytest
from tests.equipment.lambda_api import LambdaCloudStandIn, recorded

B200 = "gpu_8x_b200_sxm6"


def client_for(lambda_api: Any, api: LambdaCloudStandIn, key: str, **settings: Any) -> Any:
    """A client of the stand-in that records its waits instead of sleeping them."""
    slept: list[float] = []
    client = lambda_api.LambdaCloudClient(key, api_url=api.url, sleep=slept.append, **settings)
    client.slept = slept
    return client


# ------------------------------------------------------------------------------------------ the key


def test_the_key_comes_from_lambda_api_key(lambda_api: Any) -> None:
    assert lambda_api.api_key_from(environ={"LAMBDA_API_KEY": " abc123\n"}) == ("abc123", "LAMBDA_API_KEY")


def test_a_key_file_wins_over_the_environment(lambda_api: Any, tmp_path: Path) -> None:
    key_file = tmp_path / "lambda-key"
    key_file.write_text("from-file\nsecond line ignored\n")
    key, origin = lambda_api.api_key_from(str(key_file), environ={"LAMBDA_API_KEY": "from-env"})
    assert key == "from-file"
    assert origin == f"the key file {key_file} (option api_key_file)"


@pytest.mark.parametrize(
    ("key_file", "environ", "message"),
    [
        (None, {}, "no Lambda Cloud API key: set LAMBDA_API_KEY (or the option api_key_file, LAMBDA_API_KEY_FILE)"),
        (None, {"LAMBDA_API_KEY": "  "}, "no Lambda Cloud API key: set LAMBDA_API_KEY"),
        ("missing", {}, "cannot read the Lambda Cloud API key file {tmp}/missing (option api_key_file): No such file"),
        ("empty", {}, "the key file {tmp}/empty (option api_key_file) is empty"),
        (None, {"LAMBDA_API_KEY": "two words"}, "the Lambda Cloud API key in LAMBDA_API_KEY contains white space"),
    ],
)
def test_a_missing_or_unusable_key_says_where_to_put_one(
    lambda_api: Any, tmp_path: Path, key_file: str | None, environ: dict[str, str], message: str
) -> None:
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(lambda_api.LambdaApiError) as raised:
        lambda_api.api_key_from(str(tmp_path / key_file) if key_file else None, environ=environ)
    assert message.format(tmp=tmp_path) in str(raised.value)
    assert "two words" not in str(raised.value)


# ------------------------------------------------------------------------------------------ requests


def test_the_client_lists_instances_and_instance_types(
    lambda_api: Any, stand_in: LambdaCloudStandIn, api_key: str
) -> None:
    instance_id = stand_in.add_instance("glm-node-1", B200, "us-east-1")
    client = client_for(lambda_api, stand_in, api_key)
    assert [instance["id"] for instance in client.list_instances()] == [instance_id]
    assert client.get_instance(instance_id)["name"] == "glm-node-1"
    assert B200 in client.list_instance_types()
    assert api_key not in repr(client)


def test_429s_are_waited_out_for_retry_after_seconds(
    lambda_api: Any, stand_in: LambdaCloudStandIn, api_key: str
) -> None:
    stand_in.rate_limit(times=2, retry_after=3)
    client = client_for(lambda_api, stand_in, api_key)
    assert client.list_instances() == []
    assert client.slept == [3.0, 3.0]
    assert [record.status for record in stand_in.requests] == [429, 429, 200]


def test_429s_without_retry_after_back_off_exponentially_within_the_bound(
    lambda_api: Any, stand_in: LambdaCloudStandIn, api_key: str
) -> None:
    stand_in.rate_limit(times=4, retry_after=None)
    client = client_for(lambda_api, stand_in, api_key, rate_limit_max_wait=5)
    client.list_instances()
    assert client.slept == [1.0, 2.0, 4.0, 5.0]


def test_a_launch_rate_limited_by_the_api_is_retried_until_it_goes_through(lambda_api: Any, api_key: str) -> None:
    with LambdaCloudStandIn(api_key, launch_interval_s=1.5, boot_polls=0) as api:
        client = lambda_api.LambdaCloudClient(api_key, api_url=api.url)
        body = {"region_name": "us-east-1", "instance_type_name": B200, "ssh_key_names": ["k"]}
        started = time.monotonic()
        ids = [client.request("POST", "/api/v1/instance-operations/launch", body)["instance_ids"] for _ in range(2)]
        elapsed = time.monotonic() - started
    assert len({tuple(found) for found in ids}) == 2
    limited = [record for record in api.requests if record.status == 429]
    assert limited and len(client.rate_limit_waits) == len(limited)
    assert {seconds for _, _, seconds in client.rate_limit_waits} == {1.0}
    assert 1.5 <= elapsed < 10


def test_retries_are_bounded(lambda_api: Any, stand_in: LambdaCloudStandIn, api_key: str) -> None:
    stand_in.rate_limit(times=10, retry_after=1)
    client = client_for(lambda_api, stand_in, api_key, rate_limit_retries=3)
    with pytest.raises(lambda_api.LambdaApiError) as raised:
        client.list_instances()
    assert client.slept == [1.0, 1.0, 1.0]
    assert str(raised.value) == (
        "the Lambda Cloud API still rate-limits GET /api/v1/instances (HTTP 429, global/rate-limit-exceeded) after "
        "3 retries over 3 s; it allows about one request per second (a launch: one per 12 s): run fewer clients "
        "with this key, or raise rate_limit_retries"
    )
    assert raised.value.status == 429


def test_a_retry_after_over_the_bound_fails_at_once(
    lambda_api: Any, stand_in: LambdaCloudStandIn, api_key: str
) -> None:
    stand_in.rate_limit(times=1, retry_after=600)
    client = client_for(lambda_api, stand_in, api_key, rate_limit_max_wait=60)
    with pytest.raises(lambda_api.LambdaApiError, match=r"asks to wait 600 s, more than rate_limit_max_wait \(60 s\)"):
        client.list_instances()
    assert client.slept == []


def test_a_wrong_key_is_named_by_where_it_came_from_and_never_shown(
    lambda_api: Any, stand_in: LambdaCloudStandIn, tmp_path: Path
) -> None:
    wrong = "wrong_" + "k" * 40
    client = client_for(lambda_api, stand_in, wrong)
    with pytest.raises(lambda_api.LambdaApiError) as raised:
        client.list_instances()
    assert raised.value.code == "global/invalid-api-key" and raised.value.status == 401
    message = str(raised.value)
    assert message == (
        "the Lambda Cloud API refused the API key from LAMBDA_API_KEY (global/invalid-api-key: API key was invalid, "
        "expired, or deleted. Check your API key or create a new one, then try again.); set LAMBDA_API_KEY to a "
        "valid key from https://cloud.lambda.ai/api-keys"
    )
    origin = f"the key file {tmp_path}/key (option api_key_file)"
    from_file = client_for(lambda_api, stand_in, wrong, key_origin=origin)
    with pytest.raises(lambda_api.LambdaApiError) as raised:
        from_file.list_instances()
    assert f"refused the API key from {origin}" in str(raised.value)
    assert "put in that file a valid key" in str(raised.value)
    assert wrong not in message and wrong not in str(raised.value)


def test_errors_are_told_by_their_code(lambda_api: Any, stand_in: LambdaCloudStandIn, api_key: str) -> None:
    client = client_for(lambda_api, stand_in, api_key)
    launch = "/api/v1/instance-operations/launch"
    body = {"region_name": "us-east-1", "instance_type_name": B200, "ssh_key_names": ["k"]}
    stand_in.no_capacity(B200)
    with pytest.raises(lambda_api.LambdaApiError) as raised:
        client.request("POST", launch, body)
    assert raised.value.code == "instance-operations/launch/insufficient-capacity"
    assert "GET /api/v1/instance-types lists the regions with capacity" in str(raised.value)

    with pytest.raises(lambda_api.LambdaApiError) as raised:
        client.get_instance("0" * 32)
    assert str(raised.value) == (
        f"the Lambda Cloud API refused GET /api/v1/instances/{'0' * 32} (HTTP 404, global/object-does-not-exist: "
        "Specified instance does not exist.); check the name or id: it does not exist in this account"
    )


def test_an_unreachable_api_is_named_with_its_url(lambda_api: Any, api_key: str) -> None:
    with LambdaCloudStandIn(api_key) as api:
        url = api.url
    client = lambda_api.LambdaCloudClient(api_key, api_url=url, timeout=5)
    with pytest.raises(lambda_api.LambdaApiError, match=rf"cannot reach the Lambda Cloud API at {url} \(GET"):
        client.list_instances()


# ------------------------------------------------------------------------------------------ recorded answers


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "quota-exceeded",
            "the Lambda Cloud API refused POST /api/v1/instance-operations/launch (HTTP 400, global/quota-exceeded: "
            "Quota exceeded. Contact Support to increase your quota.); ask Lambda Support to raise the quota, or "
            "terminate instances you no longer need",
        ),
        (
            "provider-unavailable",
            "an upstream provider of Lambda Cloud failed POST /api/v1/instance-operations/launch (HTTP 503, "
            "provider/internal-unavailable: Provider unavailable Try again shortly); try again shortly",
        ),
        (
            "account-inactive",
            "the Lambda Cloud API refused POST /api/v1/instance-operations/launch (HTTP 403, global/account-inactive: "
            "Your account is inactive. Make sure you have verified your email address and have a valid payment "
            "method. Contact Support if problems continue.); verify the account's email address and payment method "
            "in the Lambda Cloud console",
        ),
    ],
)
def test_recorded_error_answers_read_as_one_line_by_code(lambda_api: Any, name: str, expected: str) -> None:
    answer = recorded("errors.json")[name]
    body = json.dumps(answer["body"]).encode()
    error = lambda_api.error_from_answer(
        "POST", "/api/v1/instance-operations/launch", answer["status"], body, "LAMBDA_API_KEY"
    )
    assert str(error) == expected
    assert error.code == answer["body"]["error"]["code"]
    assert "\n" not in str(error)


def test_an_answer_without_a_lambda_error_body_is_quoted_briefly(lambda_api: Any) -> None:
    error = lambda_api.error_from_answer("GET", "/api/v1/instances", 502, b"<html>Bad gateway</html>" * 40, "X")
    assert str(error).startswith("the Lambda Cloud API answered GET /api/v1/instances with HTTP 502 and no Lambda")
    assert len(str(error)) < 320 and error.code is None


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("7", 7.0), ("0", 0.0), (None, None), ("soon", None), ("-3", None)],
)
def test_retry_after_in_seconds(lambda_api: Any, header: str | None, seconds: float | None) -> None:
    assert lambda_api.retry_after_seconds(header) == seconds


def test_retry_after_as_an_http_date(lambda_api: Any) -> None:
    now = 1_700_000_000.0
    header = email.utils.formatdate(now + 30, usegmt=True)
    assert lambda_api.retry_after_seconds(header, now=now) == pytest.approx(30.0)
    assert lambda_api.retry_after_seconds(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
