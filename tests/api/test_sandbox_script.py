"""scripts/sandbox.sh, the README's first command, with stand-ins for what it calls (issue 14, items 6 and 7).

The script and scripts/bootstrap.sh run from a copy of the repository's scripts in a throwaway root whose venv holds
stand-in `pip` and `glm-deploy` that record their arguments, and whose PATH has stand-ins for `dpkg-query` (every
package installed) and `ansible-playbook` (recorded: the script must not call it). What this proves:
- the deploy and the benchmark go through glm-deploy (the Python API, which records them in the history), never
  a bare ansible-playbook;
- a second run does not reinstall the package when pyproject.toml and the files under src/ are unchanged, and does
  reinstall when either changes, when an extra is missing or when GLM_REINSTALL=1;
- the benchmark runs with --if-new (a measured release is reused), and GLM_BENCHMARK=1 measures again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.playbook,
    pytest.mark.skipif(os.geteuid() != 0, reason="scripts/sandbox.sh refuses to run without root"),
]

REPO = Path(__file__).resolve().parents[2]

RECORDER = """#!/bin/sh
printf '%s\\n' "$(basename "$0") $*" >> "$CALLS"
"""

GLM_DEPLOY = RECORDER + """
case "$1" in
  client-env) printf '%s\\n' '{"base_url": "http://10.0.0.2:8000/v1", "model": "glm-tiny", "key_file": "/k"}' ;;
esac
"""


def executable(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A copy of the scripts, pyproject.toml and a src/ tree, with a venv of stand-ins."""
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    for name in ("sandbox.sh", "bootstrap.sh", "endpoint_summary.py"):
        shutil.copy2(REPO / "scripts" / name, root / "scripts" / name)
    shutil.copy2(REPO / "pyproject.toml", root / "pyproject.toml")
    (root / "src" / "glm_deploy").mkdir(parents=True)
    (root / "src" / "glm_deploy" / "__init__.py").write_text("")
    venv = root / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").symlink_to(sys.executable)
    executable(venv / "pip", RECORDER)
    executable(venv / "glm-deploy", GLM_DEPLOY)
    tools = tmp_path / "tools"
    executable(tools / "dpkg-query", "#!/bin/sh\nprintf 'install ok installed'\n")
    executable(tools / "ansible-playbook", RECORDER)
    return root


def run_script(root: Path, **env: str) -> list[str]:
    """Run scripts/sandbox.sh in `root` and return the stand-ins' calls, in order (the output is kept in
    `root/../output.txt`)."""
    calls = root.parent / "calls.txt"
    calls.unlink(missing_ok=True)
    completed = subprocess.run(
        ["bash", str(root / "scripts" / "sandbox.sh")],
        env={
            "PATH": f"{root.parent / 'tools'}:{os.environ['PATH']}",
            "HOME": str(root.parent),
            "CALLS": str(calls),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    (root.parent / "output.txt").write_text(completed.stdout)
    return calls.read_text().splitlines() if calls.exists() else []


def test_the_deploy_and_the_benchmark_go_through_glm_deploy(root: Path) -> None:
    calls = run_script(root)

    assert not [call for call in calls if call.startswith("ansible-playbook")], calls
    glm = [call for call in calls if call.startswith("glm-deploy")]
    assert glm[:3] == [
        "glm-deploy sandbox up",
        "glm-deploy deploy -i inventories/sandbox",
        "glm-deploy benchmark -i inventories/sandbox --if-new",
    ], glm
    assert "glm-deploy status -i inventories/sandbox" in glm
    assert "endpoint : http://10.0.0.2:8000/v1" in (root.parent / "output.txt").read_text(), "the summary ends it"


def test_glm_benchmark_1_measures_again(root: Path) -> None:
    calls = run_script(root, GLM_BENCHMARK="1")

    assert "glm-deploy benchmark -i inventories/sandbox" in calls, calls


def pip_installs(calls: list[str]) -> list[str]:
    return [call for call in calls if call.startswith("pip install -q -e")]


def test_a_second_run_installs_the_package_only_when_it_changed(root: Path) -> None:
    assert pip_installs(run_script(root)) == [f"pip install -q -e {root}[sandbox]"], "the first run installs"
    assert pip_installs(run_script(root)) == [], "nothing changed: no reinstall"

    (root / "src" / "glm_deploy" / "__init__.py").write_text("VERSION = 2\n")
    assert pip_installs(run_script(root)) == [], "the editable install reads src/ live: an edit needs no reinstall"

    (root / "src" / "glm_deploy" / "added.py").write_text("")
    assert len(pip_installs(run_script(root))) == 1, "a file added under src/"
    assert pip_installs(run_script(root)) == []

    pyproject = root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + "\n# a changed dependency\n")
    assert len(pip_installs(run_script(root))) == 1, "pyproject.toml changed"

    assert len(pip_installs(run_script(root, GLM_REINSTALL="1"))) == 1, "GLM_REINSTALL=1"
    assert len(pip_installs(run_script(root, GLM_EXTRAS="sandbox,plot"))) == 1, "an extra not installed yet"


def test_an_install_that_failed_is_not_recorded_as_current(root: Path) -> None:
    executable(root / ".venv" / "bin" / "pip", RECORDER + "exit 1\n")
    completed = subprocess.run(
        ["bash", str(root / "scripts" / "sandbox.sh")],
        env={"PATH": f"{root.parent / 'tools'}:{os.environ['PATH']}", "CALLS": str(root.parent / "calls.txt")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode != 0
    executable(root / ".venv" / "bin" / "pip", RECORDER)

    assert len(pip_installs(run_script(root))) == 1, "the next run installs again"
