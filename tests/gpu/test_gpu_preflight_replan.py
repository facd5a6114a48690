"""The gpu_preflight role renders glm_plan again for the CUDA release of the host's driver.

The plan role renders glm_plan before any driver is known, for the CUDA release render.py assumes (12.8). After
a successful check the gpu_preflight role renders it again through the glm.deploy.plan lookup with option
cuda_version = the driver's CUDA, so the image, container and cache directories of the plan that engine_image and
server use are those of the image chosen for the driver; options that set cuda_version or image keep the plan.

Each test runs the real role with ansible-playbook: one inventory host per plan node, all on localhost, each with
its own Python wrapper that puts stand-ins for nvidia-smi, systemctl and docker (printing tests/fixtures/gpu)
first on PATH, so hosts of one play can report different drivers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from tests.equipment.playbook import run_playbook

from glm_deploy.catalog import load_catalog
from glm_deploy.render import PlanOptions, render_plan

from .test_gpu_facts_module import nvidia_stand_ins, stand_in

pytestmark = pytest.mark.playbook

# What the catalog runs for glm-5.1-fp8 / glm-5 on B200, per engine: the CUDA 12.x image on driver 570 (CUDA 12.8,
# under minor-version compatibility) and the CUDA 13 image on driver 580 (CUDA 13.0).
CUDA12_IMAGE = {"sglang": "lmsysorg/sglang:v0.5.10-cu12", "vllm": "vllm/vllm-openai:v0.19.1"}
CUDA13_IMAGE = {"sglang": "lmsysorg/sglang:v0.5.10-cu130", "vllm": "vllm/vllm-openai:v0.19.1-cu130"}
ASSUMED_CUDA_WARNING = "host CUDA version assumed 12.8"

PLAYBOOK = """\
- name: Preflight the GPU hosts of a plan
  hosts: glm_servers
  gather_facts: false
  vars:
    glm_plan: "{{ lookup('file', plan_file) | from_json }}"
  roles:
    - role: glm.deploy.gpu_preflight
      vars:
        gpu_preflight_disk_path: "{{ disk_path }}"
        gpu_preflight_cache_reserve_gib: 0
  post_tasks:
    - name: Save the plan and the image choice the later roles read
      ansible.builtin.copy:
        content: "{{ {'plan': glm_plan, 'image': glm_image_choice} | to_json }}"
        dest: "{{ out_dir }}/{{ inventory_hostname }}.json"
        mode: "0644"
"""


def initial_plan(model: str, engine: str, options: dict | None = None, **layout) -> dict:
    """glm_plan as the plan role renders it (before any driver is known), with weights small enough for this disk."""
    plan = render_plan(
        load_catalog(),
        model=model,
        engine=engine,
        hardware="b200",
        options=PlanOptions.from_mapping(options or {}),
        **layout,
    ).to_dict()
    plan["disk_bytes"] = 1024
    return plan


def run_play(tmp_path: Path, machines: list[str], plan: dict, glm_options: dict | None = None):
    """Run the role on one inventory host per machine (h0 = head); returns the result and each host's saved facts."""
    hosts = []
    for rank, machine in enumerate(machines):
        bin_dir = tmp_path / f"bin-h{rank}"
        bin_dir.mkdir()
        nvidia_stand_ins(bin_dir, machine)
        # Modules run under this host's interpreter, so this host's nvidia-smi is the one they find.
        stand_in(bin_dir, "python", f'PATH="{bin_dir}:$PATH" exec "{sys.executable}" "$@"\n')
        hosts.append(f"h{rank} ansible_connection=local ansible_python_interpreter={bin_dir / 'python'}")
    (tmp_path / "inventory.ini").write_text("[glm_servers]\n" + "\n".join(hosts) + "\n")
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    variables = {
        "plan_file": str(tmp_path / "plan.json"),
        "disk_path": str(tmp_path),
        "out_dir": str(out_dir),
        "glm_options": glm_options or {},
    }
    completed = run_playbook(
        tmp_path / "play.yml",
        home=tmp_path,
        inventory=tmp_path / "inventory.ini",
        variables=variables,
        env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"},
    )
    saved = {path.stem: json.loads(path.read_text()) for path in out_dir.glob("*.json")}
    return completed, saved


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("engine", ["sglang", "vllm"])
def test_driver_570_plan_is_rendered_again_for_cuda_12_8(tmp_path, engine):
    plan = initial_plan("glm-5.1-fp8", engine)
    assert ASSUMED_CUDA_WARNING in " ".join(plan["warnings"])
    completed, saved = run_play(tmp_path, ["b200-driver570"], plan)
    assert completed.returncode == 0, completed.stdout[-4000:]
    new_plan, choice = saved["h0"]["plan"], saved["h0"]["image"]
    assert new_plan["image"] == CUDA12_IMAGE[engine]
    assert new_plan["container"]["image"] == CUDA12_IMAGE[engine]
    assert choice["image"] == CUDA12_IMAGE[engine]
    # A CUDA 12.9 image on a CUDA 12.8 driver runs under minor-version compatibility.
    assert new_plan["container"]["env"]["NVIDIA_DISABLE_REQUIRE"] == "1"
    # Rendered again with cuda_version=12.8: the renderer no longer assumes the host's CUDA.
    assert ASSUMED_CUDA_WARNING not in " ".join(new_plan["warnings"])
    assert new_plan["nodes"] == plan["nodes"]
    output = flat(completed.stdout)
    assert f"plan image: {CUDA12_IMAGE[engine]} (unchanged): glm_plan rendered again with cuda_version=12.8" in output
    assert "the CUDA release driver 570.148.08 supports" in output


@pytest.mark.parametrize("engine", ["sglang", "vllm"])
def test_driver_580_plan_is_rendered_again_for_cuda_13(tmp_path, engine):
    plan = initial_plan("glm-5.1-fp8", engine)
    assert plan["image"] == CUDA12_IMAGE[engine]
    completed, saved = run_play(tmp_path, ["b200-driver580"], plan)
    assert completed.returncode == 0, completed.stdout[-4000:]
    new_plan, choice = saved["h0"]["plan"], saved["h0"]["image"]
    assert new_plan["image"] == CUDA13_IMAGE[engine]
    assert new_plan["container"]["image"] == CUDA13_IMAGE[engine]
    assert choice["image"] == CUDA13_IMAGE[engine]
    assert choice["cuda"] == "13.0"
    # The CUDA 13 image runs natively on driver 580: no minor-version compatibility switch.
    assert "NVIDIA_DISABLE_REQUIRE" not in new_plan["container"]["env"]
    # Cache directories are keyed by image: the CUDA 13 image gets its own, and the environment points there.
    assert new_plan["cache_dirs"][0] == plan["cache_dirs"][0]
    new_caches, old_caches = new_plan["cache_dirs"][1:], plan["cache_dirs"][1:]
    assert new_caches and not set(new_caches) & set(old_caches)
    assert all("cu130" in path for path in new_caches)
    assert set(new_plan["container"]["env"].values()) >= set(new_caches)
    # Nothing but the image and what follows it changed.
    assert [node["argv"] for node in new_plan["nodes"]] == [node["argv"] for node in plan["nodes"]]
    assert new_plan["engine_version"] == plan["engine_version"]
    output = flat(completed.stdout)
    assert (
        f"plan image: {CUDA13_IMAGE[engine]} (was {CUDA12_IMAGE[engine]}): glm_plan rendered again with "
        "cuda_version=13.0, the CUDA release driver 580.95.05 supports"
    ) in output
    assert "why this image:" in output and "built for CUDA 13.0" in output


@pytest.mark.parametrize(
    ("options", "kept_image", "why"),
    [
        ({"cuda_version": "12.9"}, "vllm/vllm-openai:v0.19.1", "option cuda_version=12.9 is set in the plan options"),
        (
            {"image": "vllm/vllm-openai:v0.19.1"},
            "vllm/vllm-openai:v0.19.1",
            "option image=vllm/vllm-openai:v0.19.1 is set in the plan options",
        ),
    ],
    ids=["cuda_version", "image"],
)
def test_explicit_cuda_version_or_image_keeps_the_plan(tmp_path, options, kept_image, why):
    plan = initial_plan("glm-5.1-fp8", "vllm", options)
    assert plan["image"] == kept_image
    # Driver 580 would otherwise move the plan to the CUDA 13 image.
    completed, saved = run_play(tmp_path, ["b200-driver580"], plan, glm_options=options)
    assert completed.returncode == 0, completed.stdout[-4000:]
    assert saved["h0"]["plan"] == plan
    assert saved["h0"]["image"]["image"] == kept_image
    output = flat(completed.stdout)
    assert f"plan image: {kept_image}, kept as rendered: {why}" in output
    assert "glm_plan rendered again" not in output


def test_two_node_plan_keeps_its_head_address_and_is_the_same_on_every_node(tmp_path):
    # glm-5 (BF16) spans two B200 nodes; the plan role added head_address from the inventory, which glm_options
    # does not hold: the role must read it back from the plan, or the rendered-again plan would differ.
    plan = initial_plan("glm-5", "sglang", {"head_address": "10.0.0.5"})
    assert plan["node_count"] == 2
    completed, saved = run_play(tmp_path, ["b200-driver580", "b200-driver580"], plan)
    assert completed.returncode == 0, completed.stdout[-4000:]
    assert saved["h0"]["plan"] == saved["h1"]["plan"]
    new_plan = saved["h0"]["plan"]
    assert new_plan["image"] == CUDA13_IMAGE["sglang"]
    assert [node["argv"] for node in new_plan["nodes"]] == [node["argv"] for node in plan["nodes"]]
    assert "10.0.0.5:5000" in new_plan["nodes"][1]["argv"]


def test_nodes_with_different_cuda_releases_stop_the_play(tmp_path):
    plan = initial_plan("glm-5", "vllm", {"head_address": "10.0.0.5"})
    completed, saved = run_play(tmp_path, ["b200-driver570", "b200-driver580"], plan)
    assert completed.returncode != 0
    output = flat(completed.stdout)
    assert "the hosts of this plan report different CUDA releases (h0: 12.8, h1: 13.0)" in output
    assert "one plan runs one image on all its nodes" in output
    assert saved == {}


def test_options_other_than_the_plans_are_refused(tmp_path):
    # glm_plan was rendered with port 9000, but the options the role is given do not say so: rendering again from
    # them would silently change the endpoint, so the role stops instead.
    plan = initial_plan("glm-5.1-fp8", "vllm", {"port": 9000})
    completed, saved = run_play(tmp_path, ["b200-driver580"], plan, glm_options={"served_name": "glm"})
    assert completed.returncode != 0
    output = flat(completed.stdout)
    assert "the plan differs from glm_plan in more than its image: served_model_name, port, env_file, argv." in output
    assert saved == {}
