"""A stand-in engine that hangs while its /health says 200, and the `systemctl` that restarts it.

The generation watchdog (collection/roles/server/files/generation_watchdog.py) runs as its own process, so the two
halves meet in a state folder (HANGING_ENGINE_STATE):
- engine.json, written by the test and by `systemctl restart`: {"generate": "hang" | "answer" | "error",
  "health": 200, "active": "active", "entered_us": CLOCK_MONOTONIC microseconds of the unit's last start,
  "restart_fixes": true} ("error" answers 500; "restart_fixes": false keeps hanging after a restart);
- calls.log: one JSON line per systemctl call ({"argv"}) and per HTTP request the engine answered or hung on
  ({"path", "authorized": whether the Authorization header carried the expected key, "status"}), never the key.

`HangingEngine` serves HTTP on 127.0.0.1 from a thread of the test process; `python hanging_engine.py systemctl
ARGS` is the `systemctl` a test puts first on PATH (it understands `show --property=... UNIT` and `restart UNIT`).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def now_us() -> int:
    # systemd's *TimestampMonotonic values are CLOCK_MONOTONIC microseconds, the clock time.monotonic() reads.
    return int(time.monotonic() * 1e6)


class Behaviour:
    def __init__(self, state: Path) -> None:
        self.state = state
        self.file = state / "engine.json"
        state.mkdir(parents=True, exist_ok=True)

    def read(self) -> dict[str, Any]:
        return json.loads(self.file.read_text())

    def write(self, **changes: Any) -> None:
        data = self.read() if self.file.exists() else {}
        data.update(changes)
        temporary = self.file.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(data))
        temporary.replace(self.file)

    def log(self, **entry: Any) -> None:
        with (self.state / "calls.log").open("a") as handle:
            handle.write(json.dumps({"t": time.monotonic(), **entry}) + "\n")

    def calls(self) -> list[dict[str, Any]]:
        path = self.state / "calls.log"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class HangingEngine:
    """An OpenAI-style endpoint on 127.0.0.1 whose behaviour engine.json decides at each request."""

    def __init__(self, state: Path, api_key: str, **behaviour: Any) -> None:
        self.behaviour = Behaviour(state)
        self.behaviour.write(
            **{
                "generate": "answer",
                "health": 200,
                "active": "active",
                "entered_us": now_us(),
                "restart_fixes": True,
                **behaviour,
            }
        )
        self.api_key = api_key
        self.released = threading.Event()
        engine = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # the test reads calls.log, not stderr
                pass

            def reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                status = int(engine.behaviour.read()["health"]) if self.path == "/health" else 404
                engine.behaviour.log(path=self.path, status=status)
                self.reply(status, {})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                request = json.loads(self.rfile.read(length) or b"{}")
                authorized = self.headers.get("Authorization") == "Bearer " + engine.api_key
                mode = engine.behaviour.read()["generate"]
                if not authorized:
                    engine.behaviour.log(path=self.path, authorized=False, status=401)
                    self.reply(401, {"error": "Unauthorized"})
                    return
                if mode == "hang":
                    engine.behaviour.log(path=self.path, authorized=True, status="hung", request=request)
                    # Never answers while the test runs; released at the end so the thread can finish.
                    engine.released.wait(60)
                    return
                status = 500 if mode == "error" else 200
                engine.behaviour.log(path=self.path, authorized=True, status=status, request=request)
                choice = {"index": 0, "message": {"role": "assistant", "content": "OK"}, "finish_reason": "length"}
                self.reply(status, {"object": "chat.completion", "choices": [choice]} if status == 200 else {})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HangingEngine:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


def systemctl(argv: list[str]) -> int:
    behaviour = Behaviour(Path(os.environ["HANGING_ENGINE_STATE"]))
    behaviour.log(argv=["systemctl", *argv])
    state = behaviour.read()
    if argv[:1] == ["show"]:
        properties = {"ActiveState": state["active"], "ActiveEnterTimestampMonotonic": str(state["entered_us"])}
        wanted = next((arg.split("=", 1)[1].split(",") for arg in argv if arg.startswith("--property=")), None)
        for name, value in properties.items():
            if wanted is None or name in wanted:
                print(f"{name}={value}")
        return 0
    if argv[:1] == ["restart"] and len(argv) == 2:
        behaviour.write(
            entered_us=now_us(),
            active="active",
            generate="answer" if state.get("restart_fixes", True) else state["generate"],
        )
        return 0
    print(f"hanging_engine systemctl: unsupported call {argv}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    if sys.argv[1:2] != ["systemctl"]:
        sys.exit("usage: hanging_engine.py systemctl ARGS (the engine itself is HangingEngine, in the test process)")
    sys.exit(systemctl(sys.argv[2:]))
