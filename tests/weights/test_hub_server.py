"""The sandbox Hub server speaks the protocol huggingface_hub expects (the real client is the judge)."""

from __future__ import annotations

import hashlib
import http.client
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

from glm_deploy.sandbox.hub import HubServer, HubStore

FILES = {
    "config.json": b'{"architectures": ["Glm4MoeForCausalLM"]}',
    "model.safetensors": bytes(range(256)) * 400,
    "tokenizer/tokenizer.json": b'{"model": {}}',
    "tokenizer/special/map.json": b"{}",
}


@pytest.fixture
def server(tmp_path: Path):
    store = HubStore(tmp_path / "store")
    with HubServer(store, tree_page_size=2) as running:
        yield running


def request(server: HubServer, method: str, path: str, headers: dict[str, str] | None = None):
    connection = http.client.HTTPConnection(server.host, server.port, timeout=10)
    connection.request(method, path, headers=headers or {})
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response, body


def test_revision_info_and_paginated_tree_match_what_was_published(server: HubServer):
    commit = server.store.publish("zai-org/tiny", FILES)
    api = HfApi(endpoint=server.url)

    info = api.model_info("zai-org/tiny", revision="main", files_metadata=True)
    tree = list(api.list_repo_tree("zai-org/tiny", revision=commit, recursive=True))

    assert info.sha == commit
    siblings = {sibling.rfilename: sibling for sibling in info.siblings or []}
    assert set(siblings) == set(FILES)
    lfs = siblings["model.safetensors"].lfs
    assert lfs is not None and lfs.sha256 == hashlib.sha256(FILES["model.safetensors"]).hexdigest()
    assert siblings["config.json"].lfs is None and siblings["config.json"].size == len(FILES["config.json"])
    # Six entries over pages of two: the client followed Link rel=next to the end.
    assert sorted(entry.path for entry in tree) == sorted([*FILES, "tokenizer", "tokenizer/special"])


def test_file_headers_and_ranges(server: HubServer):
    commit = server.store.publish("zai-org/tiny", FILES)
    data = FILES["model.safetensors"]
    path = f"/zai-org/tiny/resolve/{commit}/model.safetensors"

    head, _ = request(server, "HEAD", path)
    partial, body = request(server, "GET", path, {"Range": "bytes=100-199"})
    tail, tail_body = request(server, "GET", path, {"Range": "bytes=-10"})
    beyond, _ = request(server, "GET", path, {"Range": f"bytes={len(data)}-"})

    sha256 = hashlib.sha256(data).hexdigest()
    assert head.status == 200
    assert head.getheader("X-Repo-Commit") == commit
    assert head.getheader("ETag") == f'"{sha256}"' == head.getheader("X-Linked-Etag")
    assert head.getheader("X-Linked-Size") == head.getheader("Content-Length") == str(len(data))
    assert not [name for name in head.headers if name.lower().startswith("x-xet")]
    assert partial.status == 206 and body == data[100:200]
    assert partial.getheader("Content-Range") == f"bytes 100-199/{len(data)}"
    assert tail.status == 206 and tail_body == data[-10:]
    assert beyond.status == 416


def test_errors_carry_the_hubs_error_codes(server: HubServer):
    server.store.publish("zai-org/tiny", FILES)
    server.store.publish("zai-org/gated", FILES, gated=True)

    missing_repo, _ = request(server, "HEAD", "/zai-org/nope/resolve/main/config.json")
    missing_rev, _ = request(server, "GET", "/api/models/zai-org/tiny/revision/v2")
    missing_file, _ = request(server, "HEAD", "/zai-org/tiny/resolve/main/nope.bin")
    gated, _ = request(server, "HEAD", "/zai-org/gated/resolve/main/config.json")
    gated_ok, _ = request(server, "HEAD", "/zai-org/gated/resolve/main/config.json", {"Authorization": "Bearer x"})

    assert (missing_repo.status, missing_repo.getheader("X-Error-Code")) == (404, "RepoNotFound")
    assert (missing_rev.status, missing_rev.getheader("X-Error-Code")) == (404, "RevisionNotFound")
    assert (missing_file.status, missing_file.getheader("X-Error-Code")) == (404, "EntryNotFound")
    assert (gated.status, gated.getheader("X-Error-Code")) == (401, "GatedRepo")
    assert gated_ok.status == 200
    api = HfApi(endpoint=server.url)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("zai-org/nope")
    with pytest.raises(RevisionNotFoundError):
        api.model_info("zai-org/tiny", revision="v2")
    with pytest.raises(GatedRepoError):
        api.hf_hub_download("zai-org/gated", "config.json", cache_dir=str(server.store.root.parent / "c"))


def test_branches_move_and_old_commits_stay_servable(server: HubServer, tmp_path: Path):
    first = server.store.publish("zai-org/tiny", FILES)
    second = server.store.publish("zai-org/tiny", {**FILES, "config.json": b'{"revision": 2}'})

    cache = tmp_path / "cache"
    latest = Path(snapshot_download("zai-org/tiny", cache_dir=cache, endpoint=server.url))
    pinned = Path(snapshot_download("zai-org/tiny", revision=first, cache_dir=cache, endpoint=server.url))

    assert re_commit(second) and second != first
    assert latest.name == second and pinned.name == first
    assert (latest / "config.json").read_bytes() == b'{"revision": 2}'
    assert (pinned / "config.json").read_bytes() == FILES["config.json"]
    assert (pinned / "tokenizer" / "special" / "map.json").read_bytes() == b"{}"
    assert (cache / "models--zai-org--tiny" / "refs" / "main").read_text() == second


def re_commit(value: str) -> bool:
    return len(value) == 40 and all(ch in "0123456789abcdef" for ch in value)


@pytest.mark.playbook


def test_command_line_publishes_and_serves(tmp_path: Path):
    source = tmp_path / "model"
    (source / "sub").mkdir(parents=True)
    (source / "config.json").write_bytes(b"{}")
    (source / "sub" / "weights.safetensors").write_bytes(b"\x00" * 5000)
    port_file = tmp_path / "port"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "glm_deploy.sandbox.hub",
            "--root",
            str(tmp_path / "store"),
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--publish",
            f"zai-org/tiny={source}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 20
        while not port_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        port = int(port_file.read_text())
        info = HfApi(endpoint=f"http://127.0.0.1:{port}").model_info("zai-org/tiny", files_metadata=True)
        assert {sibling.rfilename for sibling in info.siblings or []} == {
            "config.json",
            "sub/weights.safetensors",
        }
    finally:
        process.terminate()
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert f"zai-org/tiny main {info.sha}" in out


def test_publish_rejects_bad_names(tmp_path: Path):
    store = HubStore(tmp_path)
    with pytest.raises(ValueError, match="repo id 'bad repo' is not valid"):
        store.publish("bad repo", FILES)
    with pytest.raises(ValueError, match="not a clean relative path"):
        store.publish("zai-org/tiny", {"../escape": b"x"})
