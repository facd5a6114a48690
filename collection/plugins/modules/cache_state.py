#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: glm-deploy developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""How full the engine's JIT cache directories are, whether they are warm, and the markers that say so."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: cache_state
short_description: Measure a glm-deploy endpoint's JIT caches and mark them warm
description:
  - Each cache directory of a plan (DeepGEMM, Inductor, Triton, FlashInfer, the engine's own) is keyed by what
    invalidates it (image, GPU arch, parallelism, flags), so a directory is either cold or warm for good.
  - A directory is warm when it holds the marker file O(marker_name), a small JSON document naming the release
    that found it warm, when, and what made it warm (V(warmup), the precompile step before the cut-over, or
    V(first_start), the engine's first healthy start).
  - Reports per cache kind the path, the bytes and files in it (the marker excluded; symbolic links are not
    followed), and the marker's fields. With O(mark), writes the marker into every existing directory that has
    none yet; a marker already there is kept, so it keeps naming the release that made the cache warm.
  - Supports check mode (it reports what it would mark and writes nothing).
version_added: "0.1.0"
options:
  caches:
    description: The cache directories by kind, e.g. C(deep_gemm) to C(/var/lib/glm-deploy/cache/deep_gemm/KEY).
    type: dict
    required: true
  mark:
    description: Write the marker into each existing directory that has none (after the endpoint is healthy).
    type: bool
    default: false
  release_id:
    description: The release whose start found the caches warm, recorded in new markers (O(mark)).
    type: str
  warmed_by:
    description:
      - What made each kind warm, recorded in new markers; kinds not named get O(default_warmed_by).
    type: dict
    default: {}
  default_warmed_by:
    description: What made a kind missing from O(warmed_by) warm.
    type: str
    default: first_start
  marker_name:
    description: The marker's file name inside each cache directory.
    type: str
    default: .glm-deploy-warm.json
author:
  - glm-deploy developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Is the DeepGEMM cache of this plan warm?
  glm.deploy.cache_state:
    caches:
      deep_gemm: /var/lib/glm-deploy/cache/deep_gemm/sglang-v0.5.10-cu12-sm-100-tp8-c85cae793756
  register: caches

- name: Mark the caches warm after the first healthy start
  glm.deploy.cache_state:
    caches: "{{ glm_plan.cache_kinds }}"
    mark: true
    release_id: 0123456789ab
    warmed_by: {deep_gemm: warmup}
"""

RETURN = r"""
caches:
  description:
    - Per cache kind, C(path), C(exists), C(bytes), C(files), C(warm), and from the marker C(since) (when it was
      marked), C(release_id) and C(warmed_by) (null when cold).
  returned: always
  type: dict
warm:
  description: Whether every cache directory is warm.
  returned: always
  type: bool
cold:
  description: The kinds that are not warm (after this task's marking).
  returned: always
  type: list
marked:
  description: The kinds this task marked warm (or would mark, in check mode).
  returned: always
  type: list
"""

import datetime  # noqa: E402 (Ansible modules put DOCUMENTATION first; imports follow it)
import json  # noqa: E402
import os  # noqa: E402
import stat  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.glm.deploy.plugins.module_utils.atomic_file import write_atomic  # noqa: E402

MARKER_FIELDS = ("since", "release_id", "warmed_by")


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def measure(path, marker_name):
    """(bytes, files) under `path`, without following links and without the marker."""
    total_bytes = 0
    files = 0
    for folder, _dirs, names in os.walk(path, followlinks=False):
        for name in names:
            if folder == path and name == marker_name:
                continue
            try:
                info = os.lstat(os.path.join(folder, name))
            except OSError:
                continue  # removed while walking (an engine pruning its cache)
            if stat.S_ISREG(info.st_mode):
                total_bytes += info.st_size
                files += 1
    return total_bytes, files


def read_marker(path):
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def write_marker(path, document):
    write_atomic(path, json.dumps(document, indent=2, sort_keys=True) + "\n", 0o644)


def cache_record(path, marker):
    record = dict(path=path, exists=os.path.isdir(path), bytes=0, files=0, warm=marker is not None)
    for field in MARKER_FIELDS:
        record[field] = (marker or {}).get(field)
    return record


def main():
    module = AnsibleModule(
        argument_spec=dict(
            caches=dict(type="dict", required=True),
            mark=dict(type="bool", default=False),
            release_id=dict(type="str"),
            warmed_by=dict(type="dict", default={}),
            default_warmed_by=dict(type="str", default="first_start"),
            marker_name=dict(type="str", default=".glm-deploy-warm.json"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    marker_name = params["marker_name"]
    if not marker_name or "/" in marker_name:
        module.fail_json(msg="marker_name must be a plain file name, got %r" % (marker_name,))
    caches = params["caches"]
    for kind, path in caches.items():
        if not isinstance(path, str) or not os.path.isabs(path):
            module.fail_json(msg="caches.%s must be an absolute directory path, got %r" % (kind, path))
    results = {}
    marked = []
    for kind in sorted(caches):
        path = os.path.normpath(caches[kind])
        marker_path = os.path.join(path, marker_name)
        marker = read_marker(marker_path)
        record = cache_record(path, marker)
        if record["exists"]:
            record["bytes"], record["files"] = measure(path, marker_name)
        if params["mark"] and record["exists"] and marker is None:
            marker = dict(
                since=_now(),
                release_id=params["release_id"],
                warmed_by=str(params["warmed_by"].get(kind) or params["default_warmed_by"]),
                kind=kind,
            )
            if not module.check_mode:
                try:
                    write_marker(marker_path, marker)
                except OSError as error:
                    module.fail_json(msg="cannot write the warm marker %s: %s" % (marker_path, error))
            marked.append(kind)
            record.update(warm=True, **{field: marker[field] for field in MARKER_FIELDS})
        results[kind] = record
    cold = [kind for kind in sorted(results) if not results[kind]["warm"]]
    module.exit_json(changed=bool(marked), caches=results, warm=not cold, cold=cold, marked=marked)


if __name__ == "__main__":
    main()
