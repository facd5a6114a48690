"""The endpoint API key is used (401 without it) but written nowhere a person or a log collector would read it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from tests.equipment.fleet import Deployment, in_host

pytestmark = pytest.mark.sandbox


def _models(deployment: Deployment, key: str | None) -> int:
    request = urllib.request.Request(f"{deployment.base_url}/v1/models")
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert deployment.unit.removeprefix("glm-").removesuffix(".service") in json.load(answer)["data"][0]["id"]
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_the_endpoint_requires_the_key(deployment: Deployment) -> None:
    assert _models(deployment, None) == 401
    assert _models(deployment, "wrong-key-0123456789") == 401
    assert _models(deployment, deployment.api_key) == 200


def test_the_key_is_only_in_the_mode_0600_environment_file(deployment: Deployment) -> None:
    env_file = "/etc/glm-deploy/glm-tiny.env"
    stat = in_host(deployment.container, f"stat -c '%a %U' {env_file}")
    assert stat.stdout.split() == ["600", "root"]
    holders = in_host(
        deployment.container,
        f"grep -rlF -- {deployment.api_key!r} /etc /var/lib/glm-deploy /var/log /tmp /home /root 2>/dev/null || true",
        timeout=300,
    )
    assert holders.stdout.split() == [env_file]


def test_the_key_is_in_no_unit_journal_or_command_line(deployment: Deployment) -> None:
    unit = in_host(deployment.container, f"systemctl cat {deployment.unit}")
    assert unit.returncode == 0 and "ExecStart=" in unit.stdout
    assert deployment.api_key not in unit.stdout

    journal = in_host(deployment.container, "journalctl --no-pager --output=verbose", timeout=300)
    assert journal.returncode == 0 and deployment.unit in journal.stdout
    assert deployment.api_key not in journal.stdout

    command_lines = in_host(deployment.container, "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '")
    assert "vllm" in command_lines.stdout  # the engine is running, so its command line was searched
    assert deployment.api_key not in command_lines.stdout


def test_the_key_is_in_no_ansible_output_or_runner_artifact(deployment: Deployment) -> None:
    assert "PLAY RECAP" in deployment.output
    assert deployment.api_key not in deployment.output
    leaking = [
        str(path)
        for path in deployment.artifacts.rglob("*")
        if path.is_file() and deployment.api_key in path.read_text(errors="replace")
    ]
    assert leaking == []
