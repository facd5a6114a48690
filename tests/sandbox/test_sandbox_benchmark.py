"""Speed of the sandbox from nothing: image build, `up`, `down` (run with `pytest -m benchmark`).

It uses a sandbox of its own with a fresh state folder, so the image is built from scratch; before that it
leaves a half-built root file system where the build will go, as an interrupted build would, and checks it is
redone.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from sandbox_helpers import free_port, glm_deploy

from glm_deploy.sandbox.image import ensure_ssh_key, image_reference

pytestmark = [pytest.mark.benchmark, pytest.mark.sandbox]

NAME = "glm-sbx-bench"


def test_cold_image_build_and_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"GLM_DEPLOY_SANDBOX_NAME": NAME, "GLM_DEPLOY_SANDBOX_DIR": str(tmp_path)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reference = image_reference(ensure_ssh_key())
    leftover = tmp_path / "image-build" / reference.rsplit(":", 1)[1]
    (leftover / "etc").mkdir(parents=True)
    (leftover.parent / f"{leftover.name}.in-progress").write_text("interrupted\n")
    try:
        hub_port = str(free_port())
        started = time.monotonic()
        up = glm_deploy("sandbox", "up", "--no-wheelhouse", "--hub-port", hub_port, "--json", env=env)
        up_seconds = time.monotonic() - started
        assert up.returncode == 0, up.stderr[-3000:]
        timings = json.loads(up.stdout)["timings_s"]
        assert not leftover.exists()
        warm_started = time.monotonic()
        again = glm_deploy("sandbox", "up", "--no-wheelhouse", "--hub-port", hub_port, "--json", env=env)
        warm_seconds = time.monotonic() - warm_started
        assert again.returncode == 0, again.stderr[-3000:]
        down_started = time.monotonic()
        down = glm_deploy("sandbox", "down", env=env)
        down_seconds = time.monotonic() - down_started
        assert down.returncode == 0, down.stderr
        print(
            f"\nsandbox cold up: {up_seconds:.1f} s (image build {timings.get('image_build')} s, hosts "
            f"{timings.get('hosts_start')} s, tiny model + hub {timings.get('model_and_hub')} s); "
            f"second up: {warm_seconds:.1f} s; down: {down_seconds:.1f} s"
        )
    finally:
        glm_deploy("sandbox", "down", env=env)
        subprocess.run(["podman", "rmi", "--force", reference], capture_output=True, check=False, env=os.environ)
