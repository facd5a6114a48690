"""Progress of long transfers (the weights download): one line format, a parser for it, and a renderer.

The weights role's wait step (`glm.deploy.hf_prefetch_wait`) prints `format_line(...)` on every poll, so
the Ansible output shows bytes done, rate and ETA. The CLI sees the same lines in ansible-runner's event
stream, turns them back into `Progress` with `parse_line`, and draws them with `ProgressRenderer`: a bar on a
terminal, plain lines (at most one every few seconds) otherwise.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
_UNIT_FACTOR = {unit: 1024**index for index, unit in enumerate(_UNITS)}


@dataclasses.dataclass(frozen=True)
class Progress:
    bytes_done: int
    bytes_total: int
    rate_bytes_per_s: float = 0.0
    eta_s: float | None = None
    files_done: int = 0
    files_total: int = 0
    phase: str = "downloading"

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Progress:
        """Read the JSON progress file the hf_prefetch module writes."""
        eta = data.get("eta_s")
        return cls(
            bytes_done=int(data.get("bytes_done") or 0),
            bytes_total=int(data.get("bytes_total") or 0),
            rate_bytes_per_s=float(data.get("rate_bytes_per_s") or 0.0),
            eta_s=float(eta) if eta is not None else None,
            files_done=int(data.get("files_done") or 0),
            files_total=int(data.get("files_total") or 0),
            phase=str(data.get("phase") or "downloading"),
        )

    @property
    def fraction(self) -> float:
        if self.bytes_total <= 0:
            return 1.0 if self.phase == "done" else 0.0
        return min(1.0, self.bytes_done / self.bytes_total)


def human_bytes(count: float) -> str:
    value = float(count)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def format_line(label: str, progress: Progress) -> str:
    """`<label>: 1.20 GiB / 4.00 GiB (30.0%), 95.37 MiB/s, ETA 30s, 2/8 files [downloading]`."""
    return (
        f"{label}: {human_bytes(progress.bytes_done)} / {human_bytes(progress.bytes_total)} "
        f"({progress.fraction * 100:.1f}%), {human_bytes(progress.rate_bytes_per_s)}/s, "
        f"ETA {human_duration(progress.eta_s)}, {progress.files_done}/{progress.files_total} files "
        f"[{progress.phase}]"
    )


_SIZE = r"([0-9.]+) (B|KiB|MiB|GiB|TiB|PiB)"
_LINE = re.compile(
    rf"^(?P<label>.+?): {_SIZE} / {_SIZE} \([0-9.]+%\), {_SIZE}/s, ETA (?P<eta>\S+), "
    r"(?P<files_done>\d+)/(?P<files_total>\d+) files \[(?P<phase>[a-z]+)\]$"
)
_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def _parse_duration(text: str) -> float | None:
    match = _DURATION.fullmatch(text)
    if text == "unknown" or not match or not any(match.groups()):
        return None
    hours, minutes, seconds = (int(group or 0) for group in match.groups())
    return float(hours * 3600 + minutes * 60 + seconds)


def parse_line(line: str) -> tuple[str, Progress] | None:
    """The label and progress of a line `format_line` made, or None for any other line."""
    match = _LINE.match(line.strip())
    if match is None:
        return None
    groups = match.groups()
    done = float(groups[1]) * _UNIT_FACTOR[groups[2]]
    total = float(groups[3]) * _UNIT_FACTOR[groups[4]]
    rate = float(groups[5]) * _UNIT_FACTOR[groups[6]]
    progress = Progress(
        bytes_done=int(done),
        bytes_total=int(total),
        rate_bytes_per_s=rate,
        eta_s=_parse_duration(match["eta"]),
        files_done=int(match["files_done"]),
        files_total=int(match["files_total"]),
        phase=match["phase"],
    )
    return match["label"], progress


class ProgressRenderer:
    """Draws progress: a redrawn bar on a terminal, plain lines at most every `plain_interval_s` otherwise."""

    def __init__(self, stream: TextIO | None = None, *, width: int = 30, plain_interval_s: float = 10.0) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.plain_interval_s = plain_interval_s
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_plain: dict[str, float] = {}
        self._drawn = False

    def update(self, label: str, progress: Progress) -> None:
        if self._tty:
            filled = round(progress.fraction * self.width)
            bar = "#" * filled + "-" * (self.width - filled)
            text = (
                f"\r{label} [{bar}] {progress.fraction * 100:5.1f}% "
                f"{human_bytes(progress.bytes_done)}/{human_bytes(progress.bytes_total)} "
                f"{human_bytes(progress.rate_bytes_per_s)}/s ETA {human_duration(progress.eta_s)}"
            )
            self.stream.write(text + "\x1b[K")
            self.stream.flush()
            self._drawn = True
            return
        now = time.monotonic()
        last = self._last_plain.get(label)
        final = progress.phase in ("done", "failed") or progress.fraction >= 1.0
        if last is not None and now - last < self.plain_interval_s and not final:
            return
        self._last_plain[label] = now
        self.stream.write(format_line(label, progress) + "\n")
        self.stream.flush()

    def feed(self, line: str) -> bool:
        """Draw `line` if it is a progress line (an ansible-runner event's stdout); say whether it was."""
        parsed = parse_line(line)
        if parsed is None:
            return False
        self.update(*parsed)
        return True

    def close(self) -> None:
        if self._tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
