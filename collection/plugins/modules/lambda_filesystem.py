#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: glm-deploy developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""A Lambda Cloud filesystem (persistent storage that outlives instances), by name."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: lambda_filesystem
short_description: Create or delete a Lambda Cloud filesystem
description:
  - Makes sure a filesystem of the given name exists in O(region) (V(present)) or does not exist (V(absent)).
  - An instance launched with it mounts it under C(/lambda/nfs/NAME); what it holds (model weights) outlives the
    instances.
  - Lambda lists filesystems at C(GET /api/v1/file-systems) but creates them at C(POST /api/v1/filesystems) and
    deletes them at C(DELETE /api/v1/filesystems/ID); this module uses each path as the API describes it.
  - A filesystem cannot move, so one of this name in another region fails the task. One that an instance mounts
    cannot be deleted; terminate its instances first.
  - Supports check mode.
version_added: "0.1.0"
extends_documentation_fragment:
  - glm.deploy.lambda_cloud
options:
  name:
    description: The filesystem's name (letters first, then letters, digits or C(-); at most 60 characters).
    type: str
    required: true
  state:
    description: Whether the filesystem should exist. V(absent) deletes it and everything on it.
    type: str
    choices: [present, absent]
    default: present
  region:
    description: The region of the filesystem (like C(us-east-1)); instances that mount it launch there. Required
      when O(state=present).
    type: str
author:
  - glm-deploy developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: A filesystem for the weights in us-east-1
  glm.deploy.lambda_filesystem:
    name: glm-weights
    region: us-east-1
  delegate_to: localhost
"""

RETURN = r"""
filesystem:
  description: The filesystem as Lambda lists it (id, name, mount_point, region, is_in_use, bytes_used); null when
    absent.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.glm.deploy.plugins.module_utils.lambda_cloud_module import (  # noqa: E402
    api_argument_spec,
    client_for,
    run,
)
from ansible_collections.glm.deploy.plugins.module_utils.lambda_cloud_resources import ensure_filesystem  # noqa: E402


def main():
    module = AnsibleModule(
        argument_spec=api_argument_spec(
            name=dict(type="str", required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            region=dict(type="str"),
        ),
        required_if=[("state", "present", ["region"])],
        supports_check_mode=True,
    )
    client = client_for(module)
    params = module.params
    run(
        module,
        lambda: ensure_filesystem(
            client, params["name"], params["state"], region=params["region"], check_mode=module.check_mode
        ),
    )


if __name__ == "__main__":
    main()
