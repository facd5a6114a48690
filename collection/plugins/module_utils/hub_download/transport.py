# Copyright: glm-deploy developers
# Apache License 2.0 (see LICENSE)
"""Moving a file's bytes from the Hub into the cache: the standard library's HTTP client for plain downloads
(spliced socket-to-file on plain HTTP, through a buffer on TLS), huggingface_hub's hf_hub_download for Xet.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from ansible_collections.glm.deploy.plugins.module_utils.hub_download.cache_layout import RemoteFile
from ansible_collections.glm.deploy.plugins.module_utils.hub_download.errors import (
    Corrupt,
    HTTPStatusError,
    ShortTransfer,
    SpliceUnsupported,
)
from ansible_collections.glm.deploy.plugins.module_utils.hub_download.settings import Settings
from ansible_collections.glm.deploy.plugins.module_utils.hub_download.verify import VerifiedFile, hash_file

# splice(2) moves at most this much per call; the pipe between socket and file is sized to match.
_SPLICE_CHUNK = 1024 * 1024
# Bytes that pass through this process (TLS) are decrypted into this buffer, hashed from it and written from it:
# small enough to stay in the CPU's L2 cache across the three passes (measured over HTTPS on a 2-core VM,
# 4 GiB in 8 shards: 256 KiB took 10.5 CPU-s where 1 MiB took 15-18, the difference all in the kernel's copy
# into the page cache).
_RECEIVE_BUFFER = 256 * 1024


class DropAuthOnOtherHost(urllib.request.HTTPRedirectHandler):
    """Follow the Hub's redirects to its CDN without carrying the token there, as huggingface_hub does
    (signed CDN URLs refuse a second credential, and the token has no business on another host)."""

    def redirect_request(  # noqa: PLR0917 - urllib's signature
        self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> Any:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlsplit(newurl).netloc != urllib.parse.urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")
        return new


def build_opener(settings: Settings) -> urllib.request.OpenerDirector:
    """The opener for file downloads: redirects drop the token on another host; ca_bundle, when given, is trusted."""
    handlers: list[Any] = [DropAuthOnOtherHost]
    context = settings.tls_context()
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    return urllib.request.build_opener(*handlers)


class Transfers:
    """The transfers of `Prefetch` (mixed into it): one file at a time, each resumable and verified as it lands.
    They work on the state `Prefetch.__init__` sets: settings, hub, commit, hash_aside, _opener, _lock,
    bytes_fetched and refetched_corrupt, and on the cache with the methods of `CacheLayout`."""

    def _download_http(self, item: RemoteFile) -> bool:
        """One file over plain HTTP into `<blob>.incomplete`, kept across runs and resumed with Range.

        huggingface_hub's hf_hub_download is not used here for two measured reasons: since 1.x it downloads
        to a per-process temporary file that it deletes when the call fails, so a killed or failed run
        restarts multi-GB shards from zero; and its httpx read loop moved about half the bytes per second
        that curl does on the same link (see the benchmark). The bytes are streamed with the standard
        library (spliced socket-to-file on plain HTTP, through a 256 KiB buffer on TLS) and hashed as they
        land; huggingface_hub still provides the URL, the
        headers (user agent, token) and, before this, the metadata and the access check.
        """
        blob = self.blob_path(item)
        incomplete = Path(f"{blob}.incomplete")
        blob.parent.mkdir(parents=True, exist_ok=True)
        transferred = False
        with self._blob_lock(item):
            if not self._blob_complete(item):
                transferred = True
                self._stream(item, incomplete)
                os.chmod(incomplete, 0o644)
                os.replace(incomplete, blob)
                self.record_verified(item, blob)
            elif not self._is_recorded(item, blob.stat()):
                # Another process (or an earlier run) finished this blob: check it before linking it.
                if not hash_file(item, blob):
                    self.remove_bad(item)
                    raise Corrupt(f"{item.name}: the blob already in the cache has wrong bytes; removed it")
                self.record_verified(item, blob)
            self._link(item)
        return transferred

    def _stream(self, item: RemoteFile, incomplete: Path) -> None:
        """Append the missing bytes of `item` to `incomplete`; on return it holds the whole, verified file."""
        from huggingface_hub.utils import build_hf_headers

        settings = self.settings
        try:
            resume = incomplete.stat().st_size
        except FileNotFoundError:
            resume = 0
        if resume > item.size:
            incomplete.unlink()
            resume = 0
        headers = dict(build_hf_headers(token=settings.token))
        headers["Accept-Encoding"] = "identity"  # sizes and hashes are of the raw bytes
        if resume:
            headers["Range"] = f"bytes={resume}-"
        url = self.hub.hf_hub_url(settings.repo, item.name, revision=self.commit, endpoint=settings.endpoint)
        if resume < item.size:
            # The URL is the validated http(s) endpoint's: no file: or custom scheme can reach here.
            request = urllib.request.Request(url, headers=headers)  # noqa: S310
            try:
                # The socket timeout bounds every read: a transfer with no byte for this long is a stall.
                response = self._opener.open(request, timeout=settings.stall_timeout)
            except urllib.error.HTTPError as error:
                raise HTTPStatusError(error.code, error.headers, url) from None
            with response, VerifiedFile(incomplete, item, aside=self.hash_aside) as target:
                if resume and response.status == 200:
                    target.restart()  # the server ignored Range and sends the whole file
                    resume = 0
                elif resume and not str(response.headers.get("Content-Range", "")).startswith(f"bytes {resume}-"):
                    raise HTTPStatusError(response.status, response.headers, url, "wrong Content-Range")
                else:
                    target.resume(resume)
                try:
                    self._receive(response, target)
                finally:
                    with self._lock:
                        self.bytes_fetched += target.received
                if target.position != item.size:
                    raise ShortTransfer(f"{item.name}: the connection ended at byte {target.position} of {item.size}")
                right = target.matches()
        else:  # an earlier run received every byte but stopped before checking them
            with VerifiedFile(incomplete, item, aside=self.hash_aside) as target:
                target.resume(item.size)
                right = target.matches()
        if not right:
            incomplete.unlink()
            with self._lock:
                self.refetched_corrupt.append(item.name)
            raise Corrupt(f"{item.name}: the downloaded bytes do not match the Hub's hash; discarded them")

    def _receive(self, response: Any, target: VerifiedFile) -> None:
        """Move the response body into `target`: with splice(2), socket to file inside the kernel, where the
        connection is plain HTTP (a local mirror, the sandbox Hub); through a buffer otherwise (TLS must be
        decrypted in this process)."""
        if self._can_splice(response):
            try:
                self._receive_spliced(response, target)
                return
            except SpliceUnsupported:
                pass  # the rest goes through the buffer; what was spliced is in the file and hashed
        # http.client fills the whole buffer (or reaches the end of the body) before it returns, and a stall
        # or drop loses what it held: the buffer's size bounds that loss.
        buffer = bytearray(_RECEIVE_BUFFER)
        view = memoryview(buffer)
        while True:
            count = response.readinto(view)
            if not count:
                break
            target.write(view[:count])

    @staticmethod
    def _can_splice(response: Any) -> bool:
        return (
            hasattr(os, "splice")
            and urllib.parse.urlsplit(response.geturl()).scheme == "http"
            and not getattr(response, "chunked", True)
            and isinstance(getattr(response, "length", None), int)
        )

    def _receive_spliced(self, response: Any, target: VerifiedFile) -> None:
        # Body bytes http.client already buffered with the headers come first, through the buffer.
        if response.length > 0:
            waiting = response.fp.peek(1)[: response.length]
            if waiting:
                target.write(memoryview(response.read(len(waiting))))
        if response.length <= 0:
            return  # all of it came with the headers (http.client has closed the socket)
        sock = response.fileno()
        stall_ms = max(1, round(self.settings.stall_timeout * 1000))
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        pipe_out, pipe_in = os.pipe()
        try:
            with contextlib.suppress(OSError):  # a smaller pipe only means more calls
                fcntl.fcntl(pipe_in, getattr(fcntl, "F_SETPIPE_SZ", 1031), _SPLICE_CHUNK)
            while response.length > 0:
                try:
                    count = os.splice(sock, pipe_in, min(_SPLICE_CHUNK, response.length))
                except BlockingIOError:
                    # The socket has a timeout, so it is non-blocking: wait for bytes, at most a stall.
                    if not poller.poll(stall_ms):
                        raise TimeoutError(
                            f"no byte received for {self.settings.stall_timeout:g}s (stall_timeout)"
                        ) from None
                    continue
                except OSError as error:
                    if error.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                        raise SpliceUnsupported(str(error)) from None
                    raise
                if count == 0:
                    return  # the connection ended early: the caller sees the short file and resumes
                response.length -= count  # http.client's count, so a buffered fallback stops at the end
                target.splice_from(pipe_out, count)
        finally:
            os.close(pipe_out)
            os.close(pipe_in)

    def _download_xet(self, item: RemoteFile) -> bool:
        """One file with huggingface_hub's hf_hub_download, which uses Xet where the Hub offers it."""
        settings = self.settings
        blob = self.blob_path(item)
        try:
            if blob.stat().st_size != item.size:
                blob.unlink()  # huggingface_hub would link a wrong-sized blob as is
        except FileNotFoundError:
            pass
        before = self._usable_bytes(item)
        path = Path(
            self.hub.hf_hub_download(
                settings.repo,
                item.name,
                revision=self.commit,
                cache_dir=str(settings.cache_dir),
                token=settings.token,
                endpoint=settings.endpoint,
                etag_timeout=max(10.0, settings.stall_timeout),
            )
        )
        with self._lock:
            self.bytes_fetched += item.size - before
        if not hash_file(item, path.resolve()):
            self.remove_bad(item)
            with self._lock:
                self.refetched_corrupt.append(item.name)
            raise Corrupt(f"{item.name}: the downloaded bytes do not match the Hub's hash; removed them")
        self.record_verified(item, path.resolve())
        return before < item.size
