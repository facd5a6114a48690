"""`glm-deploy deploy|redeploy|rollback|verify|benchmark|status|history`: the `Deployment` API on the command line.

Exit codes: 0 ok, 1 the run failed (a redeploy that rolled back included), 2 bad input, 3 another run holds the
controller lock, 130 cancelled (Ctrl-C).
Progress goes to stderr (task names as they start, elapsed time, the weights download's bytes/rate/ETA); the
result goes to stdout, as JSON with `--json`.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import yaml

from glm_deploy import benchmark_report, benchmark_reuse, benchmark_sweep, lambda_status, stack_lock
from glm_deploy.deployment import Deployment
from glm_deploy.errors import GlmDeployError, InputError, LockHeldError, RunError
from glm_deploy.history import HistoryEntry
from glm_deploy.lock import describe_holder
from glm_deploy.progress import ProgressRenderer, human_bytes, human_duration
from glm_deploy.run_events import RunEvent
from glm_deploy.run_handle import RunOutcome
from glm_deploy.status import HostStatus
from glm_deploy.validation import clip

DEFAULT_INVENTORY = "inventories/sandbox"

# How often a long step says it is still running when it prints nothing itself.
HEARTBEAT_S = 30.0


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-i",
        "--inventory",
        default=DEFAULT_INVENTORY,
        help=f"inventory file or directory (default {DEFAULT_INVENTORY})",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="where history, locks and run artifacts live (default $GLM_DEPLOY_STATE or .cache/glm-deploy)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    descriptions = {
        "deploy": (
            "converge the inventory's hosts to the plan",
            "Converge the inventory's hosts to the plan: weights, engine, service, health (site.yml).",
        ),
        "redeploy": (
            "move the hosts to a new release, verified, with automatic rollback",
            "Move the hosts to a new release one host at a time (playbooks/redeploy.yml): stage it while the old "
            "release serves, cut over, gate on the verify checks (and --min-output-tps), and on failure restore "
            "the previous release, verify it and stop the roll. Exit 1 names the host, the step and the cause.",
        ),
        "rollback": (
            "put back the release each host served before",
            "Put back the release each host served before its current one, and verify it (playbooks/rollback.yml).",
        ),
        "verify": (
            "check the endpoint",
            "Check the endpoint: health, model list, chat, tool call (verify.yml).",
        ),
        "benchmark": (
            "measure the endpoint",
            "Measure the endpoint's throughput and latency (benchmark.yml). With --sweep, run the hardware's "
            "profile at each concurrency and write a table (Markdown, CSV, JSON) and a picture of output tok/s "
            "per GPU against tok/s per user (PNG, SVG; needs the 'plot' extra) under results/.",
        ),
    }
    for command, (summary, description) in descriptions.items():
        parser = subparsers.add_parser(command, help=summary, description=description)
        add_common_arguments(parser)
        parser.add_argument("--limit", help="only these hosts (an Ansible host pattern)")
        if command == "deploy":
            parser.add_argument(
                "--if-changed",
                action="store_true",
                help="resolve the release (model branch -> commit on the Hub) and deploy only when it "
                "differs from the current one",
            )
            parser.add_argument("--model", help="catalog model (default: glm_model from the inventory)")
            parser.add_argument("--engine", help="engine (default: glm_engine from the inventory)")
            parser.add_argument("--hardware", help="hardware (default: glm_hardware from the inventory)")
            parser.add_argument(
                "--nodes", type=int, help="nodes to span (default: glm_nodes or the catalog's)"
            )
        if command == "redeploy":
            add_redeploy_arguments(parser)
        if command == "benchmark":
            parser.add_argument(
                "--sweep",
                metavar="C1,C2,...",
                help="concurrencies to measure in turn, ascending (e.g. 1,2,4,8,16,32); each sends the profile's "
                "prompts per concurrent request",
            )
            parser.add_argument(
                "--if-new",
                action="store_true",
                help="measure only when the release the hosts serve has no successful benchmark in the history yet; "
                "else say which run measured it and print its stored figures",
            )
        if command in ("redeploy", "rollback"):
            parser.add_argument(
                "--serial",
                default="1",
                help="hosts moved at once: a count or a share such as 25%% (default 1)",
            )
            parser.add_argument(
                "--break-host-lock",
                action="store_true",
                help="take the hosts' redeploy lock even when a run that died left it behind",
            )
        parser.set_defaults(handler=run_command, command_name=command)

    status = subparsers.add_parser(
        "status",
        help="what the controller knows: current release, each host's last run, the lock, Lambda instances",
        description="Show the current release (the last successful deploy), each host's last run and who "
        "holds the controller lock. No host is contacted. With a Lambda inventory (or instances `glm-deploy up` "
        "launched), also each instance's type, region, uptime and hourly price (GET /instance-types; the key "
        "from LAMBDA_API_KEY or LAMBDA_API_KEY_FILE).",
    )
    add_common_arguments(status)
    status.set_defaults(handler=show_status)

    history = subparsers.add_parser(
        "history",
        help="the runs recorded for this controller, oldest first",
        description="List the deploy/verify/benchmark runs recorded in the controller's history.",
    )
    add_common_arguments(history)
    history.add_argument(
        "-n", "--last", type=int, default=20, help="show the last N runs (default 20; 0 = all)"
    )
    history.set_defaults(handler=show_history)


def add_redeploy_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--if-changed",
        action="store_true",
        help="resolve the release first and do nothing when it is the current one (what the schedule runs)",
    )
    parser.add_argument("--revision", help="model branch, tag or commit to serve (default: the inventory's)")
    parser.add_argument("--engine-version", help="engine version to serve (default: the catalog's)")
    parser.add_argument("--image", help="engine image to serve (container runtime)")
    parser.add_argument("--model", help="catalog model to serve instead of the inventory's")
    parser.add_argument("--engine", help="engine to serve instead of the inventory's")
    parser.add_argument(
        "--extra-arg",
        action="append",
        default=None,
        metavar="ARG",
        help="an engine argument added to the command line (repeat for several); replaces the inventory's",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="OPTION=VALUE",
        help="any other plan option, the value read as YAML (e.g. --set max_model_len=4096)",
    )
    parser.add_argument(
        "--min-output-tps",
        type=float,
        help="after verify, benchmark and refuse the release below this many output tokens/s",
    )
    parser.add_argument(
        "--canary",
        action="store_true",
        help="move the first host alone; only when it passes every gate, lock its release (--lock-file) and "
        "move the other hosts to exactly that release",
    )
    parser.add_argument(
        "--from-lock",
        action="store_true",
        help="serve the release the lock file names for this model/engine/hardware (its commit, engine, image)",
    )
    parser.add_argument(
        "--lock-file",
        type=Path,
        default=Path(stack_lock.LOCK_FILE),
        help=f"the stack lock that --canary moves and --from-lock reads (default {stack_lock.LOCK_FILE})",
    )


def redeploy_target(args: argparse.Namespace) -> dict[str, Any]:
    """The redeploy target from the command line's options."""
    target: dict[str, Any] = {}
    for option in getattr(args, "set", []) or []:
        name, separator, value = option.partition("=")
        if not separator or not name.strip():
            raise InputError(f"--set takes OPTION=VALUE, got {clip(option)}", hint="e.g. --set max_model_len=4096")
        try:
            target[name.strip()] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError as error:
            raise InputError(f"--set {clip(name)}: the value is not YAML: {clip(str(error), 120)}") from None
    for name in ("revision", "engine_version", "image", "model", "engine"):
        value = getattr(args, name, None)
        if value is not None:
            target[name] = value
    if getattr(args, "extra_arg", None) is not None:
        target["extra_args"] = list(args.extra_arg)
    return target


def _deployment(args: argparse.Namespace) -> Deployment:
    return Deployment(
        args.inventory,
        state_dir=args.state_dir,
        model=getattr(args, "model", None),
        engine=getattr(args, "engine", None),
        hardware=getattr(args, "hardware", None),
        nodes=getattr(args, "nodes", None),
    )


def error_document(command: str, error: GlmDeployError) -> dict[str, Any]:
    """The JSON a failed command prints with --json."""
    document: dict[str, Any] = {
        "command": command,
        "ok": False,
        "exit_code": error.exit_code,
        "error": error.message,
        "hint": error.hint,
        "type": type(error).__name__,
    }
    if isinstance(error, RunError):
        document.update(host=error.host, step=error.step, artifact_dir=error.artifact_dir)
    if isinstance(error, LockHeldError):
        document["holder"] = error.holder
    return document


def _fail(args: argparse.Namespace, command: str, error: GlmDeployError) -> int:
    if args.json:
        print(json.dumps(error_document(command, error), indent=2))
    print(f"glm-deploy {command}: error: {error}", file=sys.stderr)
    return error.exit_code


class RunDisplay:
    """Draws a run's events on a stream: each task as it starts with the elapsed time, failures at once, the
    weights download as a progress bar, and a heartbeat while a step runs quietly."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.started = time.monotonic()
        self.task: str | None = None
        self.task_started = self.started
        self.last_output = self.started
        self.progress = ProgressRenderer(stream)
        self._lock = threading.Lock()

    def _elapsed(self) -> str:
        return human_duration(time.monotonic() - self.started).rjust(6)

    def _write(self, text: str) -> None:
        self.progress.close()
        self.stream.write(text + "\n")
        self.stream.flush()
        self.last_output = time.monotonic()

    def handle(self, event: Mapping[str, Any]) -> None:
        with self._lock:
            self._handle(event)

    def _handle(self, event: Mapping[str, Any]) -> None:
        typed = RunEvent.of(event)
        kind = typed.kind
        if kind == "playbook_on_task_start":
            now = time.monotonic()
            if self.task is not None and now - self.task_started >= 10:
                self._write(
                    f"{self._elapsed()}    ({self.task} took {human_duration(now - self.task_started)})"
                )
            self.task = typed.task or "?"
            self.task_started = now
            self._write(f"{self._elapsed()}  {self.task}")
        elif kind == "playbook_on_play_start":
            self._write(f"{self._elapsed()}  == {typed.play or typed.task or 'play'} ==")
        elif typed.failed and kind != "runner_item_on_failed":  # a loop's task fails after its items: said once
            what = "UNREACHABLE" if typed.unreachable else "FAILED"
            message = typed.message.splitlines()[0][:300] if typed.message else "failed"
            self._write(f"{self._elapsed()}  {what} {typed.host or '?'}: {message}")
        elif kind == "runner_retry":
            self.last_output = time.monotonic()
        for label, progress in typed.progress():
            self.progress.update(label, progress)
            self.last_output = time.monotonic()

    def heartbeat(self) -> None:
        """Say which step still runs when nothing was printed for a while (a health wait, a long install)."""
        with self._lock:
            now = time.monotonic()
            if self.task is not None and now - self.last_output >= HEARTBEAT_S:
                self._write(
                    f"{self._elapsed()}    ... still in {self.task!r} "
                    f"({human_duration(now - self.task_started)})"
                )

    def close(self) -> None:
        self.progress.close()


def summary_text(outcome: RunOutcome) -> str:
    entry = outcome.entry
    if entry.status == "unchanged":
        release = entry.release.describe() if entry.release else "?"
        return f"{outcome.command}: nothing to do, the current release is already {release}"
    lines = [
        f"{outcome.command} {entry.status} in {human_duration(entry.duration_s)} (run {entry.run_id})",
    ]
    for host, stats in entry.hosts.items():
        lines.append(
            f"  {host}: ok={stats.get('ok', 0)} changed={stats.get('changed', 0)} "
            f"failed={stats.get('failures', 0)} unreachable={stats.get('unreachable', 0)}"
        )
    for host, reported in entry.host_releases.items():
        host_outcome = str(reported.get("outcome") or "")
        if host_outcome:
            took = f" (cut-over to healthy {reported['cutover_s']} s)" if reported.get("cutover_s") else ""
            lines.append(f"  {host}: {host_outcome.replace('_', ' ')} release {reported.get('release_id')}{took}")
    for host, gates in entry.host_quality.items():
        for gate in gates:
            verdict = "passed" if gate.get("passed") else "REFUSED"
            release_id = gate.get("release_id")
            lines.append(f"  {host}: quality gate {verdict} for release {release_id}: {gate.get('message')}")
    if entry.release is not None:
        lines.append(f"  release {entry.release.release_id}: {entry.release.describe()}")
    if entry.artifact_dir:
        lines.append(f"  output: {entry.artifact_dir}/stdout")
    return "\n".join(lines)


def run_command(args: argparse.Namespace) -> int:
    command: str = args.command_name
    display = RunDisplay(sys.stderr)
    try:
        deployment = _deployment(args)
        if command == "deploy":
            handle = deployment.start(
                command, if_changed=args.if_changed, limit=args.limit, on_event=display.handle
            )
        elif command == "redeploy" and (args.canary or args.from_lock):
            return _locked_redeploy(args, deployment, display)
        elif command in ("redeploy", "rollback"):
            floor = getattr(args, "min_output_tps", None)
            handle = deployment.start(
                command,
                to=redeploy_target(args) if command == "redeploy" else None,
                serial=args.serial,
                benchmark_floor={"output_throughput": floor} if floor is not None else None,
                if_changed=getattr(args, "if_changed", False),
                break_host_lock=args.break_host_lock,
                limit=args.limit,
                on_event=display.handle,
            )
        else:
            sweep_text = getattr(args, "sweep", None)
            sweep = benchmark_sweep.parse_concurrencies(sweep_text) if sweep_text is not None else None
            if getattr(args, "if_new", False):
                if sweep is not None or args.limit:
                    raise InputError("--if-new measures the whole profile on every host: not with --sweep or --limit")
                reused = benchmark_reuse.reusable_benchmark(
                    deployment.history(), deployment.current_release(), deployment.results_dir()
                )
                if reused is not None:
                    display.close()
                    print(json.dumps(reused.to_dict(), indent=2) if args.json else reused.text())
                    return 0
            handle = deployment.start(command, sweep=sweep, limit=args.limit, on_event=display.handle)
        try:
            while True:
                try:
                    outcome = handle.wait(timeout=1.0)
                    break
                except TimeoutError:
                    display.heartbeat()
        except KeyboardInterrupt:
            print(
                f"\nglm-deploy {command}: cancelling (the hosts may be left half-converged)...",
                file=sys.stderr,
            )
            handle.cancel()
            outcome = handle.wait()
    except GlmDeployError as error:
        display.close()
        return _fail(args, command, error)
    display.close()
    if args.json:
        print(json.dumps(outcome.to_dict(), indent=2))
    else:
        print(summary_text(outcome))
        for written in outcome.sweeps:
            print(sweep_summary(written))
    return 0


def _locked_redeploy(args: argparse.Namespace, deployment: Deployment, display: RunDisplay) -> int:
    """redeploy --canary (the first host gates the lock, the rest follow it) or --from-lock."""
    try:
        if args.canary and args.from_lock:
            raise InputError(
                "--canary and --from-lock exclude each other", hint="a canary moves the lock; --from-lock reads it"
            )
        target = redeploy_target(args)
        if args.from_lock:
            settings = deployment.settings(target)
            key = stack_lock.stack_key(str(settings["model"]), str(settings["engine"]), str(settings["hardware"]))
            target.update(stack_lock.release_target(stack_lock.locked_release(args.lock_file, key)))
            outcome = deployment.redeploy(
                to=target, serial=args.serial, limit=args.limit, on_event=display.handle,
                break_host_lock=args.break_host_lock,
            )
            document: dict[str, Any] = outcome.to_dict()
            text = summary_text(outcome)
        else:
            result = stack_lock.canary_redeploy(
                deployment, args.lock_file, to=target, if_changed=args.if_changed, serial=args.serial,
                on_event=display.handle,
            )
            document = result.to_dict()
            if result.locked is None:
                text = summary_text(result.canary)
            else:
                text = (
                    f"canary {result.locked.canary} passed every gate ({_gate_line(result.locked.gates)}); "
                    f"locked {result.locked.release.release_id} for {result.locked.key} in {args.lock_file}"
                    + (f"; the other hosts follow it:\n{summary_text(result.fleet)}" if result.fleet else "")
                )
    except GlmDeployError as error:
        display.close()
        return _fail(args, "redeploy", error)
    display.close()
    print(json.dumps(document, indent=2) if args.json else text)
    return 0


def _gate_line(gates: Mapping[str, Any]) -> str:
    return f"accuracy {gates.get('min_score')} on {gates.get('set')}, floor {gates.get('floor')}"


def sweep_summary(written: benchmark_report.WrittenReport) -> str:
    """A host's sweep: its Markdown table and the files written (or how to get the picture)."""
    lines = ["", benchmark_report.markdown(written.report).rstrip(), "", "written:"]
    lines += [f"  {path}" for path in written.files()]
    if written.plot_note:
        lines.append(f"  {written.plot_note}")
    return "\n".join(lines)


def show_status(args: argparse.Namespace) -> int:
    try:
        deployment = _deployment(args)
        status = deployment.status()
    except GlmDeployError as error:
        return _fail(args, "status", error)
    # Lambda inventories and `glm-deploy up`'s record add each instance's type, region, uptime and price.
    cloud = lambda_status.status_for(deployment.inventory, deployment.state_dir)
    if args.json:
        document = status.to_dict()
        if cloud is not None:
            document["lambda"] = cloud.to_dict()
        print(json.dumps(document, indent=2))
        return 0
    lines = [f"inventory {status.inventory} (state in {status.state_dir})"]
    if status.current_release is not None:
        lines.append(
            f"current release {status.current_release.release_id} since {status.current_since}: "
            f"{status.current_release.describe()}"
        )
    else:
        lines.append("current release: none recorded (no successful deploy from this controller yet)")
    if status.lock_holder:
        lines.append(f"running now: {describe_holder(status.lock_holder)}")
    if not status.hosts:
        lines.append("no hosts in group glm_servers")
    for host in status.hosts:
        last = (
            f"last {host.last_command} {host.last_status} at {host.last_finished_at} (run {host.last_run_id})"
            if host.last_command
            else "no run recorded"
        )
        release = f"; serves {host.release.release_id}" if host.release else ""
        lines.append(f"  {host.host} ({host.address}): {last}{release}")
        lines.append(f"    {caches_text(host)}")
    if cloud is not None:
        lines += lambda_status.describe(cloud)
    print("\n".join(lines))
    return 0


def caches_text(host: HostStatus) -> str:
    """`caches warm, 2.10 GiB in 1234 files: deep_gemm 2.00 GiB (warm-up), inductor 100 MiB (first start)`."""
    if not host.caches:
        return "JIT caches: not reported yet (recorded at the next deploy or redeploy)"
    total_bytes = sum(int(record.get("bytes") or 0) for record in host.caches.values())
    total_files = sum(int(record.get("files") or 0) for record in host.caches.values())
    cold = sorted(kind for kind, record in host.caches.items() if not record.get("warm"))
    state = "warm" if not cold else f"cold ({', '.join(cold)})"
    kinds = []
    for kind, record in sorted(host.caches.items()):
        made = str(record.get("warmed_by") or "").replace("_", " ")
        detail = f" ({made})" if record.get("warm") and made else "" if record.get("warm") else " (cold)"
        kinds.append(f"{kind} {human_bytes(int(record.get('bytes') or 0))}{detail}")
    return (
        f"JIT caches {state}, {human_bytes(total_bytes)} in {total_files} files: {', '.join(kinds)} "
        f"(at {host.caches_recorded_at}, run {host.caches_run_id})"
    )


def history_line(entry: HistoryEntry) -> str:
    release = entry.release.release_id if entry.release else "-"
    line = (
        f"{entry.finished_at}  {entry.command:<9} {entry.status:<10} {entry.run_id:<16} "
        f"{human_duration(entry.duration_s):>6}  release {release}  hosts {','.join(entry.hosts) or '-'}"
    )
    if entry.failures:
        first = entry.failures[0]
        line += f"\n    failed: {first.get('host')}: {first.get('task')}: {first.get('message', '')[:200]}"
    elif entry.error:
        line += f"\n    error: {entry.error.splitlines()[0][:200]}"
    if entry.note:
        line += f"\n    note: {entry.note[:300]}"
    return line


def show_history(args: argparse.Namespace) -> int:
    if args.last < 0:
        return _fail(args, "history", InputError(f"--last must be 0 or more, got {args.last}"))
    try:
        entries = _deployment(args).history()
    except GlmDeployError as error:
        return _fail(args, "history", error)
    if args.last:
        entries = entries[-args.last :]
    if args.json:
        print(json.dumps([entry.to_dict() for entry in entries], indent=2))
    elif not entries:
        print("no runs recorded yet")
    else:
        print("\n".join(history_line(entry) for entry in entries))
    return 0
