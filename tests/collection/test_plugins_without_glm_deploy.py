"""The collection's controller plugins without the glm-deploy package: each fails its task saying how to install it.

A user who installs the collection from Galaxy or a tarball, and runs ansible-playbook from a Python without
glm-deploy, must read what to install and where (not "Unexpected Exception", rc 250, or a plugin skipped at load
time and a later "no filter named ..."). The playbook test runs the real ansible-playbook from a Python that has
ansible-core but cannot import glm_deploy, and calls every plugin that needs it.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from tests.equipment.load import load_file
from tests.equipment.playbook import ANSIBLE_PLAYBOOK, REPO, playbook_env

PLUGINS = REPO / "collection" / "plugins"
HELPER = PLUGINS / "plugin_utils" / "glm_deploy_package.py"

# Every controller plugin that calls glm_deploy, as its error names it, and a task that calls it.
CALLS: dict[str, dict[str, object]] = {
    "the glm.deploy.plan lookup": {
        "ansible.builtin.debug": {
            "msg": "{{ lookup('glm.deploy.plan', model='glm-tiny', engine='vllm-cpu', hardware='cpu') }}"
        }
    },
    "the glm.deploy.catalog lookup": {"ansible.builtin.debug": {"msg": "{{ lookup('glm.deploy.catalog', 'models') }}"}},
    "the glm.deploy.api_key lookup": {
        "ansible.builtin.debug": {"msg": "{{ lookup('glm.deploy.api_key', create=false) | length }}"}
    },
    "the glm.deploy.tls_cert lookup": {
        "ansible.builtin.debug": {"msg": "{{ lookup('glm.deploy.tls_cert', host='h1', names=['h1']) | length }}"}
    },
    "the glm.deploy.gpu_preflight filter": {
        "ansible.builtin.debug": {"msg": "{{ {'gpu': {}} | glm.deploy.gpu_preflight({}) }}"}
    },
    "the glm.deploy.release filter": {
        "ansible.builtin.debug": {"msg": "{{ {'model': 'glm-tiny'} | glm.deploy.release }}"}
    },
    "the glm.deploy.options_on_filesystem filter": {
        "ansible.builtin.debug": {"msg": "{{ {} | glm.deploy.options_on_filesystem('/lambda/nfs/weights') }}"}
    },
    "the glm.deploy.container_run_argv filter": {
        "ansible.builtin.debug": {"msg": "{{ {} | glm.deploy.container_run_argv(node={}, env_file='/tmp/env') }}"}
    },
    "the glm.deploy.systemd_escape_word filter": {
        "ansible.builtin.debug": {"msg": "{{ 'a b' | glm.deploy.systemd_escape_word }}"}
    },
    "the glm.deploy.systemd_command_line filter": {
        "ansible.builtin.debug": {"msg": "{{ ['a', 'b c'] | glm.deploy.systemd_command_line }}"}
    },
    "the glm.deploy.systemd_environment filter": {
        "ansible.builtin.debug": {"msg": "{{ {'A': 'b'} | glm.deploy.systemd_environment }}"}
    },
    "the glm.deploy.systemd_unsafe_values filter": {
        "ansible.builtin.debug": {"msg": "{{ {'A': 'b'} | glm.deploy.systemd_unsafe_values }}"}
    },
    "the glm.deploy.replan_skip_reason filter": {
        "ansible.builtin.debug": {"msg": "{{ {} | glm.deploy.replan_skip_reason(replan=true, options={}, "
        "preflight_image='', gpu_vendor='nvidia') }}"}
    },
    "the glm.deploy.replan_for_driver filter": {
        "ansible.builtin.debug": {"msg": "{{ {} | glm.deploy.replan_for_driver(options={}, cuda='13.0', chosen={}, "
        "driver_version='580') }}"}
    },
    "the glm.deploy.options_for_group filter": {
        "ansible.builtin.debug": {"msg": "{{ {} | glm.deploy.options_for_group(model='glm-tiny', engine='vllm-cpu', "
        "hardware='cpu', nodes=0, head_address='10.0.0.5') }}"}
    },
    "the glm.deploy.pin_to_commit filter": {
        "ansible.builtin.debug": {"msg": "{{ {} | glm.deploy.pin_to_commit(options={}, commit='') }}"}
    },
    "the glm.deploy.hf_prefetch_wait action": {"glm.deploy.hf_prefetch_wait": {"jid": "1", "poll_interval": 1}},
    "the glm.deploy.cache_warmup_wait action": {"glm.deploy.cache_warmup_wait": {"jid": "1", "poll_interval": 1}},
}

# Inventory plugins (no task calls them: ansible-inventory reads a configuration of each), with that configuration.
INVENTORIES: dict[str, dict[str, object]] = {
    "the glm.deploy.lambda_cloud inventory plugin": {"plugin": "glm.deploy.lambda_cloud"},
}

# The plugin files that import glm_deploy, and the plugins each holds.
FILES = {
    "lookup/plan.py": ["the glm.deploy.plan lookup"],
    "lookup/catalog.py": ["the glm.deploy.catalog lookup"],
    "lookup/api_key.py": ["the glm.deploy.api_key lookup"],
    "lookup/tls_cert.py": ["the glm.deploy.tls_cert lookup"],
    "filter/gpu_preflight.py": ["the glm.deploy.gpu_preflight filter"],
    "filter/release.py": ["the glm.deploy.release filter"],
    "filter/container.py": ["the glm.deploy.container_run_argv filter"],
    "filter/plan_options.py": ["the glm.deploy.options_on_filesystem filter"],
    "filter/systemd.py": [
        "the glm.deploy.systemd_escape_word filter",
        "the glm.deploy.systemd_command_line filter",
        "the glm.deploy.systemd_environment filter",
        "the glm.deploy.systemd_unsafe_values filter",
    ],
    "filter/replan.py": [
        "the glm.deploy.replan_skip_reason filter",
        "the glm.deploy.replan_for_driver filter",
        "the glm.deploy.options_for_group filter",
        "the glm.deploy.pin_to_commit filter",
    ],
    "action/hf_prefetch_wait.py": ["the glm.deploy.hf_prefetch_wait action"],
    "action/cache_warmup_wait.py": ["the glm.deploy.cache_warmup_wait action"],
    "inventory/lambda_cloud.py": ["the glm.deploy.lambda_cloud inventory plugin"],
}


def _python_without_glm_deploy(folder: Path) -> Path:
    """A virtual environment that sees this venv's packages (ansible-core and its libraries) through a .pth file,
    which does not run the .pth files found there, so glm-deploy's editable install is not on its path."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(purelib, "controller_libraries.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


@pytest.mark.playbook
def test_every_controller_plugin_says_how_to_install_glm_deploy(tmp_path: Path) -> None:
    python = _python_without_glm_deploy(tmp_path / "venv")
    probe = subprocess.run(
        [str(python), "-c", "import ansible, jinja2, yaml; import glm_deploy.catalog"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "No module named 'glm_deploy" in probe.stderr, probe.stderr  # ansible imports, glm_deploy does not

    messages = tmp_path / "messages.json"
    tasks = [
        {
            "name": plugin,
            "block": [{"name": f"Call {plugin}", **call}],
            "rescue": [
                {
                    "name": f"Keep what {plugin} said",
                    "ansible.builtin.set_fact": {
                        "said": "{{ said | combine({" + json.dumps(plugin) + ": ansible_failed_result.msg}) }}"
                    },
                }
            ],
        }
        for plugin, call in CALLS.items()
    ]
    tasks.append(
        {
            "name": "Write what each plugin said",
            "ansible.builtin.copy": {"content": "{{ said | to_json }}", "dest": str(messages), "mode": "0644"},
        }
    )
    playbook = tmp_path / "plugins.yml"
    playbook.write_text(
        json.dumps(
            [
                {
                    "name": "Every plugin",
                    "hosts": "localhost",
                    "gather_facts": False,
                    "vars": {"said": {}},
                    "tasks": tasks,
                }
            ]
        )
    )
    completed = subprocess.run(
        [
            str(python),
            str(ANSIBLE_PLAYBOOK),
            str(playbook),
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            f"ansible_python_interpreter={python}",
        ],
        env=playbook_env(home=tmp_path, drop_env=("PYTHONPATH", "VIRTUAL_ENV")),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "Unexpected Exception" not in output and "Skipping" not in output, output
    said = json.loads(messages.read_text())
    assert set(said) == set(CALLS), output
    for plugin, message in said.items():
        flat = " ".join(message.split())
        assert f"{plugin} needs the glm-deploy Python package on the controller" in flat, message
        assert f"`{python} -m pip install glm-deploy`" in flat, message
        assert "glm_deploy-<version>-py3-none-any.whl" in flat, message


@pytest.mark.playbook
@pytest.mark.parametrize("plugin", sorted(INVENTORIES))
def test_every_inventory_plugin_says_how_to_install_glm_deploy(tmp_path: Path, plugin: str) -> None:
    python = _python_without_glm_deploy(tmp_path / "venv")
    name = str(INVENTORIES[plugin]["plugin"]).rsplit(".", 1)[1]
    config = tmp_path / f"test.{name}.yml"
    config.write_text(json.dumps(INVENTORIES[plugin]))
    completed = subprocess.run(
        [str(python), str(ANSIBLE_PLAYBOOK.parent / "ansible-inventory"), "-i", str(config), "--list"],
        env=playbook_env(
            home=tmp_path, env={"ANSIBLE_INVENTORY_UNPARSED_FAILED": "1"}, drop_env=("PYTHONPATH", "VIRTUAL_ENV")
        ),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = " ".join((completed.stdout + completed.stderr).split())
    assert completed.returncode != 0, output
    assert f"{plugin} needs the glm-deploy Python package on the controller" in output, output
    assert f"`{python} -m pip install glm-deploy`" in output, output


def test_the_playbook_test_calls_every_plugin_that_imports_glm_deploy() -> None:
    """A new plugin that imports glm_deploy is added to CALLS above, and imports it only through the helper."""
    importers = set()
    for path in sorted(PLUGINS.glob("*/*.py")):
        if path.parent.name in ("modules", "module_utils"):
            continue  # run on the target, where glm_deploy never is
        tree = ast.parse(path.read_text())
        guarded = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.With) and "glm_deploy_imports" in ast.unparse(node.items[0].context_expr):
                guarded.update(id(inner) for inner in ast.walk(node))
                importers.add(f"{path.parent.name}/{path.name}")
        for node in ast.walk(tree):
            named = [node.module] if isinstance(node, ast.ImportFrom) else []
            named += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if any(name and name.split(".")[0] == "glm_deploy" for name in named):
                assert id(node) in guarded, f"{path}:{node.lineno} imports glm_deploy outside glm_deploy_imports"
    assert importers == set(FILES)
    assert sorted(plugin for plugins in FILES.values() for plugin in plugins) == sorted([*CALLS, *INVENTORIES])


def test_the_hint_names_the_plugin_the_python_and_the_install_command() -> None:
    helper = load_file("glm_deploy_package", HELPER)
    with pytest.raises(helper.GlmDeployMissing) as raised, helper.glm_deploy_imports("the glm.deploy.plan lookup"):
        raise ModuleNotFoundError("No module named 'glm_deploy'")
    message = str(raised.value)
    assert message.startswith("the glm.deploy.plan lookup needs the glm-deploy Python package on the controller")
    assert f"({sys.executable})" in message and "(No module named 'glm_deploy')" in message
    assert f"`{sys.executable} -m pip install glm-deploy`" in message
