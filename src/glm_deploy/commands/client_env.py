"""`glm-deploy client-env --for claude-code|openai`: the environment a coding agent needs for the endpoint."""

from __future__ import annotations

import argparse
import json
import sys

from glm_deploy.client_env import CLIENTS, client_environment
from glm_deploy.commands.deployment import DEFAULT_INVENTORY, error_document
from glm_deploy.credentials import api_key_file
from glm_deploy.deployment import Deployment
from glm_deploy.errors import GlmDeployError, InputError
from glm_deploy.render import PlanOptions
from glm_deploy.tls import ca_bundle, ca_cert_file, tls_dir


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "client-env",
        help="print the environment a coding agent (Claude Code, OpenAI clients) needs for the endpoint",
        description="Print `export` lines for a coding agent: base URL, model names and where the API key is "
        '(as `$(cat FILE)`; the key itself is never printed). Use: eval "$(glm-deploy client-env --for '
        'claude-code)"',
    )
    parser.add_argument("--for", dest="client", required=True, choices=CLIENTS, help="which client")
    parser.add_argument(
        "-i", "--inventory", default=DEFAULT_INVENTORY, help=f"inventory (default {DEFAULT_INVENTORY})"
    )
    parser.add_argument("--host", help="inventory host (or address) to point at (default: the first host)")
    parser.add_argument("--json", action="store_true", help="print the variables as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        deployment = Deployment(args.inventory)
        plan = deployment.plan()
        options = PlanOptions.from_mapping(deployment.settings()["options"])
        view = deployment.inventory_view()
        if args.host:
            address = view.address(args.host) if args.host in view.hosts else args.host
        elif view.hosts:
            address = view.address(view.hosts[0])
        else:
            raise InputError(
                f"inventory {deployment.inventory} has no hosts in group glm_servers",
                hint="start them first (e.g. `glm-deploy sandbox up`), or pass --host ADDRESS",
            )
        ca_file = ca_bundle_file = None
        if plan.tls["mode"] == "acme":
            # The ACME certificate names the domain only.
            address = str(plan.tls["domain"])
        elif plan.tls["mode"] == "internal":
            folder = tls_dir()
            ca_file = ca_cert_file(folder)
            if not ca_file.is_file():
                raise InputError(
                    f"the endpoint's CA {ca_file} does not exist on this machine yet",
                    hint="`glm-deploy deploy` makes it (with tls: internal), or copy it there from the controller",
                )
            ca_bundle_file = ca_bundle(folder)
        environment = client_environment(
            args.client,
            address=address,
            port=plan.port,
            served_model_name=plan.served_model_name,
            key_file=api_key_file() if options.api_key_required else None,
            scheme="http" if plan.tls["mode"] == "off" else "https",
            ca_file=ca_file,
            ca_bundle=ca_bundle_file,
        )
    except GlmDeployError as error:
        if args.json:
            print(json.dumps(error_document("client-env", error), indent=2))
        print(f"glm-deploy client-env: error: {error}", file=sys.stderr)
        return error.exit_code
    if args.json:
        print(json.dumps(environment.to_dict(), indent=2))
    else:
        print(environment.shell())
    return 0
