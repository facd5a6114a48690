"""The plan role through a real ansible-playbook run: a two-node plan (GLM-5-FP8 on 8x H100, tp16) whose hosts mount
one Lambda filesystem keeps the HF cache there, on every node and in glm_plan_options; hosts that mount different
filesystems are refused with a message naming each host's mount."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.equipment.playbook import run_playbook

from glm_deploy.paths import project_root

pytestmark = pytest.mark.playbook

LOCAL = "ansible_connection=local ansible_python_interpreter='{{ ansible_playbook_python }}'"
PLAY = """
- name: Plan
  hosts: glm_servers
  gather_facts: false
  roles:
    - role: glm.deploy.plan
      vars:
        plan_show: false
  tasks:
    - name: Keep what each host will use for the test
      ansible.builtin.copy:
        content: >-
          {{ {'hf_home': glm_plan.cache_env.HF_HOME, 'node_env': glm_plan.nodes[glm_node_rank | int].env.HF_HOME
              | default(glm_plan.cache_env.HF_HOME), 'options': glm_plan_options} | to_json }}
        dest: "{{ out_dir }}/{{ inventory_hostname }}.json"
        mode: "0644"
"""


def play(tmp_path: Path, mounts: dict[str, str]) -> tuple[int, str]:
    inventory = tmp_path / "inventory.ini"
    lines = ["[glm_servers]"]
    lines += [f"{host} {LOCAL} glm_filesystem_mount={mount}" for host, mount in mounts.items()]
    lines += ["[glm_servers:vars]", "glm_model=glm-5-fp8", "glm_engine=vllm", "glm_hardware=h100"]
    lines += [f"out_dir={tmp_path}", "glm_private_ip=10.1.0.7"]
    inventory.write_text("\n".join(lines) + "\n")
    playbook = tmp_path / "plan.yml"
    playbook.write_text(PLAY)
    result = run_playbook(playbook, home=tmp_path, inventory=str(inventory), cwd=project_root())
    return result.returncode, result.stdout + result.stderr


def test_two_nodes_on_one_filesystem_keep_the_hf_cache_there(tmp_path: Path) -> None:
    mount = "/lambda/nfs/glm-weights"
    code, output = play(tmp_path, {"head": mount, "worker": mount})
    assert code == 0, output
    for host in ("head", "worker"):
        kept = json.loads((tmp_path / f"{host}.json").read_text())
        assert kept["hf_home"] == f"{mount}/glm-deploy/hf"
        assert kept["node_env"] == f"{mount}/glm-deploy/hf"
        # The re-renders after this one (head address, CUDA version, pin) start from these options.
        assert kept["options"]["hf_home"] == f"{mount}/glm-deploy/hf"
        assert kept["options"]["head_address"] == "10.1.0.7"


def test_nodes_on_different_filesystems_are_refused(tmp_path: Path) -> None:
    code, output = play(tmp_path, {"head": "/lambda/nfs/one", "worker": "/lambda/nfs/two"})
    assert code != 0
    flat = " ".join(output.split())
    assert (
        "the hosts of glm_servers do not mount one shared filesystem (head: /lambda/nfs/one, worker: /lambda/nfs/two)"
    ) in flat
    assert "set hf_home in glm_options" in flat
