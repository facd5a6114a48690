"""`Deployment`: the Python API for a deployment (plan, deploy, verify, benchmark, status, history).

    from glm_deploy.deployment import Deployment

    deployment = Deployment("inventories/sandbox")
    print(deployment.plan().served_model_name)
    handle = deployment.start("deploy", on_event=print_event)  # runs in a thread
    for event in handle.events():  # the same events, as an iterator
        ...
    outcome = handle.wait()  # raises RunError, RunCancelled or LockHeldError
    print(deployment.status().current_release)

`deploy()`, `verify()` and `benchmark()` are `start(...).wait()`. Every run takes the controller lock
(two runs against one state directory never overlap), keeps ansible-runner's artifacts under its run id, and
appends one entry to the history (`<state_dir>/history.jsonl`), success or not; secrets never reach the
history or the artifacts.

The state directory is `$GLM_DEPLOY_STATE`, else `.cache/glm-deploy/` in the project.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import getpass
import os
import queue
import re
import secrets as secrets_module
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glm_deploy import benchmark_report, paths
from glm_deploy.catalog import Catalog, load_catalog
from glm_deploy.credentials import controller_secrets
from glm_deploy.errors import GlmDeployError, InputError, RunCancelled, RunError
from glm_deploy.history import HistoryEntry, HistoryStore, Release, redact
from glm_deploy.inventory import InventoryView, read_inventory, resolve_inventory
from glm_deploy.lock import ControllerLock, current_holder
from glm_deploy.render import Plan, PlanOptions, render_plan
from glm_deploy.runner import PlaybookRunner, RunResult, new_run_id
from glm_deploy.validation import clip

EventHandler = Callable[[dict[str, Any]], None]

# The playbook each command runs (paths relative to the project directory).
DEFAULT_PLAYBOOKS: dict[str, str] = {
    "deploy": "playbooks/site.yml",
    "redeploy": "playbooks/redeploy.yml",
    "rollback": "playbooks/rollback.yml",
    "verify": "playbooks/verify.yml",
    "benchmark": "playbooks/benchmark.yml",
}

# Commands after which the hosts serve a release the history records.
RELEASE_COMMANDS = ("deploy", "redeploy", "rollback")

# What `redeploy(to=...)` may change besides the plan options.
TARGET_SETTINGS = ("model", "engine", "hardware", "nodes")

# Host facts a role may set to tell the controller what it actually installed (e.g. the commit a branch
# resolved to, the image digest pulled, the venv lock hash); the controller records them per host in the
# history.
RELEASE_FACT = "glm_release"
# The server role's report of the host's JIT caches once the endpoint answers (server/tasks/caches.yml): per cache
# kind its path, bytes, files and whether it is warm.
CACHES_FACT = "glm_caches"


def default_state_dir() -> Path:
    """`$GLM_DEPLOY_STATE`, else `.cache/glm-deploy` in the project."""
    override = os.environ.get("GLM_DEPLOY_STATE")
    if override:
        return Path(override).expanduser().resolve()
    return paths.project_root() / ".cache" / "glm-deploy"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _controller() -> dict[str, Any]:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return {"hostname": socket.gethostname(), "user": user, "pid": os.getpid()}


@dataclass(frozen=True)
class RunOutcome:
    """What a finished command did: its history entry, and the ansible-runner result when a playbook ran."""

    command: str
    entry: HistoryEntry
    result: RunResult | None = None
    # A benchmark sweep's report per host (benchmark(sweep=...)): the table's and the picture's files.
    sweeps: tuple[benchmark_report.WrittenReport, ...] = ()

    @property
    def ok(self) -> bool:
        return self.entry.ok

    @property
    def changed(self) -> bool:
        """False for `deploy(if_changed=True)` when the resolved release was already deployed."""
        return self.entry.status != "unchanged"

    def to_dict(self) -> dict[str, Any]:
        document = {"command": self.command, "ok": self.ok, **self.entry.to_dict()}
        if self.sweeps:
            document["sweeps"] = [written.to_dict() for written in self.sweeps]
        return document


@dataclass(frozen=True)
class HostStatus:
    """The controller's last word about one host."""

    host: str
    address: str
    last_command: str | None = None
    last_status: str | None = None
    last_run_id: str | None = None
    last_finished_at: str | None = None
    release: Release | None = None
    # The JIT caches by kind as the host last reported them (glm_caches), and the run that recorded them.
    caches: dict[str, dict[str, Any]] | None = None
    caches_run_id: str | None = None
    caches_recorded_at: str | None = None

    @property
    def caches_warm(self) -> bool | None:
        """Whether every JIT cache was warm at the last report; None when no report is recorded."""
        if not self.caches:
            return None
        return all(bool(record.get("warm")) for record in self.caches.values())

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["release"] = self.release.to_dict() if self.release else None
        data["caches_warm"] = self.caches_warm
        return data


@dataclass(frozen=True)
class DeploymentStatus:
    """What the controller knows: the current release (the last successful deploy), each host's last run, the
    lock."""

    inventory: str
    state_dir: str
    current_release: Release | None
    current_since: str | None
    last_run: HistoryEntry | None
    hosts: list[HostStatus] = field(default_factory=list)
    lock_holder: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "inventory": self.inventory,
            "state_dir": self.state_dir,
            "current_release": self.current_release.to_dict() if self.current_release else None,
            "current_since": self.current_since,
            "last_run": self.last_run.to_dict() if self.last_run else None,
            "hosts": [host.to_dict() for host in self.hosts],
            "lock_holder": self.lock_holder,
        }


_DONE = object()


class RunHandle:
    """A command running in a background thread: iterate `events()`, `cancel()` it, `wait()` for its
    outcome."""

    def __init__(self, command: str, target: Callable[[EventHandler, threading.Event], RunOutcome]) -> None:
        self.command = command
        self._cancel = threading.Event()
        self._queue: queue.Queue[object] = queue.Queue()
        self._outcome: RunOutcome | None = None
        self._error: BaseException | None = None
        # Waiting on an Event rather than Thread.join: a KeyboardInterrupt during join() can leave the thread
        # looking finished while it still runs (CPython's tstate lock), and Ctrl-C is how people cancel.
        self._finished = threading.Event()

        def body() -> None:
            try:
                self._outcome = target(self._queue.put, self._cancel)
            except BaseException as error:
                self._error = error
            finally:
                self._finished.set()
                self._queue.put(_DONE)

        self._thread = threading.Thread(target=body, name=f"glm-deploy-{command}", daemon=True)
        self._thread.start()

    def events(self) -> Iterator[dict[str, Any]]:
        """ansible-runner's events as they happen, ending when the run ends. One consumer only."""
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, dict):
                yield item

    def cancel(self) -> None:
        """Ask the run to stop; ansible-runner ends the playbook, and `wait()` raises `RunCancelled`."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def done(self) -> bool:
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> RunOutcome:
        """The outcome; raises what the run raised. `TimeoutError` when still running after `timeout`
        seconds."""
        if not self._finished.wait(timeout):
            raise TimeoutError(f"glm-deploy {self.command} still runs after {timeout}s")
        if self._error is not None:
            raise self._error
        if self._outcome is None:
            raise RuntimeError(f"glm-deploy {self.command} ended without an outcome")
        return self._outcome


class Deployment:
    """One deployment described by an inventory (hosts in group `glm_servers`; `glm_model`, `glm_engine`,
    `glm_hardware`, `glm_nodes`, `glm_options` in its variables).

    `model`, `engine`, `hardware`, `nodes` and `options` override the inventory (they reach the playbooks as
    extra variables, which win over inventory variables). `secrets` maps play variables to secret values
    (`glm_api_key`, `glm_hf_token`); by default they come from the controller (see `glm_deploy.credentials`).
    `playbooks` maps a command to the playbook it runs, for projects (and tests) with playbooks of their own.
    """

    def __init__(
        self,
        inventory: str | Path,
        *,
        state_dir: str | Path | None = None,
        model: str | None = None,
        engine: str | None = None,
        hardware: str | None = None,
        nodes: int | None = None,
        options: PlanOptions | Mapping[str, Any] | None = None,
        secrets: Mapping[str, str] | None = None,
        project_dir: str | Path | None = None,
        playbooks: Mapping[str, str | Path] | None = None,
        keep_runs: int = 20,
        catalog: Catalog | None = None,
    ) -> None:
        self.project_dir = Path(project_dir) if project_dir else paths.project_root()
        self.inventory = resolve_inventory(inventory, self.project_dir)
        self.state_dir = Path(state_dir) if state_dir else default_state_dir()
        self.model = model
        self.engine = engine
        self.hardware = hardware
        self.nodes = nodes
        self.options = options
        self._secrets = dict(secrets) if secrets is not None else None
        unknown = set(playbooks or {}) - set(DEFAULT_PLAYBOOKS)
        if unknown:
            raise InputError(
                f"playbooks given for unknown commands {sorted(unknown)}",
                hint=f"commands with playbooks: {', '.join(DEFAULT_PLAYBOOKS)}",
            )
        self.playbooks: dict[str, str | Path] = {**DEFAULT_PLAYBOOKS, **dict(playbooks or {})}
        self._runner = PlaybookRunner(
            state_dir=self.state_dir, project_dir=self.project_dir, keep_runs=keep_runs
        )
        self._history = HistoryStore(self.state_dir)
        self._catalog = catalog
        self._view: InventoryView | None = None

    # -- what the inventory says
    # ---------------------------------------------------------------------------------

    def inventory_view(self, *, refresh: bool = False) -> InventoryView:
        """The inventory's hosts and variables (read once, then cached; `refresh` reads again)."""
        if self._view is None or refresh:
            self._view = read_inventory(self.inventory, project_dir=self.project_dir)
        return self._view

    def _options_mapping(self, inventory_options: Any) -> dict[str, Any]:
        if inventory_options is not None and not isinstance(inventory_options, Mapping):
            raise InputError(
                f"glm_options in {self.inventory} must be a mapping, got {clip(inventory_options)}",
                hint="e.g. glm_options: {max_model_len: 32768}",
            )
        merged = dict(inventory_options or {})
        if isinstance(self.options, PlanOptions):
            defaults = PlanOptions()
            for option in dataclasses.fields(PlanOptions):
                value = getattr(self.options, option.name)
                if value != getattr(defaults, option.name):
                    merged[option.name] = list(value) if isinstance(value, tuple) else value
        elif self.options is not None:
            merged.update(self.options)
        return merged

    def settings(self, to: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """model, engine, hardware, nodes and options: `to` first (a redeploy's target), then the explicit
        ones, else the inventory's."""
        target = _check_target(to)
        needs_inventory = None in (self.model, self.engine, self.hardware) or not isinstance(
            self.options, PlanOptions
        )
        variables = self.inventory_view().vars_for() if needs_inventory else {}
        options = self._options_mapping(variables.get("glm_options"))
        options.update({key: value for key, value in target.items() if key not in TARGET_SETTINGS})
        chosen: dict[str, Any] = {
            "model": target.get("model") or self.model or variables.get("glm_model"),
            "engine": target.get("engine") or self.engine or variables.get("glm_engine"),
            "hardware": target.get("hardware") or self.hardware or variables.get("glm_hardware"),
            "nodes": target.get("nodes", self.nodes if self.nodes is not None else variables.get("glm_nodes")),
            "options": options,
        }
        for name in ("model", "engine", "hardware"):
            if not chosen[name]:
                raise InputError(
                    f"no {name} chosen: inventory {self.inventory} sets no glm_{name} for group glm_servers",
                    hint=f"set glm_{name} in the inventory's group_vars, or pass {name}= (--{name})",
                )
        if chosen["nodes"] is not None:
            try:
                chosen["nodes"] = int(chosen["nodes"])
            except (TypeError, ValueError):
                raise InputError(f"glm_nodes must be an integer, got {clip(chosen['nodes'])}") from None
        return chosen

    def plan(self, to: Mapping[str, Any] | None = None) -> Plan:
        """The rendered plan, or the plan a redeploy to `to` would serve (no I/O beyond reading the inventory
        and the catalog)."""
        chosen = self.settings(to)
        if self._catalog is None:
            self._catalog = load_catalog()
        return render_plan(
            self._catalog,
            model=chosen["model"],
            engine=chosen["engine"],
            hardware=chosen["hardware"],
            nodes=chosen["nodes"],
            options=PlanOptions.from_mapping(chosen["options"]),
        )

    def hf_endpoint(self) -> str | None:
        """The Hub the hosts download from: the inventory's glm_hf_endpoint, else $HF_ENDPOINT."""
        configured = self.inventory_view().vars_for().get("glm_hf_endpoint")
        return str(configured) if configured else os.environ.get("HF_ENDPOINT") or None

    def resolve_release(self, plan: Plan | None = None) -> Release:
        """The release the inventory asks for, with the model branch resolved to a commit on the Hub."""
        plan = plan or self.plan()
        commit = resolve_model_commit(
            plan, endpoint=self.hf_endpoint(), token=self.secrets().get("glm_hf_token")
        )
        return Release.from_plan(plan, model_commit=commit)

    def secrets(self, *, create_api_key: bool = False) -> dict[str, str]:
        if self._secrets is not None:
            return dict(self._secrets)
        return controller_secrets(create_api_key=create_api_key)

    # -- what the controller remembers
    # ---------------------------------------------------------------------------

    def history(self) -> list[HistoryEntry]:
        """Every run recorded for this state directory, oldest first (an automatic rollback is an entry of
        its own, right after the failed redeploy it undid)."""
        return self._history.entries()

    def _last_serving(self, entries: list[HistoryEntry]) -> HistoryEntry | None:
        for entry in reversed(entries):
            if entry.command in RELEASE_COMMANDS and entry.ok and entry.release is not None:
                return entry
        return None

    def current_release(self) -> Release | None:
        """The release of the last successful deploy, redeploy or rollback (automatic ones included)."""
        entry = self._last_serving(self.history())
        return entry.release if entry else None

    def status(self) -> DeploymentStatus:
        """The current release, each host's last run and release, and who holds the lock (no host is
        contacted)."""
        entries = self.history()
        current = self._last_serving(entries)
        view = self.inventory_view()
        hosts: list[HostStatus] = []
        for host in view.hosts:
            last = next((entry for entry in reversed(entries) if host in entry.hosts), None)
            caches_entry = _host_caches_entry(entries, host)
            hosts.append(
                HostStatus(
                    host=host,
                    address=view.address(host),
                    last_command=last.command if last else None,
                    last_status=last.status if last else None,
                    last_run_id=last.run_id if last else None,
                    last_finished_at=last.finished_at if last else None,
                    release=_host_release(entries, host),
                    caches=dict(caches_entry.host_caches[host]) if caches_entry else None,
                    caches_run_id=caches_entry.run_id if caches_entry else None,
                    caches_recorded_at=caches_entry.finished_at if caches_entry else None,
                )
            )
        return DeploymentStatus(
            inventory=str(self.inventory),
            state_dir=str(self.state_dir),
            current_release=current.release if current else None,
            current_since=current.finished_at if current else None,
            last_run=entries[-1] if entries else None,
            hosts=hosts,
            lock_holder=current_holder(self.state_dir),
        )

    # -- runs
    # ----------------------------------------------------------------------------------------------------

    def deploy(
        self, *, if_changed: bool = False, limit: str | None = None, on_event: EventHandler | None = None
    ) -> RunOutcome:
        """Converge the hosts to the plan (playbooks/site.yml). With `if_changed`, first resolve the release
        (model branch -> commit on the Hub) and do nothing when it equals the current one."""
        return self.start("deploy", if_changed=if_changed, limit=limit, on_event=on_event).wait()

    def redeploy(
        self,
        to: Mapping[str, Any] | None = None,
        *,
        serial: int | str = 1,
        benchmark_floor: Mapping[str, float] | None = None,
        if_changed: bool = False,
        break_host_lock: bool = False,
        limit: str | None = None,
        on_event: EventHandler | None = None,
    ) -> RunOutcome:
        """Move the hosts to a new release, `serial` hosts at a time (a count or a share such as "25%").

        `to` changes what the inventory asks for: plan options (`revision`, `engine_version`, `image`,
        `extra_args`, ...) and `model`, `engine`, `hardware`, `nodes`. The roll pins a branch to the commit its
        first host fetches (playbooks/redeploy.yml), so every host gets the same weights. Each host stages the
        release while the old one serves, cuts over, and must pass the verify checks (and `benchmark_floor`, e.g.
        `{"output_throughput": 300}`); otherwise it restores its previous release, verifies it, and the roll stops
        there (`RunError`, naming the host, the step and the cause; the history records the failed redeploy and
        the rollback).
        With `if_changed`, nothing runs when the resolved release is the current one.
        """
        return self.start(
            "redeploy",
            to=to,
            serial=serial,
            benchmark_floor=benchmark_floor,
            if_changed=if_changed,
            break_host_lock=break_host_lock,
            limit=limit,
            on_event=on_event,
        ).wait()

    def rollback(
        self,
        *,
        serial: int | str = 1,
        break_host_lock: bool = False,
        limit: str | None = None,
        on_event: EventHandler | None = None,
    ) -> RunOutcome:
        """Put back the release each host served before its current one, and verify it."""
        return self.start(
            "rollback", serial=serial, break_host_lock=break_host_lock, limit=limit, on_event=on_event
        ).wait()

    def verify(self, *, limit: str | None = None, on_event: EventHandler | None = None) -> RunOutcome:
        """Check the endpoint (playbooks/verify.yml)."""
        return self.start("verify", limit=limit, on_event=on_event).wait()

    def benchmark(
        self,
        *,
        sweep: Sequence[int] | None = None,
        limit: str | None = None,
        on_event: EventHandler | None = None,
    ) -> RunOutcome:
        """Measure the endpoint (playbooks/benchmark.yml). With `sweep` (ascending concurrencies, e.g.
        [1, 2, 4, 8]), run the profile at each and write a table and a picture per host under results/
        (`outcome.sweeps`)."""
        return self.start("benchmark", sweep=sweep, limit=limit, on_event=on_event).wait()

    def start(
        self,
        command: str,
        *,
        to: Mapping[str, Any] | None = None,
        serial: int | str | None = None,
        benchmark_floor: Mapping[str, float] | None = None,
        if_changed: bool = False,
        break_host_lock: bool = False,
        sweep: Sequence[int] | None = None,
        limit: str | None = None,
        on_event: EventHandler | None = None,
    ) -> RunHandle:
        """Start `command` (deploy, redeploy, rollback, verify or benchmark) in a thread and return its handle.

        Input errors (no model chosen, impossible plan) and a held lock are raised here, before the thread
        starts.
        """
        if command not in self.playbooks:
            raise InputError(f"unknown command {command!r}", hint=f"one of {', '.join(self.playbooks)}")
        if if_changed and command not in ("deploy", "redeploy"):
            raise InputError(f"if_changed applies to deploy and redeploy, not {command}")
        if to and command != "redeploy":
            raise InputError(f"a target (to=) applies to redeploy, not {command}")
        if benchmark_floor and command != "redeploy":
            raise InputError(f"a benchmark floor applies to redeploy, not {command}")
        if (serial is not None or break_host_lock) and command not in ("redeploy", "rollback"):
            raise InputError(f"serial and break_host_lock apply to redeploy and rollback, not {command}")
        plan = self.plan(to if command == "redeploy" else None)
        extravars = self._extravars(to if command == "redeploy" else None)
        if command in ("redeploy", "rollback"):
            extravars["glm_redeploy_serial"] = _check_serial(serial if serial is not None else 1)
            extravars["glm_break_host_lock"] = bool(break_host_lock)
        if benchmark_floor:
            extravars["glm_benchmark_floor"] = _check_floor(benchmark_floor)
        sweep_stamp = None
        if sweep is not None:
            if command != "benchmark":
                raise InputError(f"a sweep applies to benchmark, not {command}")
            # One stamp for every host and point, so the report finds exactly this run's results.
            sweep_stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
            extravars.update(
                benchmark_concurrencies=benchmark_report.check_concurrencies(sweep),
                benchmark_result_stamp=sweep_stamp,
                glm_results_dir=str(self.results_dir()),
            )
        run_id = new_run_id()
        holder_command = f"glm-deploy {command} -i {self.inventory}"
        extravars["glm_lock_holder"] = {"run": run_id, "command": holder_command, **_controller()}
        lock = ControllerLock(self.state_dir, command=holder_command)
        lock.acquire()
        try:
            run_secrets = self.secrets(create_api_key=command in RELEASE_COMMANDS)
        except BaseException:
            lock.release()
            raise

        def target(emit: EventHandler, cancel: threading.Event) -> RunOutcome:
            def forward(event: dict[str, Any]) -> None:
                if on_event is not None:
                    on_event(event)
                emit(event)

            try:
                outcome = self._execute(
                    command,
                    plan=plan,
                    to=to if command == "redeploy" else None,
                    extravars=extravars,
                    run_secrets=run_secrets,
                    if_changed=if_changed,
                    limit=limit,
                    on_event=forward,
                    cancel=cancel,
                    run_id=run_id,
                )
                if sweep_stamp is not None:
                    outcome = dataclasses.replace(outcome, sweeps=self._sweep_reports(plan, outcome, sweep_stamp))
                return outcome
            finally:
                lock.release()

        return RunHandle(command, target)

    def results_dir(self) -> Path:
        """Where benchmark results land on the controller: the inventory's glm_results_dir, else results/ in the
        project."""
        configured = self.inventory_view().vars_for().get("glm_results_dir")
        if not configured:
            return self.project_dir / "results"
        path = Path(str(configured)).expanduser()
        return path if path.is_absolute() else self.project_dir / path

    def _sweep_reports(
        self, plan: Plan, outcome: RunOutcome, stamp: str
    ) -> tuple[benchmark_report.WrittenReport, ...]:
        """Each benchmarked host's sweep report, beside the last good release's sweep and the published point."""
        entries = self.history()
        # Releases the hosts served after a successful deploy, redeploy or rollback: only these are baselines.
        good: set[str] = set()
        for entry in entries:
            if entry.command in RELEASE_COMMANDS and entry.ok and entry.release is not None:
                good.add(entry.release.release_id)
        written = []
        for host in outcome.entry.hosts:
            release = _host_release(entries, host) or Release.from_plan(plan)
            subject = benchmark_report.SweepSubject.from_plan(plan, host=host, release=release)
            report = benchmark_report.build_report(
                self.results_dir(), subject, stamp, plan_benchmark=plan.benchmark, good_releases=good
            )
            written.append(benchmark_report.write_report(report, self.results_dir()))
        return tuple(written)

    def _extravars(self, to: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The explicit choices and the target, as extra variables (they win over the inventory's)."""
        target = _check_target(to)
        extravars: dict[str, Any] = {}
        for name in TARGET_SETTINGS:
            value = target.get(name, getattr(self, name))
            if value is not None:
                extravars[f"glm_{name}"] = value
        if self.options is not None or any(key not in TARGET_SETTINGS for key in target):
            extravars["glm_options"] = self.settings(to)["options"]
        return extravars

    def _execute(
        self,
        command: str,
        *,
        plan: Plan,
        to: Mapping[str, Any] | None,
        extravars: dict[str, Any],
        run_secrets: dict[str, str],
        if_changed: bool,
        limit: str | None,
        on_event: EventHandler,
        cancel: threading.Event,
        run_id: str,
    ) -> RunOutcome:
        started_at, started = _now(), time.monotonic()
        release = Release.from_plan(plan)

        def record_without_run(status: str, run_release: Release, error: str | None = None) -> HistoryEntry:
            """History for an outcome decided before any playbook ran (nothing to deploy, or no answer)."""
            return self._history.append(
                HistoryEntry(
                    run_id=f"{status}-{secrets_module.token_hex(4)}",
                    command=command,
                    inventory=str(self.inventory),
                    status=status,
                    started_at=started_at,
                    finished_at=_now(),
                    duration_s=round(time.monotonic() - started, 3),
                    release=run_release,
                    error=error,
                    controller=_controller(),
                ),
                secrets=run_secrets.values(),
            )

        if command in ("deploy", "redeploy"):
            endpoint = self.hf_endpoint()
            commit: str | None = None
            if if_changed:
                # The scheduled path: the comparison is the point, so failing to resolve is an error.
                try:
                    commit = resolve_model_commit(
                        plan, endpoint=endpoint, token=run_secrets.get("glm_hf_token")
                    )
                except GlmDeployError as error:
                    # A scheduled check that cannot resolve must leave a trace where people look.
                    record_without_run("error", release, error=str(error))
                    raise
            elif endpoint or plan.revision_pinned:
                # Best effort: the weights role resolves the branch itself and pins the plan to it.
                with contextlib.suppress(GlmDeployError):
                    commit = resolve_model_commit(
                        plan, endpoint=endpoint, token=run_secrets.get("glm_hf_token"), timeout_s=10
                    )
            if commit is not None:
                if command == "redeploy" and not plan.revision_pinned:
                    # Named after the plan the hosts will serve. The playbook pins it (glm.deploy.plan pin.yml, the
                    # one place a run is pinned): every host of the roll gets the commit its first host fetched.
                    plan = self.plan({**(to or {}), "revision": commit})
                release = Release.from_plan(plan, model_commit=commit)
            if if_changed and release.same_as(self.current_release()):
                return RunOutcome(command=command, entry=record_without_run("unchanged", release))

        host_releases: dict[str, dict[str, Any]] = {}
        host_caches: dict[str, dict[str, Any]] = {}
        host_quality: dict[str, list[dict[str, Any]]] = {}

        def collect(event: dict[str, Any]) -> None:
            data = event.get("event_data") or {}
            gate = _quality_gate_result(event)
            if gate is not None:
                host_quality.setdefault(str(data.get("host")), []).append(gate)
            if event.get("event") == "runner_on_ok":
                facts = (data.get("res") or {}).get("ansible_facts") or {}
                reported = facts.get(RELEASE_FACT)
                if isinstance(reported, Mapping):
                    host_releases[str(data.get("host"))] = dict(reported)
                caches = facts.get(CACHES_FACT)
                if isinstance(caches, Mapping):
                    host_caches[str(data.get("host"))] = {
                        str(kind): dict(record) for kind, record in caches.items() if isinstance(record, Mapping)
                    }
            on_event(event)

        result: RunResult | None = None
        failure: BaseException | None = None
        try:
            playbook = Path(self.playbooks[command])
            result = self._runner.run(
                playbook if playbook.is_absolute() else self.project_dir / playbook,
                inventory=self.inventory,
                extravars=extravars,
                secrets=run_secrets,
                limit=limit,
                event_handler=collect,
                cancel=cancel,
                raise_on_failure=False,
                run_id=run_id,
            )
        except BaseException as error:
            failure = error

        rolled_back = {
            host: reported for host, reported in host_releases.items() if reported.get("outcome") == "rolled_back"
        }
        if command in RELEASE_COMMANDS:
            # What the hosts report serving (with the venv lock or image digest only they know) names the release.
            served = [
                reported for host, reported in host_releases.items() if command == "rollback" or host not in rolled_back
            ]
            reported_release = _agreed_release(served)
            if reported_release is not None:
                release = reported_release
            elif served and release.model_commit is None:
                # Hosts that report only what they fetched: the commit the branch resolved to.
                reported_commit = served[0].get("model_commit")
                if isinstance(reported_commit, str) and reported_commit:
                    release = dataclasses.replace(release, model_commit=reported_commit)
        status = result.status if result is not None else ("canceled" if cancel.is_set() else "error")
        entry = HistoryEntry(
            run_id=result.run_id if result else run_id,
            command=command,
            inventory=str(self.inventory),
            status=status,
            started_at=started_at,
            finished_at=_now(),
            duration_s=round(time.monotonic() - started, 3),
            rc=result.rc if result else None,
            hosts={host: dataclasses.asdict(stats) for host, stats in result.hosts.items()} if result else {},
            failures=[dataclasses.asdict(item) for item in result.failures] if result else [],
            release=release,
            host_releases=host_releases,
            host_caches=host_caches,
            host_quality=host_quality,
            artifact_dir=str(result.artifact_dir) if result else None,
            error=str(failure) if failure is not None else None,
            controller=_controller(),
        )
        # The caller gets the entry as recorded: what it prints (--json) is as free of secrets as the file.
        entry = self._history.append(entry, secrets=run_secrets.values())
        if command == "redeploy" and rolled_back:
            # The automatic rollback is history of its own: the hosts went back to what they served before.
            restored = _agreed_release(list(rolled_back.values()))
            first_host, first = next(iter(rolled_back.items()))
            self._history.append(
                HistoryEntry(
                    run_id=f"{entry.run_id}-rollback",
                    command="rollback",
                    inventory=str(self.inventory),
                    status="successful",
                    started_at=entry.started_at,
                    finished_at=entry.finished_at,
                    duration_s=0.0,
                    release=restored,
                    host_releases=rolled_back,
                    hosts={host: entry.hosts.get(host, {}) for host in rolled_back},
                    artifact_dir=entry.artifact_dir,
                    controller=entry.controller,
                    note=f"automatic, after release {first.get('failed_release')} failed on {first_host} in run "
                    f"{entry.run_id}: {first.get('cause')}"
                    + (f" [{first['journal_error']}]" if first.get("journal_error") else ""),
                ),
                secrets=run_secrets.values(),
            )
        if failure is not None:
            raise failure
        if result is None:
            raise RuntimeError(f"glm-deploy {command} ended without a result")
        if result.status == "canceled":
            raise RunCancelled(
                f"glm-deploy {command} (run {result.run_id}) was cancelled; hosts may be half-converged",
                hint=f"run glm-deploy {command} again to finish; the output so far is in "
                f"{result.artifact_dir}/stdout",
                artifact_dir=str(result.artifact_dir),
            )
        if not result.ok:
            raise _failed(command, result, run_secrets)
        return RunOutcome(command=command, entry=entry, result=result)


def _check_target(to: Mapping[str, Any] | None) -> dict[str, Any]:
    """A redeploy's target: plan options and TARGET_SETTINGS, each checked by name."""
    if to is None:
        return {}
    if not isinstance(to, Mapping):
        raise InputError(f"to= must be a mapping of settings, got {clip(to)}", hint='e.g. to={"revision": "v2"}')
    known = {option.name for option in dataclasses.fields(PlanOptions)} | set(TARGET_SETTINGS)
    unknown = sorted(set(to) - known)
    if unknown:
        raise InputError(
            f"unknown redeploy setting(s) {clip(', '.join(unknown))}",
            hint=f"one of {', '.join(sorted(known))}",
        )
    return dict(to)


# How many hosts a roll moves at once: a positive count, or a share such as "25%" (also checked in schedules).
# \Z, not $: `$` also matches before a trailing newline.
SERIAL_PATTERN = re.compile(r"(?:[1-9][0-9]{0,5}|(?:[1-9][0-9]?|100)%)\Z")


def _check_serial(serial: int | str) -> int | str:
    """How many hosts a roll moves at once: a positive count, or a share of the hosts such as "25%"."""
    text = str(serial).strip()
    if isinstance(serial, bool) or not SERIAL_PATTERN.match(text):
        raise InputError(
            f"serial must be a positive number of hosts or a share such as 25%, got {clip(serial)}",
            hint="serial=1 (the default) moves one host at a time",
        )
    return int(text) if text.isdigit() else text


def _check_floor(floor: Mapping[str, float]) -> dict[str, float]:
    """A benchmark floor: result keys of `vllm bench serve` (output_throughput, ...) to their minimums."""
    checked: dict[str, float] = {}
    for key, minimum in floor.items():
        try:
            checked[str(key)] = float(minimum)
        except (TypeError, ValueError):
            raise InputError(
                f"benchmark floor {key} must be a number, got {minimum!r}",
                hint="e.g. output_throughput=300 (tokens/s)",
            ) from None
    return checked


def _agreed_release(reports: Sequence[Mapping[str, Any]]) -> Release | None:
    """The release the hosts report (all the same one), else None."""
    releases = [Release.from_dict(report) for report in reports if report.get("release_id")]
    if not releases or any(release.release_id != releases[0].release_id for release in releases):
        return None
    return releases[0]


def _host_release(entries: list[HistoryEntry], host: str) -> Release | None:
    """What `host` serves, by the history: the last release a successful run (or an automatic rollback)
    reported for it, or the release of the last successful run that included it."""
    for entry in reversed(entries):
        if entry.command not in RELEASE_COMMANDS:
            continue
        reported = entry.host_releases.get(host)
        if reported and reported.get("release_id") and (entry.ok or reported.get("outcome") == "rolled_back"):
            if entry.command == "redeploy" and reported.get("outcome") == "rolled_back":
                continue  # the rollback entry that follows names it
            return Release.from_dict(reported)
        if entry.ok and host in entry.hosts and entry.release is not None:
            return entry.release
    return None


def _quality_gate_result(event: Mapping[str, Any]) -> dict[str, Any] | None:
    """The scores of a glm.deploy.quality_gate task that passed or failed, from its runner event; else None."""
    if event.get("event") not in ("runner_on_ok", "runner_on_failed"):
        return None
    data = event.get("event_data") or {}
    if not str(data.get("task_action", "")).endswith("quality_gate"):
        return None
    result = data.get("res") or {}
    accuracy = result.get("accuracy")
    if not isinstance(accuracy, Mapping):
        return None
    speculative = result.get("speculative")
    return {
        "release_id": result.get("release_id"),
        "passed": bool(result.get("passed")),
        "set": accuracy.get("set"),
        "score": accuracy.get("score"),
        "correct": accuracy.get("correct"),
        "total": accuracy.get("total"),
        "floor": accuracy.get("floor"),
        "baseline": accuracy.get("baseline"),
        "seconds": accuracy.get("seconds"),
        "speculative": dict(speculative) if isinstance(speculative, Mapping) else None,
        "message": result.get("message"),
    }


def _host_caches_entry(entries: list[HistoryEntry], host: str) -> HistoryEntry | None:
    """The last deploy, redeploy or rollback in which `host` reported its JIT caches (fact glm_caches)."""
    for entry in reversed(entries):
        if entry.command in RELEASE_COMMANDS and entry.host_caches.get(host):
            return entry
    return None


def _failed(command: str, result: RunResult, run_secrets: Mapping[str, str]) -> RunError:
    hint = (
        f"the run's output is in {result.artifact_dir}/stdout; fix the cause and run glm-deploy {command} "
        "again (finished steps are not redone)"
    )
    if result.failures:
        # A redeploy's or rollback's own last failure sums up the host's story (the cause, what was restored);
        # the failures before it were rescued.
        first = result.failures[-1] if command in ("redeploy", "rollback") else result.failures[0]
        others = len({failure.host for failure in result.failures} - {first.host})
        message = redact(first.message, run_secrets.values())
        if others:
            message += f" (and failures on {others} more host(s): see `glm-deploy history --json`)"
        return RunError(
            message, host=first.host, step=first.task, hint=hint, artifact_dir=str(result.artifact_dir)
        )
    unreachable = sorted(host for host, stats in result.hosts.items() if stats.unreachable)
    message = f"{Path(result.playbook).name} ended with status {result.status} (rc {result.rc})"
    if unreachable:
        message += f"; unreachable: {', '.join(unreachable)}"
    return RunError(message, hint=hint, artifact_dir=str(result.artifact_dir))


def resolve_model_commit(
    plan: Plan, *, endpoint: str | None, token: str | None = None, timeout_s: float = 30.0
) -> str:
    """The commit `plan.model_revision` names on the Hub at `endpoint` (a pinned revision is its own
    commit)."""
    if plan.revision_pinned:
        return plan.model_revision
    # Imported here: huggingface_hub is slow to import and only this path needs it.
    from huggingface_hub import HfApi  # noqa: PLC0415
    from huggingface_hub.errors import HfHubHTTPError  # noqa: PLC0415

    where = endpoint or "https://huggingface.co"
    try:
        info = HfApi(endpoint=endpoint, token=token or False).model_info(
            plan.model_repo, revision=plan.model_revision, timeout=timeout_s
        )
    except HfHubHTTPError as error:
        raise GlmDeployError(
            f"could not resolve {plan.model_repo}@{plan.model_revision} on {where}: {error}",
            hint="check the repository and branch exist there (glm_hf_endpoint / HF_ENDPOINT) and that "
            "HF_TOKEN is set for gated repositories",
        ) from None
    except Exception as error:
        raise GlmDeployError(
            f"could not reach the Hub at {where} to resolve {plan.model_repo}@{plan.model_revision}: {error}",
            hint="check glm_hf_endpoint / HF_ENDPOINT and the network",
        ) from None
    if not info.sha:
        raise GlmDeployError(
            f"the Hub at {where} returned no commit for {plan.model_repo}@{plan.model_revision}"
        )
    return str(info.sha)
