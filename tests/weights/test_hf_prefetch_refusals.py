"""Bad input is refused with a message that names the problem and the fix, before a byte is written."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.equipment.hub_faults import FaultyHub
from tests.weights.helpers import REPO_ID, Published, expected_digests, run_module, snapshot_digests

pytestmark = pytest.mark.playbook

TOKEN = "hf_glmDeployTestTokenNeverPrintMe1234567890"


def args_for(hub: FaultyHub, cache_dir: Path, **extra: object) -> dict[str, object]:
    args: dict[str, object] = {
        "repo": REPO_ID,
        "revision": "main",
        "cache_dir": str(cache_dir),
        "endpoint": hub.url,
    }
    args.update(extra)
    return args


def assert_nothing_written(cache_dir: Path) -> None:
    written = [path for path in cache_dir.rglob("*") if path.is_file()] if cache_dir.exists() else []
    assert written == [], f"files written before the refusal: {written}"


@pytest.fixture
def gated(hub: FaultyHub) -> Published:
    files = {"config.json": b'{"gated": true}', "model.safetensors": b"\x01" * 70_000}
    return Published("zai-org/GLM-gated", hub.store.publish("zai-org/GLM-gated", files, gated=True), files)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of 1 MiB (root only: mount is how a full or read-only filesystem is made for real)."""
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mountpoint)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def test_missing_repository(hub: FaultyHub, model: Published, cache_dir: Path):
    run = run_module(args_for(hub, cache_dir, repo="zai-org/GLM-does-not-exist"))

    assert run.failed
    assert "repository zai-org/GLM-does-not-exist was not found at http://127.0.0.1:" in run.result["msg"]
    assert "HF_TOKEN" in run.result["msg"]
    assert_nothing_written(cache_dir)


def test_missing_revision(hub: FaultyHub, model: Published, cache_dir: Path):
    run = run_module(args_for(hub, cache_dir, revision="v9.9"))

    assert run.failed
    assert f"revision 'v9.9' was not found in {REPO_ID}" in run.result["msg"]
    assert "40-hex commit" in run.result["msg"]
    assert_nothing_written(cache_dir)


def test_gated_repository_without_a_token_names_hf_token(hub: FaultyHub, gated: Published, cache_dir: Path):
    run = run_module(args_for(hub, cache_dir, repo=gated.repo))

    assert run.failed
    assert f"{gated.repo} is a gated repository and no token was given" in run.result["msg"]
    assert "set HF_TOKEN" in run.result["msg"]
    assert_nothing_written(cache_dir)
    assert hub.stats.file_bytes_sent == 0


def test_gated_repository_with_a_token_downloads_and_never_shows_the_token(
    hub: FaultyHub, gated: Published, cache_dir: Path, tmp_path: Path
):
    progress = tmp_path / "progress.json"
    with_param = run_module(args_for(hub, cache_dir, repo=gated.repo, token=TOKEN, progress_file=str(progress)))
    # The module also takes the token from HF_TOKEN in its environment, as the docs say.
    from_env = run_module(args_for(hub, cache_dir, repo=gated.repo), env={"HF_TOKEN": TOKEN})

    assert not with_param.failed, with_param.output
    assert not from_env.failed, from_env.output
    assert snapshot_digests(cache_dir, gated.repo, gated.commit) == expected_digests(gated.files)
    for run in (with_param, from_env):
        assert TOKEN not in run.output
    assert TOKEN not in progress.read_text()
    for path in cache_dir.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), f"token written to {path}"


def test_a_refused_token_is_an_error_that_does_not_show_it(tmp_path: Path, cache_dir: Path):
    with FaultyHub(tmp_path / "store", tokens=["hf_theOnlyGoodToken"]) as hub:
        hub.store.publish("zai-org/GLM-gated", {"model.safetensors": b"\x02" * 1000}, gated=True)
        run = run_module(args_for(hub, cache_dir, repo="zai-org/GLM-gated", token=TOKEN))

    assert run.failed
    assert "refused" in run.result["msg"]
    assert TOKEN not in run.output
    assert_nothing_written(cache_dir)


def test_read_only_filesystem(hub: FaultyHub, model: Published, tmpfs: Path):
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    cache_dir = tmpfs / "hf" / "hub"

    run = run_module(args_for(hub, cache_dir))

    assert run.failed
    assert f"cache_dir {cache_dir} is on a read-only filesystem" in run.result["msg"]
    assert hub.stats.file_bytes_sent == 0


def test_full_filesystem_is_refused_with_the_numbers(hub: FaultyHub, model: Published, tmpfs: Path):
    cache_dir = tmpfs / "hf" / "hub"
    total = sum(len(data) for data in model.files.values())

    run = run_module(args_for(hub, cache_dir))

    assert run.failed
    message = run.result["msg"]
    assert f"not enough space for {REPO_ID}@{model.commit[:12]} in {cache_dir}" in message
    assert f"({total} bytes) still to download" in message
    assert run.result["bytes_missing"] == total
    assert run.result["bytes_free"] <= 1024 * 1024
    assert not cache_dir.exists()
    assert hub.stats.file_bytes_sent == 0


def test_free_space_reserve_counts(hub: FaultyHub, model: Published, cache_dir: Path):
    free = shutil.disk_usage(cache_dir.parent.parent).free

    run = run_module(args_for(hub, cache_dir, free_space_reserve_bytes=free))

    assert run.failed
    assert "kept in reserve" in run.result["msg"] and "lower free_space_reserve_bytes" in run.result["msg"]
    assert_nothing_written(cache_dir)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"repo": "not a repo"}, "repo 'not a repo' is not a Hub repository id"),
        ({"cache_dir": "relative/hub"}, "cache_dir 'relative/hub' must be an absolute path"),
        ({"max_workers": 0}, "max_workers 0 must be between 1 and 64"),
        ({"endpoint": "hub.local:8080"}, "endpoint 'hub.local:8080' is not an http(s) URL"),
        ({"retry_budget_s": -1}, "retry_budget_s -1 must be 0 or more seconds"),
        ({"stall_timeout": 0}, "stall_timeout 0.0 must be a positive number of seconds"),
    ],
)
def test_bad_parameters(hub: FaultyHub, cache_dir: Path, override: dict[str, object], expected: str):
    run = run_module({**args_for(hub, cache_dir), **override})

    assert run.failed
    assert expected in run.result["msg"]
    assert hub.stats.requests == {}, "a bad parameter should be refused before contacting the Hub"


def test_missing_huggingface_hub_says_where_it_should_come_from(cache_dir: Path, tmp_path: Path):
    """An interpreter without huggingface_hub (not the weights venv) gets told which venv to use."""
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {"repo": REPO_ID, "cache_dir": str(cache_dir)}}))
    import ansible
    from tests.weights.helpers import COLLECTIONS, MODULE

    ansible_parent = str(Path(ansible.__file__).parent.parent)
    shadow = tmp_path / "shadow"
    (shadow / "huggingface_hub").mkdir(parents=True)
    (shadow / "huggingface_hub" / "__init__.py").write_text("raise ImportError('simulated: not installed')\n")
    completed = subprocess.run(
        [
            shutil.which("python3") or "python3",
            "-c",
            f"import sys; sys.argv[1:]=[sys.argv[-1]]; import runpy; runpy.run_module('{MODULE}', run_name='__main__')",
            str(args_file),
        ],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": f"{shadow}:{COLLECTIONS}:{ansible_parent}", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["failed"]
    assert "huggingface_hub is not installed for" in result["msg"]
    assert "/var/lib/glm-deploy/venvs/hub" in result["msg"]
