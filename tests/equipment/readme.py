"""The README's fenced code blocks, and which test runs or checks each one.

`readme_blocks()` reads every fenced block of README.md (indented ones in lists included). `COVERAGE` names, for each
block (by its language and first line), the tests that run or check it; tests/unit/test_readme_blocks.py fails when
a block is added, changed at its first line or removed without this table following, and when a test named here
does not exist. A test that covers a block finds it with `block(language, first_line)`.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"

# An opening fence (any indentation, a language word), then everything up to the closing fence at that indentation.
_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<language>[\w+-]*)[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.MULTILINE | re.DOTALL
)


@dataclass(frozen=True)
class Block:
    language: str
    text: str
    line: int  # where the opening fence is, 1-based

    @property
    def first_line(self) -> str:
        return next((line.strip() for line in self.text.splitlines() if line.strip()), "")

    @property
    def key(self) -> tuple[str, str]:
        return self.language, self.first_line


def readme_blocks(text: str | None = None) -> list[Block]:
    """Every fenced block of the README, in order, with its indentation removed."""
    source = README.read_text(encoding="utf-8") if text is None else text
    return [
        Block(
            language=match["language"],
            text=textwrap.dedent(match["body"]),
            line=source.count("\n", 0, match.start()) + 1,
        )
        for match in _FENCE.finditer(source)
    ]


def block(language: str, first_line: str) -> Block:
    """The README's block with this language and first line (exactly one)."""
    found = [candidate for candidate in readme_blocks() if candidate.key == (language, first_line)]
    assert len(found) == 1, f"README.md has {len(found)} {language} block(s) starting {first_line!r}"
    return found[0]


# (language, first line) -> the tests that run or check the block ("path::function").
COVERAGE: dict[tuple[str, str], tuple[str, ...]] = {
    (
        "sh",
        "scripts/sandbox.sh   # deploys real vLLM (CPU) serving a tiny GLM-family model on a local systemd host, "
        "verifies and benchmarks it",
    ): (
        "tests/unit/test_readme_blocks.py::test_the_two_commands_are_the_scripts_and_say_what_they_do",
        "tests/api/test_readme_examples.py::test_the_two_commands_parse",
        "tests/api/test_sandbox_script.py::test_the_deploy_and_the_benchmark_go_through_glm_deploy",
    ),
    ("sh", ".venv/bin/glm-deploy plan --model glm-5.1-fp8 --engine sglang --hardware b200"): (
        "tests/api/test_readme_examples.py::test_the_plan_command_prints_the_command_per_node",
    ),
    ("python", "from pathlib import Path"): (
        "tests/api/test_readme_examples.py::test_the_playbook_runner_example_runs_as_pasted",
    ),
    ("python", "from glm_deploy.deployment import Deployment"): (
        "tests/api/test_readme_examples.py::test_the_deployment_example_runs_as_pasted",
    ),
    ("text", "release 3862151e13bd failed on glm-deploy-e2e-1 at Ask the plan's question set and score the answers"): (
        "tests/unit/test_readme_blocks.py::test_the_refused_release_message_is_what_the_gate_and_redeploy_print",
    ),
}


def uncovered(blocks: list[Block]) -> list[Block]:
    """The blocks no entry of COVERAGE names."""
    return [candidate for candidate in blocks if candidate.key not in COVERAGE]
