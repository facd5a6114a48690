"""The glm.deploy.plan lookup and role, through real ansible-playbook runs from the repository root."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from tests.equipment.playbook import run_playbook

from glm_deploy.paths import project_root

pytestmark = pytest.mark.playbook

ROOT = project_root()
LOCAL = "ansible_connection=local ansible_python_interpreter='{{ ansible_playbook_python }}'"


def ansible_playbook(
    playbook: Path, inventory: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    # From the repository root, so that its ansible.cfg (the YAML callback, which folds long lines) applies.
    return run_playbook(playbook, home=playbook.parent, inventory=inventory, env=env, cwd=ROOT)


def test_lookups_print_the_plan_and_catalog(tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    playbook = tmp_path / "lookup.yml"
    playbook.write_text(
        f"""
- name: Print a plan
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{{{ ansible_playbook_python }}}}"
    plan: "{{{{ lookup('glm.deploy.plan', model='glm-5.1-fp8', engine='sglang', hardware='b200',
                      options={{'served_name': 'glm51', 'port': 8001}}) }}}}"
  tasks:
    - name: Print the plan's command
      ansible.builtin.debug:
        msg: "{{{{ plan.nodes[0].argv | join(' ') }}}}"
    - name: Print the B200's GPU name patterns from the catalog lookup
      ansible.builtin.debug:
        msg: "patterns={{{{ lookup('glm.deploy.catalog', 'hardware').b200.gpu_name_patterns | join(',') }}}}"
    - name: Keep the plan for the test
      ansible.builtin.copy:
        content: "{{{{ plan | to_nice_json }}}}"
        dest: {out}
        mode: "0644"
"""
    )
    result = ansible_playbook(playbook, "localhost,")
    assert result.returncode == 0, result.stdout + result.stderr
    printed = " ".join(result.stdout.split())  # the YAML callback folds long lines
    assert "python3 -m sglang.launch_server --model-path zai-org/GLM-5.1-FP8" in printed
    assert "--served-model-name glm51" in printed
    assert "patterns=B200" in printed
    plan = json.loads(out.read_text())
    argv = plan["nodes"][0]["argv"]
    assert argv[argv.index("--port") + 1] == "8001"
    assert plan["image"] == "lmsysorg/sglang:v0.5.10-cu12"


ROLE_PLAY = """
- name: Plan
  hosts: glm_servers
  gather_facts: false
  roles:
    - role: glm.deploy.plan
      vars:
        plan_show: false
  tasks:
    - name: Keep each host's rank and argv for the test
      ansible.builtin.copy:
        content: >-
          {{ {'rank': glm_node_rank | int, 'argv': glm_plan.nodes[glm_node_rank | int].argv} | to_json }}
        dest: "{{ out_dir }}/{{ inventory_hostname }}.json"
        mode: "0644"
"""


def write_inventory(tmp_path: Path, hosts: list[str], model: str, hardware: str, engine: str) -> Path:
    inventory = tmp_path / "inventory.ini"
    lines = ["[glm_servers]", *[f"{host} {LOCAL}" for host in hosts], "[glm_servers:vars]"]
    lines += [f"glm_model={model}", f"glm_engine={engine}", f"glm_hardware={hardware}", f"out_dir={tmp_path}"]
    inventory.write_text("\n".join(lines) + "\n")
    return inventory


def test_role_sets_plan_and_node_ranks_for_two_nodes(tmp_path: Path) -> None:
    inventory = write_inventory(
        tmp_path,
        ["head glm_private_ip=10.1.0.7", "worker"],
        model="glm-5-fp8",
        hardware="h100",
        engine="vllm",
    )
    playbook = tmp_path / "role.yml"
    playbook.write_text(ROLE_PLAY)
    result = ansible_playbook(playbook, str(inventory))
    assert result.returncode == 0, result.stdout + result.stderr
    head = json.loads((tmp_path / "head.json").read_text())
    worker = json.loads((tmp_path / "worker.json").read_text())
    assert head["rank"] == 0 and worker["rank"] == 1
    for node in (head, worker):
        argv = node["argv"]
        assert argv[argv.index("--master-addr") + 1] == "10.1.0.7"
        assert argv[argv.index("--node-rank") + 1] == str(node["rank"])
    assert "--headless" in worker["argv"] and "--headless" not in head["argv"]


def test_role_fails_clearly_on_an_unknown_model(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path, ["one"], model="glm-9", hardware="b200", engine="vllm")
    playbook = tmp_path / "role.yml"
    playbook.write_text(ROLE_PLAY)
    result = ansible_playbook(playbook, str(inventory))
    assert result.returncode != 0
    assert "unknown model 'glm-9'" in result.stdout
    assert "known models:" in result.stdout


def test_role_fails_when_the_inventory_lacks_nodes(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path, ["only"], model="glm-5-fp8", hardware="h100", engine="sglang")
    playbook = tmp_path / "role.yml"
    playbook.write_text(ROLE_PLAY)
    result = ansible_playbook(playbook, str(inventory))
    assert result.returncode != 0
    assert "needs 2 node(s), but the inventory group glm_servers has 1" in " ".join(result.stdout.split())


@pytest.fixture
def glm_deploy_missing(tmp_path: Path) -> dict[str, str]:
    """A shadowing package that fails to import, as when glm-deploy is absent from the controller's venv."""
    shadow = tmp_path / "shadow" / "glm_deploy"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('glm_deploy is not installed here')\n")
    return {"PYTHONPATH": str(shadow.parent)}


def test_lookup_says_how_to_install_when_glm_deploy_is_missing(
    tmp_path: Path, glm_deploy_missing: dict[str, str]
) -> None:
    playbook = tmp_path / "lookup.yml"
    playbook.write_text(
        """
- name: Print a plan
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Print it
      ansible.builtin.debug:
        msg: "{{ lookup('glm.deploy.plan', model='glm-tiny', engine='vllm-cpu', hardware='cpu') }}"
"""
    )
    result = ansible_playbook(playbook, "localhost,", env=glm_deploy_missing)
    assert result.returncode != 0
    assert "the glm.deploy.plan lookup needs the glm-deploy Python package" in " ".join(result.stdout.split())
    assert "-m pip install glm-deploy`" in " ".join(result.stdout.split())


def test_plan_role_documents_every_default() -> None:
    """Every public variable of the role has a default and an argument spec (and nothing else does)."""
    role = ROOT / "collection" / "roles" / "plan"
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text())
    argument_specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())
    specs = argument_specs["argument_specs"]["main"]["options"]
    assert set(defaults) == set(specs)
    for name, spec in specs.items():
        assert name.startswith("plan_")
        assert spec.get("type") and spec.get("description"), name
    readme = (role / "README.md").read_text()
    for name in defaults:
        assert f"`{name}`" in readme, f"{name} missing from the role README"
