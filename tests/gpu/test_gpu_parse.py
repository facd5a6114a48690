"""The GPU output parsers against reconstructed nvidia-smi / amd-smi / rocm-smi outputs.

Provenance of every fixture: tests/fixtures/gpu/README.md.
"""

from __future__ import annotations

import pytest
from ansible_collections.glm.deploy.plugins.module_utils import gpu_parse

from .conftest import read_fixture


def nvidia_facts(machine: str) -> dict:
    return gpu_parse.build_facts(
        "nvidia",
        gpu_parse.parse_nvidia_query(read_fixture(machine, "query.csv")),
        header=gpu_parse.parse_nvidia_smi_header(read_fixture(machine, "nvidia-smi.txt")),
        fabric=gpu_parse.parse_nvidia_smi_q_fabric(read_fixture(machine, "nvidia-smi-q.txt")),
        fabric_manager=gpu_parse.parse_systemctl_show(read_fixture(machine, "fabricmanager.txt")),
        nvlink=gpu_parse.parse_nvlink_status(read_fixture(machine, "nvlink-s.txt")),
    )


@pytest.mark.parametrize(
    ("machine", "name", "memory_mib", "driver", "major", "cuda", "capability"),
    [
        ("b200-driver570", "NVIDIA B200", 183359, "570.148.08", 570, "12.8", "10.0"),
        ("b200-driver580", "NVIDIA B200", 183359, "580.95.05", 580, "13.0", "10.0"),
        ("h100-sxm", "NVIDIA H100 80GB HBM3", 81559, "570.124.06", 570, "12.8", "9.0"),
        ("h200-sxm", "NVIDIA H200", 143771, "570.172.08", 570, "12.8", "9.0"),
    ],
)
def test_nvidia_hosts_read_as_eight_healthy_gpus(  # noqa: PLR0917 (pytest passes parameters positionally)
    machine, name, memory_mib, driver, major, cuda, capability
):
    facts = nvidia_facts(machine)
    assert facts["vendor"] == "nvidia"
    assert facts["count"] == 8
    assert facts["names"] == [name]
    assert facts["memory_mib"] == memory_mib
    assert facts["driver_version"] == driver
    assert facts["driver_major"] == major
    assert facts["cuda_version"] == cuda
    assert facts["compute_capability"] == capability
    assert [gpu["index"] for gpu in facts["gpus"]] == list(range(8))
    assert facts["gpus"][0]["pci_bus_id"] == "00000000:18:00.0"
    assert facts["fabric_manager"] == {
        "present": True,
        "active": True,
        "state": "active/running",
        "load_state": "loaded",
    }
    assert facts["fabric_state"] == "completed"
    assert facts["fabric_healthy"] is True
    assert facts["nvlink"]["links_total"] == 8 * 18
    assert facts["nvlink"]["links_inactive"] == 0


def test_fabric_manager_down_shows_in_the_facts():
    facts = nvidia_facts("b200-fabricmanager-down")
    assert facts["fabric_manager"]["present"] is True
    assert facts["fabric_manager"]["active"] is False
    assert facts["fabric_manager"]["state"] == "failed/failed"
    assert facts["fabric_state"] == "In Progress"
    assert facts["fabric_healthy"] is False
    assert len(facts["fabric_unhealthy_gpus"]) == 8
    assert facts["nvlink"]["links_active"] == 0
    assert facts["nvlink"]["gpus_with_inactive_links"] == list(range(8))


def test_fabric_nested_health_status_is_not_taken_for_the_fabric_status():
    text = (
        "GPU 00000000:18:00.0\n"
        "    Fabric\n"
        "        State                             : Completed\n"
        "        Health\n"
        "            Status                        : Degraded\n"
        "        Status                            : Success\n"
    )
    assert gpu_parse.parse_nvidia_smi_q_fabric(text) == [
        {"pci_bus_id": "00000000:18:00.0", "state": "Completed", "status": "Success"}
    ]


def test_pcie_gpus_without_fabric_report_not_applicable():
    text = (
        "GPU 00000000:01:00.0\n    Product Name : NVIDIA H100 PCIe\n"
        "    Fabric\n        State : N/A\n        Status : N/A\n"
    )
    summary = gpu_parse.summarise_fabric(gpu_parse.parse_nvidia_smi_q_fabric(text))
    assert summary == {"state": "n/a", "healthy": None, "unhealthy_gpus": []}


def test_fabric_manager_unit_missing():
    status = gpu_parse.parse_systemctl_show("LoadState=not-found\nActiveState=inactive\nSubState=dead\n")
    assert status["present"] is False
    assert status["active"] is False


def test_mi300x_from_amd_smi():
    facts = gpu_parse.build_facts(
        "amd", gpu_parse.parse_amd_smi_static(read_fixture("mi300x", "amd-smi-static.json"))
    )
    assert facts["count"] == 8
    assert facts["names"] == ["AMD Instinct MI300X"]
    assert facts["memory_mib"] == 196592
    assert facts["arch"] == "gfx942"
    assert facts["driver_version"] == "6.10.5"
    assert facts["cuda_version"] is None


def test_amd_smi_newer_gpu_data_wrapper_and_string_sizes():
    text = (
        '{"gpu_data": [{"gpu": 0, "asic": {"market_name": "AMD Instinct MI300X"}, '
        '"vram": {"size": "192 GB"}}]}'
    )
    gpus = gpu_parse.parse_amd_smi_static(text)
    assert gpus[0]["memory_mib"] == 192 * 1024


def test_mi300x_from_rocm_smi():
    gpus = gpu_parse.parse_rocm_smi(read_fixture("mi300x", "rocm-smi.json"))
    assert len(gpus) == 8
    assert gpus[0]["name"] == "AMD Instinct MI300X OAM"
    assert gpus[0]["memory_mib"] == 196592
    assert gpus[7]["arch"] == "gfx942"


def test_docker_runtimes():
    with_nvidia = gpu_parse.parse_docker_runtimes(read_fixture("broken", "docker-runtimes-nvidia.txt"))
    assert "nvidia" in with_nvidia["runtimes"]
    assert with_nvidia["default_runtime"] == "runc"
    plain = gpu_parse.parse_docker_runtimes(read_fixture("broken", "docker-runtimes-plain.txt"))
    assert "nvidia" not in plain["runtimes"]


@pytest.mark.parametrize(
    ("parser", "fixture", "expected_words"),
    [
        (
            gpu_parse.parse_nvidia_smi_header,
            ("broken", "nvidia-smi-no-driver.txt"),
            ["Driver Version", "NVIDIA driver"],
        ),
        (
            gpu_parse.parse_nvidia_query,
            ("broken", "query-old-driver.txt"),
            ["6 comma-separated", "compute_cap"],
        ),
        (gpu_parse.parse_nvidia_query, ("broken", "query-gpu-lost.csv"), ["memory.total", "[Unknown Error]"]),
        (gpu_parse.parse_amd_smi_static, ("broken", "amd-smi-truncated.json"), ["not JSON", "market_name"]),
        (gpu_parse.parse_nvidia_query, ("broken", "docker-runtimes-plain.txt"), ["comma-separated"]),
        (gpu_parse.parse_nvlink_status, ("broken", "nvidia-smi-no-driver.txt"), ["unexpected line"]),
        (gpu_parse.parse_rocm_smi, ("b200-driver570", "nvidia-smi.txt"), ["not JSON", "NVIDIA-SMI"]),
    ],
)
def test_unexpected_output_fails_quoting_what_the_tool_printed(parser, fixture, expected_words):
    with pytest.raises(gpu_parse.GpuParseError) as caught:
        parser(read_fixture(*fixture))
    message = str(caught.value)
    assert message.startswith("could not read the output of `")
    for word in expected_words:
        assert word in message


def test_empty_query_output_says_no_gpu():
    with pytest.raises(gpu_parse.GpuParseError, match="no GPU lines"):
        gpu_parse.parse_nvidia_query("\n")


def test_mixed_driver_versions_are_refused():
    text = (
        "0, NVIDIA B200, 183359, 570.148.08, 10.0, 00000000:18:00.0\n"
        "1, NVIDIA B200, 183359, 580.95.05, 10.0, 00000000:2A:00.0\n"
    )
    with pytest.raises(gpu_parse.GpuParseError, match=r"different driver versions 570\.148\.08, 580\.95\.05"):
        gpu_parse.parse_nvidia_query(text)


def test_snippet_is_bounded():
    assert len(gpu_parse.snippet("x" * 10_000)) < 300
