"""`glm-deploy lock`: record the release that passed every gate in the stack lock a team commits."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from glm_deploy import stack_lock
from glm_deploy.commands.deployment import _deployment, _fail, add_common_arguments
from glm_deploy.errors import GlmDeployError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "lock",
        help="record the release that passed every gate in stack.lock.yml",
        description="Write the newest deploy or redeploy whose quality gates passed on every host into the stack "
        "lock, under its model/engine/hardware: model commit, engine version, image digest or venv lock, the "
        "plan's hash, each host's gate score and the newest benchmark. Nothing is contacted; a release the gate "
        "refused is never locked (exit 1). `glm-deploy redeploy --from-lock` serves what the lock names.",
    )
    add_common_arguments(parser)
    parser.add_argument(
        "--file",
        type=Path,
        default=Path(stack_lock.LOCK_FILE),
        help=f"the lock file (default {stack_lock.LOCK_FILE})",
    )
    parser.add_argument("--show", action="store_true", help="print the lock file's entries and change nothing")
    parser.set_defaults(handler=run_lock)


def run_lock(args: argparse.Namespace) -> int:
    try:
        if args.show:
            stacks = stack_lock.read_lock(args.file)
            if args.json:
                print(json.dumps(stacks, indent=2))
            else:
                for key, entry in stacks.items():
                    gates = entry.get("gates") or {}
                    print(
                        f"{key}: release {entry.get('release_id')} (run {entry.get('run_id')}, locked "
                        f"{entry.get('locked_at')}): accuracy {gates.get('min_score')} on {gates.get('set')}, "
                        f"floor {gates.get('floor')}"
                    )
                if not stacks:
                    print(f"{args.file} locks nothing yet")
            return 0
        deployment = _deployment(args)
        settings = deployment.settings()
        key = stack_lock.stack_key(str(settings["model"]), str(settings["engine"]), str(settings["hardware"]))
        locked = stack_lock.lock_from_history(deployment.history(), key=key, results_dir=deployment.results_dir())
        stack_lock.write_lock(args.file, locked)
    except GlmDeployError as error:
        return _fail(args, "lock", error)
    if args.json:
        print(json.dumps(locked.to_dict(), indent=2))
    else:
        gates = locked.gates
        print(
            f"locked {locked.release.release_id} for {key} in {args.file}: {locked.release.describe()}; "
            f"accuracy {gates['min_score']} on {gates['set']} (floor {gates['floor']}) on {', '.join(locked.hosts)}"
        )
    return 0
