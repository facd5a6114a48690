"""Scheduled redeploys on the controller: a systemd service + timer per policy.

A policy (YAML) names what to run and when:

    name: sandbox                 # units glm-deploy-sandbox.service / .timer
    inventory: inventories/sandbox
    on_calendar: hourly           # systemd OnCalendar= (see `systemd-analyze calendar`)
    randomized_delay: 5m          # optional RandomizedDelaySec=
    environment_file: /etc/glm-deploy/schedule.env   # optional: HF_TOKEN, GLM_API_KEY; mode 0600
    state_dir: /var/lib/glm-deploy-controller         # optional GLM_DEPLOY_STATE
    user: deploy                  # optional User= of the service
    follow:                       # optional: what to follow instead of the inventory's settings
      revision: main              #   a model branch (or tag)
      engine_version: "0.19.1"    #   an engine release; or image: vllm/vllm-openai:latest (an engine tag)
    serial: 1                     # optional: hosts moved at once (a count or a share such as 25%)
    min_output_tps: 300           # optional: benchmark floor the new release must reach
    canary: true                  # optional: the first host gates the stack lock, the others follow the lock
    lock_file: stack.lock.yml     # optional (with canary): the lock moved after a canary passes every gate

The service runs `glm-deploy redeploy --if-changed -i INVENTORY [--revision ...]`: it resolves the release (the
model branch to a commit on the Hub) and redeploys, staged and verified with automatic rollback, only when that
differs from the current release. Exit 3 (another run holds the lock) counts as success, so an overlapping tick
is skipped rather than reported as failed. Secrets never appear in the unit files: they come from the policy's
EnvironmentFile.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from glm_deploy import paths
from glm_deploy.errors import GlmDeployError, InputError
from glm_deploy.run_arguments import SERIAL_PATTERN
from glm_deploy.systemd_text import specifiers_literal, systemd_command_line, systemd_environment
from glm_deploy.validation import (
    IMAGE_REFERENCE,
    check_one_line,
    check_pattern,
    check_revision,
    clip,
)
from glm_deploy.versions import is_version

DEFAULT_UNIT_DIR = Path("/etc/systemd/system")
UNIT_PREFIX = "glm-deploy-"
# The first line of every unit glm-deploy writes: --list and --remove touch no other file.
MARKER = "# Written by `glm-deploy schedule`"
# Matched with fullmatch: `$` would also accept a trailing newline, which ends a unit-file line.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_DURATION = re.compile(r"[0-9]{1,12}(us|ms|s|sec|m|min|h|hr|d|w)?")
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
# What systemd.time(7) calendar events are written with: weekday and month names, digits, `*`, `-`, `:`, `/`,
# `,`, `..`, `~`, spaces and a time zone such as Europe/Berlin or UTC. `systemd-analyze verify` checks the rest.
_CALENDAR = re.compile(r"[A-Za-z0-9 ,.:*/~+_-]{1,200}")
_POLICY_KEYS = {
    "name",
    "inventory",
    "on_calendar",
    "randomized_delay",
    "environment_file",
    "state_dir",
    "user",
    "follow",
    "serial",
    "min_output_tps",
    "canary",
    "lock_file",
}
# What a policy may follow, as `glm-deploy redeploy` options.
_FOLLOW_KEYS = ("revision", "engine_version", "image")


@dataclass(frozen=True)
class SchedulePolicy:
    """A validated policy; paths are absolute."""

    name: str
    inventory: Path
    on_calendar: str
    randomized_delay: str | None = None
    environment_file: Path | None = None
    state_dir: Path | None = None
    user: str | None = None
    follow: dict[str, str] = field(default_factory=dict)
    serial: str | None = None
    min_output_tps: float | None = None
    canary: bool = False
    lock_file: Path | None = None

    def redeploy_arguments(self) -> list[str]:
        """The `glm-deploy redeploy` options this policy adds after `--if-changed -i INVENTORY`."""
        arguments: list[str] = []
        for key in _FOLLOW_KEYS:
            if key in self.follow:
                arguments += [f"--{key.replace('_', '-')}", self.follow[key]]
        if self.serial is not None:
            arguments += ["--serial", self.serial]
        if self.min_output_tps is not None:
            arguments += ["--min-output-tps", f"{self.min_output_tps:g}"]
        if self.canary:
            arguments += ["--canary"]
            if self.lock_file is not None:
                arguments += ["--lock-file", str(self.lock_file)]
        return arguments

    @property
    def service_name(self) -> str:
        return f"{UNIT_PREFIX}{self.name}.service"

    @property
    def timer_name(self) -> str:
        return f"{UNIT_PREFIX}{self.name}.timer"


@dataclass(frozen=True)
class ScheduleInfo:
    """What `--list` shows for one installed schedule."""

    name: str
    timer: str
    service: str
    on_calendar: str | None
    command: str | None
    active: str | None = None
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "timer": self.timer,
            "service": self.service,
            "on_calendar": self.on_calendar,
            "command": self.command,
            "active": self.active,
            "files": list(self.files),
        }


def systemd_running() -> bool:
    """Whether systemd is this machine's init (the check sd_booted(3) makes)."""
    return Path("/run/systemd/system").is_dir()


def load_policy(path: Path, *, project_dir: Path | None = None) -> SchedulePolicy:
    """Read and check a policy file; errors name the key, the value and what would work."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"policy file {str(path)!r} not found") from None
    except yaml.YAMLError as error:
        raise InputError(f"policy file {path} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise InputError(f"policy file {path} must be a mapping", hint="see `glm-deploy schedule --help`")
    unknown = set(data) - _POLICY_KEYS
    if unknown:
        raise InputError(
            f"policy {path}: unknown keys {sorted(unknown)}",
            hint=f"known keys: {', '.join(sorted(_POLICY_KEYS))}",
        )
    for required in ("name", "inventory", "on_calendar"):
        if not data.get(required):
            raise InputError(f"policy {path}: `{required}` is required")
    name = check_pattern(
        f"policy {path}: name",
        str(data["name"]),
        _NAME,
        "a unit name",
        "letters, digits, '.', '_' and '-', at most 64, starting with a letter or digit",
    )
    root = project_dir or paths.project_root()
    inventory = Path(check_one_line(f"policy {path}: inventory", str(data["inventory"]))).expanduser()
    if not inventory.is_absolute():
        inventory = (
            (Path(path).parent / inventory) if (Path(path).parent / inventory).exists() else root / inventory
        )
    if not inventory.exists():
        raise InputError(
            f"policy {path}: inventory {clip(str(data['inventory']))} not found (looked at {clip(str(inventory))})"
        )
    on_calendar = check_one_line(f"policy {path}: on_calendar", str(data["on_calendar"]))
    check_pattern(
        f"policy {path}: on_calendar",
        on_calendar,
        _CALENDAR,
        "a calendar event",
        "e.g. hourly, daily, Mon..Fri 03:00 or *-*-* 04:30:00 UTC (see `systemd-analyze calendar`)",
    )
    delay = data.get("randomized_delay")
    if delay is not None:
        check_pattern(f"policy {path}: randomized_delay", str(delay), _DURATION, "a duration", "e.g. 300, 5m, 1h")
    environment_file = _environment_file(path, data.get("environment_file"))
    state_dir = None
    if data.get("state_dir"):
        state_dir = Path(check_one_line(f"policy {path}: state_dir", str(data["state_dir"]))).expanduser().resolve()
    user = str(data["user"]) if data.get("user") else None
    if user is not None:
        check_pattern(f"policy {path}: user", user, _USER, "a valid user name", "e.g. deploy")
    follow = data.get("follow") or {}
    if not isinstance(follow, dict) or set(follow) - set(_FOLLOW_KEYS):
        raise InputError(
            f"policy {path}: follow must map {', '.join(_FOLLOW_KEYS)} to what to follow, got {clip(follow)}",
            hint="e.g. follow: {revision: main}",
        )
    if any(not isinstance(value, str | int | float) or not str(value).strip() for value in follow.values()):
        raise InputError(f"policy {path}: every value under follow must be a non-empty string, got {clip(follow)}")
    _check_follow(path, {key: str(value) for key, value in follow.items()})
    serial = data.get("serial")
    if serial is not None and not SERIAL_PATTERN.fullmatch(str(serial)):
        raise InputError(
            f"policy {path}: serial {clip(serial)} must be a positive count of hosts or a share such as 25%"
        )
    floor = data.get("min_output_tps")
    if floor is not None and (isinstance(floor, bool) or not isinstance(floor, int | float) or floor <= 0):
        raise InputError(f"policy {path}: min_output_tps {clip(floor)} must be a positive number (tokens/s)")
    canary = data.get("canary", False)
    if not isinstance(canary, bool):
        raise InputError(f"policy {path}: canary {clip(canary)} must be true or false")
    lock_file = None
    if data.get("lock_file") is not None:
        if not canary:
            raise InputError(f"policy {path}: lock_file applies with canary: true", hint="add canary: true")
        lock_file = Path(check_one_line(f"policy {path}: lock_file", str(data["lock_file"]))).expanduser()
        if not lock_file.is_absolute():
            lock_file = (path.parent / lock_file).resolve()
    return SchedulePolicy(
        canary=canary,
        lock_file=lock_file,
        follow={key: str(value) for key, value in follow.items()},
        serial=str(serial) if serial is not None else None,
        min_output_tps=float(floor) if floor is not None else None,
        name=name,
        inventory=inventory.resolve(),
        on_calendar=on_calendar,
        randomized_delay=str(delay) if delay is not None else None,
        environment_file=environment_file,
        state_dir=state_dir,
        user=user,
    )


def _check_follow(path: Path, follow: dict[str, str]) -> None:
    """What a policy follows reaches the service's ExecStart: the same checks `glm-deploy redeploy` makes."""
    for key, value in follow.items():
        check_one_line(f"policy {path}: follow.{key}", value)
    if "revision" in follow:
        check_revision(f"policy {path}: follow.revision", follow["revision"])
    if "engine_version" in follow and not is_version(follow["engine_version"]):
        raise InputError(
            f"policy {path}: follow.engine_version {clip(follow['engine_version'])} is not a version",
            hint="digits and dots, e.g. 0.19.1",
        )
    if "image" in follow:
        check_pattern(
            f"policy {path}: follow.image",
            follow["image"],
            IMAGE_REFERENCE,
            "an image reference",
            "e.g. vllm/vllm-openai:latest",
        )


def _environment_file(policy_path: Path, value: Any) -> Path | None:
    if not value:
        return None
    environment_file = Path(check_one_line(f"policy {policy_path}: environment_file", str(value))).expanduser()
    if not environment_file.is_absolute():
        raise InputError(
            f"policy {policy_path}: environment_file {clip(str(value))} must be an absolute path (systemd needs one)"
        )
    if environment_file.exists():
        mode = stat.S_IMODE(environment_file.stat().st_mode)
        if mode & 0o077:
            raise InputError(
                f"policy {policy_path}: environment_file {environment_file} has mode {mode:04o}, but it "
                "holds secrets",
                hint=f"chmod 600 {environment_file}",
            )
    return environment_file


def _glm_deploy_executable() -> str:
    beside = Path(sys.executable).parent / "glm-deploy"
    if beside.exists():
        return str(beside)
    found = shutil.which("glm-deploy")
    if found:
        return found
    raise GlmDeployError(
        "cannot find the glm-deploy executable for the service's ExecStart",
        hint="install glm-deploy (pip install -e .) in the Python that runs this command",
    )


def render_units(policy: SchedulePolicy, *, executable: str | None = None) -> dict[str, str]:
    """The unit files' names and contents."""
    program = executable or _glm_deploy_executable()
    argv = [program, "redeploy", "--if-changed", "-i", str(policy.inventory), *policy.redeploy_arguments()]
    header = (
        f"{MARKER} from policy {policy.name!r}; remove with `glm-deploy schedule --remove {policy.name}`."
    )
    service = [
        header,
        "[Unit]",
        f"Description={specifiers_literal(f'glm-deploy scheduled redeploy {policy.name} ({policy.inventory})')}",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=oneshot",
        # WorkingDirectory= and EnvironmentFile= take no quotes: only their `%` needs escaping.
        f"WorkingDirectory={specifiers_literal(str(paths.project_root()))}",
    ]
    if policy.state_dir is not None:
        service.append(f"Environment={systemd_environment('GLM_DEPLOY_STATE', str(policy.state_dir))}")
    if policy.environment_file is not None:
        # The secrets (HF_TOKEN, GLM_API_KEY) live only in this mode-0600 file, never in the unit.
        service.append(f"EnvironmentFile={specifiers_literal(str(policy.environment_file))}")
    if policy.user is not None:
        service.append(f"User={policy.user}")
    service += [
        f"ExecStart={systemd_command_line(argv)}",
        "# 3: another glm-deploy run held the controller lock; this tick is skipped, not failed.",
        "SuccessExitStatus=3",
        "# A redeploy that downloads weights runs for hours.",
        "TimeoutStartSec=infinity",
        "",
    ]
    timer = [
        header,
        "[Unit]",
        f"Description={specifiers_literal(f'glm-deploy scheduled redeploy {policy.name} ({policy.on_calendar})')}",
        "",
        "[Timer]",
        f"OnCalendar={specifiers_literal(policy.on_calendar)}",
        "Persistent=true",
    ]
    if policy.randomized_delay is not None:
        timer.append(f"RandomizedDelaySec={policy.randomized_delay}")
    timer += [f"Unit={policy.service_name}", "", "[Install]", "WantedBy=timers.target", ""]
    return {policy.service_name: "\n".join(service), policy.timer_name: "\n".join(timer)}


def verify_units(units: dict[str, str]) -> str | None:
    """Run `systemd-analyze verify` on the units (in a scratch directory); returns None when the tool is
    missing, else its output. Raises InputError when it rejects them."""
    analyzer = shutil.which("systemd-analyze")
    if analyzer is None:
        return None
    with tempfile.TemporaryDirectory(prefix="glm-deploy-units-") as scratch:
        files = []
        for name, text in units.items():
            unit_path = Path(scratch) / name
            unit_path.write_text(text, encoding="utf-8")
            files.append(str(unit_path))
        completed = subprocess.run(
            [analyzer, "verify", "--man=no", *files], capture_output=True, text=True, timeout=60, check=False
        )
    output = (completed.stdout + completed.stderr).strip()
    if completed.returncode != 0:
        raise InputError(
            f"systemd-analyze verify rejected the units: {output}",
            hint="check on_calendar with `systemd-analyze calendar '<value>'` and the policy's paths",
        )
    return output


def _systemctl(*arguments: str) -> None:
    completed = subprocess.run(
        ["systemctl", *arguments], capture_output=True, text=True, timeout=120, check=False
    )
    if completed.returncode != 0:
        raise GlmDeployError(
            f"systemctl {' '.join(arguments)} failed: {completed.stderr.strip()}",
            hint="run it by hand to see why; the unit files are installed",
        )


@dataclass(frozen=True)
class InstallResult:
    policy: SchedulePolicy
    files: list[str]
    activated: bool
    verified: bool
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.policy.name,
            "timer": self.policy.timer_name,
            "service": self.policy.service_name,
            "files": list(self.files),
            "activated": self.activated,
            "verified": self.verified,
            "notes": list(self.notes),
        }


def install(
    policy: SchedulePolicy, *, unit_dir: Path = DEFAULT_UNIT_DIR, activate: bool = True
) -> InstallResult:
    """Verify and write the units; with systemd running (and `activate`), enable and start the timer."""
    written, activated, verified, notes = install_units(
        render_units(policy), policy.timer_name, unit_dir=unit_dir, activate=activate
    )
    return InstallResult(policy=policy, files=written, activated=activated, verified=verified, notes=notes)


def install_units(
    units: dict[str, str], timer_name: str, *, unit_dir: Path = DEFAULT_UNIT_DIR, activate: bool = True
) -> tuple[list[str], bool, bool, list[str]]:
    """Verify `units` (systemd-analyze), write them atomically into `unit_dir`, and with systemd running (and
    `activate`) enable and start `timer_name`: (files written, activated, verified, notes). Shared by schedules
    and the cost guard of `glm-deploy up --max-hours`."""
    verified = verify_units(units) is not None
    notes: list[str] = []
    if not verified:
        notes.append("systemd-analyze is not installed: the units were not verified")
    unit_dir.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    for name, text in units.items():
        target = unit_dir / name
        descriptor, temporary = tempfile.mkstemp(dir=unit_dir, prefix=f".{name}.")
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
        written.append(str(target))
    activated = False
    if not systemd_running():
        notes.append(
            "systemd is not running on this machine (it is not PID 1): the timer is installed but inactive "
            f"until systemd runs and `systemctl enable --now {timer_name}` is run"
        )
    elif not activate:
        notes.append(f"not activated: run `systemctl daemon-reload && systemctl enable --now {timer_name}`")
    else:
        _systemctl("daemon-reload")
        _systemctl("enable", "--now", timer_name)
        activated = True
    return written, activated, verified, notes


def _ours(path: Path) -> bool:
    try:
        return path.read_text(encoding="utf-8").startswith(MARKER)
    except OSError:
        return False


def _timer_state(timer: str) -> str | None:
    if not systemd_running():
        return "inactive (systemd not running)"
    completed = subprocess.run(
        ["systemctl", "is-active", timer], capture_output=True, text=True, timeout=30, check=False
    )
    return completed.stdout.strip() or None


def list_schedules(*, unit_dir: Path = DEFAULT_UNIT_DIR) -> list[ScheduleInfo]:
    """The schedules glm-deploy installed in `unit_dir`."""
    found: list[ScheduleInfo] = []
    if not unit_dir.is_dir():
        return found
    for timer_path in sorted(unit_dir.glob(f"{UNIT_PREFIX}*.timer")):
        if not _ours(timer_path):
            continue
        name = timer_path.name[len(UNIT_PREFIX) : -len(".timer")]
        service_path = unit_dir / f"{UNIT_PREFIX}{name}.service"
        on_calendar = next(
            (
                line.split("=", 1)[1]
                for line in timer_path.read_text(encoding="utf-8").splitlines()
                if line.startswith("OnCalendar=")
            ),
            None,
        )
        command = None
        if service_path.is_file():
            command = next(
                (
                    line.split("=", 1)[1]
                    for line in service_path.read_text(encoding="utf-8").splitlines()
                    if line.startswith("ExecStart=")
                ),
                None,
            )
        found.append(
            ScheduleInfo(
                name=name,
                timer=timer_path.name,
                service=service_path.name,
                on_calendar=on_calendar,
                command=command,
                active=_timer_state(timer_path.name),
                files=[str(timer_path)] + ([str(service_path)] if service_path.is_file() else []),
            )
        )
    return found


def remove(name: str, *, unit_dir: Path = DEFAULT_UNIT_DIR) -> list[str]:
    """Stop, disable and delete the schedule `name`; returns the files removed."""
    schedules = {info.name: info for info in list_schedules(unit_dir=unit_dir)}
    if name not in schedules:
        known = ", ".join(sorted(schedules)) or "none"
        raise InputError(
            f"no glm-deploy schedule named {clip(name)} in {unit_dir}", hint=f"installed schedules: {known}"
        )
    info = schedules[name]
    if systemd_running():
        _systemctl("disable", "--now", info.timer)
    for file_path in info.files:
        Path(file_path).unlink(missing_ok=True)
    if systemd_running():
        _systemctl("daemon-reload")
    return info.files
