# Copyright: glm-deploy developers
# Apache License 2.0 (see LICENSE)
"""The engine behind glm.deploy.hf_prefetch: a dependable pre-download of a Hub repository into the HF cache.

It runs on the target, with huggingface_hub from the venv the weights role prepares, and never imports
glm_deploy. Order of work, so that every refusal comes before the first byte is written:

1. resolve the revision to a commit and read every file's size and hash from the Hub's metadata;
2. compare the cache with that metadata (presence and sizes; sha256 only for files never verified);
3. check the cache filesystem (read-only, not writable, free space less a reserve) against the bytes missing;
4. probe access to one missing file (gated repositories, refused tokens) with a HEAD request;
5. download the missing files in parallel into the standard blobs/snapshots/refs layout, streaming each into
   `blobs/<etag>.incomplete` (kept across runs, resumed with Range) and hashing it as it arrives; one retry
   policy (`_with_retries`) covers every request to the Hub: 429 and 503 wait as long as the server says
   (`Retry-After`, or the `RateLimit` header's `t` of an exhausted policy), other 5xx, dropped connections
   and stalls back off, and each call gives up once it has failed for `retry_budget_s` seconds without
   progress (with xet=true, huggingface_hub's hf_hub_download does the transfer instead);
6. a file whose hash differs from the metadata is discarded and fetched again, never linked; every verified
   blob is recorded (size, mtime, inode) so that a re-run checks presence and sizes only.

Progress goes to a JSON file rewritten every second (bytes done/total, rate, ETA) so a caller polling the
async job can show it.

The modules, one concern each:
- `prefetch.py`: `Prefetch` (the steps above in order) and `run`, the module's entry point;
- `settings.py`: the validated parameters and huggingface_hub's environment;
- `cache_layout.py`: the HF cache's blobs/snapshots/refs, the record of verified blobs, the free-space check;
- `transport.py`: one file's bytes from the Hub to the cache (HTTP with splice(2) or a buffer; Xet);
- `verify.py`: hashing as the bytes land, or afterwards;
- `workers.py`: many files at once (forked processes or threads) and stopping on the first failure;
- `retry.py`: the retry policy and which failures are fatal;
- `progress.py`: the progress file;
- `errors.py`: the exceptions and shared wording.
`Prefetch` is one object whose parts (cache, transfers, workers, retries, progress) are mixed in from their
modules: they share one lock, one stop event and one set of results, which forked workers inherit whole.
"""
