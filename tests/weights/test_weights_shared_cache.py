"""The weights role on two hosts that mount one shared filesystem (a Lambda filesystem; glm_filesystem_mount): the
HF cache follows the plan's HF_HOME onto the mount, the first host downloads, the second follows and fetches
nothing, and both know the commit. Two "hosts" of one controller (local connection) share a folder as the mount."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from tests.equipment.hub_faults import FaultyHub
from tests.equipment.playbook import run_playbook
from tests.weights.helpers import REPO_ROOT, expected_digests, make_model_files, snapshot_digests

pytestmark = pytest.mark.playbook

PLAYBOOK = """
- name: Weights on a shared filesystem
  hosts: all
  gather_facts: false
  roles:
    - role: glm.deploy.weights
  post_tasks:
    - name: Show the commit and the cache
      ansible.builtin.debug:
        msg: >-
          {{ inventory_hostname }} weights_commit={{ weights_commit | default('unset') }} cache={{ weights_cache_dir }}
"""


def test_hosts_sharing_a_filesystem_download_once(hub: FaultyHub, tmp_path: Path) -> None:
    files = make_model_files(11, [2_000_000, 1_000_000])
    commit = hub.store.publish("zai-org/GLM-shared", files)
    mount = tmp_path / "nfs" / "weights"
    hf_home = mount / "glm-deploy" / "hf"
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        json.dumps(
            {
                "all": {
                    "hosts": {
                        name: {"ansible_connection": "local", "glm_filesystem_mount": str(mount)}
                        for name in ("node-1", "node-2")
                    }
                }
            }
        )
    )
    variables = {
        "ansible_python_interpreter": sys.executable,
        # What the plan role renders for these hosts: hf_home on the mount (tests/lambda_cloud checks that rule).
        "glm_plan": {
            "model_repo": "zai-org/GLM-shared",
            "model_revision": "main",
            "cache_env": {"HF_HOME": str(hf_home)},
        },
        "glm_hf_endpoint": hub.url,
        "weights_progress_file": str(tmp_path / "progress-{{ inventory_hostname }}.json"),
        "weights_venv_dir": str(REPO_ROOT / ".cache" / "test-venvs" / "weights-hub"),
        "weights_venv_python": getattr(sys, "_base_executable", sys.executable),
        "weights_system_packages": [],
        "weights_free_space_reserve_bytes": 0,
        "weights_poll_interval_s": 1,
    }
    vars_file = tmp_path / "vars.json"
    vars_file.write_text(json.dumps(variables))
    playbook = tmp_path / "weights.yml"
    playbook.write_text(PLAYBOOK)

    run = run_playbook(
        playbook,
        home=tmp_path,
        inventory=inventory,
        args=["-e", f"@{vars_file}"],
        env={"ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"), "ANSIBLE_FORCE_COLOR": "0"},
        drop_env=("HF_", "ANSIBLE_"),
        cwd=REPO_ROOT,
        timeout=240,
    )

    assert run.returncode == 0, run.stdout + run.stderr
    for host in ("node-1", "node-2"):
        assert f"{host} weights_commit={commit} cache={hf_home}/hub" in run.stdout, run.stdout
    assert snapshot_digests(hf_home / "hub", "zai-org/GLM-shared", commit) == expected_digests(files)
    # One copy crossed the network: node-2 started after node-1 had finished and found every file there.
    assert hub.stats.file_bytes_sent == sum(len(content) for content in files.values())
    first_wave = run.stdout.index("Download the weights on the hosts that download first")
    second_wave = run.stdout.index("Then check the shared cache on the hosts that share it")
    assert "included: " in run.stdout[first_wave:second_wave] and "node-1" in run.stdout[first_wave:second_wave]
    assert "skipping: [node-1]" in run.stdout[second_wave:]
