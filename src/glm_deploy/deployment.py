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

Beside this module: `run_handle` (the thread a run is in, and its outcome), `run_record` (what the hosts report
and the history entries a run makes), `run_arguments` (the checks of a run's arguments), `status` (what
`status()` reads from the history), `credentials` (the secrets) and `release` (what a deployment serves).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from glm_deploy import benchmark_report, benchmark_sweep, paths
from glm_deploy.catalog import Catalog, load_catalog
from glm_deploy.credentials import controller_secrets
from glm_deploy.errors import GlmDeployError, InputError
from glm_deploy.history import HistoryEntry, HistoryStore
from glm_deploy.inventory import InventoryView, read_inventory, resolve_inventory
from glm_deploy.lock import ControllerLock, current_holder
from glm_deploy.release import Release, resolve_model_commit
from glm_deploy.render import Plan, PlanOptions, render_plan
from glm_deploy.render.options import options_on_filesystem
from glm_deploy.run_arguments import TARGET_SETTINGS, check_floor, check_serial, check_target
from glm_deploy.run_handle import EventHandler, RunHandle, RunOutcome
from glm_deploy.run_record import (
    HostReports,
    RunClock,
    automatic_rollback_entry,
    controller_identity,
    entry_without_run,
    finish,
    run_entry,
)
from glm_deploy.runner import PlaybookRunner, RunResult, new_run_id
from glm_deploy.status import RELEASE_COMMANDS, DeploymentStatus, deployment_status, host_release, last_serving
from glm_deploy.validation import clip

# The playbook each command runs (paths relative to the project directory).
DEFAULT_PLAYBOOKS: dict[str, str] = {
    "deploy": "playbooks/site.yml",
    "redeploy": "playbooks/redeploy.yml",
    "rollback": "playbooks/rollback.yml",
    "verify": "playbooks/verify.yml",
    "benchmark": "playbooks/benchmark.yml",
}


def default_state_dir() -> Path:
    """`$GLM_DEPLOY_STATE`, else `.cache/glm-deploy` in the project."""
    override = os.environ.get("GLM_DEPLOY_STATE")
    if override:
        return Path(override).expanduser().resolve()
    return paths.project_root() / ".cache" / "glm-deploy"


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
        target = check_target(to)
        needs_inventory = None in (self.model, self.engine, self.hardware) or not isinstance(
            self.options, PlanOptions
        )
        variables = self.inventory_view().vars_for() if needs_inventory else {}
        options = self._options_mapping(variables.get("glm_options"))
        options.update({key: value for key, value in target.items() if key not in TARGET_SETTINGS})
        mount = variables.get("glm_filesystem_mount")
        if mount:
            # As the plan role does: the HF cache on the host's shared filesystem, unless hf_home is chosen.
            options = options_on_filesystem(options, mount, self._loaded_catalog().shared_filesystem_weights)
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
        return render_plan(
            self._loaded_catalog(),
            model=chosen["model"],
            engine=chosen["engine"],
            hardware=chosen["hardware"],
            nodes=chosen["nodes"],
            options=PlanOptions.from_mapping(chosen["options"]),
        )

    def _loaded_catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = load_catalog()
        return self._catalog

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
        """The secrets a run passes to the play: the ones given to the constructor, else the controller's
        (glm_deploy.credentials; the API key is made when `create_api_key` and there is none)."""
        if self._secrets is not None:
            return dict(self._secrets)
        return controller_secrets(create_api_key=create_api_key)

    # -- what the controller remembers
    # ---------------------------------------------------------------------------

    def history(self) -> list[HistoryEntry]:
        """Every run recorded for this state directory, oldest first (an automatic rollback is an entry of
        its own, right after the failed redeploy it undid)."""
        return self._history.entries()

    def current_release(self) -> Release | None:
        """The release of the last successful deploy, redeploy or rollback (automatic ones included)."""
        entry = last_serving(self.history())
        return entry.release if entry else None

    def status(self) -> DeploymentStatus:
        """The current release, each host's last run and release, and who holds the lock (no host is
        contacted)."""
        return deployment_status(
            self.history(),
            self.inventory_view(),
            inventory=str(self.inventory),
            state_dir=str(self.state_dir),
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
            extravars["glm_redeploy_serial"] = check_serial(serial if serial is not None else 1)
            extravars["glm_break_host_lock"] = bool(break_host_lock)
        if benchmark_floor:
            extravars["glm_benchmark_floor"] = check_floor(benchmark_floor)
        sweep_stamp = None
        if sweep is not None:
            if command != "benchmark":
                raise InputError(f"a sweep applies to benchmark, not {command}")
            # One stamp for every host and point, so the report finds exactly this run's results.
            sweep_stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
            extravars.update(
                benchmark_concurrencies=benchmark_sweep.check_concurrencies(sweep),
                benchmark_result_stamp=sweep_stamp,
                glm_results_dir=str(self.results_dir()),
            )
        run_id = new_run_id()
        holder_command = f"glm-deploy {command} -i {self.inventory}"
        extravars["glm_lock_holder"] = {"run": run_id, "command": holder_command, **controller_identity()}
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
            release = host_release(entries, host) or Release.from_plan(plan)
            subject = benchmark_sweep.SweepSubject.from_plan(plan, host=host, release=release)
            report = benchmark_sweep.build_report(
                self.results_dir(), subject, stamp, plan_benchmark=plan.benchmark, good_releases=good
            )
            written.append(benchmark_report.write_report(report, self.results_dir()))
        return tuple(written)

    def _extravars(self, to: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The explicit choices and the target, as extra variables (they win over the inventory's)."""
        target = check_target(to)
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
        """Run the command's playbook (unless `if_changed` finds nothing to do) and record the run."""
        clock = RunClock.start()
        release: Release | None = Release.from_plan(plan)
        if command not in RELEASE_COMMANDS:
            # verify and benchmark change nothing: the hosts report the release they serve (their own record);
            # where none does, the history's word stands in, never a release made up from today's plan.
            release = self.current_release()
        if command in ("deploy", "redeploy"):
            release = self._expected_release(command, plan, to, run_secrets, if_changed=if_changed, clock=clock)
            if if_changed and release.same_as(self.current_release()):
                unchanged = entry_without_run(command, "unchanged", release, inventory=str(self.inventory), clock=clock)
                return RunOutcome(command=command, entry=self._record(unchanged, run_secrets))
        reports = HostReports()
        result, failure = self._run_playbook(
            command,
            extravars=extravars,
            run_secrets=run_secrets,
            limit=limit,
            on_event=reports.forwarding(on_event),
            cancel=cancel,
            run_id=run_id,
        )
        entry = run_entry(
            command,
            inventory=str(self.inventory),
            run_id=run_id,
            release=reports.served_release(command, release),
            result=result,
            failure=failure,
            cancelled=cancel.is_set(),
            clock=clock,
            reports=reports,
        )
        entry = self._record(entry, run_secrets)
        if command == "redeploy" and reports.rolled_back:
            self._record(automatic_rollback_entry(entry, reports.rolled_back), run_secrets)
        return finish(command, entry, result, failure, run_secrets)

    def _expected_release(
        self,
        command: str,
        plan: Plan,
        to: Mapping[str, Any] | None,
        run_secrets: Mapping[str, str],
        *,
        if_changed: bool,
        clock: RunClock,
    ) -> Release:
        """The release a deploy or redeploy should leave serving, its branch resolved to a commit on the Hub:
        where the Hub answers (best effort), or, with `if_changed`, always (an error, recorded, otherwise)."""
        endpoint = self.hf_endpoint()
        token = run_secrets.get("glm_hf_token")
        commit: str | None = None
        if if_changed:
            # The scheduled path: the comparison is the point, so failing to resolve is an error.
            try:
                commit = resolve_model_commit(plan, endpoint=endpoint, token=token)
            except GlmDeployError as error:
                # A scheduled check that cannot resolve must leave a trace where people look.
                failed = entry_without_run(
                    command,
                    "error",
                    Release.from_plan(plan),
                    inventory=str(self.inventory),
                    clock=clock,
                    error=str(error),
                )
                self._record(failed, run_secrets)
                raise
        elif endpoint or plan.revision_pinned:
            # Best effort: the weights role resolves the branch itself.
            with contextlib.suppress(GlmDeployError):
                commit = resolve_model_commit(plan, endpoint=endpoint, token=token, timeout_s=10)
        if commit is None:
            return Release.from_plan(plan)
        if not plan.revision_pinned:
            # Named after the plan the hosts will serve: a deploy or redeploy pins it at the commit the weights were
            # fetched at (glm.deploy.plan pin.yml, the one place a run is pinned; a roll pins every host to its
            # first host's commit), so the release the hosts report is the pinned plan's. Named after the unpinned
            # plan, a deploy of a branch never compared equal and `--if-changed` always ran.
            plan = self.plan({**(to or {}), "revision": commit})
        return Release.from_plan(plan, model_commit=commit)

    def _run_playbook(
        self,
        command: str,
        *,
        extravars: Mapping[str, Any],
        run_secrets: Mapping[str, str],
        limit: str | None,
        on_event: EventHandler,
        cancel: threading.Event,
        run_id: str,
    ) -> tuple[RunResult | None, BaseException | None]:
        """The command's playbook through ansible-runner. What it raises comes back rather than up, so that the
        run is recorded before the caller sees it."""
        playbook = Path(self.playbooks[command])
        try:
            result = self._runner.run(
                playbook if playbook.is_absolute() else self.project_dir / playbook,
                inventory=self.inventory,
                extravars=extravars,
                secrets=run_secrets,
                limit=limit,
                event_handler=on_event,
                cancel=cancel,
                raise_on_failure=False,
                run_id=run_id,
            )
        except BaseException as error:
            return None, error
        return result, None

    def _record(self, entry: HistoryEntry, run_secrets: Mapping[str, str]) -> HistoryEntry:
        """Append `entry` to the history without the run's secrets, and return it as recorded: what the caller
        prints (--json) is as free of secrets as the file."""
        return self._history.append(entry, secrets=run_secrets.values())
