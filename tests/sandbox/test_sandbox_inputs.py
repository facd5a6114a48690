"""What the sandbox says when it cannot work, and its parts that need no podman (inventory, wheelhouse)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from sandbox_helpers import REPO_ROOT, glm_deploy

from glm_deploy.sandbox import hosts
from glm_deploy.sandbox.environment import NAME_ENV, STATE_DIR_ENV, SandboxError, sandbox_name
from glm_deploy.sandbox.state import HostState, HubState, SandboxState, save_state
from glm_deploy.sandbox.wheelhouse import MANIFEST_NAME, ensure_wheelhouse

pytestmark = pytest.mark.sandbox

INVENTORY_SCRIPT = REPO_ROOT / "inventories" / "sandbox" / "sandbox_inventory.py"


def test_up_and_down_say_they_need_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    for action in (hosts.up, hosts.down):
        with pytest.raises(SandboxError) as raised:
            action()
        message = str(raised.value)
        assert "needs root" in message
        assert "podman, runc, debootstrap" in message


@pytest.mark.parametrize(("args", "named"), [(["--hosts", "0"], "--hosts 0"), (["--hub-port", "70000"], "--hub-port")])
def test_bad_up_arguments_exit_2_and_name_the_input(args: list[str], named: str) -> None:
    completed = glm_deploy("sandbox", "up", *args)
    assert completed.returncode == 2
    assert named in completed.stderr


def test_a_bad_sandbox_name_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NAME_ENV, "Bad Name!")
    with pytest.raises(SandboxError, match="not a valid sandbox name"):
        sandbox_name()


def test_a_corrupt_state_file_points_to_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path))
    (tmp_path / "state.json").write_text("{not json")
    completed = glm_deploy("sandbox", "status", env={STATE_DIR_ENV: str(tmp_path)})
    assert completed.returncode == 1
    assert "state.json" in completed.stderr and "glm-deploy sandbox down" in completed.stderr


def _inventory(state_dir: Path, *args: str) -> dict[str, object]:
    completed = subprocess.run(
        [str(INVENTORY_SCRIPT), *args],
        env={"PATH": "/usr/bin:/bin", STATE_DIR_ENV: str(state_dir)},
        capture_output=True,
        text=True,
        check=True,
    )
    parsed: dict[str, object] = json.loads(completed.stdout)
    return parsed


def test_inventory_script_lists_the_hosts_of_the_state_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path))
    save_state(
        SandboxState(
            network="glm-sandbox",
            image="localhost/glm-sandbox:0123",
            ssh_user="ubuntu",
            ssh_key=str(tmp_path / "id_ed25519"),
            image_recipe="f" * 64,
            hosts=[HostState("glm-sandbox-1", "10.89.0.2"), HostState("glm-sandbox-2", "10.89.0.3")],
            hub=HubState(
                url="http://10.89.0.1:8765",
                host="10.89.0.1",
                port=8765,
                pid=1,
                root="r",
                log="l",
                repo_id="glm-deploy/glm-tiny",
                revisions={"1": "a" * 40, "2": "b" * 40},
            ),
        )
    )
    listing = _inventory(tmp_path, "--list")
    group = listing["glm_servers"]
    assert isinstance(group, dict)
    assert group["hosts"] == ["glm-sandbox-1", "glm-sandbox-2"]
    assert group["vars"]["glm_hf_endpoint"] == "http://10.89.0.1:8765"
    assert group["vars"]["glm_sandbox_image_recipe"] == "f" * 64  # the engine image's cache key
    hostvars = _inventory(tmp_path, "--host", "glm-sandbox-2")
    assert hostvars == {
        "ansible_host": "10.89.0.3",
        "ansible_port": 22,
        "ansible_user": "ubuntu",
        "ansible_ssh_private_key_file": str(tmp_path / "id_ed25519"),
    }


def test_inventory_script_without_a_sandbox_lists_no_hosts(tmp_path: Path) -> None:
    listing = _inventory(tmp_path, "--list")
    assert listing["glm_servers"] == {"hosts": [], "vars": {}}


def test_wheelhouse_is_downloaded_once_and_redone_when_incomplete(tmp_path: Path) -> None:
    # A one-file distribution stands in for the 900 MB engine; the completeness logic is the same.
    first = ensure_wheelhouse("1.17.0", path=tmp_path, distribution="six")
    assert first.downloaded and first.files == 1
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert manifest["requirement"] == "six==1.17.0"
    second = ensure_wheelhouse("1.17.0", path=tmp_path, distribution="six")
    assert not second.downloaded
    [wheel] = tmp_path.glob("six-*.whl")
    wheel.write_bytes(wheel.read_bytes()[:100])  # a truncated file: the wheelhouse is no longer complete
    third = ensure_wheelhouse("1.17.0", path=tmp_path, distribution="six")
    assert third.downloaded
    assert wheel.stat().st_size == first.size_bytes
