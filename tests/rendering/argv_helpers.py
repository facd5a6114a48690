"""Compare a rendered argv with a published command, flag by flag, order aside."""

from __future__ import annotations

import shlex
from collections.abc import Sequence


def flag_pairs(words: Sequence[str]) -> tuple[dict[str, str | None], list[str]]:
    """Split a command into {--flag: value or None for a switch} and the positional words."""
    pairs: dict[str, str | None] = {}
    positionals: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        if word.startswith("--"):
            if "=" in word:
                flag, value = word.split("=", 1)
                pairs[flag] = value
            elif index + 1 < len(words) and not words[index + 1].startswith("--"):
                pairs[word] = words[index + 1]
                index += 1
            else:
                pairs[word] = None
        else:
            positionals.append(word)
        index += 1
    return pairs, positionals


def missing_from(argv: Sequence[str], published: str) -> list[str]:
    """What the published command holds that argv lacks (a flag, a different value, or a positional)."""
    expected_pairs, expected_positionals = flag_pairs(shlex.split(published))
    actual_pairs, actual_positionals = flag_pairs(argv)
    missing = [
        f"{flag} {value}" if value is not None else flag
        for flag, value in expected_pairs.items()
        if flag not in actual_pairs or actual_pairs[flag] != value
    ]
    missing += [word for word in expected_positionals if word not in actual_positionals]
    return missing
