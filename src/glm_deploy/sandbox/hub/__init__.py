"""A local server that speaks the Hugging Face Hub's download protocol.

The sandbox has no Hub, yet the weights role must run exactly as it does against huggingface.co: resolve
a revision to a commit, list the files with their sizes and sha256, then download them with huggingface_hub.
This module stores repositories on disk as immutable commits (every publish makes a new 40-hex commit;
branches such as `main` move; old commits stay servable) and answers the endpoints huggingface_hub calls:

- `GET /api/models/{repo}` and `GET /api/models/{repo}/revision/{rev}` (`sha`, `siblings`; sizes and LFS
  sha256 with `?blobs=true`),
- `GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=true` (paginated with `Link: <...>; rel="next"`),
- `HEAD`/`GET /{repo}/resolve/{rev}/{filename}` with `X-Repo-Commit`, `ETag`/`X-Linked-Etag`,
  `Content-Length`/`X-Linked-Size` and `Range`; no Xet headers, so clients use plain HTTP.

Errors carry the Hub's `X-Error-Code` (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo) so that
huggingface_hub raises the same exception types it raises against the real Hub.

`HubRequestHandler.serve_file` is the one place a file's bytes are sent: test equipment subclasses the
handler and overrides it to drop connections, stall, corrupt bytes or answer 429/500.

Run it with `python -m glm_deploy.sandbox.hub --root DIR --host 127.0.0.1 --port 8080`. With `--tls-cert` and
`--tls-key` (or `HubServer(..., ssl_context=...)`) it speaks HTTPS instead, as the real Hub and a mirror do.
"""

from glm_deploy.sandbox.hub.server import (
    FileRequest,
    HubHTTPServer,
    HubRequestHandler,
    HubServer,
    ServerStats,
    server_ssl_context,
)
from glm_deploy.sandbox.hub.store import Commit, FileEntry, HubStore, HubStoreError, validate_repo_id

__all__ = [
    "Commit",
    "FileEntry",
    "FileRequest",
    "HubHTTPServer",
    "HubRequestHandler",
    "HubServer",
    "HubStore",
    "HubStoreError",
    "ServerStats",
    "server_ssl_context",
    "validate_repo_id",
]
