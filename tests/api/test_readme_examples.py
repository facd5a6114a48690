"""The README's code blocks that run: each is taken from README.md as it stands and run unchanged (issue 14, item 8).

The Python API examples run as pasted, in a fresh interpreter, from the root of a throwaway project laid out like
the repository after scripts/sandbox.sh (inventories/sandbox with host glm-sandbox-1, the key file, playbooks/)
whose playbooks are stand-ins that report the host's release from a host record the test writes: the examples'
imports, names, arguments and attribute paths are the real API's. The plan command runs for real. Which test covers
which block is tests/equipment/readme.py's table; tests/unit/test_readme_blocks.py keeps it complete.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.api.test_reported_release import REPORT_TASKS, record_on_host
from tests.equipment.readme import REPO, block

from glm_deploy.catalog import load_catalog
from glm_deploy.release import Release
from glm_deploy.render import PlanOptions, render_plan

pytestmark = pytest.mark.playbook

SECRET = "sk-glm-readme-example-7e21"
VENV_BIN = Path(sys.executable).parent

REPORTING = f"""
- name: Stand-in that reports the host's release like verify.yml
  hosts: glm_servers
  gather_facts: false
  tasks:
    - name: Report the release this host serves
      ansible.builtin.import_tasks: {REPORT_TASKS}
"""

REDEPLOY = """
- name: Stand-in redeploy that records its target and reports the release it would serve
  hosts: glm_servers
  gather_facts: false
  serial: "{{ glm_redeploy_serial | default(1) }}"
  tasks:
    - name: Record the target the controller passed
      ansible.builtin.copy:
        content: "{{ glm_options | default({}) | to_json }}"
        dest: "{{ playbook_dir }}/../redeploy-target.json"
        mode: "0644"
      delegate_to: localhost
    - name: Report the new release
      ansible.builtin.set_fact:
        glm_release: {release_id: 0123456789ab, model_commit: revision-2-commit, outcome: kept}
"""


@pytest.fixture
def sandbox_like(tmp_path: Path) -> tuple[Path, Release]:
    """A project root like the repository's after scripts/sandbox.sh, its host serving the inventory's release."""
    root = tmp_path / "checkout"
    (root / "playbooks").mkdir(parents=True)
    (root / "collections").symlink_to(REPO / "collections")
    host_root = tmp_path / "host"
    inventory = root / "inventories" / "sandbox"
    (inventory / "group_vars").mkdir(parents=True)
    (inventory / "hosts.ini").write_text(
        f"[glm_servers]\nglm-sandbox-1 ansible_connection=local ansible_python_interpreter={sys.executable}\n"
    )
    (inventory / "group_vars" / "glm_servers.yml").write_text(
        f"glm_model: glm-tiny\nglm_engine: vllm-cpu\nglm_hardware: cpu\nserver_state_root: {host_root}\n"
    )
    secrets = root / ".cache" / "secrets"
    secrets.mkdir(parents=True)
    (secrets / "api_key").write_text(SECRET + "\n")
    for name in ("verify", "rollback", "site"):
        (root / "playbooks" / f"{name}.yml").write_text(REPORTING)
    (root / "playbooks" / "redeploy.yml").write_text(REDEPLOY)
    plan = render_plan(load_catalog(), model="glm-tiny", engine="vllm-cpu", hardware="cpu", options=PlanOptions())
    served = Release.from_plan(plan, model_commit="1" * 40, venv_lock="sha256-readme")
    record_on_host(host_root, served, plan.to_dict())
    return root, served


def run_python(root: Path, code: str) -> subprocess.CompletedProcess[str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("GLM_", "HF_", "ANSIBLE_", "PYTEST_"))
    }
    environment["GLM_DEPLOY_HOME"] = str(root)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=environment, capture_output=True, text=True, timeout=300,
        check=False,
    )


def test_the_playbook_runner_example_runs_as_pasted(sandbox_like: tuple[Path, Release]) -> None:
    root, _served = sandbox_like
    example = block("python", "from pathlib import Path")

    ran = run_python(root, example.text)

    assert ran.returncode == 0, ran.stderr
    last = ran.stdout.splitlines()[-1].split()
    assert last[:3] == ["successful", "0", "0"], ran.stdout
    assert Path(last[3]).is_dir(), "the run's artifacts"
    assert "playbook_on_stats" in ran.stdout, "the event handler saw the run's events"


def test_the_deployment_example_runs_as_pasted(sandbox_like: tuple[Path, Release]) -> None:
    root, served = sandbox_like
    example = block("python", "from glm_deploy.deployment import Deployment")

    ran = run_python(root, example.text)

    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert "Read the release this host serves" in lines, "show() printed the tasks"
    assert served.release_id in lines, "verify's outcome names the release the host serves"
    assert json.loads((root / "redeploy-target.json").read_text()) == {"revision": "revision-2"}
    assert lines[-1] == f"{served.release_id} successful", "rolled back to the release the host serves"
    commands = [json.loads(line)["command"] for line in (root / ".cache" / "glm-deploy" / "history.jsonl").open()]
    assert commands == ["verify", "redeploy", "rollback"]


def test_the_plan_command_prints_the_command_per_node() -> None:
    example = block("sh", ".venv/bin/glm-deploy plan --model glm-5.1-fp8 --engine sglang --hardware b200")
    # The venv running the tests is the one the README means by .venv.
    command = example.text.replace(".venv/bin/", f"{VENV_BIN}/")

    ran = subprocess.run(["bash", "-c", command], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)

    assert ran.returncode == 0, ran.stderr
    assert "sglang" in ran.stdout and "glm-5.1" in ran.stdout.lower(), ran.stdout
    assert "--tp" in ran.stdout or "tensor-parallel" in ran.stdout, "the exact command, with its flags"
    # The README says what the warning about a branch revision says: deploy pins the commit it fetched.
    assert "each deploy and redeploy pins the unit to the commit it fetched" in " ".join(ran.stdout.split())


def test_the_two_commands_parse() -> None:
    """The scripts the README's first block runs (their behaviour: tests/api/test_sandbox_script.py)."""
    example = block(
        "sh",
        "scripts/sandbox.sh   # deploys real vLLM (CPU) serving a tiny GLM-family model on a local systemd host, "
        "verifies and benchmarks it",
    )
    for line in example.text.splitlines():
        script = REPO / line.split("#")[0].strip()
        checked = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
        assert checked.returncode == 0, f"{script}: {checked.stderr}"
