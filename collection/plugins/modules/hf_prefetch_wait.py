#!/usr/bin/python
# The work is done by the action plugin of the same name (plugins/action/hf_prefetch_wait.py);
# this file documents it.

DOCUMENTATION = r"""
module: hf_prefetch_wait
short_description: Wait for an async glm.deploy.hf_prefetch job, printing its progress on every poll
description:
  - Polls the async job O(jid) with async_status until it ends, and between polls reads O(progress_file)
    on the target and prints one line with bytes done and total, rate, ETA and files done.
  - Returns the result of the hf_prefetch module (commit, snapshot_path, bytes_fetched, ...) and removes the
    job's status file.
  - On timeout it fails and leaves the job running on the host; a re-run of the play waits again and reuses
    every finished file.
options:
  jid:
    description: Job id returned by the async hf_prefetch task (C(ansible_job_id)).
    type: str
    required: true
  progress_file:
    description: Progress JSON file the module rewrites on the target (its O(progress_file) option).
    type: path
  label:
    description: What the progress lines are about, e.g. C(weights zai-org/GLM-5-FP8).
    type: str
    default: weights
  poll_interval:
    description: Seconds between polls.
    type: float
    default: 15
  timeout:
    description: Seconds to wait before failing (the job keeps running).
    type: float
    default: 172800
author:
  - glm-deploy developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Wait for the download
  glm.deploy.hf_prefetch_wait:
    jid: "{{ weights_job.ansible_job_id }}"
    progress_file: /var/lib/glm-deploy/weights-progress.json
    label: weights zai-org/GLM-5-FP8
"""

RETURN = r"""
commit:
  description: The commit the download resolved its revision to (from hf_prefetch).
  type: str
  returned: success
"""
