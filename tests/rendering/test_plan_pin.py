"""The plan is pinned to a commit in one place, glm.deploy.plan's pin.yml, and a serial roll gives every host the
commit its first host fetched even when the branch moves during the roll. The pin tasks are taken from
playbooks/redeploy.yml as they are written there and run through a real ansible-playbook, serial 1, on two local
hosts; a stand-in for the weights role "fetches" the plan's commit, or, for a branch, the branch's head at that
moment, which moves between the two hosts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.equipment.playbook import REPO, run_playbook

pytestmark = pytest.mark.playbook

FIRST_HEAD = "1" * 40
MOVED_HEAD = "2" * 40
BEFORE_WEIGHTS = "Pin the plan to the commit the roll's first host fetched"
AFTER_WEIGHTS = "Pin the plan to the commit the weights were fetched at"


def _task(tasks: list[dict[str, Any]], name: str) -> dict[str, Any]:
    for task in tasks:
        if task.get("name") == name:
            return task
        for section in ("block", "rescue", "always"):
            try:
                return _task(task.get(section) or [], name)
            except LookupError:
                continue
    raise LookupError(name)


def _roll(tmp_path: Path, *, pin_before_weights: bool) -> dict[str, dict[str, Any]]:
    (play,) = yaml.safe_load((REPO / "playbooks" / "redeploy.yml").read_text())
    pins = [_task(play["tasks"], AFTER_WEIGHTS)]
    if pin_before_weights:
        pins.insert(0, _task(play["tasks"], BEFORE_WEIGHTS))
    fetch = {
        "name": "Stand-in for the weights role: fetch the pinned commit, else the branch's head now",
        "ansible.builtin.set_fact": {
            "weights_commit": "{{ glm_plan.model_revision if glm_plan.revision_pinned else heads[inventory_hostname] }}"
        },
    }
    record = {
        "name": "Record what this host fetched and serves",
        "ansible.builtin.copy": {
            "content": "{{ {'fetched': weights_commit, 'serves': glm_plan.model_revision,"
            " 'argv': glm_plan.nodes[0].argv} | to_json }}",
            "dest": f"{tmp_path}/{{{{ inventory_hostname }}}}.json",
            "mode": "0644",
        },
    }
    playbook = tmp_path / "roll.yml"
    playbook.write_text(
        json.dumps(
            [
                {
                    "name": "A roll, one host at a time",
                    "hosts": "glm_servers",
                    "gather_facts": False,
                    "serial": play["serial"],
                    "tasks": [
                        {"name": "Render the plan", "ansible.builtin.import_role": {"name": "glm.deploy.plan"}},
                        *pins[:-1],
                        fetch,
                        pins[-1],
                        record,
                    ],
                }
            ]
        )
    )
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        json.dumps(
            {
                "glm_servers": {
                    "hosts": {"first": {}, "second": {}},
                    "vars": {
                        "ansible_connection": "local",
                        "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                        "glm_model": "glm-tiny",
                        "glm_engine": "vllm-cpu",
                        "glm_hardware": "cpu",
                        "plan_show": False,
                        # The branch moves between the first host's fetch and the second's.
                        "heads": {"first": FIRST_HEAD, "second": MOVED_HEAD},
                    },
                }
            }
        )
    )
    completed = run_playbook(playbook, home=tmp_path, inventory=inventory)
    assert completed.returncode == 0, (completed.stdout + completed.stderr)[-3000:]
    return {host: json.loads((tmp_path / f"{host}.json").read_text()) for host in ("first", "second")}


def test_every_host_of_a_roll_serves_the_commit_its_first_host_fetched(tmp_path: Path) -> None:
    hosts = _roll(tmp_path, pin_before_weights=True)
    for host, seen in hosts.items():
        assert seen["fetched"] == seen["serves"] == FIRST_HEAD, (host, seen)
        argv = seen["argv"]
        assert argv[argv.index("--revision") + 1] == FIRST_HEAD, argv


def test_without_the_roll_pin_a_moving_branch_would_split_the_fleet(tmp_path: Path) -> None:
    # What the pin before the weights prevents; each host is still pinned to what it fetched (the site.yml order).
    hosts = _roll(tmp_path, pin_before_weights=False)
    assert (hosts["first"]["serves"], hosts["second"]["serves"]) == (FIRST_HEAD, MOVED_HEAD)
