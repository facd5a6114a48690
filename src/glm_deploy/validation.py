"""Input checks shared by every entry point: the values that end up in a systemd unit, a timer, an env file or a
command line are checked here, once, before anything is written.

Why these rules:
- systemd ends a unit-file line at LF, CR and NUL, so one control character in a value can add `ExecStartPre=`
  lines to a unit. Quoting is the second wall; the first is refusing control characters where a value comes in.
- Patterns are matched with `re.fullmatch`: `$` also matches before a trailing newline, so `^name$` accepts
  "name\\n".
- An error echoes the user's value through `clip`, so a 10,000-character value still gives a one-line error.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Iterable

from glm_deploy.errors import InputError

CLIP_CHARS = 60
# Unicode categories refused in any value that reaches a unit, timer, env file or command line: control
# characters (C0, DEL, C1 including U+0085), line and paragraph separators (U+2028, U+2029) and lone surrogates
# (not valid UTF-8, which systemd refuses). Other text, such as non-ASCII letters, stays allowed.
_REFUSED_CATEGORIES = frozenset({"Cc", "Zl", "Zp", "Cs"})

# A git commit as the Hub names it.
COMMIT = re.compile(r"[0-9a-f]{40}")
# The longest revision, host name or path anything here accepts: far more than any real one, small enough that
# no value can flood a unit file or an error message.
MAX_REVISION_CHARS = 255
MAX_HOSTNAME_CHARS = 253
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# A container image reference as docker and podman parse it (distribution/reference's grammar): an optional
# registry host[:port], lower-case path components, an optional tag and an optional digest.
_IMAGE_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_DOMAIN_PART = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_IMAGE_REGISTRY = rf"(?:{_IMAGE_DOMAIN_PART}(?:\.{_IMAGE_DOMAIN_PART})*(?::[0-9]+)?/)"
# At most 400 characters in all: distribution caps a name at 255, a tag at 128.
IMAGE_REFERENCE = re.compile(
    rf"(?=.{{1,400}}\Z){_IMAGE_REGISTRY}?{_IMAGE_COMPONENT}(?:/{_IMAGE_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?"
)
# git check-ref-format: characters a ref name never holds (controls are checked separately).
_REF_FORBIDDEN = frozenset(" ~^:?*[\\")

# Flags whose value is a secret, in the spelling each engine documents: vLLM and SGLang take --api-key, SGLang
# --admin-api-key, vLLM --hf-token. Both engines' parsers read `_` as `-` in flag names, so the check compares
# normalised names.
SECRET_FLAGS = ("--api-key", "--admin-api-key", "--hf-token")


def clip(value: object, limit: int = CLIP_CHARS, *, quote: bool = True) -> str:
    """The value as an error message shows it: quoted with escapes visible (bare when `quote` is false and the
    text is printable, as for flag names), cut to `limit` characters with the full length named when longer."""
    text = value if isinstance(value, str) else repr(value)
    shown = text[:limit]
    if isinstance(value, str) and (quote or not shown.isprintable()):
        shown = repr(shown)
    return shown if len(text) <= limit else f"{shown}…({len(text)} chars)"


def control_character(text: str) -> str | None:
    """The first refused character of `text` as U+XXXX, or None when there is none."""
    for character in text:
        if unicodedata.category(character) in _REFUSED_CATEGORIES:
            return f"U+{ord(character):04X}"
    return None


def check_one_line(field: str, value: str) -> str:
    """Refuse a value that holds a control character (CR, LF, NUL, ...): it would end a unit-file line."""
    found = control_character(value)
    if found is not None:
        raise InputError(
            f"{field} {clip(value)} holds the control character {found}",
            hint="values written into systemd units, env files and command lines must be one line of text",
        )
    return value


def check_words(field: str, values: Iterable[str]) -> None:
    for value in values:
        check_one_line(field, value)


def check_pattern(field: str, value: str, pattern: re.Pattern[str], expected: str, hint: str | None = None) -> str:
    """Refuse a value that the whole of `pattern` does not match: "FIELD 'value' is not EXPECTED"."""
    if not pattern.fullmatch(value):
        raise InputError(f"{field} {clip(value)} is not {expected}", hint=hint)
    return value


def revision_problem(revision: str) -> str | None:
    """Why `revision` is not a Hub revision (a 40-hex commit, or a branch/tag name under git check-ref-format's
    rules, such as `main`, `v1.0` or the Hub's `refs/pr/1`), or None when it is one."""
    if not revision:
        return "it is empty"
    if len(revision) > MAX_REVISION_CHARS:
        return f"it is longer than {MAX_REVISION_CHARS} characters"
    if control_character(revision) is not None or any(character.isspace() for character in revision):
        return "it holds a control character or whitespace"
    if revision.startswith("-"):
        return "it starts with '-' (it would read as an option)"
    if forbidden := sorted(set(revision) & _REF_FORBIDDEN):
        return f"git refs cannot hold {' '.join(forbidden)}"
    if ".." in revision or "@{" in revision or revision == "@":
        return "git refs cannot hold '..' or '@{' or be '@'"
    if revision.startswith("/") or revision.endswith("/") or "//" in revision:
        return "git refs cannot start or end with '/' or hold '//'"
    if revision.endswith("."):
        return "git refs cannot end with '.'"
    for component in revision.split("/"):
        if component.startswith(".") or component.endswith(".lock"):
            return "no part of a git ref may start with '.' or end with '.lock'"
    return None


def check_revision(field: str, revision: str) -> str:
    problem = revision_problem(revision)
    if problem is not None:
        raise InputError(
            f"{field} {clip(revision)} is not a branch, tag or commit: {problem}",
            hint="use a 40-hex commit, or a branch or tag name such as main, v1.0 or refs/pr/1",
        )
    return revision


def is_host(value: str) -> bool:
    """An IPv4 or IPv6 address, or a DNS host name (RFC 1123 labels)."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        pass
    else:
        return True
    name = value[:-1] if value.endswith(".") else value
    labels = name.split(".")
    # An all-digit last label is a mistyped IPv4 address (10.0.0.256), never a host name (RFC 3696 section 2).
    return (
        0 < len(name) <= MAX_HOSTNAME_CHARS
        and all(_HOST_LABEL.fullmatch(label) for label in labels)
        and not labels[-1].isdigit()
    )


def check_host(field: str, value: str) -> str:
    if not is_host(value):
        raise InputError(
            f"{field} {clip(value)} is not an IP address or host name",
            hint="e.g. 0.0.0.0, ::, 10.0.0.2 or node-1.example.internal",
        )
    return value


def normalised_flag(argument: str) -> str:
    """`--Api_Key=x` -> `--api-key`: the flag name as the engines' parsers read it."""
    return argument.split("=", 1)[0].replace("_", "-").lower()


def secret_flag(argument: str) -> str | None:
    """The secret flag `argument` sets (also through an unambiguous abbreviation, which argparse accepts), or
    None."""
    if not argument.startswith("--"):
        return None
    name = normalised_flag(argument)
    for flag in SECRET_FLAGS:
        if name == flag or (len(name) > len("--") + 2 and flag.startswith(name)):
            return flag
    return None
