"""Every fenced code block in README.md is run or checked by a test (issue 14, item 8).

tests/equipment/readme.py names the tests that cover each block; here: that table covers exactly the README's
blocks (a new block fails until a test covers it), the tests it names exist, and the blocks that are checked
rather than run agree with the code: the scripts of the first block, and the refused release's message, which is
rendered from the quality gate's decision and the redeploy playbook's own templates.
"""

from __future__ import annotations

import os
from typing import Any

import jinja2
import yaml
from tests.equipment.load import load_file
from tests.equipment.readme import COVERAGE, README, REPO, block, readme_blocks, uncovered


def test_every_readme_block_is_covered_by_a_test() -> None:
    blocks = readme_blocks()

    assert len(blocks) >= 5, "the README's blocks were found"
    missing = ", ".join(f"line {item.line} {item.language} {item.first_line!r}" for item in uncovered(blocks))
    assert not missing, f"blocks no test covers (add one and name it in tests/equipment/readme.py): {missing}"
    stale = set(COVERAGE) - {item.key for item in blocks}
    assert not stale, f"tests/equipment/readme.py covers blocks the README no longer has: {sorted(stale)}"
    assert len({item.key for item in blocks}) == len(blocks), "two blocks start alike: make their first lines differ"


def test_a_block_added_to_the_readme_is_uncovered() -> None:
    readme = README.read_text(encoding="utf-8")
    text = readme + "\n1. A new step:\n\n   ```sh\n   glm-deploy something-new\n   ```\n"

    added = [item for item in uncovered(readme_blocks(text)) if item not in uncovered(readme_blocks(readme))]

    assert [(item.language, item.first_line) for item in added] == [("sh", "glm-deploy something-new")]


def test_every_covering_test_exists() -> None:
    for tests in COVERAGE.values():
        for node in tests:
            path, _, function = node.partition("::")
            source = (REPO / path).read_text(encoding="utf-8")
            assert f"def {function}(" in source, f"{node} does not exist"


def test_the_two_commands_are_the_scripts_and_say_what_they_do() -> None:
    example = block(
        "sh",
        "scripts/sandbox.sh   # deploys real vLLM (CPU) serving a tiny GLM-family model on a local systemd host, "
        "verifies and benchmarks it",
    )
    scripts = [line.split("#")[0].strip() for line in example.text.splitlines()]

    assert scripts == ["scripts/sandbox.sh", "scripts/test.sh"]
    for script in scripts:
        assert os.access(REPO / script, os.X_OK), f"{script} is not executable"
    sandbox = (REPO / "scripts" / "sandbox.sh").read_text(encoding="utf-8")
    assert 'glm-deploy deploy -i "$inventory"' in sandbox and "glm-deploy benchmark" in sandbox


def find_task(tasks: Any, name: str) -> dict[str, Any]:
    """The task called `name` anywhere in a play's tasks (blocks, rescues and always included)."""
    if isinstance(tasks, list):
        for item in tasks:
            try:
                return find_task(item, name)
            except LookupError:
                continue
    elif isinstance(tasks, dict):
        if tasks.get("name") == name:
            return tasks
        for key in ("tasks", "block", "rescue", "always"):
            if key in tasks:
                try:
                    return find_task(tasks[key], name)
                except LookupError:
                    continue
    raise LookupError(name)


def words(text: str) -> str:
    return " ".join(text.split())


def test_the_refused_release_message_is_what_the_gate_and_redeploy_print() -> None:
    example = block(
        "text", "release 3862151e13bd failed on glm-deploy-e2e-1 at Ask the plan's question set and score the answers"
    )
    quality = load_file("glm_quality", REPO / "collection" / "plugins" / "module_utils" / "quality.py")
    gate_module = (REPO / "collection" / "plugins" / "modules" / "quality_gate.py").read_text(encoding="utf-8")
    assert 'msg="quality gate failed: " + message' in gate_module
    decision = quality.decide(
        {"score": round(16 / 60, 4), "correct": 16, "total": 60, "set": "sandbox-addition-v1", "errors": 0},
        floor=0.9,
        max_drop_points=5.0,
        baseline={"release_id": "4ff5f16e1225", "score": round(59 / 60, 4)},
    )
    assert not decision["passed"]
    verify_tasks = yaml.safe_load((REPO / "collection" / "roles" / "verify" / "tasks" / "quality.yml").read_text())
    gate_task = jinja2.Template(verify_tasks[0]["name"], autoescape=False).render(
        _verify_quality={"set": "sandbox-addition-v1"})
    plays = yaml.safe_load((REPO / "playbooks" / "redeploy.yml").read_text(encoding="utf-8"))
    stop = find_task(plays, "Stop the roll, naming the cause")
    cause = find_task(plays, "Note why the release failed")["ansible.builtin.set_fact"]
    variables: dict[str, Any] = {
        "ansible_failed_task": {"name": gate_task},
        "ansible_failed_result": {"msg": "quality gate failed: " + decision["message"]},
        "inventory_hostname": "glm-deploy-e2e-1",
        "_redeploy_new": "3862151e13bd",
        "glm_release": {"release_id": "4ff5f16e1225", "outcome": "rolled_back"},
        "_redeploy_cutover_at": 1,
    }
    environment = jinja2.Environment(autoescape=False)  # noqa: S701 (plain text, as Ansible renders it)
    variables["_redeploy_cause"] = environment.from_string(cause["_redeploy_cause"]).render(variables)
    variables["_redeploy_journal_error"] = ""

    printed = environment.from_string(stop["ansible.builtin.fail"]["msg"]).render(variables)

    assert words(printed) == words(example.text)

