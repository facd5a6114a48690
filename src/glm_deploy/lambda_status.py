"""The Lambda Cloud part of `glm-deploy status`: each instance's type, region, uptime and hourly price.

Prices come from GET /api/v1/instance-types (`price_cents_per_hour`), the instances from GET /api/v1/instances,
both through the collection's own client (module_utils/lambda_cloud_api.py: the same 429 handling, error codes
and key hygiene as the inventory plugin and the modules). Lambda's Instance object carries no launch time, so the
uptime is the controller's: `glm-deploy up` records when it launched each instance (`lambda-launches.json` in the
state folder, from the lambda_instance results: the time of the result less the boot and SSH waits), `down`
forgets the ones it terminated. An instance this controller did not launch shows no uptime, only since when it
has been seen.

The section appears when the inventory is a glm.deploy.lambda_cloud one (a `*lambda_cloud.yml` configuration) or
`up` recorded launches in the state folder. The key comes from LAMBDA_API_KEY or the file LAMBDA_API_KEY_FILE
names, and the API from LAMBDA_API_URL (default Lambda's).
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from glm_deploy import paths
from glm_deploy.errors import GlmDeployError
from glm_deploy.progress import human_duration
from glm_deploy.run_events import RunEvent, utc_time

LAUNCHES_FILE = "lambda-launches.json"
CONFIG_ENDINGS = ("lambda_cloud.yml", "lambda_cloud.yaml")
# States in which Lambda bills an instance (its OpenAPI description: terminated and preempted ones do not run).
BILLED = ("booting", "active", "unhealthy", "terminating")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


# --------------------------------------------------------------------------------- what `up` recorded


def read_launches(state_dir: Path) -> dict[str, dict[str, Any]]:
    """{instance id: {name, launched_at | None, seen_at}} as `up` recorded them; empty when none (or unreadable)."""
    try:
        data = json.loads((state_dir / LAUNCHES_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(key): dict(value) for key, value in data.items() if isinstance(value, dict)} if isinstance(
        data, dict
    ) else {}


def _write_launches(state_dir: Path, launches: Mapping[str, Mapping[str, Any]]) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / LAUNCHES_FILE
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(launches, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    temporary.replace(path)


def record_launches(
    state_dir: Path, events: Iterable[Mapping[str, Any]], *, now: datetime.datetime | None = None
) -> dict[str, dict[str, Any]]:
    """Record the instances an `up` run's lambda_instance results name. One it launched gets `launched_at`: the
    time of its result less the boot and SSH waits (the module reports both). One already there keeps what was
    recorded first; one it found running is `seen_at` only. Returns the records."""
    launches = read_launches(state_dir)
    moment = now or _now()
    for event in events:
        typed = RunEvent.of(event)
        result = typed.result
        instance = result.get("instance")
        if not isinstance(instance, Mapping) or not instance.get("id"):
            continue
        reported = typed.created_at() or moment
        record = launches.setdefault(
            str(instance["id"]), {"name": instance.get("name"), "launched_at": None, "seen_at": reported.isoformat()}
        )
        if result.get("launched") and not record.get("launched_at"):
            waited = float(result.get("boot_wait_s") or 0) + float(result.get("ssh_wait_s") or 0)
            record["launched_at"] = (reported - datetime.timedelta(seconds=waited)).isoformat()
    _write_launches(state_dir, launches)
    return launches


def forget_launches(state_dir: Path, instance_ids: Iterable[str]) -> None:
    """Drop the records of terminated instances (after `down`)."""
    launches = read_launches(state_dir)
    gone = [key for key in instance_ids if key in launches]
    if gone:
        for key in gone:
            del launches[key]
        _write_launches(state_dir, launches)


# ------------------------------------------------------------------------------------------ the listing


@dataclass(frozen=True)
class CloudInstance:
    """One instance as `status` shows it."""

    name: str
    id: str
    status: str
    instance_type: str | None
    region: str | None
    price_cents_per_hour: int | None
    # From `up`'s record: when this controller launched it (None: not launched here), or first saw it.
    launched_at: str | None
    seen_at: str | None
    uptime_s: float | None

    @property
    def billed(self) -> bool:
        return self.status in BILLED


@dataclass(frozen=True)
class CloudStatus:
    """The Lambda instances of this deployment, with what they cost per hour while they run."""

    instances: list[CloudInstance] = field(default_factory=list)
    error: str | None = None

    @property
    def hourly_cents(self) -> int:
        """What the billed instances cost per hour (those without a known price count 0)."""
        return sum(instance.price_cents_per_hour or 0 for instance in self.instances if instance.billed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "instances": [asdict(instance) for instance in self.instances],
            "hourly_cents": self.hourly_cents,
            "error": self.error,
        }


def cloud_status(
    instances: Sequence[Mapping[str, Any]],
    instance_types: Mapping[str, Any],
    launches: Mapping[str, Mapping[str, Any]],
    name_prefixes: Sequence[str],
    *,
    now: datetime.datetime | None = None,
) -> CloudStatus:
    """The instances (GET /instances) whose name starts with one of `name_prefixes` (the Lambda inventory's) or
    that `up` recorded, not
    terminated, in name order, each with the price of its type from GET /instance-types and its uptime from
    `launches`."""
    moment = now or _now()
    prices = {
        str(name): ((item or {}).get("instance_type") or {}).get("price_cents_per_hour")
        for name, item in instance_types.items()
        if isinstance(item, Mapping)
    }
    shown: list[CloudInstance] = []
    for instance in instances:
        instance_id = str(instance.get("id") or "")
        name = str(instance.get("name") or "")
        ours = instance_id in launches or any(name.startswith(prefix) for prefix in name_prefixes if prefix)
        if not ours or instance.get("status") == "terminated":
            continue
        type_name = (instance.get("instance_type") or {}).get("name")
        record = launches.get(instance_id) or {}
        launched = utc_time(record.get("launched_at"))
        price = prices.get(str(type_name))
        shown.append(
            CloudInstance(
                name=name,
                id=instance_id,
                status=str(instance.get("status")),
                instance_type=type_name,
                region=(instance.get("region") or {}).get("name"),
                price_cents_per_hour=int(price) if isinstance(price, int) else None,
                launched_at=record.get("launched_at"),
                seen_at=record.get("seen_at"),
                uptime_s=max(0.0, (moment - launched).total_seconds()) if launched else None,
            )
        )
    return CloudStatus(instances=sorted(shown, key=lambda item: (item.name, item.id)))


def describe(cloud: CloudStatus) -> list[str]:
    """The status lines of the Lambda section."""
    lines = ["Lambda Cloud instances (hourly prices from GET /api/v1/instance-types):"]
    if cloud.error:
        return [*lines, f"  cannot list them: {cloud.error}"]
    if not cloud.instances:
        return [*lines, "  none running"]
    for instance in cloud.instances:
        price = (
            f"${instance.price_cents_per_hour / 100:.2f}/h" if instance.price_cents_per_hour is not None else "price ?"
        )
        if instance.uptime_s is not None:
            uptime = f"up {human_duration(instance.uptime_s)} (launched {instance.launched_at})"
        elif instance.seen_at:
            uptime = f"uptime unknown (not launched by this controller; seen since {instance.seen_at})"
        else:
            uptime = "uptime unknown (not launched by this controller's glm-deploy up)"
        lines.append(
            f"  {instance.name} ({instance.id}): {instance.status}, {instance.instance_type} in {instance.region}, "
            f"{uptime}, {price}"
        )
    billed = [instance for instance in cloud.instances if instance.billed]
    lines.append(f"  billing now: ${cloud.hourly_cents / 100:.2f}/h for {len(billed)} instance(s)")
    return lines


# ------------------------------------------------------------------------------------------- the API


def _collection_client_module() -> ModuleType:
    """The collection's module_utils/lambda_cloud_api.py, loaded from its file (it imports nothing of the
    collection, only Ansible's URL helper)."""
    name = "glm_deploy._collection_lambda_cloud_api"
    if name in sys.modules:
        return sys.modules[name]
    path = paths.collection_dir() / "plugins" / "module_utils" / "lambda_cloud_api.py"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise GlmDeployError(f"cannot load the collection's Lambda client from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[name] = module
    return module


def name_prefixes(inventory: Path) -> list[str]:
    """The name_prefix of each glm.deploy.lambda_cloud configuration of `inventory` (a file or a folder); empty
    when it has none (a static inventory)."""
    files = sorted(inventory.iterdir()) if inventory.is_dir() else [inventory]
    prefixes = []
    for config in files:
        if not config.name.endswith(CONFIG_ENDINGS):
            continue
        try:
            data = yaml.safe_load(config.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(data, dict):
            prefixes.append(str(data.get("name_prefix") or ""))
    return prefixes


def status_for(
    inventory: Path,
    state_dir: Path,
    *,
    environ: Mapping[str, str] | None = None,
    client: Any = None,
    now: datetime.datetime | None = None,
) -> CloudStatus | None:
    """The Lambda section of `status`, or None when neither the inventory nor `up`'s record is Lambda's. An API
    that cannot be asked (no key, an error) makes a section with its `error`, not a failed status."""
    prefixes = name_prefixes(inventory)
    launches = read_launches(state_dir)
    if not prefixes and not launches:
        return None
    environ = os.environ if environ is None else environ
    try:
        api = _collection_client_module()
    except (ImportError, OSError, GlmDeployError) as error:
        return CloudStatus(error=f"cannot load the collection's Lambda client: {error}")
    try:
        if client is None:
            key, origin = api.api_key_from(environ.get("LAMBDA_API_KEY_FILE") or None, environ=environ)
            client = api.LambdaCloudClient(
                key, key_origin=origin, api_url=environ.get("LAMBDA_API_URL") or api.DEFAULT_API_URL
            )
        instances = client.list_instances()
        instance_types = client.list_instance_types()
    except api.LambdaApiError as error:
        return CloudStatus(error=" ".join(str(error).split()))
    return cloud_status(instances, instance_types, launches, prefixes, now=now)
