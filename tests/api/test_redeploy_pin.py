"""The Python API does not pin the plan to a commit (the playbooks do, in glm.deploy.plan's pin.yml): a redeploy
of a branch passes the branch, not the commit, and names the release it expects after the plan the hosts will
serve, pinned to the commit the branch resolves to."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.api.conftest import SECRET, Project, write_inventory

from glm_deploy.deployment import Deployment
from glm_deploy.release import plan_hash
from glm_deploy.sandbox.hub import HubServer, HubStore

pytestmark = pytest.mark.playbook

REDEPLOY_PLAYBOOK = """
- name: Throwaway redeploy
  hosts: glm_servers
  gather_facts: false
  serial: "{{ glm_redeploy_serial | default(1) }}"
  tasks:
    - name: Record the options the controller passed
      ansible.builtin.copy:
        content: "{{ glm_options | default({}) | to_json }}"
        dest: "{{ marker_dir }}/redeploy-options.json"
        mode: "0644"
"""


def test_a_redeploy_passes_the_branch_and_names_the_pinned_release(project: Project, tmp_path: Path) -> None:
    store = HubStore(tmp_path / "hub")
    repo = Deployment(project.inventory, state_dir=project.state_dir).plan().model_repo
    commit = store.publish(repo, {"config.json": b'{"v": 1}'})
    playbook = project.root / "playbooks" / "redeploy.yml"
    playbook.write_text(REDEPLOY_PLAYBOOK)
    with HubServer(store) as hub:
        inventory = write_inventory(
            tmp_path / "hub-inventory", group_vars=f"marker_dir: {project.markers}\nglm_hf_endpoint: {hub.url}\n"
        )
        deployment = Deployment(
            inventory,
            state_dir=project.state_dir,
            secrets={"glm_api_key": SECRET},
            playbooks={"redeploy": playbook},
        )
        outcome = deployment.redeploy(to={"revision": "main", "port": 9100})

    passed = json.loads((project.markers / "redeploy-options.json").read_text())
    assert passed == {"revision": "main", "port": 9100}, "the playbook, not the API, pins the branch"
    release = outcome.entry.release
    assert release is not None and release.model_commit == commit and release.model_revision == commit
    assert release.plan_hash == plan_hash(deployment.plan({"revision": commit, "port": 9100}))
