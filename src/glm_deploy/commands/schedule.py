"""`glm-deploy schedule --policy FILE | --list | --remove NAME`: redeploys on a systemd timer."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from glm_deploy import schedule
from glm_deploy.commands.deployment import error_document
from glm_deploy.errors import GlmDeployError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "schedule",
        help="install, list or remove a systemd timer that redeploys when the release changes",
        description="Install a systemd service + timer on this controller that runs "
        "`glm-deploy redeploy --if-changed -i INVENTORY` on a calendar: staged, verified, rolled back on "
        "failure, and only when the resolved release differs. Policy file (YAML): name, inventory, "
        "on_calendar, and optionally randomized_delay, environment_file (mode 0600, for HF_TOKEN / "
        "GLM_API_KEY), state_dir, user, follow (revision / engine_version / image), serial, min_output_tps.",
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--policy", type=Path, help="install the schedule a policy file describes")
    action.add_argument("--list", action="store_true", help="list installed schedules")
    action.add_argument("--remove", metavar="NAME", help="stop and remove a schedule")
    parser.add_argument(
        "--unit-dir",
        type=Path,
        default=schedule.DEFAULT_UNIT_DIR,
        help=f"where the unit files go (default {schedule.DEFAULT_UNIT_DIR})",
    )
    parser.add_argument(
        "--no-activate", action="store_true", help="write the units but do not enable or start the timer"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        if args.policy is not None:
            policy = schedule.load_policy(args.policy)
            result = schedule.install(policy, unit_dir=args.unit_dir, activate=not args.no_activate)
            if args.json:
                print(json.dumps(result.to_dict(), indent=2))
            else:
                state = "active" if result.activated else "installed, not active"
                print(f"schedule {policy.name}: {policy.timer_name} ({policy.on_calendar}) {state}")
                for written in result.files:
                    print(f"  wrote {written}")
                for note in result.notes:
                    print(f"  note: {note}")
            return 0
        if args.list:
            schedules = schedule.list_schedules(unit_dir=args.unit_dir)
            if args.json:
                print(json.dumps([info.to_dict() for info in schedules], indent=2))
            elif not schedules:
                print(f"no glm-deploy schedules in {args.unit_dir}")
            else:
                for info in schedules:
                    print(f"{info.name}: {info.timer} ({info.on_calendar}) [{info.active}]")
                    print(f"  runs: {info.command}")
            return 0
        removed = schedule.remove(args.remove, unit_dir=args.unit_dir)
        if args.json:
            print(json.dumps({"name": args.remove, "removed": removed}, indent=2))
        else:
            print(f"schedule {args.remove} removed ({', '.join(removed)})")
        return 0
    except GlmDeployError as error:
        if args.json:
            print(json.dumps(error_document("schedule", error), indent=2))
        print(f"glm-deploy schedule: error: {error}", file=sys.stderr)
        return error.exit_code
