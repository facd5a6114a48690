"""`python -m glm_deploy.sandbox.hub`: serve a store of repositories, optionally publishing folders first."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
import types
from collections.abc import Sequence
from pathlib import Path

from glm_deploy.sandbox.hub.server import HubServer, server_ssl_context
from glm_deploy.sandbox.hub.store import HubStore, validate_repo_id

logger = logging.getLogger(__name__)


def _parse_publish(value: str) -> tuple[str, Path]:
    repo_id, sep, directory = value.partition("=")
    if not sep or not repo_id or not directory:
        raise argparse.ArgumentTypeError(f"--publish {value!r}: expected REPO_ID=DIRECTORY")
    try:
        validate_repo_id(repo_id)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    path = Path(directory)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"--publish {value!r}: {directory} is not a directory")
    return repo_id, path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m glm_deploy.sandbox.hub",
        description="Serve a directory of model repositories over the Hugging Face Hub's download protocol.",
    )
    parser.add_argument("--root", type=Path, required=True, help="store directory (created if missing)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on; 0 picks a free one (default 8080)")
    parser.add_argument("--port-file", type=Path, help="write the bound port here once listening")
    parser.add_argument(
        "--publish",
        type=_parse_publish,
        action="append",
        default=[],
        metavar="REPO_ID=DIR",
        help="publish DIR as a new commit of REPO_ID before serving (repeatable)",
    )
    parser.add_argument("--branch", default="main", help="branch --publish moves (default main)")
    parser.add_argument("--gated", action="store_true", help="mark the --publish repositories gated")
    parser.add_argument("--publish-only", action="store_true", help="publish, print the commits, and exit")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    parser.add_argument("--tls-cert", type=Path, help="serve HTTPS with this PEM certificate (chain)")
    parser.add_argument("--tls-key", type=Path, help="the PEM private key of --tls-cert")
    args = parser.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together: give both for HTTPS, neither for HTTP")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(message)s")

    args.root.mkdir(parents=True, exist_ok=True)
    store = HubStore(args.root)
    for repo_id, directory in args.publish:
        sha = store.publish_directory(repo_id, directory, branch=args.branch, gated=args.gated)
        print(f"{repo_id} {args.branch} {sha}", flush=True)
    if args.publish_only:
        return 0
    context = None
    if args.tls_cert:
        try:
            context = server_ssl_context(args.tls_cert, args.tls_key)
        except OSError as error:  # ssl.SSLError included
            print(f"cannot load --tls-cert {args.tls_cert} / --tls-key {args.tls_key}: {error}", file=sys.stderr)
            return 1
    try:
        server = HubServer(store, args.host, args.port, ssl_context=context)
    except OSError as error:
        print(f"cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    if args.port_file:
        args.port_file.write_text(f"{server.port}\n")

    def stop(signum: int, frame: types.FrameType | None) -> None:
        # shutdown() blocks until serve_forever returns, so it must run outside the serving thread.
        threading.Thread(target=server.httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    print(f"serving {args.root} on {server.url}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    server.httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
