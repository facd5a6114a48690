"""SGLang reads its API key from the --config file the plan names: the server role writes that file (mode 0600),
with the key and nothing else, and only changes it when the key changes. Run through ansible-playbook on localhost."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
import yaml
from tests.equipment.playbook import run_playbook

from glm_deploy.catalog import load_catalog
from glm_deploy.render import render_plan

pytestmark = pytest.mark.playbook

API_KEY = "sglang-secret-file-test-key-5b8e21"  # distinctive, so any leak is found by a plain search


def _play(tmp_path: Path, plan: dict[str, object], key: str) -> tuple[int, str]:
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        json.dumps(
            [
                {
                    "hosts": "localhost",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "name": "secret files",
                            "ansible.builtin.include_role": {
                                "name": "glm.deploy.server",
                                "tasks_from": "secret_files.yml",
                            },
                            "vars": {"server_plan": plan, "server_api_key": key},
                        },
                        {"name": "say", "ansible.builtin.debug": {"msg": "changed={{ _server_secrets_changed }}"}},
                    ],
                }
            ]
        )
    )
    completed = run_playbook(
        playbook, home=tmp_path, inventory="localhost,",
        args=["-c", "local", "-e", f"ansible_python_interpreter={sys.executable}"],
    )
    return completed.returncode, completed.stdout + completed.stderr


def test_the_sglang_config_file_holds_the_key_mode_0600_and_is_idempotent(tmp_path: Path) -> None:
    plan = render_plan(load_catalog(), model="glm-5.1-fp8", engine="sglang", hardware="b200").to_dict()
    (secret,) = plan["secret_files"]
    argv = plan["nodes"][0]["argv"]
    assert argv[argv.index("--config") + 1] == secret["path"]  # the file the engine is told to read
    target = tmp_path / "etc" / Path(secret["path"]).name
    plan["secret_files"] = [{**secret, "path": str(target)}]
    target.parent.mkdir()

    code, output = _play(tmp_path, plan, API_KEY)
    assert code == 0, output[-3000:]
    assert yaml.safe_load(target.read_text()) == {"api-key": API_KEY}
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert "changed=True" in output and API_KEY not in output

    again, output = _play(tmp_path, plan, API_KEY)
    assert again == 0 and "changed=False" in output, output[-3000:]

    rotated, output = _play(tmp_path, plan, API_KEY + "-rotated")
    assert rotated == 0 and "changed=True" in output
    assert yaml.safe_load(target.read_text()) == {"api-key": API_KEY + "-rotated"}


def test_a_vllm_plan_has_no_secret_file_to_write(tmp_path: Path) -> None:
    plan = render_plan(load_catalog(), model="glm-5.1-fp8", engine="vllm", hardware="b200").to_dict()
    assert plan["secret_files"] == []
    code, output = _play(tmp_path, plan, API_KEY)
    assert code == 0 and "changed=False" in output, output[-3000:]
