# -*- coding: utf-8 -*-
# Copyright: glm-deploy developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""One Lambda Cloud instance, found by name, brought to `present` or `absent` (module lambda_instance).

`present` launches the instance when no live one has the name, waits until the API reports it `active`, then until
its SSH port answers. A launch that does not come up is not left billing: one still `booting` after
`boot_timeout`, one that turns `unhealthy`, or one whose SSH port stays closed past `ssh_timeout` is terminated
before the task fails, and the message says so. An instance this task did not launch is never terminated by a
`present` task: it is reported, and the user decides.

Launches are paced: Lambda allows about one launch per 12 s per account. A lock file on the controller holds the
time of the last launch, so tasks in a loop, or two plays at once, space their launches `launch_interval` apart
instead of meeting the API's 429 (which the client still waits out if it comes).

A capacity error names the regions that have capacity for the type now (GET /instance-types). Pure of
glm_deploy; `sleep`, `clock` and `connect` are seams for tests.
"""

from __future__ import absolute_import, division, print_function

import hashlib
import os
import re
import socket
import tempfile
import time

from ansible_collections.glm.deploy.plugins.module_utils.lambda_cloud_api import LambdaApiError
from ansible_collections.glm.deploy.plugins.module_utils.lambda_cloud_instances import public_record
from ansible_collections.glm.deploy.plugins.module_utils.lambda_cloud_resources import (
    ResourceError,
    check_filesystem_name,
    check_name,
    check_region,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows controllers, which Ansible does not support anyway
    fcntl = None

__metaclass__ = type

CAPACITY = "instance-operations/launch/insufficient-capacity"
# States that still hold (or will hold) a machine; `terminating` is on its way out and is left alone.
LIVE = ("booting", "active", "unhealthy")
INSTANCE_TYPE = re.compile(r"[a-z0-9]+(_[a-z0-9]+)+")
IMAGE_FAMILY = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")
TAG_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")


class LaunchError(Exception):
    """The instance could not be brought up; `instance` is what is known of it (None when none was made)."""

    def __init__(self, message, instance=None):
        super(LaunchError, self).__init__(message)
        self.instance = instance


def check_launch(params):
    """Refuse launch inputs that cannot work, before any request."""
    check_name(params["name"])
    check_region(params["region"])
    if not INSTANCE_TYPE.fullmatch(params.get("instance_type") or ""):
        raise ResourceError(
            "instance_type %r is not a Lambda instance type (like gpu_8x_b200_sxm6); GET /api/v1/instance-types "
            "lists them" % (params.get("instance_type"),)
        )
    check_name(params["ssh_key_name"], "ssh_key_name")
    if params.get("filesystem"):
        check_filesystem_name(params["filesystem"], "filesystem")
    if params.get("firewall_ruleset"):
        check_name(params["firewall_ruleset"], "firewall_ruleset")
    if params.get("image_family") and not IMAGE_FAMILY.fullmatch(params["image_family"]):
        raise ResourceError("image_family %r: use lower-case letters, digits, '.', '_' or '-'" % params["image_family"])
    for key, value in (params.get("tags") or {}).items():
        if not TAG_KEY.fullmatch(str(key)) or value is None or len(str(value)) > 256:
            raise ResourceError("tags: %r: %r is not a tag (a key of letters, digits, ._:/-; a value)" % (key, value))
    for option in ("boot_timeout", "ssh_timeout", "poll_interval"):
        if params.get(option) is not None and params[option] <= 0:
            raise ResourceError("%s is %r: give a number of seconds above 0" % (option, params[option]))


def _type_and_region(instance):
    return (instance.get("instance_type") or {}).get("name"), (instance.get("region") or {}).get("name")


class InstanceLifecycle:
    """Launch, wait for and terminate instances of one account. `pace_file` defaults to a file per API URL in the
    controller's temporary folder."""

    def __init__(
        self,
        client,
        *,
        launch_interval=12.0,
        pace_file=None,
        sleep=time.sleep,
        clock=time.time,
        connect=socket.create_connection,
    ):
        self.client = client
        self.launch_interval = launch_interval
        digest = hashlib.sha256(client.api_url.encode("utf-8")).hexdigest()[:16]
        # per user as well: another user's file in a shared /tmp could not be opened for writing
        default = "glm-deploy-lambda-launch-%s-%s" % (os.getuid() if hasattr(os, "getuid") else "user", digest)
        self.pace_file = pace_file or os.path.join(tempfile.gettempdir(), default)
        self._sleep = sleep
        self._clock = clock
        self._connect = connect
        self.paced_s = 0.0

    # ------------------------------------------------------------------------------------------ reading

    def live_named(self, name=None, prefix=None):
        """The live instances named `name`, or whose names start with `prefix`."""
        return [
            instance
            for instance in self.client.list_instances()
            if instance.get("status") in LIVE
            and (instance.get("name") == name if prefix is None else (instance.get("name") or "").startswith(prefix))
        ]

    def _ruleset_id(self, name, region):
        for ruleset in self.client.request("GET", "/api/v1/firewall-rulesets"):
            if ruleset.get("name") == name and (ruleset.get("region") or {}).get("name") == region:
                return ruleset["id"]
        raise ResourceError(
            "firewall_ruleset %r does not exist in %s: create it first (glm.deploy.lambda_firewall_ruleset)"
            % (name, region)
        )

    def capacity_message(self, error, instance_type, region):
        """The capacity refusal with the regions that have capacity for the type now."""
        try:
            offers = self.client.list_instance_types()
        except LambdaApiError as listing_error:
            return "%s; listing the regions with capacity failed too: %s" % (error.message, listing_error.message)
        offer = offers.get(instance_type)
        if offer is None:
            return "%s; the type %s is not offered to this account (offered: %s)" % (
                error.message,
                instance_type,
                ", ".join(sorted(offers)) or "none",
            )
        regions = sorted(entry.get("name") for entry in offer.get("regions_with_capacity_available") or [])
        if not regions:
            return "no capacity for %s in %s, nor in any other region now: try again later or another type" % (
                instance_type,
                region,
            )
        return "no capacity for %s in %s now; regions with capacity for it: %s: set region to one of them" % (
            instance_type,
            region,
            ", ".join(regions),
        )

    # ------------------------------------------------------------------------------------------ acting

    def launch(self, params):
        body = {
            "region_name": params["region"],
            "instance_type_name": params["instance_type"],
            "ssh_key_names": [params["ssh_key_name"]],
            "name": params["name"],
        }
        if params.get("filesystem"):
            body["file_system_names"] = [params["filesystem"]]
        if params.get("firewall_ruleset"):
            body["firewall_rulesets"] = [{"id": self._ruleset_id(params["firewall_ruleset"], params["region"])}]
        if params.get("tags"):
            body["tags"] = [{"key": str(key), "value": str(value)} for key, value in sorted(params["tags"].items())]
        if params.get("image_family"):
            body["image"] = {"family": params["image_family"]}
        try:
            data = self._paced(lambda: self.client.request("POST", "/api/v1/instance-operations/launch", body))
        except LambdaApiError as error:
            if error.code == CAPACITY:
                raise LaunchError(self.capacity_message(error, params["instance_type"], params["region"])) from None
            raise LaunchError(error.message) from None
        return data["instance_ids"][0]

    def _paced(self, launch):
        """Run `launch` at least `launch_interval` after the last launch from this controller (to this API). Without
        a usable pace file the launch goes unpaced: the client still waits out the API's 429."""
        try:
            handle = open(self.pace_file, "a+")  # noqa: SIM115 - closed by the `with` below
        except OSError:
            return launch()
        with handle:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # released when the file closes
            handle.seek(0)
            text = handle.read().strip()
            last = float(text) if re.fullmatch(r"[0-9]+(\.[0-9]+)?", text) else None
            if last is not None:
                wait = self.launch_interval - (self._clock() - last)
                if 0 < wait <= self.launch_interval:
                    self.paced_s += wait
                    self._sleep(wait)
            try:
                return launch()
            finally:
                handle.seek(0)
                handle.truncate()
                handle.write("%.3f\n" % self._clock())
                handle.flush()

    def terminate(self, instance_ids):
        self.client.request("POST", "/api/v1/instance-operations/terminate", {"instance_ids": list(instance_ids)})

    def _give_up(self, instance, launched, why):
        """Fail for `why`; an instance this task launched is terminated first, so that it does not bill."""
        label = "Lambda instance %r (id %s)" % (instance.get("name"), instance.get("id"))
        if not launched:
            raise LaunchError(
                "%s %s; it was not launched by this task, so it is left as it is: terminate it (state: absent) "
                "and run again" % (label, why),
                public_record(instance),
            )
        try:
            self.terminate([instance["id"]])
        except LambdaApiError as error:
            raise LaunchError(
                "%s %s, and terminating it failed (%s): TERMINATE IT IN THE LAMBDA CLOUD CONSOLE, it bills until then"
                % (label, why, error.message),
                public_record(instance),
            ) from None
        raise LaunchError("%s %s: terminated it, so nothing bills for it" % (label, why), public_record(instance))

    def wait_active(self, instance, launched, boot_timeout, poll_interval):
        started = self._clock()
        while True:
            status = instance.get("status")
            if status == "active" and instance.get("ip"):
                return instance, self._clock() - started
            if status == "unhealthy":
                self._give_up(instance, launched, "turned unhealthy while booting")
            if status not in LIVE:
                raise LaunchError(
                    "Lambda instance %r (id %s) became %s while booting; nothing is left running: try again, or "
                    "another region" % (instance.get("name"), instance.get("id"), status),
                    public_record(instance),
                )
            elapsed = self._clock() - started
            if elapsed >= boot_timeout:
                self._give_up(instance, launched, "is still %s after %.0f s (boot_timeout)" % (status, elapsed))
            self._sleep(min(poll_interval, max(boot_timeout - elapsed, 0.01)))
            instance = self.client.get_instance(instance["id"])

    def wait_ssh(self, instance, launched, port, ssh_timeout, poll_interval):
        started = self._clock()
        last_error = None
        while True:
            try:
                connection = self._connect((instance["ip"], port), timeout=min(10.0, float(ssh_timeout)))
                connection.close()
                return self._clock() - started
            except (OSError, socket.timeout) as error:
                last_error = error
            elapsed = self._clock() - started
            if elapsed >= ssh_timeout:
                self._give_up(
                    instance,
                    launched,
                    "is active but its SSH port %s:%s did not answer within %.0f s (ssh_timeout; last: %s)"
                    % (instance["ip"], port, elapsed, last_error),
                )
            self._sleep(min(poll_interval, max(ssh_timeout - elapsed, 0.01)))


def ensure_present(lifecycle, params, check_mode=False):
    check_launch(params)
    live = lifecycle.live_named(params["name"])
    if len(live) > 1:
        raise ResourceError(
            "%d live Lambda instances are named %r (ids %s): terminate the extra ones, names must be unique"
            % (len(live), params["name"], ", ".join(instance["id"] for instance in live))
        )
    result = {"changed": False, "launched": False, "boot_wait_s": 0.0, "ssh_wait_s": 0.0}
    if live:
        instance = live[0]
        wanted = (params["instance_type"], params["region"])
        if _type_and_region(instance) != wanted:
            raise ResourceError(
                "Lambda instance %r exists as %s in %s, not %s in %s; an instance cannot change type or region: "
                "terminate it (state: absent) or choose another name"
                % (params["name"], *_type_and_region(instance), *wanted)
            )
        if check_mode:
            return dict(result, instance=public_record(instance))
    elif check_mode:
        return dict(result, changed=True, instance=None)
    else:
        instance = {"id": lifecycle.launch(params), "name": params["name"], "status": "booting"}
        result.update(changed=True, launched=True)
    launched = result["launched"]
    if not params.get("wait", True):
        return dict(result, instance=public_record(instance))
    instance, result["boot_wait_s"] = lifecycle.wait_active(
        instance, launched, params["boot_timeout"], params["poll_interval"]
    )
    if params.get("wait_for_ssh", True):
        result["ssh_wait_s"] = lifecycle.wait_ssh(
            instance, launched, params["ssh_port"], params["ssh_timeout"], params["poll_interval"]
        )
    return dict(result, instance=public_record(instance))


def ensure_absent(lifecycle, params, check_mode=False):
    """Terminate the live instances named `name` (or, with `name_prefix`, every one whose name starts with it)."""
    if params.get("name_prefix"):
        check_name(params["name_prefix"], "name_prefix")
        live = lifecycle.live_named(prefix=params["name_prefix"])
    else:
        check_name(params["name"])
        live = lifecycle.live_named(params["name"])
    result = {"changed": bool(live), "terminated_ids": [instance["id"] for instance in live], "instance": None}
    if not live or check_mode:
        return result
    lifecycle.terminate(result["terminated_ids"])
    if params.get("wait", True):
        started = lifecycle._clock()
        while _not_yet_terminated(lifecycle, result["terminated_ids"]):
            if lifecycle._clock() - started >= params["boot_timeout"]:
                raise LaunchError(
                    "Lambda instances %s are still not terminated after %.0f s: check them in the Lambda Cloud "
                    "console" % (", ".join(result["terminated_ids"]), params["boot_timeout"])
                )
            lifecycle._sleep(params["poll_interval"])
    return result


def _not_yet_terminated(lifecycle, instance_ids):
    return any(
        instance.get("id") in instance_ids and instance.get("status") not in ("terminated", "preempted")
        for instance in lifecycle.client.list_instances()
    )
