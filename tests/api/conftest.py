"""Fixtures for the deployment API tests: a throwaway project (playbooks, inventory) run on localhost."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# A made-up endpoint key: tests look for it in everything a run leaves behind.
SECRET = "sk-glm-api-test-5c1d9e0f7a2b"

DEPLOY_PLAYBOOK = """
- name: Throwaway deploy
  hosts: glm_servers
  gather_facts: false
  tasks:
    - name: Record the options the controller passed
      ansible.builtin.copy:
        content: "{{ {'model': glm_model, 'port': (glm_options | default({})).get('port')} | to_json }}\\n"
        dest: "{{ marker_dir }}/deploy-{{ 99999999 | random }}.json"
        mode: "0644"
    - name: Write the endpoint key where only root reads it
      ansible.builtin.copy:
        content: "VLLM_API_KEY={{ glm_api_key }}\\n"
        dest: "{{ marker_dir }}/endpoint.env"
        mode: "0600"
      no_log: true
    - name: Report the release this host installed
      ansible.builtin.set_fact:
        glm_release:
          model_commit: "{{ reported_commit | default('0123456789abcdef0123456789abcdef01234567') }}"
          venv_lock: sha256-test
"""

FAILING_PLAYBOOK = """
- name: Throwaway verify that fails
  hosts: glm_servers
  gather_facts: false
  tasks:
    - name: Probe the endpoint's health
      ansible.builtin.fail:
        msg: "health check failed: connection refused on port 8000"
"""

SLOW_PLAYBOOK = """
- name: Throwaway benchmark that takes long
  hosts: glm_servers
  gather_facts: false
  tasks:
    - name: Warm up
      ansible.builtin.command: "true"
      changed_when: false
    - name: Run the load for a long time
      ansible.builtin.command: sleep 60
      changed_when: false
"""


@dataclass
class Project:
    root: Path
    inventory: Path
    state_dir: Path
    markers: Path
    playbooks: dict[str, Path]

    def deploy_markers(self) -> list[Path]:
        return sorted(self.markers.glob("deploy-*.json"))


def write_inventory(directory: Path, *, group_vars: str = "", address: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    host = "localhost ansible_connection=local"
    if address:
        host += f" ansible_host={address}"
    (directory / "hosts.ini").write_text(
        f"[glm_servers]\n{host} ansible_python_interpreter={sys.executable}\n"
    )
    (directory / "group_vars").mkdir(exist_ok=True)
    (directory / "group_vars" / "glm_servers.yml").write_text(
        "glm_model: glm-tiny\nglm_engine: vllm-cpu\nglm_hardware: cpu\n" + group_vars
    )
    return directory


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    """A project directory with its own playbooks/ (site, verify, benchmark) and an inventory of localhost.

    GLM_DEPLOY_HOME points the CLI at it, so the default playbooks are these; state and key file stay in it.
    """
    root = tmp_path / "project"
    markers = tmp_path / "markers"
    markers.mkdir()
    (root / "playbooks").mkdir(parents=True)
    playbooks = {
        "deploy": root / "playbooks" / "site.yml",
        "verify": root / "playbooks" / "verify.yml",
        "benchmark": root / "playbooks" / "benchmark.yml",
    }
    playbooks["deploy"].write_text(DEPLOY_PLAYBOOK)
    playbooks["verify"].write_text(FAILING_PLAYBOOK)
    playbooks["benchmark"].write_text(SLOW_PLAYBOOK)
    inventory = write_inventory(
        root / "inventories" / "test", group_vars=f"marker_dir: {markers}\nglm_options:\n  port: 8000\n"
    )
    monkeypatch.setenv("GLM_DEPLOY_HOME", str(root))
    monkeypatch.delenv("GLM_DEPLOY_STATE", raising=False)
    monkeypatch.delenv("GLM_API_KEY", raising=False)
    monkeypatch.delenv("GLM_API_KEY_FILE", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    yield Project(
        root=root,
        inventory=inventory,
        state_dir=root / ".cache" / "glm-deploy",
        markers=markers,
        playbooks=playbooks,
    )


def files_containing(directory: Path, needle: str) -> list[Path]:
    """Every file under `directory` whose bytes contain `needle`."""
    return [path for path in directory.rglob("*") if path.is_file() and needle.encode() in path.read_bytes()]
