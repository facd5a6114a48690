"""Helpers for tests that race two processes against a lock: start a Python snippet with its stderr in a file (to
read while it runs), and wait for a condition with a deadline."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest


def start_snippet(code: str, work: Path, name: str, *args: str) -> tuple[subprocess.Popen[str], Path]:
    """`python -c CODE WORK NAME ARGS...` with XDG_CACHE_HOME in WORK; returns the process and its stderr file."""
    errors = work / f"{name}.stderr"
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(work), name, *args],
        stdout=subprocess.PIPE,
        stderr=errors.open("w"),
        text=True,
        env={**os.environ, "XDG_CACHE_HOME": str(work / "cache")},
    )
    return process, errors


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")
