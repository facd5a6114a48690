"""The glm.deploy.host_layout module run as Ansible runs it (a Python process reading its arguments from a file),
against scratch folders. Accounts are only exercised in check mode: the test must not add users to this machine."""

from __future__ import annotations

import grp
import json
import os
import pwd
import stat
from pathlib import Path
from typing import Any

import pytest
from tests.equipment.module_process import run_module_file

pytestmark = pytest.mark.playbook

ME = pwd.getpwuid(os.getuid()).pw_name
MY_GROUP = grp.getgrgid(os.getgid()).gr_name
SECRET = "sk-glm-0123456789abcdef-never-shown"


def run(tmp_path: Path, check_mode: bool = False, **arguments: Any) -> dict[str, Any]:
    return run_module_file("host_layout", tmp_path, check_mode=check_mode, **arguments)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def layout(tmp_path: Path, content: str = "KEY=" + SECRET + "\n") -> dict[str, Any]:
    return dict(
        folders=[
            {"path": str(tmp_path / "state" / "cache" / "a"), "owner": ME, "group": MY_GROUP, "mode": "0755"},
            {"path": str(tmp_path / "etc"), "mode": "0750"},
        ],
        files=[
            {"path": str(tmp_path / "etc" / "glm.env"), "content": content, "owner": ME, "mode": "0600"},
            {"path": str(tmp_path / "etc" / "unit.service"), "content": "[Service]\n", "mode": "0644"},
        ],
    )


def test_makes_folders_and_files_once_then_reports_nothing_to_do(tmp_path: Path) -> None:
    first = run(tmp_path, **layout(tmp_path))
    assert first["changed"] is True, first
    assert first["written"] == [
        str(tmp_path / "state" / "cache" / "a"),
        str(tmp_path / "etc"),
        str(tmp_path / "etc" / "glm.env"),
        str(tmp_path / "etc" / "unit.service"),
    ]
    assert (tmp_path / "etc" / "glm.env").read_text() == "KEY=" + SECRET + "\n"
    assert mode_of(tmp_path / "etc" / "glm.env") == 0o600 and mode_of(tmp_path / "etc") == 0o750
    assert mode_of(tmp_path / "state" / "cache" / "a") == 0o755
    again = run(tmp_path, **layout(tmp_path))
    assert (again["changed"], again["changes"], again["written"]) == (False, [], [])


def test_rewrites_only_what_differs_and_corrects_modes(tmp_path: Path) -> None:
    run(tmp_path, **layout(tmp_path))
    os.chmod(tmp_path / "etc" / "unit.service", 0o640)
    os.chmod(tmp_path / "etc", 0o700)
    result = run(tmp_path, **layout(tmp_path, content="KEY=another-secret-value\n"))
    assert result["changes"] == [
        f"changed mode of folder {tmp_path / 'etc'}",
        f"rewrote file {tmp_path / 'etc' / 'glm.env'}",
        f"changed mode of file {tmp_path / 'etc' / 'unit.service'}",
    ]
    assert (tmp_path / "etc" / "glm.env").read_text() == "KEY=another-secret-value\n"
    assert mode_of(tmp_path / "etc" / "glm.env") == 0o600
    assert mode_of(tmp_path / "etc" / "unit.service") == 0o644 and mode_of(tmp_path / "etc") == 0o750
    # No temporary file is left beside what was written.
    assert sorted(path.name for path in (tmp_path / "etc").iterdir()) == ["glm.env", "unit.service"]


def test_file_contents_never_come_back(tmp_path: Path) -> None:
    result = run(tmp_path, **layout(tmp_path))
    assert SECRET not in json.dumps(result)
    result = run(tmp_path, **layout(tmp_path, content="KEY=" + SECRET + "-rotated\n"))
    assert SECRET not in json.dumps(result)


def test_check_mode_reports_and_changes_nothing(tmp_path: Path) -> None:
    result = run(tmp_path, check_mode=True, **layout(tmp_path))
    assert result["changed"] is True and len(result["written"]) == 4
    assert not (tmp_path / "etc").exists() and not (tmp_path / "state").exists()


def test_check_mode_names_the_account_it_would_create(tmp_path: Path) -> None:
    name = "glmtest" + str(os.getpid())
    result = run(
        tmp_path,
        check_mode=True,
        account={"name": name, "home": "/var/lib/glm-deploy"},
        folders=[{"path": str(tmp_path / "venvs"), "owner": name, "group": name, "mode": "0755"}],
    )
    folder = tmp_path / "venvs"
    assert result["changes"] == [f"created group {name}", f"created user {name}", f"created folder {folder}"]
    with pytest.raises(KeyError):
        pwd.getpwnam(name)


def test_check_mode_names_what_it_would_change_on_an_existing_account(tmp_path: Path) -> None:
    user = pwd.getpwuid(os.getuid())
    shell = "/bin/false" if user.pw_shell != "/bin/false" else "/bin/sh"
    result = run(
        tmp_path, check_mode=True, account={"name": user.pw_name, "home": user.pw_dir, "shell": shell}
    )
    # Only the shell differs (the group check also passes when the user's primary group has the user's name).
    assert result["changes"][0].startswith(f"changed user {user.pw_name} (shell")
    assert pwd.getpwnam(user.pw_name).pw_shell == user.pw_shell


def test_reads_markers_and_looks_up_paths(tmp_path: Path) -> None:
    marker = tmp_path / "venv" / ".glm-deploy-installed"
    marker.parent.mkdir()
    marker.write_text("huggingface_hub==1.2.0")
    python = tmp_path / "venv" / "python"
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    missing = tmp_path / "venv" / "absent"
    result = run(tmp_path, read=[str(marker), str(missing)], stat=[str(python), str(tmp_path / "venv"), str(missing)])
    assert result["changed"] is False
    assert result["contents"] == {str(marker): "huggingface_hub==1.2.0", str(missing): None}
    assert result["paths"][str(python)] | {"fs_size_mib": 0} == {
        "exists": True,
        "isdir": False,
        "executable": True,
        "fs_size_mib": 0,
    }
    assert result["paths"][str(python)]["fs_size_mib"] > 0
    assert result["paths"][str(tmp_path / "venv")]["isdir"] is True
    assert result["paths"][str(missing)] == {"exists": False, "isdir": False, "executable": False, "fs_size_mib": None}


@pytest.mark.skipif(not Path("/usr/bin/dpkg-query").exists(), reason="needs a Debian machine's dpkg-query")
def test_names_the_packages_that_are_not_installed(tmp_path: Path) -> None:
    result = run(tmp_path, packages=["glm-no-such-package", "dpkg", "glm-other-missing"])
    assert result["missing_packages"] == ["glm-no-such-package", "glm-other-missing"]


@pytest.mark.parametrize(
    ("arguments", "refusal"),
    [
        ({"folders": [{"path": "relative/dir", "mode": "0755"}]}, "folders[0].path must be an absolute path"),
        ({"folders": [{"path": "/tmp/a\rExecStart=/bin/sh", "mode": "0755"}]}, "without control characters"),
        ({"folders": [{"path": "/tmp/x", "mode": "755; rm"}]}, "folders[0].mode must be an octal mode"),
        ({"files": [{"path": "/tmp/x", "content": "", "mode": "0644", "owner": "no-such-user-glm"}]}, "no user named"),
        ({"files": [{"path": "/tmp/x", "content": "", "mode": "0644", "owner": "Bad Name"}]}, "files[0].owner must be"),
        ({"account": {"name": "glm\nroot", "home": "/var/lib/glm"}}, "account.name must be"),
        ({"packages": ["python3-venv; reboot"]}, "is not a Debian package name"),
        ({"read": ["x" * 10000]}, "read must be an absolute path"),
    ],
)
def test_refuses_bad_values_with_a_short_message(tmp_path: Path, arguments: dict[str, Any], refusal: str) -> None:
    result = run(tmp_path, **arguments)
    assert result["failed"] is True and refusal in result["msg"], result
    assert len(result["msg"]) < 400


def test_refuses_a_file_where_a_folder_is_wanted_and_the_reverse(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("x")
    (tmp_path / "folder").mkdir()
    assert "is not a folder" in run(tmp_path, folders=[{"path": str(tmp_path / "plain"), "mode": "0755"}])["msg"]
    # (Ansible masks a no_log value wherever it appears in the output, so the content is one that no message holds.)
    as_file = run(tmp_path, files=[{"path": str(tmp_path / "folder"), "content": "[Unit]\n", "mode": "0644"}])
    assert "is not a regular file" in as_file["msg"]
    no_folder = run(tmp_path, files=[{"path": str(tmp_path / "none" / "f"), "content": "[Unit]\n", "mode": "0644"}])
    assert "does not exist" in no_folder["msg"]
