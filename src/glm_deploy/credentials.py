"""The secrets a play needs, resolved on the controller: the endpoint API key and the Hugging Face token.

This module is the one place the endpoint API key comes from. `Deployment` calls `controller_secrets`; the
playbooks call the same code through the `glm.deploy.api_key` lookup (playbooks/tasks/api_key.yml), so
`glm-deploy deploy` and a plain `ansible-playbook site.yml` find, or make, the same key:

1. `GLM_API_KEY` in the controller's environment;
2. else the key file: `<secrets dir>/api_key` when a secrets directory is given (the play's `glm_secrets_dir`),
   else `$GLM_API_KEY_FILE`, else `.cache/secrets/api_key` in the project;
3. else, where the caller allows it, a new random key written to that file (48 letters and digits, mode 0600 in a
   folder of mode 0700) and reused by every later run.

A key set as the play variable `glm_api_key` (inventory, vault, -e) wins over all three in the playbooks; the
Python API passes its key as that variable.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import string
from pathlib import Path

from glm_deploy import paths
from glm_deploy.errors import InputError

API_KEY_FILE_NAME = "api_key"
# Letters and digits only: the key is written as a KEY=value line of an EnvironmentFile and into SGLang's YAML
# config, where these need no quoting.
API_KEY_ALPHABET = string.ascii_letters + string.digits
API_KEY_LENGTH = 48


def api_key_file(*, secrets_dir: str | Path | None = None, project_dir: str | Path | None = None) -> Path:
    """Where the controller keeps the endpoint API key: `secrets_dir/api_key` when `secrets_dir` is given, else
    `$GLM_API_KEY_FILE`, else `.cache/secrets/api_key` under `project_dir` (default: the project root)."""
    if secrets_dir:
        return Path(secrets_dir).expanduser().resolve() / API_KEY_FILE_NAME
    override = os.environ.get("GLM_API_KEY_FILE")
    if override:
        return Path(override).expanduser().resolve()
    root = Path(project_dir) if project_dir else paths.project_root()
    return root / ".cache" / "secrets" / API_KEY_FILE_NAME


def new_api_key() -> str:
    return "".join(secrets.choice(API_KEY_ALPHABET) for _ in range(API_KEY_LENGTH))


def _read_key(path: Path) -> str:
    key = path.read_text(encoding="utf-8").strip()
    if not key:
        raise InputError(
            f"the endpoint API key file {path} is empty",
            hint="write the key into it, or delete it so that the next deploy makes a new one",
        )
    return key


def _create_key(path: Path) -> str:
    """Write a new key to `path`, or read the one another run wrote there first."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = new_api_key()
    # Written whole under a private name, then linked into place: link() fails when the file exists, so two runs
    # that start at once end up with the same key, and a reader never sees a half-written file.
    staging = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(key + "\n")
        try:
            os.link(staging, path)
        except FileExistsError:
            return _read_key(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            staging.unlink()
    return key


def endpoint_api_key(*, key_file: Path | None = None, create: bool = False) -> str | None:
    """The endpoint API key: `GLM_API_KEY`, else the key file (default `api_key_file()`); when neither has one
    and `create` is true, a new key written to the file. None when there is none and `create` is false."""
    key = os.environ.get("GLM_API_KEY", "").strip()
    if key:
        return key
    path = key_file or api_key_file()
    if path.is_file():
        return _read_key(path)
    return _create_key(path) if create else None


def controller_secrets(*, create_api_key: bool = False) -> dict[str, str]:
    """The secrets a play needs, from the controller: `glm_api_key` (see `endpoint_api_key`; created when
    `create_api_key`) and `glm_hf_token` (HF_TOKEN, when set)."""
    found: dict[str, str] = {}
    key = endpoint_api_key(create=create_api_key)
    if key:
        found["glm_api_key"] = key
    token = os.environ.get("HF_TOKEN", "").strip()
    if token:
        found["glm_hf_token"] = token
    return found
