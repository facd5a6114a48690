"""glm.deploy installed the way an Ansible user installs it, standing alone: nothing from this checkout but the
collection's tarball and the glm-deploy wheel.

The module builds the tarball (`ansible-galaxy collection build`) and the wheel (`pip wheel`), installs the tarball
offline into an empty collections path, and makes two fresh virtual environments (no system site-packages): one
with ansible-core and the wheel, one with ansible-core only. Then, from a folder outside the repository (so nothing
resolves through its `collections/` or `ansible.cfg`), with ANSIBLE_COLLECTIONS_PATH naming the empty path only and
an empty ANSIBLE_CONFIG, a play on localhost uses the installed controller plugins, a role (two entry points) and
two modules; ansible-doc renders the installed documentation; and without the wheel the same play fails saying how to
install glm-deploy.

The venvs take the versions this test venv runs (a constraints file of its distributions), so pip installs them
from its cache when the cache is warm; a cold cache downloads them from the index.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from tests.equipment.installed_collection import (
    COLLECTION,
    GALAXY,
    TARBALL_NAME,
    Installed,
    build_tarball,
    install_collection,
    tarball_files,
)

from glm_deploy.catalog import load_catalog
from glm_deploy.container_run import container_run_argv
from glm_deploy.release import Release
from glm_deploy.render import PlanOptions, render_plan
from glm_deploy.systemd_text import systemd_command_line, systemd_environment

pytestmark = pytest.mark.playbook


# The sandbox's model on the CPU, and a GPU model whose plan runs the engine in a container.
TINY = {"model": "glm-tiny", "engine": "vllm-cpu", "hardware": "cpu"}
GPU = {"model": "glm-5.1-fp8", "engine": "sglang", "hardware": "h200"}
COMMIT = "0123456789abcdef0123456789abcdef01234567"
IMAGE_DIGEST = "sha256:" + "ab" * 32

# What a working tree may hold beside the collection's own files (each one is ignored by the repository's
# .gitignore or by ansible-galaxy): ansible-test's results, the execution environment's build inputs, Python's
# bytecode, the caches of Molecule, ansible-lint and the Python linters. None of it may reach the tarball.
JUNK = [
    "tests/output/junk/results.json",
    f"dist/{TARBALL_NAME}",
    f"dist/glm_deploy-{GALAXY['version']}-py3-none-any.whl",
    "plugins/filter/__pycache__/release.cpython-311.pyc",
    "plugins/modules/__pycache__/gpu_facts.cpython-311.pyc",
    "extensions/molecule/default/.cache/junk",
    ".ansible/collections/junk",
    "extensions/molecule/default/.ansible/junk",
    ".pytest_cache/junk",
    ".mypy_cache/junk",
    ".ruff_cache/junk",
    "glm_deploy.egg-info/PKG-INFO",
]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    return install_collection(tmp_path_factory.mktemp("installed-collection"))


def _git_files(folder: Path) -> set[str]:
    """The files of `folder` that git keeps or would keep (tracked, or new and not ignored), relative to it."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "."],
        cwd=folder,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {name for name in listed.split("\0") if name and (folder / name).is_file()}


def test_the_tarball_holds_the_collection_and_no_junk(installed: Installed, tmp_path: Path) -> None:
    # What `ansible-galaxy collection build collection/` made is the collection's own files: what git keeps of the
    # folder, galaxy.yml turned into MANIFEST.json and FILES.json.
    expected = (_git_files(COLLECTION) - {"galaxy.yml"}) | {"MANIFEST.json", "FILES.json"}
    assert tarball_files(installed.tarball) == expected

    # The same build from a copy of the folder strewn with the junk a working tree collects.
    copy = tmp_path / "collection"
    shutil.copytree(COLLECTION, copy, symlinks=True)
    for name in JUNK:
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_text("junk\n")
    built = tarball_files(build_tarball(copy, tmp_path / "build"))
    assert built == expected, f"junk in the tarball: {sorted(built - expected)}"


def test_the_tarball_installs_offline_into_an_empty_collections_path(installed: Installed) -> None:
    assert GALAXY["dependencies"] == {}, "the collection needs nothing from Galaxy, so it installs offline"
    assert f"{GALAXY['namespace']}.{GALAXY['name']}:{GALAXY['version']} was installed successfully" in (
        installed.install_output
    ), installed.install_output
    target = installed.collections / "ansible_collections" / "glm" / "deploy"
    manifest = json.loads((target / "MANIFEST.json").read_text())["collection_info"]
    assert (manifest["name"], manifest["version"], manifest["dependencies"]) == ("deploy", GALAXY["version"], {})
    assert not target.is_symlink() and (target / "roles" / "plan" / "meta" / "argument_specs.yml").is_file()

    # The venv's Ansible sees glm.deploy there and nowhere else.
    listed = installed.run(installed.with_wheel, ["ansible-galaxy", "collection", "list", "--format", "json"])
    assert listed.returncode == 0, listed.stderr
    holding = [path for path, collections in json.loads(listed.stdout).items() if "glm.deploy" in collections]
    assert holding == [str(installed.collections / "ansible_collections")], listed.stdout


def test_the_venvs_are_fresh_and_only_one_has_glm_deploy(installed: Installed) -> None:
    probe = "import ansible, sys; print(sys.prefix); import glm_deploy; print(glm_deploy.__file__)"
    with_wheel = installed.run(installed.with_wheel, ["python", "-c", probe])
    assert with_wheel.returncode == 0, with_wheel.stderr
    prefix, package = with_wheel.stdout.split()
    assert prefix == str(installed.with_wheel)
    assert Path(package).is_relative_to(installed.with_wheel / "lib"), package  # the wheel's copy, not src/
    without_wheel = installed.run(installed.without_wheel, ["python", "-c", probe])
    assert "No module named 'glm_deploy'" in without_wheel.stderr, without_wheel.stdout + without_wheel.stderr
    for venv in (installed.with_wheel, installed.without_wheel):
        assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()


def _play(installed: Installed, venv: Path, results: Path) -> tuple[Path, Path]:
    """The playbook and its inventory, written into the outside folder for `venv`'s Python."""
    inventory = installed.outside / f"{venv.name}-inventory.yml"
    inventory.write_text(
        json.dumps(
            {
                "glm_servers": {
                    "hosts": {
                        "localhost": {
                            "ansible_connection": "local",
                            "ansible_python_interpreter": str(venv / "bin" / "python"),
                        }
                    }
                }
            }
        )
    )
    recorded = {
        "tiny_plan": "{{ tiny_plan }}",
        "pinned_plan": "{{ glm_plan }}",
        "node_rank": "{{ glm_node_rank }}",
        "gpu_plan": "{{ gpu_plan }}",
        "gpu_unit_argv": "{{ gpu_unit_argv }}",
        "gpu_exec_start": "{{ gpu_unit_argv | glm.deploy.systemd_command_line }}",
        "tiny_exec_start": "{{ tiny_plan.nodes[0].argv | glm.deploy.systemd_command_line }}",
        "environment_line": "{{ 'HF_HOME' | glm.deploy.systemd_environment('/var/lib/glm deploy/%h') }}",
        "unsafe": "{{ {'A': __two_lines} | glm.deploy.systemd_unsafe_values }}",
        "release": f"{{{{ gpu_plan | glm.deploy.release(model_commit='{COMMIT}', image_digest='{IMAGE_DIGEST}') }}}}",
        "models": "{{ lookup('glm.deploy.catalog', 'models') | list }}",  # the catalog's model names
        "cache_state": "{{ __cache_state }}",
        "gpu_facts_said": "{{ __gpu_facts_said }}",
    }
    cache = installed.outside / f"{venv.name}-cache" / "triton"
    cache.mkdir(parents=True, exist_ok=True)
    (installed.outside / "no-tools").mkdir(exist_ok=True)
    playbook = installed.outside / f"{venv.name}-play.yml"
    playbook.write_text(
        json.dumps(
            [
                {
                    "name": "The installed glm.deploy on the controller",
                    "hosts": "glm_servers",
                    "gather_facts": False,
                    "vars": {
                        "glm_model": TINY["model"],
                        "glm_engine": TINY["engine"],
                        "glm_hardware": TINY["hardware"],
                        "plan_show": False,
                    },
                    "roles": ["glm.deploy.plan"],
                    "tasks": [
                        {
                            "name": "Keep the plan the role rendered",
                            "ansible.builtin.set_fact": {"tiny_plan": "{{ glm_plan }}"},
                        },
                        {
                            "name": "Pin it to a commit through the role's pin entry point",
                            "ansible.builtin.include_role": {"name": "glm.deploy.plan", "tasks_from": "pin"},
                            "vars": {"plan_pin_commit": COMMIT},
                        },
                        {
                            "name": "Render a GPU plan and the container command its unit runs",
                            "ansible.builtin.set_fact": {
                                "gpu_plan": "{{ __gpu_plan }}",
                                "gpu_unit_argv": (
                                    "{{ __gpu_plan | glm.deploy.container_run_argv(node=__gpu_plan.nodes[0], "
                                    "env_file=__gpu_plan.env_file) }}"
                                ),
                            },
                            "vars": {
                                "__gpu_plan": (
                                    f"{{{{ lookup('glm.deploy.plan', model='{GPU['model']}', "
                                    f"engine='{GPU['engine']}', hardware='{GPU['hardware']}') }}}}"
                                )
                            },
                        },
                        {
                            "name": "Mark a cache warm for the release with a module of the collection",
                            "glm.deploy.cache_state": {
                                "caches": {"triton": str(cache)},
                                "mark": True,
                                "release_id": "{{ (gpu_plan | glm.deploy.release).release_id }}",
                            },
                            "register": "__cache_state",
                        },
                        {
                            "name": "A module with module_utils: gpu_facts, on a host without a GPU tool",
                            "block": [
                                {
                                    "name": "Read the GPUs",
                                    "glm.deploy.gpu_facts": {"vendor": "nvidia", "check_docker": False},
                                    "environment": {"PATH": str(installed.outside / "no-tools")},
                                }
                            ],
                            "rescue": [
                                {
                                    "name": "Keep what gpu_facts said",
                                    "ansible.builtin.set_fact": {"__gpu_facts_said": "{{ ansible_failed_result.msg }}"},
                                }
                            ],
                        },
                        {
                            "name": "Write what the plugins, the role and the module gave",
                            "ansible.builtin.copy": {
                                "content": "{{ recorded | to_json }}",
                                "dest": str(results),
                                "mode": "0644",
                            },
                            "vars": {"recorded": recorded, "__two_lines": "line\nbreak"},
                        },
                    ],
                }
            ]
        )
    )
    return playbook, inventory


def _render(model: str, engine: str, hardware: str, **options: Any) -> dict[str, Any]:
    """The plan as this checkout's glm_deploy renders it (what `glm-deploy plan --json` prints), through JSON."""
    plan = render_plan(
        load_catalog(),
        model=model,
        engine=engine,
        hardware=hardware,
        nodes=None,
        options=PlanOptions.from_mapping(options),
    )
    rendered: dict[str, Any] = json.loads(json.dumps(plan.to_dict()))
    return rendered


def test_a_play_runs_on_the_installed_collection_and_the_wheel(installed: Installed) -> None:
    results = installed.outside / "results.json"
    playbook, inventory = _play(installed, installed.with_wheel, results)
    run = installed.run(installed.with_wheel, ["ansible-playbook", str(playbook), "-i", str(inventory)])
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "[WARNING]" not in output and "[DEPRECATION WARNING]" not in output, output
    got = json.loads(results.read_text())

    # The sandbox model through the plan role: what `glm-deploy plan` renders, served as glm-tiny by vLLM on CPU.
    tiny = got["tiny_plan"]
    assert tiny == _render(**TINY)
    assert tiny["served_model_name"] == "glm-tiny" and tiny["runtime"] == "native"
    argv = tiny["nodes"][0]["argv"]
    assert argv[1:3] == ["serve", "glm-deploy/glm-tiny"], argv
    assert argv[argv.index("--served-model-name") + 1] == "glm-tiny", argv
    assert got["tiny_exec_start"] == systemd_command_line(argv)
    assert got["tiny_exec_start"].startswith(f"{argv[0]} serve glm-deploy/glm-tiny "), got["tiny_exec_start"]
    assert str(got["node_rank"]) == "0"

    # The role's pin entry point rendered it again at the commit.
    assert got["pinned_plan"] == _render(**TINY, revision=COMMIT)
    assert got["pinned_plan"]["revision_pinned"] is True and got["pinned_plan"]["model_revision"] == COMMIT

    # A GPU model: SGLang on eight H200 in the engine's container, and the unit's docker command around it.
    gpu = got["gpu_plan"]
    assert gpu == _render(**GPU)
    assert gpu["served_model_name"] == "glm-5.1-fp8" and gpu["runtime"] == "container"
    node_argv = gpu["nodes"][0]["argv"]
    assert node_argv[:3] == ["python3", "-m", "sglang.launch_server"], node_argv
    assert node_argv[node_argv.index("--tp") + 1] == "8" and "glm-5.1-fp8" in node_argv, node_argv
    unit_argv = got["gpu_unit_argv"]
    assert unit_argv == container_run_argv(gpu, node=gpu["nodes"][0], env_file=gpu["env_file"])
    assert unit_argv[1:2] == ["run"] and gpu["image"] in unit_argv, unit_argv
    assert unit_argv[-len(node_argv) + 1 :] == node_argv[1:], unit_argv  # the engine's words after the image
    assert got["gpu_exec_start"] == systemd_command_line(unit_argv)

    # The other filters and the catalog lookup.
    assert got["environment_line"] == systemd_environment("HF_HOME", "/var/lib/glm deploy/%h")
    assert got["environment_line"] == '"HF_HOME=/var/lib/glm deploy/%%h"'
    assert got["unsafe"] == ["A: U+000A in 'line\\nbreak'"]
    release = Release.from_plan_document(gpu, model_commit=COMMIT, image_digest=IMAGE_DIGEST, venv_lock=None)
    assert got["release"] == json.loads(json.dumps(release.to_dict()))
    assert got["release"]["release_id"] == release.release_id
    assert got["models"] == list(load_catalog().raw["models"]) and "glm-tiny" in got["models"], got["models"]

    # Modules of the tarball ran on the host: one that marks a cache warm, one that imports the module_utils.
    cache = got["cache_state"]
    assert cache["changed"] is True and cache["marked"] == ["triton"] and cache["warm"] is True, cache
    unpinned = Release.from_plan_document(gpu, model_commit=None, image_digest=None, venv_lock=None)
    assert cache["caches"]["triton"]["release_id"] == unpinned.release_id, cache
    assert got["gpu_facts_said"].startswith("no GPU tool found: looked for nvidia-smi"), got["gpu_facts_said"]


def test_ansible_doc_renders_the_installed_documentation(installed: Installed) -> None:
    installed_at = str(installed.collections / "ansible_collections" / "glm" / "deploy")
    pages = {
        ("glm.deploy.quality_gate",): [
            "Sends every question of a fixed question set through the served chat endpoint",
            "base_url",
            "question_set",
            "max_drop_points",
            "RETURN VALUES",
        ],
        ("-t", "lookup", "glm.deploy.plan"): [
            "Calls glm_deploy.render.render_plan on the controller and returns Plan.to_dict()",
            "model Catalog model name",
            "hardware Catalog hardware name",
        ],
        ("-t", "role", "glm.deploy.plan"): [
            "ENTRY POINT: *main* - Render glm_plan from the catalog once",
            "ENTRY POINT: *pin* - Pin a plan that names a branch",
        ],
    }
    for arguments, lines in pages.items():
        page = installed.run(installed.with_wheel, ["ansible-doc", *arguments])
        assert page.returncode == 0, page.stdout + page.stderr
        flat = " ".join(page.stdout.split())
        assert installed_at in page.stdout, page.stdout
        for line in lines:
            assert line in flat, f"ansible-doc {' '.join(arguments)} lacks {line!r}:\n{page.stdout}"


def test_without_the_wheel_the_play_says_how_to_install_glm_deploy(installed: Installed) -> None:
    results = installed.outside / "results-without-wheel.json"
    playbook, inventory = _play(installed, installed.without_wheel, results)
    run = installed.run(installed.without_wheel, ["ansible-playbook", str(playbook), "-i", str(inventory)])
    output = run.stdout + run.stderr
    assert run.returncode == 2, output  # a failed task, not an unexpected exception (250)
    assert "Unexpected Exception" not in output, output
    assert not results.exists()
    # The first plugin the play calls is the filter that gives the plan lookup its options, in the plan role.
    flat = " ".join(output.replace("\\n", " ").split())
    python = installed.without_wheel / "bin" / "python"
    assert (
        "the glm.deploy.options_for_group filter needs the glm-deploy Python package on the controller, in the Python "
        f"that runs Ansible ({python}), and that Python cannot import it (No module named 'glm_deploy')"
    ) in flat, output
    assert f"`{python} -m pip install glm-deploy`" in flat, output
    assert f"`{python} -m pip install glm_deploy-<version>-py3-none-any.whl`" in flat, output

    # The documentation needs no glm-deploy: a user can read what to install before installing it.
    page = installed.run(installed.without_wheel, ["ansible-doc", "-t", "lookup", "glm.deploy.plan"])
    assert page.returncode == 0, page.stdout + page.stderr
    assert "Needs the glm-deploy Python package" in " ".join(page.stdout.split()), page.stdout


def test_the_installed_playbooks_run_by_name_and_keep_the_key_in_the_working_folder(installed: Installed) -> None:
    """`ansible-playbook glm.deploy.site`: the collection's own playbook, its imports and roles resolve from the
    installed collection. Only its `always` plays run here (the API key, the plan), on localhost: the key is made in
    the folder ansible-playbook runs in, never inside the installed collection."""
    work = installed.outside / "project"
    work.mkdir()
    inventory = work / "inventory.yml"
    inventory.write_text(
        json.dumps(
            {
                "glm_servers": {
                    "hosts": {
                        "localhost": {
                            "ansible_connection": "local",
                            "ansible_python_interpreter": str(installed.with_wheel / "bin" / "python"),
                        }
                    },
                    "vars": {"glm_model": TINY["model"], "glm_engine": TINY["engine"], "glm_hardware": "cpu"},
                }
            }
        )
    )
    environment = installed.environment(installed.with_wheel)
    environment.pop("GLM_API_KEY", None)
    command = ["ansible-playbook", "glm.deploy.site", "-i", str(inventory), "--tags", "plan-only"]
    run = subprocess.run(
        [str(installed.with_wheel / "bin" / command[0]), *command[1:]],
        cwd=work,
        env=environment,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "glm.deploy.plan : Render the plan once on the controller" in output, output
    assert "glm-tiny with vllm-cpu" in output, output
    key_file = work / ".cache" / "secrets" / "api_key"
    assert key_file.is_file(), output
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert key_file.read_text().strip() not in output
    assert not list(installed.collections.rglob("api_key")), "a key was written into the installed collection"

    listed = installed.run(
        installed.with_wheel, ["ansible-playbook", "glm.deploy.redeploy", "-i", str(inventory), "--list-tasks"]
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr
