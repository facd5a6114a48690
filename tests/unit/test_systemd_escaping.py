"""What glm-deploy writes into unit files reads back, under systemd's own grammar, as exactly the value it meant.

`parse_unit` below follows systemd 252's parser: read_line() ends a line at LF, CR, CR LF and NUL; a trailing
backslash joins lines; ExecStart= resolves specifiers on the raw value, then splits words (extract_first_word with
EXTRACT_UNQUOTE | EXTRACT_CUNESCAPE), then `$$` -> `$` and `$VAR` / `${VAR}` expansion per word; Environment=
splits words the same way, then resolves specifiers per word and takes `$` literally (systemd.exec(5)). A value
that expands a specifier or a variable raises, so "reads back unchanged" cannot pass by accident.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from glm_deploy.schedule import SchedulePolicy, render_units
from glm_deploy.systemd_text import (
    systemd_command_line,
    systemd_environment,
    systemd_escape_word,
    systemd_unsafe_values,
)

WHITESPACE = " \t\n\r"
_SIMPLE_ESCAPES = {
    "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
    "\\": "\\", '"': '"', "'": "'", "s": " ",
}  # fmt: skip


class Expanded(Exception):
    """systemd would have replaced part of the value (a specifier or a variable)."""


def read_lines(text: str) -> list[str]:
    """systemd's read_line(): LF, CR, CR LF and NUL each end a line; a trailing backslash continues it."""
    raw = re.split(r"\r\n|\r|\n|\0", text)
    lines: list[str] = []
    pending = ""
    for line in raw:
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    if pending:
        lines.append(pending)
    return lines


def assignments(text: str) -> list[tuple[str, str]]:
    found = []
    for line in read_lines(text):
        stripped = line.strip(WHITESPACE)
        if not stripped or stripped[0] in "#;" or stripped.startswith("["):
            continue
        key, _, value = stripped.partition("=")
        found.append((key.strip(WHITESPACE), value.strip(WHITESPACE)))
    return found


def _cunescape_one(text: str, index: int) -> tuple[str, int]:
    """The character the escape at text[index] (after the backslash) stands for, and the index after it."""
    kind = text[index]
    if kind in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[kind], index + 1
    width = {"x": 2, "u": 4, "U": 8}.get(kind)
    if width is not None:
        digits = text[index + 1 : index + 1 + width]
        assert len(digits) == width and all(c in "0123456789abcdefABCDEF" for c in digits), text
        code = int(digits, 16)
        if code == 0:
            raise ValueError("systemd refuses an escaped NUL")
        return chr(code), index + 1 + width
    if kind in "01234567":
        digits = text[index : index + 3]
        return chr(int(digits, 8)), index + 3
    raise ValueError(f"unknown escape \\{kind} in {text!r}")


def split_words(value: str) -> list[str]:
    """extract_first_word(EXTRACT_UNQUOTE | EXTRACT_CUNESCAPE), repeated."""
    words: list[str] = []
    index = 0
    while True:
        while index < len(value) and value[index] in WHITESPACE:
            index += 1
        if index >= len(value):
            return words
        word: list[str] = []
        quote: str | None = None
        while index < len(value):
            character = value[index]
            if quote is None and character in WHITESPACE:
                break
            if character == "\\":
                unescaped, index = _cunescape_one(value, index + 1)
                word.append(unescaped)
                continue
            if quote is None and character in "\"'":
                quote = character
            elif quote is not None and character == quote:
                quote = None
            else:
                word.append(character)
            index += 1
        assert quote is None, f"unterminated quote in {value!r}"
        words.append("".join(word))


def resolve_specifiers(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        if match.group(1) == "%":
            return "%"
        raise Expanded(f"specifier %{match.group(1)} in {text!r}")

    return re.sub(r"%(.)", one, text, flags=re.DOTALL)


def expand_exec_variables(word: str) -> str:
    if re.fullmatch(r"\$[A-Za-z_][A-Za-z0-9_]*", word):
        raise Expanded(f"variable word {word!r}")

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        raise Expanded(f"variable {match.group(0)!r} in {word!r}")

    return re.sub(r"\$\$|\$\{[^}]*\}", one, word)


def parse_exec(value: str) -> list[str]:
    return [expand_exec_variables(word) for word in split_words(resolve_specifiers(value))]


def parse_environment(value: str) -> dict[str, str]:
    parsed = {}
    for word in split_words(value):
        name, _, assigned = resolve_specifiers(word).partition("=")
        parsed[name] = assigned
    return parsed


# Every character class that has broken unit files: line ends, other controls, Unicode line separators, DEL,
# quotes, the escape character, specifiers, variables, separators, and plain non-ASCII text.
NASTY = [
    "plain",
    "",
    "two words",
    "cr\rExecStartPre=/bin/evil",
    "lf\nExecStartPre=/bin/evil",
    "crlf\r\nExecStart=/bin/evil",
    "vt\vff\fesc\x1bdel\x7fbell\a",
    "nel\u0085ls\u2028ps\u2029",
    "c1\u0080\u009f",
    "tab\there",
    'double"quote',
    "single'quote",
    "back\\slash\\",
    "\\x41 is not A",
    "100% sure %n %%",
    "$HOME ${HOME} $$ $",
    ";",
    "a;b",
    "trailing backslash \\",
    "ünïcödé ✓",
    " leading and trailing ",
]


@pytest.mark.parametrize("value", NASTY)
def test_an_exec_word_reads_back_unchanged_on_one_line(value: str) -> None:
    line = f"ExecStart={systemd_command_line(['/usr/bin/engine', value, '--next'])}"
    parsed = assignments(f"[Service]\n{line}\n")
    assert len(parsed) == 1, f"the value added lines: {parsed}"
    assert parse_exec(parsed[0][1]) == ["/usr/bin/engine", value, "--next"]


@pytest.mark.parametrize("value", NASTY)
def test_an_environment_value_reads_back_unchanged_on_one_line(value: str) -> None:
    line = f"Environment={systemd_environment('SOME_NAME', value)}"
    parsed = assignments(f"[Service]\n{line}\n")
    assert len(parsed) == 1, f"the value added lines: {parsed}"
    assert parse_environment(parsed[0][1]) == {"SOME_NAME": value}


def test_environment_keeps_a_dollar_as_it_is() -> None:
    # systemd.exec(5): in Environment= "$ has no special meaning"; doubling it would change the value.
    assert systemd_environment("PATH", "/opt/$venv/bin") == "PATH=/opt/$venv/bin"
    assert systemd_environment("RATE", "100%") == "RATE=100%%"


def test_exec_words_make_specifiers_and_variables_literal() -> None:
    assert systemd_escape_word("%h") == "%%h"
    assert systemd_escape_word("$PATH") == "$$PATH"


def test_nul_and_bad_names_are_refused() -> None:
    with pytest.raises(ValueError, match="NUL"):
        systemd_escape_word("a\0b")
    with pytest.raises(ValueError, match="not an environment variable name"):
        systemd_environment("BAD NAME\nExecStart=/bin/evil", "x")


@pytest.mark.parametrize("program", ["-/usr/bin/evil", "@/usr/bin/x", "", "+/bin/x", "!/bin/x", ":/bin/x", "|/bin/x"])
def test_a_program_that_systemd_would_read_as_prefixed_is_refused(program: str) -> None:
    with pytest.raises(ValueError, match="program"):
        systemd_command_line([program, "serve"])


def test_unsafe_values_names_where_the_control_character_is() -> None:
    found = systemd_unsafe_values({"server_user": "glm", "server_hardening": {"UMask": "0027\rExecStartPre=/x"}})
    assert found == ["server_hardening.UMask: U+000D in '0027\\rExecStartPre=/x'"]
    assert systemd_unsafe_values({"a": ["ok", "ok too"], "b": "fine"}) == []


def test_the_schedule_units_read_back_exactly(tmp_path: Path) -> None:
    state = tmp_path / "state $HOME 100%"
    policy = SchedulePolicy(
        name="nightly",
        inventory=tmp_path / "inv %i",
        on_calendar="Mon..Fri 03:00",
        state_dir=state,
        follow={"revision": "refs/pr/1"},
    )
    units = render_units(policy, executable="/opt/glm deploy/bin/glm-deploy")
    service = dict(assignments(units["glm-deploy-nightly.service"]))
    assert parse_exec(service["ExecStart"]) == [
        "/opt/glm deploy/bin/glm-deploy",
        *("redeploy", "--if-changed", "-i", str(tmp_path / "inv %i"), "--revision", "refs/pr/1"),
    ]
    assert parse_environment(service["Environment"]) == {"GLM_DEPLOY_STATE": str(state)}
    assert resolve_specifiers(service["Description"]).endswith(f"({tmp_path / 'inv %i'})")
    timer = dict(assignments(units["glm-deploy-nightly.timer"]))
    assert timer["OnCalendar"] == "Mon..Fri 03:00"


ANALYZE = shutil.which("systemd-analyze")


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
@pytest.mark.playbook
def test_systemd_itself_runs_no_injected_command(tmp_path: Path) -> None:
    """Cross-check with systemd's own parser: a CR written raw adds an ExecStartPre= (the defect); written by the
    filter, it stays inside the word."""
    injected = "x\rExecStartPre=/nonexistent/injected-by-a-value"

    def verify(exec_line: str) -> str:
        unit = tmp_path / "probe.service"
        unit.write_text(f"[Unit]\nDescription=probe\n[Service]\nType=oneshot\n{exec_line}\n", encoding="utf-8")
        completed = subprocess.run(
            [str(ANALYZE), "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60, check=False
        )
        return completed.stdout + completed.stderr

    assert "injected-by-a-value" in verify(f"ExecStart=/bin/true {injected}")
    assert "injected-by-a-value" not in verify(f"ExecStart={systemd_command_line(['/bin/true', injected])}")
