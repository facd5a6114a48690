# Copyright: glm-deploy developers
# Apache License 2.0 (see LICENSE)
"""Hashing what is downloaded against the Hub's metadata: as the bytes arrive, or afterwards for a file on disk.

A file is accepted only when its sha256 (LFS files) or git blob id (small files) matches the metadata; nothing
that fails is linked into a snapshot.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import mmap
import os
import threading
from pathlib import Path
from typing import Any

from ansible_collections.glm.deploy.plugins.module_utils.hub_download.cache_layout import RemoteFile
from ansible_collections.glm.deploy.plugins.module_utils.hub_download.errors import ShortTransfer, SpliceUnsupported

_HASH_CHUNK = 4 * 1024 * 1024
# Spliced bytes are hashed from the page cache once this many have landed: small enough that they are
# still in the CPU's L2 cache (measured: 1 MiB beat 8 MiB by about 20% in wall time on a loaded 2-core VM).
_HASH_STEP = 1024 * 1024
_HASH_WINDOW = 64 * 1024 * 1024
# A hashing thread beside the transfer takes the bytes in batches of at least this much (fewer maps of the file).
_ASIDE_BATCH = 8 * 1024 * 1024


class VerifiedFile:
    """The `.incomplete` file of one download: bytes are written at the end of what it holds and hashed so
    that, when the last byte is in, the file is verified without a second read.

    Inline (the default), bytes that pass through a buffer are hashed from it, and bytes moved by splice(2),
    which never enter this process, are hashed from the page cache (mmap) right after they land. With `aside`,
    a second thread hashes the file from the page cache behind the transfer, so that on a host with a spare
    core the hash costs no time: one sha256 runs at about the speed of one connection on a fast link
    (measured on a 16-core host: 1.0 GiB/s against curl's 1 GiB/s per connection on loopback).
    Either way what is hashed is what is in the file, and a resumed download first hashes the bytes already
    there.
    """

    def __init__(self, path: Path, item: RemoteFile, aside: bool = False) -> None:
        self._path = path
        self._item = item
        # Not O_APPEND: splice(2) refuses append-mode targets, so every write gives its offset.
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.position = 0  # bytes in the file
        self.received = 0  # bytes this attempt added
        self._hashed = 0
        self._digest = new_digest(item)
        self._aside: HashAside | None = HashAside(self) if aside else None

    def __enter__(self) -> VerifiedFile:
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        try:
            if self._aside is not None:
                if kind is None:
                    self._aside.finish()
                else:
                    with contextlib.suppress(Exception):  # the transfer's own error is the one to report
                        self._aside.finish()
        finally:
            os.close(self._fd)

    def restart(self) -> None:
        """Start over from byte 0 (the server ignored Range and sends the whole file)."""
        if self._aside is not None:
            self._aside.finish()
        os.ftruncate(self._fd, 0)
        self.position = self._hashed = 0
        self._digest = new_digest(self._item)
        if self._aside is not None:
            self._aside = HashAside(self)

    def resume(self, offset: int) -> None:
        """Continue after the `offset` bytes already on disk, hashing them first."""
        if os.fstat(self._fd).st_size < offset:
            raise ShortTransfer(f"{self._path} shrank while it was being resumed")
        self.position = offset
        if self._aside is not None:
            self._aside.publish(offset)
        else:
            self._hash_up_to(offset)

    def write(self, data: memoryview) -> None:
        written = 0
        while written < len(data):  # a file may take fewer bytes than offered
            written += os.pwrite(self._fd, data[written:], self.position + written)
        self.received += len(data)
        if self._aside is not None:
            self.position += len(data)
            self._aside.publish(self.position)
            return
        self._hash_up_to(self.position)  # bytes spliced earlier come first
        self._digest.update(data)
        self.position += len(data)
        self._hashed = self.position

    def splice_from(self, pipe: int, count: int) -> None:
        """Move `count` bytes waiting in `pipe` to the end of the file, inside the kernel."""
        left = count
        while left > 0:
            try:
                moved = os.splice(pipe, self._fd, left, offset_dst=self.position)
            except OSError as error:
                if error.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise
                # This filesystem takes no splice: copy what is in the pipe, then carry on buffered.
                while left > 0:
                    data = os.read(pipe, left)
                    if not data:
                        raise ShortTransfer(f"{self._path}: bytes were lost between socket and file") from None
                    self.write(memoryview(data))
                    left -= len(data)
                raise SpliceUnsupported(str(error)) from None
            if moved <= 0:
                raise ShortTransfer(f"{self._path}: the pipe from the socket ran dry")
            self.position += moved
            self.received += moved
            left -= moved
        if self._aside is not None:
            self._aside.publish(self.position)
        elif self.position - self._hashed >= _HASH_STEP:
            self._hash_up_to(self.position)

    def matches(self) -> bool:
        if self._aside is not None:
            self._aside.publish(self.position)
            self._aside.finish()
        self._hash_up_to(self.position)
        expected = self._item.sha256 or self._item.git_oid or ""
        return bool(self._digest.hexdigest() == expected)

    def _hash_up_to(self, end: int) -> None:
        """Hash the file's bytes from where hashing stopped up to `end`, without copying them: mapped in
        windows, so a resumed file of hundreds of GB is never mapped whole."""
        while self._hashed < end:
            base = self._hashed - self._hashed % mmap.ALLOCATIONGRANULARITY
            stop = min(end, base + _HASH_WINDOW)
            try:
                # MAP_POPULATE maps the window in one call instead of a page fault per few pages.
                mapped = mmap.mmap(
                    self._fd,
                    stop - base,
                    flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0),
                    prot=mmap.PROT_READ,
                    offset=base,
                )
            except (OSError, ValueError):
                self._hash_by_reading(stop)  # a filesystem without mmap: read it instead
                continue
            try:
                with memoryview(mapped) as view:
                    self._digest.update(view[self._hashed - base :])
            finally:
                mapped.close()
            self._hashed = stop

    def _hash_by_reading(self, end: int) -> None:
        while self._hashed < end:
            chunk = os.pread(self._fd, min(_HASH_CHUNK, end - self._hashed), self._hashed)
            if not chunk:
                raise ShortTransfer(f"{self._path} shrank while it was being hashed")
            self._digest.update(chunk)
            self._hashed += len(chunk)


class HashAside:
    """The thread that hashes a `VerifiedFile` behind its transfer: the transfer publishes how far the file is
    written; this thread hashes up to there in batches (hashlib and mmap release the interpreter's lock, so
    both run at once). `finish` waits until everything published is hashed and re-raises the thread's error."""

    def __init__(self, target: VerifiedFile) -> None:
        self._target = target
        self._published = target.position
        self._closing = False
        self._error: BaseException | None = None
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"hash {target._item.name}", daemon=True)
        self._thread.start()

    def publish(self, end: int) -> None:
        with self._changed:
            self._published = end
            if end - self._target._hashed >= _ASIDE_BATCH:
                self._changed.notify()

    def finish(self) -> None:
        with self._changed:
            self._closing = True
            self._changed.notify()
        self._thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _run(self) -> None:
        target = self._target
        try:
            while True:
                with self._changed:
                    while not self._closing and self._published - target._hashed < _ASIDE_BATCH:
                        self._changed.wait()
                    end, closing = self._published, self._closing
                target._hash_up_to(end)
                if closing:
                    return
        except BaseException as error:  # handed to the transfer, which raises it from finish()
            self._error = error


def new_digest(item: RemoteFile) -> Any:
    if item.sha256:
        return hashlib.sha256()
    # Small files are checked against their git blob id: sha1 over a "blob <size>\0" header and the content.
    return hashlib.sha1(f"blob {item.size}\0".encode(), usedforsecurity=False)


def hash_file(item: RemoteFile, path: Path) -> bool:
    """Hash a whole file on disk (one already in the cache, or one huggingface_hub wrote) against the metadata."""
    digest = new_digest(item)
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return bool(digest.hexdigest() == (item.sha256 or item.git_oid or ""))
