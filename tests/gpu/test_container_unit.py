"""The container server unit rendered for every GPU hardware profile, then checked by systemd itself.

The template is rendered with Jinja2 configured as Ansible's template module configures it (trim_blocks), with
Ansible's own core filters and the collection's filters, from real plans (glm_deploy.render). When the machine
has `systemd-analyze`, each unit also passes `systemd-analyze verify`.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest
import yaml
from ansible.plugins.filter.core import FilterModule as AnsibleCoreFilters
from ansible_collections.glm.deploy.plugins.filter.container import FilterModule as ContainerFilters
from ansible_collections.glm.deploy.plugins.filter.systemd import FilterModule as SystemdFilters

from glm_deploy.catalog import load_catalog
from glm_deploy.cli import main as glm_deploy_main
from glm_deploy.errors import GlmDeployError
from glm_deploy.render import PlanOptions, render_plan

from .conftest import COLLECTION

CATALOG = load_catalog()
TEMPLATE = COLLECTION / "roles" / "server" / "templates" / "glm-server-container.service.j2"
GPU_HARDWARE = sorted(name for name, spec in CATALOG.hardware.items() if spec.vendor != "cpu")


def renderable_plans() -> list[tuple[str, str, str]]:
    """Every (hardware, model, engine) the renderer accepts with the container runtime."""
    combos = []
    for hardware in GPU_HARDWARE:
        for model in sorted(CATALOG.models):
            for engine in sorted(CATALOG.engines):
                if "container" not in CATALOG.engines[engine].runtimes:
                    continue
                try:
                    render_plan(CATALOG, model=model, engine=engine, hardware=hardware)
                except GlmDeployError:
                    continue
                combos.append((hardware, model, engine))
    return combos


PLANS = renderable_plans()


def environment() -> jinja2.Environment:
    # A unit file, not HTML: no autoescape, as in Ansible's template module.
    env = jinja2.Environment(  # noqa: S701
        trim_blocks=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True
    )
    # Ansible's core filters (comment, combine, ...), except those that replace Jinja2's own (default):
    # Ansible's versions expect its templar's undefined markers.
    env.filters.update({k: f for k, f in AnsibleCoreFilters().filters().items() if k not in env.filters})
    for module in (SystemdFilters(), ContainerFilters()):
        env.filters.update({f"glm.deploy.{name}": f for name, f in module.filters().items()})
    return env


# The role's own defaults of the container runtime (plain values, no templating in them).
ROLE_DEFAULTS = yaml.safe_load((COLLECTION / "roles" / "server" / "defaults" / "main.yml").read_text())
CONTAINER_DEFAULTS = {k: v for k, v in ROLE_DEFAULTS.items() if k.startswith("server_container_")}


def render_unit(plan: dict, rank: int, **extra: object) -> str:
    node = next(node for node in plan["nodes"] if node["rank"] == rank)
    variables = {
        **CONTAINER_DEFAULTS,
        "ansible_managed": "Ansible managed: do not edit",
        "server_plan": plan,
        "server_node_rank": rank,
        "_server_node": node,
        "_server_env_file": f"/etc/glm-deploy/{plan['served_model_name']}.env",
        "server_start_timeout_s": plan["start_timeout_s"],
        **extra,
    }
    return environment().from_string(TEMPLATE.read_text()).render(variables)


def directive(unit: str, key: str) -> str:
    values = [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith(f"{key}=")]
    assert len(values) == 1, f"{key}= appears {len(values)} times"
    return values[0]


def exec_argv(unit: str, key: str = "ExecStart") -> list[str]:
    # systemd's quoting for these words (double quotes, backslash escapes, %% and $$) matches the shell's
    # for the characters the plans hold, once %% and $$ are turned back into single characters.
    return shlex.split(directive(unit, key).lstrip("-").replace("%%", "%").replace("$$", "$"))


def test_every_gpu_hardware_profile_has_a_container_plan():
    assert {hardware for hardware, _, _ in PLANS} == set(GPU_HARDWARE)


@pytest.mark.parametrize(("hardware", "model", "engine"), PLANS)
def test_unit_runs_the_plan_in_a_container(hardware, model, engine):
    plan = render_plan(CATALOG, model=model, engine=engine, hardware=hardware).to_dict()
    container = plan["container"]
    for node in plan["nodes"]:
        unit = render_unit(plan, node["rank"])
        assert unit.startswith("#\n# Ansible managed: do not edit\n#\n")
        argv = exec_argv(unit)
        name = f"glm-{plan['served_model_name']}"
        assert argv[:9] == [
            "/usr/bin/docker",
            "run",
            "--rm",
            "--name",
            name,
            "--pull",
            "never",
            "--env-file",
            f"/etc/glm-deploy/{plan['served_model_name']}.env",
        ]
        image_at = argv.index(container["image"])
        assert argv[image_at - 2 : image_at] == ["--entrypoint", node["argv"][0]]
        assert argv[image_at + 1 :] == node["argv"][1:]
        options = argv[:image_at]
        for mount in container["mounts"]:
            expected = f"{mount['source']}:{mount['target']}" + (":ro" if mount["read_only"] else "")
            assert expected in options
        for key, value in {**container["env"], **node["env"]}.items():
            if key not in plan["secret_env"]:
                assert f"{key}={value}" in options
        assert tuple(options[options.index("--ipc") : options.index("--ipc") + 2]) == ("--ipc", "host")
        if CATALOG.hardware[hardware].vendor == "nvidia":
            assert options[options.index("--gpus") + 1] == "all"
        else:
            assert "--gpus" not in options
            assert options.count("--device") == 2
        assert exec_argv(unit, "ExecStartPre") == ["/usr/bin/docker", "rm", "--force", name]
        assert directive(unit, "ExecStartPre").startswith("-")
        assert exec_argv(unit, "ExecStop") == ["/usr/bin/docker", "stop", "-t", "60", name]
        assert directive(unit, "Restart") == "on-failure"
        assert directive(unit, "TimeoutStartSec") == str(plan["start_timeout_s"])


def container_plans_on_every_hardware() -> list[tuple[str, str, str]]:
    """Every (hardware, model, engine) the renderer accepts with the container runtime, CPU hardware included."""
    combos = []
    for hardware in sorted(CATALOG.hardware):
        for model in sorted(CATALOG.models):
            for engine in sorted(CATALOG.engines):
                if "container" not in CATALOG.engines[engine].runtimes:
                    continue
                options = PlanOptions(runtime="container")
                try:
                    render_plan(CATALOG, model=model, engine=engine, hardware=hardware, options=options)
                except GlmDeployError:
                    continue
                combos.append((hardware, model, engine))
    return combos


CONTAINER_PLANS = container_plans_on_every_hardware()


def printed_commands(output: str) -> dict[int, list[str]]:
    """The command `glm-deploy plan` prints under each "Node RANK (role):" heading, as words."""
    commands: dict[int, list[str]] = {}
    lines = output.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("Node ") and line.endswith("):"):
            rank = int(line.split()[1])
            block = []
            for text in lines[index + 1 :]:
                if not text.strip():
                    break
                block.append(text.strip().removesuffix("\\"))
            commands[rank] = shlex.split(" ".join(block))
    return commands


def test_every_hardware_profile_and_engine_has_a_printed_container_plan():
    assert {hardware for hardware, _, _ in CONTAINER_PLANS} == set(CATALOG.hardware)
    assert {engine for _, _, engine in CONTAINER_PLANS} == {
        name for name, spec in CATALOG.engines.items() if "container" in spec.runtimes
    }


@pytest.mark.parametrize(("hardware", "model", "engine"), CONTAINER_PLANS)
def test_glm_deploy_plan_prints_the_argv_the_unit_runs(capsys, hardware, model, engine):
    # What a user is shown is what runs: the printed command of every node is its unit's ExecStart, word for word.
    args = ["plan", "--model", model, "--engine", engine, "--hardware", hardware, "--runtime", "container"]
    assert glm_deploy_main(args) == 0
    printed = printed_commands(capsys.readouterr().out)
    options = PlanOptions(runtime="container")
    plan = render_plan(CATALOG, model=model, engine=engine, hardware=hardware, options=options).to_dict()
    assert sorted(printed) == [node["rank"] for node in plan["nodes"]]
    for node in plan["nodes"]:
        unit = render_unit(plan, node["rank"], _server_env_file=plan["env_file"])
        assert printed[node["rank"]] == exec_argv(unit)


def test_secrets_never_reach_the_unit():
    plan = render_plan(CATALOG, model="glm-5.1-fp8", engine="vllm", hardware="b200").to_dict()
    assert plan["secret_env"] == ["VLLM_API_KEY"]
    # Even if a secret name slipped into the plan's environment, the unit must not carry it.
    plan["container"]["env"]["VLLM_API_KEY"] = "sk-must-not-appear"
    unit = render_unit(plan, 0)
    assert "sk-must-not-appear" not in unit
    assert "VLLM_API_KEY" not in unit


def test_engine_image_fact_replaces_the_plan_image():
    plan = render_plan(CATALOG, model="glm-5.1-fp8", engine="vllm", hardware="h200").to_dict()
    digest = "glm-deploy/vllm@sha256:" + "c" * 64
    argv = exec_argv(render_unit(plan, 0, glm_engine_image=digest))
    assert digest in argv
    assert plan["container"]["image"] not in argv


def test_json_and_percent_arguments_survive_systemd_quoting():
    plan = render_plan(CATALOG, model="glm-5.1-fp8", engine="sglang", hardware="b200").to_dict()
    plan["nodes"][0]["argv"] += ["--json-model-override-args", '{"index_topk_pattern": "FFS"}', "--x", "50%"]
    argv = exec_argv(render_unit(plan, 0))
    assert argv[-4:] == ["--json-model-override-args", '{"index_topk_pattern": "FFS"}', "--x", "50%"]


SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def one_plan_per_hardware_and_engine() -> list[tuple[str, str, str]]:
    seen: dict[tuple[str, str], tuple[str, str, str]] = {}
    for combo in PLANS:
        seen.setdefault((combo[0], combo[2]), combo)
    return sorted(seen.values())


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed on this machine")
@pytest.mark.parametrize(("hardware", "model", "engine"), one_plan_per_hardware_and_engine())
@pytest.mark.playbook
def test_systemd_analyze_verify(tmp_path: Path, hardware, model, engine):
    # verify insists that ExecStart's binary exists and that Requires= units load: a stand-in docker CLI and a
    # stand-in docker.service (what the docker package installs) sit in the unit's folder.
    docker = tmp_path / "docker"
    docker.write_text("#!/bin/sh\nexit 0\n")
    docker.chmod(0o755)
    (tmp_path / "docker.service").write_text("[Unit]\nDescription=stand-in\n[Service]\nExecStart=/bin/true\n")
    plan = render_plan(CATALOG, model=model, engine=engine, hardware=hardware).to_dict()
    for node in plan["nodes"]:
        unit_path = tmp_path / f"glm-{plan['served_model_name']}-{node['rank']}.service"
        unit_path.write_text(render_unit(plan, node["rank"], server_container_cli=str(docker)))
        completed = subprocess.run(
            [SYSTEMD_ANALYZE, "verify", "--man=no", str(unit_path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        problems = [
            line
            for line in (completed.stdout + completed.stderr).splitlines()
            if unit_path.name in line or "docker" in line
        ]
        assert completed.returncode == 0 and not problems, completed.stdout + completed.stderr
