"""The playbooks and the Python API find (or make) the same endpoint API key: playbooks/tasks/api_key.yml asks
glm_deploy.credentials through the glm.deploy.api_key lookup, the code `Deployment` calls. Run through a real
ansible-playbook on two local hosts."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest
from tests.equipment.playbook import REPO, run_playbook

from glm_deploy.credentials import controller_secrets

pytestmark = pytest.mark.playbook

TASKS = REPO / "playbooks" / "tasks" / "api_key.yml"


def _project(tmp_path: Path) -> Path:
    """A project with a playbook that resolves the key and writes what each host got to a private file."""
    project = tmp_path / "project"
    (project / "playbooks").mkdir(parents=True)
    (project / "playbooks" / "play.yml").write_text(
        json.dumps(
            [
                {
                    "hosts": "glm_servers",
                    "gather_facts": False,
                    "tasks": [
                        {"name": "Resolve the key", "ansible.builtin.import_tasks": str(TASKS)},
                        {
                            "name": "Record the key this host got",
                            "ansible.builtin.copy": {
                                "content": "{{ glm_api_key }}",
                                "dest": f"{tmp_path}/got-{{{{ inventory_hostname }}}}",
                                "mode": "0600",
                            },
                            "no_log": True,
                        },
                    ],
                }
            ]
        )
    )
    (project / "hosts.ini").write_text(
        "[glm_servers]\n"
        + "".join(f"{name} ansible_connection=local ansible_python_interpreter={sys.executable}\n" for name in "ab")
    )
    return project


def _play(tmp_path: Path, project: Path, env: dict[str, str] | None = None, *args: str) -> str:
    completed = run_playbook(
        project / "playbooks" / "play.yml",
        home=tmp_path,
        inventory=project / "hosts.ini",
        env=env,
        drop_env=("GLM_API_KEY", "GLM_DEPLOY_HOME", "HF_TOKEN"),
        args=args,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-3000:]
    return output


def _got(tmp_path: Path) -> set[str]:
    return {(tmp_path / f"got-{host}").read_text() for host in "ab"}


def test_the_play_makes_the_key_the_python_api_then_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = _project(tmp_path)
    output = _play(tmp_path, project)

    key_file = project / ".cache" / "secrets" / "api_key"
    (key,) = _got(tmp_path)
    assert key_file.read_text().strip() == key and len(key) == 48
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key not in output
    # The Python API, pointed at the same project, finds the key the play made instead of making its own.
    for name in ("GLM_API_KEY", "GLM_API_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GLM_DEPLOY_HOME", str(project))
    assert controller_secrets(create_api_key=True)["glm_api_key"] == key

    _play(tmp_path, project)
    assert _got(tmp_path) == {key}, "a second run reuses the key"


def test_the_play_reads_the_key_the_python_api_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = _project(tmp_path)
    key_file = tmp_path / "keys" / "endpoint"
    monkeypatch.delenv("GLM_API_KEY", raising=False)
    monkeypatch.setenv("GLM_API_KEY_FILE", str(key_file))
    key = controller_secrets(create_api_key=True)["glm_api_key"]

    _play(tmp_path, project, {"GLM_API_KEY_FILE": str(key_file)})
    assert _got(tmp_path) == {key}
    assert not (project / ".cache").exists()


def test_the_environment_and_the_play_variable_come_first(tmp_path: Path) -> None:
    project = _project(tmp_path)
    _play(tmp_path, project, {"GLM_API_KEY": "from-the-environment-0123"})
    assert _got(tmp_path) == {"from-the-environment-0123"}

    _play(tmp_path, project, {"GLM_API_KEY": "from-the-environment-0123"}, "-e", "glm_api_key=from-the-play-4567")
    assert _got(tmp_path) == {"from-the-play-4567"}
    assert not (project / ".cache").exists(), "no key file is made when the key is given"
