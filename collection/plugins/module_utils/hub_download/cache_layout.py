# Copyright: glm-deploy developers
# Apache License 2.0 (see LICENSE)
"""Where a download lives in the standard HF cache, and what of it is already there and verified.

The layout is huggingface_hub's own, so its loaders read what this module wrote: `models--<org>--<name>/` holds
`blobs/<etag>` (the bytes; `<etag>.incomplete` while they arrive), `snapshots/<commit>/<file>` (relative symlinks
to the blobs) and `refs/<branch>` (the commit a branch resolved to); `.locks/` holds huggingface_hub's per-blob
locks. `.glm-deploy/verified.json` beside them records every blob whose hash was checked (size, mtime, inode), so
a re-run checks presence and sizes only.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

from ansible_collections.glm.deploy.plugins.module_utils.hub_download.errors import PrefetchError, human_bytes

VERIFIED_MARKER = ".glm-deploy/verified.json"
COMMIT = re.compile(r"^[0-9a-f]{40}$")


class RemoteFile:
    """One file of the resolved commit, as the Hub describes it."""

    __slots__ = ("etag", "git_oid", "name", "sha256", "size")

    def __init__(self, name: str, size: int, git_oid: str | None, sha256: str | None) -> None:
        self.name = name
        self.size = size
        self.git_oid = git_oid
        self.sha256 = sha256
        # The HF cache names blobs by the file's ETag: the sha256 for LFS files, the git blob id otherwise.
        etag = sha256 or git_oid
        if not etag:
            raise PrefetchError(f"the Hub's metadata for {name} carries neither an LFS sha256 nor a blob id")
        self.etag = etag


class CacheLayout:
    """The cache side of `Prefetch` (mixed into it): paths, the survey of what is present, the record of verified
    blobs, locks and links. It works on the state `Prefetch.__init__` sets: settings, repo_folder, commit, files,
    _lock, _stop, _verified, _verified_here, _in_worker and verified_now."""

    # -- step 2: what the cache holds ------------------------------------------------------------------------
    def blob_path(self, item: RemoteFile) -> Path:
        return self.repo_folder / "blobs" / item.etag

    def snapshot_path(self, item: RemoteFile) -> Path:
        return self.repo_folder / "snapshots" / self.commit / item.name

    def _load_verified(self) -> None:
        try:
            data = json.loads((self.repo_folder / VERIFIED_MARKER).read_text())
            self._verified = dict(data.get("blobs", {}))
        except (OSError, ValueError):
            self._verified = {}

    def _is_recorded(self, item: RemoteFile, stat: os.stat_result) -> bool:
        record = self._verified.get(item.etag)
        return bool(
            record
            and record.get("size") == stat.st_size
            and record.get("mtime_ns") == stat.st_mtime_ns
            and record.get("inode") == stat.st_ino
        )

    def survey(self) -> tuple[list[RemoteFile], list[RemoteFile], int]:
        """(files to fetch, present files to hash, bytes missing)."""
        self._load_verified()
        to_fetch: list[RemoteFile] = []
        to_hash: list[RemoteFile] = []
        missing = 0
        for item in self.files:
            link = self.snapshot_path(item)
            try:
                stat = link.stat()  # follows the symlink: a dangling link counts as missing
            except OSError:
                stat = None
            if stat is not None and stat.st_size == item.size:
                if self.settings.verify or not self._is_recorded(item, stat):
                    to_hash.append(item)
                continue
            to_fetch.append(item)
            missing += item.size - self._usable_bytes(item)
        return to_fetch, to_hash, missing

    def _usable_bytes(self, item: RemoteFile) -> int:
        """Bytes of `item` on disk that a download will reuse (a right-sized blob or a partial file)."""
        try:
            size = self.blob_path(item).stat().st_size
            if size == item.size:
                return size
        except OSError:
            pass
        try:
            return min(Path(f"{self.blob_path(item)}.incomplete").stat().st_size, item.size)
        except OSError:
            return 0

    # -- step 3: the filesystem ------------------------------------------------------------------------------
    def check_filesystem(self, missing: int) -> dict[str, int]:
        settings = self.settings
        base = settings.cache_dir
        while not base.exists():
            if base.parent == base:
                break
            base = base.parent
        if base.exists() and not base.is_dir():
            raise PrefetchError(f"cache_dir {settings.cache_dir}: {base} exists and is not a directory")
        stat = os.statvfs(base)
        if stat.f_flag & os.ST_RDONLY:
            raise PrefetchError(
                f"cache_dir {settings.cache_dir} is on a read-only filesystem (mounted at or above {base}): "
                "remount it read-write or choose a cache_dir on a writable filesystem"
            )
        if not os.access(base, os.W_OK | os.X_OK):
            raise PrefetchError(
                f"cache_dir {settings.cache_dir} is not writable by uid {os.geteuid()} ({base} denies it): "
                "fix its owner/mode or run the module as a user that may write there"
            )
        free = stat.f_bavail * stat.f_frsize
        usable = free - settings.reserve
        numbers = {"bytes_missing": missing, "bytes_free": free, "free_space_reserve_bytes": settings.reserve}
        if missing > usable:
            raise PrefetchError(
                f"not enough space for {settings.repo}@{self.commit[:12]} in {settings.cache_dir}: "
                f"{human_bytes(missing)} ({missing} bytes) still to download, "
                f"{human_bytes(free)} ({free} bytes) "
                f"free, {human_bytes(settings.reserve)} ({settings.reserve} bytes) kept in reserve: free "
                f"{human_bytes(missing - usable)} more, lower free_space_reserve_bytes, or choose another "
                "cache_dir",
                **numbers,
            )
        return numbers

    # -- the record of verified blobs, locks and links ---------------------------------------------------------
    def record_verified(self, item: RemoteFile, path: Path) -> None:
        stat = path.stat()
        entry = {
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "inode": stat.st_ino,
            "algorithm": "sha256" if item.sha256 else "git-sha1",
            "verified_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        with self._lock:
            self.verified_now.append(item.name)
            self._verified[item.etag] = entry
            if self._in_worker:
                self._verified_here[item.etag] = entry
            else:
                self._write_marker()

    def _write_marker(self) -> None:
        """Write the record of verified blobs (call with the lock held)."""
        marker = self.repo_folder / VERIFIED_MARKER
        marker.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=marker.parent, prefix=".tmp-", delete=False) as handle:
            json.dump({"version": 1, "blobs": self._verified}, handle, sort_keys=True)
        os.chmod(handle.name, 0o644)
        os.replace(handle.name, marker)

    def remove_bad(self, item: RemoteFile) -> None:
        """Take a wrong file out of the snapshot and the blob store, so only right bytes stay."""
        for path in (self.snapshot_path(item), self.blob_path(item)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        with self._lock:
            self._verified.pop(item.etag, None)

    def _blob_complete(self, item: RemoteFile) -> bool:
        try:
            return self.blob_path(item).stat().st_size == item.size
        except FileNotFoundError:
            return False

    @contextlib.contextmanager
    def _blob_lock(self, item: RemoteFile) -> Iterator[None]:
        """The lock huggingface_hub takes for the same blob (same path, flock), so concurrent downloads of one
        repository, by this module or by huggingface_hub itself, never write one file together."""
        lock_path = self.settings.cache_dir / ".locks" / self.repo_folder.name / f"{item.etag}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with lock_path.open("a") as handle:
            while True:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if self._stop.wait(1.0):
                        raise PrefetchError("stopped") from None
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _link(self, item: RemoteFile) -> None:
        """Point snapshots/<commit>/<name> at the blob with a relative symlink, as huggingface_hub does."""
        link = self.snapshot_path(item)
        link.parent.mkdir(parents=True, exist_ok=True)
        target = os.path.relpath(self.blob_path(item), link.parent)
        try:
            if os.readlink(link) == target:
                return
        except OSError:
            pass
        temporary = link.with_name(f".{link.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        os.symlink(target, temporary)
        os.replace(temporary, link)


def write_ref(repo_folder: Path, revision: str, commit: str) -> bool:
    """Point refs/<revision> at the commit, as huggingface_hub does when it resolves a branch itself."""
    if COMMIT.match(revision):
        return False
    ref = repo_folder / "refs" / revision
    try:
        if ref.read_text() == commit:
            return False
    except OSError:
        pass
    ref.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=ref.parent, prefix=".tmp-", delete=False) as handle:
        handle.write(commit)
    os.chmod(handle.name, 0o644)
    os.replace(handle.name, ref)
    return True
