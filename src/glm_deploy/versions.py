"""Engine versions and CUDA releases as text: parsing, ordering and matching.

The renderer, the image choice and the catalog loader all compare versions; they share these helpers so that
`0.5.10rc0 < 0.5.10` and `12.9 > 12.8` mean the same thing everywhere.
"""

from __future__ import annotations

import re

from glm_deploy.errors import InputError

# Matched with fullmatch: `$` would also match before a trailing newline.
_VERSION = re.compile(r"v?(\d+(?:\.\d+)*)(?:(a|b|rc|dev)(\d*))?")
_CUDA = re.compile(r"(\d+)(?:\.(\d+))?(?:\.\d+)?")

VersionKey = tuple[tuple[int, ...], tuple[int, int]]
# Sorts before every real version: an image with a floating tag (no version) loses to any pinned one.
_NO_VERSION: VersionKey = ((-1,), (0, 0))


def parse_version(text: str) -> VersionKey:
    """A sortable key for versions like `0.19.1` or `0.5.10rc0` (a pre-release sorts before its release)."""
    match = _VERSION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a version: {text!r} (expected digits and dots, e.g. 0.19.1 or 0.5.10rc0)")
    numbers = tuple(int(part) for part in match.group(1).split("."))
    while len(numbers) > 1 and numbers[-1] == 0:
        numbers = numbers[:-1]
    pre_rank = {"dev": 0, "a": 1, "b": 2, "rc": 3}.get(match.group(2) or "", 4)
    pre_number = int(match.group(3) or 0)
    return numbers, (pre_rank, pre_number)


def is_version(text: str) -> bool:
    # No strip: a version with a stray CR or space is refused, not quietly trimmed into a unit file.
    return _VERSION.fullmatch(text) is not None


def version_order(version: str | None) -> VersionKey:
    """`parse_version`, with None (a floating tag) and unparsable text sorting before every version."""
    if version is None or not is_version(version):
        return _NO_VERSION
    return parse_version(version)


def version_at_least(version: str, minimum: str) -> bool:
    return parse_version(version) >= parse_version(minimum)


def version_matches(pattern: str, version: str) -> bool:
    """True when `version` is `pattern` or in the series it names: `0.20` matches `0.20.0` and `0.20.3`."""
    if version == pattern:
        return True
    if not is_version(pattern) or not is_version(version):
        return False
    pattern_match = _VERSION.fullmatch(pattern.strip())
    if pattern_match is not None and pattern_match.group(2):
        # A pre-release pattern names one exact build.
        return parse_version(pattern) == parse_version(version)
    pattern_parts = tuple(int(p) for p in pattern_match.group(1).split(".")) if pattern_match else ()
    version_match = _VERSION.fullmatch(version.strip())
    version_parts = tuple(int(p) for p in version_match.group(1).split(".")) if version_match else ()
    return version_parts[: len(pattern_parts)] == pattern_parts


def cuda_tuple(version: str) -> tuple[int, int]:
    """ "12.9" -> (12, 9); "12" -> (12, 0); "12.8.1" -> (12, 8)."""
    match = _CUDA.fullmatch(version.strip())
    if not match:
        raise InputError(f"CUDA version {version!r} is not MAJOR.MINOR", hint="for example 12.8 or 13.0")
    return int(match.group(1)), int(match.group(2) or 0)
