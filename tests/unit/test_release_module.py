"""The glm.deploy.release module run as Ansible runs it (a Python process reading its arguments from a file),
against a scratch state root and unit folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.equipment.module_process import run_module_file

pytestmark = pytest.mark.playbook

UNIT = "glm-glm-tiny.service"


class Host:
    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "state"
        self.units = tmp_path / "units"
        self.units.mkdir()
        self.tmp = tmp_path

    def run(self, check_mode: bool = False, **arguments: Any) -> dict[str, Any]:
        arguments = {"root": str(self.root), "unit_dir": str(self.units), **arguments}
        return run_module_file("release", self.tmp, check_mode=check_mode, **arguments)

    def stage(self, release_id: str, argv: str) -> dict[str, Any]:
        result = self.run(state="stage", release={"release_id": release_id, "model_commit": "c" * 40})
        (self.root / "releases" / release_id / UNIT).write_text(f"[Service]\nExecStart={argv}\n")
        return result

    def installed_unit(self) -> str:
        return (self.units / UNIT).read_text()

    def state(self) -> dict[str, Any]:
        return dict(json.loads((self.root / "releases" / "state.json").read_text()))


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


def test_stage_activate_and_roll_back(host: Host) -> None:
    assert host.stage("aaaaaaaaaaaa", "/bin/serve a")["changed"] is True
    assert host.stage("aaaaaaaaaaaa", "/bin/serve a")["changed"] is False  # staging is idempotent
    first = host.run(state="activate", release_id="aaaaaaaaaaaa", unit_name=UNIT)
    assert (first["changed"], first["unit_changed"], first["current"], first["previous"]) == (
        True,
        True,
        "aaaaaaaaaaaa",
        None,
    )
    assert host.installed_unit().endswith("/bin/serve a\n")
    again = host.run(state="activate", release_id="aaaaaaaaaaaa", unit_name=UNIT)
    assert again["changed"] is False

    host.stage("bbbbbbbbbbbb", "/bin/serve b")
    second = host.run(state="activate", release_id="bbbbbbbbbbbb", unit_name=UNIT)
    assert (second["current"], second["previous"]) == ("bbbbbbbbbbbb", "aaaaaaaaaaaa")
    assert host.installed_unit().endswith("/bin/serve b\n")

    back = host.run(state="activate", release_id="previous", unit_name=UNIT)
    assert (back["changed"], back["current"], back["previous"]) == (True, "aaaaaaaaaaaa", "bbbbbbbbbbbb")
    assert host.installed_unit().endswith("/bin/serve a\n")
    assert [event["action"] for event in host.state()["events"]] == [
        "staged",
        "activated",
        "staged",
        "activated",
        "rolled_back",
    ]
    assert back["current_release"]["model_commit"] == "c" * 40


def test_failed_release_keeps_its_cause_and_is_retried_when_staged_again(host: Host) -> None:
    host.stage("aaaaaaaaaaaa", "/bin/serve a")
    marked = host.run(state="failed", release_id="aaaaaaaaaaaa", cause="vllm: error: unrecognized arguments")
    assert marked["changed"] is True
    document = json.loads((host.root / "releases" / "aaaaaaaaaaaa" / "release.json").read_text())
    assert document["status"] == "failed" and "unrecognized" in document["cause"]
    host.stage("aaaaaaaaaaaa", "/bin/serve a")
    document = json.loads((host.root / "releases" / "aaaaaaaaaaaa" / "release.json").read_text())
    assert "status" not in document and "cause" not in document


def test_rollback_without_a_previous_release_is_refused(host: Host) -> None:
    host.stage("aaaaaaaaaaaa", "/bin/serve a")
    host.run(state="activate", release_id="aaaaaaaaaaaa", unit_name=UNIT)
    refused = host.run(state="activate", release_id="previous", unit_name=UNIT)
    assert refused["failed"] is True and "no previous release" in refused["msg"]
    assert host.installed_unit().endswith("/bin/serve a\n")


def test_check_mode_changes_nothing(host: Host) -> None:
    host.stage("aaaaaaaaaaaa", "/bin/serve a")
    host.run(state="activate", release_id="aaaaaaaaaaaa", unit_name=UNIT)
    host.stage("bbbbbbbbbbbb", "/bin/serve b")
    before = (host.state(), host.installed_unit())
    would = host.run(check_mode=True, state="activate", release_id="bbbbbbbbbbbb", unit_name=UNIT)
    assert would["changed"] is True and would["unit_changed"] is True
    assert host.run(check_mode=True, state="lock", holder={"run": "r1"})["changed"] is True
    assert (host.state(), host.installed_unit()) == before
    assert not (host.root / "redeploy.lock").exists()


def test_a_lock_held_by_another_run_is_refused_naming_it(host: Host) -> None:
    taken = host.run(state="lock", holder={"run": "run-1", "controller": "ctl-a", "user": "ops"})
    assert taken["changed"] is True
    assert host.run(state="lock", holder={"run": "run-1"})["changed"] is False  # the same run again
    refused = host.run(state="lock", holder={"run": "run-2", "controller": "ctl-b"})
    assert refused["failed"] is True
    assert "run=run-1" in refused["msg"] and "controller=ctl-a" in refused["msg"]
    assert host.run(state="check_lock", holder={"run": "run-2"})["failed"] is True
    # Another run never removes the lock by unlocking; the holder does, or someone forcing it.
    assert host.run(state="unlock", holder={"run": "run-2"})["changed"] is False
    assert (host.root / "redeploy.lock").exists()
    broken = host.run(state="lock", holder={"run": "run-2"}, force=True)
    assert broken["changed"] is True and broken["broke"]["run"] == "run-1"
    assert host.run(state="unlock", holder={"run": "run-2"})["changed"] is True
    assert not (host.root / "redeploy.lock").exists()


def test_old_releases_are_pruned_but_never_current_or_previous(host: Host) -> None:
    ids = [f"{index:012x}" for index in range(1, 6)]
    for release_id in ids:
        host.stage(release_id, f"/bin/serve {release_id}")
        host.run(state="activate", release_id=release_id, unit_name=UNIT, keep=2)
    kept = sorted(path.name for path in (host.root / "releases").iterdir() if path.is_dir())
    assert kept == ids[-2:]
    assert (host.state()["current"], host.state()["previous"]) == (ids[-1], ids[-2])


def test_staging_with_a_holder_is_refused_while_another_run_holds_the_lock(host: Host) -> None:
    release = {"release_id": "cccccccccccc", "model_commit": "c" * 40}
    assert host.run(state="lock", holder={"run": "run-1", "controller": "ctl-a"})["changed"] is True
    refused = host.run(state="stage", release=release, holder={"run": "run-2"})
    assert refused["failed"] is True and "run=run-1" in refused["msg"]
    assert not (host.root / "releases" / "cccccccccccc").exists()
    # The holder itself stages, and so does a run told to force its way past the lock.
    assert host.run(state="stage", release=release, holder={"run": "run-1"})["changed"] is True
    forced = {"release_id": "dddddddddddd", "model_commit": "d" * 40}
    assert host.run(state="stage", release=forced, holder={"run": "run-2"}, force=True)["changed"] is True
