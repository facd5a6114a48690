"""The installed collection against a real host: `ansible-playbook glm.deploy.verify` from a user's venv (ansible-core
and the glm-deploy wheel, nothing from this checkout on its path), the tarball installed offline into an empty
collections path, run from a folder outside the repository with an empty ANSIBLE_CONFIG, on the fleet's deployed
sandbox host through the sandbox inventory.

tests/collection/test_installed_collection.py checks the install and its plays on localhost; this one checks that
the installed roles, modules and plugins reach and verify a served endpoint (health, the chat check, the quality
gate) as the checkout's do.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from tests.equipment.fleet import Deployment
from tests.equipment.installed_collection import install_collection
from tests.equipment.playbook import REPO

pytestmark = pytest.mark.sandbox


def test_the_installed_collection_verifies_the_deployed_host(
    deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> None:
    installed = install_collection(tmp_path_factory.mktemp("installed-on-host"))
    work = installed.outside / "project"
    work.mkdir()
    environment = {
        **installed.environment(installed.with_wheel),
        "GLM_API_KEY": deployment.api_key,
        "GLM_DEPLOY_SANDBOX_NAME": os.environ["GLM_DEPLOY_SANDBOX_NAME"],  # the fleet's, for the inventory script
    }
    command = [
        str(installed.with_wheel / "bin" / "ansible-playbook"),
        "glm.deploy.verify",
        "-i",
        str(REPO / "inventories" / "sandbox"),
        "--limit",
        deployment.container,
    ]
    run = subprocess.run(command, cwd=work, env=environment, capture_output=True, text=True, timeout=900, check=False)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    host = re.escape(deployment.container)
    recap = re.search(rf"{host}\s*:\s*ok=(\d+)\s+changed=\d+\s+unreachable=0\s+failed=0", output)
    assert recap and int(recap.group(1)) > 0, output[-3000:]
    # The roles ran from the installed collection, and the checks a deploy ends with passed through them.
    installed_roles = installed.collections / "ansible_collections" / "glm" / "deploy" / "roles"
    assert (installed_roles / "verify").is_dir()
    flat = " ".join(output.split())
    assert "glm.deploy.verify : " in flat, output[-3000:]
    assert "Ask the plan's question set and score the answers" in flat, output[-3000:]
    assert deployment.api_key not in output
    assert not list(Path(work).rglob("api_key")), "the key came from GLM_API_KEY: nothing is written beside it"
