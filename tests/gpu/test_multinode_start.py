"""How the server role starts a multi-node plan, run by ansible-playbook on two "nodes" of this machine.

Both nodes are inventory hosts with `ansible_connection=local`, each with its own state root and unit folder, and
`systemctl`/`journalctl` are the stand-ins of tests/equipment/fake_systemd.py, first on PATH (the modules find
them there: ansible.builtin.systemd_service looks systemctl up on PATH and checks no init system; wait_healthy runs
`systemctl show` and `journalctl` through ansible.builtin.command). The head's fake engine answers /health only
once the worker's unit was started, as a real head does once its workers joined.

What a user relies on: every node restarts before the head's health wait ends; only the head waits for /health
(the worker's own address gets no request); a worker whose unit died fails the play naming it, its rank and its
journal; a run that holds only some of the nodes (--limit, serial) is refused before anything restarts; a fleet of
one-node replicas still waits for health on every host.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tests.equipment.playbook import run_playbook

from glm_deploy.catalog import load_catalog
from glm_deploy.render import PlanOptions, render_plan

from .conftest import REPO

pytestmark = pytest.mark.playbook

FAKE_SYSTEMD = REPO / "tests" / "equipment" / "fake_systemd.py"
ANSIBLE_BIN = Path(sys.executable).parent
WORKER_JOURNAL = "RuntimeError: [rank1] NCCL watchdog: connection to the head 127.0.0.1:5000 was reset"

PLAYBOOK = """\
- name: Activate one release on every node
  hosts: glm_servers
  gather_facts: false
  environment:
    FAKE_SYSTEMD_NODE: "{{ inventory_hostname }}"
    FAKE_SYSTEMD_UNIT_DIR: "{{ fake_unit_dir }}"
  module_defaults:
    glm.deploy.release:
      unit_dir: "{{ fake_unit_dir }}"
  vars:
    glm_plan: "{{ lookup('file', plan_file) | from_json }}"
  tasks:
    - name: Name the release
      ansible.builtin.set_fact:
        test_release: "{{ glm_plan | glm.deploy.release }}"

    - name: Stage it
      glm.deploy.release:
        state: stage
        root: "{{ server_state_root }}"
        release: "{{ test_release | combine({'plan': glm_plan}) }}"

    - name: Write its unit
      ansible.builtin.copy:
        content: "[Service]\\nExecStart=/bin/true rank {{ glm_node_rank }}\\n"
        dest: "{{ server_state_root }}/releases/{{ test_release.release_id }}/{{ glm_plan.unit_name }}"
        mode: "0644"

    - name: Activate it
      ansible.builtin.include_role:
        name: glm.deploy.server
        tasks_from: activate.yml
      vars:
        server_activate: "{{ test_release.release_id }}"

    - name: Save the release the node reports
      ansible.builtin.copy:
        content: "{{ glm_release | to_json }}"
        dest: "{{ out_dir }}/{{ inventory_hostname }}.json"
        mode: "0644"
"""


def said(result: subprocess.CompletedProcess[str]) -> str:
    """The run's output with the callback's line wrapping undone."""
    return " ".join((result.stdout + result.stderr).split())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", 0))
        return probe.getsockname()[1]


class Nodes:
    """Two nodes on this machine, the stand-ins on PATH, and what their calls left in the log."""

    def __init__(self, tmp_path: Path, plan: dict, behaviour: dict) -> None:
        self.tmp = tmp_path
        self.state = tmp_path / "systemd"
        self.state.mkdir()
        (self.state / "nodes.json").write_text(json.dumps(behaviour))
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        for tool in ("systemctl", "journalctl"):
            (self.bin / tool).write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_SYSTEMD}" {tool} "$@"\n')
            (self.bin / tool).chmod(0o755)
        self.out = tmp_path / "out"
        self.out.mkdir()
        (tmp_path / "plan.json").write_text(json.dumps(plan))
        (tmp_path / "play.yml").write_text(PLAYBOOK)
        hosts = {}
        for rank, name in enumerate(["node0", "node1"]):
            root = tmp_path / name
            (root / "units").mkdir(parents=True)
            hosts[name] = {
                "ansible_connection": "local",
                "ansible_python_interpreter": sys.executable,
                "glm_node_rank": rank if plan["node_count"] > 1 else 0,
                "server_state_root": str(root / "state"),
                "fake_unit_dir": str(root / "units"),
                # Each node asks its own address: a worker's health request would reach the head's engine
                # (listening on every address) with 127.0.0.2 as its destination.
                "server_health_host": f"127.0.0.{rank + 1}",
            }
        (tmp_path / "inventory.json").write_text(json.dumps({"glm_servers": {"hosts": hosts}}))

    def play(self, *arguments: str, **extra: object) -> subprocess.CompletedProcess[str]:
        variables = {
            "plan_file": str(self.tmp / "plan.json"),
            "out_dir": str(self.out),
            # A wrong order makes the head wait for a worker that never starts: fail in seconds, not the plan's hour.
            "server_start_timeout_s": 12,
            **extra,
        }
        return run_playbook(
            self.tmp / "play.yml",
            home=self.tmp,
            inventory=self.tmp / "inventory.json",
            variables=variables,
            env={
                "PATH": f"{self.bin}:{ANSIBLE_BIN}:/usr/bin:/bin",
                "FAKE_SYSTEMD_STATE": str(self.state),
                "ANSIBLE_FORKS": "5",
            },
            args=arguments,
        )

    def calls(self) -> list[dict]:
        path = self.state / "calls.log"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def starts(self) -> list[dict]:
        # systemd_service `state: restarted` runs `systemctl start` on a unit that is not running yet.
        return [call for call in self.calls() if call.get("argv", [None, None])[1] in ("start", "restart")]

    def restarts(self) -> dict[str, float]:
        """When each node's unit was last (re)started."""
        return {call["node"]: call["t"] for call in self.starts()}

    def health(self) -> list[dict]:
        return [call for call in self.calls() if "health" in call]

    def reported(self, node: str) -> dict:
        return json.loads((self.out / f"{node}.json").read_text())

    def stop_engines(self) -> None:
        path = self.state / "units.json"
        for unit in json.loads(path.read_text()).values() if path.exists() else []:
            if unit.get("engine_pid"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(unit["engine_pid"], signal.SIGTERM)


@pytest.fixture
def nodes(tmp_path):
    started: list[Nodes] = []

    def make(plan: dict, behaviour: dict) -> Nodes:
        started.append(Nodes(tmp_path, plan, behaviour))
        return started[-1]

    yield make
    for each in started:
        each.stop_engines()


def two_node_plan(port: int) -> dict:
    # GLM-5 FP8 with SGLang on H100 spans two nodes of 8 GPUs (tp 16): a real multi-node plan of the catalog.
    plan = render_plan(
        load_catalog(),
        model="glm-5-fp8",
        engine="sglang",
        hardware="h100",
        nodes=2,
        options=PlanOptions(port=port, head_address="127.0.0.1"),
    ).to_dict()
    assert plan["node_count"] == 2
    assert [node["role"] for node in plan["nodes"]] == ["head", "worker"]
    return plan


def head_waits_for(port: int, **worker: object) -> dict:
    return {
        "node0": {"serve": {"bind": "0.0.0.0", "port": port, "after_started": ["node1"]}},
        "node1": worker,
    }


def test_every_node_restarts_before_the_head_is_healthy_and_only_the_head_waits(nodes):
    port = free_port()
    run = nodes(two_node_plan(port), head_waits_for(port))

    result = run.play()

    assert result.returncode == 0, result.stdout + result.stderr
    restarts = run.restarts()
    assert set(restarts) == {"node0", "node1"}
    answered = [call["t"] for call in run.health() if call["status"] == 200]
    assert answered, f"the head's health wait never got an answer: {run.health()}"
    assert max(restarts.values()) < min(answered)
    # Every health request went to the head's own address; the worker (127.0.0.2) asked nothing.
    assert {call["health"] for call in run.health()} == {"127.0.0.1"}
    head, worker = run.reported("node0"), run.reported("node1")
    assert head["restarted"] is True and isinstance(head["health_wait_s"], int)
    assert worker["restarted"] is True and worker["health_wait_s"] is None
    assert head["release_id"] == worker["release_id"]
    assert "as worker rank 1 of 2; head node0 serves port" in said(result)


def test_a_second_run_restarts_nothing_and_still_checks_the_worker(nodes):
    port = free_port()
    run = nodes(two_node_plan(port), head_waits_for(port))
    assert run.play().returncode == 0
    before = len(run.starts())

    result = run.play()

    assert result.returncode == 0, result.stdout + result.stderr
    assert len(run.starts()) == before
    assert run.reported("node0")["restarted"] is False and run.reported("node1")["restarted"] is False
    worker_checks = [
        call for call in run.calls() if call["node"] == "node1" and call.get("argv", [])[:2] == ["systemctl", "show"]
    ]
    assert worker_checks, "the worker's unit was not checked"


def test_a_worker_whose_unit_died_fails_the_play_naming_it(nodes):
    port = free_port()
    run = nodes(two_node_plan(port), head_waits_for(port, dies=True, journal=["loading shards", WORKER_JOURNAL]))

    result = run.play()

    assert result.returncode != 0
    assert "worker node node1 (rank 1 of 2, head node0)" in said(result)
    assert "is failed (failed" in said(result)
    assert WORKER_JOURNAL in said(result)
    # The head itself came up and reported; the failure belongs to the worker.
    assert run.reported("node0")["release_id"]
    assert not (run.out / "node1.json").exists()


def test_a_limit_to_one_node_is_refused_before_anything_restarts(nodes):
    port = free_port()
    run = nodes(two_node_plan(port), head_waits_for(port))

    result = run.play("--limit", "node1")

    assert result.returncode != 0
    assert "runs as one engine on 2 nodes" in said(result)
    assert "Missing from this run: node0" in said(result)
    assert "Nothing was restarted on node1" in said(result)
    assert [call for call in run.calls() if call.get("argv", [None])[0] == "systemctl"] == []
    # The refusal came before the release was made current: no unit was installed.
    assert list((run.tmp / "node1" / "units").iterdir()) == []


def test_a_fleet_of_one_node_replicas_waits_for_health_on_every_host(nodes):
    port = free_port()
    plan = render_plan(
        load_catalog(), model="glm-tiny", engine="vllm-cpu", hardware="cpu", options=PlanOptions(port=port)
    ).to_dict()
    assert plan["node_count"] == 1
    behaviour = {
        "node0": {"serve": {"bind": "127.0.0.1", "port": port}},
        "node1": {"serve": {"bind": "127.0.0.2", "port": port}},
    }
    run = nodes(plan, behaviour)

    result = run.play()

    assert result.returncode == 0, result.stdout + result.stderr
    assert set(run.restarts()) == {"node0", "node1"}
    assert {call["health"] for call in run.health() if call["status"] == 200} == {"127.0.0.1", "127.0.0.2"}
    for node in ("node0", "node1"):
        assert isinstance(run.reported(node)["health_wait_s"], int)
        assert run.reported(node)["restarted"] is True
    assert "as worker rank" not in said(result)


REDEPLOY_INVENTORY = {
    "glm_servers": {
        "hosts": {"node0": {}, "node1": {}},
        "vars": {
            "ansible_connection": "local",
            # Nothing may run on a host here: the check under test runs on the controller before any module does.
            "ansible_python_interpreter": "/nonexistent/python3",
            "glm_api_key": "k" * 32,
        },
    }
}


def roll(tmp_path: Path, playbook: str, serial: str, **plan: object) -> subprocess.CompletedProcess[str]:
    inventory = json.loads(json.dumps(REDEPLOY_INVENTORY))
    inventory["glm_servers"]["vars"].update({f"glm_{key}": value for key, value in plan.items()})
    (tmp_path / "inventory.json").write_text(json.dumps(inventory))
    return run_playbook(
        REPO / "playbooks" / playbook,
        home=tmp_path,
        inventory=tmp_path / "inventory.json",
        variables={"glm_redeploy_serial": serial},
        args=["--check"],
        cwd=REPO,
    )


MULTI_NODE = {"model": "glm-5-fp8", "engine": "sglang", "hardware": "h100", "nodes": 2}
ONE_NODE = {"model": "glm-tiny", "engine": "vllm-cpu", "hardware": "cpu"}


@pytest.mark.parametrize("playbook", ["redeploy.yml", "rollback.yml"])
def test_a_roll_of_a_multi_node_plan_one_host_at_a_time_is_refused(tmp_path, playbook):
    result = roll(tmp_path, playbook, "1", **MULTI_NODE)

    assert result.returncode != 0
    assert "runs on 2 nodes (node0, node1, head first)" in said(result)
    assert "holds node0, not node1" in said(result)
    assert f"glm-deploy {playbook.removesuffix('.yml')} --serial 2" in said(result)
    assert "Take this host's redeploy lock" not in said(result)


@pytest.mark.parametrize(
    ("serial", "plan"), [("100%", MULTI_NODE), ("2", MULTI_NODE), ("1", ONE_NODE)], ids=["100%", "2", "replicas"]
)
def test_a_batch_holding_every_node_passes_the_check(tmp_path, serial, plan):
    result = roll(tmp_path, "redeploy.yml", serial, **plan)

    # The play goes on to the first task that runs on the host, which fails on purpose (no interpreter there).
    assert "TASK [Take this host's redeploy lock]" in said(result), result.stdout + result.stderr
    assert "/nonexistent/python3" in said(result)
    assert "which restart together" not in said(result)
