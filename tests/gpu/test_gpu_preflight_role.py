"""The gpu_preflight role run by ansible-playbook against localhost with GPU-tool stand-ins.

This covers the wiring the unit tests cannot: the module's result fed through the controller-side filter
inside Ansible, the assert that stops the play, and the facts shared with later roles.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from tests.equipment.playbook import run_playbook

from glm_deploy.catalog import load_catalog
from glm_deploy.render import PlanOptions, render_plan

from .test_gpu_facts_module import nvidia_stand_ins

pytestmark = pytest.mark.playbook

PLAYBOOK = """\
- name: Preflight a GPU host
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    glm_plan: "{{ lookup('file', plan_file) | from_json }}"
  roles:
    - role: glm.deploy.gpu_preflight
      vars:
        gpu_preflight_disk_path: "{{ disk_path }}"
  post_tasks:
    - name: Save the shared facts
      ansible.builtin.copy:
        content: "{{ {'gpu': glm_gpu, 'needs': glm_gpu_needs, 'image': glm_image_choice} | to_json }}"
        dest: "{{ out_file }}"
        mode: "0644"
"""


def run_role(tmp_path: Path, machine: str, plan: dict, docker: str = "docker-runtimes-nvidia.txt", **extra):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    nvidia_stand_ins(bin_dir, machine, docker=docker)
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    variables = {
        "plan_file": str(tmp_path / "plan.json"),
        "disk_path": str(tmp_path),
        "out_file": str(tmp_path / "out.json"),
        "ansible_python_interpreter": sys.executable,
        **extra,
    }
    return run_playbook(
        tmp_path / "play.yml",
        home=tmp_path,
        variables=variables,
        env={"PATH": f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin"},
        timeout=180,
    )


def test_healthy_b200_passes_and_shares_the_image_choice(tmp_path):
    # The free-space check needs ~720 GiB; give the plan tiny weights so this machine's disk suffices.
    plan = render_plan(
        load_catalog(),
        model="glm-5.1-fp8",
        engine="vllm",
        hardware="b200",
        options=PlanOptions(cuda_version="13.0"),
    ).to_dict()
    plan["disk_bytes"] = 1024
    completed = run_role(tmp_path, "b200-driver580", plan, gpu_preflight_cache_reserve_gib=0)
    assert completed.returncode == 0, completed.stdout[-3000:]
    shared = json.loads((tmp_path / "out.json").read_text())
    assert shared["gpu"]["driver_major"] == 580
    assert shared["image"]["image"] == "vllm/vllm-openai:v0.19.1-cu130"
    assert shared["needs"]["deepgemm"] is True


def test_fabric_manager_down_stops_the_play_with_every_problem(tmp_path):
    plan = render_plan(
        load_catalog(),
        model="glm-5.1-fp8",
        engine="sglang",
        hardware="b200",
        options=PlanOptions(cuda_version="12.8"),
    ).to_dict()
    plan["disk_bytes"] = 1024
    completed = run_role(
        tmp_path,
        "b200-fabricmanager-down",
        plan,
        docker="docker-runtimes-plain.txt",
        gpu_preflight_cache_reserve_gib=0,
        gpu_preflight_fixers=[],
    )
    assert completed.returncode != 0
    assert "Stop here, before any change" in completed.stdout
    for words in (
        "[fabric_manager] nvidia-fabricmanager.service is failed/failed",
        "[fabric]",
        "[nvlink]",
        "[container_runtime] Docker has no NVIDIA runtime",
    ):
        assert words in completed.stdout
    assert not (tmp_path / "out.json").exists()
