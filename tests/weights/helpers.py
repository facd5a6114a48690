"""Helpers for the weights tests: a model-shaped repository, the module runner, snapshot digests."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO_ROOT / "collections"
MODULE = "ansible_collections.glm.deploy.plugins.modules.hf_prefetch"
REPO_ID = "zai-org/GLM-tiny"


def make_model_files(seed: int, shard_sizes: list[int]) -> dict[str, bytes]:
    """A model-shaped repository: config, tokenizer and safetensors shards of chosen sizes (random bytes)."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    count = len(shard_sizes)
    files = {
        "config.json": json.dumps({"model_type": "glm4_moe", "seed": seed}).encode(),
        "tokenizer.json": json.dumps({"vocab": [f"t{index}" for index in range(200)]}).encode(),
    }
    for index, size in enumerate(shard_sizes, start=1):
        files[f"model-{index:05d}-of-{count:05d}.safetensors"] = rng.randbytes(size)
    return files


@dataclass
class Published:
    repo: str
    commit: str
    files: dict[str, bytes]


@dataclass
class ModuleRun:
    rc: int
    result: dict[str, Any]
    output: str

    @property
    def failed(self) -> bool:
        return bool(self.result.get("failed")) or self.rc != 0


def run_module(args: dict[str, Any], *, check_mode: bool = False, env: dict[str, str] | None = None) -> ModuleRun:
    """Run the module in its own interpreter as Ansible does: arguments in a JSON file, result on stdout."""
    payload = dict(args)
    payload["_ansible_check_mode"] = check_mode
    payload.setdefault("retry_backoff", 0.2)
    args_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"hf-prefetch-args-{os.getpid()}-{id(payload)}.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": payload}))
    try:
        child_env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HUGGING"))}
        # The repository's collection first; a PYTHONPATH already set (a machine where Ansible was installed with
        # pip --target, say) stays after it.
        child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(COLLECTIONS), os.environ.get("PYTHONPATH")]))
        child_env["HOME"] = str(args_file.parent)
        child_env.update(env or {})
        completed = subprocess.run(
            [sys.executable, "-m", MODULE, str(args_file)],
            capture_output=True,
            text=True,
            env=child_env,
            timeout=120,
            check=False,
        )
    finally:
        args_file.unlink()
    output = completed.stdout + completed.stderr
    try:
        result = json.loads(completed.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise AssertionError(f"module printed no JSON result (rc {completed.returncode}):\n{output}") from None
    return ModuleRun(completed.returncode, result, output)


def snapshot_digests(cache_dir: Path, repo: str, commit: str) -> dict[str, str]:
    """sha256 of every file in the commit's snapshot, read through its symlinks (what an engine loads)."""
    snapshot = cache_dir / f"models--{repo.replace('/', '--')}" / "snapshots" / commit
    return {
        path.relative_to(snapshot).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(snapshot.rglob("*"))
        if path.is_file()
    }


def expected_digests(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
