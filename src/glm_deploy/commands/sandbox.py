"""`glm-deploy sandbox`: the local systemd hosts, tiny model and Hub stand-in that `-i sandbox` targets."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from glm_deploy.errors import InputError
from glm_deploy.sandbox import hosts as sandbox_hosts
from glm_deploy.sandbox.hosts import SANDBOX_ENGINE, catalog_facts
from glm_deploy.sandbox.hub_service import DEFAULT_HUB_PORT
from glm_deploy.sandbox.tiny_model import REVISIONS, build_tiny_model, smoke_generate
from glm_deploy.sandbox.wheelhouse import ensure_wheelhouse


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sandbox",
        help="local podman+systemd hosts that `ansible-playbook site.yml -i sandbox` targets",
        description="Local stand-ins for Lambda GPU nodes: Debian systemd hosts reached over SSH, "
        "a tiny GLM-MoE model served from a local Hub-protocol server, and the CPU engine's wheelhouse.",
    )
    actions = parser.add_subparsers(dest="sandbox_action", metavar="ACTION")
    parser.set_defaults(handler=lambda args: _usage(parser))

    up = actions.add_parser("up", help="build the image if needed, start hosts and the Hub stand-in")
    up.add_argument("--hosts", type=int, default=1, help="number of hosts, glm-sandbox-1..N (default 1, max 8)")
    up.add_argument("--hub-port", type=int, default=None, help="port of the Hub stand-in (default 8765)")
    up.add_argument(
        "--no-wheelhouse",
        action="store_true",
        help="skip fetching the engine wheelhouse (~880 MB the first time)",
    )
    up.add_argument("--json", action="store_true", help="print the resulting status as JSON")
    up.set_defaults(handler=_up)

    down = actions.add_parser("down", help="remove the hosts, their network and the Hub stand-in (caches stay)")
    down.set_defaults(handler=_down)

    status = actions.add_parser("status", help="hosts, addresses, systemd state, Hub URL")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=_status)

    build_model = actions.add_parser("build-model", help="build the tiny GLM-MoE model offline (deterministic)")
    build_model.add_argument("--out", type=Path, required=True, help="folder to write (replaced if present)")
    build_model.add_argument(
        "--revision",
        type=int,
        default=1,
        choices=REVISIONS,
        help="1 (trained, published on main), 2 (slightly other weights, as good) or 3 (degraded: answers worse)",
    )
    build_model.add_argument(
        "--check", action="store_true", help="then load it with transformers and generate a few tokens"
    )
    build_model.set_defaults(handler=_build_model)

    wheelhouse = actions.add_parser(
        "wheelhouse", help="download the CPU engine and its dependencies for offline install"
    )
    wheelhouse.add_argument("--dest", type=Path, default=None, help="folder (default ~/.cache/glm-deploy/wheelhouse)")
    wheelhouse.set_defaults(handler=_wheelhouse)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _print_status(report: dict[str, Any]) -> None:
    hosts = report["hosts"]
    if not hosts:
        print("no sandbox hosts (start them with: glm-deploy sandbox up)")
    for host in hosts:
        inventory = "" if host["in_inventory"] else "  (not in the inventory)"
        print(
            f"{host['name']:<16} {host['container']:<9} systemd={host['systemd'] or '-':<9} "
            f"{host['ip'] or '-'}:{host['port']}{inventory}"
        )
    hub = report["hub"]
    if hub:
        health = "answering" if hub["answering"] else "NOT answering"
        print(f"hub              {hub['url']} ({health}; pid {hub['pid'] or '-'}) serving {hub['repo_id']}")
        for revision, commit in sorted(hub["revisions"].items()):
            print(f"  revision {revision}: {hub['branches'].get(revision, '?'):<11} {commit}")
    elif hosts:
        print("hub              not started")
    if report["ssh_key"]:
        print(f"ssh key          {report['ssh_key']} (user {report['ssh_user']})")
    if report["wheelhouse"]:
        print(f"wheelhouse       {report['wheelhouse']}")
    if hosts:
        filesystem = report["filesystem"]
        print(f"filesystem       {filesystem['path']} at {filesystem['mount_point']} on every host (kept by down)")


def _up(args: argparse.Namespace) -> int:
    if not 1 <= args.hosts <= sandbox_hosts.MAX_HOSTS:
        raise InputError(f"--hosts {args.hosts}: the sandbox runs 1 to {sandbox_hosts.MAX_HOSTS} hosts")
    hub_port = DEFAULT_HUB_PORT if args.hub_port is None else args.hub_port
    if not 1 <= hub_port <= 65535:
        raise InputError(f"--hub-port {hub_port}: a TCP port is 1 to 65535")
    result = sandbox_hosts.up(args.hosts, hub_port=hub_port, wheelhouse=not args.no_wheelhouse)
    report = sandbox_hosts.status()
    report["timings_s"] = result.timings
    if args.json:
        json.dump(report, sys.stdout, indent=2, sort_keys=True)
        print()
        return 0
    _print_status(report)
    print("timings (s): " + ", ".join(f"{name} {value}" for name, value in result.timings.items()))
    print("next: glm-deploy deploy -i inventories/sandbox   (site.yml, recorded in glm-deploy history)")
    return 0


def _down(args: argparse.Namespace) -> int:
    removed = sandbox_hosts.down()
    print("removed: " + ", ".join(removed) if removed else "nothing to remove: no sandbox was running")
    return 0


def _status(args: argparse.Namespace) -> int:
    report = sandbox_hosts.status()
    if args.json:
        json.dump(report, sys.stdout, indent=2, sort_keys=True)
        print()
    else:
        _print_status(report)
    # Exit 1 when something is not up, so scripts can wait on it.
    return 0 if sandbox_hosts.status_is_healthy(report) else 1


def _build_model(args: argparse.Namespace) -> int:
    model = build_tiny_model(args.out, revision=args.revision)
    for name, digest in model.files.items():
        print(f"{digest}  {model.path / name}")
    if args.check:
        print(f"generated: {smoke_generate(model.path)!r}")
    return 0


def _wheelhouse(args: argparse.Namespace) -> int:
    _, version = catalog_facts()
    wheelhouse = ensure_wheelhouse(version, path=args.dest)
    what = f"downloaded in {wheelhouse.seconds:.1f} s" if wheelhouse.downloaded else "already complete"
    print(
        f"{SANDBOX_ENGINE} {version}: {wheelhouse.files} files, {wheelhouse.size_bytes / 1e6:.0f} MB in "
        f"{wheelhouse.path} ({what})"
    )
    return 0
