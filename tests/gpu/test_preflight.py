"""GPU-host preflight: every failure a user can meet on a real node, from reconstructed tool outputs."""

from __future__ import annotations

import copy

import pytest
from ansible_collections.glm.deploy.plugins.module_utils import gpu_parse

from glm_deploy.catalog import load_catalog
from glm_deploy.preflight import GIB, gpu_preflight
from glm_deploy.render import PlanOptions, render_plan

from .conftest import read_fixture
from .test_gpu_health import nvidia_health

CATALOG = load_catalog()
TIB = 1024 * GIB


def host_facts(
    machine: str, *, docker: str = "docker-runtimes-nvidia.txt", free_bytes: int = 4 * TIB
) -> dict:
    """What glm.deploy.gpu_facts returns on `machine` (built with the module's own parsers)."""
    if machine == "mi300x":
        gpu = gpu_parse.build_facts(
            "amd", gpu_parse.parse_amd_smi_static(read_fixture(machine, "amd-smi-static.json"))
        )
        gpu["fabric_state"] = "n/a"
    else:
        gpu = gpu_parse.build_facts(
            "nvidia",
            gpu_parse.parse_nvidia_query(read_fixture(machine, "query.csv")),
            header=gpu_parse.parse_nvidia_smi_header(read_fixture(machine, "nvidia-smi.txt")),
            fabric=gpu_parse.parse_nvidia_smi_q_fabric(read_fixture(machine, "nvidia-smi-q.txt")),
            fabric_manager=gpu_parse.parse_systemctl_show(read_fixture(machine, "fabricmanager.txt")),
            nvlink=gpu_parse.parse_nvlink_status(read_fixture(machine, "nvlink-s.txt")),
        )
    runtimes = gpu_parse.parse_docker_runtimes(read_fixture("broken", docker))
    runtimes.update(present=True, error=None, nvidia_runtime="nvidia" in runtimes["runtimes"])
    return {
        "gpu": gpu,
        "health": None if machine == "mi300x" else nvidia_health(machine),
        "docker": runtimes,
        "devices": {"kfd": machine == "mi300x", "dri": machine == "mi300x"},
        "disk": {"path": "/var/lib/glm-deploy", "checked_path": "/var/lib", "free_bytes": free_bytes},
    }


def plan(model: str, engine: str, hardware: str, cuda: str | None = None) -> dict:
    options = PlanOptions(cuda_version=cuda) if cuda else PlanOptions()
    return render_plan(CATALOG, model=model, engine=engine, hardware=hardware, options=options).to_dict()


def checks(result) -> list[str]:
    return [finding.check for finding in result.blocking]


@pytest.mark.parametrize(
    ("machine", "model", "engine", "hardware", "cuda"),
    [
        ("b200-driver570", "glm-5.1-fp8", "sglang", "b200", "12.8"),
        ("b200-driver580", "glm-5.1-fp8", "vllm", "b200", "13.0"),
        ("h200-sxm", "glm-5-fp8", "vllm", "h200", "12.8"),
        ("h100-sxm", "glm-5-fp8", "sglang", "h100", "12.8"),
        ("b200-driver570", "glm-5-nvfp4", "sglang", "b200", "12.8"),
        ("mi300x", "glm-5.1-fp8", "sglang", "mi300x", None),
    ],
)
def test_healthy_hosts_pass(machine, model, engine, hardware, cuda):
    result = gpu_preflight(CATALOG, host_facts(machine), plan(model, engine, hardware, cuda))
    assert result.blocking == ()
    assert result.image is not None


def test_wrong_gpu_names_what_the_host_has_and_which_profile_fits():
    result = gpu_preflight(CATALOG, host_facts("h100-sxm"), plan("glm-5.1-fp8", "vllm", "b200"))
    finding = next(f for f in result.blocking if f.check == "gpu_model")
    assert "NVIDIA H100 80GB HBM3 is not 8x NVIDIA B200" in finding.problem
    assert "deploy with hardware h100" in finding.fix


def test_amd_host_for_an_nvidia_plan_is_refused():
    result = gpu_preflight(CATALOG, host_facts("mi300x"), plan("glm-5.1-fp8", "sglang", "b200"))
    assert checks(result)[0] == "gpu_vendor"
    assert "deploy with hardware mi300x" in result.blocking[0].fix


def test_too_few_gpus():
    facts = host_facts("h200-sxm")
    facts["gpu"]["gpus"] = facts["gpu"]["gpus"][:4]
    facts["gpu"]["count"] = 4
    result = gpu_preflight(CATALOG, facts, plan("glm-5-fp8", "vllm", "h200", "12.8"))
    finding = next(f for f in result.blocking if f.check == "gpu_count")
    assert finding.problem == "this host has 4 GPU(s); the plan needs 8 per node on 1 node(s)"


def test_too_little_gpu_memory_for_glm5_fp8_on_one_h100_node():
    # The renderer itself refuses GLM-5-FP8 on one H100 node; a plan cut down to its head node stands for a
    # user who forced it (or a catalog entry that got the GPU count wrong): preflight catches it on the host.
    forced = copy.deepcopy(plan("glm-5-fp8", "vllm", "h100", "12.8"))
    forced["node_count"] = 1
    forced["nodes"] = forced["nodes"][:1]
    result = gpu_preflight(CATALOG, host_facts("h100-sxm"), forced)
    finding = next(f for f in result.blocking if f.check == "gpu_memory")
    assert "each GPU needs 82.1 GiB of weights (656.6 GiB over 8 GPUs)" in finding.problem
    assert "79.6 GiB GPUs leave 71.7 GiB" in finding.problem
    assert "nodes: 2" in finding.fix


def test_two_h100_nodes_fit_glm5_fp8():
    result = gpu_preflight(CATALOG, host_facts("h100-sxm"), plan("glm-5-fp8", "vllm", "h100", "12.8"))
    assert "gpu_memory" not in checks(result)


def test_too_little_disk():
    facts = host_facts("b200-driver570", free_bytes=500 * GIB)
    result = gpu_preflight(CATALOG, facts, plan("glm-5.1-fp8", "vllm", "b200", "12.8"))
    finding = next(f for f in result.blocking if f.check == "disk")
    assert "/var/lib has 500.0 GiB free" in finding.problem
    assert "656.6 GiB more" in finding.problem
    assert "free 220.6 GiB there" in finding.fix


def test_weights_already_downloaded_count_towards_the_disk_check():
    facts = host_facts("b200-driver570", free_bytes=100 * GIB)
    facts["disk"]["weights_present_bytes"] = 705_000_000_000
    result = gpu_preflight(CATALOG, facts, plan("glm-5.1-fp8", "vllm", "b200", "12.8"))
    assert "disk" not in checks(result)


def test_old_driver_for_the_image():
    # A plan rendered for a CUDA 13 host lands on a 570 driver.
    result = gpu_preflight(CATALOG, host_facts("b200-driver570"), plan("glm-5.1-fp8", "vllm", "b200", "13.0"))
    finding = next(f for f in result.blocking if f.check == "image")
    assert "vllm/vllm-openai:v0.19.1-cu130" in finding.problem
    assert "nvidia-container-cli: requirement error: unsatisfied condition: cuda>=13.0" in finding.problem
    assert "gpu_host_driver_branch: '580'" in finding.fix


def test_old_driver_is_not_blocking_when_the_gpu_host_role_installs_a_branch():
    facts, cuda13_plan = host_facts("b200-driver570"), plan("glm-5.1-fp8", "vllm", "b200", "13.0")
    # The gpu_host role alone (no driver branch asked for) does not touch the driver.
    assert "image" in checks(gpu_preflight(CATALOG, facts, cuda13_plan, fixers=["gpu_host"]))
    result = gpu_preflight(CATALOG, facts, cuda13_plan, fixers=["gpu_host", "gpu_host_driver"])
    assert "image" not in checks(result)
    assert any(f.check == "image" and f.fixable_by == "gpu_host_driver" for f in result.findings)


def test_explicit_cuda13_image_on_570_is_refused():
    result = gpu_preflight(
        CATALOG,
        host_facts("b200-driver570"),
        plan("glm-5.1-fp8", "sglang", "b200", "12.8"),
        explicit_image="lmsysorg/sglang:v0.5.10-cu130",
    )
    assert "CUDA 13.0 needs driver >= 580" in result.blocking[0].problem


def test_plan_missing_the_minor_compat_override_is_caught():
    # Rendered as if the host had CUDA 12.9: no NVIDIA_DISABLE_REQUIRE, but the host's driver is 570 (12.8).
    result = gpu_preflight(CATALOG, host_facts("b200-driver570"), plan("glm-5.1-fp8", "vllm", "b200", "12.9"))
    finding = next(f for f in result.blocking if f.check == "image")
    assert "lacks NVIDIA_DISABLE_REQUIRE=1" in finding.problem
    assert "cuda_version=12.8" in finding.fix


def test_580_host_with_a_plan_for_570_warns_about_the_better_image():
    result = gpu_preflight(CATALOG, host_facts("b200-driver580"), plan("glm-5.1-fp8", "vllm", "b200", "12.8"))
    assert result.blocking == ()
    assert any("v0.19.1-cu130" in str(f) and f.severity == "warning" for f in result.findings)


def test_fabric_manager_down():
    result = gpu_preflight(
        CATALOG, host_facts("b200-fabricmanager-down"), plan("glm-5.1-fp8", "sglang", "b200", "12.8")
    )
    assert checks(result) == ["fabric_manager", "fabric", "nvlink"]
    manager, fabric, _ = result.blocking
    assert "failed/failed" in manager.problem
    assert "error 802" in manager.problem
    assert "journalctl -u nvidia-fabricmanager" in manager.fix
    assert "'In Progress'" in fabric.problem


def test_fabric_manager_not_installed_is_left_to_the_gpu_host_role_when_it_runs():
    facts = host_facts("b200-driver570")
    facts["gpu"]["fabric_manager"] = gpu_parse.parse_systemctl_show(
        "LoadState=not-found\nActiveState=inactive\nSubState=dead\n"
    )
    alone = gpu_preflight(CATALOG, facts, plan("glm-5.1-fp8", "sglang", "b200", "12.8"))
    assert checks(alone) == ["fabric_manager"]
    assert "nvidia-fabricmanager-570 at exactly the driver's version 570.148.08" in alone.blocking[0].fix
    host_only = gpu_preflight(
        CATALOG, facts, plan("glm-5.1-fp8", "sglang", "b200", "12.8"), fixers=["gpu_host"]
    )
    assert checks(host_only) == ["fabric_manager"]
    with_driver = gpu_preflight(
        CATALOG, facts, plan("glm-5.1-fp8", "sglang", "b200", "12.8"), fixers=["gpu_host", "gpu_host_driver"]
    )
    assert with_driver.blocking == ()


def test_no_nvidia_runtime_in_docker():
    facts = host_facts("h200-sxm", docker="docker-runtimes-plain.txt")
    result = gpu_preflight(CATALOG, facts, plan("glm-5-fp8", "vllm", "h200", "12.8"))
    finding = next(f for f in result.blocking if f.check == "container_runtime")
    assert "runtimes: io.containerd.runc.v2, runc" in finding.problem
    assert "nvidia-ctk runtime configure --runtime=docker" in finding.fix
    fixed_later = gpu_preflight(
        CATALOG, facts, plan("glm-5-fp8", "vllm", "h200", "12.8"), fixers=["gpu_host"]
    )
    assert fixed_later.blocking == ()


def test_no_docker_at_all():
    facts = host_facts("h200-sxm")
    facts["docker"] = {
        "present": False,
        "runtimes": [],
        "nvidia_runtime": False,
        "error": "docker is not on PATH",
    }
    result = gpu_preflight(CATALOG, facts, plan("glm-5-fp8", "vllm", "h200", "12.8"), fixers=["gpu_host"])
    assert checks(result) == ["docker"]


def test_amd_without_kfd():
    facts = host_facts("mi300x")
    facts["devices"] = {"kfd": False, "dri": True}
    result = gpu_preflight(CATALOG, facts, plan("glm-5.1-fp8", "sglang", "mi300x"))
    assert checks(result) == ["amd_devices"]
    assert result.blocking[0].problem.startswith("/dev/kfd missing")


def test_needs_tell_the_later_roles_what_to_prepare():
    needs = gpu_preflight(
        CATALOG, host_facts("b200-driver570"), plan("glm-5.1-fp8", "sglang", "b200", "12.8")
    ).needs
    assert needs["fabric_manager"] is True
    assert needs["deepgemm"] is True
    assert (needs["model_type"], needs["architecture"]) == ("glm_moe_dsa", "GlmMoeDsaForCausalLM")
    nvfp4 = gpu_preflight(
        CATALOG, host_facts("b200-driver570"), plan("glm-5-nvfp4", "sglang", "b200", "12.8")
    )
    assert nvfp4.needs["deepgemm"] is False
    amd = gpu_preflight(CATALOG, host_facts("mi300x"), plan("glm-5.1-fp8", "sglang", "mi300x")).needs
    assert (amd["vendor"], amd["fabric_manager"], amd["deepgemm"]) == ("amd", False, False)


def test_result_serialises_for_ansible():
    result = gpu_preflight(
        CATALOG, host_facts("b200-fabricmanager-down"), plan("glm-5.1-fp8", "sglang", "b200", "12.8")
    )
    data = result.to_dict()
    assert data["image"]["image"] == "lmsysorg/sglang:v0.5.10-cu12"
    assert data["blocking"][0].startswith("[fabric_manager] nvidia-fabricmanager.service is failed/failed")
    assert len(data["blocking"]) == 3
    # The reconstructed B200 outputs hold no health queries: what stayed unread is one warning.
    assert [finding["check"] for finding in data["findings"] if not finding["blocking"]] == ["gpu_health"]
