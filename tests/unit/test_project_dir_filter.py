"""The project folder a run keeps its files in (API key, CA, results): above a project's `playbooks/`, or the
current folder for the installed collection's playbooks (never inside `ansible_collections/`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "collections") not in sys.path:
    sys.path.insert(0, str(REPO / "collections"))

from ansible.errors import AnsibleFilterError  # noqa: E402
from ansible_collections.glm.deploy.plugins.filter.project_dir import project_dir  # noqa: E402


def test_a_projects_own_playbooks_keep_their_files_above_playbooks() -> None:
    assert project_dir("/srv/glm/playbooks") == "/srv/glm"
    assert project_dir(str(REPO / "playbooks")) == str(REPO)


@pytest.mark.parametrize(
    "playbook_dir",
    [
        "/home/u/.ansible/collections/ansible_collections/glm/deploy/playbooks",
        str(REPO / "collections" / "ansible_collections" / "glm" / "deploy" / "playbooks"),
    ],
)
def test_the_installed_collections_playbooks_use_the_working_folder(
    playbook_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert project_dir(playbook_dir) == str(tmp_path)


@pytest.mark.parametrize("value", ["", None, 3])
def test_anything_but_a_folder_is_refused(value: object) -> None:
    with pytest.raises(AnsibleFilterError, match="playbook_dir"):
        project_dir(value)
