#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: glm-deploy developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""A Lambda Cloud instance, by name: launched and waited for until SSH answers, or terminated."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: lambda_instance
short_description: Launch or terminate a Lambda Cloud instance by name
description:
  - V(present) launches an instance named O(name) when no live one (C(booting), C(active), C(unhealthy)) has that
    name, then waits until the API reports it C(active) and until its SSH port answers. An instance of that name
    that exists is only waited for (a second run changes nothing); one of another type or region fails the task
    (an instance cannot change either).
  - A launch that does not come up does not bill by mistake. An instance this task launched that is still
    C(booting) after O(boot_timeout), turns C(unhealthy), or whose SSH port stays closed past O(ssh_timeout) is
    terminated before the task fails, and the message says so. An instance the task did not launch is never
    terminated by V(present).
  - A launch refused for want of capacity fails with the regions that have capacity for O(instance_type) now
    (from C(GET /api/v1/instance-types)). A quota refusal says whom to ask.
  - Launches are spaced O(launch_interval) seconds apart on the controller (Lambda allows about one launch per
    12 s per account); a lock file in the controller's temporary folder holds the last launch's time, so a loop
    over several instances, or plays at once, wait rather than meet HTTP 429 (which is still waited out).
  - V(absent) terminates every live instance named O(name) and, with O(wait), waits until they are C(terminated).
  - Supports check mode (nothing is launched or terminated; C(changed) says whether it would be).
version_added: "0.1.0"
extends_documentation_fragment:
  - glm.deploy.lambda_cloud
options:
  name:
    description: The instance's name, unique among the account's live instances (1-64 letters, digits, C(.),
      C(_) or C(-)). Required unless O(name_prefix) is given.
    type: str
  name_prefix:
    description:
      - With O(state=absent) only, instead of O(name), terminate every live instance whose name starts with this
        (how C(playbooks/lambda_down.yml) ends a deployment of any number of nodes).
    type: str
  state:
    description: Whether a live instance of this name should exist.
    type: str
    choices: [present, absent]
    default: present
  region:
    description: The region to launch in (like C(us-east-1)). Required when O(state=present).
    type: str
  instance_type:
    description: The instance type (like C(gpu_8x_b200_sxm6)). Required when O(state=present).
    type: str
  ssh_key_name:
    description: The account's SSH key to install (Lambda takes exactly one; see M(glm.deploy.lambda_ssh_key)).
      Required when O(state=present).
    type: str
  filesystem:
    description: A filesystem to mount under C(/lambda/nfs/NAME); it must be in O(region)
      (see M(glm.deploy.lambda_filesystem)).
    type: str
  firewall_ruleset:
    description: The name of a firewall ruleset in O(region) to apply (see M(glm.deploy.lambda_firewall_ruleset)).
    type: str
  tags:
    description: Tags of the instance (key to value); the inventory plugin glm.deploy.lambda_cloud filters on them.
    type: dict
    default: {}
  image_family:
    description: The image family to boot (like C(lambda-stack-22-04)); Lambda's default image when not set.
    type: str
  wait:
    description: Wait for the instance to be C(active) (V(present)) or C(terminated) (V(absent)).
    type: bool
    default: true
  boot_timeout:
    description: Seconds a launch may stay C(booting) before it is terminated and the task fails; also the
      longest wait for a termination.
    type: int
    default: 1200
  wait_for_ssh:
    description: After C(active), wait until O(ssh_port) of the public address accepts a connection.
    type: bool
    default: true
  ssh_port:
    description: The port O(wait_for_ssh) checks.
    type: int
    default: 22
  ssh_timeout:
    description: Seconds to wait for the SSH port after C(active).
    type: int
    default: 300
  poll_interval:
    description: Seconds between two looks at the instance (Lambda allows about one request per second).
    type: float
    default: 10
  launch_interval:
    description: The least number of seconds between two launches from this controller to this O(api_url).
    type: float
    default: 12
author:
  - glm-deploy developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: One 8x B200 node, SSH reachable
  glm.deploy.lambda_instance:
    name: glm-1
    region: us-east-1
    instance_type: gpu_8x_b200_sxm6
    ssh_key_name: glm-deploy
    filesystem: glm-weights
    firewall_ruleset: glm-endpoint
    tags:
      glm-deploy: "true"
  delegate_to: localhost
  register: node

- name: Gone
  glm.deploy.lambda_instance:
    name: glm-1
    state: absent
  delegate_to: localhost
"""

RETURN = r"""
instance:
  description: The instance as the API last showed it (id, name, status, ip, private_ip, region, instance_type,
    file_system_names, tags; without its JupyterLab token). Null when absent, or in check mode before a launch.
  returned: always
  type: dict
launched:
  description: Whether this task launched the instance.
  returned: when state is present
  type: bool
boot_wait_s:
  description: Seconds spent waiting for C(active).
  returned: when state is present
  type: float
ssh_wait_s:
  description: Seconds spent waiting for the SSH port.
  returned: when state is present
  type: float
launch_paced_s:
  description: Seconds the launch waited to keep O(launch_interval) after the last one.
  returned: when state is present
  type: float
rate_limit_waits:
  description: Seconds waited on HTTP 429 answers, one entry per wait.
  returned: always
  type: list
  elements: float
terminated_ids:
  description: The ids of the instances this task terminated (V(absent)).
  returned: when state is absent
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.glm.deploy.plugins.module_utils.lambda_cloud_launch import (  # noqa: E402
    InstanceLifecycle,
    ensure_absent,
    ensure_present,
)
from ansible_collections.glm.deploy.plugins.module_utils.lambda_cloud_module import (  # noqa: E402
    api_argument_spec,
    client_for,
    run,
)


def main():
    module = AnsibleModule(
        argument_spec=api_argument_spec(
            name=dict(type="str"),
            name_prefix=dict(type="str"),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            region=dict(type="str"),
            instance_type=dict(type="str"),
            ssh_key_name=dict(type="str", no_log=False),
            filesystem=dict(type="str"),
            firewall_ruleset=dict(type="str"),
            tags=dict(type="dict", default={}),
            image_family=dict(type="str"),
            wait=dict(type="bool", default=True),
            boot_timeout=dict(type="int", default=1200),
            wait_for_ssh=dict(type="bool", default=True),
            ssh_port=dict(type="int", default=22),
            ssh_timeout=dict(type="int", default=300),
            poll_interval=dict(type="float", default=10),
            launch_interval=dict(type="float", default=12),
        ),
        required_if=[("state", "present", ["name", "region", "instance_type", "ssh_key_name"])],
        required_one_of=[("name", "name_prefix")],
        mutually_exclusive=[("name", "name_prefix")],
        supports_check_mode=True,
    )
    client = client_for(module)
    lifecycle = InstanceLifecycle(client, launch_interval=module.params["launch_interval"])
    if module.params["name_prefix"] and module.params["state"] == "present":
        module.fail_json(msg="name_prefix is for state: absent; launch each instance by its name")

    def act():
        if module.params["state"] == "absent":
            result = ensure_absent(lifecycle, module.params, module.check_mode)
        else:
            result = ensure_present(lifecycle, module.params, module.check_mode)
            result["launch_paced_s"] = round(lifecycle.paced_s, 3)
        result["rate_limit_waits"] = [wait[2] for wait in client.rate_limit_waits]
        return result

    run(module, act)


if __name__ == "__main__":
    main()
