"""Filters that write values into systemd unit files safely.

systemd parses ExecStart= and Environment= itself (no shell): words split on whitespace, double quotes group a
word, backslash escapes, `%` starts a specifier and `$` starts a variable expansion. An argv taken verbatim from the
plan must reach the engine unchanged, so every word is escaped for exactly that grammar.
"""

from __future__ import annotations

_NEEDS_QUOTES = set(" \t\n\"'\\;")


def systemd_escape_word(word: object) -> str:
    """One word for systemd's parser: specifiers and variables made literal, quoted when it holds separators."""
    text = str(word)
    escaped = text.replace("%", "%%").replace("$", "$$")
    if escaped and not (set(escaped) & _NEEDS_QUOTES):
        return escaped
    inner = escaped.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{inner}"'


def systemd_command_line(argv: object) -> str:
    """A whole argv as one ExecStart= value."""
    if not isinstance(argv, (list, tuple)) or not argv:
        raise ValueError(f"systemd_command_line needs a non-empty list of words, got {argv!r}")
    return " ".join(systemd_escape_word(word) for word in argv)


def systemd_environment(name: object, value: object) -> str:
    """One Environment= assignment NAME=value, quoted as one word."""
    return systemd_escape_word(f"{name}={value}")


class FilterModule:
    """glm.deploy filters for unit files."""

    def filters(self) -> dict[str, object]:
        return {
            "systemd_escape_word": systemd_escape_word,
            "systemd_command_line": systemd_command_line,
            "systemd_environment": systemd_environment,
        }
