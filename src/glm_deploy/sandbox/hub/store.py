"""The sandbox Hub's storage: repositories on disk as immutable commits (the package's docstring has the protocol).

Every publish makes a new 40-hex commit; branches such as `main` move; old commits stay servable. Files are
stored once by content, with the sizes and sha256 the Hub reports for LFS files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Files the Hub's default .gitattributes routes through LFS, plus anything at least this large.
LFS_SUFFIXES = (
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".ckpt",
    ".gguf",
    ".h5",
    ".msgpack",
    ".onnx",
    ".npz",
    ".npy",
)
LFS_MIN_SIZE = 10 * 1024 * 1024
# Size of the pointer file git would store for an LFS object; clients only display it.
LFS_POINTER_SIZE = 134
# Matched with fullmatch: `$` would also match before a trailing newline.
_REPO_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
_BRANCH = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,199}")
_COPY_CHUNK = 1024 * 1024


class HubStoreError(Exception):
    """A lookup in the store failed; `code` is the Hub's X-Error-Code for it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclasses.dataclass(frozen=True)
class FileEntry:
    """One file of one commit."""

    path: str
    size: int
    sha256: str
    git_oid: str  # git's blob id: sha1 over "blob <size>\0" + content
    lfs: bool

    @property
    def etag(self) -> str:
        """What the Hub sends as the file's ETag: the sha256 for LFS files, the git blob id otherwise."""
        return self.sha256 if self.lfs else self.git_oid


@dataclasses.dataclass(frozen=True)
class Commit:
    repo_id: str
    sha: str
    parent: str | None
    created: str
    files: Mapping[str, FileEntry]


def validate_repo_id(repo_id: str) -> str:
    parts = repo_id.split("/")
    if not 1 <= len(parts) <= 2 or not all(_REPO_PART.fullmatch(part) for part in parts):
        raise ValueError(
            f"repo id {repo_id!r} is not valid: use 'namespace/name' made of letters, digits, '.', '_' and '-'"
        )
    return repo_id


def _validate_filename(name: str) -> str:
    parts = name.split("/")
    if not name or name.startswith("/") or any(part in ("", ".", "..") for part in parts) or "\\" in name:
        raise ValueError(f"file name {name!r} is not a clean relative path inside the repository")
    return name


def _hash_source(source: Path | bytes) -> tuple[int, str, str]:
    """(size, sha256, git blob id) of a file or a byte string, read once."""
    sha256 = hashlib.sha256()
    if isinstance(source, bytes):
        size = len(source)
        git = hashlib.sha1(f"blob {size}\0".encode(), usedforsecurity=False)
        sha256.update(source)
        git.update(source)
        return size, sha256.hexdigest(), git.hexdigest()
    size = source.stat().st_size
    git = hashlib.sha1(f"blob {size}\0".encode(), usedforsecurity=False)
    with source.open("rb") as handle:
        while chunk := handle.read(_COPY_CHUNK):
            sha256.update(chunk)
            git.update(chunk)
    return size, sha256.hexdigest(), git.hexdigest()


class HubStore:
    """Repositories on disk: `<root>/<repo>/repo.json` (gate, branches), `commits/<sha>.json`,
    `blobs/<sha256>`.

    Blobs are content-addressed, so publishing a new revision stores only the files that changed.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()

    def _repo_dir(self, repo_id: str) -> Path:
        return self.root / validate_repo_id(repo_id)

    def publish(
        self,
        repo_id: str,
        files: Mapping[str, Path | bytes],
        branch: str = "main",
        gated: bool = False,
    ) -> str:
        """Store `files` as a new commit on `branch` (created if missing) and return the commit's sha."""
        repo_dir = self._repo_dir(repo_id)
        if not _BRANCH.fullmatch(branch) or _COMMIT_SHA.fullmatch(branch):
            raise ValueError(f"branch name {branch!r} is not valid (letters, digits, '.', '_', '-', '/')")
        if not files:
            raise ValueError(f"publishing {repo_id}: no files given")
        entries: dict[str, FileEntry] = {}
        (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
        (repo_dir / "commits").mkdir(parents=True, exist_ok=True)
        for name, source in sorted(files.items()):
            _validate_filename(name)
            if isinstance(source, Path) and not source.is_file():
                raise ValueError(f"publishing {repo_id}: {name} -> {source} is not a regular file")
            size, sha256, git_oid = _hash_source(source)
            lfs = name.endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE
            entries[name] = FileEntry(path=name, size=size, sha256=sha256, git_oid=git_oid, lfs=lfs)
            blob = repo_dir / "blobs" / sha256
            if not blob.exists():
                with tempfile.NamedTemporaryFile(dir=blob.parent, prefix=".incoming-", delete=False) as handle:
                    if isinstance(source, bytes):
                        handle.write(source)
                    else:
                        with source.open("rb") as reader:
                            shutil.copyfileobj(reader, handle, _COPY_CHUNK)
                os.replace(handle.name, blob)
        with self._lock:
            state = self._read_state(repo_id) if (repo_dir / "repo.json").exists() else {"refs": {}}
            parent = state["refs"].get(branch)
            created = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
            manifest = [dataclasses.asdict(entry) for entry in entries.values()]
            seed = json.dumps([repo_id, branch, parent, created, time.time_ns(), manifest], sort_keys=True)
            sha = hashlib.sha1(seed.encode(), usedforsecurity=False).hexdigest()
            commit_doc = {"sha": sha, "parent": parent, "created": created, "files": manifest}
            _write_json_atomic(repo_dir / "commits" / f"{sha}.json", commit_doc)
            state["refs"][branch] = sha
            state["gated"] = "manual" if gated else False
            state.setdefault("created", created)
            _write_json_atomic(repo_dir / "repo.json", state)
        logger.info("published %s@%s on %s (%d files)", repo_id, sha, branch, len(entries))
        return sha

    def publish_directory(self, repo_id: str, directory: Path, branch: str = "main", gated: bool = False) -> str:
        """Publish every regular file under `directory` (paths relative to it), skipping `.git`."""
        files: dict[str, Path | bytes] = {
            path.relative_to(directory).as_posix(): path
            for path in sorted(directory.rglob("*"))
            if path.is_file() and ".git" not in path.relative_to(directory).parts
        }
        if not files:
            raise ValueError(f"publishing {repo_id}: directory {directory} holds no files")
        return self.publish(repo_id, files, branch=branch, gated=gated)

    def _read_state(self, repo_id: str) -> dict[str, Any]:
        path = self._repo_dir(repo_id) / "repo.json"
        try:
            state: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            raise HubStoreError("RepoNotFound", f"Repository {repo_id} not found") from None
        return state

    def repo_exists(self, repo_id: str) -> bool:
        try:
            return (self._repo_dir(repo_id) / "repo.json").is_file()
        except ValueError:
            return False

    def gated(self, repo_id: str) -> str | bool:
        value: str | bool = self._read_state(repo_id).get("gated", False)
        return value

    def branches(self, repo_id: str) -> dict[str, str]:
        refs: dict[str, str] = self._read_state(repo_id)["refs"]
        return dict(refs)

    def resolve(self, repo_id: str, revision: str) -> Commit:
        """The commit a branch name or a full commit sha designates."""
        if not self.repo_exists(repo_id):
            raise HubStoreError("RepoNotFound", f"Repository {repo_id} not found")
        refs = self.branches(repo_id)
        sha = refs.get(revision)
        if sha is None and _COMMIT_SHA.fullmatch(revision):
            sha = revision
        commit_file = self._repo_dir(repo_id) / "commits" / f"{sha}.json"
        if sha is None or not commit_file.is_file():
            raise HubStoreError("RevisionNotFound", f"Invalid rev id: {revision}")
        doc = json.loads(commit_file.read_text())
        files = {item["path"]: FileEntry(**item) for item in doc["files"]}
        return Commit(repo_id=repo_id, sha=doc["sha"], parent=doc["parent"], created=doc["created"], files=files)

    def blob_path(self, repo_id: str, entry: FileEntry) -> Path:
        return self._repo_dir(repo_id) / "blobs" / entry.sha256


def _write_json_atomic(path: Path, document: Any) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".tmp-", delete=False) as handle:
        json.dump(document, handle, indent=1, sort_keys=True)
    os.replace(handle.name, path)
