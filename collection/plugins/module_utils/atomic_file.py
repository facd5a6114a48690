# -*- coding: utf-8 -*-
# Copyright: glm-deploy developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""One way the host-side modules write a file: a temporary file in the same folder, then a rename.

A reader sees the old file or the new one, never half of one, and a failed write leaves no temporary file behind.
Owner and mode are set on the temporary file before its content is written, so a 0600 secrets file is never
readable by others, not even for a moment. Standard library only (it runs on the target host).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import tempfile


def write_atomic(path, data, mode=0o644, uid=-1, gid=-1):
    """Write `data` (bytes or text, UTF-8) to `path` with `mode`, and `uid`/`gid` unless -1."""
    if not isinstance(data, bytes):
        data = data.encode("utf-8")
    descriptor, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-glm-")
    try:
        os.fchmod(descriptor, mode)
        if uid != -1 or gid != -1:
            os.fchown(descriptor, uid, gid)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
