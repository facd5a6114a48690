"""A stand-in for the Lambda Cloud API: a real HTTP server (http.server in a thread of the test's process) that
answers the paths of Lambda's OpenAPI description as the description says, keeps instances through their states,
and fails on purpose when a test asks.

Built from `tests/fixtures/lambda/openapi-subset.json`, the part of Lambda's description it serves (copied
unchanged, its version in `info`):

- paths: `GET /api/v1/instances`, `GET /api/v1/instances/{id}`, `GET /api/v1/instance-types`,
  `POST /api/v1/instance-operations/launch` and `POST /api/v1/instance-operations/terminate`, and the SSH key,
  filesystem and firewall ruleset paths of `tests/equipment/lambda_api_resources.py`; any other path is a 404
  `global/not-found`;
- authentication as `components.securitySchemes` says: `Authorization: Bearer <key>`, `Basic <base64 of key:>` or
  `Basic <key>`; anything else is a 401 `global/invalid-api-key`;
- answers `{"data": ...}` with the fields of the `Instance`, `InstanceTypes`, `InstanceLaunchResponse` and
  `InstanceTerminateResponse` schemas, and errors `{"error": {"code", "message", "suggestion"}}` with the codes,
  default messages and suggestions of the `ApiError*` schemas;
- a launch or terminate body is checked against the operation's request schema (a 400 `global/invalid-parameters`
  names the field).

States: a launched instance is `booting` for `boot_polls` answers that show it (GET of the list or of the
instance), then `active` (`boot_polls=None`: it never boots); a terminated one is `terminating` for
`terminate_polls` answers, then `terminated`. A booting instance has no address yet; an active one gets the public
and private address `addresses` assigns (by default 198.51.100.N and 10.19.0.N, documentation and private ranges).
Terminated instances stay listed (as `terminated`), so a client's status filter is exercised. `set_status` puts an
instance in any state (`unhealthy`, `preempted`).

Faults: `rate_limit(times, retry_after)` answers the next `times` requests with 429 (before authentication, as a
rate limiter in front of the API would); `launch_interval_s` rate-limits launches closer together than that
(Lambda: one per 12 s); `no_capacity(instance_type, region)` makes launches fail with
`instance-operations/launch/insufficient-capacity` and drops the region from `regions_with_capacity_available`;
`quota_instances` caps the instances that are not terminated (`global/quota-exceeded`); `fail_next(status, code)`
answers any error (for instance 503 `provider/internal-unavailable`, the description's example of a provider error).
Lambda's description gives no body for a 429: the stand-in answers in the common error shape with the code
`global/rate-limit-exceeded`, its own choice, so a client must key on the status, as it should.

`requests` records every request (method, path, status, whether it was authenticated, the JSON body) and never
the Authorization header, so nothing a test keeps holds the key.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.equipment.lambda_api_resources import AccountResources
from tests.equipment.openapi_check import OpenApi

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "lambda"
SPEC_FILE = FIXTURES / "openapi-subset.json"
RATE_LIMIT_CODE = "global/rate-limit-exceeded"

REGIONS = {
    "us-east-1": "Virginia, USA",
    "us-west-1": "California, USA",
    "us-south-1": "Texas, USA",
}


@dataclasses.dataclass
class InstanceTypeOffer:
    """One entry of GET /instance-types (the prices and specs are made up for the tests)."""

    name: str
    description: str
    gpu_description: str
    price_cents_per_hour: int
    vcpus: int
    memory_gib: int
    storage_gib: int
    gpus: int
    regions: list[str]

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "gpu_description": self.gpu_description,
            "price_cents_per_hour": self.price_cents_per_hour,
            "specs": {
                "vcpus": self.vcpus,
                "memory_gib": self.memory_gib,
                "storage_gib": self.storage_gib,
                "gpus": self.gpus,
            },
        }


def default_offers() -> list[InstanceTypeOffer]:
    """The types the glm-deploy catalog knows on Lambda, and one it does not (a small dev box)."""
    return [
        InstanceTypeOffer(
            "gpu_8x_b200_sxm6",
            "8x B200 (180 GB SXM6)",
            "B200 (180 GB SXM6)",
            3992,
            208,
            2900,
            22000,
            8,
            ["us-east-1", "us-south-1"],
        ),
        InstanceTypeOffer(
            "gpu_8x_h100_sxm5",
            "8x H100 (80 GB SXM5)",
            "H100 (80 GB SXM5)",
            2392,
            208,
            1800,
            22000,
            8,
            ["us-east-1", "us-west-1"],
        ),
        InstanceTypeOffer("gpu_1x_a10", "1x A10 (24 GB PCIe)", "A10 (24 GB PCIe)", 75, 30, 200, 1400, 1, ["us-west-1"]),
    ]


@dataclasses.dataclass
class StandInInstance:
    id: str
    name: str
    instance_type: str
    region: str
    status: str = "active"
    ip: str | None = None
    private_ip: str | None = None
    ssh_key_names: list[str] = dataclasses.field(default_factory=lambda: ["glm-deploy"])
    file_system_names: list[str] = dataclasses.field(default_factory=list)
    hostname: str | None = None
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    firewall_ruleset_ids: list[str] = dataclasses.field(default_factory=list)
    jupyter_token: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)
    # answers that showed the instance in its current status
    polls: int = 0


@dataclasses.dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    status: int
    authenticated: bool
    body: Any


@dataclasses.dataclass
class _Failure:
    status: int
    code: str
    message: str
    suggestion: str | None
    times: int
    retry_after: str | None = None


def recorded(name: str) -> Any:
    """A recorded answer (or answers) of the API under tests/fixtures/lambda/, written from the description's
    examples."""
    return json.loads((FIXTURES / name).read_text())


def _default_addresses(number: int) -> tuple[str, str]:
    return f"198.51.100.{number}", f"10.19.0.{number}"


class LambdaCloudStandIn:
    """`with LambdaCloudStandIn(api_key="...") as api:` serves at `api.url` (give it as the client's api_url)."""

    def __init__(
        self,
        api_key: str,
        *,
        offers: list[InstanceTypeOffer] | None = None,
        boot_polls: int | None = 1,
        terminate_polls: int = 1,
        launch_interval_s: float = 0.0,
        quota_instances: int | None = None,
        addresses: Callable[[int], tuple[str, str]] = _default_addresses,
    ) -> None:
        self.api = OpenApi(json.loads(SPEC_FILE.read_text()))
        self._api_key = api_key
        self.offers = {offer.name: offer for offer in (offers if offers is not None else default_offers())}
        self.boot_polls = boot_polls
        self.terminate_polls = terminate_polls
        self.launch_interval_s = launch_interval_s
        self.quota_instances = quota_instances
        self._addresses = addresses
        self._numbers = itertools.count(10)
        self._lock = threading.Lock()
        self._instances: dict[str, StandInInstance] = {}
        self._failures: list[_Failure] = []
        self._no_capacity: set[tuple[str, str | None]] = set()
        self._last_launch: float | None = None
        self.requests: list[RequestRecord] = []
        self._server: ThreadingHTTPServer | None = None
        # SSH keys, filesystems and firewall rulesets (tests/equipment/lambda_api_resources.py)
        self.resources = AccountResources(self)

    # ------------------------------------------------------------------------------------ serving

    @property
    def url(self) -> str:
        assert self._server is not None, "start the stand-in first (use it as a context manager)"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> LambdaCloudStandIn:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="lambda-stand-in", daemon=True
        ).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------------------------------ what tests arrange

    def add_instance(self, name: str, instance_type: str, region: str, *, status: str = "active", **fields: Any) -> str:
        """An instance as if launched earlier (no launch request, no rate limit); its id."""
        with self._lock:
            instance = StandInInstance(
                id=uuid.uuid4().hex, name=name, instance_type=instance_type, region=region, status=status, **fields
            )
            if status != "booting" and instance.ip is None:
                instance.ip, instance.private_ip = self._addresses(next(self._numbers))
            self._instances[instance.id] = instance
            return instance.id

    def instances(self) -> list[StandInInstance]:
        """Copies of every instance, in the order they were made."""
        with self._lock:
            return copy.deepcopy(list(self._instances.values()))

    def instance(self, instance_id: str) -> StandInInstance:
        with self._lock:
            return copy.deepcopy(self._instances[instance_id])

    def set_status(self, instance_id: str, status: str) -> None:
        with self._lock:
            self._instances[instance_id].status = status
            self._instances[instance_id].polls = 0

    def rate_limit(self, times: int, retry_after: int | str | None = 1) -> None:
        """The next `times` requests are answered 429, with `Retry-After: retry_after` unless None."""
        self.fail_next(
            429,
            RATE_LIMIT_CODE,
            times=times,
            message="Too many requests.",
            suggestion="Slow down, then try again.",
            retry_after=retry_after,
        )

    def fail_next(
        self,
        status: int,
        code: str,
        *,
        times: int = 1,
        message: str = "Injected failure.",
        suggestion: str | None = None,
        retry_after: int | str | None = None,
    ) -> None:
        with self._lock:
            self._failures.append(
                _Failure(status, code, message, suggestion, times, None if retry_after is None else str(retry_after))
            )

    def no_capacity(self, instance_type: str, region: str | None = None) -> None:
        """Launches of `instance_type` (in `region`, or anywhere) fail for want of capacity."""
        with self._lock:
            self._no_capacity.add((instance_type, region))

    # ------------------------------------------------------------------------------------ answering

    def answer(self, method: str, target: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], Any]:
        """(status, extra headers, JSON document) for one request; records it."""
        path = urlsplit(target).path
        parsed: Any = None
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = body.decode("utf-8", "replace")
        authenticated = self._authenticated(headers.get("authorization", ""))
        with self._lock:
            status, extra, document = self._answer(method, path, parsed, authenticated)
            self.requests.append(RequestRecord(method, path, status, authenticated, parsed))
        return status, extra, document

    def _authenticated(self, header: str) -> bool:
        scheme, _, credentials = header.partition(" ")
        credentials = credentials.strip()
        if scheme.lower() == "bearer":
            return credentials == self._api_key
        if scheme.lower() == "basic":
            if credentials == self._api_key:
                return True
            try:
                decoded = base64.b64decode(credentials, validate=True).decode()
            except ValueError:
                return False
            return decoded in (f"{self._api_key}:", self._api_key)
        return False

    def _answer(self, method: str, path: str, body: Any, authenticated: bool) -> tuple[int, dict[str, str], Any]:
        if self._failures:
            failure = self._failures[0]
            failure.times -= 1
            if failure.times <= 0:
                self._failures.pop(0)
            extra = {"Retry-After": failure.retry_after} if failure.retry_after is not None else {}
            return failure.status, extra, _error(failure.code, failure.message, failure.suggestion)
        if not authenticated:
            return self._spec_error(401, "ApiErrorUnauthorized")
        if method == "GET" and path == "/api/v1/instances":
            return 200, {}, {"data": [self._shown(instance) for instance in self._instances.values()]}
        if method == "GET" and path.startswith("/api/v1/instances/") and path.count("/") == 4:
            instance = self._instances.get(path.rsplit("/", 1)[1])
            if instance is None:
                return self._spec_error(404, "ApiErrorInstanceNotFound")
            return 200, {}, {"data": self._shown(instance)}
        if method == "GET" and path == "/api/v1/instance-types":
            return 200, {}, {"data": self._instance_types()}
        if method == "POST" and path == "/api/v1/instance-operations/launch":
            return self._launch(path, body)
        if method == "POST" and path == "/api/v1/instance-operations/terminate":
            return self._terminate(path, body)
        served = self.resources.answer(method, path, body)
        if served is not None:
            return served
        return self._spec_error(404, "ApiErrorNotFound")

    def _spec_error(
        self, status: int, schema_name: str, message: str | None = None, suggestion: str | None = None
    ) -> tuple[int, dict[str, str], Any]:
        """An error as the description's schema `schema_name` gives it: its code, and its default message and
        suggestion unless the answer needs its own."""
        properties = self.api.schema(schema_name)["properties"]
        return (
            status,
            {},
            _error(
                properties["code"]["const"],
                message or properties["message"].get("default", "Error."),
                suggestion or properties["suggestion"].get("default"),
            ),
        )

    def _invalid(self, path: str, body: Any, method: str = "POST") -> tuple[int, dict[str, str], Any] | None:
        problems = self.api.problems(body, self.api.request_schema(path, method))
        if not problems:
            return None
        return self._spec_error(400, "ApiErrorInvalidParameters", suggestion="; ".join(problems))

    def _launch(self, path: str, body: Any) -> tuple[int, dict[str, str], Any]:
        now = time.monotonic()
        if self._last_launch is not None and now - self._last_launch < self.launch_interval_s:
            wait = self.launch_interval_s - (now - self._last_launch)
            return (
                429,
                {"Retry-After": str(max(1, round(wait)))},
                _error(RATE_LIMIT_CODE, "Too many launch requests.", "Launch at most once every 12 seconds."),
            )
        invalid = self._invalid(path, body)
        if invalid is not None:
            return invalid
        if len(body["ssh_key_names"]) != 1:
            return self._spec_error(
                400, "ApiErrorInvalidParameters", suggestion="Currently, exactly one SSH key must be specified."
            )
        offer = self.offers.get(body["instance_type_name"])
        if offer is None or body["region_name"] not in REGIONS:
            missing = "instance type" if offer is None else "region"
            value = body["instance_type_name"] if offer is None else body["region_name"]
            return self._spec_error(
                404,
                "ApiErrorLaunchResourceNotFound",
                message=f"The {missing} {value!r} does not exist.",
                suggestion="GET /api/v1/instance-types lists the instance types and regions.",
            )
        self._last_launch = now
        region = body["region_name"]
        if {(offer.name, None), (offer.name, region)} & self._no_capacity or region not in offer.regions:
            return self._spec_error(400, "ApiErrorInsufficientCapacity")
        alive = [instance for instance in self._instances.values() if instance.status != "terminated"]
        if self.quota_instances is not None and len(alive) >= self.quota_instances:
            return self._spec_error(400, "ApiErrorQuotaExceeded")
        instance = StandInInstance(
            id=uuid.uuid4().hex,
            name=body.get("name", ""),
            instance_type=offer.name,
            region=region,
            status="booting" if self.boot_polls != 0 else "active",
            ssh_key_names=list(body["ssh_key_names"]),
            file_system_names=list(body.get("file_system_names", [])),
            hostname=body.get("hostname"),
            tags={tag["key"]: tag["value"] for tag in body.get("tags", [])},
            firewall_ruleset_ids=[entry["id"] for entry in body.get("firewall_rulesets", [])],
        )
        if instance.status == "active":
            instance.ip, instance.private_ip = self._addresses(next(self._numbers))
        self._instances[instance.id] = instance
        return 200, {}, {"data": {"instance_ids": [instance.id]}}

    def _terminate(self, path: str, body: Any) -> tuple[int, dict[str, str], Any]:
        invalid = self._invalid(path, body)
        if invalid is not None:
            return invalid
        targets = [self._instances.get(instance_id) for instance_id in body["instance_ids"]]
        if any(instance is None or instance.status == "terminated" for instance in targets):
            return self._spec_error(404, "ApiErrorInstanceNotFound")
        shown = []
        for instance in targets:
            assert instance is not None
            if instance.status != "terminating":
                instance.status, instance.polls = "terminating", 0
            shown.append(self._json(instance))
        return 200, {}, {"data": {"terminated_instances": shown}}

    def _instance_types(self) -> dict[str, Any]:
        return {
            offer.name: {
                "instance_type": offer.as_json(),
                "regions_with_capacity_available": [
                    {"name": region, "description": REGIONS[region]}
                    for region in offer.regions
                    if not {(offer.name, None), (offer.name, region)} & self._no_capacity
                ],
            }
            for offer in self.offers.values()
        }

    def _shown(self, instance: StandInInstance) -> dict[str, Any]:
        """The instance as an answer shows it now; then one step on through its states."""
        shown = self._json(instance)
        instance.polls += 1
        if instance.status == "booting" and self.boot_polls is not None and instance.polls >= self.boot_polls:
            instance.status, instance.polls = "active", 0
            if instance.ip is None:
                instance.ip, instance.private_ip = self._addresses(next(self._numbers))
        elif instance.status == "terminating" and instance.polls >= self.terminate_polls:
            instance.status, instance.polls = "terminated", 0
        return shown

    def _json(self, instance: StandInInstance) -> dict[str, Any]:
        offer = self.offers[instance.instance_type]
        launched = instance.status not in ("booting",)
        ending = instance.status in ("terminating", "terminated")
        reason = "vm-is-terminating" if ending else "vm-has-not-launched"
        action = {"available": True} if launched and not ending else {"available": False, "reason_code": reason}
        document: dict[str, Any] = {
            "id": instance.id,
            "name": instance.name,
            "status": instance.status,
            "ssh_key_names": list(instance.ssh_key_names),
            "file_system_names": list(instance.file_system_names),
            "region": {"name": instance.region, "description": REGIONS.get(instance.region, instance.region)},
            "instance_type": offer.as_json(),
            "jupyter_token": instance.jupyter_token,
            "jupyter_url": f"https://jupyter-{instance.id}.lambdaspaces.com/?token={instance.jupyter_token}",
            "actions": {name: dict(action) for name in ("migrate", "rebuild", "restart", "cold_reboot", "terminate")},
            "tags": [{"key": key, "value": value} for key, value in instance.tags.items()],
            "firewall_rulesets": [{"id": ruleset} for ruleset in instance.firewall_ruleset_ids],
        }
        if instance.file_system_names:
            document["file_system_mounts"] = [
                {"mount_point": f"/lambda/nfs/{name}", "file_system_id": uuid.uuid5(uuid.NAMESPACE_DNS, name).hex}
                for name in instance.file_system_names
            ]
        if instance.ip is not None and launched:
            document["ip"] = instance.ip
            document["hostname"] = instance.hostname or instance.ip
        if instance.private_ip is not None and launched:
            document["private_ip"] = instance.private_ip
        return document


def _error(code: str, message: str, suggestion: str | None) -> dict[str, Any]:
    error = {"code": code, "message": message}
    if suggestion:
        error["suggestion"] = suggestion
    return {"error": error}


def _handler_for(stand_in: LambdaCloudStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {name.lower(): value for name, value in self.headers.items()}
            status, extra, document = stand_in.answer(self.command, self.path, headers, body)
            payload = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the test reads `requests`; a log line per request would only be noise

    return Handler
