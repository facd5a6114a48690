"""`glm-deploy client-env` (never prints the key) and `glm-deploy schedule` (units in a scratch unit dir)."""

from __future__ import annotations

import json
import shlex
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from tests.api.conftest import SECRET, Project, write_inventory

from glm_deploy.cli import build_parser, main


@pytest.fixture
def key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "keys" / "api_key"
    path.parent.mkdir()
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    monkeypatch.setenv("GLM_API_KEY_FILE", str(path))
    return path


@pytest.mark.playbook


def test_claude_code_environment_points_at_the_key_file_without_the_key(
    project: Project, tmp_path: Path, key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = write_inventory(tmp_path / "remote", address="10.1.2.3")
    assert main(["client-env", "--for", "claude-code", "-i", str(inventory)]) == 0
    out = capsys.readouterr().out
    assert SECRET not in out
    assert "export ANTHROPIC_BASE_URL=http://10.1.2.3:8000\n" in out
    assert f'export ANTHROPIC_AUTH_TOKEN="$(cat {key_file})"' in out
    for name in ("ANTHROPIC_MODEL", "ANTHROPIC_DEFAULT_OPUS_MODEL", "ANTHROPIC_DEFAULT_SONNET_MODEL"):
        assert f"export {name}=glm-tiny\n" in out
    # A shell that evaluates the lines gets the key; the text itself never carried it.
    shell = subprocess.run(
        ["sh", "-c", out + '\nprintf %s "$ANTHROPIC_AUTH_TOKEN"'], capture_output=True, text=True, check=True
    )
    assert shell.stdout == SECRET


@pytest.mark.playbook


def test_openai_environment_as_json(
    project: Project, tmp_path: Path, key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = write_inventory(tmp_path / "remote", address="10.1.2.3")
    assert main(["client-env", "--for", "openai", "-i", str(inventory), "--host", "192.0.2.7", "--json"]) == 0
    out = capsys.readouterr().out
    assert SECRET not in out
    document = json.loads(out)
    assert document["env"] == {
        "OPENAI_BASE_URL": "http://192.0.2.7:8000/v1",
        "OPENAI_API_KEY": f"$(cat {key_file})",
        "OPENAI_MODEL": "glm-tiny",
    }
    assert document["key_file"] == str(key_file)


def test_client_env_rejects_an_unknown_client(project: Project) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["client-env", "--for", "cursor", "-i", str(project.inventory)])
    assert raised.value.code == 2


def write_policy(directory: Path, project: Project, **overrides: Any) -> Path:
    fields = {"name": "nightly", "inventory": str(project.inventory), "on_calendar": "*-*-* 03:00:00"}
    fields.update(overrides)
    path = directory / "policy.yml"
    path.write_text("".join(f"{key}: {json.dumps(value)}\n" for key, value in fields.items()))
    return path


@pytest.mark.playbook


def test_schedule_install_list_remove(project: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    units = tmp_path / "units"
    environment_file = tmp_path / "schedule.env"
    environment_file.write_text(f"GLM_API_KEY={SECRET}\n")
    environment_file.chmod(0o600)
    policy = write_policy(
        tmp_path,
        project,
        environment_file=str(environment_file),
        randomized_delay="5m",
        follow={"revision": "revision-2"},
        serial="50%",
        min_output_tps=250,
    )

    code = main(["schedule", "--policy", str(policy), "--unit-dir", str(units), "--no-activate", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    service, timer = units / "glm-deploy-nightly.service", units / "glm-deploy-nightly.timer"
    assert sorted(result["files"]) == sorted([str(service), str(timer)])
    assert result["verified"] is (shutil.which("systemd-analyze") is not None)
    assert result["activated"] is False
    if not Path("/run/systemd/system").is_dir():
        assert any("inactive until systemd runs" in note for note in result["notes"])
    service_text, timer_text = service.read_text(), timer.read_text()
    assert SECRET not in service_text + timer_text
    assert f"EnvironmentFile={environment_file}" in service_text
    # The timer runs a redeploy policy: follow the branch, only when the release changed, gated and rolled.
    [exec_start] = [line for line in service_text.splitlines() if line.startswith("ExecStart=")]
    # systemd expands the specifier %% to % when it runs the line.
    argv = [word.replace("%%", "%") for word in shlex.split(exec_start.removeprefix("ExecStart="))]
    assert argv[1:] == [
        "redeploy",
        "--if-changed",
        "-i",
        str(project.inventory),
        "--revision",
        "revision-2",
        "--serial",
        "50%",
        "--min-output-tps",
        "250",
    ]
    # ... and the CLI accepts exactly that command line.
    parsed = build_parser().parse_args(argv[1:])
    assert (parsed.command_name, parsed.if_changed, parsed.revision, parsed.serial, parsed.min_output_tps) == (
        "redeploy",
        True,
        "revision-2",
        "50%",
        250.0,
    )
    assert "OnCalendar=*-*-* 03:00:00" in timer_text and "Unit=glm-deploy-nightly.service" in timer_text
    assert stat.S_IMODE(service.stat().st_mode) == 0o644

    assert main(["schedule", "--list", "--unit-dir", str(units), "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["name"] == "nightly" and listed["on_calendar"] == "*-*-* 03:00:00"

    assert main(["schedule", "--remove", "nightly", "--unit-dir", str(units)]) == 0
    capsys.readouterr()
    assert not service.exists() and not timer.exists()
    assert main(["schedule", "--list", "--unit-dir", str(units), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["schedule", "--remove", "nightly", "--unit-dir", str(units)]) == 2


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze to reject the calendar")
@pytest.mark.playbook
def test_schedule_rejects_a_bad_calendar_and_writes_nothing(
    project: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    units = tmp_path / "units"
    policy = write_policy(tmp_path, project, on_calendar="every full moon")
    assert main(["schedule", "--policy", str(policy), "--unit-dir", str(units), "--no-activate"]) == 2
    assert "every full moon" in capsys.readouterr().err
    assert not units.exists() or list(units.iterdir()) == []


def test_schedule_refuses_an_environment_file_others_can_read(
    project: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    environment_file = tmp_path / "schedule.env"
    environment_file.write_text("HF_TOKEN=x\n")
    environment_file.chmod(0o644)
    policy = write_policy(tmp_path, project, environment_file=str(environment_file))
    assert main(["schedule", "--policy", str(policy), "--unit-dir", str(tmp_path / "units"), "--no-activate"]) == 2
    assert "chmod 600" in capsys.readouterr().err
