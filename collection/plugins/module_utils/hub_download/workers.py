# Copyright: glm-deploy developers
# Apache License 2.0 (see LICENSE)
"""Downloading many files at once: forked worker processes for plain HTTP(S), a thread pool otherwise (Xet, one
worker, or a host without fork or POSIX semaphores). A file that fails for good stops new files from starting;
those in flight run to their end, and the error says which files were finished.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import threading
from typing import Any, Callable

from ansible_collections.glm.deploy.plugins.module_utils.hub_download.cache_layout import RemoteFile
from ansible_collections.glm.deploy.plugins.module_utils.hub_download.errors import PrefetchError, first_line

# The download a forked worker process works for (set in the parent just before the workers fork).
_FORKED_JOB: Any = None


class Workers:
    """The parallel downloads of `Prefetch` (mixed into it). They work on the state `Prefetch.__init__` sets
    (settings, _lock, _stop, _notes, _fetch_set, _in_worker, _verified, _verified_here and the result lists) and
    download each file with `_download_http` or `_download_xet` (transport.py) under `_with_retries` (retry.py)."""

    def fetch(self, to_fetch: list[RemoteFile]) -> None:
        """Download `to_fetch` in parallel. When one file fails for good, no further file starts, but those in
        flight run to their end; the error then says which files were finished (verified and kept), so a
        person knows what the re-run still has to fetch."""
        try:
            self._fetch(to_fetch)
        except PrefetchError as error:
            raise self._with_what_finished(error) from None

    def _with_what_finished(self, error: PrefetchError) -> PrefetchError:
        with self._lock:
            finished = sorted(set(self.fetched + self.linked))
        unfinished = sorted({item.name for item in self._fetch_set} - set(finished))
        summary = (
            f"{len(finished)} of {len(self._fetch_set)} files were finished and verified before the run stopped "
            f"(kept in the cache); {len(unfinished)} were not: {', '.join(unfinished[:5])}"
            + (f" and {len(unfinished) - 5} more" if len(unfinished) > 5 else "")
        )
        details = dict(error.details)
        details.update(
            files_fetched=len(self.fetched),
            fetched=sorted(self.fetched)[:200],
            files_linked=len(self.linked),
            files_not_finished=unfinished[:200],
            bytes_fetched=self.bytes_fetched,
        )
        return PrefetchError(f"{error}. {summary}", **details)

    def _fetch(self, to_fetch: list[RemoteFile]) -> None:
        self._fetch_set = sorted(to_fetch, key=lambda item: item.size, reverse=True)
        self._phase("downloading", files=self._fetch_set)
        workers = min(self.settings.max_workers, len(self._fetch_set))
        choice = self.settings.hash_aside
        # Only the module's own transfers hash as they go; Xet downloads are hashed afterwards (hash_file).
        self.hash_aside = (
            workers > 0
            and not self.settings.xet
            and (choice == "always" or (choice == "auto" and _usable_cpus() >= 2 * workers))
        )
        if workers > 1 and not self.settings.xet and hasattr(os, "fork"):
            try:
                stop = multiprocessing.get_context("fork").Event()
            except (OSError, ImportError):  # no POSIX semaphores (a /dev/shm-less container): threads instead
                pass
            else:
                self.workers = f"processes {workers}"
                self._fetch_in_processes(workers, stop)
                return
        if self._fetch_set:
            self.workers = f"threads {max(1, workers)}"
        self._run_parallel(self._fetch_set, self._fetch_one)

    def _fetch_one(self, item: RemoteFile) -> None:
        download = self._download_xet if self.settings.xet else self._download_http

        def attempt() -> bool:
            if self._stop.is_set():
                raise PrefetchError("stopped")
            return download(item)

        try:
            transferred = self._with_retries(
                f"downloading {item.name}", attempt, progress=lambda: self._usable_bytes(item)
            )
        except BaseException as error:
            if not (isinstance(error, PrefetchError) and str(error) == "stopped"):
                # Stop new files at once, from here: the pool that hands out files would only learn of this
                # failure after it has handed the next one to this worker.
                self._stop.set()
            raise
        with self._lock:
            (self.fetched if transferred else self.linked).append(item.name)

    def _fetch_in_processes(self, workers: int, stop: Any) -> None:
        """Download over plain HTTP(S) in forked worker processes, one file at a time each.

        Threads of one interpreter share its lock: measured on 16 cores, 8 threads moved 4 GiB at 2.2 GiB/s over
        HTTP and 0.8 GiB/s over TLS (each TLS record of 16 KiB is a round through that lock) where 8 curls moved
        7.6 and 5.1 GiB/s. Processes decrypt, write and hash in parallel. The parent keeps the progress (read from
        the files' sizes), the record of verified blobs and the results; a failure stops the other workers from
        starting new files (transfers in flight finish, their bytes are kept), as with threads. Waits the Hub asks
        a worker for come back through a queue, for the progress file.
        """
        global _FORKED_JOB  # noqa: PLW0603 - handed to the forked workers, which cannot take it as an argument
        context = multiprocessing.get_context("fork")
        threads_stop, self._stop = self._stop, stop  # a multiprocessing Event: seen by every worker process
        with contextlib.suppress(OSError, ImportError):  # without it the file only lacks the waits' notes
            self._notes = context.SimpleQueue()
        _FORKED_JOB = self
        errors: list[BaseException] = []
        try:
            with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                futures = [pool.submit(_fetch_in_worker, index) for index in range(len(self._fetch_set))]
                for future in concurrent.futures.as_completed(futures):
                    try:
                        outcome = future.result()
                    except Exception as error:  # a worker died (killed, out of memory): no outcome to merge
                        outcome = {"error": {"message": f"a download worker process failed: {first_line(error)}"}}
                    self._merge(outcome)
                    if outcome.get("error"):
                        self._stop.set()
                        errors.append(PrefetchError(outcome["error"]["message"], **outcome["error"].get("details", {})))
        finally:
            _FORKED_JOB = None
            if self._stop.is_set():
                threads_stop.set()
            self._stop = threads_stop
            with self._lock:
                notes, self._notes = self._notes, None
            if notes is not None:
                notes.close()
        _raise_first_failure(errors)

    def _merge(self, outcome: dict[str, Any]) -> None:
        with self._lock:
            self.fetched += outcome.get("fetched", [])
            self.linked += outcome.get("linked", [])
            self.bytes_fetched += outcome.get("bytes_fetched", 0)
            self.verified_now += outcome.get("verified_now", [])
            self.refetched_corrupt += outcome.get("refetched_corrupt", [])
            self.retry_log += outcome.get("retry_log", [])
            if outcome.get("verified"):
                self._verified.update(outcome["verified"])
                self._write_marker()

    def run_in_worker(self, index: int) -> dict[str, Any]:
        """In a forked worker: fetch one file and return what the parent records (never raises)."""
        self._in_worker = True
        self._lock = threading.Lock()  # the parent's may have been held by another thread at the fork
        self.fetched, self.linked, self.verified_now, self.refetched_corrupt, self.retry_log = [], [], [], [], []
        self.bytes_fetched = 0
        self._verified_here = {}
        error: dict[str, Any] | None = None
        try:
            self._fetch_one(self._fetch_set[index])
        except PrefetchError as failure:
            error = {"message": str(failure), "details": failure.details}
        except Exception as failure:  # reported to the parent, which fails the run with it
            error = {"message": first_line(failure)}
        return {
            "fetched": self.fetched,
            "linked": self.linked,
            "bytes_fetched": self.bytes_fetched,
            "verified_now": self.verified_now,
            "verified": self._verified_here,
            "refetched_corrupt": self.refetched_corrupt,
            "retry_log": self.retry_log,
            "error": error,
        }

    def _run_parallel(self, items: list[RemoteFile], work: Callable[[RemoteFile], None]) -> None:
        if not items:
            return
        errors: list[BaseException] = []
        with concurrent.futures.ThreadPoolExecutor(max_workers=self.settings.max_workers) as pool:
            futures = {pool.submit(work, item): item for item in items}
            for future in concurrent.futures.as_completed(futures):
                error = future.exception()
                if error is not None:
                    # Start no new file, and no new attempt of one; work in flight runs to its end, so a file
                    # that was nearly done is finished and verified rather than left for the re-run.
                    self._stop.set()
                    errors.append(error)
        _raise_first_failure(errors)


def _raise_first_failure(errors: list[BaseException]) -> None:
    """Raise the first error of parallel downloads that is not another worker's "stopped" (which only follows
    it), as a PrefetchError."""
    real = [error for error in errors if not (isinstance(error, PrefetchError) and str(error) == "stopped")]
    if real:
        first = real[0]
        if isinstance(first, PrefetchError):
            raise first
        raise PrefetchError(first_line(first))


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _fetch_in_worker(index: int) -> dict[str, Any]:
    """Entry point of a forked download worker (module level, so the pool can name it)."""
    if _FORKED_JOB is None:
        raise RuntimeError("no download job in this worker process")
    return _FORKED_JOB.run_in_worker(index)
