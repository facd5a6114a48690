#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: glm-deploy developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""A Lambda Cloud firewall ruleset that opens given TCP ports to given networks only."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: lambda_firewall_ruleset
short_description: Open TCP ports of Lambda Cloud instances to chosen networks only
description:
  - Makes sure a firewall ruleset of the given name exists in O(region) with exactly one TCP rule for each port of
    O(ports) and network of O(allow_cidrs) (V(present)), or does not exist (V(absent)).
  - Rules that differ are replaced in place (C(PATCH)); a ruleset in another region fails the task (rulesets
    cannot move).
  - C(0.0.0.0/0) (any C(/0)) is refused unless O(allow_world=true), because an inference endpoint open to the internet
    is a decision, never a default. A network with host bits set (C(203.0.113.7/24)) is refused with the network it
    probably means.
  - Supports check mode.
version_added: "0.1.0"
extends_documentation_fragment:
  - glm.deploy.lambda_cloud
options:
  name:
    description: The ruleset's name (1-64 letters, digits, C(.), C(_) or C(-)).
    type: str
    required: true
  state:
    description: Whether the ruleset should exist. One that instances use cannot be deleted.
    type: str
    choices: [present, absent]
    default: present
  region:
    description: The region of the ruleset; it applies to instances launched there. Required when
      O(state=present).
    type: str
  ports:
    description: The TCP ports to open (22 for SSH, and the endpoint's port).
    type: list
    elements: int
    default: [22, 8000]
  allow_cidrs:
    description:
      - The IPv4 networks, in CIDR notation, that may connect (a bare address means C(/32)). Required when
        O(state=present).
    type: list
    elements: str
  allow_world:
    description: Allow a C(/0) network in O(allow_cidrs), that is, every address on the internet.
    type: bool
    default: false
author:
  - glm-deploy developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: SSH and the endpoint open to the office only
  glm.deploy.lambda_firewall_ruleset:
    name: glm-endpoint
    region: us-east-1
    ports: [22, 8000]
    allow_cidrs: [203.0.113.0/24]
  delegate_to: localhost
"""

RETURN = r"""
firewall_ruleset:
  description: The ruleset as Lambda holds it (id, name, region, rules, instance_ids); null when absent.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.glm.deploy.plugins.module_utils.lambda_cloud_module import (  # noqa: E402
    api_argument_spec,
    client_for,
    run,
)
from ansible_collections.glm.deploy.plugins.module_utils.lambda_cloud_resources import (  # noqa: E402
    ensure_firewall_ruleset,
)


def main():
    module = AnsibleModule(
        argument_spec=api_argument_spec(
            name=dict(type="str", required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            region=dict(type="str"),
            ports=dict(type="list", elements="int", default=[22, 8000]),
            allow_cidrs=dict(type="list", elements="str"),
            allow_world=dict(type="bool", default=False),
        ),
        required_if=[("state", "present", ["region", "allow_cidrs"])],
        supports_check_mode=True,
    )
    client = client_for(module)
    params = module.params
    run(
        module,
        lambda: ensure_firewall_ruleset(
            client,
            params["name"],
            params["state"],
            region=params["region"],
            ports=params["ports"],
            allow_cidrs=params["allow_cidrs"],
            allow_world=params["allow_world"],
            check_mode=module.check_mode,
        ),
    )


if __name__ == "__main__":
    main()
