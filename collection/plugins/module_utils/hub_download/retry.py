# Copyright: glm-deploy developers
# Apache License 2.0 (see LICENSE)
"""The one retry policy for every request to the Hub: which failures are worth another attempt, how long to wait.

A 429 or 503 waits as long as the server says (`Retry-After`, or the `RateLimit` header's `t` of an exhausted
policy); other 5xx, dropped connections and stalls back off exponentially; a call gives up once it has failed for
`retry_budget_s` seconds without progress; a failure no retry can fix (`raise_if_fatal`) stops at once with a
message that says what to do.
"""

from __future__ import annotations

import contextlib
import email.utils
import errno
import http.client
import os
import random
import re
import ssl
import time
from typing import Any, Callable

from ansible_collections.glm.deploy.plugins.module_utils.hub_download.errors import (
    Corrupt,
    PrefetchError,
    first_line,
    human_bytes,
)
from ansible_collections.glm.deploy.plugins.module_utils.hub_download.settings import Settings

_MAX_BACKOFF_S = 60.0


def error_names(error: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(error).__mro__}


def http_status(error: BaseException) -> int | None:
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
    status = http_status(error)
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
    seconds = max(waits)[0]
    reason = ", ".join(text for _seconds, text in sorted(waits, reverse=True))
    return ServerWait(seconds, reason, rate_limited=status == 429)


def tls_problem(error: BaseException) -> str | None:
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


def raise_if_fatal(error: BaseException, settings: Settings, commit: str) -> None:
    """Raise a PrefetchError that says what to do for a failure no retry can fix (a refused token, a gated or
    missing repository, an untrusted certificate, a full disk); return for one worth another attempt."""
    names = error_names(error)
    where = f"{settings.endpoint_label}"
    status = http_status(error)
    tls = tls_problem(error)
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
            commit=commit or None,
        )
    if "GatedRepoError" in names:
        raise PrefetchError(
            f"{settings.repo} is gated and the Hub at {where} refused access"
            + (
                " with the token given: accept the model's terms on the Hub for that account"
                if settings.token
                else ": set HF_TOKEN to a token whose account accepted the model's terms"
            ),
            commit=commit or None,
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
            f"a file listed by the Hub is missing from {settings.repo}@{commit} at {where}: {first_line(error)}"
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
        raise PrefetchError(f"the Hub at {where} answered {status} for {settings.repo}: {first_line(error)}")
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        # Waiting does not free space: with a retry budget of minutes, retrying would only delay this.
        raise PrefetchError(
            f"writing to cache_dir {settings.cache_dir} failed: {first_line(error)}. Free space on that "
            "filesystem (or make it writable, or choose another cache_dir), then re-run: the bytes received "
            "are kept and resumed"
        )
    if isinstance(error, (Corrupt, OSError, http.client.HTTPException)):
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
    raise PrefetchError(f"unexpected error from huggingface_hub: {type(error).__name__}: {first_line(error)}")


class RetryPolicy:
    """The retry loop of `Prefetch` (mixed into it). It works on the state `Prefetch.__init__` sets: settings,
    clock, commit, repo_folder, _lock, _stop and retry_log, and shows the waits the Hub asks for with
    `_note_wait` (progress.py)."""

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
                raise_if_fatal(error, self.settings, self.commit)
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
                    self.retry_log.append(f"{what}: {first_line(error)[:200]} -> {note}")
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
            f"last error: {first_line(error)}"
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
