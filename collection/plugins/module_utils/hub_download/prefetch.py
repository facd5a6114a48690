# Copyright: glm-deploy developers
# Apache License 2.0 (see LICENSE)
"""The prefetch itself: resolve the revision, survey the cache, refuse early, download, verify; `run` is what the
glm.deploy.hf_prefetch module calls.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ansible_collections.glm.deploy.plugins.module_utils.hub_download.cache_layout import (
    COMMIT,
    CacheLayout,
    RemoteFile,
    write_ref,
)
from ansible_collections.glm.deploy.plugins.module_utils.hub_download.errors import PrefetchError, human_bytes
from ansible_collections.glm.deploy.plugins.module_utils.hub_download.progress import ProgressReport
from ansible_collections.glm.deploy.plugins.module_utils.hub_download.retry import Clock, RetryPolicy
from ansible_collections.glm.deploy.plugins.module_utils.hub_download.settings import Settings, configure_environment
from ansible_collections.glm.deploy.plugins.module_utils.hub_download.transport import Transfers, build_opener
from ansible_collections.glm.deploy.plugins.module_utils.hub_download.verify import hash_file
from ansible_collections.glm.deploy.plugins.module_utils.hub_download.workers import Workers


class Prefetch(CacheLayout, Transfers, Workers, RetryPolicy, ProgressReport):
    """One prefetch of one repository: the steps below in order (see the package's docstring), with the cache,
    transfer, worker, retry and progress parts mixed in from their modules. All of its state is set here."""

    def __init__(self, settings: Settings, hub: Any, clock: Clock | None = None) -> None:
        self.settings = settings
        self.hub = hub
        self.clock = clock or Clock()
        repo_type_folder = "models--" + settings.repo.replace("/", "--")
        self.repo_folder = settings.cache_dir / repo_type_folder
        self.commit = ""
        self.files: list[RemoteFile] = []
        self.gated: Any = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._verified: dict[str, Any] = {}
        self.retry_log: list[str] = []
        self.fetched: list[str] = []
        self.linked: list[str] = []
        self.bytes_fetched = 0
        self.verified_now: list[str] = []
        self.refetched_corrupt: list[str] = []
        self._progress_state: dict[str, Any] = {}
        # Waits the Hub asked for, by what waits: (until, on the monotonic clock; what the progress file shows).
        self._waiting: dict[str, tuple[float, str]] = {}
        # Worker processes send their waits to the parent through this queue (set while they run).
        self._notes: Any = None
        self._opener = build_opener(settings)
        self._fetch_set: list[RemoteFile] = []
        # In a forked download worker: verified blobs are handed back to the parent, which alone writes the marker.
        self._in_worker = False
        self.hash_aside = False  # whether transfers hash in a thread of their own (see VerifiedFile)
        self.workers = "none"  # how the files were fetched: "processes N", "threads N" or "none"
        self._verified_here: dict[str, Any] = {}

    # -- step 1: metadata ------------------------------------------------------------------------------------
    def resolve(self) -> None:
        settings = self.settings
        api = self.hub.HfApi(endpoint=settings.endpoint)

        def call() -> Any:
            return api.model_info(settings.repo, revision=settings.revision, files_metadata=True, token=settings.token)

        info = self._with_retries(f"reading the metadata of {settings.repo}@{settings.revision}", call)
        self.commit = str(info.sha)
        self.gated = getattr(info, "gated", False)
        siblings = list(info.siblings or [])
        names = [sibling.rfilename for sibling in siblings]
        from huggingface_hub.utils import filter_repo_objects

        wanted = set(
            filter_repo_objects(names, allow_patterns=settings.allow_patterns, ignore_patterns=settings.ignore_patterns)
        )
        for sibling in siblings:
            if sibling.rfilename not in wanted:
                continue
            lfs = getattr(sibling, "lfs", None)
            sha256 = getattr(lfs, "sha256", None) if lfs is not None else None
            size = sibling.size if sibling.size is not None else getattr(lfs, "size", None)
            if size is None:
                raise PrefetchError(
                    f"the Hub at {settings.endpoint_label} gave no size for {sibling.rfilename}: "
                    "cannot check free space or completeness"
                )
            self.files.append(RemoteFile(sibling.rfilename, int(size), sibling.blob_id, sha256))
        if not self.files:
            raise PrefetchError(
                f"no file of {settings.repo}@{self.commit} matches allow_patterns={settings.allow_patterns} "
                f"ignore_patterns={settings.ignore_patterns}: loosen the patterns",
                commit=self.commit,
            )
        self.files.sort(key=lambda item: item.name)

    # -- step 4: access --------------------------------------------------------------------------------------
    def check_access(self, probe: RemoteFile | None) -> None:
        settings = self.settings
        if probe is None:
            return  # nothing to download: a cache already complete needs no access
        if self.gated and not settings.token:
            raise PrefetchError(
                f"{settings.repo} is a gated repository and no token was given: accept its terms on the Hub "
                "with your account, then set HF_TOKEN (a token with read access) in the controller's "
                "environment so the weights role can pass it",
                commit=self.commit,
            )
        url = self.hub.hf_hub_url(settings.repo, probe.name, revision=self.commit, endpoint=settings.endpoint)

        def head() -> Any:
            return self.hub.get_hf_file_metadata(url, token=settings.token)

        self._with_retries(f"checking access to {probe.name}", head)

    # -- step 6 for files already present (the downloads are in workers.py and transport.py) -----------------
    def verify_present(self, to_hash: list[RemoteFile]) -> list[RemoteFile]:
        """Hash present files never verified (or all with verify=true); returns the ones found wrong."""
        bad: list[RemoteFile] = []
        self._phase("verifying", files=to_hash)

        def check(item: RemoteFile) -> None:
            target = self.snapshot_path(item).resolve()
            if hash_file(item, target):
                self.record_verified(item, target)
            else:
                self.remove_bad(item)
                with self._lock:
                    bad.append(item)
                    self.refetched_corrupt.append(item.name)

        self._run_parallel(to_hash, check)
        return bad


def run(params: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    """Prefetch as `params` say; returns the module result. Raises PrefetchError with a clear message."""
    started = time.monotonic()
    settings = Settings(params, check_mode)
    hub = configure_environment(settings)
    job = Prefetch(settings, hub)
    job.write_progress()
    try:
        job.resolve()
        to_fetch, to_hash, missing = job.survey()
        ref_path = job.repo_folder / "refs" / settings.revision
        try:
            ref_moves = not COMMIT.match(settings.revision) and ref_path.read_text() != job.commit
        except OSError:
            ref_moves = True
        result: dict[str, Any] = {
            "repo": settings.repo,
            "revision": settings.revision,
            "commit": job.commit,
            "snapshot_path": str(job.repo_folder / "snapshots" / job.commit),
            "files_total": len(job.files),
            "bytes_total": sum(item.size for item in job.files),
        }
        if check_mode:
            numbers = {}
            if to_fetch:
                numbers = job.check_filesystem(missing)
            result.update(
                changed=bool(to_fetch) or ref_moves,
                would_fetch_files=[item.name for item in to_fetch],
                would_fetch_bytes=missing,
                would_verify_files=[item.name for item in to_hash],
                would_move_ref=ref_moves,
                **numbers,
            )
            result["msg"] = (
                f"would fetch {len(to_fetch)} files ({human_bytes(missing)}) and verify {len(to_hash)} "
                f"of {settings.repo}@{job.commit[:12]}"
            )
            return result
        if to_fetch or to_hash or ref_moves:
            result.update(job.check_filesystem(missing))
        job.check_access(to_fetch[0] if to_fetch else None)
        # Everything that can refuse has refused: from here on files are written.
        finished = threading.Event()
        reporter = threading.Thread(target=job.progress_loop, args=(finished,), daemon=True)
        reporter.start()
        try:
            bad = job.verify_present(to_hash)
            if bad:
                to_fetch = to_fetch + bad
                job.check_filesystem(sum(item.size for item in to_fetch))
            job.fetch(to_fetch)
            ref_changed = write_ref(job.repo_folder, settings.revision, job.commit)
        finally:
            finished.set()
            reporter.join(timeout=5)
        # The last word on completeness: every file present with its size.
        still_missing = job.survey()[2]
        incomplete = [item.name for item in job.files if not job.snapshot_path(item).exists()]
        if incomplete or still_missing:
            raise PrefetchError(f"snapshot still incomplete after download: {incomplete[:10]}")
        elapsed = time.monotonic() - started
        job._phase("done", files=job._fetch_set)
        average = job.bytes_fetched / elapsed if elapsed > 0 else 0.0
        job.write_progress({"elapsed_s": round(elapsed, 2), "rate_bytes_per_s": round(average, 1), "eta_s": 0})
        result.update(
            changed=bool(job.fetched or job.linked) or ref_changed,
            files_fetched=len(job.fetched),
            fetched=sorted(job.fetched)[:200],
            files_linked=len(job.linked),
            bytes_fetched=job.bytes_fetched,
            files_verified=len(job.verified_now),
            files_refetched_corrupt=sorted(set(job.refetched_corrupt)),
            download_workers=job.workers,
            hash_aside=job.hash_aside,
            retries_used=len(job.retry_log),
            retry_log=job.retry_log[-50:],
            elapsed_s=round(elapsed, 2),
            rate_bytes_per_s=round(job.bytes_fetched / elapsed, 1) if elapsed > 0 else 0.0,
        )
        result["msg"] = (
            f"{settings.repo}@{job.commit[:12]}: fetched {len(job.fetched)} files "
            f"({human_bytes(job.bytes_fetched)}) in {elapsed:.1f}s, verified {len(job.verified_now)}, "
            f"{len(job.files)} files present"
        )
        return result
    except PrefetchError as error:
        error.details.setdefault("commit", job.commit or None)
        job._phase("failed")
        job.write_progress({"error": str(error)})
        raise
