# -*- coding: utf-8 -*-
# Copyright: glm-deploy developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""What the Lambda Cloud modules share: their API options (documented once, in the doc fragment
glm.deploy.lambda_cloud), the client those options make, and the one way a module turns an error into a failed
task.

The key comes from the option api_key_file, else api_key, whose default is the environment's LAMBDA_API_KEY; it is
`no_log`, and a key read from a file is added to the module's no-log values, so Ansible masks it in anything the
module returns.
"""

from __future__ import absolute_import, division, print_function

from ansible.module_utils.basic import env_fallback
from ansible_collections.glm.deploy.plugins.module_utils.lambda_cloud_api import (
    API_KEY_ENV,
    DEFAULT_API_URL,
    LambdaApiError,
    LambdaCloudClient,
    api_key_from,
)
from ansible_collections.glm.deploy.plugins.module_utils.lambda_cloud_launch import LaunchError
from ansible_collections.glm.deploy.plugins.module_utils.lambda_cloud_resources import ResourceError

__metaclass__ = type


def api_argument_spec(**module_options):
    spec = dict(
        api_url=dict(type="str", fallback=(env_fallback, ["LAMBDA_API_URL"])),
        api_key=dict(type="str", no_log=True, fallback=(env_fallback, [API_KEY_ENV])),
        api_key_file=dict(type="path", no_log=False, fallback=(env_fallback, ["LAMBDA_API_KEY_FILE"])),
        validate_certs=dict(type="bool", default=True),
        api_timeout=dict(type="int", default=30),
        rate_limit_retries=dict(type="int", default=5),
        rate_limit_max_wait=dict(type="int", default=60),
    )
    spec.update(module_options)
    return spec


def client_for(module, **seams):
    """The client the module's options describe; fails the task with one line when there is no usable key."""
    params = module.params
    try:
        if params.get("api_key_file"):
            key, origin = api_key_from(params["api_key_file"])
        else:
            key, origin = api_key_from(None, environ={API_KEY_ENV: params.get("api_key") or ""})
    except LambdaApiError as error:
        module.fail_json(msg=error.message)
    module.no_log_values.add(key)
    return LambdaCloudClient(
        key,
        key_origin=origin,
        api_url=params.get("api_url") or DEFAULT_API_URL,
        timeout=params["api_timeout"],
        validate_certs=params["validate_certs"],
        rate_limit_retries=params["rate_limit_retries"],
        rate_limit_max_wait=params["rate_limit_max_wait"],
        **seams,
    )


def run(module, action):
    """Exit the module with `action()`'s result, or fail it with the error's one-line message."""
    try:
        result = action()
    except (LambdaApiError, LaunchError, ResourceError) as error:
        details = {}
        if getattr(error, "instance", None) is not None:
            details["instance"] = error.instance
        module.fail_json(msg=str(error), **details)
    module.exit_json(**result)
