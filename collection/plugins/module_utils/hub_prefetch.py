# Copyright: glm-deploy developers
# Apache License 2.0 (see LICENSE)
"""The engine behind glm.deploy.hf_prefetch: a dependable pre-download of a Hub repository into the HF cache.

It runs on the target, with huggingface_hub from the venv the weights role prepares, and never imports
glm_deploy. Order of work, so that every refusal comes before the first byte is written:

1. resolve the revision to a commit and read every file's size and hash from the Hub's metadata;
2. compare the cache with that metadata (presence and sizes; sha256 only for files never verified);
3. check the cache filesystem (read-only, not writable, free space less a reserve) against the bytes missing;
4. probe access to one missing file (gated repositories, refused tokens) with a HEAD request;
5. download the missing files in parallel into the standard blobs/snapshots/refs layout, streaming each into
   `blobs/<etag>.incomplete` (kept across runs, resumed with Range) and hashing it as it arrives; one retry
   policy (`_with_retries`) covers every request to the Hub: 429 and 503 wait as long as the server says
   (`Retry-After`, or the `RateLimit` header's `t` of an exhausted policy), other 5xx, dropped connections
   and stalls back off, and each call gives up once it has failed for `retry_budget_s` seconds without
   progress (with xet=true, huggingface_hub's hf_hub_download does the transfer instead);
6. a file whose hash differs from the metadata is discarded and fetched again, never linked; every verified
   blob is recorded (size, mtime, inode) so that a re-run checks presence and sizes only.

Progress goes to a JSON file rewritten every second (bytes done/total, rate, ETA) so a caller polling the
async job can show it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import email.utils
import errno
import fcntl
import hashlib
import http.client
import json
import mmap
import multiprocessing
import os
import random
import re
import select
import ssl
import sys
import tempfile
import threading
import time
import types
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

VERIFIED_MARKER = ".glm-deploy/verified.json"
_HASH_CHUNK = 4 * 1024 * 1024
_DOWNLOAD_CHUNK = 1024 * 1024
# splice(2) moves at most this much per call; the pipe between socket and file is sized to match.
_SPLICE_CHUNK = 1024 * 1024
# Spliced bytes are hashed from the page cache once this many have landed: small enough that they are
# still in the CPU's L2 cache (measured: 1 MiB beat 8 MiB by about 20% in wall time on a loaded 2-core VM).
_HASH_STEP = 1024 * 1024
_HASH_WINDOW = 64 * 1024 * 1024
# A hashing thread beside the transfer takes the bytes in batches of at least this much (fewer maps of the file).
_ASIDE_BATCH = 8 * 1024 * 1024
# Bytes that pass through this process (TLS) are decrypted into this buffer, hashed from it and written from it:
# small enough to stay in the CPU's L2 cache across the three passes (measured over HTTPS on a 2-core VM,
# 4 GiB in 8 shards: 256 KiB took 10.5 CPU-s where 1 MiB took 15-18, the difference all in the kernel's copy
# into the page cache).
_RECEIVE_BUFFER = 256 * 1024
_MAX_BACKOFF_S = 60.0
_PROGRESS_INTERVAL_S = 1.0
_RATE_WINDOW_S = 20.0
_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
# The download a forked worker process works for (set in the parent just before the workers fork).
_FORKED_JOB: Prefetch | None = None


class PrefetchError(Exception):
    """A refusal or failure with a message a person can act on; `details` go into the module result."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details


class _Corrupt(Exception):
    pass


class _ShortTransfer(OSError):
    """The connection ended before the file did (resumed on the next attempt)."""


class _HTTPStatusError(Exception):
    """A non-success answer to a file download, shaped like huggingface_hub's errors for classification."""

    def __init__(self, status: int, headers: Any, url: str, problem: str = "") -> None:
        code = headers.get("X-Error-Code") if headers is not None else None
        message = headers.get("X-Error-Message") if headers is not None else None
        details = ", ".join(part for part in (problem, code, message) if part)
        super().__init__(f"HTTP {status} for {url}" + (f" ({details})" if details else ""))
        self.response = types.SimpleNamespace(status_code=status, headers=headers or {})


class _DropAuthOnOtherHost(urllib.request.HTTPRedirectHandler):
    """Follow the Hub's redirects to its CDN without carrying the token there, as huggingface_hub does
    (signed CDN URLs refuse a second credential, and the token has no business on another host)."""

    def redirect_request(  # noqa: PLR0917 - urllib's signature
        self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> Any:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlsplit(newurl).netloc != urllib.parse.urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")
        return new


def human_bytes(count: float) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{value:.2f} TiB"


class RemoteFile:
    """One file of the resolved commit, as the Hub describes it."""

    __slots__ = ("etag", "git_oid", "name", "sha256", "size")

    def __init__(self, name: str, size: int, git_oid: str | None, sha256: str | None) -> None:
        self.name = name
        self.size = size
        self.git_oid = git_oid
        self.sha256 = sha256
        # The HF cache names blobs by the file's ETag: the sha256 for LFS files, the git blob id otherwise.
        etag = sha256 or git_oid
        if not etag:
            raise PrefetchError(f"the Hub's metadata for {name} carries neither an LFS sha256 nor a blob id")
        self.etag = etag


class _SpliceUnsupported(Exception):
    """The kernel or filesystem refused splice(2) here; the transfer goes on through a buffer."""


class _VerifiedFile:
    """The `.incomplete` file of one download: bytes are written at the end of what it holds and hashed so
    that, when the last byte is in, the file is verified without a second read.

    Inline (the default), bytes that pass through a buffer are hashed from it, and bytes moved by splice(2),
    which never enter this process, are hashed from the page cache (mmap) right after they land. With `aside`,
    a second thread hashes the file from the page cache behind the transfer, so that on a host with a spare
    core the hash costs no time: one sha256 runs at about the speed of one connection on a fast link
    (measured on a 16-core host: 1.0 GiB/s against curl's 1 GiB/s per connection on loopback).
    Either way what is hashed is what is in the file, and a resumed download first hashes the bytes already
    there.
    """

    def __init__(self, path: Path, item: RemoteFile, aside: bool = False) -> None:
        self._path = path
        self._item = item
        # Not O_APPEND: splice(2) refuses append-mode targets, so every write gives its offset.
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.position = 0  # bytes in the file
        self.received = 0  # bytes this attempt added
        self._hashed = 0
        self._digest = _new_digest(item)
        self._aside: _HashAside | None = _HashAside(self) if aside else None

    def __enter__(self) -> _VerifiedFile:
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        try:
            if self._aside is not None:
                if kind is None:
                    self._aside.finish()
                else:
                    with contextlib.suppress(Exception):  # the transfer's own error is the one to report
                        self._aside.finish()
        finally:
            os.close(self._fd)

    def restart(self) -> None:
        """Start over from byte 0 (the server ignored Range and sends the whole file)."""
        if self._aside is not None:
            self._aside.finish()
        os.ftruncate(self._fd, 0)
        self.position = self._hashed = 0
        self._digest = _new_digest(self._item)
        if self._aside is not None:
            self._aside = _HashAside(self)

    def resume(self, offset: int) -> None:
        """Continue after the `offset` bytes already on disk, hashing them first."""
        if os.fstat(self._fd).st_size < offset:
            raise _ShortTransfer(f"{self._path} shrank while it was being resumed")
        self.position = offset
        if self._aside is not None:
            self._aside.publish(offset)
        else:
            self._hash_up_to(offset)

    def write(self, data: memoryview) -> None:
        written = 0
        while written < len(data):  # a file may take fewer bytes than offered
            written += os.pwrite(self._fd, data[written:], self.position + written)
        self.received += len(data)
        if self._aside is not None:
            self.position += len(data)
            self._aside.publish(self.position)
            return
        self._hash_up_to(self.position)  # bytes spliced earlier come first
        self._digest.update(data)
        self.position += len(data)
        self._hashed = self.position

    def splice_from(self, pipe: int, count: int) -> None:
        """Move `count` bytes waiting in `pipe` to the end of the file, inside the kernel."""
        left = count
        while left > 0:
            try:
                moved = os.splice(pipe, self._fd, left, offset_dst=self.position)
            except OSError as error:
                if error.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise
                # This filesystem takes no splice: copy what is in the pipe, then carry on buffered.
                while left > 0:
                    data = os.read(pipe, left)
                    if not data:
                        raise _ShortTransfer(f"{self._path}: bytes were lost between socket and file") from None
                    self.write(memoryview(data))
                    left -= len(data)
                raise _SpliceUnsupported(str(error)) from None
            if moved <= 0:
                raise _ShortTransfer(f"{self._path}: the pipe from the socket ran dry")
            self.position += moved
            self.received += moved
            left -= moved
        if self._aside is not None:
            self._aside.publish(self.position)
        elif self.position - self._hashed >= _HASH_STEP:
            self._hash_up_to(self.position)

    def matches(self) -> bool:
        if self._aside is not None:
            self._aside.publish(self.position)
            self._aside.finish()
        self._hash_up_to(self.position)
        expected = self._item.sha256 or self._item.git_oid or ""
        return bool(self._digest.hexdigest() == expected)

    def _hash_up_to(self, end: int) -> None:
        """Hash the file's bytes from where hashing stopped up to `end`, without copying them: mapped in
        windows, so a resumed file of hundreds of GB is never mapped whole."""
        while self._hashed < end:
            base = self._hashed - self._hashed % mmap.ALLOCATIONGRANULARITY
            stop = min(end, base + _HASH_WINDOW)
            try:
                # MAP_POPULATE maps the window in one call instead of a page fault per few pages.
                mapped = mmap.mmap(
                    self._fd,
                    stop - base,
                    flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0),
                    prot=mmap.PROT_READ,
                    offset=base,
                )
            except (OSError, ValueError):
                self._hash_by_reading(stop)  # a filesystem without mmap: read it instead
                continue
            try:
                with memoryview(mapped) as view:
                    self._digest.update(view[self._hashed - base :])
            finally:
                mapped.close()
            self._hashed = stop

    def _hash_by_reading(self, end: int) -> None:
        while self._hashed < end:
            chunk = os.pread(self._fd, min(_HASH_CHUNK, end - self._hashed), self._hashed)
            if not chunk:
                raise _ShortTransfer(f"{self._path} shrank while it was being hashed")
            self._digest.update(chunk)
            self._hashed += len(chunk)


class _HashAside:
    """The thread that hashes a `_VerifiedFile` behind its transfer: the transfer publishes how far the file is
    written; this thread hashes up to there in batches (hashlib and mmap release the interpreter's lock, so
    both run at once). `finish` waits until everything published is hashed and re-raises the thread's error."""

    def __init__(self, target: _VerifiedFile) -> None:
        self._target = target
        self._published = target.position
        self._closing = False
        self._error: BaseException | None = None
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"hash {target._item.name}", daemon=True)
        self._thread.start()

    def publish(self, end: int) -> None:
        with self._changed:
            self._published = end
            if end - self._target._hashed >= _ASIDE_BATCH:
                self._changed.notify()

    def finish(self) -> None:
        with self._changed:
            self._closing = True
            self._changed.notify()
        self._thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _run(self) -> None:
        target = self._target
        try:
            while True:
                with self._changed:
                    while not self._closing and self._published - target._hashed < _ASIDE_BATCH:
                        self._changed.wait()
                    end, closing = self._published, self._closing
                target._hash_up_to(end)
                if closing:
                    return
        except BaseException as error:  # handed to the transfer, which raises it from finish()
            self._error = error


def _new_digest(item: RemoteFile) -> Any:
    if item.sha256:
        return hashlib.sha256()
    # Small files are checked against their git blob id: sha1 over a "blob <size>\0" header and the content.
    return hashlib.sha1(f"blob {item.size}\0".encode(), usedforsecurity=False)


def _given(params: dict[str, Any], name: str, default: Any) -> Any:
    value = params.get(name)
    return default if value is None else value


class Settings:
    """The validated module parameters."""

    def __init__(self, params: dict[str, Any], check_mode: bool) -> None:
        self.repo = str(params["repo"]).strip()
        self.revision = str(params.get("revision") or "main").strip()
        self.allow_patterns = list(params.get("allow_patterns") or []) or None
        self.ignore_patterns = list(params.get("ignore_patterns") or []) or None
        self.cache_dir = Path(str(params["cache_dir"]))
        self.endpoint = (params.get("endpoint") or "").rstrip("/") or None
        self.token = params.get("token") or None
        self.xet = bool(params.get("xet"))
        self.max_workers = int(_given(params, "max_workers", 8))
        self.hash_aside = str(_given(params, "hash_aside", "auto"))
        self.stall_timeout = float(_given(params, "stall_timeout", 60))
        self.retry_budget_s = float(_given(params, "retry_budget_s", 900))
        self.retry_backoff = float(_given(params, "retry_backoff", 2.0))
        self.reserve = int(_given(params, "free_space_reserve_bytes", 0))
        self.verify = bool(params.get("verify"))
        progress = params.get("progress_file")
        self.progress_file = Path(str(progress)) if progress else None
        ca_bundle = params.get("ca_bundle")
        self.ca_bundle = Path(str(ca_bundle)) if ca_bundle else None
        self.check_mode = check_mode
        self._validate()

    def _validate(self) -> None:
        if not _REPO_ID.match(self.repo):
            raise PrefetchError(
                f"repo {self.repo!r} is not a Hub repository id: use 'namespace/name', e.g. 'zai-org/GLM-5-FP8'"
            )
        if not self.revision or any(ch.isspace() for ch in self.revision) or ".." in self.revision:
            raise PrefetchError(
                f"revision {self.revision!r} is not valid: give a branch or tag name or a 40-hex commit"
            )
        if not self.cache_dir.is_absolute():
            raise PrefetchError(
                f"cache_dir {str(self.cache_dir)!r} must be an absolute path, e.g. /var/lib/glm-deploy/hf/hub"
            )
        if self.endpoint is not None and not re.match(r"^https?://[^/\s]+", self.endpoint):
            raise PrefetchError(
                f"endpoint {self.endpoint!r} is not an http(s) URL: e.g. https://huggingface.co "
                "or http://hub.internal:8080"
            )
        if self.hash_aside not in ("auto", "always", "never"):
            raise PrefetchError(f"hash_aside {self.hash_aside!r} must be auto, always or never")
        if not 1 <= self.max_workers <= 64:
            raise PrefetchError(f"max_workers {self.max_workers} must be between 1 and 64")
        if self.retry_backoff < 0:
            raise PrefetchError(f"retry_backoff {self.retry_backoff} must be 0 or more seconds")
        if self.stall_timeout <= 0:
            raise PrefetchError(f"stall_timeout {self.stall_timeout} must be a positive number of seconds")
        if self.retry_budget_s < 0:
            raise PrefetchError(
                f"retry_budget_s {self.retry_budget_s:g} must be 0 or more seconds: e.g. 900, which outlasts the "
                "Hub's 5-minute rate-limit window"
            )
        if self.reserve < 0:
            raise PrefetchError(f"free_space_reserve_bytes {self.reserve} must be 0 or more")
        if self.progress_file is not None and not self.progress_file.is_absolute():
            raise PrefetchError(f"progress_file {str(self.progress_file)!r} must be an absolute path")
        if self.ca_bundle is not None:
            try:
                ssl.create_default_context(cafile=str(self.ca_bundle))
            except (OSError, ValueError) as error:  # ssl.SSLError is an OSError
                raise PrefetchError(
                    f"ca_bundle {str(self.ca_bundle)!r} is not a readable PEM file of CA certificates "
                    f"({_first_line(error)}): give the PEM file of the CA that signed the Hub's certificate"
                ) from None

    def tls_context(self) -> ssl.SSLContext | None:
        """The client TLS context for ca_bundle; None leaves the default (system CAs, or SSL_CERT_FILE)."""
        return ssl.create_default_context(cafile=str(self.ca_bundle)) if self.ca_bundle is not None else None

    @property
    def endpoint_label(self) -> str:
        return self.endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co"


def _configure_environment(settings: Settings) -> Any:
    """Set huggingface_hub's environment before importing it (it reads most settings at import)."""
    if settings.endpoint:
        os.environ["HF_ENDPOINT"] = settings.endpoint
    # A read with no byte for this long counts as a stall: huggingface_hub then resumes with Range.
    os.environ["HF_HUB_DOWNLOAD_TIMEOUT"] = str(max(1, round(settings.stall_timeout)))
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", str(max(10, round(settings.stall_timeout))))
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if settings.ca_bundle is not None:
        # huggingface_hub's HTTP client (httpx over httpcore) trusts SSL_CERT_FILE when it is set, as the
        # downloads below do through their own context: the metadata and the bytes trust the same CAs.
        os.environ["SSL_CERT_FILE"] = str(settings.ca_bundle)
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    if settings.xet:
        os.environ.pop("HF_HUB_DISABLE_XET", None)
        os.environ["HF_XET_HIGH_PERFORMANCE"] = "1"
    else:
        os.environ["HF_HUB_DISABLE_XET"] = "1"
    try:
        import huggingface_hub
        from huggingface_hub import constants
    except ImportError:
        raise PrefetchError(
            f"huggingface_hub is not installed for {sys.executable}: the weights role installs it into "
            "/var/lib/glm-deploy/venvs/hub and runs this module with that interpreter"
        ) from None
    # In case huggingface_hub was imported before these variables were set.
    constants.HF_HUB_DOWNLOAD_TIMEOUT = int(os.environ["HF_HUB_DOWNLOAD_TIMEOUT"])
    constants.HF_HUB_DISABLE_XET = not settings.xet
    # huggingface_hub writes what it received in chunks of this size; after a dropped connection it resumes
    # from the last whole chunk, so 1 MiB (not its default 10 MiB) loses less on every drop and refreshes
    # progress more often, at no cost to throughput.
    constants.DOWNLOAD_CHUNK_SIZE = _DOWNLOAD_CHUNK
    if settings.endpoint:
        constants.ENDPOINT = settings.endpoint
    return huggingface_hub


def _error_names(error: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(error).__mro__}


def _status(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    return int(status) if isinstance(status, int) else None


class Clock:
    """Time as the retry policy sees it: a monotonic clock for budgets, the wall clock for HTTP dates, and a
    wait that an event cuts short. Tests give `Prefetch` one that advances without sleeping, so a 300 s
    rate-limit window is checked in milliseconds."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def wait(self, event: Any, seconds: float) -> bool:
        """Wait `seconds` or until `event` is set; True when it was set."""
        return bool(event.wait(seconds))


class ServerWait:
    """How long the server asked the client to wait before the next request, and which header said so."""

    __slots__ = ("rate_limited", "reason", "seconds")

    def __init__(self, seconds: float, reason: str, rate_limited: bool) -> None:
        self.seconds = seconds
        self.reason = reason
        self.rate_limited = rate_limited

    def describe(self, waiting: float) -> str:
        what = "rate limited by the Hub" if self.rate_limited else "the Hub is unavailable (503)"
        return f"{what}: waiting {waiting:.0f} s ({self.reason})"


def _header_values(headers: Any, name: str) -> list[str]:
    """Every value of header `name` (a field may come on several lines), from urllib's or httpx's headers."""
    for getter in ("get_all", "get_list"):
        method = getattr(headers, getter, None)
        if method is not None:
            with contextlib.suppress(Exception):
                return [str(value) for value in (method(name) or [])]
    value = headers.get(name) if hasattr(headers, "get") else None
    return [] if value is None else [str(value)]


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    """Split a structured field at `separator`, except inside sf-strings ("...", with backslash escapes) and
    inner lists ((...)), as RFC 8941 reads it."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    depth = 0
    for char in text:
        if quoted:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth = max(0, depth - 1)
        elif char == separator and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


_SF_KEY = re.compile(r"^[a-z*][a-z0-9_.*-]*$")
_SF_INTEGER = re.compile(r"^-?[0-9]{1,15}$")


def parse_ratelimit(value: str) -> list[tuple[str, int, int]]:
    """The policies of a `RateLimit` header (draft-ietf-httpapi-ratelimit-headers: a structured-field List
    whose members are `"policy";r=<remaining>;t=<seconds to reset>`), as (policy, r, t). A member without
    both integers, or with negative ones, is skipped; what cannot be parsed at all gives an empty list, so a
    malformed header means "the server said nothing", never a failure."""
    policies: list[tuple[str, int, int]] = []
    for member in _split_outside_quotes(value, ","):
        pieces = [piece.strip() for piece in _split_outside_quotes(member, ";")]
        if not pieces or not pieces[0]:
            continue
        name = pieces[0].strip('"')
        params: dict[str, int] = {}
        for piece in pieces[1:]:
            key, equals, raw = piece.partition("=")
            key, raw = key.strip(), raw.strip()
            if equals and _SF_KEY.match(key) and _SF_INTEGER.match(raw) and key not in params:
                params[key] = int(raw)
        remaining, reset = params.get("r"), params.get("t")
        if remaining is not None and reset is not None and remaining >= 0 and reset >= 0:
            policies.append((name, remaining, reset))
    return policies


def _parse_retry_after(value: str, now: float) -> float | None:
    """`Retry-After` as seconds from `now`: delay-seconds or an HTTP-date (RFC 9110); None when it is neither."""
    value = value.strip()
    if re.match(r"^[0-9]{1,10}(\.[0-9]+)?$", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None  # an HTTP-date is always GMT; a date without a zone is not one
    return max(0.0, when.timestamp() - now)


def server_wait(error: BaseException, now: float) -> ServerWait | None:
    """The wait a 429 or 503 answer asks for: `Retry-After` (seconds or an HTTP-date) and, on a 429, the
    `RateLimit` header's `t` for the policies with nothing left (`r=0`; the largest `t` when several are
    exhausted, since a request fails until every one of them resets). When both headers are there the larger
    wait wins: retrying before either says is only another 429. None when the answer names no wait."""
    status = _status(error)
    if status not in (429, 503):
        return None
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    waits: list[tuple[float, str]] = []
    for value in _header_values(headers, "Retry-After")[:1]:
        seconds = _parse_retry_after(value, now)
        if seconds is not None:
            waits.append((seconds, f"Retry-After {value.strip()}"))
    if status == 429:
        exhausted = [
            (reset, name)
            for value in _header_values(headers, "RateLimit")
            for name, remaining, reset in parse_ratelimit(value)
            if remaining == 0
        ]
        if exhausted:
            reset, name = max(exhausted)
            waits.append((float(reset), f"RateLimit t={reset}" + (f" for {name!r}" if len(exhausted) > 1 else "")))
    if not waits:
        return None
    seconds, _ = max(waits)
    reason = ", ".join(text for _, text in sorted(waits, reverse=True))
    return ServerWait(seconds, reason, rate_limited=status == 429)


def _tls_problem(error: BaseException) -> str | None:
    """What went wrong in a TLS handshake that no retry can fix (the certificate is not trusted or not
    valid for the host, or the server does not speak TLS), found anywhere in the error's chain; else None."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return f"certificate verify failed: {current.verify_message or current.reason}"
        if isinstance(current, ssl.SSLError) and current.reason == "WRONG_VERSION_NUMBER":
            return "the server did not answer in TLS (is the endpoint an http:// URL?)"
        reason = getattr(current, "reason", None)
        pending += [current.__cause__, current.__context__, reason if isinstance(reason, BaseException) else None]
    text = str(error)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return text.split("CERTIFICATE_VERIFY_FAILED]", 1)[-1].split("(_ssl.c", 1)[0].strip() or text
    return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return " ".join(line.strip() for line in text[:3] if line.strip()) or type(error).__name__


class Prefetch:
    def __init__(self, settings: Settings, hub: Any, clock: Clock | None = None) -> None:
        self.settings = settings
        self.hub = hub
        self.clock = clock or Clock()
        repo_type_folder = "models--" + settings.repo.replace("/", "--")
        self.repo_folder = settings.cache_dir / repo_type_folder
        self.commit = ""
        self.files: list[RemoteFile] = []
        self.gated: Any = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._verified: dict[str, Any] = {}
        self.retry_log: list[str] = []
        self.fetched: list[str] = []
        self.linked: list[str] = []
        self.bytes_fetched = 0
        self.verified_now: list[str] = []
        self.refetched_corrupt: list[str] = []
        self._progress_state: dict[str, Any] = {}
        # Waits the Hub asked for, by what waits: (until, on the monotonic clock; what the progress file shows).
        self._waiting: dict[str, tuple[float, str]] = {}
        # Worker processes send their waits to the parent through this queue (set while they run).
        self._notes: Any = None
        handlers: list[Any] = [_DropAuthOnOtherHost]
        context = settings.tls_context()
        if context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=context))
        self._opener = urllib.request.build_opener(*handlers)
        self._fetch_set: list[RemoteFile] = []
        # In a forked download worker: verified blobs are handed back to the parent, which alone writes the marker.
        self._in_worker = False
        self.hash_aside = False  # whether transfers hash in a thread of their own (see _VerifiedFile)
        self.workers = "none"  # how the files were fetched: "processes N", "threads N" or "none"
        self._verified_here: dict[str, Any] = {}

    # -- step 1: metadata ------------------------------------------------------------------------------------
    def resolve(self) -> None:
        settings = self.settings
        api = self.hub.HfApi(endpoint=settings.endpoint)

        def call() -> Any:
            return api.model_info(settings.repo, revision=settings.revision, files_metadata=True, token=settings.token)

        info = self._with_retries(f"reading the metadata of {settings.repo}@{settings.revision}", call)
        self.commit = str(info.sha)
        self.gated = getattr(info, "gated", False)
        siblings = list(info.siblings or [])
        names = [sibling.rfilename for sibling in siblings]
        from huggingface_hub.utils import filter_repo_objects

        wanted = set(
            filter_repo_objects(names, allow_patterns=settings.allow_patterns, ignore_patterns=settings.ignore_patterns)
        )
        for sibling in siblings:
            if sibling.rfilename not in wanted:
                continue
            lfs = getattr(sibling, "lfs", None)
            sha256 = getattr(lfs, "sha256", None) if lfs is not None else None
            size = sibling.size if sibling.size is not None else getattr(lfs, "size", None)
            if size is None:
                raise PrefetchError(
                    f"the Hub at {settings.endpoint_label} gave no size for {sibling.rfilename}: "
                    "cannot check free space or completeness"
                )
            self.files.append(RemoteFile(sibling.rfilename, int(size), sibling.blob_id, sha256))
        if not self.files:
            raise PrefetchError(
                f"no file of {settings.repo}@{self.commit} matches allow_patterns={settings.allow_patterns} "
                f"ignore_patterns={settings.ignore_patterns}: loosen the patterns",
                commit=self.commit,
            )
        self.files.sort(key=lambda item: item.name)

    # -- step 2: what the cache holds ------------------------------------------------------------------------
    def blob_path(self, item: RemoteFile) -> Path:
        return self.repo_folder / "blobs" / item.etag

    def snapshot_path(self, item: RemoteFile) -> Path:
        return self.repo_folder / "snapshots" / self.commit / item.name

    def _load_verified(self) -> None:
        try:
            data = json.loads((self.repo_folder / VERIFIED_MARKER).read_text())
            self._verified = dict(data.get("blobs", {}))
        except (OSError, ValueError):
            self._verified = {}

    def _is_recorded(self, item: RemoteFile, stat: os.stat_result) -> bool:
        record = self._verified.get(item.etag)
        return bool(
            record
            and record.get("size") == stat.st_size
            and record.get("mtime_ns") == stat.st_mtime_ns
            and record.get("inode") == stat.st_ino
        )

    def survey(self) -> tuple[list[RemoteFile], list[RemoteFile], int]:
        """(files to fetch, present files to hash, bytes missing)."""
        self._load_verified()
        to_fetch: list[RemoteFile] = []
        to_hash: list[RemoteFile] = []
        missing = 0
        for item in self.files:
            link = self.snapshot_path(item)
            try:
                stat = link.stat()  # follows the symlink: a dangling link counts as missing
            except OSError:
                stat = None
            if stat is not None and stat.st_size == item.size:
                if self.settings.verify or not self._is_recorded(item, stat):
                    to_hash.append(item)
                continue
            to_fetch.append(item)
            missing += item.size - self._usable_bytes(item)
        return to_fetch, to_hash, missing

    def _usable_bytes(self, item: RemoteFile) -> int:
        """Bytes of `item` on disk that a download will reuse (a right-sized blob or a partial file)."""
        try:
            size = self.blob_path(item).stat().st_size
            if size == item.size:
                return size
        except OSError:
            pass
        try:
            return min(Path(f"{self.blob_path(item)}.incomplete").stat().st_size, item.size)
        except OSError:
            return 0

    # -- step 3: the filesystem ------------------------------------------------------------------------------
    def check_filesystem(self, missing: int) -> dict[str, int]:
        settings = self.settings
        base = settings.cache_dir
        while not base.exists():
            if base.parent == base:
                break
            base = base.parent
        if base.exists() and not base.is_dir():
            raise PrefetchError(f"cache_dir {settings.cache_dir}: {base} exists and is not a directory")
        stat = os.statvfs(base)
        if stat.f_flag & os.ST_RDONLY:
            raise PrefetchError(
                f"cache_dir {settings.cache_dir} is on a read-only filesystem (mounted at or above {base}): "
                "remount it read-write or choose a cache_dir on a writable filesystem"
            )
        if not os.access(base, os.W_OK | os.X_OK):
            raise PrefetchError(
                f"cache_dir {settings.cache_dir} is not writable by uid {os.geteuid()} ({base} denies it): "
                "fix its owner/mode or run the module as a user that may write there"
            )
        free = stat.f_bavail * stat.f_frsize
        usable = free - settings.reserve
        numbers = {"bytes_missing": missing, "bytes_free": free, "free_space_reserve_bytes": settings.reserve}
        if missing > usable:
            raise PrefetchError(
                f"not enough space for {settings.repo}@{self.commit[:12]} in {settings.cache_dir}: "
                f"{human_bytes(missing)} ({missing} bytes) still to download, "
                f"{human_bytes(free)} ({free} bytes) "
                f"free, {human_bytes(settings.reserve)} ({settings.reserve} bytes) kept in reserve: free "
                f"{human_bytes(missing - usable)} more, lower free_space_reserve_bytes, or choose another "
                "cache_dir",
                **numbers,
            )
        return numbers

    # -- step 4: access --------------------------------------------------------------------------------------
    def check_access(self, probe: RemoteFile | None) -> None:
        settings = self.settings
        if probe is None:
            return  # nothing to download: a cache already complete needs no access
        if self.gated and not settings.token:
            raise PrefetchError(
                f"{settings.repo} is a gated repository and no token was given: accept its terms on the Hub "
                "with your account, then set HF_TOKEN (a token with read access) in the controller's "
                "environment so the weights role can pass it",
                commit=self.commit,
            )
        url = self.hub.hf_hub_url(settings.repo, probe.name, revision=self.commit, endpoint=settings.endpoint)

        def head() -> Any:
            return self.hub.get_hf_file_metadata(url, token=settings.token)

        self._with_retries(f"checking access to {probe.name}", head)

    # -- step 5/6: download and verify -----------------------------------------------------------------------
    def hash_file(self, item: RemoteFile, path: Path) -> bool:
        digest = _new_digest(item)
        with path.open("rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
        return bool(digest.hexdigest() == (item.sha256 or item.git_oid or ""))

    def record_verified(self, item: RemoteFile, path: Path) -> None:
        stat = path.stat()
        entry = {
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "inode": stat.st_ino,
            "algorithm": "sha256" if item.sha256 else "git-sha1",
            "verified_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        with self._lock:
            self.verified_now.append(item.name)
            self._verified[item.etag] = entry
            if self._in_worker:
                self._verified_here[item.etag] = entry
            else:
                self._write_marker()

    def _write_marker(self) -> None:
        """Write the record of verified blobs (call with the lock held)."""
        marker = self.repo_folder / VERIFIED_MARKER
        marker.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=marker.parent, prefix=".tmp-", delete=False) as handle:
            json.dump({"version": 1, "blobs": self._verified}, handle, sort_keys=True)
        os.chmod(handle.name, 0o644)
        os.replace(handle.name, marker)

    def remove_bad(self, item: RemoteFile) -> None:
        """Take a wrong file out of the snapshot and the blob store, so only right bytes stay."""
        for path in (self.snapshot_path(item), self.blob_path(item)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        with self._lock:
            self._verified.pop(item.etag, None)

    def verify_present(self, to_hash: list[RemoteFile]) -> list[RemoteFile]:
        """Hash present files never verified (or all with verify=true); returns the ones found wrong."""
        bad: list[RemoteFile] = []
        self._phase("verifying", files=to_hash)

        def check(item: RemoteFile) -> None:
            target = self.snapshot_path(item).resolve()
            if self.hash_file(item, target):
                self.record_verified(item, target)
            else:
                self.remove_bad(item)
                with self._lock:
                    bad.append(item)
                    self.refetched_corrupt.append(item.name)

        self._run_parallel(to_hash, check)
        return bad

    def fetch(self, to_fetch: list[RemoteFile]) -> None:
        """Download `to_fetch` in parallel. When one file fails for good, no further file starts, but those in
        flight run to their end; the error then says which files were finished (verified and kept), so a
        person knows what the re-run still has to fetch."""
        try:
            self._fetch(to_fetch)
        except PrefetchError as error:
            raise self._with_what_finished(error) from None

    def _with_what_finished(self, error: PrefetchError) -> PrefetchError:
        with self._lock:
            finished = sorted(set(self.fetched + self.linked))
        unfinished = sorted({item.name for item in self._fetch_set} - set(finished))
        summary = (
            f"{len(finished)} of {len(self._fetch_set)} files were finished and verified before the run stopped "
            f"(kept in the cache); {len(unfinished)} were not: {', '.join(unfinished[:5])}"
            + (f" and {len(unfinished) - 5} more" if len(unfinished) > 5 else "")
        )
        details = dict(error.details)
        details.update(
            files_fetched=len(self.fetched),
            fetched=sorted(self.fetched)[:200],
            files_linked=len(self.linked),
            files_not_finished=unfinished[:200],
            bytes_fetched=self.bytes_fetched,
        )
        return PrefetchError(f"{error}. {summary}", **details)

    def _fetch(self, to_fetch: list[RemoteFile]) -> None:
        self._fetch_set = sorted(to_fetch, key=lambda item: item.size, reverse=True)
        self._phase("downloading", files=self._fetch_set)
        workers = min(self.settings.max_workers, len(self._fetch_set))
        choice = self.settings.hash_aside
        # Only the module's own transfers hash as they go; Xet downloads are hashed afterwards (hash_file).
        self.hash_aside = (
            workers > 0
            and not self.settings.xet
            and (choice == "always" or (choice == "auto" and _usable_cpus() >= 2 * workers))
        )
        if workers > 1 and not self.settings.xet and hasattr(os, "fork"):
            try:
                stop = multiprocessing.get_context("fork").Event()
            except (OSError, ImportError):  # no POSIX semaphores (a /dev/shm-less container): threads instead
                pass
            else:
                self.workers = f"processes {workers}"
                self._fetch_in_processes(workers, stop)
                return
        if self._fetch_set:
            self.workers = f"threads {max(1, workers)}"
        self._run_parallel(self._fetch_set, self._fetch_one)

    def _fetch_one(self, item: RemoteFile) -> None:
        download = self._download_xet if self.settings.xet else self._download_http

        def attempt() -> bool:
            if self._stop.is_set():
                raise PrefetchError("stopped")
            return download(item)

        try:
            transferred = self._with_retries(
                f"downloading {item.name}", attempt, progress=lambda: self._usable_bytes(item)
            )
        except BaseException as error:
            if not (isinstance(error, PrefetchError) and str(error) == "stopped"):
                # Stop new files at once, from here: the pool that hands out files would only learn of this
                # failure after it has handed the next one to this worker.
                self._stop.set()
            raise
        with self._lock:
            (self.fetched if transferred else self.linked).append(item.name)

    def _fetch_in_processes(self, workers: int, stop: Any) -> None:
        """Download over plain HTTP(S) in forked worker processes, one file at a time each.

        Threads of one interpreter share its lock: measured on 16 cores, 8 threads moved 4 GiB at 2.2 GiB/s over
        HTTP and 0.8 GiB/s over TLS (each TLS record of 16 KiB is a round through that lock) where 8 curls moved
        7.6 and 5.1 GiB/s. Processes decrypt, write and hash in parallel. The parent keeps the progress (read from
        the files' sizes), the record of verified blobs and the results; a failure stops the other workers from
        starting new files (transfers in flight finish, their bytes are kept), as with threads. Waits the Hub asks
        a worker for come back through a queue, for the progress file.
        """
        global _FORKED_JOB  # noqa: PLW0603 - handed to the forked workers, which cannot take it as an argument
        context = multiprocessing.get_context("fork")
        threads_stop, self._stop = self._stop, stop  # a multiprocessing Event: seen by every worker process
        with contextlib.suppress(OSError, ImportError):  # without it the file only lacks the waits' notes
            self._notes = context.SimpleQueue()
        _FORKED_JOB = self
        errors: list[BaseException] = []
        try:
            with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                futures = [pool.submit(_fetch_in_worker, index) for index in range(len(self._fetch_set))]
                for future in concurrent.futures.as_completed(futures):
                    try:
                        outcome = future.result()
                    except Exception as error:  # a worker died (killed, out of memory): no outcome to merge
                        outcome = {"error": {"message": f"a download worker process failed: {_first_line(error)}"}}
                    self._merge(outcome)
                    if outcome.get("error"):
                        self._stop.set()
                        errors.append(PrefetchError(outcome["error"]["message"], **outcome["error"].get("details", {})))
        finally:
            _FORKED_JOB = None
            if self._stop.is_set():
                threads_stop.set()
            self._stop = threads_stop
            with self._lock:
                notes, self._notes = self._notes, None
            if notes is not None:
                notes.close()
        _raise_first_failure(errors)

    def _merge(self, outcome: dict[str, Any]) -> None:
        with self._lock:
            self.fetched += outcome.get("fetched", [])
            self.linked += outcome.get("linked", [])
            self.bytes_fetched += outcome.get("bytes_fetched", 0)
            self.verified_now += outcome.get("verified_now", [])
            self.refetched_corrupt += outcome.get("refetched_corrupt", [])
            self.retry_log += outcome.get("retry_log", [])
            if outcome.get("verified"):
                self._verified.update(outcome["verified"])
                self._write_marker()

    def run_in_worker(self, index: int) -> dict[str, Any]:
        """In a forked worker: fetch one file and return what the parent records (never raises)."""
        self._in_worker = True
        self._lock = threading.Lock()  # the parent's may have been held by another thread at the fork
        self.fetched, self.linked, self.verified_now, self.refetched_corrupt, self.retry_log = [], [], [], [], []
        self.bytes_fetched = 0
        self._verified_here = {}
        error: dict[str, Any] | None = None
        try:
            self._fetch_one(self._fetch_set[index])
        except PrefetchError as failure:
            error = {"message": str(failure), "details": failure.details}
        except Exception as failure:  # reported to the parent, which fails the run with it
            error = {"message": _first_line(failure)}
        return {
            "fetched": self.fetched,
            "linked": self.linked,
            "bytes_fetched": self.bytes_fetched,
            "verified_now": self.verified_now,
            "verified": self._verified_here,
            "refetched_corrupt": self.refetched_corrupt,
            "retry_log": self.retry_log,
            "error": error,
        }

    def _download_http(self, item: RemoteFile) -> bool:
        """One file over plain HTTP into `<blob>.incomplete`, kept across runs and resumed with Range.

        huggingface_hub's hf_hub_download is not used here for two measured reasons: since 1.x it downloads
        to a per-process temporary file that it deletes when the call fails, so a killed or failed run
        restarts multi-GB shards from zero; and its httpx read loop moved about half the bytes per second
        that curl does on the same link (see the benchmark). The bytes are streamed with the standard
        library (spliced socket-to-file on plain HTTP, through a 256 KiB buffer on TLS) and hashed as they
        land; huggingface_hub still provides the URL, the
        headers (user agent, token) and, before this, the metadata and the access check.
        """
        blob = self.blob_path(item)
        incomplete = Path(f"{blob}.incomplete")
        blob.parent.mkdir(parents=True, exist_ok=True)
        transferred = False
        with self._blob_lock(item):
            if not self._blob_complete(item):
                transferred = True
                self._stream(item, incomplete)
                os.chmod(incomplete, 0o644)
                os.replace(incomplete, blob)
                self.record_verified(item, blob)
            elif not self._is_recorded(item, blob.stat()):
                # Another process (or an earlier run) finished this blob: check it before linking it.
                if not self.hash_file(item, blob):
                    self.remove_bad(item)
                    raise _Corrupt(f"{item.name}: the blob already in the cache has wrong bytes; removed it")
                self.record_verified(item, blob)
            self._link(item)
        return transferred

    def _stream(self, item: RemoteFile, incomplete: Path) -> None:
        """Append the missing bytes of `item` to `incomplete`; on return it holds the whole, verified file."""
        from huggingface_hub.utils import build_hf_headers

        settings = self.settings
        try:
            resume = incomplete.stat().st_size
        except FileNotFoundError:
            resume = 0
        if resume > item.size:
            incomplete.unlink()
            resume = 0
        headers = dict(build_hf_headers(token=settings.token))
        headers["Accept-Encoding"] = "identity"  # sizes and hashes are of the raw bytes
        if resume:
            headers["Range"] = f"bytes={resume}-"
        url = self.hub.hf_hub_url(settings.repo, item.name, revision=self.commit, endpoint=settings.endpoint)
        if resume < item.size:
            # The URL is the validated http(s) endpoint's: no file: or custom scheme can reach here.
            request = urllib.request.Request(url, headers=headers)  # noqa: S310
            try:
                # The socket timeout bounds every read: a transfer with no byte for this long is a stall.
                response = self._opener.open(request, timeout=settings.stall_timeout)
            except urllib.error.HTTPError as error:
                raise _HTTPStatusError(error.code, error.headers, url) from None
            with response, _VerifiedFile(incomplete, item, aside=self.hash_aside) as target:
                if resume and response.status == 200:
                    target.restart()  # the server ignored Range and sends the whole file
                    resume = 0
                elif resume and not str(response.headers.get("Content-Range", "")).startswith(f"bytes {resume}-"):
                    raise _HTTPStatusError(response.status, response.headers, url, "wrong Content-Range")
                else:
                    target.resume(resume)
                try:
                    self._receive(response, target)
                finally:
                    with self._lock:
                        self.bytes_fetched += target.received
                if target.position != item.size:
                    raise _ShortTransfer(f"{item.name}: the connection ended at byte {target.position} of {item.size}")
                right = target.matches()
        else:  # an earlier run received every byte but stopped before checking them
            with _VerifiedFile(incomplete, item, aside=self.hash_aside) as target:
                target.resume(item.size)
                right = target.matches()
        if not right:
            incomplete.unlink()
            with self._lock:
                self.refetched_corrupt.append(item.name)
            raise _Corrupt(f"{item.name}: the downloaded bytes do not match the Hub's hash; discarded them")

    def _receive(self, response: Any, target: _VerifiedFile) -> None:
        """Move the response body into `target`: with splice(2), socket to file inside the kernel, where the
        connection is plain HTTP (a local mirror, the sandbox Hub); through a buffer otherwise (TLS must be
        decrypted in this process)."""
        if self._can_splice(response):
            try:
                self._receive_spliced(response, target)
                return
            except _SpliceUnsupported:
                pass  # the rest goes through the buffer; what was spliced is in the file and hashed
        # http.client fills the whole buffer (or reaches the end of the body) before it returns, and a stall
        # or drop loses what it held: the buffer's size bounds that loss.
        buffer = bytearray(_RECEIVE_BUFFER)
        view = memoryview(buffer)
        while True:
            count = response.readinto(view)
            if not count:
                break
            target.write(view[:count])

    @staticmethod
    def _can_splice(response: Any) -> bool:
        return (
            hasattr(os, "splice")
            and urllib.parse.urlsplit(response.geturl()).scheme == "http"
            and not getattr(response, "chunked", True)
            and isinstance(getattr(response, "length", None), int)
        )

    def _receive_spliced(self, response: Any, target: _VerifiedFile) -> None:
        # Body bytes http.client already buffered with the headers come first, through the buffer.
        if response.length > 0:
            waiting = response.fp.peek(1)[: response.length]
            if waiting:
                target.write(memoryview(response.read(len(waiting))))
        if response.length <= 0:
            return  # all of it came with the headers (http.client has closed the socket)
        sock = response.fileno()
        stall_ms = max(1, round(self.settings.stall_timeout * 1000))
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        pipe_out, pipe_in = os.pipe()
        try:
            with contextlib.suppress(OSError):  # a smaller pipe only means more calls
                fcntl.fcntl(pipe_in, getattr(fcntl, "F_SETPIPE_SZ", 1031), _SPLICE_CHUNK)
            while response.length > 0:
                try:
                    count = os.splice(sock, pipe_in, min(_SPLICE_CHUNK, response.length))
                except BlockingIOError:
                    # The socket has a timeout, so it is non-blocking: wait for bytes, at most a stall.
                    if not poller.poll(stall_ms):
                        raise TimeoutError(
                            f"no byte received for {self.settings.stall_timeout:g}s (stall_timeout)"
                        ) from None
                    continue
                except OSError as error:
                    if error.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                        raise _SpliceUnsupported(str(error)) from None
                    raise
                if count == 0:
                    return  # the connection ended early: the caller sees the short file and resumes
                response.length -= count  # http.client's count, so a buffered fallback stops at the end
                target.splice_from(pipe_out, count)
        finally:
            os.close(pipe_out)
            os.close(pipe_in)

    def _download_xet(self, item: RemoteFile) -> bool:
        """One file with huggingface_hub's hf_hub_download, which uses Xet where the Hub offers it."""
        settings = self.settings
        blob = self.blob_path(item)
        try:
            if blob.stat().st_size != item.size:
                blob.unlink()  # huggingface_hub would link a wrong-sized blob as is
        except FileNotFoundError:
            pass
        before = self._usable_bytes(item)
        path = Path(
            self.hub.hf_hub_download(
                settings.repo,
                item.name,
                revision=self.commit,
                cache_dir=str(settings.cache_dir),
                token=settings.token,
                endpoint=settings.endpoint,
                etag_timeout=max(10.0, settings.stall_timeout),
            )
        )
        with self._lock:
            self.bytes_fetched += item.size - before
        if not self.hash_file(item, path.resolve()):
            self.remove_bad(item)
            with self._lock:
                self.refetched_corrupt.append(item.name)
            raise _Corrupt(f"{item.name}: the downloaded bytes do not match the Hub's hash; removed them")
        self.record_verified(item, path.resolve())
        return before < item.size

    def _blob_complete(self, item: RemoteFile) -> bool:
        try:
            return self.blob_path(item).stat().st_size == item.size
        except FileNotFoundError:
            return False

    @contextlib.contextmanager
    def _blob_lock(self, item: RemoteFile) -> Iterator[None]:
        """The lock huggingface_hub takes for the same blob (same path, flock), so concurrent downloads of one
        repository, by this module or by huggingface_hub itself, never write one file together."""
        lock_path = self.settings.cache_dir / ".locks" / self.repo_folder.name / f"{item.etag}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with lock_path.open("a") as handle:
            while True:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if self._stop.wait(1.0):
                        raise PrefetchError("stopped") from None
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _link(self, item: RemoteFile) -> None:
        """Point snapshots/<commit>/<name> at the blob with a relative symlink, as huggingface_hub does."""
        link = self.snapshot_path(item)
        link.parent.mkdir(parents=True, exist_ok=True)
        target = os.path.relpath(self.blob_path(item), link.parent)
        try:
            if os.readlink(link) == target:
                return
        except OSError:
            pass
        temporary = link.with_name(f".{link.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        os.symlink(target, temporary)
        os.replace(temporary, link)

    def _run_parallel(self, items: list[RemoteFile], work: Callable[[RemoteFile], None]) -> None:
        if not items:
            return
        errors: list[BaseException] = []
        with concurrent.futures.ThreadPoolExecutor(max_workers=self.settings.max_workers) as pool:
            futures = {pool.submit(work, item): item for item in items}
            for future in concurrent.futures.as_completed(futures):
                error = future.exception()
                if error is not None:
                    # Start no new file, and no new attempt of one; work in flight runs to its end, so a file
                    # that was nearly done is finished and verified rather than left for the re-run.
                    self._stop.set()
                    errors.append(error)
        _raise_first_failure(errors)

    def _with_retries(self, what: str, call: Callable[[], Any], progress: Callable[[], int] | None = None) -> Any:
        """Call until it succeeds, fails for good, or has kept failing for `retry_budget_s` seconds without
        progress. Every request to the Hub goes through here (metadata, the access check, each file, in threads
        and in worker processes), so one policy holds everywhere: a 429 or 503 waits as long as the server
        asks (`server_wait`), anything else retryable backs off exponentially with jitter, and no single wait
        runs past the budget. The budget is time, not a count of attempts, because the Hub's rate limits are
        windows of minutes: a count of quick retries ends before the window does. An attempt that moved bytes
        forward restarts the budget, so a long transfer over a flaky link is not abandoned for drops it
        recovered from."""
        settings = self.settings
        clock = self.clock
        backoffs = attempts = 0
        reached = progress() if progress else 0
        failing_since: float | None = None
        while True:
            started = clock.monotonic()
            attempts += 1
            try:
                return call()
            except PrefetchError:
                raise
            except Exception as error:  # classified below: fatal ones are re-raised with a clear message
                self._raise_if_fatal(error)
                now = clock.monotonic()
                if progress is not None:
                    got = progress()
                    if got > reached:
                        backoffs, reached, failing_since = 0, got, None
                if failing_since is None:
                    failing_since = started
                left = settings.retry_budget_s - (now - failing_since)
                asked = server_wait(error, clock.time())
                if left <= 0:
                    raise self._gave_up(
                        what, error, attempts=attempts, spent=now - failing_since, asked=asked, progress=progress
                    ) from None
                if asked is not None:
                    wait = min(asked.seconds, left)
                    note = asked.describe(wait)
                else:
                    # Jitter spreads the retries of parallel workers; no security depends on it.
                    jitter = random.uniform(0.75, 1.0)  # noqa: S311
                    wait = min(_MAX_BACKOFF_S, settings.retry_backoff * (2**backoffs)) * jitter
                    wait = min(wait, left)
                    backoffs += 1
                    note = f"retry in {wait:.1f}s"
                with self._lock:
                    self.retry_log.append(f"{what}: {_first_line(error)[:200]} -> {note}")
                if asked is not None:
                    self._note_wait(what, note, clock.monotonic() + wait)
                # A run that already failed elsewhere starts no new attempt (see _run_parallel).
                if clock.wait(self._stop, wait):
                    raise PrefetchError("stopped") from None

    def _gave_up(
        self,
        what: str,
        error: BaseException,
        *,
        attempts: int,
        spent: float,
        asked: ServerWait | None,
        progress: Callable[[], int] | None,
    ) -> PrefetchError:
        settings = self.settings
        message = (
            f"{what}: gave up after {attempts} attempts in {spent:.0f} s (retry_budget_s={settings.retry_budget_s:g}); "
            f"last error: {_first_line(error)}"
        )
        if asked is not None and asked.rate_limited:
            message += (
                f". The Hub's rate limit ({asked.reason}) outlasted the retry budget: raise retry_budget_s "
                "(role variable weights_retry_budget_s)"
                + ("" if settings.token else " or set HF_TOKEN (the Hub allows an account more than an address)")
            )
        if progress is None:
            # Metadata and the access check come before any file is written: there is nothing to keep.
            message += ". Nothing was downloaded; run it again once the Hub answers"
        else:
            kept = progress()
            message += (
                f". The {human_bytes(kept)} of it received so far are kept under {self.repo_folder}/blobs and a "
                "re-run resumes them"
                if kept
                else ". None of it was received; a re-run fetches it from the start"
            )
        return PrefetchError(message, retry_log=self.retry_log[-50:])

    def _note_wait(self, what: str, note: str, until: float) -> None:
        """Show a wait the server asked for in the progress file, so a person watching the play sees why the
        bytes stopped. A worker process hands it to the parent, which alone writes that file."""
        if self._in_worker:
            if self._notes is not None:
                with contextlib.suppress(Exception):  # progress is a courtesy; it must never fail the download
                    self._notes.put((what, note, until))
            return
        with self._lock:
            self._waiting[what] = (until, note)
        self.write_progress()

    def _raise_if_fatal(self, error: BaseException) -> None:
        settings = self.settings
        names = _error_names(error)
        where = f"{settings.endpoint_label}"
        status = _status(error)
        tls = _tls_problem(error)
        if tls is not None:
            if settings.ca_bundle is not None:
                trusted = f"the CAs in ca_bundle {settings.ca_bundle}"
            elif os.environ.get("SSL_CERT_FILE"):
                trusted = f"the CAs in SSL_CERT_FILE {os.environ['SSL_CERT_FILE']}"
            else:
                trusted = "the system's default CAs"
            raise PrefetchError(
                f"TLS with the Hub at {where} failed: {tls} (trusting {trusted}). For a mirror with its own "
                "certificate authority give that CA's PEM file as ca_bundle (role variable weights_ca_bundle); "
                "otherwise fix the server's certificate (it must be valid for the host in the URL)",
                commit=self.commit or None,
            )
        if "GatedRepoError" in names:
            raise PrefetchError(
                f"{settings.repo} is gated and the Hub at {where} refused access"
                + (
                    " with the token given: accept the model's terms on the Hub for that account"
                    if settings.token
                    else ": set HF_TOKEN to a token whose account accepted the model's terms"
                ),
                commit=self.commit or None,
            )
        if "RepositoryNotFoundError" in names:
            # The Hub answers the same 401/404 for a repository that does not exist and for one the caller
            # may not see, so with a token the message names both; without one, the token is the likely fix.
            if settings.token:
                raise PrefetchError(
                    f"repository {settings.repo} (revision {settings.revision!r}) was not found at {where}, or the "
                    "token given has no access to it: check the spelling (namespace/name), and that the token's "
                    "account (or its organization) can read the repository"
                )
            raise PrefetchError(
                f"repository {settings.repo} was not found at {where}: check the spelling (namespace/name); "
                "a private repository also needs HF_TOKEN"
            )
        if "RevisionNotFoundError" in names:
            raise PrefetchError(
                f"revision {settings.revision!r} was not found in {settings.repo} at {where}: "
                "give an existing "
                "branch or tag name or a full 40-hex commit (see the repository's 'Files and versions' page)"
            )
        if "RemoteEntryNotFoundError" in names:
            raise PrefetchError(
                f"a file listed by the Hub is missing from {settings.repo}@{self.commit} at {where}: "
                f"{_first_line(error)}"
            )
        if "DisabledRepoError" in names:
            raise PrefetchError(f"repository {settings.repo} is disabled at {where}")
        if status in (401, 403):
            raise PrefetchError(
                f"the Hub at {where} refused the request for {settings.repo} ({status}): "
                + (
                    "the token given is invalid or lacks read access; create a read token and set HF_TOKEN to it"
                    if settings.token
                    else "no token was given; set HF_TOKEN to a token with read access to the repository"
                )
            )
        if status is not None and (status in (408, 429) or status >= 500 or status < 400):
            return  # rate limits, server errors and odd partial answers pass; the next attempt resumes
        if status is not None and 400 <= status < 500:
            raise PrefetchError(f"the Hub at {where} answered {status} for {settings.repo}: {_first_line(error)}")
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            # Waiting does not free space: with a retry budget of minutes, retrying would only delay this.
            raise PrefetchError(
                f"writing to cache_dir {settings.cache_dir} failed: {_first_line(error)}. Free space on that "
                "filesystem (or make it writable, or choose another cache_dir), then re-run: the bytes received "
                "are kept and resumed"
            )
        if isinstance(error, (_Corrupt, OSError, http.client.HTTPException)):
            return  # transient: wrong bytes, consistency errors, dropped connections, full disk is below
        if type(error).__module__.split(".")[0] in (
            "httpx",
            "httpx2",
            "httpcore",
            "requests",
            "urllib3",
            "h11",
        ):
            return
        if "FileMetadataError" in names or "LocalEntryNotFoundError" in names:
            return
        raise PrefetchError(f"unexpected error from huggingface_hub: {type(error).__name__}: {_first_line(error)}")

    # -- progress --------------------------------------------------------------------------------------------
    def _phase(self, phase: str, files: list[RemoteFile] | None = None) -> None:
        with self._lock:
            self._progress_state["phase"] = phase
            if files is not None:
                self._progress_state["files"] = files
                self._progress_state["samples"] = []

    def _current_waits(self) -> list[str]:
        """The waits the Hub asked for that are still running, with the seconds left (call with the lock held)."""
        notes = self._notes
        while notes is not None and not notes.empty():  # what worker processes sent since the last look
            what, note, until = notes.get()
            self._waiting[what] = (until, note)
        now = self.clock.monotonic()
        for what in [what for what, (until, _) in self._waiting.items() if until <= now]:
            del self._waiting[what]
        return [f"{what}: {note}, {until - now:.0f} s left" for what, (until, note) in sorted(self._waiting.items())]

    def progress_snapshot(self) -> dict[str, Any]:
        with self._lock:
            phase = self._progress_state.get("phase", "resolving")
            files: list[RemoteFile] = list(self._progress_state.get("files", []))
            samples: list[tuple[float, int]] = self._progress_state.setdefault("samples", [])
            waiting = self._current_waits()
        total = sum(item.size for item in files)
        done = 0
        files_done = 0
        if phase == "downloading":
            for item in files:
                got = self._usable_bytes(item)
                done += got
                files_done += got == item.size
        elif phase == "verifying":
            verified = set(self.verified_now)
            done = sum(item.size for item in files if item.name in verified)
            files_done = sum(1 for item in files if item.name in verified)
        elif phase == "done":
            done, files_done = total, len(files)
        now = time.monotonic()
        samples.append((now, done))
        while samples and now - samples[0][0] > _RATE_WINDOW_S:
            samples.pop(0)
        rate = 0.0
        if len(samples) >= 2 and samples[-1][0] > samples[0][0]:
            rate = max(0.0, (samples[-1][1] - samples[0][1]) / (samples[-1][0] - samples[0][0]))
        eta = (total - done) / rate if rate > 0 else None
        return {
            "repo": self.settings.repo,
            "revision": self.settings.revision,
            "commit": self.commit or None,
            "phase": phase,
            "files_total": len(files),
            "files_done": files_done,
            "bytes_total": total,
            "bytes_done": done,
            "rate_bytes_per_s": round(rate, 1),
            "eta_s": round(eta, 1) if eta is not None else None,
            "waiting": waiting,
            "updated": time.time(),
        }

    def write_progress(self, extra: dict[str, Any] | None = None) -> None:
        target = self.settings.progress_file
        if target is None or self.settings.check_mode:
            return  # check mode writes nothing, not even progress
        snapshot = self.progress_snapshot()
        if extra:
            snapshot.update(extra)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=target.parent, prefix=".progress-", delete=False) as handle:
                json.dump(snapshot, handle)
            os.chmod(handle.name, 0o644)
            os.replace(handle.name, target)
        except OSError:
            pass  # progress is a courtesy; it must never fail the download

    def progress_loop(self, finished: threading.Event) -> None:
        while not finished.wait(_PROGRESS_INTERVAL_S):
            self.write_progress()


def _raise_first_failure(errors: list[BaseException]) -> None:
    """Raise the first error of parallel downloads that is not another worker's "stopped" (which only follows
    it), as a PrefetchError."""
    real = [error for error in errors if not (isinstance(error, PrefetchError) and str(error) == "stopped")]
    if real:
        first = real[0]
        if isinstance(first, PrefetchError):
            raise first
        raise PrefetchError(_first_line(first))


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _fetch_in_worker(index: int) -> dict[str, Any]:
    """Entry point of a forked download worker (module level, so the pool can name it)."""
    if _FORKED_JOB is None:
        raise RuntimeError("no download job in this worker process")
    return _FORKED_JOB.run_in_worker(index)


def write_ref(repo_folder: Path, revision: str, commit: str) -> bool:
    """Point refs/<revision> at the commit, as huggingface_hub does when it resolves a branch itself."""
    if _COMMIT.match(revision):
        return False
    ref = repo_folder / "refs" / revision
    try:
        if ref.read_text() == commit:
            return False
    except OSError:
        pass
    ref.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=ref.parent, prefix=".tmp-", delete=False) as handle:
        handle.write(commit)
    os.chmod(handle.name, 0o644)
    os.replace(handle.name, ref)
    return True


def run(params: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    """Prefetch as `params` say; returns the module result. Raises PrefetchError with a clear message."""
    started = time.monotonic()
    settings = Settings(params, check_mode)
    hub = _configure_environment(settings)
    job = Prefetch(settings, hub)
    job.write_progress()
    try:
        job.resolve()
        to_fetch, to_hash, missing = job.survey()
        ref_path = job.repo_folder / "refs" / settings.revision
        try:
            ref_moves = not _COMMIT.match(settings.revision) and ref_path.read_text() != job.commit
        except OSError:
            ref_moves = True
        result: dict[str, Any] = {
            "repo": settings.repo,
            "revision": settings.revision,
            "commit": job.commit,
            "snapshot_path": str(job.repo_folder / "snapshots" / job.commit),
            "files_total": len(job.files),
            "bytes_total": sum(item.size for item in job.files),
        }
        if check_mode:
            numbers = {}
            if to_fetch:
                numbers = job.check_filesystem(missing)
            result.update(
                changed=bool(to_fetch) or ref_moves,
                would_fetch_files=[item.name for item in to_fetch],
                would_fetch_bytes=missing,
                would_verify_files=[item.name for item in to_hash],
                **numbers,
            )
            result["msg"] = (
                f"would fetch {len(to_fetch)} files ({human_bytes(missing)}) and verify {len(to_hash)} "
                f"of {settings.repo}@{job.commit[:12]}"
            )
            return result
        if to_fetch or to_hash or ref_moves:
            result.update(job.check_filesystem(missing))
        job.check_access(to_fetch[0] if to_fetch else None)
        # Everything that can refuse has refused: from here on files are written.
        finished = threading.Event()
        reporter = threading.Thread(target=job.progress_loop, args=(finished,), daemon=True)
        reporter.start()
        try:
            bad = job.verify_present(to_hash)
            if bad:
                to_fetch = to_fetch + bad
                job.check_filesystem(sum(item.size for item in to_fetch))
            job.fetch(to_fetch)
            ref_changed = write_ref(job.repo_folder, settings.revision, job.commit)
        finally:
            finished.set()
            reporter.join(timeout=5)
        # The last word on completeness: every file present with its size.
        _, _, still_missing = job.survey()
        incomplete = [item.name for item in job.files if not job.snapshot_path(item).exists()]
        if incomplete or still_missing:
            raise PrefetchError(f"snapshot still incomplete after download: {incomplete[:10]}")
        elapsed = time.monotonic() - started
        job._phase("done", files=job._fetch_set)
        average = job.bytes_fetched / elapsed if elapsed > 0 else 0.0
        job.write_progress({"elapsed_s": round(elapsed, 2), "rate_bytes_per_s": round(average, 1), "eta_s": 0})
        result.update(
            changed=bool(job.fetched or job.linked) or ref_changed,
            files_fetched=len(job.fetched),
            fetched=sorted(job.fetched)[:200],
            files_linked=len(job.linked),
            bytes_fetched=job.bytes_fetched,
            files_verified=len(job.verified_now),
            files_refetched_corrupt=sorted(set(job.refetched_corrupt)),
            download_workers=job.workers,
            hash_aside=job.hash_aside,
            retries_used=len(job.retry_log),
            retry_log=job.retry_log[-50:],
            elapsed_s=round(elapsed, 2),
            rate_bytes_per_s=round(job.bytes_fetched / elapsed, 1) if elapsed > 0 else 0.0,
        )
        result["msg"] = (
            f"{settings.repo}@{job.commit[:12]}: fetched {len(job.fetched)} files "
            f"({human_bytes(job.bytes_fetched)}) in {elapsed:.1f}s, verified {len(job.verified_now)}, "
            f"{len(job.files)} files present"
        )
        return result
    except PrefetchError as error:
        error.details.setdefault("commit", job.commit or None)
        job._phase("failed")
        job.write_progress({"error": str(error)})
        raise
