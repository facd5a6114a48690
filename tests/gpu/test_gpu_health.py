"""GPU health: hosts whose GPUs are all listed but cannot run a whole-GPU plan (issue 14, defect 1).

MIG mode on or pending, a GPU that needs a reset, failed or pending memory repairs, GPUs that answer with
errors (ERR! in the table, "[GPU requires reset]" / "[Unknown Error]" in the queries), and an older nvidia-smi
that does not know some health fields. Fixtures: tests/fixtures/gpu/README.md (h100-sick, h100-old-driver;
the -q report recorded on a real H100).
"""

from __future__ import annotations

import pytest
from ansible_collections.glm.deploy.plugins.module_utils import gpu_health, gpu_parse

from glm_deploy.catalog import load_catalog
from glm_deploy.preflight import gpu_preflight
from glm_deploy.render import PlanOptions, render_plan

from .conftest import FIXTURES, read_fixture
from .test_gpu_facts_module import nvidia_stand_ins, run_module

CATALOG = load_catalog()


def nvidia_health(machine: str) -> dict:
    """What gpu_facts returns as `health` on `machine`, built with the module's own parsers."""
    folder = FIXTURES / machine
    gpus, failed = gpu_parse.parse_nvidia_query_with_failures(read_fixture(machine, "query.csv"))
    query = remapped = None
    if (folder / "query-health.csv").exists() and not (folder / "query-health-refused.txt").exists():
        query = gpu_health.parse_nvidia_health_query(read_fixture(machine, "query-health.csv"))
    if (folder / "remapped-rows.csv").exists():
        remapped = gpu_health.parse_nvidia_remapped_rows(read_fixture(machine, "remapped-rows.csv"))
    return gpu_health.build_health(
        gpus,
        failed,
        query=query,
        remapped=remapped,
        q_values=gpu_health.parse_nvidia_smi_q_values(read_fixture(machine, "nvidia-smi-q.txt")),
        table_errors=gpu_health.parse_nvidia_smi_table_errors(read_fixture(machine, "nvidia-smi.txt")),
    )


def host_facts(machine: str, health: dict | None) -> dict:
    gpus, _failed = gpu_parse.parse_nvidia_query_with_failures(read_fixture(machine, "query.csv"))
    gpu = gpu_parse.build_facts(
        "nvidia",
        gpus,
        header=gpu_parse.parse_nvidia_smi_header(read_fixture(machine, "nvidia-smi.txt")),
        fabric=gpu_parse.parse_nvidia_smi_q_fabric(read_fixture(machine, "nvidia-smi-q.txt")),
        fabric_manager=gpu_parse.parse_systemctl_show(read_fixture(machine, "fabricmanager.txt")),
        nvlink=gpu_parse.parse_nvlink_status(read_fixture(machine, "nvlink-s.txt")),
    )
    return {
        "gpu": gpu,
        "health": health,
        "docker": {"present": True, "runtimes": ["nvidia", "runc"], "default_runtime": "runc", "nvidia_runtime": True},
        "devices": {"kfd": False, "dri": False},
        "disk": {"path": "/var/lib/glm-deploy", "checked_path": "/var/lib", "free_bytes": 4 * 1024**4},
    }


def preflight(machine: str, health: dict | None = None):
    plan = render_plan(
        CATALOG, model="glm-5-fp8", engine="sglang", hardware="h100", options=PlanOptions(cuda_version="12.8")
    ).to_dict()
    facts = host_facts(machine, nvidia_health(machine) if health is None else health)
    return gpu_preflight(CATALOG, facts, plan)


def blocking_about(result, check: str) -> dict[int, str]:
    """{GPU index: the finding's text} for the blocking findings of one check."""
    found = {}
    for finding in result.blocking:
        if finding.check == check:
            index = int(finding.problem.split(":")[0].removeprefix("GPU "))
            found[index] = str(finding)
    return found


# ---- MIG mode ------------------------------------------------------------------------------------------------


def test_mig_enabled_or_pending_refuses_each_gpu_with_the_command_that_turns_it_off():
    mig = blocking_about(preflight("h100-sick"), "gpu_mig")
    assert sorted(mig) == [3, 5, 6]
    assert "MIG mode is Enabled (pending Enabled)" in mig[3]
    assert "sudo nvidia-smi -i 3 -mig 0" in mig[3] and "sudo nvidia-smi -i 3 -r" in mig[3]
    # Pending Enabled: fine today, MIG slices after the next reset or reboot.
    assert "Enabled is pending" in mig[5] and "sudo nvidia-smi -i 5 -mig 0" in mig[5]
    # Already set to turn off: only the reset is missing.
    assert "pending Disabled" in mig[6] and "already set to turn off" in mig[6]
    assert "sudo nvidia-smi -i 6 -r" in mig[6]


@pytest.mark.parametrize(
    ("current", "pending"), [("Enabled", "Enabled"), ("Enabled", "Disabled"), ("Disabled", "Enabled")]
)
def test_mig_is_read_from_the_q_report_when_the_query_cannot_give_it(current, pending):
    # The recorded H100 report, with MIG switched: the -q layout is the real one.
    text = read_fixture("h100-x1-recorded", "nvidia-smi-q.txt").replace(
        "        Current                                        : Disabled\n"
        "        Pending                                        : Disabled\n",
        f"        Current                                        : {current}\n"
        f"        Pending                                        : {pending}\n",
        1,
    )
    gpus = gpu_parse.parse_nvidia_query(read_fixture("h100-x1-recorded", "query.csv"))
    health = gpu_health.build_health(gpus, q_values=gpu_health.parse_nvidia_smi_q_values(text))
    assert (health["gpus"][0]["mig_current"], health["gpus"][0]["mig_pending"]) == (current, pending)
    findings = [finding for finding in preflight("h100-sxm", health).blocking if finding.check == "gpu_mig"]
    assert [finding.problem.split(":")[0] for finding in findings] == ["GPU 0"]


def test_recorded_h100_reads_as_healthy():
    gpus = gpu_parse.parse_nvidia_query(read_fixture("h100-x1-recorded", "query.csv"))
    health = gpu_health.build_health(
        gpus,
        q_values=gpu_health.parse_nvidia_smi_q_values(read_fixture("h100-x1-recorded", "nvidia-smi-q.txt")),
        table_errors=gpu_health.parse_nvidia_smi_table_errors(read_fixture("h100-x1-recorded", "nvidia-smi.txt")),
    )
    entry = health["gpus"][0]
    assert (entry["mig_current"], entry["mig_pending"], entry["recovery_action"]) == ("Disabled", "Disabled", "None")
    assert (entry["remapped_rows_pending"], entry["remapped_rows_failure"], entry["errors"]) == (False, False, {})
    assert entry["retired_pages_pending"] is None  # "N/A" on Hopper: rows are remapped instead


# ---- reset required / recovery action ------------------------------------------------------------------------


def test_reset_required_refuses_the_gpu_and_says_how_to_reset_it():
    reset = blocking_about(preflight("h100-sick"), "gpu_reset")
    assert 2 in reset
    assert "reset required" in reset[2] and "sudo nvidia-smi -i 2 -r" in reset[2]


@pytest.mark.parametrize(
    ("action", "fix_words"),
    [("Reset", "sudo nvidia-smi -i 0 -r"), ("Reboot", "reboot the host"), ("Drain P2P", "peer-to-peer")],
)
def test_recovery_action_of_newer_drivers_refuses_the_gpu(action, fix_words):
    text = read_fixture("h100-x1-recorded", "nvidia-smi-q.txt").replace(
        "GPU Recovery Action                                : None", f"GPU Recovery Action : {action}"
    )
    gpus = gpu_parse.parse_nvidia_query(read_fixture("h100-x1-recorded", "query.csv"))
    health = gpu_health.build_health(gpus, q_values=gpu_health.parse_nvidia_smi_q_values(text))
    reset = blocking_about(preflight("h100-sxm", health), "gpu_reset")
    assert list(reset) == [0]
    assert f"recovery action {action}" in reset[0] and fix_words in reset[0]


# ---- memory repairs: remapped rows, retired pages, ECC -------------------------------------------------------


def test_failed_and_pending_memory_repairs_refuse_the_gpu():
    result = preflight("h100-sick")
    memory = blocking_about(result, "gpu_memory_errors")
    assert sorted(memory) == [4, 6]
    assert "remapped memory rows are pending" in memory[4] and "sudo nvidia-smi -i 4 -r" in memory[4]
    assert "row remapping failed" in memory[6] and "replacing" in memory[6]
    warnings = [str(f) for f in result.findings if f.check == "gpu_memory_errors" and not f.blocking]
    assert any("GPU 6: 16 uncorrectable ECC error(s)" in warning for warning in warnings)


@pytest.mark.parametrize(
    ("section", "key", "expected"),
    [
        ("Remapped Rows", "Remapping Failure Occurred", "row remapping failed"),
        ("Remapped Rows", "Pending", "remapped memory rows are pending"),
        ("Retired Pages", "Pending Page Blacklist", "memory pages to retire are pending"),
    ],
)
def test_memory_repairs_are_read_from_the_q_report_too(section, key, expected):
    text = read_fixture("h100-x1-recorded", "nvidia-smi-q.txt")
    values = gpu_health.parse_nvidia_smi_q_values(text)
    bus = next(iter(values))
    assert (section, key) in values[bus]  # the recorded report has the section: the path is real
    values[bus][(section, key)] = "Yes"
    gpus = gpu_parse.parse_nvidia_query(read_fixture("h100-x1-recorded", "query.csv"))
    memory = blocking_about(preflight("h100-sxm", gpu_health.build_health(gpus, q_values=values)), "gpu_memory_errors")
    assert list(memory) == [0] and expected in memory[0]


@pytest.mark.parametrize("printed", ["1", "Yes"])
def test_remapped_rows_flags_read_as_numbers_or_words(printed):
    rows = gpu_health.parse_nvidia_remapped_rows(f"00000000:18:00.0, 0, {printed}\n")
    assert rows["0:18:00.0"]["readings"] == {"remapped_rows_pending": False, "remapped_rows_failure": True}


# ---- GPUs that answer with errors (ERR!, [GPU requires reset], [Unknown Error]) -------------------------------


def test_gpu_answering_with_errors_is_refused_by_index():
    errors = blocking_about(preflight("h100-sick"), "gpu_error")
    assert list(errors) == [7]
    assert "[GPU requires reset]" in errors[7] and "ERR!" in errors[7]
    assert "sudo nvidia-smi -i 7 -r" in errors[7] and "xid" in errors[7].lower()


@pytest.mark.parametrize("value", ["[Unknown Error]", "[GPU requires reset]", "[GPU is lost]", "ERR!"])
def test_error_values_in_the_main_query_set_the_gpu_aside_instead_of_failing_the_read(value):
    text = (
        "0, NVIDIA H100 80GB HBM3, 81559, 570.124.06, 9.0, 00000000:18:00.0\n"
        f"1, {value}, {value}, 570.124.06, {value}, 00000000:2A:00.0\n"
    )
    gpus, failed = gpu_parse.parse_nvidia_query_with_failures(text)
    assert [gpu["index"] for gpu in gpus] == [0]
    errors = dict.fromkeys(("name", "memory.total", "compute_cap"), value)
    assert failed == [{"index": 1, "pci_bus_id": "00000000:2A:00.0", "errors": errors}]


def test_lost_gpu_is_named_in_the_gpu_count_finding():
    gpus, failed = gpu_parse.parse_nvidia_query_with_failures(read_fixture("broken", "query-gpu-lost.csv"))
    health = gpu_health.build_health(gpus, failed)
    result = preflight("h100-sxm", health)
    errors = blocking_about(result, "gpu_error")
    assert list(errors) == [1] and "memory.total = [Unknown Error]" in errors[1]


@pytest.mark.parametrize("value", ["[N/A]", "[Not Supported]", "[Insufficient Permissions]", "N/A"])
def test_not_applicable_values_are_not_gpu_errors(value):
    assert gpu_parse.gpu_error_value(value) is False


# ---- an nvidia-smi that does not know every field ------------------------------------------------------------


@pytest.mark.playbook


def test_old_driver_reads_what_it_can_and_says_what_it_could_not(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    nvidia_stand_ins(bin_dir, "h100-old-driver")
    # This nvidia-smi refuses reset_status.*: answer the shorter query with the fields it knows.
    folder = FIXTURES / "h100-old-driver"
    known = "index,pci.bus_id,mig.mode.current,mig.mode.pending,retired_pages.pending,"
    script = (bin_dir / "nvidia-smi").read_text().replace(
        "  --query-gpu=*)\n",
        f'  --query-gpu={known}*)\n    cat "{folder}/query-health.csv"; exit 0 ;;\n  --query-gpu=*)\n',
        1,
    )
    (bin_dir / "nvidia-smi").write_text(script)
    result = run_module(bin_dir, tmp_path)
    assert result.get("failed") is not True, result.get("msg")
    health = result["health"]
    assert [entry["mig_current"] for entry in health["gpus"]] == ["Disabled"] * 3 + ["Enabled"] + ["Disabled"] * 4
    unread = " ".join(health["unread"])
    assert "reset_required (reset_status.reset_required" in unread
    assert "--query-remapped-rows" in unread and "Invalid combination" in unread
    facts = {key: result[key] for key in ("gpu", "health", "docker", "devices", "disk")}
    plan = render_plan(
        CATALOG, model="glm-5-fp8", engine="sglang", hardware="h100", options=PlanOptions(cuda_version="12.8")
    ).to_dict()
    outcome = gpu_preflight(CATALOG, facts, plan)
    assert [f.problem.split(":")[0] for f in outcome.blocking if f.check == "gpu_mig"] == ["GPU 3"]
    notes = [str(f) for f in outcome.findings if f.check == "gpu_health"]
    assert len(notes) == 1 and "could not read" in notes[0] and "reset_required" in notes[0]
    assert all(f.check != "gpu_health" for f in outcome.blocking)


@pytest.mark.playbook


def test_sick_host_through_the_module(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    nvidia_stand_ins(bin_dir, "h100-sick")
    result = run_module(bin_dir, tmp_path)
    assert result.get("failed") is not True, result.get("msg")
    assert result["health"] == nvidia_health("h100-sick")
    assert result["health"]["unread"] == []


def test_healthy_reconstructed_hosts_have_no_health_findings():
    result = preflight("h100-sxm")
    assert [f.check for f in result.findings if f.check.startswith("gpu_") and f.blocking] == []
