"""The verify role's streaming check, as written in roles/verify/tasks/main.yml, against a stand-in engine.

A stream is server-sent chat.completion.chunk events that carry text, then [DONE]; how many events is the engine's
business. vLLM on a loaded CPU host sent a four-token answer as one chunk after its role chunk, and the check
(then "at least 3 chunks") failed a deployment that streamed. The two tasks are taken from the role's file and run
through a real ansible-playbook against a local HTTP server that answers as an OpenAI-compatible engine does, or
as a broken one.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.equipment.playbook import REPO, run_playbook

pytestmark = pytest.mark.playbook

ROLE = REPO / "collection" / "roles" / "verify"
ASK = "Ask for a streamed chat completion"
CHECK_PREFIX = "Check that the completion streamed"
SSE = "text/event-stream; charset=utf-8"


def _chunk(delta: dict[str, Any], finish: str | None = None) -> str:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "glm-tiny",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"


ROLE_CHUNK = _chunk({"role": "assistant", "content": ""})
DONE = "data: [DONE]\n\n"

# name -> (content type, body, whether the check passes)
ANSWERS: dict[str, tuple[str, str, bool]] = {
    "token by token": (SSE, ROLE_CHUNK + "".join(_chunk({"content": d}) for d in "12345") + DONE, True),
    # A whole short answer in one chunk after the role chunk: what the loaded CPU host sent.
    "coalesced after the role chunk": (SSE, ROLE_CHUNK + _chunk({"content": "1091"}, "stop") + DONE, True),
    # One chunk carrying the role and the text (engines differ in whether the role chunk is separate).
    "role and text in one chunk": (SSE, _chunk({"role": "assistant", "content": "1 2 3"}, "stop") + DONE, True),
    "thinking text only": (SSE, ROLE_CHUNK + _chunk({"reasoning_content": "counting"}) + DONE, True),
    "spaced JSON": (SSE, ROLE_CHUNK.replace('":', '": ') + _chunk({"content": "1"}).replace('":', '": ') + DONE, True),
    "no [DONE]": (SSE, ROLE_CHUNK + _chunk({"content": "12345"}), False),
    "no text": (SSE, ROLE_CHUNK + _chunk({"content": ""}, "stop") + DONE, False),
    "a JSON body, not a stream": (
        "application/json",
        json.dumps({"object": "chat.completion", "choices": [{"message": {"content": "12345"}}]}),
        False,
    ),
    "events of another object": (
        SSE,
        ROLE_CHUNK.replace("chat.completion.chunk", "text_completion") + "data: {\"content\":\"1\"}\n\n" + DONE,
        False,
    ),
    "server-sent events under the wrong type": ("text/plain", ROLE_CHUNK + _chunk({"content": "12"}) + DONE, False),
}


class _Engine(BaseHTTPRequestHandler):
    answer: tuple[str, str, bool]
    asked: list[dict[str, Any]]

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.asked.append(json.loads(self.rfile.read(length) or b"{}"))
        content_type, body, _ = self.answer
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def engine() -> Iterator[type[_Engine]]:
    handler = type("Engine", (_Engine,), {"asked": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.port = server.server_address[1]  # type: ignore[attr-defined]
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()


def _tasks() -> list[dict[str, Any]]:
    tasks = yaml.safe_load((ROLE / "tasks" / "main.yml").read_text())
    chosen = [task for task in tasks if task.get("name") == ASK or task.get("name", "").startswith(CHECK_PREFIX)]
    assert [task["name"] == ASK for task in chosen] == [True, False], [task.get("name") for task in chosen]
    return chosen


@pytest.mark.parametrize("name", list(ANSWERS))
def test_the_stream_check_passes_what_streams_and_names_what_does_not(
    name: str, engine: type[_Engine], tmp_path: Path
) -> None:
    engine.answer = ANSWERS[name]
    role_vars = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
    playbook = tmp_path / "stream.yml"
    playbook.write_text(
        json.dumps(
            [
                {
                    "name": "The verify role's streaming check",
                    "hosts": "localhost",
                    "gather_facts": False,
                    "vars": {
                        **role_vars,
                        "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                        "verify_base_url": f"http://127.0.0.1:{engine.port}",  # type: ignore[attr-defined]
                        "verify_ca_path": "",
                        "verify_api_key": "stand-in-key",
                        "verify_plan": {"served_model_name": "glm-tiny"},
                        "verify_max_tokens": 16,
                        "verify_request_timeout_s": 30,
                    },
                    "tasks": _tasks(),
                }
            ]
        )
    )
    completed = run_playbook(playbook, home=tmp_path, inventory="localhost,", args=["-c", "local"], timeout=120)
    output = completed.stdout + completed.stderr
    passes = ANSWERS[name][2]
    assert (completed.returncode == 0) is passes, output[-3000:]
    assert engine.asked and engine.asked[0]["stream"] is True and engine.asked[0]["model"] == "glm-tiny"
    if not passes:
        assert "The streamed completion answered 200" in output, output[-3000:]
