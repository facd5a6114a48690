#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: glm-deploy developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The releases a host has staged, which one serves, which one served before it, and the host's redeploy lock."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: release
short_description: Stage, activate and record the releases of a glm-deploy endpoint on its host
description:
  - A release is what a host serves; its folder C(ROOT/releases/ID/) holds C(release.json) (the model commit,
    the engine and its image digest or venv lock, the rendered plan; never a secret) and the unit file rendered
    for it.
  - C(ROOT/releases/state.json) names the C(current) and C(previous) release and keeps the host's own record of
    stages, activations, failures and rollbacks.
  - V(activate) copies the release's unit into the unit folder and moves C(current) to C(previous); starting
    the unit is left to the caller (a restart must follow only when the unit changed).
  - V(lock) and V(unlock) hold C(ROOT/redeploy.lock) for one run, so that two redeploys from two controllers
    never overlap on a host; a lock held by another run is refused with its holder named.
  - Every write is atomic (temporary file and rename). Supports check mode.
version_added: "0.1.0"
options:
  state:
    description:
      - V(query) reads the state; V(stage) records a release; V(activate) makes a staged release current;
        V(failed) marks a release as failed with its cause; V(check_lock), V(lock) and V(unlock) manage the
        redeploy lock.
    type: str
    choices: [query, stage, activate, failed, check_lock, lock, unlock]
    default: query
  root:
    description: The state root of glm-deploy on the host.
    type: path
    default: /var/lib/glm-deploy
  unit_dir:
    description: Where systemd reads the unit from (V(activate)).
    type: path
    default: /etc/systemd/system
  release_id:
    description:
      - The release (V(stage), V(activate), V(failed)). For V(activate) the special value V(previous) names the
        release that served before the current one (a rollback).
    type: str
  release:
    description: The release's document (V(stage)), as the C(glm.deploy.release) filter returns it.
    type: dict
  unit_name:
    description: The unit's file name (V(stage), V(activate)).
    type: str
  cause:
    description: Why the release failed (V(failed)).
    type: str
  holder:
    description:
      - Who takes the lock (V(lock), V(unlock), V(check_lock)); C(run) identifies the run.
      - Given to V(stage), the release is staged only when no other run holds the lock (as V(check_lock) would
        refuse it).
    type: dict
  force:
    description: Take or remove the lock even when another run holds it (for a lock left by a run that died).
    type: bool
    default: false
  keep:
    description: Release folders to keep (V(activate)); the current and previous releases are never removed.
    type: int
    default: 10
author:
  - glm-deploy developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Activate the staged release
  glm.deploy.release:
    state: activate
    release_id: "{{ release.release_id }}"
    unit_name: glm-glm-tiny.service
  register: activated
"""

RETURN = r"""
current:
  description: The release serving after this task (its id), or null.
  returned: always
  type: str
previous:
  description: The release that served before the current one, or null.
  returned: always
  type: str
current_release:
  description: The current release's document.
  returned: always
  type: dict
previous_release:
  description: The previous release's document.
  returned: always
  type: dict
unit_changed:
  description: Whether V(activate) changed the unit file (the caller restarts the unit then).
  returned: when state is activate
  type: bool
holder:
  description: The lock's holder after this task (V(lock)), or the holder found (V(check_lock)).
  returned: when state is lock or check_lock
  type: dict
releases:
  description: The staged release ids, oldest first.
  returned: always
  type: list
"""

import datetime  # noqa: E402 (Ansible modules put DOCUMENTATION first; imports follow it)
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.glm.deploy.plugins.module_utils.atomic_file import write_atomic  # noqa: E402

# Matched with fullmatch: `$` would also match before a trailing newline (a folder name with one).
RELEASE_ID = re.compile(r"[0-9a-f]{12}")
EVENTS_KEPT = 100


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _read_json(path, default):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return default


def _dump(document):
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


class Releases:
    def __init__(self, module):
        self.module = module
        self.root = module.params["root"]
        self.folder = os.path.join(self.root, "releases")
        self.state_path = os.path.join(self.folder, "state.json")
        self.lock_path = os.path.join(self.root, "redeploy.lock")
        self.state = _read_json(self.state_path, {"current": None, "previous": None, "events": []})

    def release_dir(self, release_id):
        if not RELEASE_ID.fullmatch(release_id or ""):
            self.module.fail_json(msg="release_id must be 12 lowercase hex digits, got %r" % (release_id,))
        return os.path.join(self.folder, release_id)

    def document(self, release_id):
        if not release_id:
            return None
        return _read_json(os.path.join(self.folder, release_id, "release.json"), None)

    def staged(self):
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            document = self.document(name) if RELEASE_ID.fullmatch(name) else None
            if document is not None:
                found.append((str(document.get("staged_at") or ""), name))
        return [name for _staged_at, name in sorted(found)]

    def summary(self, **extra):
        current, previous = self.state.get("current"), self.state.get("previous")
        return dict(
            current=current,
            previous=previous,
            current_release=self.document(current),
            previous_release=self.document(previous),
            releases=self.staged(),
            **extra
        )

    def record(self, action, release_id, **details):
        event = dict(at=_now(), action=action, release_id=release_id, **details)
        self.state["events"] = [*(self.state.get("events") or [])[-(EVENTS_KEPT - 1) :], event]

    def save(self):
        if not os.path.isdir(self.folder):
            os.makedirs(self.folder, mode=0o755)
        write_atomic(self.state_path, _dump(self.state))

    # -- releases ------------------------------------------------------------------------------------------

    def stage(self):
        # With a holder, staging is refused while another run holds the lock (one round trip, not two).
        if self.module.params["holder"] is not None:
            found = self._held_by_other(self._holder())
            if found is not None and not self.module.params["force"]:
                self._refuse(found)
        release = self.module.params["release"]
        if not isinstance(release, dict) or not release.get("release_id"):
            self.module.fail_json(msg="state=stage needs release, a document with release_id")
        release_id = release["release_id"]
        folder = self.release_dir(release_id)
        path = os.path.join(folder, "release.json")
        existing = _read_json(path, None)
        wanted = dict(release)
        if existing is not None:
            # The same release staged again keeps its first staging time and its recorded outcome.
            for kept in ("staged_at", "status", "cause", "failed_at"):
                if kept in existing:
                    wanted[kept] = existing[kept]
            if existing.get("status") == "failed":
                # Staging a failed release again means trying it again.
                for cleared in ("status", "cause", "failed_at"):
                    wanted.pop(cleared, None)
        # Microseconds: releases staged within one second still sort in the order they were staged (pruning).
        wanted.setdefault("staged_at", datetime.datetime.now(datetime.timezone.utc).isoformat())
        changed = existing != wanted
        if changed and not self.module.check_mode:
            if not os.path.isdir(folder):
                os.makedirs(folder, mode=0o755)
            write_atomic(path, _dump(wanted))
            self.record("staged", release_id)
            self.save()
        self.module.exit_json(changed=changed, release_dir=folder, **self.summary())

    def activate(self):
        wanted = self.module.params["release_id"]
        unit_name = self.module.params["unit_name"]
        if not unit_name or "/" in unit_name:
            self.module.fail_json(msg="state=activate needs unit_name, a file name such as glm-NAME.service")
        current, previous = self.state.get("current"), self.state.get("previous")
        rollback = wanted == "previous"
        if rollback:
            if not previous:
                self.module.fail_json(
                    msg="no previous release is recorded on this host (current: %s); nothing to roll back to"
                    % (current or "none"),
                    **self.summary()
                )
            wanted = previous
        source = os.path.join(self.release_dir(wanted), unit_name)
        if not os.path.isfile(source) and self.module.check_mode:
            # Check mode on a release staged in this same run: its unit was not written, it would be.
            self.module.exit_json(changed=True, unit_changed=True, unit_path=source, **self.summary())
        if not os.path.isfile(source):
            self.module.fail_json(
                msg="release %s has no staged unit %s (stage it first)" % (wanted, source), **self.summary()
            )
        target = os.path.join(self.module.params["unit_dir"], unit_name)
        with open(source, encoding="utf-8") as handle:
            unit_text = handle.read()
        try:
            with open(target, encoding="utf-8") as handle:
                unit_changed = handle.read() != unit_text
        except FileNotFoundError:
            unit_changed = True
        switching = current != wanted
        changed = unit_changed or switching
        if changed and not self.module.check_mode:
            if unit_changed:
                write_atomic(target, unit_text)
            if switching:
                self.state["previous"], self.state["current"] = current, wanted
                self.record("rolled_back" if rollback else "activated", wanted, replaced=current)
            self.prune()
            self.save()
        self.module.exit_json(changed=changed, unit_changed=unit_changed, unit_path=target, **self.summary())

    def prune(self):
        keep = max(self.module.params["keep"], 2)
        protected = {self.state.get("current"), self.state.get("previous")}
        staged = self.staged()
        for release_id in staged[: max(len(staged) - keep, 0)]:
            if release_id not in protected:
                shutil.rmtree(os.path.join(self.folder, release_id), ignore_errors=True)

    def failed(self):
        release_id = self.module.params["release_id"]
        path = os.path.join(self.release_dir(release_id), "release.json")
        document = _read_json(path, None)
        if document is None:
            self.module.fail_json(msg="release %s is not staged on this host" % release_id)
        cause = self.module.params["cause"] or "no cause given"
        if not self.module.check_mode:
            document.update(status="failed", cause=cause, failed_at=_now())
            write_atomic(path, _dump(document))
            self.record("failed", release_id, cause=cause[:2000])
            self.save()
        self.module.exit_json(changed=True, **self.summary())

    # -- the redeploy lock ---------------------------------------------------------------------------------

    def _holder(self):
        holder = self.module.params["holder"]
        if not isinstance(holder, dict) or not holder.get("run"):
            self.module.fail_json(msg="the lock states need holder, a mapping with at least run")
        return holder

    def _held_by_other(self, holder):
        found = _read_json(self.lock_path, None)
        if found is None or found.get("run") == holder.get("run"):
            return None
        return found

    def _refuse(self, found):
        described = ", ".join("%s=%s" % (key, found[key]) for key in sorted(found))
        self.module.fail_json(
            msg="another redeploy holds this host's lock %s (%s); wait for it to finish. If that run is gone, "
            "remove the lock with `glm-deploy redeploy --break-host-lock` (or delete the file)"
            % (self.lock_path, described),
            holder=found,
        )

    def check_lock(self):
        holder = self._holder()
        found = self._held_by_other(holder)
        if found is not None and not self.module.params["force"]:
            self._refuse(found)
        self.module.exit_json(changed=False, holder=found, **self.summary())

    def lock(self):
        holder = self._holder()
        found = self._held_by_other(holder)
        if found is not None and not self.module.params["force"]:
            self._refuse(found)
        mine = _read_json(self.lock_path, None)
        if mine is not None and mine.get("run") == holder.get("run"):
            self.module.exit_json(changed=False, holder=mine, **self.summary())
        wanted = dict(holder, taken_at=_now())
        if not self.module.check_mode:
            if not os.path.isdir(self.root):
                os.makedirs(self.root, mode=0o755)
            if found is not None:
                os.unlink(self.lock_path)
            try:
                # O_EXCL: of two runs racing for a free lock, exactly one creates the file.
                descriptor = os.open(self.lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                self._refuse(_read_json(self.lock_path, {"run": "unknown"}))
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(_dump(wanted))
        self.module.exit_json(changed=True, holder=wanted, broke=found, **self.summary())

    def unlock(self):
        holder = self._holder()
        found = _read_json(self.lock_path, None)
        if found is None:
            self.module.exit_json(changed=False, **self.summary())
        if found.get("run") != holder.get("run") and not self.module.params["force"]:
            # Never remove another run's lock: this run did not take it.
            self.module.exit_json(changed=False, holder=found, **self.summary())
        if not self.module.check_mode:
            os.unlink(self.lock_path)
        self.module.exit_json(changed=True, **self.summary())


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(
                type="str",
                default="query",
                choices=["query", "stage", "activate", "failed", "check_lock", "lock", "unlock"],
            ),
            root=dict(type="path", default="/var/lib/glm-deploy"),
            unit_dir=dict(type="path", default="/etc/systemd/system"),
            release_id=dict(type="str"),
            release=dict(type="dict"),
            unit_name=dict(type="str"),
            cause=dict(type="str"),
            holder=dict(type="dict"),
            force=dict(type="bool", default=False),
            keep=dict(type="int", default=10),
        ),
        required_if=[
            ("state", "stage", ("release",)),
            ("state", "activate", ("release_id", "unit_name")),
            ("state", "failed", ("release_id",)),
            ("state", "lock", ("holder",)),
            ("state", "unlock", ("holder",)),
            ("state", "check_lock", ("holder",)),
        ],
        supports_check_mode=True,
    )
    releases = Releases(module)
    state = module.params["state"]
    if state == "query":
        module.exit_json(changed=False, lock=_read_json(releases.lock_path, None), **releases.summary())
    getattr(releases, state)()


if __name__ == "__main__":
    main()
