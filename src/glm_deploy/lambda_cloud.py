"""Lambda Cloud as code from Python: `up` (the SSH key, filesystem, firewall ruleset and instances, then the
deployment onto them) and `down` (terminate; keep the filesystem unless asked), through ansible-runner like every
other run (`glm_deploy.runner`), and the cost guard of `up --max-hours`: a systemd timer on the controller that runs
`glm-deploy down` when the hours are over.

The Lambda API key comes from LAMBDA_API_KEY or a key file. ansible-runner never sees it in the environment (the
runner drops every variable that looks like a secret, since it writes the environment into its artifacts): the key
goes into a mode-0600 file in a private folder for the run, named to the playbook by LAMBDA_API_KEY_FILE (a path,
no secret) and removed when the run ends. The timer's service reads the key from an EnvironmentFile or a key file,
never from its own text.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glm_deploy import paths, schedule
from glm_deploy.errors import InputError
from glm_deploy.run_events import RunEvent
from glm_deploy.runner import EventHandler, PlaybookRunner, RunResult
from glm_deploy.systemd_text import specifiers_literal, systemd_command_line
from glm_deploy.validation import check_pattern, clip

API_KEY_ENV = "LAMBDA_API_KEY"
API_URL_ENV = "LAMBDA_API_URL"
DEFAULT_INVENTORY = "inventories/lambda_cloud"
REGION = re.compile(r"[a-z]+(-[a-z]+)+-[0-9]+")
INSTANCE_TYPE = re.compile(r"[a-z0-9]+(_[a-z0-9]+)+")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,40}")
FILESYSTEM = re.compile(r"[a-zA-Z]+[0-9a-zA-Z-]{0,59}")
MAX_HOURS = 24 * 30


@dataclass(frozen=True)
class LambdaUp:
    """What `up` launches; checked by `check()` before anything runs."""

    region: str
    instance_type: str
    allow_cidrs: tuple[str, ...]
    nodes: int = 1
    filesystem: str | None = None
    allow_world: bool = False
    name_prefix: str = "glm-"
    ssh_key_name: str = "glm-deploy"
    ssh_public_key_file: Path = Path("~/.ssh/id_ed25519.pub")
    extra: Mapping[str, Any] = field(default_factory=dict)

    def check(self) -> LambdaUp:
        check_pattern("--region", self.region, REGION, "a Lambda region name", "like us-east-1")
        check_pattern(
            "--instance-type", self.instance_type, INSTANCE_TYPE, "a Lambda instance type", "like gpu_8x_b200_sxm6"
        )
        if self.nodes < 1:
            raise InputError(f"--nodes {self.nodes} must be at least 1")
        if self.filesystem is not None:
            check_pattern(
                "--filesystem",
                self.filesystem,
                FILESYSTEM,
                "a filesystem name",
                "letters first, then letters, digits, -",
            )
        check_pattern("--name-prefix", self.name_prefix, NAME, "an instance name prefix", "letters, digits, ._-")
        check_pattern("--ssh-key-name", self.ssh_key_name, NAME, "an SSH key name", "letters, digits, ._-")
        check_cidrs(self.allow_cidrs, allow_world=self.allow_world)
        key_file = self.ssh_public_key_file.expanduser()
        if not key_file.is_file():
            raise InputError(
                f"--ssh-public-key {clip(str(self.ssh_public_key_file))} is not a file",
                hint="give the .pub file of the key Ansible connects with (ssh-keygen -t ed25519 makes one)",
            )
        return self

    def extravars(self) -> dict[str, Any]:
        variables: dict[str, Any] = {
            "lambda_region": self.region,
            "lambda_instance_type": self.instance_type,
            "lambda_nodes": self.nodes,
            "lambda_allow_cidrs": list(self.allow_cidrs),
            "lambda_allow_world": self.allow_world,
            "lambda_name_prefix": self.name_prefix,
            "lambda_ssh_key_name": self.ssh_key_name,
            "lambda_ssh_public_key_file": str(self.ssh_public_key_file.expanduser()),
        }
        if self.filesystem:
            variables["lambda_filesystem"] = self.filesystem
        variables.update(self.extra)
        return variables


def check_cidrs(cidrs: tuple[str, ...], *, allow_world: bool) -> None:
    if not cidrs:
        raise InputError(
            "--allow-cidr is required: the networks that may reach SSH and the endpoint",
            hint="e.g. --allow-cidr 203.0.113.7/32 (your address: curl -s https://checkip.amazonaws.com)",
        )
    for cidr in cidrs:
        try:
            network = ipaddress.IPv4Network(cidr if "/" in cidr else f"{cidr}/32", strict=True)
        except ValueError as error:
            raise InputError(f"--allow-cidr {clip(cidr)} is not an IPv4 network: {error}") from None
        if network.prefixlen == 0 and not allow_world:
            raise InputError(
                f"--allow-cidr {cidr} opens SSH and the endpoint to the whole internet",
                hint="name your own networks, or add --allow-world to mean it",
            )


def api_key(key_file: Path | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The Lambda API key: the first line of `key_file`, else LAMBDA_API_KEY."""
    environ = os.environ if environ is None else environ
    if key_file is not None:
        try:
            key = key_file.expanduser().read_text(encoding="utf-8").partition("\n")[0].strip()
        except OSError as error:
            raise InputError(f"cannot read the Lambda API key file {key_file}: {error.strerror}") from None
        origin = str(key_file)
    else:
        key, origin = environ.get(API_KEY_ENV, "").strip(), API_KEY_ENV
    if not key or any(character.isspace() for character in key):
        raise InputError(
            f"no usable Lambda Cloud API key in {origin}",
            hint=f"set {API_KEY_ENV} (or --api-key-file) to a key from https://cloud.lambda.ai/api-keys",
        )
    return key


@contextmanager
def key_file_for_run(key: str) -> Iterator[Path]:
    """A mode-0600 file holding `key` in a private folder, removed when the run ends."""
    folder = Path(tempfile.mkdtemp(prefix="glm-deploy-lambda-"))
    try:
        path = folder / "api-key"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(key + "\n")
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def instances_from_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The instances lambda_instance reported (by name; the last report of each wins), without secrets."""
    found: dict[str, dict[str, Any]] = {}
    for event in events:
        instance = RunEvent.of(event).result.get("instance")
        if isinstance(instance, dict) and instance.get("name"):
            found[instance["name"]] = {
                "name": instance.get("name"),
                "id": instance.get("id"),
                "status": instance.get("status"),
                "ip": instance.get("ip"),
                "private_ip": instance.get("private_ip"),
                "region": (instance.get("region") or {}).get("name"),
                "instance_type": (instance.get("instance_type") or {}).get("name"),
                "price_cents_per_hour": (instance.get("instance_type") or {}).get("price_cents_per_hour"),
            }
    return [found[name] for name in sorted(found)]


def run_lambda_playbook(
    playbook: str,
    *,
    key: str,
    extravars: Mapping[str, Any],
    inventory: str | Path = DEFAULT_INVENTORY,
    state_dir: Path,
    secrets: Mapping[str, str] | None = None,
    check: bool = False,
    on_event: EventHandler | None = None,
) -> tuple[RunResult, list[dict[str, Any]]]:
    """Run a Lambda playbook (lambda_up.yml, lambda_launch.yml, lambda_down.yml): (result, events seen)."""
    events: list[dict[str, Any]] = []

    def collect(event: dict[str, Any]) -> None:
        events.append(event)
        if on_event is not None:
            on_event(event)

    with key_file_for_run(key) as key_path:
        environment = {"LAMBDA_API_KEY_FILE": str(key_path)}
        if os.environ.get(API_URL_ENV):
            environment[API_URL_ENV] = os.environ[API_URL_ENV]
        runner = PlaybookRunner(state_dir=state_dir, project_dir=paths.project_root(), extra_env=environment)
        result = runner.run(
            playbook,
            inventory=inventory,
            extravars=dict(extravars),
            secrets=secrets,
            check=check,
            event_handler=collect,
        )
    return result, events


def localhost_inventory(state_dir: Path) -> Path:
    """An inventory of the controller alone (lambda_down.yml needs no hosts: listing them would only fail on an
    instance type the catalog does not know)."""
    path = state_dir / "lambda-localhost.yml"
    state_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "all:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
        "      ansible_python_interpreter: '{{ ansible_playbook_python }}'\n",
        encoding="utf-8",
    )
    return path


# ------------------------------------------------------------------------------------------------- the cost guard


def down_timer_name(name_prefix: str) -> str:
    """The schedule name of the cost guard (units glm-deploy-lambda-down-PREFIX.service/.timer)."""
    return "lambda-down-" + re.sub(r"[^A-Za-z0-9_.-]", "_", name_prefix).strip("-_.")


def render_down_timer(
    *,
    name_prefix: str,
    hours: float,
    environment_file: Path | None,
    api_key_file: Path | None,
    executable: str,
    now: datetime.datetime | None = None,
    extra_arguments: tuple[str, ...] = (),
) -> tuple[str, dict[str, str]]:
    """(the UTC time it fires, {unit name: text}) of a timer that runs `glm-deploy down` once, `hours` from `now`.
    OnCalendar= holds the absolute time and Persistent= catches it up after the controller was off, so a reboot
    does not cancel the guard. The key never appears in the units: the service reads it from `environment_file`
    (LAMBDA_API_KEY=...) or `api_key_file`."""
    if not 0 < hours <= MAX_HOURS:
        raise InputError(f"--max-hours {hours:g} must be above 0 and at most {MAX_HOURS}")
    if environment_file is None and api_key_file is None:
        raise InputError(
            "--max-hours needs where the timer's `glm-deploy down` finds the Lambda API key",
            hint="add --timer-environment-file FILE (mode 0600, a line LAMBDA_API_KEY=...) or --api-key-file FILE",
        )
    for path in (environment_file, api_key_file):
        if path is not None and not path.is_absolute():
            raise InputError(f"{path} must be an absolute path (systemd needs one)")
    start = now or datetime.datetime.now(datetime.UTC)
    fires = (start + datetime.timedelta(hours=hours)).astimezone(datetime.UTC).replace(microsecond=0)
    name = down_timer_name(name_prefix)
    service_name, timer_name = f"{schedule.UNIT_PREFIX}{name}.service", f"{schedule.UNIT_PREFIX}{name}.timer"
    argv = [executable, "down", "--name-prefix", name_prefix, *extra_arguments]
    if api_key_file is not None:
        argv += ["--api-key-file", str(api_key_file)]
    header = (
        f"{schedule.MARKER} for `glm-deploy up --max-hours {hours:g}`; "
        f"remove with `glm-deploy schedule --remove {name}`."
    )
    service = [
        header,
        "[Unit]",
        f"Description={specifiers_literal(f'glm-deploy: terminate the Lambda instances {name_prefix}* (cost guard)')}",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=oneshot",
        f"WorkingDirectory={specifiers_literal(str(paths.project_root()))}",
    ]
    if environment_file is not None:
        service.append(f"EnvironmentFile={specifiers_literal(str(environment_file))}")
    service += [f"ExecStart={systemd_command_line(argv)}", ""]
    timer = [
        header,
        "[Unit]",
        f"Description={specifiers_literal(f'glm-deploy: terminate {name_prefix}* at {fires:%Y-%m-%d %H:%M} UTC')}",
        "",
        "[Timer]",
        f"OnCalendar={fires:%Y-%m-%d %H:%M:%S} UTC",
        "Persistent=true",
        f"Unit={service_name}",
        "",
        "[Install]",
        "WantedBy=timers.target",
        "",
    ]
    return fires.isoformat(), {service_name: "\n".join(service), timer_name: "\n".join(timer)}
