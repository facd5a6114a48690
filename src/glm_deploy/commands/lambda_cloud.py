"""`glm-deploy up` / `glm-deploy down`: Lambda Cloud instances from an API key, then the deployment onto them;
and their end. A thin layer over `glm_deploy.lambda_cloud`.

Exit codes as for deploy: 0 ok, 1 the run failed, 2 bad input. Progress (task names) goes to stderr; the result to
stdout, as JSON with `--json`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from glm_deploy import lambda_cloud, lambda_status, schedule
from glm_deploy.commands.deployment import error_document
from glm_deploy.credentials import controller_secrets
from glm_deploy.deployment import default_state_dir
from glm_deploy.errors import GlmDeployError
from glm_deploy.run_events import RunEvent


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = subparsers.add_parser(
        "up",
        help="launch Lambda Cloud instances and deploy onto them (playbooks/lambda_up.yml)",
        description="From LAMBDA_API_KEY to a serving endpoint: the SSH key, the filesystem for the weights, a "
        "firewall ruleset open to --allow-cidr only, --nodes instances waited for until SSH answers, then site.yml "
        "through the dynamic inventory (inventories/lambda_cloud). A second run changes nothing.",
    )
    up.add_argument("--region", required=True, help="Lambda region, e.g. us-east-1")
    up.add_argument("--instance-type", required=True, help="Lambda instance type, e.g. gpu_8x_b200_sxm6")
    up.add_argument("--nodes", type=int, default=1, help="instances to run (named PREFIX1, PREFIX2, ...; default 1)")
    up.add_argument("--filesystem", help="a Lambda filesystem (made if missing) that keeps the weights across launches")
    up.add_argument(
        "--allow-cidr",
        action="append",
        default=[],
        metavar="CIDR",
        help="a network that may reach SSH and the endpoint (repeat for more); required",
    )
    up.add_argument("--allow-world", action="store_true", help="allow --allow-cidr 0.0.0.0/0 (the whole internet)")
    up.add_argument("--ssh-key-name", default="glm-deploy", help="the SSH key's name at Lambda (default glm-deploy)")
    up.add_argument(
        "--ssh-public-key",
        type=Path,
        default=Path("~/.ssh/id_ed25519.pub"),
        help="the public key to register (default ~/.ssh/id_ed25519.pub)",
    )
    up.add_argument(
        "--no-deploy", action="store_true", help="only launch (playbooks/lambda_launch.yml), do not run site.yml"
    )
    up.add_argument(
        "--max-hours",
        type=float,
        help="cost guard: install a systemd timer on this controller that runs `glm-deploy down` after N hours",
    )
    up.add_argument(
        "--timer-environment-file",
        type=Path,
        help="with --max-hours: an absolute path to a mode-0600 file with LAMBDA_API_KEY=... for the timer's service",
    )
    up.add_argument(
        "--unit-dir",
        type=Path,
        default=schedule.DEFAULT_UNIT_DIR,
        help=f"with --max-hours: where the timer's units go (default {schedule.DEFAULT_UNIT_DIR})",
    )
    up.add_argument(
        "-i", "--inventory", default=lambda_cloud.DEFAULT_INVENTORY, help="a glm.deploy.lambda_cloud inventory"
    )
    down = subparsers.add_parser(
        "down",
        help="terminate the Lambda Cloud instances of `up` (playbooks/lambda_down.yml)",
        description="Terminate every live instance whose name starts with --name-prefix and wait until they are "
        "terminated. The filesystem (and the weights on it) stays unless --delete-filesystem.",
    )
    down.add_argument("--delete-filesystem", action="store_true", help="also delete --filesystem and what it holds")
    down.add_argument("--filesystem", help="the filesystem --delete-filesystem deletes")
    for parser in (up, down):
        parser.add_argument("--name-prefix", default="glm-", help="the instances' name prefix (default glm-)")
        parser.add_argument("--api-key-file", type=Path, help="a file holding the Lambda API key (else LAMBDA_API_KEY)")
        parser.add_argument("--state-dir", type=Path, help="where run artifacts live (default as for deploy)")
        parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    up.set_defaults(handler=run_up)
    down.set_defaults(handler=run_down)


def _progress(event: dict[str, Any]) -> None:
    typed = RunEvent.of(event)
    if typed.kind == "playbook_on_task_start":
        print(f"  {typed.task or ''}", file=sys.stderr, flush=True)


def _fail(command: str, args: argparse.Namespace, error: GlmDeployError) -> int:
    if args.json:
        print(json.dumps(error_document(command, error), indent=2))
    print(f"glm-deploy {command}: error: {error}", file=sys.stderr)
    return error.exit_code


def run_up(args: argparse.Namespace) -> int:
    state_dir = args.state_dir or default_state_dir()
    # Every event, kept so that an `up` that fails after a launch still records it (status shows its uptime).
    seen: list[dict[str, Any]] = []

    def on_event(event: dict[str, Any]) -> None:
        seen.append(event)
        _progress(event)

    try:
        settings = lambda_cloud.LambdaUp(
            region=args.region,
            instance_type=args.instance_type,
            allow_cidrs=tuple(args.allow_cidr),
            nodes=args.nodes,
            filesystem=args.filesystem,
            allow_world=args.allow_world,
            name_prefix=args.name_prefix,
            ssh_key_name=args.ssh_key_name,
            ssh_public_key_file=args.ssh_public_key,
        ).check()
        key = lambda_cloud.api_key(args.api_key_file)
        guard: dict[str, Any] | None = None
        if args.max_hours is not None:
            # Installed before the launch: an `up` that dies half-way still has its instances ended on time.
            fires, units = lambda_cloud.render_down_timer(
                name_prefix=settings.name_prefix,
                hours=args.max_hours,
                environment_file=args.timer_environment_file,
                api_key_file=args.api_key_file.expanduser().resolve() if args.api_key_file else None,
                executable=str(Path(sys.executable).parent / "glm-deploy"),
            )
            timer = next(name for name in units if name.endswith(".timer"))
            written, activated, verified, notes = schedule.install_units(units, timer, unit_dir=args.unit_dir)
            guard = {"timer": timer, "fires_at": fires, "files": written, "activated": activated, "notes": notes}
            guard["verified"] = verified
        playbook = "lambda_launch.yml" if args.no_deploy else "lambda_up.yml"
        result, events = lambda_cloud.run_lambda_playbook(
            playbook,
            key=key,
            extravars=settings.extravars(),
            inventory=args.inventory,
            state_dir=state_dir,
            secrets=None if args.no_deploy else controller_secrets(create_api_key=True),
            on_event=on_event,
        )
    except GlmDeployError as error:
        return _fail("up", args, error)
    finally:
        # When each instance was launched, for the uptime `glm-deploy status` shows (the API does not say).
        if seen:
            lambda_status.record_launches(state_dir, seen)
    instances = lambda_cloud.instances_from_events(events)
    head = next((instance for instance in instances if instance.get("ip")), None)
    document = {
        "command": "up",
        "ok": True,
        "playbook": playbook,
        "run_id": result.run_id,
        "changed": sum(host.changed for host in result.hosts.values()),
        "instances": instances,
        "endpoint": f"http://{head['ip']}:8000/v1" if head and not args.no_deploy else None,
        "cost_guard": guard,
    }
    if args.json:
        print(json.dumps(document, indent=2))
        return 0
    for instance in instances:
        where = f"{instance['instance_type']}, {instance['region']}"
        print(f"{instance['name']}: {instance['status']} {instance['ip']} ({where})")
    if document["endpoint"]:
        print(f"endpoint: {document['endpoint']} (the key: glm-deploy client-env --for openai)")
    if guard is not None:
        print(f"cost guard: {guard['timer']} runs `glm-deploy down` at {guard['fires_at']}")
        for note in guard["notes"]:
            print(f"  note: {note}")
    return 0


def run_down(args: argparse.Namespace) -> int:
    try:
        if args.delete_filesystem and not args.filesystem:
            raise GlmDeployError("--delete-filesystem needs --filesystem NAME (the filesystem to delete)")
        key = lambda_cloud.api_key(args.api_key_file)
        extravars: dict[str, Any] = {
            "lambda_name_prefix": args.name_prefix,
            "lambda_delete_filesystem": bool(args.delete_filesystem),
        }
        if args.filesystem:
            extravars["lambda_filesystem"] = args.filesystem
        state_dir = args.state_dir or default_state_dir()
        result, events = lambda_cloud.run_lambda_playbook(
            "lambda_down.yml",
            key=key,
            extravars=extravars,
            inventory=lambda_cloud.localhost_inventory(state_dir),
            state_dir=state_dir,
            on_event=_progress,
        )
    except GlmDeployError as error:
        return _fail("down", args, error)
    terminated = [
        instance_id for event in events for instance_id in (RunEvent.of(event).result.get("terminated_ids") or [])
    ]
    lambda_status.forget_launches(state_dir, terminated)
    document = {
        "command": "down",
        "ok": True,
        "run_id": result.run_id,
        "terminated_ids": terminated,
        "filesystem_deleted": bool(args.delete_filesystem),
    }
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print(f"terminated {len(terminated)} instance(s){': ' + ', '.join(terminated) if terminated else ''}")
        if not args.delete_filesystem:
            print("the filesystem, and the weights on it, are kept (--delete-filesystem removes it)")
    return 0
