"""The gpu_facts module run by Ansible itself, with nvidia-smi / amd-smi / systemctl / docker stand-ins.

The stand-ins print the reconstructed outputs in tests/fixtures/gpu (see its README); everything else
(argument handling, which tool is picked, error messages, the free-disk probe) is the real module run by
the real Ansible.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import FIXTURES, REPO

pytestmark = pytest.mark.playbook

ANSIBLE = Path(sys.executable).parent / "ansible"


def stand_in(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def nvidia_smi_stand_in(bin_dir: Path, machine: str) -> None:
    """An nvidia-smi that prints the fixtures of `machine` for the calls gpu_facts makes.

    Machines without health fixtures answer the health queries as a driver that knows none of their fields.
    Where `query-health-refused.txt` exists, a health query asking for reset_status.* gets it (exit 2).
    """
    folder = FIXTURES / machine
    stand_in(
        bin_dir,
        "nvidia-smi",
        f"""case "$1" in
  --query-gpu=index,name,*) cat "{folder}/query.csv" ;;
  --query-gpu=*reset_status*)
    if [ -f "{folder}/query-health-refused.txt" ]; then cat "{folder}/query-health-refused.txt"; exit 2; fi
    if [ -f "{folder}/query-health.csv" ]; then cat "{folder}/query-health.csv"; exit 0; fi
    echo 'Field "mig.mode.current" is not a valid field to query.'; exit 2 ;;
  --query-gpu=*)
    if [ -f "{folder}/query-health.csv" ]; then cat "{folder}/query-health.csv"; exit 0; fi
    echo 'Field "mig.mode.current" is not a valid field to query.'; exit 2 ;;
  --query-remapped-rows=*)
    if [ -f "{folder}/remapped-rows.csv" ]; then cat "{folder}/remapped-rows.csv"; exit 0; fi
    if [ -f "{folder}/remapped-rows-refused.txt" ]; then cat "{folder}/remapped-rows-refused.txt"; fi
    exit 2 ;;
  -q) cat "{folder}/nvidia-smi-q.txt" ;;
  nvlink) cat "{folder}/nvlink-s.txt" ;;
  "") cat "{folder}/nvidia-smi.txt" ;;
  *) echo "unexpected arguments: $*" >&2; exit 64 ;;
esac
""",
    )


def nvidia_stand_ins(bin_dir: Path, machine: str, docker: str = "docker-runtimes-nvidia.txt") -> None:
    folder = FIXTURES / machine
    nvidia_smi_stand_in(bin_dir, machine)
    stand_in(bin_dir, "systemctl", f'cat "{folder}/fabricmanager.txt"\n')
    stand_in(bin_dir, "docker", f'cat "{FIXTURES / "broken" / docker}"\n')


def run_module(bin_dir: Path, disk_path: Path, *args: str) -> dict:
    env = dict(
        os.environ,
        PATH=f"{bin_dir}:/usr/bin:/bin",
        ANSIBLE_COLLECTIONS_PATH=str(REPO / "collections"),
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_STDOUT_CALLBACK="json",
        ANSIBLE_HOME=str(bin_dir.parent / ".ansible"),
        ANSIBLE_LOCALHOST_WARNING="0",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
    )
    completed = subprocess.run(
        [
            str(ANSIBLE),
            "localhost",
            "-c",
            "local",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            "-m",
            "glm.deploy.gpu_facts",
            "-a",
            " ".join([f"disk_path={disk_path}", *args]),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = json.loads(completed.stdout)
    return output["plays"][0]["tasks"][0]["hosts"]["localhost"]


def test_b200_host_facts(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    nvidia_stand_ins(bin_dir, "b200-driver580")
    result = run_module(bin_dir, tmp_path / "glm-deploy" / "not-yet")
    assert result.get("failed") is not True, result.get("msg")
    assert result["changed"] is False
    gpu = result["gpu"]
    assert (gpu["vendor"], gpu["count"], gpu["names"]) == ("nvidia", 8, ["NVIDIA B200"])
    assert (gpu["driver_major"], gpu["cuda_version"], gpu["compute_capability"]) == (580, "13.0", "10.0")
    assert gpu["fabric_manager"]["active"] is True
    assert gpu["fabric_state"] == "completed"
    assert result["docker"]["nvidia_runtime"] is True
    # Free space is measured where the weights will go, or on its nearest existing parent.
    assert result["disk"]["checked_path"] == str(tmp_path)
    assert result["disk"]["free_bytes"] > 0


def test_weights_already_in_the_cache_are_counted(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    nvidia_stand_ins(bin_dir, "h200-sxm")
    model = tmp_path / "hf" / "hub" / "models--zai-org--GLM-5-FP8"
    (model / "blobs").mkdir(parents=True)
    (model / "snapshots" / "abc").mkdir(parents=True)
    (model / "blobs" / "1111").write_bytes(b"x" * 3000)
    (model / "blobs" / "2222.incomplete").write_bytes(b"y" * 500)
    # Snapshots hold symlinks into blobs/: counting them would count the weights twice.
    (model / "snapshots" / "abc" / "model.safetensors").symlink_to(model / "blobs" / "1111")
    result = run_module(bin_dir, tmp_path, f"weights_dir={model}")
    assert result["disk"]["weights_present_bytes"] == 3500


def test_mi300x_host_facts_from_amd_smi(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in(bin_dir, "amd-smi", f'cat "{FIXTURES / "mi300x" / "amd-smi-static.json"}"\n')
    result = run_module(bin_dir, tmp_path, "check_docker=false")
    assert result.get("failed") is not True, result.get("msg")
    assert (result["gpu"]["vendor"], result["gpu"]["count"], result["gpu"]["arch"]) == ("amd", 8, "gfx942")


def test_missing_tool_fails_clearly(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    result = run_module(bin_dir, tmp_path)
    assert result["failed"] is True
    assert result["msg"].startswith("no GPU tool found: looked for nvidia-smi, amd-smi or rocm-smi on PATH")
    assert "Install the GPU driver" in result["msg"]


def test_driver_not_loaded_quotes_nvidia_smi(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    message = FIXTURES / "broken" / "nvidia-smi-no-driver.txt"
    stand_in(bin_dir, "nvidia-smi", f'cat "{message}"\nexit 9\n')
    result = run_module(bin_dir, tmp_path)
    assert result["failed"] is True
    assert "exited with 9" in result["msg"]
    assert "couldn't communicate with the NVIDIA driver" in result["msg"]


@pytest.mark.parametrize("machine", ["b200-fabricmanager-down"])
def test_fabric_manager_down_is_reported_not_fatal(tmp_path, machine):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    nvidia_stand_ins(bin_dir, machine, docker="docker-runtimes-plain.txt")
    result = run_module(bin_dir, tmp_path)
    assert result.get("failed") is not True, result.get("msg")
    assert result["gpu"]["fabric_manager"]["active"] is False
    assert result["gpu"]["fabric_state"] == "In Progress"
    assert result["docker"]["nvidia_runtime"] is False
