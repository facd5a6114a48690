"""Values written into systemd unit files exactly: the unit templates' filters (glm.deploy.systemd_*) and the
schedule's timer units use these.

systemd parses ExecStart= and Environment= itself (no shell), with the rules of systemd.syntax(7) "Quoting":
words split on whitespace, a double-quoted word may hold anything, and backslash starts a C-style escape. Two more
expansions differ by setting, so each context is escaped for exactly its own grammar:

- ExecStart= (systemd.service(5) "Command lines"): `%` starts a specifier (`%%` is a literal one) and `$` a
  variable (`$$` is a literal one).
- Environment= (systemd.exec(5)): `%` starts a specifier, but "variable expansion is not performed inside the
  strings, and $ has no special meaning": doubling `$` there would change the value.

systemd also ends a unit-file line at LF, CR and NUL, so a control character written as itself would let a value
add directives of its own. The inputs are refused at their boundary (glm_deploy.validation); here, as a second
wall, every control character is written as a C escape inside quotes, and NUL, which no argv or environment can
hold, is refused.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping

# Characters that make a word need quotes: systemd's separators (" \t\n\r"), quotes, the escape character and ';'
# (a lone ';' separates two command lines).
_NEEDS_QUOTES = frozenset(" \t\n\r\"'\\;")
# Escapes systemd.syntax(7) lists; other control characters are written as \xNN (ASCII) or \uNNNN.
_NAMED_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}
_UNSAFE_CATEGORIES = frozenset({"Cc", "Zl", "Zp", "Cs"})
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# ExecStart= reads these at the start of its first word as flags (ignore failure, argv[0], privileges, ...).
_EXEC_PREFIXES = "-@:+!|"


def _clip(value: object) -> str:
    """A value as an error shows it: its repr, cut to 60 characters with the full length named when longer."""
    shown = repr(value)
    return shown if len(shown) <= 60 else f"{shown[:60]}…({len(shown)} chars)"


def _unsafe(character: str) -> bool:
    return unicodedata.category(character) in _UNSAFE_CATEGORIES


def _quote(text: str) -> str:
    """`text` as one systemd word: bare when nothing in it is special, else double-quoted with C escapes."""
    if "\0" in text:
        raise ValueError(f"a systemd unit cannot hold a NUL character (in {_clip(text)})")
    if text and not any(character in _NEEDS_QUOTES or _unsafe(character) for character in text):
        return text
    inner: list[str] = []
    for character in text:
        if character in ('"', "\\"):
            inner.append("\\" + character)
        elif character in _NAMED_ESCAPES:
            inner.append(_NAMED_ESCAPES[character])
        elif _unsafe(character):
            code = ord(character)
            inner.append(f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}")
        else:
            inner.append(character)
    return '"' + "".join(inner) + '"'


def systemd_escape_word(word: object) -> str:
    """One ExecStart= word: specifiers (`%`) and variables (`$`) made literal, quoted when needed."""
    return _quote(str(word).replace("%", "%%").replace("$", "$$"))


def systemd_command_line(argv: object) -> str:
    """A whole argv as one ExecStart= value."""
    if not isinstance(argv, (list, tuple)) or not argv:
        raise ValueError(f"systemd_command_line needs a non-empty list of words, got {_clip(argv)}")
    program = str(argv[0])
    if not program or program[0] in _EXEC_PREFIXES:
        # systemd reads these as flags even inside quotes; a template writes a wanted prefix before the filter.
        raise ValueError(
            f"systemd_command_line: the program {_clip(program)} is empty or starts with one of {_EXEC_PREFIXES}"
        )
    return " ".join(systemd_escape_word(word) for word in argv)


def systemd_environment(name: object, value: object) -> str:
    """One Environment= assignment NAME=value as one word: `%` made literal, `$` left as it is (systemd does not
    expand variables in Environment=)."""
    if not _ENV_NAME.fullmatch(str(name)):
        raise ValueError(f"systemd_environment: {_clip(name)} is not an environment variable name")
    return _quote(f"{name}={value}".replace("%", "%%"))


def systemd_unsafe_values(values: object, where: str = "") -> list[str]:
    """Where a control character hides in `values` (a string, or lists and mappings of them, keys included):
    one "PATH: U+XXXX" entry per offending value; empty when every value can be written into a unit as is."""
    found: list[str] = []
    if isinstance(values, Mapping):
        for key, item in values.items():
            found += systemd_unsafe_values(key, f"{where}(key)")
            found += systemd_unsafe_values(item, f"{where}.{key}" if where else str(key))
    elif isinstance(values, (list, tuple)):
        for index, item in enumerate(values):
            found += systemd_unsafe_values(item, f"{where}[{index}]")
    elif isinstance(values, str):
        bad = next((character for character in values if _unsafe(character)), None)
        if bad is not None:
            found.append(f"{where or 'value'}: U+{ord(bad):04X} in {values[:40]!r}")
    return found


def specifiers_literal(text: str) -> str:
    """A value for a setting that expands `%` specifiers but takes no quotes (WorkingDirectory=, EnvironmentFile=,
    Description=): `%` doubled, nothing else changed. The caller has refused control characters."""
    if any(_unsafe(character) for character in text):
        raise ValueError(f"a systemd setting cannot hold a control character (in {_clip(text)})")
    return text.replace("%", "%%")
