#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: glm-deploy developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""An SSH public key of a Lambda Cloud account, by name (instances launch with one)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: lambda_ssh_key
short_description: Add or remove an SSH public key of a Lambda Cloud account
description:
  - Makes sure the account holds (V(present)) or does not hold (V(absent)) an SSH key of the given name.
  - Lambda cannot change a key in place; a key of this name with another public key fails the task, naming the
    way out (remove it, or use another name). Keys are compared by type and key material, not by comment.
  - Only public keys are sent; this module never asks Lambda to generate a key pair.
  - Supports check mode.
version_added: "0.1.0"
extends_documentation_fragment:
  - glm.deploy.lambda_cloud
options:
  name:
    description: The key's name in the account (1-64 letters, digits, C(.), C(_) or C(-)).
    type: str
    required: true
  state:
    description: Whether the key should be there.
    type: str
    choices: [present, absent]
    default: present
  public_key:
    description: The OpenSSH public key (a C(.pub) file's content). Required when O(state=present).
    type: str
author:
  - glm-deploy developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: The deploy key is known to Lambda
  glm.deploy.lambda_ssh_key:
    name: glm-deploy
    public_key: "{{ lookup('ansible.builtin.file', '~/.ssh/id_ed25519.pub') }}"
  delegate_to: localhost
"""

RETURN = r"""
ssh_key:
  description: The key as Lambda holds it (id, name, public_key); null when absent.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.glm.deploy.plugins.module_utils.lambda_cloud_module import (  # noqa: E402
    api_argument_spec,
    client_for,
    run,
)
from ansible_collections.glm.deploy.plugins.module_utils.lambda_cloud_resources import ensure_ssh_key  # noqa: E402


def main():
    module = AnsibleModule(
        argument_spec=api_argument_spec(
            name=dict(type="str", required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            public_key=dict(type="str", no_log=False),
        ),
        required_if=[("state", "present", ["public_key"])],
        supports_check_mode=True,
    )
    client = client_for(module)
    params = module.params
    run(
        module,
        lambda: ensure_ssh_key(
            client, params["name"], params["state"], public_key=params["public_key"], check_mode=module.check_mode
        ),
    )


if __name__ == "__main__":
    main()
