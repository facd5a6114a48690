#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: glm-deploy developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""A role's accounts, folders and small files on the host, and what it needs to read there, in one module run."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: host_layout
short_description: Make a role's service account, folders and small files on a host, and read what it checks
description:
  - One module run instead of one per item, so a host that is already as asked answers in one round trip (each
    module run costs a third of a second or more; a converged C(site.yml) re-run is mostly such runs).
  - Makes, in this order, the system group and user O(account) names, the O(folders), and the O(files) with their
    content, owner, group and mode. Each is changed only where it differs; files are written atomically (a
    temporary file in the same folder, then a rename).
  - Reads, after the writes, the Debian packages of O(packages) that are not installed, the text of each file in
    O(read), and whether each path in O(stat) exists.
  - Supports check mode (it reports what it would change and changes nothing). File contents are never returned
    or logged.
version_added: "0.1.0"
options:
  account:
    description:
      - A system group and a system user of the same name (the user's primary group), without a home folder
        being made. An existing user whose home, shell or group differ is changed.
    type: dict
    suboptions:
      name:
        description: The user's and the group's name.
        type: str
        required: true
      home:
        description: The user's home (not created).
        type: path
        required: true
      shell:
        description: The user's shell.
        type: path
        default: /usr/sbin/nologin
  folders:
    description: Folders to make (with their parents) or correct.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: The folder.
        type: path
        required: true
      owner:
        description: The owner; an existing folder keeps its owner when not given.
        type: str
      group:
        description: The group; an existing folder keeps its group when not given.
        type: str
      mode:
        description: The mode in octal, such as C(0755).
        type: str
        required: true
  files:
    description: Small files to write (the folder they are in must exist or be among O(folders)).
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: The file.
        type: path
        required: true
      content:
        description: The file's text (never logged or returned).
        type: str
        required: true
      owner:
        description: The owner; kept when not given.
        type: str
      group:
        description: The group; kept when not given.
        type: str
      mode:
        description: The mode in octal, such as C(0644).
        type: str
        required: true
  packages:
    description: Debian packages to look up; those not installed come back in RV(missing_packages).
    type: list
    elements: str
    default: []
  read:
    description: Files whose text to return in RV(contents) (at most 1 MiB each; a missing file reads as null).
    type: list
    elements: path
    default: []
  stat:
    description:
      - Paths to look up; RV(paths) says whether each exists, is a folder and is executable, and the size of the
        filesystem holding it (such as C(/dev/shm), which the engine's workers exchange tensors through).
    type: list
    elements: path
    default: []
author:
  - glm-deploy developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Prepare the service user, its folders and the secrets file
  glm.deploy.host_layout:
    account: {name: glm, home: /var/lib/glm-deploy}
    folders:
      - {path: /var/lib/glm-deploy/cache, owner: glm, group: glm, mode: "0755"}
    files:
      - {path: /etc/glm-deploy/glm.env, content: "GLM_API_KEY=...\n", owner: root, group: root, mode: "0600"}
    packages: [python3-venv]
    read: [/opt/glm-deploy/venvs/hub/.glm-deploy-installed]
  no_log: true
  register: layout
"""

RETURN = r"""
changes:
  description: What was changed (or would be, in check mode), one line each, such as C(created folder /x).
  returned: always
  type: list
  elements: str
written:
  description: The paths of O(files) and O(folders) that were created or changed.
  returned: always
  type: list
  elements: str
missing_packages:
  description: The packages of O(packages) that are not installed, in the order given.
  returned: always
  type: list
  elements: str
contents:
  description: Each path of O(read) and its text, or null when it does not exist.
  returned: always
  type: dict
paths:
  description: Each path of O(stat) and C(exists), C(isdir), C(executable) and C(fs_size_mib) (null when missing).
  returned: always
  type: dict
"""

import grp  # noqa: E402 (Ansible modules put DOCUMENTATION first; imports follow it)
import os  # noqa: E402
import pwd  # noqa: E402
import re  # noqa: E402
import stat as stat_module  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.glm.deploy.plugins.module_utils.atomic_file import write_atomic  # noqa: E402

NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}\Z")
MODE = re.compile(r"0?[0-7]{3,4}\Z")
PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]*(:[a-z0-9]+)?\Z")
READ_LIMIT = 1 << 20


class LayoutError(Exception):
    """A value this module refuses, or a change it could not make."""


def _clean_path(value, what):
    if not value or not os.path.isabs(value) or any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise LayoutError("%s must be an absolute path without control characters, got %r" % (what, value[:200]))
    return os.path.normpath(value)


def _mode(value, what):
    if not isinstance(value, str) or not MODE.match(value):
        raise LayoutError("%s must be an octal mode such as 0755, got %r" % (what, str(value)[:40]))
    return int(value, 8)


def _name(value, what):
    if not NAME.match(value):
        raise LayoutError(
            "%s must be a user or group name ([a-z_][a-z0-9_-]*, 32 at most), got %r" % (what, value[:40]))
    return value


class Layout(object):
    def __init__(self, module):
        self.module = module
        self.check = module.check_mode
        self.changes = []
        self.written = []
        # Names this run creates: in check mode they do not exist yet, so what is owned by them is a change.
        self.pending_names = set()

    def run(self, argv):
        if self.check:
            return
        rc, _out, err = self.module.run_command(argv)
        if rc != 0:
            raise LayoutError("%s failed (rc %s): %s" % (" ".join(argv[:2]), rc, err.strip()[-300:]))

    def account(self, spec):
        name = _name(spec["name"], "account.name")
        home = _clean_path(spec["home"], "account.home")
        shell = _clean_path(spec["shell"], "account.shell")
        try:
            gid = grp.getgrnam(name).gr_gid
        except KeyError:
            self.run(["groupadd", "--system", name])
            self.changes.append("created group %s" % name)
            self.pending_names.add(name)
            gid = None if self.check else grp.getgrnam(name).gr_gid
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            self.run(["useradd", "--system", "--gid", name, "--no-create-home", "--home-dir", home,
                      "--shell", shell, name])
            self.changes.append("created user %s" % name)
            self.pending_names.add(name)
            return
        fixes = []
        if user.pw_dir != home:
            fixes += ["--home", home]
        if user.pw_shell != shell:
            fixes += ["--shell", shell]
        if gid is None or user.pw_gid != gid:
            fixes += ["--gid", name]
        if fixes:
            self.run(["usermod", *fixes, name])
            self.changes.append("changed user %s (%s)" % (name, " ".join(fixes[::2]).replace("--", "")))

    def _ids(self, spec, what):
        """(uid, gid) to set, -1 to keep; None for a name this run creates (check mode only)."""
        ids = []
        for key, lookup in (("owner", pwd.getpwnam), ("group", grp.getgrnam)):
            value = spec.get(key)
            if value is None:
                ids.append(-1)
                continue
            _name(value, "%s.%s" % (what, key))
            if value in self.pending_names and self.check:
                ids.append(None)
                continue
            try:
                entry = lookup(value)
            except KeyError:
                kind = "user" if key == "owner" else "group"
                raise LayoutError("%s.%s: no %s named %s on this host" % (what, key, kind, value)) from None
            ids.append(entry.pw_uid if key == "owner" else entry.gr_gid)
        return ids

    def _fix_metadata(self, path, info, uid, gid, mode):
        """Correct owner, group and mode of an existing path; returns what differed."""
        differs = []
        if uid is None or uid not in (-1, info.st_uid):
            differs.append("owner")
        if gid is None or gid not in (-1, info.st_gid):
            differs.append("group")
        if stat_module.S_IMODE(info.st_mode) != mode:
            differs.append("mode")
        if differs and not self.check:
            os.chown(path, uid if uid is not None else -1, gid if gid is not None else -1)
            os.chmod(path, mode)
        return differs

    def folder(self, index, spec):
        what = "folders[%d]" % index
        path = _clean_path(spec["path"], what + ".path")
        mode = _mode(spec["mode"], what + ".mode")
        uid, gid = self._ids(spec, what)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            if not self.check:
                os.makedirs(path, mode)
                os.chown(path, uid, gid)
                os.chmod(path, mode)
            self.changes.append("created folder %s" % path)
            self.written.append(path)
            return
        if not stat_module.S_ISDIR(info.st_mode):
            raise LayoutError("%s is there but is not a folder" % path)
        differs = self._fix_metadata(path, info, uid, gid, mode)
        if differs:
            self.changes.append("changed %s of folder %s" % ("/".join(differs), path))
            self.written.append(path)

    def file(self, index, spec):
        what = "files[%d]" % index
        path = _clean_path(spec["path"], what + ".path")
        mode = _mode(spec["mode"], what + ".mode")
        uid, gid = self._ids(spec, what)
        content = spec["content"].encode("utf-8")
        folder = os.path.dirname(path)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            info = None
        if info is not None and not stat_module.S_ISREG(info.st_mode):
            raise LayoutError("%s is there but is not a regular file" % path)
        same = False
        if info is not None and info.st_size == len(content):
            with open(path, "rb") as handle:
                same = handle.read() == content
        if same:
            differs = self._fix_metadata(path, info, uid, gid, mode)
            if differs:
                self.changes.append("changed %s of file %s" % ("/".join(differs), path))
                self.written.append(path)
            return
        self.changes.append("%s file %s" % ("wrote" if info is None else "rewrote", path))
        self.written.append(path)
        if self.check:
            return
        if not os.path.isdir(folder):
            raise LayoutError("cannot write %s: its folder %s does not exist" % (path, folder))
        write_atomic(path, content, mode, uid, gid)

    def missing_packages(self, packages):
        for package in packages:
            if not PACKAGE.match(package):
                raise LayoutError("packages: %r is not a Debian package name" % package[:80])
        if not packages:
            return []
        rc, out, _err = self.module.run_command(
            ["dpkg-query", "--show", "--showformat", "${Package} ${db:Status-Status}\n", *packages])
        installed = set()
        for line in out.splitlines():
            words = line.split()
            if len(words) == 2 and words[1] == "installed":
                installed.add(words[0].split(":")[0])
        # dpkg-query exits 1 when a package is unknown; the others are still listed. Without dpkg every one is missing.
        del rc
        return [package for package in packages if package.split(":")[0] not in installed]


def read_text(path):
    try:
        with open(path, "rb") as handle:
            data = handle.read(READ_LIMIT + 1)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if len(data) > READ_LIMIT:
        raise LayoutError("%s is larger than 1 MiB; read is for small marker files" % path)
    return data.decode("utf-8", errors="replace")


def stat_path(path):
    try:
        info = os.stat(path)
        filesystem = os.statvfs(path)
    except OSError:
        return dict(exists=False, isdir=False, executable=False, fs_size_mib=None)
    return dict(exists=True, isdir=stat_module.S_ISDIR(info.st_mode),
                executable=stat_module.S_ISREG(info.st_mode) and os.access(path, os.X_OK),
                fs_size_mib=filesystem.f_blocks * filesystem.f_frsize // (1 << 20))


def main():
    owned = dict(owner=dict(type="str"), group=dict(type="str"), mode=dict(type="str", required=True))
    module = AnsibleModule(
        argument_spec=dict(
            account=dict(type="dict", options=dict(
                name=dict(type="str", required=True),
                home=dict(type="path", required=True),
                shell=dict(type="path", default="/usr/sbin/nologin"),
            )),
            folders=dict(type="list", elements="dict", default=[],
                         options=dict(path=dict(type="path", required=True), **owned)),
            files=dict(type="list", elements="dict", default=[],
                       options=dict(path=dict(type="path", required=True),
                                    content=dict(type="str", required=True, no_log=True), **owned)),
            packages=dict(type="list", elements="str", default=[]),
            read=dict(type="list", elements="path", default=[]),
            stat=dict(type="list", elements="path", default=[]),
        ),
        supports_check_mode=True,
    )
    params = module.params
    layout = Layout(module)
    try:
        if params["account"]:
            layout.account(params["account"])
        for index, spec in enumerate(params["folders"]):
            layout.folder(index, spec)
        for index, spec in enumerate(params["files"]):
            layout.file(index, spec)
        missing = layout.missing_packages(params["packages"])
        contents = dict((path, read_text(_clean_path(path, "read"))) for path in params["read"])
        paths = dict((path, stat_path(_clean_path(path, "stat"))) for path in params["stat"])
    except (LayoutError, OSError) as error:
        module.fail_json(msg=str(error), changes=layout.changes)
    module.exit_json(changed=bool(layout.changes), changes=layout.changes, written=layout.written,
                     missing_packages=missing, contents=contents, paths=paths)


if __name__ == "__main__":
    main()
