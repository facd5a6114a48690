"""The server role's JIT warm-up runs the plan's image exactly as the unit does (image, GPUs, mounts, env file,
environment), with the warm-up's argv instead of the server's.

The expressions of `server/tasks/warmup.yml` are evaluated the way Ansible evaluates them (native Jinja2 types,
Ansible's filters and the collection's), from real plans, and compared with the ExecStart of the container unit
rendered from its template.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import jinja2
import jinja2.nativetypes
import pytest
import yaml
from ansible.plugins.filter.core import FilterModule as AnsibleCoreFilters
from ansible.plugins.filter.mathstuff import FilterModule as AnsibleMathFilters

from glm_deploy.catalog import load_catalog
from glm_deploy.render import render_plan

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "collections") not in sys.path:
    sys.path.insert(0, str(REPO / "collections"))

from ansible_collections.glm.deploy.plugins.filter.container import (  # noqa: E402
    FilterModule as ContainerFilters,
)
from ansible_collections.glm.deploy.plugins.filter.systemd import FilterModule as SystemdFilters  # noqa: E402

ROLE = REPO / "collection" / "roles" / "server"
CATALOG = load_catalog()
CONTAINER_PLANS = [
    (hardware, model, engine)
    for hardware, model, engine in (
        ("b200", "glm-5.1-fp8", "sglang"),
        ("h200", "glm-5-fp8", "sglang"),
        ("h100", "glm-5.1-fp8", "sglang"),
        ("h200", "glm-5.1-fp8", "vllm"),
        ("mi300x", "glm-5.1-fp8", "sglang"),
    )
]


def filters(env: jinja2.Environment) -> None:
    # Ansible's filters, except those that replace Jinja2's own (default): Ansible's expect its templar.
    for module in (AnsibleCoreFilters(), AnsibleMathFilters()):
        env.filters.update({k: f for k, f in module.filters().items() if k not in env.filters})
    for module in (SystemdFilters(), ContainerFilters()):
        env.filters.update({f"glm.deploy.{name}": f for name, f in module.filters().items()})


def unit_env() -> jinja2.Environment:
    env = jinja2.Environment(  # noqa: S701 - a unit file, not HTML
        trim_blocks=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True
    )
    filters(env)
    return env


def task_env() -> jinja2.nativetypes.NativeEnvironment:
    env = jinja2.nativetypes.NativeEnvironment(undefined=jinja2.StrictUndefined)
    filters(env)
    return env


def role_variables(plan: dict[str, Any], rank: int) -> dict[str, Any]:
    """What the role knows on node `rank`: its defaults, vars and the plan role's facts."""
    variables: dict[str, Any] = {
        "ansible_managed": "Ansible managed: do not edit",
        "server_plan": plan,
        "server_node_rank": rank,
        "_server_node": next(node for node in plan["nodes"] if node["rank"] == rank),
        "_server_env_file": f"/etc/glm-deploy/{plan['served_model_name']}.env",
        "server_start_timeout_s": plan["start_timeout_s"],
    }
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    env = task_env()
    for name in (
        "server_state_root",
        "server_user",
        "server_container_cli",
        "server_container_extra_args",
        "server_container_service",
        "server_warmup_timeout_s",
        "server_warmup_lock_file",
    ):
        value = defaults[name]
        variables[name] = env.from_string(value).render(variables) if isinstance(value, str) else value
    return variables


def warmup_block() -> dict[str, Any]:
    tasks = yaml.safe_load((ROLE / "tasks" / "warmup.yml").read_text())
    [block] = tasks
    assert isinstance(block, dict) and "block" in block
    return block


def evaluate_block_vars(variables: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    block_vars = warmup_block()["vars"]
    env = task_env()
    resolved = dict(variables)
    for name in names:
        resolved[name] = env.from_string(block_vars[name]).render(resolved)
    return resolved


def start_task_argv(resolved: dict[str, Any]) -> list[str]:
    [task] = [task for task in warmup_block()["block"] if task["name"].startswith("Start the JIT warm-up")]
    argv = task_env().from_string(task["ansible.builtin.command"]["argv"]).render(resolved)
    assert isinstance(argv, list)
    return [str(word) for word in argv]


def unit_exec_argv(variables: dict[str, Any]) -> list[str]:
    template = (ROLE / "templates" / "glm-server-container.service.j2").read_text()
    unit = unit_env().from_string(template).render(variables)
    [line] = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    return shlex.split(line.split("=", 1)[1].replace("%%", "%").replace("$$", "$"))


CONTAINER_VARS = (
    "_server_warmup",
    "_server_warmup_is_command",
    "_server_warmup_caches",
    "_server_warmup_argv",
    "_server_warmup_name",
    "_server_warmup_guard",
    "_server_warmup_container_argv",
)


@pytest.mark.parametrize(("hardware", "model", "engine"), CONTAINER_PLANS)
def test_the_filter_builds_the_units_own_docker_run(hardware: str, model: str, engine: str) -> None:
    plan = render_plan(CATALOG, model=model, engine=engine, hardware=hardware).to_dict()
    for node in plan["nodes"]:
        variables = role_variables(plan, node["rank"])
        built = ContainerFilters().filters()["container_run_argv"](
            plan,
            node=node,
            env_file=variables["_server_env_file"],
            docker=variables["server_container_cli"],
            extra_args=variables["server_container_extra_args"],
        )
        assert built == unit_exec_argv(variables)


def test_warmup_runs_the_units_container_with_the_precompile_argv() -> None:
    plan = render_plan(CATALOG, model="glm-5.1-fp8", engine="sglang", hardware="b200").to_dict()
    variables = role_variables(plan, 0)
    resolved = evaluate_block_vars(variables, CONTAINER_VARS)
    warmup = resolved["_server_warmup_container_argv"]
    unit = unit_exec_argv(variables)
    precompile = plan["warmup"]["nodes"][0]
    assert resolved["_server_warmup_argv"] == precompile
    assert resolved["_server_warmup_caches"] == {"deep_gemm": plan["cache_kinds"]["deep_gemm"]}

    # docker run --rm --name NAME: its own name, so it never collides with the serving container.
    assert warmup[:4] == unit[:4] == ["/usr/bin/docker", "run", "--rm", "--name"]
    assert (unit[4], warmup[4]) == ("glm-glm-5.1-fp8", "glm-glm-5.1-fp8-warmup")
    # Everything between the name and the entrypoint is the unit's: --pull never, env file, GPUs, ipc, network,
    # every cache and secret mount, every environment variable.
    unit_options, warmup_options = unit[5 : unit.index("--entrypoint")], warmup[5 : warmup.index("--entrypoint")]
    assert warmup_options == unit_options
    for expected in ("--env-file", "/etc/glm-deploy/glm-5.1-fp8.env", "--gpus", "all"):
        assert expected in warmup_options
    for mount in plan["container"]["mounts"]:
        assert f"{mount['source']}:{mount['target']}" + (":ro" if mount["read_only"] else "") in warmup_options
    assert f"SGLANG_DG_CACHE_DIR={plan['cache_kinds']['deep_gemm']}" in warmup_options
    # The same image, then the warm-up's own command.
    image_at = warmup.index(plan["container"]["image"])
    assert unit.index(plan["container"]["image"]) == image_at
    assert warmup[image_at - 2 : image_at] == ["--entrypoint", precompile[0]]
    assert warmup[image_at + 1 :] == precompile[1:]

    # One warm-up per host at a time, and a time limit that stops docker (and so the container).
    started = start_task_argv({**resolved, "server_plan": plan})
    timeout = str(plan["warmup"]["timeout_s"])
    assert started[: len(started) - len(warmup)] == [
        *("flock", "--wait", timeout, "/var/lib/glm-deploy/warmup.lock"),
        *("timeout", "--kill-after=60", timeout),
    ]
    assert started[-len(warmup) :] == warmup


def test_the_engine_image_fact_reaches_the_warmup_as_it_reaches_the_unit() -> None:
    plan = render_plan(CATALOG, model="glm-5.1-fp8", engine="sglang", hardware="h200").to_dict()
    digest = "glm-deploy/sglang@sha256:" + "c" * 64
    variables = {**role_variables(plan, 0), "glm_engine_image": digest}
    warmup = evaluate_block_vars(variables, CONTAINER_VARS)["_server_warmup_container_argv"]
    assert digest in warmup and plan["container"]["image"] not in warmup
    assert digest in unit_exec_argv(variables)


def test_secrets_stay_in_the_env_file() -> None:
    plan = render_plan(CATALOG, model="glm-5.1-fp8", engine="vllm", hardware="b200").to_dict()
    plan["container"]["env"]["VLLM_API_KEY"] = "sk-must-not-appear"
    built = ContainerFilters().filters()["container_run_argv"](plan, node=plan["nodes"][0], env_file="/e.env")
    assert not any("VLLM_API_KEY" in word for word in built)


def test_a_plan_without_a_precompile_command_builds_no_warmup_argv() -> None:
    plan = render_plan(CATALOG, model="glm-5.1-fp8", engine="vllm", hardware="b200").to_dict()
    resolved = evaluate_block_vars(role_variables(plan, 0), CONTAINER_VARS[:4])
    assert resolved["_server_warmup_is_command"] is False
    assert resolved["_server_warmup_argv"] == []
    assert resolved["_server_warmup_caches"] == {"vllm": plan["cache_kinds"]["vllm"]}
