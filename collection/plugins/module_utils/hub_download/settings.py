# Copyright: glm-deploy developers
# Apache License 2.0 (see LICENSE)
"""The module's parameters, validated before anything else happens, and the environment huggingface_hub reads."""

from __future__ import annotations

import os
import re
import ssl
import sys
from pathlib import Path
from typing import Any

from ansible_collections.glm.deploy.plugins.module_utils.hub_download.errors import PrefetchError, first_line

# huggingface_hub's write size when it downloads a file itself (xet=true); see configure_environment.
_DOWNLOAD_CHUNK = 1024 * 1024
_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def _given(params: dict[str, Any], name: str, default: Any) -> Any:
    value = params.get(name)
    return default if value is None else value


class Settings:
    """The validated module parameters."""

    def __init__(self, params: dict[str, Any], check_mode: bool) -> None:
        self.repo = str(params["repo"]).strip()
        self.revision = str(params.get("revision") or "main").strip()
        self.allow_patterns = list(params.get("allow_patterns") or []) or None
        self.ignore_patterns = list(params.get("ignore_patterns") or []) or None
        self.cache_dir = Path(str(params["cache_dir"]))
        self.endpoint = (params.get("endpoint") or "").rstrip("/") or None
        self.token = params.get("token") or None
        self.xet = bool(params.get("xet"))
        self.max_workers = int(_given(params, "max_workers", 8))
        self.hash_aside = str(_given(params, "hash_aside", "auto"))
        self.stall_timeout = float(_given(params, "stall_timeout", 60))
        self.retry_budget_s = float(_given(params, "retry_budget_s", 900))
        self.retry_backoff = float(_given(params, "retry_backoff", 2.0))
        self.reserve = int(_given(params, "free_space_reserve_bytes", 0))
        self.verify = bool(params.get("verify"))
        progress = params.get("progress_file")
        self.progress_file = Path(str(progress)) if progress else None
        ca_bundle = params.get("ca_bundle")
        self.ca_bundle = Path(str(ca_bundle)) if ca_bundle else None
        self.check_mode = check_mode
        self._validate()

    def _validate(self) -> None:
        if not _REPO_ID.match(self.repo):
            raise PrefetchError(
                f"repo {self.repo!r} is not a Hub repository id: use 'namespace/name', e.g. 'zai-org/GLM-5-FP8'"
            )
        if not self.revision or any(ch.isspace() for ch in self.revision) or ".." in self.revision:
            raise PrefetchError(
                f"revision {self.revision!r} is not valid: give a branch or tag name or a 40-hex commit"
            )
        if not self.cache_dir.is_absolute():
            raise PrefetchError(
                f"cache_dir {str(self.cache_dir)!r} must be an absolute path, e.g. /var/lib/glm-deploy/hf/hub"
            )
        if self.endpoint is not None and not re.match(r"^https?://[^/\s]+", self.endpoint):
            raise PrefetchError(
                f"endpoint {self.endpoint!r} is not an http(s) URL: e.g. https://huggingface.co "
                "or http://hub.internal:8080"
            )
        if self.hash_aside not in ("auto", "always", "never"):
            raise PrefetchError(f"hash_aside {self.hash_aside!r} must be auto, always or never")
        if not 1 <= self.max_workers <= 64:
            raise PrefetchError(f"max_workers {self.max_workers} must be between 1 and 64")
        if self.retry_backoff < 0:
            raise PrefetchError(f"retry_backoff {self.retry_backoff} must be 0 or more seconds")
        if self.stall_timeout <= 0:
            raise PrefetchError(f"stall_timeout {self.stall_timeout} must be a positive number of seconds")
        if self.retry_budget_s < 0:
            raise PrefetchError(
                f"retry_budget_s {self.retry_budget_s:g} must be 0 or more seconds: e.g. 900, which outlasts the "
                "Hub's 5-minute rate-limit window"
            )
        if self.reserve < 0:
            raise PrefetchError(f"free_space_reserve_bytes {self.reserve} must be 0 or more")
        if self.progress_file is not None and not self.progress_file.is_absolute():
            raise PrefetchError(f"progress_file {str(self.progress_file)!r} must be an absolute path")
        if self.ca_bundle is not None:
            try:
                ssl.create_default_context(cafile=str(self.ca_bundle))
            except (OSError, ValueError) as error:  # ssl.SSLError is an OSError
                raise PrefetchError(
                    f"ca_bundle {str(self.ca_bundle)!r} is not a readable PEM file of CA certificates "
                    f"({first_line(error)}): give the PEM file of the CA that signed the Hub's certificate"
                ) from None

    def tls_context(self) -> ssl.SSLContext | None:
        """The client TLS context for ca_bundle; None leaves the default (system CAs, or SSL_CERT_FILE)."""
        return ssl.create_default_context(cafile=str(self.ca_bundle)) if self.ca_bundle is not None else None

    @property
    def endpoint_label(self) -> str:
        return self.endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co"


def configure_environment(settings: Settings) -> Any:
    """Set huggingface_hub's environment before importing it (it reads most settings at import)."""
    if settings.endpoint:
        os.environ["HF_ENDPOINT"] = settings.endpoint
    # A read with no byte for this long counts as a stall: huggingface_hub then resumes with Range.
    os.environ["HF_HUB_DOWNLOAD_TIMEOUT"] = str(max(1, round(settings.stall_timeout)))
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", str(max(10, round(settings.stall_timeout))))
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if settings.ca_bundle is not None:
        # huggingface_hub's HTTP client (httpx over httpcore) trusts SSL_CERT_FILE when it is set, as the
        # downloads below do through their own context: the metadata and the bytes trust the same CAs.
        os.environ["SSL_CERT_FILE"] = str(settings.ca_bundle)
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    if settings.xet:
        os.environ.pop("HF_HUB_DISABLE_XET", None)
        os.environ["HF_XET_HIGH_PERFORMANCE"] = "1"
    else:
        os.environ["HF_HUB_DISABLE_XET"] = "1"
    try:
        import huggingface_hub
        from huggingface_hub import constants
    except ImportError:
        raise PrefetchError(
            f"huggingface_hub is not installed for {sys.executable}: the weights role installs it into "
            "/var/lib/glm-deploy/venvs/hub and runs this module with that interpreter"
        ) from None
    # In case huggingface_hub was imported before these variables were set.
    constants.HF_HUB_DOWNLOAD_TIMEOUT = int(os.environ["HF_HUB_DOWNLOAD_TIMEOUT"])
    constants.HF_HUB_DISABLE_XET = not settings.xet
    # huggingface_hub writes what it received in chunks of this size; after a dropped connection it resumes
    # from the last whole chunk, so 1 MiB (not its default 10 MiB) loses less on every drop and refreshes
    # progress more often, at no cost to throughput.
    constants.DOWNLOAD_CHUNK_SIZE = _DOWNLOAD_CHUNK
    if settings.endpoint:
        constants.ENDPOINT = settings.endpoint
    return huggingface_hub
