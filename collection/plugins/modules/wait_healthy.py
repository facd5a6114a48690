#!/usr/bin/python
# The work is done by the action plugin of the same name (plugins/action/wait_healthy.py); this file documents it.

DOCUMENTATION = r"""
module: wait_healthy
short_description: Wait until a service's health URL answers, showing its systemd journal meanwhile
description:
  - Polls O(url) from the target until it answers O(status_code), printing the latest line of the unit's journal
    as it goes.
  - Fails early when systemd reports the unit failed or inactive, and on timeout; both failures carry the journal's
    last O(journal_lines) lines.
options:
  url:
    description: Health URL, requested from the target host.
    type: str
    required: true
  unit:
    description: systemd unit whose state and journal are shown.
    type: str
    required: true
  timeout:
    description: Seconds to wait.
    type: int
    default: 600
  interval:
    description: Seconds between probes.
    type: int
    default: 5
  journal_lines:
    description: Journal lines included in a failure.
    type: int
    default: 40
  status_code:
    description: HTTP status that means healthy.
    type: int
    default: 200
author: glm-deploy developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Wait for the endpoint
  glm.deploy.wait_healthy:
    url: http://127.0.0.1:8000/health
    unit: glm-glm-tiny.service
    timeout: 600
"""

RETURN = r"""
elapsed_s:
  description: Seconds until the URL answered (or until the wait gave up).
  returned: always
  type: int
journal:
  description: The unit's last journal lines.
  returned: failure
  type: list
  elements: str
"""
