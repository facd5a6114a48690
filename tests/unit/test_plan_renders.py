"""glm_deploy.replan's decisions around the plan role's one render and its pin, as plain Python.

`options_for_group` gives the one render its options: the head node's address only where the plan spans nodes.
`pin_to_commit` renders the plan again with the commit a branch resolved to, and refuses a result that differs in
more than the revision. The role-level behaviour (a real ansible-playbook) is in tests/rendering/test_plan_pin.py and
tests/rendering/test_lookup_playbook.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from glm_deploy.catalog import load_catalog
from glm_deploy.errors import GlmDeployError
from glm_deploy.render import PlanOptions, render_plan
from glm_deploy.replan import options_for_group, pin_to_commit

pytestmark = pytest.mark.unit

CATALOG = load_catalog()
REPO = Path(__file__).resolve().parents[2]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
ONE_NODE = {"model": "glm-5.1-fp8", "engine": "vllm", "hardware": "b200"}
TWO_NODES = {"model": "glm-5", "engine": "sglang", "hardware": "b200"}


def _plan(case: dict, options: dict | None = None) -> dict:
    return render_plan(CATALOG, **case, options=PlanOptions.from_mapping(options or {})).to_dict()


@pytest.mark.parametrize(
    ("case", "options", "expected"),
    [
        (TWO_NODES, {}, {"head_address": "10.0.0.5"}),
        # The user's address wins; a one-node plan (a fleet of replicas) gets none.
        (TWO_NODES, {"head_address": "10.9.9.9"}, {"head_address": "10.9.9.9"}),
        (ONE_NODE, {}, {}),
        ({"model": "glm-tiny", "engine": "vllm-cpu", "hardware": "cpu"}, {"port": 8123}, {"port": 8123}),
        # Names the catalog does not know: unchanged, the render right after names what is wrong.
        ({"model": "no-such-model", "engine": "vllm", "hardware": "b200"}, {}, {}),
        ({"model": "glm-5.1-fp8", "engine": "vllm", "hardware": "cpu"}, {}, {}),
    ],
)
def test_only_a_plan_spanning_nodes_gets_the_head_address(case: dict, options: dict, expected: dict) -> None:
    chosen = options_for_group(CATALOG, options, **case, nodes=None, head_address="10.0.0.5")
    assert chosen == expected
    assert options_for_group(CATALOG, options, **case, nodes=None, head_address="") == options


def test_the_one_render_of_a_two_node_plan_meets_at_the_head() -> None:
    chosen = options_for_group(CATALOG, {}, **TWO_NODES, nodes=0, head_address="10.0.0.5")
    plan = _plan(TWO_NODES, chosen)
    assert plan["node_count"] == 2
    assert all(any("10.0.0.5" in word for word in node["argv"]) for node in plan["nodes"])
    assert not any("HEAD_ADDRESS" in word for node in plan["nodes"] for word in node["argv"])


def test_a_node_count_the_catalog_refuses_is_said_before_the_render() -> None:
    with pytest.raises(GlmDeployError, match="--nodes 1"):
        options_for_group(CATALOG, {}, **TWO_NODES, nodes=1, head_address="10.0.0.5")


@pytest.mark.parametrize("case", [ONE_NODE, TWO_NODES], ids=["one node", "two nodes"])
def test_a_branch_plan_is_pinned_and_only_its_revision_changes(case: dict) -> None:
    options = options_for_group(CATALOG, {"port": 8123}, **case, nodes=None, head_address="10.0.0.5")
    old = _plan(case, options)
    assert old["model_revision"] == "main" and not old["revision_pinned"]
    result = pin_to_commit(CATALOG, old, options=options, commit=COMMIT)
    new = result["plan"]
    assert result["kept"] == "" and result["options"] == {**options, "revision": COMMIT}
    assert new["model_revision"] == COMMIT and new["revision_pinned"]
    assert new == _plan(case, {**options, "revision": COMMIT})
    for old_node, new_node in zip(old["nodes"], new["nodes"], strict=True):
        changed = [(a, b) for a, b in zip(old_node["argv"], new_node["argv"], strict=True) if a != b]
        assert changed and all(pair == ("main", COMMIT) for pair in changed), changed
    assert not any("is a branch" in warning for warning in new["warnings"])


def test_the_head_address_is_kept_when_the_options_lack_it() -> None:
    old = _plan(TWO_NODES, {"head_address": "10.0.0.5"})
    result = pin_to_commit(CATALOG, old, options={}, commit=COMMIT)
    assert all(any("10.0.0.5" in word for word in node["argv"]) for node in result["plan"]["nodes"])
    assert result["options"] == {"revision": COMMIT}


@pytest.mark.parametrize(
    ("commit", "kept"),
    [
        ("", "no commit to pin to (plan_pin_commit is empty)"),
        ("main", "plan_pin_commit 'main' is not a 40-hex commit"),
        (COMMIT.upper(), f"plan_pin_commit '{COMMIT.upper()}' is not a 40-hex commit"),
        (COMMIT + "\n", "is not a 40-hex commit"),
    ],
)
def test_without_a_commit_the_plan_is_kept_and_why(commit: str, kept: str) -> None:
    old = _plan(ONE_NODE)
    result = pin_to_commit(CATALOG, old, options={}, commit=commit)
    assert result["plan"] is old and kept in result["kept"]
    assert "\n" not in result["kept"]


def test_a_plan_that_names_a_commit_is_kept() -> None:
    old = _plan(ONE_NODE, {"revision": COMMIT})
    result = pin_to_commit(CATALOG, old, options={"revision": COMMIT}, commit="f" * 40)
    assert result["plan"] is old and result["kept"] == f"the plan names commit {COMMIT}"


def test_options_other_than_the_plans_are_refused_naming_what_differs() -> None:
    old = _plan(ONE_NODE)
    with pytest.raises(GlmDeployError) as raised:
        pin_to_commit(CATALOG, old, options={"served_name": "other-name"}, commit=COMMIT)
    message = str(raised.value)
    assert "differs from glm_plan in more than its revision ('main'): " in message
    assert "served_model_name" in message and f"set revision={COMMIT} in glm_options" in message


def test_a_word_that_only_looks_like_the_branch_is_not_taken_for_it() -> None:
    # A served name equal to the branch stays what it is: only the revision flags' words follow the commit.
    options = {"served_name": "main"}
    old = _plan(ONE_NODE, options)
    new = pin_to_commit(CATALOG, old, options=options, commit=COMMIT)["plan"]
    argv = new["nodes"][0]["argv"]
    assert argv[argv.index("--served-model-name") + 1] == "main"
    assert argv[argv.index("--revision") + 1] == COMMIT


def _set_fact_arguments(node: object) -> list[dict]:
    """The arguments of every set_fact task in a parsed YAML document, at any depth (blocks, plays)."""
    found: list[dict] = []
    if isinstance(node, list):
        for item in node:
            found += _set_fact_arguments(item)
    elif isinstance(node, dict):
        if "ansible.builtin.set_fact" in node:
            found.append(node["ansible.builtin.set_fact"])
        for value in node.values():
            found += _set_fact_arguments(value)
    return found


def _set_fact_writers(name: str) -> dict[str, int]:
    """Where a collection task file sets `name` with set_fact, and how many tasks do."""
    writers: dict[str, int] = {}
    for path in sorted((REPO / "collection").glob("**/*.yml")):
        if "tests" in path.relative_to(REPO / "collection").parts:
            continue
        count = sum(1 for args in _set_fact_arguments(yaml.safe_load(path.read_text())) if name in (args or {}))
        if count:
            writers[str(path.relative_to(REPO / "collection"))] = count
    return writers


def test_glm_plan_is_rendered_in_one_task_and_re_rendered_only_through_the_checked_functions() -> None:
    # One render from the catalog (the plan role), two checked re-renders (the driver's CUDA, the pinned commit),
    # and the plays that take the plan stored in a release (rollback, redeploy's rescue).
    assert _set_fact_writers("glm_plan") == {
        "roles/plan/tasks/main.yml": 1,
        "roles/gpu_preflight/tasks/replan.yml": 1,
        "roles/plan/tasks/pin.yml": 1,
        "playbooks/rollback.yml": 1,
        "playbooks/redeploy.yml": 1,
    }
    # The roles and playbooks call the renderer once; the sandbox's image build renders another plan (the native
    # one its image is made of), and the Molecule scenarios are tests.
    lookups = {
        str(path.relative_to(REPO / "collection")): path.read_text().count("lookup('glm.deploy.plan'")
        for folder in ("roles", "playbooks")
        for path in (REPO / "collection" / folder).glob("**/*.yml")
        if "lookup('glm.deploy.plan'" in path.read_text()
    }
    assert lookups == {"roles/plan/tasks/main.yml": 1, "playbooks/sandbox_engine_image.yml": 1}, lookups
    pin = (REPO / "collection/roles/plan/tasks/pin.yml").read_text()
    replan = (REPO / "collection/roles/gpu_preflight/tasks/replan.yml").read_text()
    assert "glm.deploy.pin_to_commit" in pin and "glm.deploy.replan_for_driver" in replan
