"""A stand-in chat endpoint that answers the accuracy gate's questions as well as a test tells it to.

It speaks the part of the OpenAI chat API the gate uses (POST /v1/chat/completions with a bearer key, GET /metrics,
GET /server_info) over real HTTP on 127.0.0.1, from a thread of the test process:
- a question "What is A + B?" (the sandbox set) is answered with the sum; a few-shot GSM8K prompt is answered
  with the reference answer of its last question, found in the set the test hands over;
- `wrong` answers are deliberately wrong: every question whose index in `order` is below `wrong` gets the right
  answer plus one, so a test sets the exact score it wants;
- `fail_status` answers that HTTP status instead; `metrics` is a list of texts /metrics serves in turn (the gate
  scrapes before and after its questions), `server_info` the JSON of /server_info;
- every request is recorded (path, whether the bearer key was right, the JSON body), so tests can check what the
  gate sent.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_SUM = re.compile(r"What is (\d+) \+ (\d+)\?\s*$")


@dataclass
class GradedEngine:
    api_key: str
    answers: dict[str, str] = field(default_factory=dict)  # question text -> reference answer
    order: list[str] = field(default_factory=list)  # questions in the set's order
    wrong: int = 0
    fail_status: int | None = None
    metrics: list[str] = field(default_factory=list)
    server_info: dict[str, Any] | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    base_url: str = ""

    def answer_for(self, content: str) -> str:
        question = content.rsplit("Question: ", 1)[-1].removesuffix("\nAnswer:")
        match = _SUM.search(content)
        if question in self.answers:
            right = self.answers[question]
        elif match:
            right = str(int(match[1]) + int(match[2]))
        else:
            return "I cannot tell."
        index = self.order.index(question) if question in self.order else len(self.order)
        if index < self.wrong:
            return f"The answer is {int(right) + 1}."
        return f"So the answer is {right}." if "Question:" in content else right


def _handler(engine: GradedEngine) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return

        def _send(self, status: int, body: bytes, kind: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _authorized(self) -> bool:
            return self.headers.get("Authorization") == f"Bearer {engine.api_key}"

        def do_GET(self) -> None:
            engine.requests.append({"path": self.path, "authorized": self._authorized()})
            if self.path == "/metrics":
                text = engine.metrics.pop(0) if len(engine.metrics) > 1 else (engine.metrics or [""])[0]
                self._send(200, text.encode(), "text/plain; version=0.0.4")
            elif self.path == "/server_info" and engine.server_info is not None:
                self._send(200, json.dumps(engine.server_info).encode())
            else:
                self._send(404, b"{}")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            engine.requests.append({"path": self.path, "authorized": self._authorized(), "body": body})
            if not self._authorized():
                self._send(401, b'{"error": "unauthorized"}')
                return
            if engine.fail_status is not None:
                self._send(engine.fail_status, b'{"error": "injected"}')
                return
            content = body["messages"][-1]["content"]
            answer = {
                "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": engine.answer_for(content)}}],
            }
            self._send(200, json.dumps(answer).encode())

    return Handler


class _Server(ThreadingHTTPServer):
    # Engines accept a deep backlog; the default of 5 would reset connections the gate opens at once.
    request_queue_size = 128


@contextmanager
def serve(engine: GradedEngine) -> Iterator[GradedEngine]:
    server = _Server(("127.0.0.1", 0), _handler(engine))
    engine.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield engine
    finally:
        server.shutdown()
        server.server_close()
