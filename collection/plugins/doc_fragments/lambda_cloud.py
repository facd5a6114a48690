# -*- coding: utf-8 -*-
# Copyright: glm-deploy developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The options every Lambda Cloud module shares (module_utils/lambda_cloud_module.py reads them)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    DOCUMENTATION = r"""
options:
  api_url:
    description:
      - Where the Lambda Cloud API is (requests go to paths under C(/api/v1) there); tests point it at a stand-in.
      - Defaults to E(LAMBDA_API_URL), else C(https://cloud.lambda.ai).
    type: str
  api_key:
    description:
      - The Lambda Cloud API key. Defaults to E(LAMBDA_API_KEY); prefer the environment or O(api_key_file) to
        writing the key into a playbook. Never shown in output.
    type: str
  api_key_file:
    description:
      - A file holding the API key on its first line (keep it mode 0600); used instead of O(api_key) when set.
        Defaults to E(LAMBDA_API_KEY_FILE).
    type: path
  validate_certs:
    description: Whether to check the TLS certificate of O(api_url).
    type: bool
    default: true
  api_timeout:
    description: Seconds to wait for one answer of the API.
    type: int
    default: 30
  rate_limit_retries:
    description: How many times a request the API answers with HTTP 429 is retried (after C(Retry-After)).
    type: int
    default: 5
  rate_limit_max_wait:
    description: The longest single wait on a 429, in seconds; an API asking for longer fails the task.
    type: int
    default: 60
notes:
  - Runs on the controller (a play on localhost, or C(delegate_to=localhost)); it makes HTTPS calls with
    Ansible's own URL helpers, no SDK.
  - Errors are reported by the API's C(error.code) with what to do about them.
"""
