"""A typed wrapper over ansible-runner: the one place that builds runner arguments.

`PlaybookRunner.run()` runs a playbook of the project against an inventory, streams every event to a callback,
keeps the run's artifacts under a run id (rotated), and returns a `RunResult`. A failed run raises `RunError`
naming the first failing host and task.

Secrets never reach ansible-runner's artifacts: ansible-runner writes the whole process environment into
`artifacts/<id>/command`, so variables that look like secrets are removed from the environment it sees, and the
secrets the play needs travel in a mode-0600 vars file outside the artifact tree, deleted after the run.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ansible_runner

from glm_deploy import paths
from glm_deploy.errors import RunCancelled, RunError
from glm_deploy.run_events import RunEvent

EventHandler = Callable[[dict[str, Any]], None]

# Environment variables never handed to ansible-runner (it would write them into its artifacts).
SECRET_ENV_PATTERN = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|APIKEY|PRIVATE_KEY)", re.IGNORECASE)
# Names that match the pattern but hold where a secret is, not the secret: the playbooks' lookups need them to find
# the same key file, and the CA beside it, as the controller (glm_deploy.credentials, glm_deploy.tls).
SECRET_PATH_ENV = frozenset({"GLM_API_KEY_FILE"})



def new_run_id() -> str:
    """A fresh run id: 12 hex digits."""
    return uuid.uuid4().hex[:12]


@dataclass(frozen=True)
class HostStats:
    """The recap line of one host."""

    ok: int = 0
    changed: int = 0
    failures: int = 0
    unreachable: int = 0
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0

    @property
    def succeeded(self) -> bool:
        return self.failures == 0 and self.unreachable == 0


@dataclass(frozen=True)
class Failure:
    """The first thing that went wrong on a host."""

    host: str
    task: str
    message: str


@dataclass(frozen=True)
class RunResult:
    """What one playbook run did."""

    run_id: str
    playbook: str
    status: str
    rc: int
    hosts: Mapping[str, HostStats]
    artifact_dir: Path
    failures: Sequence[Failure] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return self.status == "successful" and self.rc == 0

    @property
    def changed(self) -> int:
        return sum(stats.changed for stats in self.hosts.values())


def _stats_from_runner(stats: Mapping[str, Mapping[str, int]] | None) -> dict[str, HostStats]:
    if not stats:
        return {}
    keys = {
        "ok": "ok",
        "changed": "changed",
        "failures": "failures",
        "dark": "unreachable",
        "skipped": "skipped",
        "rescued": "rescued",
        "ignored": "ignored",
    }
    per_host: dict[str, dict[str, int]] = {}
    for runner_key, field_name in keys.items():
        for host, count in (stats.get(runner_key) or {}).items():
            per_host.setdefault(host, {})[field_name] = int(count)
    return {host: HostStats(**counts) for host, counts in sorted(per_host.items())}


def _failure_from_event(event: Mapping[str, Any]) -> Failure | None:
    """The failure an event reports (not one the play ignores), else None."""
    typed = RunEvent.of(event)
    if not typed.failed:
        return None
    return Failure(host=typed.host or "?", task=typed.task or "?", message=typed.message)


@contextmanager
def _secret_vars_file(secrets: Mapping[str, str]) -> Iterator[Path | None]:
    """A mode-0600 extra-vars file outside the artifact tree, removed afterwards."""
    if not secrets:
        yield None
        return
    directory = Path(tempfile.mkdtemp(prefix="glm-deploy-secrets-"))
    path = directory / "secrets.json"
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(dict(secrets), handle)
        yield path
    finally:
        path.unlink(missing_ok=True)
        directory.rmdir()


class PlaybookRunner:
    """Runs the project's playbooks through ansible-runner.

    `state_dir` holds one private data directory whose `artifacts/<run id>` keep each run's events and output;
    only the newest `keep_runs` runs are kept.
    """

    def __init__(
        self,
        *,
        state_dir: Path,
        project_dir: Path | None = None,
        keep_runs: int = 20,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        if keep_runs < 1:
            raise ValueError(f"keep_runs must be at least 1, got {keep_runs}")
        self.state_dir = Path(state_dir)
        self.project_dir = Path(project_dir) if project_dir else paths.project_root()
        self.keep_runs = keep_runs
        self.extra_env = dict(extra_env or {})

    def _environment(self, prepared: Mapping[str, str]) -> dict[str, str]:
        """The environment ansible-playbook gets: what ansible-runner prepared, minus secrets, plus our paths."""
        environment = {
            name: value
            for name, value in prepared.items()
            if name in SECRET_PATH_ENV or not SECRET_ENV_PATTERN.search(name)
        }
        # ansible-playbook is installed beside the Python running us (ansible-core is our dependency), whether or
        # not that venv is activated.
        interpreter_bin = str(Path(sys.executable).parent)
        environment["PATH"] = os.pathsep.join([interpreter_bin, environment.get("PATH", os.defpath)])
        environment["ANSIBLE_CONFIG"] = str(self.project_dir / "ansible.cfg")
        environment["ANSIBLE_COLLECTIONS_PATH"] = str(paths.collections_path())
        environment.setdefault("ANSIBLE_HOME", str(self.state_dir / "ansible-home"))
        environment.update(self.extra_env)
        return environment

    def run(
        self,
        playbook: str | Path,
        *,
        inventory: str | Path,
        extravars: Mapping[str, Any] | None = None,
        secrets: Mapping[str, str] | None = None,
        limit: str | None = None,
        tags: Sequence[str] = (),
        check: bool = False,
        event_handler: EventHandler | None = None,
        cancel: threading.Event | None = None,
        raise_on_failure: bool = True,
        run_id: str | None = None,
    ) -> RunResult:
        """Run `playbook` (a path, or a name under the project's playbooks/) and return what it did.

        `run_id` names the run's artifact folder (default: a new random id)."""
        playbook_path = Path(playbook)
        if not playbook_path.is_absolute():
            candidate = self.project_dir / playbook_path
            playbook_path = candidate if candidate.exists() else paths.playbooks_dir() / playbook_path
        if not playbook_path.is_file():
            raise RunError(
                f"playbook {str(playbook)!r} not found (looked for {playbook_path})",
                hint=f"use a path, or a name under {paths.playbooks_dir()}",
            )
        inventory_path = Path(inventory)
        if not inventory_path.is_absolute():
            inventory_path = self.project_dir / inventory_path
        if not inventory_path.exists():
            raise RunError(f"inventory {str(inventory)!r} not found (looked for {inventory_path})")

        run_id = run_id or new_run_id()
        private_data_dir = self.state_dir / "runner"
        private_data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        failures: list[Failure] = []

        def on_event(event: dict[str, Any]) -> bool:
            failure = _failure_from_event(event)
            if failure is not None:
                failures.append(failure)
            if event_handler is not None:
                event_handler(event)
            return True

        def cancelled() -> bool:
            return cancel is not None and cancel.is_set()

        with _secret_vars_file(secrets or {}) as secrets_path:
            cmdline_parts: list[str] = []
            if secrets_path is not None:
                cmdline_parts += ["--extra-vars", f"@{secrets_path}"]
            if check:
                cmdline_parts += ["--check", "--diff"]
            config = ansible_runner.RunnerConfig(
                private_data_dir=str(private_data_dir),
                project_dir=str(self.project_dir),
                playbook=str(playbook_path),
                inventory=str(inventory_path),
                extravars=dict(extravars or {}),
                limit=limit,
                tags=",".join(tags) if tags else None,
                cmdline=" ".join(cmdline_parts) if cmdline_parts else None,
                ident=run_id,
                rotate_artifacts=self.keep_runs,
                envvars=None,
                quiet=True,
            )
            config.prepare()
            # prepare() seeded the environment from os.environ, secrets included; ansible-runner would write it
            # into artifacts/<id>/command.
            config.env = self._environment(config.env)
            runner = ansible_runner.Runner(config, event_handler=on_event, cancel_callback=cancelled)
            runner.run()

        artifact_dir = Path(config.artifact_dir)
        result = RunResult(
            run_id=run_id,
            playbook=str(playbook_path),
            status=str(runner.status),
            rc=int(runner.rc if runner.rc is not None else -1),
            hosts=_stats_from_runner(runner.stats),
            artifact_dir=artifact_dir,
            failures=tuple(failures),
        )
        if raise_on_failure and runner.status == "canceled":
            raise RunCancelled(f"run {run_id} of {playbook_path.name} was cancelled", artifact_dir=str(artifact_dir))
        if raise_on_failure and not result.ok:
            raise _run_error(result)
        return result


def _run_error(result: RunResult) -> RunError:
    if result.failures:
        first = result.failures[0]
        return RunError(
            first.message,
            host=first.host,
            step=first.task,
            hint=f"the run's full output is in {result.artifact_dir}/stdout",
            artifact_dir=str(result.artifact_dir),
        )
    return RunError(
        f"{Path(result.playbook).name} ended with status {result.status} (rc {result.rc})",
        hint=f"the run's full output is in {result.artifact_dir}/stdout",
        artifact_dir=str(result.artifact_dir),
    )
