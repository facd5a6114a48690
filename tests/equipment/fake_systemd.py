"""A stand-in for `systemctl` and `journalctl`, enough for the server role's activate tasks on several "nodes".

The test machine has no systemd, and the nodes of a multi-node plan are several hosts; here every node is an
inventory host with `ansible_connection=local`, and the node a call comes from is FAKE_SYSTEMD_NODE (the play sets
it per host), whose unit files are in FAKE_SYSTEMD_UNIT_DIR (a unit without a file there is not found, as after a
daemon-reload). State lives in a folder (FAKE_SYSTEMD_STATE):
- nodes.json, written by the test: how each node's engine behaves,
  {node: {"serve": {"bind": "0.0.0.0", "port": 8000, "after_started": ["node1"]}, "dies": false,
          "journal": ["line", ...]}}
  "serve": starting the unit starts a fake engine (this script's `engine` command) that answers GET /health with
  503 until every node in "after_started" has had its unit started, then 200 (a head waits for its workers);
  "dies": the unit fails as soon as it starts (a worker that crashed); "journal": what journalctl shows;
- units.json: each (node, unit)'s state, written by this script;
- calls.log: one JSON line per call, {"t": time, "node", "argv"}, and per health request the engine answers,
  {"t", "node", "health": address the request came to, "status"}, so tests can check the order of events.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

STATE = Path(os.environ["FAKE_SYSTEMD_STATE"])


def log(entry: dict) -> None:
    with (STATE / "calls.log").open("a") as handle:
        handle.write(json.dumps({"t": time.time(), **entry}) + "\n")


def behaviour(node: str) -> dict:
    return json.loads((STATE / "nodes.json").read_text()).get(node, {})


class Units:
    """units.json under an exclusive lock: two nodes' calls run at the same time."""

    def __enter__(self) -> dict:
        self.lock = (STATE / "units.lock").open("w")
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        path = STATE / "units.json"
        self.data = json.loads(path.read_text()) if path.exists() else {}
        return self.data

    def __exit__(self, *exc: object) -> None:
        (STATE / "units.json").write_text(json.dumps(self.data, indent=1))
        self.lock.close()


def stop_engine(unit: dict) -> None:
    pid = unit.pop("engine_pid", None)
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 15)


def unit_file(name: str) -> Path:
    return Path(os.environ["FAKE_SYSTEMD_UNIT_DIR"]) / name


def start(node: str, name: str) -> int:
    if not unit_file(name).is_file():
        print(f"Failed to start {name}: Unit {name} not found.", file=sys.stderr)
        return 5
    wanted = behaviour(node)
    with Units() as units:
        unit = units.setdefault(f"{node}/{name}", {"enabled": False, "starts": 0})
        stop_engine(unit)
        unit["starts"] += 1
        unit["active"] = "failed" if wanted.get("dies") else "active"
        serve = wanted.get("serve")
        if serve and not wanted.get("dies"):
            engine = subprocess.Popen(
                [sys.executable, __file__, "engine", node],
                env=dict(os.environ, FAKE_SYSTEMD_NODE=node),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            unit["engine_pid"] = engine.pid
    if serve and not wanted.get("dies"):
        # Like Type=notify: the start returns once the engine listens, so the first probe is not refused.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", serve["port"]), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
    return 0


def show(node: str, name: str) -> int:
    with Units() as units:
        unit = units.get(f"{node}/{name}")
    if not unit_file(name).is_file():
        print(f"Id={name}\nLoadState=not-found\nActiveState=inactive\nSubState=dead\nNRestarts=0")
        return 0
    unit = unit or {"enabled": False}
    active = unit.get("active", "inactive")
    sub = {"active": "running", "failed": "failed"}.get(active, "dead")
    print(f"Id={name}\nLoadState=loaded\nFragmentPath={unit_file(name)}\nActiveState={active}\nSubState={sub}")
    print(f"NRestarts=0\nUnitFileState={'enabled' if unit['enabled'] else 'disabled'}")
    return 0


def systemctl(node: str, args: list[str]) -> int:
    words = [word for word in args if not word.startswith("-")]
    command, names = words[0], words[1:]
    if command in ("daemon-reload", "reset-failed"):
        return 0
    name = names[0]
    if command == "show":
        return show(node, name)
    if command in ("start", "restart"):
        return start(node, name)
    if command == "stop":
        with Units() as units:
            unit = units.setdefault(f"{node}/{name}", {"enabled": False, "starts": 0})
            stop_engine(unit)
            unit["active"] = "inactive"
        return 0
    if command in ("enable", "disable"):
        with Units() as units:
            units.setdefault(f"{node}/{name}", {"enabled": False, "starts": 0})["enabled"] = command == "enable"
        return 0
    if command == "is-enabled":
        with Units() as units:
            enabled = units.get(f"{node}/{name}", {}).get("enabled", False)
        print("enabled" if enabled else "disabled")
        return 0 if enabled else 1
    if command == "is-active":
        with Units() as units:
            active = units.get(f"{node}/{name}", {}).get("active", "inactive")
        print(active)
        return 0 if active == "active" else 3
    print(f"fake systemctl: unsupported command {args}", file=sys.stderr)
    return 2


def journalctl(node: str, args: list[str]) -> int:
    lines = behaviour(node).get("journal", [])
    count = int(args[args.index("--lines") + 1]) if "--lines" in args else 10
    for line in lines[-count:]:
        print(line)
    return 0


def engine(node: str) -> int:
    serve = behaviour(node)["serve"]

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with Units() as units:
                ready = all(
                    any(key.startswith(f"{other}/") and unit["starts"] > 0 for key, unit in units.items())
                    for other in serve.get("after_started", [])
                )
            status = 200 if self.path == "/health" and ready else 503
            log({"node": node, "health": self.connection.getsockname()[0], "status": status})
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((serve.get("bind", "127.0.0.1"), serve["port"]), Health)
    server.serve_forever()
    return 0


def main() -> int:
    tool, args = sys.argv[1], sys.argv[2:]
    node = os.environ.get("FAKE_SYSTEMD_NODE", "?")
    if tool == "engine":
        return engine(args[0])
    log({"node": node, "argv": [tool, *args]})
    if tool == "systemctl":
        return systemctl(node, args)
    if tool == "journalctl":
        return journalctl(node, args)
    print(f"fake systemd: unknown tool {tool}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
