"""The engine_image role under ansible-playbook, against the docker stand-in tests/equipment/fake_docker.py.

What a user checks: the base image is pulled once and pinned by digest; a derived image is built only when
the base falls short (here: DeepGEMM's CPATH unset), under a tag that is the hash of its inputs; a second run
changes nothing; a changed input builds a new image; an image without DeepGEMM's tools stops the play before
any build.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tests.equipment.playbook import run_playbook

from glm_deploy.catalog import load_catalog
from glm_deploy.render import PlanOptions, render_plan

from .conftest import REPO

pytestmark = pytest.mark.playbook

FAKE_DOCKER = REPO / "tests" / "equipment" / "fake_docker.py"
BASE = "vllm/vllm-openai:v0.19.1"
BASE_DIGEST = "sha256:" + "a" * 64

PLAYBOOK = """\
- name: Prepare the engine image
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    glm_plan: "{{ lookup('file', plan_file) | from_json }}"
    glm_gpu_needs: {deepgemm: true, model_type: glm_moe_dsa}
    glm_image_choice: {image: "BASE_IMAGE"}
  roles:
    - role: glm.deploy.engine_image
  post_tasks:
    - name: Save the image the server will run
      ansible.builtin.copy:
        content: "{{ glm_engine_image }}"
        dest: "{{ out_file }}"
        mode: "0644"
""".replace("BASE_IMAGE", BASE)


def fake_cuda(root: Path, *, with_cuobjdump: bool = True) -> Path:
    home = root / "cuda"
    (home / "bin").mkdir(parents=True)
    (home / "include" / "cutlass").mkdir(parents=True)
    (home / "include" / "cuda_runtime.h").write_text("/* stand-in */\n")
    (home / "include" / "cutlass" / "version.h").write_text(
        "#define CUTLASS_MAJOR 4\n#define CUTLASS_MINOR 2\n"
    )
    for tool in ["nvcc", "cuobjdump"] if with_cuobjdump else ["nvcc"]:
        (home / "bin" / tool).write_text("#!/bin/sh\nexit 0\n")
        (home / "bin" / tool).chmod(0o755)
    return home


def setup(tmp_path: Path, *, with_cuobjdump: bool = True) -> dict[str, str]:
    state = tmp_path / "docker-state"
    state.mkdir()
    home = fake_cuda(tmp_path, with_cuobjdump=with_cuobjdump)
    # The base image ships CUDA but does not set CPATH, so DeepGEMM's JIT would not find the headers.
    registry = {
        BASE: {"digest": BASE_DIGEST, "env": {"PATH": f"{home}/bin:/usr/bin:/bin", "CUDA_HOME": str(home)}}
    }
    (state / "registry.json").write_text(json.dumps(registry))
    docker = tmp_path / "docker"
    docker.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_DOCKER}" "$@"\n')
    docker.chmod(0o755)
    plan = render_plan(
        load_catalog(),
        model="glm-5.1-fp8",
        engine="vllm",
        hardware="b200",
        options=PlanOptions(cuda_version="12.8"),
    ).to_dict()
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    return {"state": str(state), "docker": str(docker)}


def converge(tmp_path: Path, paths: dict[str, str], **extra: object) -> subprocess.CompletedProcess[str]:
    variables = {
        "plan_file": str(tmp_path / "plan.json"),
        "out_file": str(tmp_path / "image.txt"),
        "ansible_python_interpreter": sys.executable,
        "engine_image_docker": paths["docker"],
        "engine_image_build_dir": str(tmp_path / "images"),
        "engine_image_record": str(tmp_path / "releases" / "engine-image.json"),
        # Importing transformers costs 5-15 s of CPU per check here; test_engine_image.py covers that half of
        # the in-image check, this test the role's decisions (DeepGEMM's environment drives the build).
        "engine_image_architecture": "",
        "engine_image_model_type": "",
        "engine_image_transformers_minimum": "",
        **extra,
    }
    return run_playbook(
        tmp_path / "play.yml", home=tmp_path, variables=variables, env={"FAKE_DOCKER_STATE": paths["state"]}
    )


def changed_count(output: str) -> int:
    return int(re.search(r"localhost\s+:.*changed=(\d+)", output).group(1))


def calls(paths: dict[str, str]) -> list[str]:
    return (Path(paths["state"]) / "calls.log").read_text().splitlines()


def test_build_once_then_nothing_then_rebuild_on_a_changed_input(tmp_path):
    paths = setup(tmp_path)
    first = converge(tmp_path, paths)
    assert first.returncode == 0, first.stdout[-3000:]
    assert calls(paths).count("pull vllm/vllm-openai:v0.19.1") == 1
    assert calls(paths).count("build --file") == 1
    image = (tmp_path / "image.txt").read_text()
    assert re.fullmatch(r"localhost/glm-deploy/vllm:[0-9a-f]{16}", image)
    record = json.loads((tmp_path / "releases" / "engine-image.json").read_text())
    assert record["base_ref"] == f"vllm/vllm-openai@{BASE_DIGEST}"
    assert record["image"] == image and record["derived"] is True
    assert record["image_id"].startswith("sha256:")
    containerfile = (tmp_path / "images" / image.rsplit(":", 1)[1] / "Containerfile").read_text()
    assert f"FROM vllm/vllm-openai@{BASE_DIGEST}" in containerfile
    assert f'org.glm-deploy.inputs="{record["inputs"]}"' in containerfile

    second = converge(tmp_path, paths)
    assert second.returncode == 0, second.stdout[-3000:]
    assert changed_count(second.stdout) == 0
    assert calls(paths).count("pull vllm/vllm-openai:v0.19.1") == 1
    assert calls(paths).count("build --file") == 1

    third = converge(tmp_path, paths, engine_image_pip_requirements=["transformers>=5.4.0"])
    assert third.returncode == 0, third.stdout[-3000:]
    assert calls(paths).count("build --file") == 2
    assert (tmp_path / "image.txt").read_text() != image
    assert (
        "'transformers>=5.4.0'"
        in Path(
            tmp_path / "images" / (tmp_path / "image.txt").read_text().rsplit(":", 1)[1] / "Containerfile"
        ).read_text()
    )


def test_image_without_deepgemm_tools_stops_before_building(tmp_path):
    paths = setup(tmp_path, with_cuobjdump=False)
    result = converge(tmp_path, paths)
    assert result.returncode != 0
    assert "cannot run DeepGEMM's JIT: cuobjdump is not in the image" in result.stdout
    assert "build --file" not in calls(paths)
