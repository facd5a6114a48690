"""The deployed unit runs exactly the plan's command as the service user, with the hardening it was built with."""

from __future__ import annotations

import json
import re

import pytest
from tests.equipment.fleet import Deployment, in_host

from glm_deploy.catalog import load_catalog
from glm_deploy.render import PlanOptions, render_plan

pytestmark = pytest.mark.sandbox


def _show(deployment: Deployment, *properties: str) -> dict[str, str]:
    names = ",".join(properties)
    answer = in_host(deployment.container, f"systemctl show --property={names} {deployment.unit}")
    assert answer.returncode == 0, answer.stderr
    return dict(line.split("=", 1) for line in answer.stdout.splitlines() if "=" in line)


def test_exec_start_is_the_plans_argv(deployment: Deployment) -> None:
    # The unit runs the plan pinned to the commit of the release it serves (whichever the earlier tests left).
    state = json.loads(in_host(deployment.container, "cat /var/lib/glm-deploy/releases/state.json").stdout)
    release = json.loads(
        in_host(deployment.container, f"cat /var/lib/glm-deploy/releases/{state['current']}/release.json").stdout
    )
    assert re.fullmatch(r"[0-9a-f]{40}", release["model_commit"]), release
    plan = render_plan(
        load_catalog(),
        model="glm-tiny",
        engine="vllm-cpu",
        hardware="cpu",
        options=PlanOptions(revision=release["model_commit"]),
    )
    exec_start = _show(deployment, "ExecStart")["ExecStart"]
    argv = re.search(r"argv\[\]=(.*?) ;", exec_start)
    assert argv is not None, exec_start
    assert argv.group(1).split(" ") == [str(word) for word in plan.nodes[0].argv]


def test_unit_runs_as_glm_with_hardening_and_a_secrets_file(deployment: Deployment) -> None:
    shown = _show(
        deployment,
        "User",
        "Restart",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "NoNewPrivileges",
        "EnvironmentFiles",
        "TimeoutStartUSec",
    )
    assert shown["User"] == "glm"
    assert shown["Restart"] == "on-failure"
    assert shown["ProtectSystem"] == "strict"
    assert shown["ProtectHome"] == "yes"
    assert shown["PrivateTmp"] == "yes"
    assert shown["NoNewPrivileges"] == "yes"
    assert shown["EnvironmentFiles"].startswith("/etc/glm-deploy/glm-tiny.env")
    assert shown["TimeoutStartUSec"] == "7min"  # the catalog's start_timeout_s (420 s) for vllm-cpu
    processes = in_host(deployment.container, "ps -o user= -C vllm,python3 -o args= | grep -m1 'vllm serve'")
    assert processes.stdout.split()[0] == "glm"
