#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: glm-deploy developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Pre-download a Hugging Face Hub repository into the HF cache: pinned, disk-checked, resumable, verified."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: hf_prefetch
short_description: Pre-download a Hub model repository into the Hugging Face cache, verified and resumable
description:
  - Resolves O(revision) to a commit and returns it, so redeploys and rollbacks can pin the exact commit.
  - Sums the bytes still missing from the Hub's file metadata and refuses, with the numbers, when the cache
    filesystem lacks them plus O(free_space_reserve_bytes).
  - Downloads the missing files in parallel into the standard cache layout (C(blobs/), C(snapshots/<commit>/),
    C(refs/<revision>)); huggingface_hub provides the metadata, URLs and auth headers, and with O(xet=true)
    does the transfer itself. Partial files (C(blobs/<etag>.incomplete)) survive failed or killed runs and are
    resumed with C(Range). Every request to the Hub (metadata, the access check, each file) follows one retry
    policy, in threads and in worker processes alike. A 429 or 503 waits as long as the Hub asks, in
    C(Retry-After) (seconds or an HTTP date) or in the C(RateLimit) header (draft-ietf-httpapi-ratelimit-headers,
    e.g. C("resolvers";r=0;t=300), where the largest C(t) of the policies with C(r=0) counts), whichever is
    longer, and the wait shows in O(progress_file). Other 5xx, dropped connections and stalls are retried with
    backoff. A request (a file) fails with a clear error once it has failed for O(retry_budget_s) seconds
    without progress; no single wait runs past that budget. huggingface_hub's own calls inside a Xet
    download (O(xet=true)) may also wait for a rate limit before this policy sees the error.
  - When one file fails for good, no other file starts, but transfers in flight run to their end and are
    verified and kept; the error names the files that were finished and those that were not.
  - Hashes each downloaded file once against the Hub's sha256 (git blob id for small files) and records it,
    so a re-run checks presence and sizes only; a file with wrong bytes is removed and fetched again.
  - Refuses before writing anything when the repository or revision does not exist, the repository is gated
    and no token was given, or the cache is on a read-only or full filesystem.
  - Rewrites O(progress_file) every second with bytes done and total, rate and ETA, for callers polling an
    async job.
  - Needs huggingface_hub (1.0 or later) in the interpreter that runs it; the C(glm.deploy.weights) role
    creates a venv for it. Supports check mode (reports files and bytes it would fetch, fetches nothing).
version_added: "0.1.0"
options:
  repo:
    description: Repository id on the Hub, C(namespace/name).
    type: str
    required: true
  revision:
    description: Branch, tag or 40-hex commit to fetch.
    type: str
    default: main
  allow_patterns:
    description: Only files matching one of these glob patterns are fetched (all files when empty).
    type: list
    elements: str
    default: []
  ignore_patterns:
    description: Files matching one of these glob patterns are skipped.
    type: list
    elements: str
    default: []
  cache_dir:
    description: The HF hub cache directory (C(HF_HUB_CACHE)), e.g. C(/var/lib/glm-deploy/hf/hub).
    type: path
    required: true
  endpoint:
    description: Hub URL (C(HF_ENDPOINT)); huggingface_hub's default when empty.
    type: str
  token:
    description:
      - Hugging Face token for gated or private repositories. Falls back to C(HF_TOKEN). Never logged.
    type: str
  xet:
    description:
      - Download with huggingface_hub's hf_hub_download, which uses the Xet protocol where the Hub offers it
        (C(HF_XET_HIGH_PERFORMANCE=1)). Its partial files do not survive a failed run.
      - False (the default) forces plain HTTP (C(HF_HUB_DISABLE_XET=1)), the fallback for Xet transfers that
        hang, with partial files resumed across runs.
    type: bool
    default: false
  max_workers:
    description: Files downloaded at once.
    type: int
    default: 8
  hash_aside:
    description:
      - Where each file's hash is computed while it downloads. V(never) hashes in the transfer's own thread;
        V(always) in a second thread that follows the transfer through the page cache, so that hashing and
        transfer overlap; V(auto) does that when the host has at least two usable CPUs per file downloaded at
        once.
    type: str
    choices: [auto, always, never]
    default: auto
  stall_timeout:
    description: Seconds without a byte after which a transfer counts as stalled and is resumed.
    type: float
    default: 60
  retry_budget_s:
    description:
      - Seconds a request (a metadata call, or one file) may go on failing without progress before the module
        gives up with an error; an attempt that moved bytes forward starts the budget again. Waits the Hub
        asks for (C(Retry-After), C(RateLimit)) count against it, and a wait longer than what is left of it
        is cut to what is left.
      - The default outlasts the Hub's 5-minute rate-limit window with room for the retry after it. V(0)
        gives up at the first failure.
    type: float
    default: 900
  retry_backoff:
    description:
      - First wait in seconds between retries the server named no wait for; it doubles on each retry, up to
        60 s.
    type: float
    default: 2
  free_space_reserve_bytes:
    description: Bytes that must stay free on the cache filesystem after the download.
    type: int
    default: 0
  verify:
    description: Hash every file again, ignoring the record of earlier verifications.
    type: bool
    default: false
  progress_file:
    description: JSON file rewritten every second with C(phase), C(bytes_done), C(bytes_total),
      C(rate_bytes_per_s), C(eta_s), C(files_done), C(files_total), and C(waiting), one line per wait the Hub
      asked for that is running (the request, the seconds, the header that asked, the seconds left).
    type: path
  ca_bundle:
    description:
      - PEM file of the certificate authorities trusted for HTTPS to O(endpoint) (and its redirects), used
        instead of the system's, e.g. for a Hub mirror whose certificate an internal CA signed.
      - When not given, the system's CAs are trusted, or those in the file named by the standard
        C(SSL_CERT_FILE) environment variable. A certificate that is not trusted or not valid for the host
        fails the module at once, before anything is written, with the TLS error in the message.
    type: path
author:
  - glm-deploy developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Fetch GLM-5-FP8 at a pinned commit
  glm.deploy.hf_prefetch:
    repo: zai-org/GLM-5-FP8
    revision: main
    cache_dir: /var/lib/glm-deploy/hf/hub
    token: "{{ glm_hf_token | default(omit) }}"
    free_space_reserve_bytes: 50000000000
    progress_file: /var/lib/glm-deploy/hf/prefetch-progress.json
  async: 86400
  poll: 0
  register: weights_job
"""

RETURN = r"""
commit:
  description: The 40-hex commit the revision resolved to.
  type: str
  returned: always
snapshot_path:
  description: The snapshot directory of that commit in the cache.
  type: str
  returned: always
files_total:
  description: Files of the commit selected by the patterns.
  type: int
  returned: always
bytes_total:
  description: Their total size.
  type: int
  returned: always
files_fetched:
  description: Files downloaded by this run.
  type: int
  returned: when not in check mode
bytes_fetched:
  description: Bytes downloaded by this run (resumed bytes not counted).
  type: int
  returned: when not in check mode
files_verified:
  description: Files hashed by this run.
  type: int
  returned: when not in check mode
download_workers:
  description: >-
    How the files were fetched: C(processes N) (plain HTTP and HTTPS downloads run in N forked worker processes,
    so decryption, writing and hashing use N cores), C(threads N) (Xet, or a host without fork or POSIX
    semaphores), or C(none) when nothing was fetched.
  type: str
  returned: when not in check mode
hash_aside:
  description: >-
    Whether the files fetched were hashed in a thread beside their transfer (see the option); false when nothing
    was fetched or Xet fetched it (huggingface_hub's download is hashed after it ends).
  type: bool
  returned: when not in check mode
retries_used:
  description: Retries this run needed; retry_log says why.
  type: int
  returned: when not in check mode
retry_log:
  description: The last 50 retries, each with its error and the wait (the header that asked for it, if any).
  type: list
  elements: str
  returned: when not in check mode
fetched:
  description: >-
    Files downloaded by this run (at most 200). Also returned when the module fails while downloading, with
    C(files_not_finished): the files finished before the failure are verified and kept.
  type: list
  elements: str
  returned: when not in check mode, and on a failure while downloading
files_not_finished:
  description: Files still missing or partial after a failure while downloading (at most 200).
  type: list
  elements: str
  returned: on a failure while downloading
would_fetch_files:
  description: Files a real run would download.
  type: list
  elements: str
  returned: in check mode
would_fetch_bytes:
  description: Bytes a real run would download.
  type: int
  returned: in check mode
would_verify_files:
  description: Files present but not yet hashed, which a real run would verify.
  type: list
  elements: str
  returned: in check mode
would_move_ref:
  description: Whether a real run would write C(refs/REVISION) (a branch or tag that now names another commit).
  type: bool
  returned: in check mode
"""

from ansible.module_utils.basic import AnsibleModule, env_fallback  # noqa: E402 (DOCUMENTATION comes first)
from ansible_collections.glm.deploy.plugins.module_utils.hub_download.errors import PrefetchError  # noqa: E402
from ansible_collections.glm.deploy.plugins.module_utils.hub_download.prefetch import run  # noqa: E402


def main():
    module = AnsibleModule(
        argument_spec=dict(
            repo=dict(type="str", required=True),
            revision=dict(type="str", default="main"),
            allow_patterns=dict(type="list", elements="str", default=[]),
            ignore_patterns=dict(type="list", elements="str", default=[]),
            cache_dir=dict(type="path", required=True),
            endpoint=dict(type="str"),
            token=dict(type="str", no_log=True, fallback=(env_fallback, ["HF_TOKEN"])),
            xet=dict(type="bool", default=False),
            max_workers=dict(type="int", default=8),
            hash_aside=dict(type="str", default="auto", choices=["auto", "always", "never"]),
            stall_timeout=dict(type="float", default=60),
            retry_budget_s=dict(type="float", default=900),
            retry_backoff=dict(type="float", default=2),
            free_space_reserve_bytes=dict(type="int", default=0),
            verify=dict(type="bool", default=False),
            progress_file=dict(type="path"),
            ca_bundle=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    try:
        result = run(dict(module.params), module.check_mode)
    except PrefetchError as error:
        details = {key: value for key, value in error.details.items() if value is not None}
        module.fail_json(msg=str(error), **details)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
