"""The endpoint API key comes from one place (glm_deploy.credentials): the environment, else the key file, else a new
key made once, privately, and reused. The playbooks reach the same code through the glm.deploy.api_key lookup
(tests/api/test_api_key_owner.py runs them)."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest

from glm_deploy.credentials import (
    API_KEY_ALPHABET,
    API_KEY_LENGTH,
    api_key_file,
    controller_secrets,
    endpoint_api_key,
)
from glm_deploy.errors import InputError


@pytest.fixture(autouse=True)
def _controller(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("GLM_API_KEY", "GLM_API_KEY_FILE", "HF_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GLM_DEPLOY_HOME", str(tmp_path / "project"))


def test_the_key_file_is_in_the_project_unless_an_override_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert api_key_file() == tmp_path / "project" / ".cache" / "secrets" / "api_key"
    assert api_key_file(project_dir=tmp_path / "other") == tmp_path / "other" / ".cache" / "secrets" / "api_key"
    monkeypatch.setenv("GLM_API_KEY_FILE", str(tmp_path / "keys" / "endpoint"))
    assert api_key_file(project_dir=tmp_path / "other") == tmp_path / "keys" / "endpoint"
    # The play's glm_secrets_dir is the most explicit choice.
    assert api_key_file(secrets_dir=tmp_path / "vault") == tmp_path / "vault" / "api_key"


def test_a_new_key_is_made_once_privately_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "project" / ".cache" / "secrets" / "api_key"
    assert endpoint_api_key() is None and not path.exists(), "nothing is made unless asked"

    key = endpoint_api_key(create=True)
    assert key is not None and len(key) == API_KEY_LENGTH and set(key) <= set(API_KEY_ALPHABET)
    assert path.read_text() == key + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert endpoint_api_key(create=True) == key
    assert endpoint_api_key() == key
    assert [entry.name for entry in path.parent.iterdir()] == ["api_key"], "no staging file is left behind"


def test_the_environment_wins_over_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "key"
    path.write_text("from-the-file\n")
    assert endpoint_api_key(key_file=path) == "from-the-file"
    monkeypatch.setenv("GLM_API_KEY", " from-the-environment\n")
    assert endpoint_api_key(key_file=path, create=True) == "from-the-environment"
    assert path.read_text() == "from-the-file\n"


def test_runs_that_start_together_get_one_key(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "api_key"
    start = threading.Barrier(8)
    keys: list[str | None] = []

    def make() -> None:
        start.wait()
        keys.append(endpoint_api_key(key_file=path, create=True))

    threads = [threading.Thread(target=make) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(keys) == 8 and len(set(keys)) == 1
    assert path.read_text() == f"{keys[0]}\n"


def test_an_empty_key_file_is_named_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "api_key"
    path.write_text("\n")
    with pytest.raises(InputError, match=str(path)):
        endpoint_api_key(key_file=path, create=True)
    assert path.read_text() == "\n"


def test_controller_secrets_name_the_play_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    assert controller_secrets() == {}
    monkeypatch.setenv("HF_TOKEN", "hf_token_value")
    secrets = controller_secrets(create_api_key=True)
    assert set(secrets) == {"glm_api_key", "glm_hf_token"} and secrets["glm_hf_token"] == "hf_token_value"
    assert controller_secrets()["glm_api_key"] == secrets["glm_api_key"]
