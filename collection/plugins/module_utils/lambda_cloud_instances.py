# -*- coding: utf-8 -*-
# Copyright: glm-deploy developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Lambda Cloud instances (the API's Instance objects) read for an inventory: which to keep, what to call them,
what variables they get.

Pure: JSON in, Python values out, errors as InstanceError with a message a person can act on. Which glm-deploy
hardware an instance type is comes in as a mapping (`hardware_by_type`), read from the catalog by the caller, so
nothing here imports glm_deploy.
"""

from __future__ import absolute_import, division, print_function

import copy
import re

__metaclass__ = type

# Lambda's OpenAPI description, components.schemas.InstanceStatus.
STATUSES = ("booting", "active", "unhealthy", "terminated", "terminating", "preempted")
HOSTNAME_SOURCES = ("name", "id")
VARIABLE_PREFIX = "lambda_"
# These log into the instance's JupyterLab: they are dropped before an instance reaches a variable or a cache.
SECRET_FIELDS = ("jupyter_token", "jupyter_url")
# A filesystem's name reaches a path on the host (its default mount point is /lambda/nfs/<name>), so it is checked:
# the pattern and maxLength of POST /filesystems' name in Lambda's OpenAPI description (as lambda_cloud_resources).
FILESYSTEM_NAME = re.compile(r"[a-zA-Z]+[0-9a-zA-Z-]*")
FILESYSTEM_NAME_MAX = 60
FILESYSTEM_MOUNT_ROOT = "/lambda/nfs/"
# RequestedFilesystemMountEntry.mount_point's pattern (a mount point chosen at launch), without '..' or '//'.
MOUNT_POINT = re.compile(r"(/home|/lambda/nfs|/data)(/[a-zA-Z0-9-]+)*")


class InstanceError(ValueError):
    """Instances the inventory cannot list as they are (an unknown instance type, two hosts of one name)."""


def public_record(instance):
    """A copy of the Instance object without the fields that are secrets."""
    record = copy.deepcopy(instance)
    for field in SECRET_FIELDS:
        record.pop(field, None)
    return record


def _named(value):
    """The `name` of a Region or InstanceType object (the API nests them), or None."""
    return value.get("name") if isinstance(value, dict) else None


def tags_of(instance):
    """The instance's tags (a list of {key, value}) as a mapping."""
    return dict((tag.get("key"), tag.get("value")) for tag in instance.get("tags") or [] if isinstance(tag, dict))


def check_filters(statuses, tags):
    """Refuse filter values that cannot match (a status the API never reports, tags that are not a mapping)."""
    unknown = [status for status in statuses or [] if status not in STATUSES]
    if unknown:
        raise InstanceError(
            "statuses names %s, which Lambda never reports; known statuses: %s"
            % (", ".join(repr(status) for status in unknown), ", ".join(STATUSES))
        )
    if tags is not None and not isinstance(tags, dict):
        raise InstanceError("tags must map tag keys to values (a value of null matches any), got %r" % (tags,))


def matches(instance, *, name_prefix=None, tags=None, regions=None, instance_types=None, statuses=("active",)):
    """Whether the instance passes every filter given (None or empty = no filter on that field)."""
    if statuses and instance.get("status") not in statuses:
        return False
    if name_prefix and not (instance.get("name") or "").startswith(name_prefix):
        return False
    if regions and _named(instance.get("region")) not in regions:
        return False
    if instance_types and _named(instance.get("instance_type")) not in instance_types:
        return False
    instance_tags = tags_of(instance)
    for key, value in (tags or {}).items():
        if key not in instance_tags or (value is not None and instance_tags[key] != str(value)):
            return False
    return True


def select(instances, **filters):
    """The instances that pass the filters (`matches`), ordered by name then id, so that the inventory's order (a
    multi-node plan's ranks) does not change from one listing to the next."""
    kept = [instance for instance in instances if matches(instance, **filters)]
    return sorted(kept, key=lambda instance: (instance.get("name") or "", instance.get("id") or ""))


def hostnames(instances, source="name"):
    """(inventory hostname, instance) for each instance: its name (an unnamed one: its id), or its id."""
    if source not in HOSTNAME_SOURCES:
        raise InstanceError("hostname_source is %r; known: %s" % (source, ", ".join(HOSTNAME_SOURCES)))
    named = []
    seen = {}
    for instance in instances:
        hostname = instance.get("id") if source == "id" else (instance.get("name") or instance.get("id"))
        if hostname in seen:
            raise InstanceError(
                "two Lambda instances are named %r (ids %s and %s): give each a name of its own, or set "
                "hostname_source: id" % (hostname, seen[hostname], instance.get("id"))
            )
        seen[hostname] = instance.get("id")
        named.append((hostname, instance))
    return named


def hardware_of(instance, hardware_by_type):
    """The glm-deploy hardware of the instance's type, or InstanceError naming the type and the way out."""
    instance_type = _named(instance.get("instance_type"))
    if instance_type in hardware_by_type:
        return hardware_by_type[instance_type]
    known = ", ".join("%s -> %s" % pair for pair in sorted(hardware_by_type.items())) or "none"
    raise InstanceError(
        "Lambda instance %r (id %s) is of type %r, which glm-deploy's catalog does not map to hardware (known: %s): "
        "leave it out with the option instance_types or name_prefix, or name its hardware in the option "
        "hardware_by_instance_type (for instance {%s: h200})"
        % (instance.get("name") or "", instance.get("id"), instance_type, known, instance_type)
    )


def filesystem_of(instance):
    """(name, mount point) of the filesystem the instance keeps its weights on, or (None, None) without one.

    The first of `file_system_names` (`glm-deploy up` attaches one); its mount point is the one
    `file_system_mounts` gives when the instance lists exactly one filesystem and one mount, else Lambda's default
    /lambda/nfs/<name>. Both become a path on the host, so a name or mount point outside what the API accepts is
    refused rather than used."""
    names = instance.get("file_system_names") or []
    if not names:
        return None, None
    name = names[0]
    if not isinstance(name, str) or len(name) > FILESYSTEM_NAME_MAX or not FILESYSTEM_NAME.fullmatch(name):
        raise InstanceError(
            "Lambda instance %r (id %s) has the filesystem %r attached, which is not a Lambda filesystem name "
            "(letters first, then letters, digits or '-', at most %d characters): its name would reach a path on "
            "the host, so the inventory refuses it; detach it, or leave the instance out with name_prefix"
            % (instance.get("name") or "", instance.get("id"), name, FILESYSTEM_NAME_MAX)
        )
    mounts = instance.get("file_system_mounts") or []
    if len(names) == 1 and len(mounts) == 1 and isinstance(mounts[0], dict):
        mount = mounts[0].get("mount_point")
        if not isinstance(mount, str) or not MOUNT_POINT.fullmatch(mount):
            raise InstanceError(
                "Lambda instance %r (id %s) mounts its filesystem at %r, which is not a mount point Lambda accepts "
                "(/home, /lambda/nfs or /data, then letters, digits or '-' between single '/'): the inventory refuses "
                "it" % (instance.get("name") or "", instance.get("id"), mount)
            )
        return name, mount
    return name, FILESYSTEM_MOUNT_ROOT + name


def host_variables(instance, hardware_by_type):
    """The variables of the instance's host: the instance's fields with the prefix `lambda_` (nested region and
    instance type flattened, tags as a mapping, secrets left out), `ansible_host` (public IP), `glm_private_ip`
    (private IP), `glm_hardware` (the catalog's hardware of its type) and, with a filesystem attached,
    `glm_filesystem_name` and `glm_filesystem_mount` (`filesystem_of`), where the plan keeps the HF cache so the
    weights outlive the instance. An address the API does not give yet (a
    booting instance) is left out rather than set empty."""
    region = instance.get("region") or {}
    instance_type = instance.get("instance_type") or {}
    fields = {
        "id": instance.get("id"),
        "name": instance.get("name") or "",
        "status": instance.get("status"),
        "ip": instance.get("ip"),
        "private_ip": instance.get("private_ip"),
        "hostname": instance.get("hostname"),
        "region": region.get("name"),
        "region_description": region.get("description"),
        "instance_type": instance_type.get("name"),
        "instance_type_description": instance_type.get("description"),
        "gpu_description": instance_type.get("gpu_description"),
        "price_cents_per_hour": instance_type.get("price_cents_per_hour"),
        "specs": copy.deepcopy(instance_type.get("specs") or {}),
        "tags": tags_of(instance),
        "ssh_key_names": list(instance.get("ssh_key_names") or []),
        "file_system_names": list(instance.get("file_system_names") or []),
        "file_system_mounts": copy.deepcopy(instance.get("file_system_mounts") or []),
        "firewall_ruleset_ids": [entry.get("id") for entry in instance.get("firewall_rulesets") or []],
    }
    variables = dict((VARIABLE_PREFIX + key, value) for key, value in fields.items())
    if instance.get("ip"):
        variables["ansible_host"] = instance["ip"]
    if instance.get("private_ip"):
        variables["glm_private_ip"] = instance["private_ip"]
    variables["glm_hardware"] = hardware_of(instance, hardware_by_type)
    filesystem, mount = filesystem_of(instance)
    if filesystem is not None:
        variables["glm_filesystem_name"] = filesystem
        variables["glm_filesystem_mount"] = mount
    return variables
