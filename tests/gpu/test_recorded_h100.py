"""Outputs recorded on a real GPU machine: one NVIDIA H100 80GB HBM3 (PCIe-attached in a Firecracker VM, no
NVLink, no Fabric Manager, no systemd), driver 580.159.04, CUDA 13.0. Recorded 2026-11-22 with the commands in
tests/fixtures/gpu/README.md; `gpu_facts-result.json` is what the real gpu_facts module returned there.

The reconstructed fixtures stand for 8-GPU HGX hosts; these test the parsers and the module against what
nvidia-smi really prints (the full `-q` report, an empty `nvlink -s`), and the preflight against a host that is
too small for any GLM-5 plan.
"""

from __future__ import annotations

import json

import pytest
from ansible_collections.glm.deploy.plugins.module_utils import gpu_parse

from glm_deploy.catalog import load_catalog
from glm_deploy.preflight import gpu_preflight
from glm_deploy.render import PlanOptions, render_plan

from .conftest import FIXTURES, read_fixture
from .test_gpu_facts_module import nvidia_smi_stand_in, run_module, stand_in

MACHINE = "h100-x1-recorded"
RECORDED = json.loads((FIXTURES / MACHINE / "gpu_facts-result.json").read_text())


def parsed_gpu() -> dict:
    nvlink_text = read_fixture(MACHINE, "nvlink-s.txt")
    assert nvlink_text == ""  # what a PCIe H100 prints; gpu_facts reads it as "no NVLink" without parsing
    return gpu_parse.build_facts(
        "nvidia",
        gpu_parse.parse_nvidia_query(read_fixture(MACHINE, "query.csv")),
        header=gpu_parse.parse_nvidia_smi_header(read_fixture(MACHINE, "nvidia-smi.txt")),
        fabric=gpu_parse.parse_nvidia_smi_q_fabric(read_fixture(MACHINE, "nvidia-smi-q.txt")),
        fabric_manager={"present": False, "active": False, "state": "systemctl not found"},
        nvlink=None,
    )


def test_parsers_read_the_recorded_outputs_as_the_real_module_did():
    gpu = parsed_gpu()
    assert gpu == RECORDED["gpu"]
    assert (gpu["count"], gpu["names"], gpu["memory_mib"]) == (1, ["NVIDIA H100 80GB HBM3"], 81559)
    assert (gpu["driver_version"], gpu["driver_major"], gpu["cuda_version"]) == ("580.159.04", 580, "13.0")
    assert gpu["compute_capability"] == "9.0"
    # A PCIe GPU: the full -q report's Fabric section says N/A, and nvlink -s prints nothing at all.
    assert (gpu["fabric_state"], gpu["fabric_healthy"], gpu["nvlink"]) == ("n/a", None, None)


def test_full_q_report_holds_sections_the_reconstructions_left_out():
    # The parser must skip what it does not read: the recording has every section nvidia-smi prints.
    text = read_fixture(MACHINE, "nvidia-smi-q.txt")
    for section in ("Inforom Version", "Clocks Event Reasons", "Temperature", "Processes"):
        assert section in text
    fabric = gpu_parse.parse_nvidia_smi_q_fabric(text)
    assert len(fabric) == 1
    assert gpu_parse.summarise_fabric(fabric) == {"state": "n/a", "healthy": None, "unhealthy_gpus": []}


@pytest.mark.playbook


def test_module_with_the_recorded_outputs_returns_the_recorded_gpu_facts(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    nvidia_smi_stand_in(bin_dir, MACHINE)
    # The recording machine had no systemd; this one may: make systemctl say the unit does not exist.
    stand_in(bin_dir, "systemctl", "echo LoadState=not-found; echo ActiveState=inactive; echo SubState=dead\n")
    result = run_module(bin_dir, tmp_path / "glm-deploy", "check_docker=false")
    assert result.get("failed") is not True, result.get("msg")
    gpu = dict(result["gpu"])
    expected = dict(RECORDED["gpu"])
    assert gpu.pop("fabric_manager")["present"] is False
    expected.pop("fabric_manager")
    assert gpu == expected


def test_preflight_refuses_every_glm5_plan_on_one_h100_and_says_how_many_are_needed():
    catalog = load_catalog()
    facts = {
        "gpu": parsed_gpu(),
        "docker": {"present": True, "runtimes": ["nvidia", "runc"], "default_runtime": "runc", "nvidia_runtime": True},
        "devices": {"kfd": False, "dri": False},
        "disk": {"path": "/var/lib/glm-deploy", "checked_path": "/var/lib", "free_bytes": 4 * 1024**4},
    }
    plan = render_plan(
        catalog, model="glm-5-fp8", engine="sglang", hardware="h100", options=PlanOptions(cuda_version="13.0")
    ).to_dict()
    result = gpu_preflight(catalog, facts, plan)
    counts = [finding for finding in result.blocking if finding.check == "gpu_count"]
    assert counts, [finding.check for finding in result.blocking]
    assert "1" in counts[0].problem and str(plan["gpus_per_node"]) in counts[0].problem
