"""The `glm-deploy` command line: a thin layer over the Python API.

Each sub-command lives in `glm_deploy.commands.<name>` and exposes `register(subparsers)`, which adds its parser
and sets `handler` (a callable taking the parsed namespace and returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from glm_deploy import __version__
from glm_deploy.errors import GlmDeployError

# Sub-command modules, in the order `glm-deploy --help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "catalog",
    "plan",
    "sandbox",
    "deployment",  # deploy, verify, benchmark, status, history
    "lock",
    "client_env",
    "schedule",
    "lambda_cloud",  # up, down
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="glm-deploy",
        description="Deploy Z.ai's GLM-5 family with SGLang or vLLM: plan, deploy, verify, benchmark.",
    )
    parser.add_argument("--version", action="version", version=f"glm-deploy {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"glm_deploy.commands.{name}")
        module.register(subparsers)
    return parser




def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return handler(args)
    except GlmDeployError as error:
        print(f"glm-deploy {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"glm-deploy {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
