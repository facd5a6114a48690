#!/usr/bin/python
# The work is done by the action plugin of the same name (plugins/action/cache_warmup_wait.py);
# this file documents it.

DOCUMENTATION = r"""
module: cache_warmup_wait
short_description: Wait for an async JIT warm-up job, printing how far its caches have filled on every poll
description:
  - Polls the async job O(jid) with async_status until it ends, and between polls measures the directories in
    O(caches) on the target (M(glm.deploy.cache_state), read-only) and prints one line with the bytes and files
    compiled so far and the time spent.
  - Returns the command's C(rc), C(cmd), C(elapsed_s) and C(output_tail) (the last O(output_lines) lines of its
    output and of its errors), fails with them when the command failed, and removes the job's status file.
  - On timeout it fails and leaves the job to its own time limit.
options:
  jid:
    description: Job id returned by the async warm-up task (C(ansible_job_id)).
    type: str
    required: true
  caches:
    description: The cache directories the warm-up fills, by kind (the plan's C(cache_kinds) entries).
    type: dict
  label:
    description: What the progress lines are about.
    type: str
    default: JIT warm-up
  poll_interval:
    description: Seconds between polls.
    type: float
    default: 30
  timeout:
    description: Seconds to wait before failing.
    type: float
    default: 7200
  output_lines:
    description: Lines of the command's output and errors kept in the result.
    type: int
    default: 40
author:
  - glm-deploy developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Wait for the warm-up
  glm.deploy.cache_warmup_wait:
    jid: "{{ warmup_job.ansible_job_id }}"
    caches:
      deep_gemm: /var/lib/glm-deploy/cache/deep_gemm/sglang-v0.5.10-cu12-sm-100-tp8-c85cae793756
    label: DeepGEMM warm-up
"""

RETURN = r"""
rc:
  description: The warm-up command's exit status.
  type: int
  returned: when the job ended
output_tail:
  description: The last lines of the command's output and errors.
  type: list
  returned: when the job ended
elapsed_s:
  description: Seconds this task waited.
  type: int
  returned: when the job ended
"""
