"""The sandbox Hub's HTTP side: the request handler, the server and its TLS context (the protocol is in the
package's docstring)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import socket
import ssl
import sys
import threading
import types
import urllib.parse
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from glm_deploy.sandbox.hub.store import (
    _COPY_CHUNK,
    LFS_POINTER_SIZE,
    Commit,
    FileEntry,
    HubStore,
    HubStoreError,
)

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class FileRequest:
    """One HEAD or GET of a file, after routing, auth and Range parsing."""

    method: str
    repo_id: str
    revision: str
    commit: Commit
    entry: FileEntry
    blob: Path
    start: int  # first byte to send
    length: int  # bytes to send
    partial: bool  # a satisfiable Range was asked: answer 206


class ServerStats:
    """Counters test equipment and benchmarks read: file bytes sent and requests per kind."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.file_bytes_sent = 0
        self.requests: dict[str, int] = {}

    def count_request(self, kind: str) -> None:
        with self._lock:
            self.requests[kind] = self.requests.get(kind, 0) + 1

    def add_file_bytes(self, count: int) -> None:
        with self._lock:
            self.file_bytes_sent += count

    def reset(self) -> None:
        with self._lock:
            self.file_bytes_sent = 0
            self.requests = {}


class HubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # Clients open many connections at once (parallel downloads); the default backlog of 5 drops some.
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        handler_class: type[HubRequestHandler],
        store: HubStore,
        tokens: frozenset[str] | None,
        tree_page_size: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.store = store
        self.tokens = tokens
        self.tree_page_size = tree_page_size
        self.stats = ServerStats()
        self.ssl_context = ssl_context
        super().__init__(address, handler_class)

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        if self.ssl_context is not None:
            # The handshake happens on the first read, in the connection's own thread, so a client that
            # never completes it (or refuses the certificate) holds up no other connection.
            connection = self.ssl_context.wrap_socket(connection, server_side=True, do_handshake_on_connect=False)
        return connection, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, (ssl.SSLError, ConnectionError, TimeoutError)):
            # A client refusing the certificate, or hanging up: the client reports it, not the server.
            logger.debug("connection from %s ended: %s", client_address, error)
            return
        super().handle_error(request, client_address)


class HubRequestHandler(BaseHTTPRequestHandler):
    """Routes the Hub's download endpoints. Subclass and override `route` or `serve_file` to inject faults."""

    server: HubHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "glm-deploy-hub/1"
    # Keep-alive connections idle longer than this are closed so server threads do not pile up.
    timeout = 120

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    # -- routing ---------------------------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self.route("HEAD")

    def do_GET(self) -> None:
        self.route("GET")

    def route(self, method: str) -> None:
        """Answer one request. Equipment may wrap it to fail chosen requests before they are routed."""
        parsed = urllib.parse.urlsplit(self.path)
        segments = [urllib.parse.unquote(part) for part in parsed.path.split("/")[1:]]
        query = urllib.parse.parse_qs(parsed.query)
        try:
            if len(segments) >= 3 and segments[0] == "api" and segments[1] == "models":
                self.server.stats.count_request("api")
                self._api(method, segments[2:], query, parsed.query)
                return
            for repo_parts in (2, 1):
                if len(segments) > repo_parts + 2 and segments[repo_parts] == "resolve":
                    repo_id = "/".join(segments[:repo_parts])
                    self.server.stats.count_request(f"file-{method.lower()}")
                    self._resolve(method, repo_id, segments[repo_parts + 1], segments[repo_parts + 2 :])
                    return
            self.send_error_response(404, None, f"no route for {parsed.path}")
        except HubStoreError as error:
            status = 401 if error.code == "GatedRepo" else 404
            self.send_error_response(status, error.code, str(error))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _api(self, method: str, rest: list[str], query: dict[str, list[str]], raw_query: str) -> None:
        store = self.server.store
        repo_id, remainder = self._split_repo(rest, ("revision", "tree"))
        if not store.repo_exists(repo_id):
            raise HubStoreError("RepoNotFound", f"Repository {repo_id} not found")
        if not remainder:
            self._send_repo_info(method, repo_id, "main", query)
        elif remainder[0] == "revision" and len(remainder) == 2:
            self._send_repo_info(method, repo_id, remainder[1], query)
        elif remainder[0] == "tree" and len(remainder) >= 2:
            self._send_tree(
                method,
                repo_id=repo_id,
                revision=remainder[1],
                path="/".join(remainder[2:]),
                query=query,
                raw_query=raw_query,
            )
        else:
            self.send_error_response(404, None, f"no route for /api/models/{'/'.join(rest)}")

    def _split_repo(self, parts: list[str], keywords: tuple[str, ...]) -> tuple[str, list[str]]:
        """Split `namespace/name/<rest>` or a legacy `name/<rest>` into the repo id and the rest."""
        if len(parts) >= 2 and parts[1] not in keywords:
            return "/".join(parts[:2]), parts[2:]
        if len(parts) >= 2 and self.server.store.repo_exists("/".join(parts[:2])):
            return "/".join(parts[:2]), parts[2:]
        return parts[0], parts[1:]

    # -- auth ------------------------------------------------------------------------------------------------
    def _token(self) -> str | None:
        header = self.headers.get("Authorization", "")
        if header.lower().startswith("bearer "):
            return header[7:].strip() or None
        return None

    def _check_token(self, repo_id: str, needs_access: bool) -> None:
        token = self._token()
        tokens = self.server.tokens
        if token is not None and tokens is not None and token not in tokens:
            raise _InvalidCredentials
        if needs_access and self.server.store.gated(repo_id) and token is None:
            raise HubStoreError(
                "GatedRepo",
                f"Access to model {repo_id} is restricted. You must have access to it and be authenticated.",
            )

    # -- API endpoints ---------------------------------------------------------------------------------------
    def _send_repo_info(self, method: str, repo_id: str, revision: str, query: dict[str, list[str]]) -> None:
        try:
            self._check_token(repo_id, needs_access=False)
        except _InvalidCredentials:
            self.send_error_response(401, None, "Invalid credentials in Authorization header")
            return
        store = self.server.store
        commit = store.resolve(repo_id, revision)
        with_blobs = query.get("blobs", ["false"])[0].lower() == "true"
        siblings = []
        for entry in commit.files.values():
            sibling: dict[str, Any] = {"rfilename": entry.path}
            if with_blobs:
                sibling["size"] = entry.size
                sibling["blobId"] = entry.git_oid
                if entry.lfs:
                    sibling["lfs"] = {
                        "sha256": entry.sha256,
                        "size": entry.size,
                        "pointerSize": LFS_POINTER_SIZE,
                    }
            siblings.append(sibling)
        author = repo_id.split("/", maxsplit=1)[0] if "/" in repo_id else None
        body = {
            "_id": hashlib.sha1(repo_id.encode(), usedforsecurity=False).hexdigest()[:24],
            "id": repo_id,
            "modelId": repo_id,
            "author": author,
            "sha": commit.sha,
            "lastModified": commit.created,
            "createdAt": commit.created,
            "private": False,
            "gated": store.gated(repo_id),
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(entry.size for entry in commit.files.values()),
        }
        self.send_json(method, body, extra_headers={"X-Repo-Commit": commit.sha})

    def _send_tree(
        self,
        method: str,
        *,
        repo_id: str,
        revision: str,
        path: str,
        query: dict[str, list[str]],
        raw_query: str,
    ) -> None:
        try:
            self._check_token(repo_id, needs_access=False)
        except _InvalidCredentials:
            self.send_error_response(401, None, "Invalid credentials in Authorization header")
            return
        commit = self.server.store.resolve(repo_id, revision)
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        entries = _tree_entries(commit, path.strip("/"), recursive)
        if path and not entries and path not in commit.files:
            raise HubStoreError("EntryNotFound", f"{path} does not exist on {revision}")
        try:
            cursor = int(query.get("cursor", ["0"])[0])
        except ValueError:
            self.send_error_response(400, None, "cursor must be an integer")
            return
        page_size = self.server.tree_page_size
        page = entries[cursor : cursor + page_size]
        headers = {"X-Repo-Commit": commit.sha}
        if cursor + page_size < len(entries):
            params = [(key, value) for key, value in urllib.parse.parse_qsl(raw_query) if key != "cursor"]
            params.append(("cursor", str(cursor + page_size)))
            host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
            next_url = (
                f"{self.server.scheme}://{host}{urllib.parse.urlsplit(self.path).path}?{urllib.parse.urlencode(params)}"
            )
            headers["Link"] = f'<{next_url}>; rel="next"'
        self.send_json(method, page, extra_headers=headers)

    # -- files -----------------------------------------------------------------------------------------------
    def _resolve(self, method: str, repo_id: str, revision: str, path_parts: list[str]) -> None:
        store = self.server.store
        if not store.repo_exists(repo_id):
            raise HubStoreError("RepoNotFound", f"Repository {repo_id} not found")
        try:
            self._check_token(repo_id, needs_access=True)
        except _InvalidCredentials:
            self.send_error_response(401, None, "Invalid credentials in Authorization header")
            return
        commit = store.resolve(repo_id, revision)
        filename = "/".join(path_parts)
        entry = commit.files.get(filename)
        if entry is None:
            self.send_error_response(
                404,
                "EntryNotFound",
                f"{filename} does not exist on {revision}",
                {"X-Repo-Commit": commit.sha},
            )
            return
        start, length, partial = 0, entry.size, False
        range_header = self.headers.get("Range")
        if range_header:
            parsed_range = _parse_range(range_header, entry.size)
            if parsed_range is None:
                self.send_error_response(
                    416,
                    None,
                    f"range {range_header!r} not satisfiable",
                    {"Content-Range": f"bytes */{entry.size}"},
                )
                return
            if parsed_range != (0, entry.size):
                start, length = parsed_range
                partial = True
        request = FileRequest(
            method=method,
            repo_id=repo_id,
            revision=revision,
            commit=commit,
            entry=entry,
            blob=store.blob_path(repo_id, entry),
            start=start,
            length=length,
            partial=partial,
        )
        self.serve_file(request)

    def serve_file(self, request: FileRequest) -> None:
        """Answer one HEAD/GET of a file: headers, then (for GET) the asked bytes.

        The fault-injection hook: equipment overrides it to misbehave on chosen requests."""
        self.send_file_headers(request)
        if request.method == "GET":
            self.send_file_bytes(request, request.start, request.length)

    def send_file_headers(self, request: FileRequest, status: int | None = None) -> None:
        entry = request.entry
        self.send_response(status or (206 if request.partial else 200))
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(request.length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{entry.etag}"')
        self.send_header("X-Repo-Commit", request.commit.sha)
        if entry.lfs:
            self.send_header("X-Linked-Etag", f'"{entry.etag}"')
            self.send_header("X-Linked-Size", str(entry.size))
        if request.partial:
            self.send_header(
                "Content-Range", f"bytes {request.start}-{request.start + request.length - 1}/{entry.size}"
            )
        self.end_headers()

    def send_file_bytes(self, request: FileRequest, offset: int, count: int) -> int:
        """Send `count` bytes of the file from `offset` (zero-copy where possible); return bytes sent."""
        if count <= 0:
            return 0
        self.wfile.flush()
        with request.blob.open("rb") as handle:
            if not isinstance(self.connection, ssl.SSLSocket):
                sent = int(self.connection.sendfile(handle, offset, count))
            else:
                # TLS encrypts in this process: socket.sendfile would send 8 KiB per call; 1 MiB blocks
                # keep the server's share of the CPU close to that of the encryption itself.
                sent = 0
                buffer = bytearray(_COPY_CHUNK)
                view = memoryview(buffer)
                handle.seek(offset)
                while sent < count:
                    got = handle.readinto(view[: min(_COPY_CHUNK, count - sent)])
                    if not got:
                        break
                    self.connection.sendall(view[:got])
                    sent += got
        self.server.stats.add_file_bytes(sent)
        return sent

    # -- responses -------------------------------------------------------------------------------------------
    def send_json(
        self, method: str, body: Any, status: int = 200, extra_headers: Mapping[str, str] | None = None
    ) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (extra_headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(payload)

    def send_error_response(
        self,
        status: int,
        error_code: str | None,
        message: str,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        headers = dict(extra_headers or {})
        if error_code:
            headers["X-Error-Code"] = error_code
        headers["X-Error-Message"] = message
        self.send_json(self.command or "GET", {"error": message}, status=status, extra_headers=headers)


class _InvalidCredentials(Exception):
    pass


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(start, length) of a single `bytes=` range, or None when it cannot be satisfied.

    Multiple ranges are not supported; they are answered with the whole file, which RFC 9110 allows.
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return (0, size)
    first, _, last = spec.strip().partition("-")
    try:
        if first == "":
            suffix = int(last)
            if suffix <= 0:
                return None
            return (max(size - suffix, 0), min(suffix, size))
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return (0, size)
    if start >= size or end < start:
        return None
    end = min(end, size - 1)
    return (start, end - start + 1)


def _tree_entries(commit: Commit, path: str, recursive: bool) -> list[dict[str, Any]]:
    prefix = f"{path}/" if path else ""
    folders: set[str] = set()
    files: list[FileEntry] = []
    for name, entry in commit.files.items():
        if not name.startswith(prefix):
            continue
        relative = name[len(prefix) :]
        parts = relative.split("/")
        for depth in range(1, len(parts)):
            if recursive or depth == 1:
                folders.add(prefix + "/".join(parts[:depth]))
        if recursive or len(parts) == 1:
            files.append(entry)
    result: list[dict[str, Any]] = []
    for folder in sorted(folders):
        oid = hashlib.sha1(f"{commit.sha}:{folder}".encode(), usedforsecurity=False).hexdigest()
        result.append({"type": "directory", "oid": oid, "size": 0, "path": folder})
    for entry in sorted(files, key=lambda item: item.path):
        item: dict[str, Any] = {"type": "file", "oid": entry.git_oid, "size": entry.size, "path": entry.path}
        if entry.lfs:
            item["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": LFS_POINTER_SIZE}
        result.append(item)
    return result


class HubServer:
    """The store served over HTTP. As a context manager it serves from a background thread."""

    def __init__(
        self,
        store: HubStore,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tokens: Sequence[str] | None = None,
        handler_class: type[HubRequestHandler] = HubRequestHandler,
        tree_page_size: int = 1000,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """`tokens`: when given, only these bearer tokens are accepted; when None, any token is (a sandbox
        has no accounts, yet gated repos still need *a* token). `tree_page_size` bounds tree pages (the Hub's
        is 1000). `ssl_context`: a server-side context holding the certificate to serve HTTPS with (see
        `server_ssl_context`); plain HTTP when None."""
        self.store = store
        self.httpd = HubHTTPServer(
            (host, port),
            handler_class,
            store,
            frozenset(tokens) if tokens is not None else None,
            tree_page_size,
            ssl_context=ssl_context,
        )
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return str(self.httpd.server_address[0])

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        host = self.host
        if ":" in host:
            host = f"[{host}]"
        return f"{self.httpd.scheme}://{host}:{self.port}"

    @property
    def stats(self) -> ServerStats:
        return self.httpd.stats

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.2)

    def start(self) -> HubServer:
        self._thread = threading.Thread(target=self.serve_forever, name=f"hub-{self.port}", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self.httpd.server_close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None:
        self.close()


def server_ssl_context(cert_file: Path | str, key_file: Path | str) -> ssl.SSLContext:
    """A server-side TLS context serving the PEM certificate chain `cert_file` with its key `key_file`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert_file), str(key_file))
    return context
