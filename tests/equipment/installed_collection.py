"""glm.deploy installed the way an Ansible user installs it: the collection's tarball, installed offline into an
empty collections path, and two fresh venvs (ansible-core with the glm-deploy wheel, ansible-core alone).

tests/collection/test_installed_collection.py checks the install itself; the fleet's tests run a playbook of the
installed collection against a deployed sandbox host (tests/deploy/test_installed_collection_on_host.py).

The venvs take the versions this test venv runs (a constraints file of its distributions), so pip installs them
from its cache when the cache is warm; a cold cache downloads them from the index.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import subprocess
import sys
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from tests.equipment.playbook import REPO

COLLECTION = REPO / "collection"
GALAXY = yaml.safe_load((COLLECTION / "galaxy.yml").read_text())
TARBALL_NAME = f"{GALAXY['namespace']}-{GALAXY['name']}-{GALAXY['version']}.tar.gz"


@dataclass(frozen=True)
class Installed:
    """What the module's tests share: the built artefacts, the install, the two venvs and the outside folder."""

    tarball: Path
    wheel: Path
    install_output: str
    collections: Path  # the collections path the tarball was installed into, and the only one Ansible is given
    with_wheel: Path  # the venv with ansible-core and the glm-deploy wheel
    without_wheel: Path  # the venv with ansible-core only
    outside: Path  # the working folder of every Ansible command: outside the repository, no ansible.cfg
    home: Path

    def environment(self, venv: Path) -> dict[str, str]:
        """A user's shell with `venv` activated: nothing of this test process's Ansible, Python or venv settings."""
        return {
            "PATH": os.pathsep.join([str(venv / "bin"), "/usr/local/bin", "/usr/bin", "/bin"]),
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "TMPDIR": os.environ.get("TMPDIR", "/tmp"),
            "VIRTUAL_ENV": str(venv),
            "ANSIBLE_COLLECTIONS_PATH": str(self.collections),
            "ANSIBLE_CONFIG": str(self.outside / "empty.cfg"),
            "ANSIBLE_HOME": str(self.home / ".ansible"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
        }

    def run(self, venv: Path, command: Sequence[str], *, timeout: int = 120) -> subprocess.CompletedProcess[str]:
        """One of `venv`'s Ansible commands, from the outside folder (not checked)."""
        return subprocess.run(
            [str(venv / "bin" / command[0]), *command[1:]],
            cwd=self.outside,
            env=self.environment(venv),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _checked(command: Sequence[str | Path], *, timeout: int = 300, **kwargs: Any) -> str:
    """Run a set-up command; fail with its output when it fails; return stdout and stderr."""
    done = subprocess.run(
        [str(word) for word in command], capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(map(str, command))} failed (rc {done.returncode}):\n{output[-6000:]}"
    return output


def build_tarball(collection: Path, output: Path) -> Path:
    output.mkdir(parents=True, exist_ok=True)
    ansible_galaxy = Path(sys.executable).parent / "ansible-galaxy"
    _checked([ansible_galaxy, "collection", "build", collection, "--output-path", output])
    return output / TARBALL_NAME


def tarball_files(tarball: Path) -> set[str]:
    with tarfile.open(tarball) as archive:
        return {member.name for member in archive.getmembers() if member.isfile()}


def _venv(folder: Path, constraints: Path, *requirements: str | Path) -> Path:
    """A fresh venv (no system site-packages, no pip of its own) with `requirements`, installed by this venv's
    pip (`--python`), so that its cache serves both."""
    _checked([sys.executable, "-m", "venv", "--without-pip", folder])
    _checked(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            folder / "bin" / "python",
            "install",
            "-q",
            "-c",
            constraints,
            *requirements,
        ],
        timeout=600,
    )
    return folder


def install_collection(root: Path) -> Installed:
    """Build the tarball and the wheel, make both venvs and install the tarball offline; all under `root`."""
    assert not root.resolve().is_relative_to(REPO.resolve()), f"the test's folder {root} must lie outside {REPO}"
    outside, home, collections = root / "outside", root / "home", root / "collections"
    for folder in (outside, home, collections):
        folder.mkdir()
    (outside / "empty.cfg").write_text("")

    tarball = build_tarball(COLLECTION, root / "build")
    _checked([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", root / "wheels", REPO])
    (wheel,) = (root / "wheels").glob("glm_deploy-*.whl")

    # The versions this venv runs, for every distribution the new venvs may need: glm-deploy comes from the wheel,
    # and a local build (torch's +cpu) is on no index.
    pins = {
        dist.metadata["Name"].lower(): f"{dist.metadata['Name']}=={dist.version}\n"
        for dist in importlib.metadata.distributions()
        if dist.metadata["Name"] and "+" not in dist.version
    }
    pins.pop("glm-deploy", None)
    constraints = root / "constraints.txt"
    constraints.write_text("".join(pins.values()))
    with_wheel = _venv(root / "with-wheel", constraints, "ansible-core", wheel)
    without_wheel = _venv(root / "without-wheel", constraints, "ansible-core")

    made = Installed(tarball, wheel, "", collections, with_wheel, without_wheel, outside, home)
    install = made.run(
        with_wheel, ["ansible-galaxy", "collection", "install", "--offline", str(tarball), "-p", str(collections)]
    )
    assert install.returncode == 0, install.stdout + install.stderr
    return dataclasses.replace(made, install_output=install.stdout + install.stderr)
