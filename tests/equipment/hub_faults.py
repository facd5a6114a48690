"""The sandbox Hub server with faults injected on chosen requests.

`FaultyHub` wraps `glm_deploy.sandbox.hub.HubServer`; tests queue faults with `hub.faults.add(Fault(...))`.
Each fault applies to the next `times` GET requests of files matching `filename` (fnmatch pattern) and then
expires, so a correct client always ends with the right bytes:

- `drop`: send the file up to byte `at_byte` (absolute offset in the file), then cut the connection;
- `stall`: send up to `at_byte`, then go silent for `seconds` and cut the connection (a hung transfer);
- `corrupt`: send the right number of bytes with one byte flipped at `at_byte` (wrong content, right size);
- `status`: answer `status` (429 with `Retry-After: retry_after`, 500, 503...) instead of the file.

`api_status` faults answer `status` to the next `times` requests under `/api/` (metadata calls).
The server counts file bytes sent (`hub.stats.file_bytes_sent`) and keeps a log of every file request
(`hub.file_log`) with its Range header, so tests can prove a resume was ranged and a re-run fetched nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import json
import socket
import threading
import time
from pathlib import Path
from typing import Literal

from glm_deploy.sandbox.hub import FileRequest, HubRequestHandler, HubServer, HubStore

FaultKind = Literal["drop", "stall", "corrupt", "status", "api_status"]


@dataclasses.dataclass
class Fault:
    kind: FaultKind
    filename: str = "*"
    times: int = 1
    at_byte: int = 0
    seconds: float = 0.0
    status: int = 500
    retry_after: int | None = None


@dataclasses.dataclass(frozen=True)
class FileLogEntry:
    method: str
    filename: str
    range_header: str | None
    fault: FaultKind | None
    when: float


class FaultPlan:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self.fired: list[tuple[FaultKind, str]] = []

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def take(self, kinds: tuple[FaultKind, ...], filename: str) -> Fault | None:
        """The first pending fault of one of `kinds` that matches `filename`, consuming one use of it."""
        with self._lock:
            for fault in self._faults:
                if fault.kind in kinds and fnmatch.fnmatchcase(filename, fault.filename):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    self.fired.append((fault.kind, filename))
                    return fault
            return None

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def pending(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)


class FaultyHandler(HubRequestHandler):
    def _plan(self) -> FaultPlan:
        plan: FaultPlan = self.server.faults  # type: ignore[attr-defined]
        return plan

    def route(self, method: str) -> None:
        if self.path.startswith("/api/"):
            fault = self._plan().take(("api_status",), self.path)
            if fault is not None:
                self._send_status_fault(fault)
                return
        super().route(method)

    def serve_file(self, request: FileRequest) -> None:
        fault = None
        if request.method == "GET":
            fault = self._plan().take(("drop", "stall", "corrupt", "status"), request.entry.path)
        log: list[FileLogEntry] = self.server.file_log  # type: ignore[attr-defined]
        log.append(
            FileLogEntry(
                request.method,
                request.entry.path,
                self.headers.get("Range"),
                fault.kind if fault else None,
                time.monotonic(),
            )
        )
        if fault is None:
            super().serve_file(request)
        elif fault.kind == "status":
            self._send_status_fault(fault)
        elif fault.kind in ("drop", "stall"):
            self.send_file_headers(request)
            before_cut = max(0, min(fault.at_byte - request.start, request.length))
            self.send_file_bytes(request, request.start, before_cut)
            self.wfile.flush()
            if fault.kind == "stall":
                time.sleep(fault.seconds)
            self._cut()
        else:  # corrupt: right length, one flipped byte
            self.send_file_headers(request)
            with request.blob.open("rb") as handle:
                handle.seek(request.start)
                data = bytearray(handle.read(request.length))
            flip = fault.at_byte - request.start
            if 0 <= flip < len(data):
                data[flip] ^= 0xFF
            else:
                data[0] ^= 0xFF
            self.wfile.write(bytes(data))
            self.server.stats.add_file_bytes(len(data))

    def _send_status_fault(self, fault: Fault) -> None:
        body = json.dumps({"error": f"injected {fault.status}"}).encode()
        self.send_response(fault.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if fault.retry_after is not None:
            self.send_header("Retry-After", str(fault.retry_after))
        self.end_headers()
        self.wfile.write(body)

    def _cut(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


class FaultyHub(HubServer):
    """A HubServer whose requests pass through `faults` first."""

    def __init__(self, root: Path, **kwargs: object) -> None:
        super().__init__(HubStore(root), handler_class=FaultyHandler, **kwargs)  # type: ignore[arg-type]
        self.faults = FaultPlan()
        self.file_log: list[FileLogEntry] = []
        self.httpd.faults = self.faults  # type: ignore[attr-defined]
        self.httpd.file_log = self.file_log  # type: ignore[attr-defined]

    def gets(self, filename: str | None = None) -> list[FileLogEntry]:
        return [e for e in self.file_log if e.method == "GET" and (filename is None or e.filename == filename)]
