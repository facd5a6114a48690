# Copyright: glm-deploy developers
# Apache License 2.0 (see LICENSE)
"""The download's exceptions and the wording its messages share.

`PrefetchError` is the one a caller sees: a refusal or failure with a message a person can act on. The others are
raised inside a transfer and classified by the retry policy (`retry.py`): wrong bytes, a connection that ended
early, an HTTP answer that is not the file, a filesystem that refuses splice(2).
"""

from __future__ import annotations

import types
from typing import Any


class PrefetchError(Exception):
    """A refusal or failure with a message a person can act on; `details` go into the module result."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details


class Corrupt(Exception):
    """Bytes that do not match the Hub's hash: discarded, and fetched again on the next attempt."""


class ShortTransfer(OSError):
    """The connection ended before the file did (resumed on the next attempt)."""


class HTTPStatusError(Exception):
    """A non-success answer to a file download, shaped like huggingface_hub's errors for classification."""

    def __init__(self, status: int, headers: Any, url: str, problem: str = "") -> None:
        code = headers.get("X-Error-Code") if headers is not None else None
        message = headers.get("X-Error-Message") if headers is not None else None
        details = ", ".join(part for part in (problem, code, message) if part)
        super().__init__(f"HTTP {status} for {url}" + (f" ({details})" if details else ""))
        self.response = types.SimpleNamespace(status_code=status, headers=headers or {})


class SpliceUnsupported(Exception):
    """The kernel or filesystem refused splice(2) here; the transfer goes on through a buffer."""


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return " ".join(line.strip() for line in text[:3] if line.strip()) or type(error).__name__


def human_bytes(count: float) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{value:.2f} TiB"
