# -*- coding: utf-8 -*-
# Copyright: glm-deploy developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The Lambda Cloud resources an instance launches with, each brought to the state asked for: SSH keys,
filesystems and firewall rulesets (modules lambda_ssh_key, lambda_filesystem, lambda_firewall_ruleset).

Each `ensure_*` reads what exists (by name), compares, and acts only on a difference, so a second run changes
nothing; in check mode it reports what it would do and sends no request that changes anything. Inputs are checked
here, at the boundary, before the first request (`check_*`), each refusal one line naming the input, the value
and what would work. Pure of glm_deploy.
"""

from __future__ import absolute_import, division, print_function

import ipaddress
import re

__metaclass__ = type

# Region names as Lambda writes them (us-east-1, europe-central-1, asia-northeast-2).
REGION = re.compile(r"[a-z]+(-[a-z]+)+-[0-9]+")
# POST /filesystems: name pattern and maxLength of the description's FilesystemCreateRequest.
FILESYSTEM_NAME = re.compile(r"[a-zA-Z]+[0-9a-zA-Z-]*")
FILESYSTEM_NAME_MAX = 60
# SSH keys and rulesets: maxLength 64; we keep to letters, digits and -_. so a name is also safe in a file name.
RESOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
PUBLIC_KEY = re.compile(
    r"(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-[a-z0-9@.-]+) [A-Za-z0-9+/]+={0,3}( .*)?"
)
RULE_PREFIX = "glm-deploy"


class ResourceError(Exception):
    """An input refused at the boundary, or a resource that exists but not as asked and cannot be changed in place."""


def check_region(region, option="region"):
    if not isinstance(region, str) or not REGION.fullmatch(region):
        raise ResourceError(
            "%s %r is not a Lambda region name (like us-east-1); GET /api/v1/instance-types lists them"
            % (option, region)
        )
    return region


def check_name(name, option="name"):
    if not isinstance(name, str) or not RESOURCE_NAME.fullmatch(name):
        raise ResourceError(
            "%s %r: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit" % (option, name)
        )
    return name


def check_filesystem_name(name, option="name"):
    if not isinstance(name, str) or len(name) > FILESYSTEM_NAME_MAX or not FILESYSTEM_NAME.fullmatch(name):
        raise ResourceError(
            "%s %r: a filesystem name is letters first, then letters, digits or '-', at most %d characters"
            % (option, name, FILESYSTEM_NAME_MAX)
        )
    return name


def check_public_key(public_key):
    """The key's `type base64` part (what identifies it; the comment may differ), or ResourceError."""
    text = " ".join((public_key or "").split())
    if not PUBLIC_KEY.fullmatch(text) or len(text) > 4096:
        raise ResourceError(
            "public_key is not an OpenSSH public key (like 'ssh-ed25519 AAAA... comment'); give the content of a "
            ".pub file, never a private key"
        )
    return " ".join(text.split(" ")[:2])


def check_cidrs(cidrs, allow_world=False, option="allow_cidrs"):
    """The CIDRs as Lambda stores them (network/prefix), or ResourceError: not IPv4, host bits set, or a /0
    without `allow_world`."""
    if not cidrs:
        raise ResourceError("%s is empty: name the networks that may connect, like 203.0.113.7/32" % option)
    networks = []
    for cidr in cidrs:
        text = str(cidr).strip()
        try:
            network = ipaddress.IPv4Network(text if "/" in text else text + "/32", strict=True)
        except ValueError as error:
            raise ResourceError(
                "%s: %r is not an IPv4 network in CIDR notation: %s%s" % (option, text, error, _network_hint(text))
            ) from None
        if network.prefixlen == 0 and not allow_world:
            raise ResourceError(
                "%s: %s opens the port to the whole internet; name your own networks, or set allow_world: true "
                "to mean it" % (option, network)
            )
        networks.append(str(network))
    return sorted(set(networks), key=ipaddress.IPv4Network)


def _network_hint(text):
    """The network a CIDR with host bits set probably means, as a hint (empty when there is none)."""
    try:
        return " (did you mean %s?)" % ipaddress.IPv4Network(text, strict=False)
    except ValueError:
        return ""


def check_ports(ports, option="ports"):
    if not ports:
        raise ResourceError("%s is empty: name the TCP ports to open (22 for SSH and the endpoint's port)" % option)
    for port in ports:
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ResourceError("%s: %r is not a TCP port (1-65535)" % (option, port))
    return sorted(set(ports))


def _named(items, name):
    return [item for item in items if item.get("name") == name]


def _region_of(item):
    region = item.get("region")
    return region.get("name") if isinstance(region, dict) else region


def _one(items, kind, name):
    found = _named(items, name)
    if len(found) > 1:
        raise ResourceError(
            "%d %ss are named %r (ids %s): delete the extra ones in the Lambda Cloud console"
            % (len(found), kind, name, ", ".join(item.get("id") for item in found))
        )
    return found[0] if found else None


# ---------------------------------------------------------------------------------------------- SSH keys


def ensure_ssh_key(client, name, state="present", *, public_key=None, check_mode=False):
    check_name(name)
    wanted = check_public_key(public_key) if state == "present" else None
    existing = _one(client.request("GET", "/api/v1/ssh-keys"), "SSH key", name)
    if state == "absent":
        if existing is None:
            return {"changed": False, "ssh_key": None}
        if not check_mode:
            client.request("DELETE", "/api/v1/ssh-keys/%s" % existing["id"])
        return {"changed": True, "ssh_key": None}
    if existing is not None:
        if " ".join(existing.get("public_key", "").split()[:2]) != wanted:
            raise ResourceError(
                "the SSH key %r exists with another public key; Lambda cannot change a key in place: remove it "
                "(state: absent) and add it again, or use another name" % name
            )
        return {"changed": False, "ssh_key": existing}
    if check_mode:
        return {"changed": True, "ssh_key": {"name": name, "public_key": wanted}}
    added = client.request("POST", "/api/v1/ssh-keys", {"name": name, "public_key": public_key.strip()})
    added.pop("private_key", None)  # only for generated keys, which we never ask for
    return {"changed": True, "ssh_key": added}


# ---------------------------------------------------------------------------------------------- filesystems


def ensure_filesystem(client, name, state="present", *, region=None, check_mode=False):
    """Filesystems are listed at GET /file-systems but created at POST /filesystems and deleted at
    DELETE /filesystems/{id}: the description's paths differ, and so do ours."""
    check_filesystem_name(name)
    if state == "present":
        check_region(region)
    existing = _one(client.request("GET", "/api/v1/file-systems"), "filesystem", name)
    if state == "absent":
        if existing is None:
            return {"changed": False, "filesystem": None}
        if existing.get("is_in_use"):
            raise ResourceError(
                "the filesystem %r is mounted on an instance: terminate the instances that use it first" % name
            )
        if not check_mode:
            client.request("DELETE", "/api/v1/filesystems/%s" % existing["id"])
        return {"changed": True, "filesystem": None}
    if existing is not None:
        if _region_of(existing) != region:
            raise ResourceError(
                "the filesystem %r is in %s, not %s; a filesystem cannot move: launch in %s, or use another name"
                % (name, _region_of(existing), region, _region_of(existing))
            )
        return {"changed": False, "filesystem": existing}
    if check_mode:
        return {"changed": True, "filesystem": {"name": name, "region": {"name": region}}}
    created = client.request("POST", "/api/v1/filesystems", {"name": name, "region": region})
    return {"changed": True, "filesystem": created}


# ---------------------------------------------------------------------------------------------- firewall rulesets


def wanted_rules(ports, cidrs):
    """One TCP rule for each (port, network), in a stable order."""
    return [
        {
            "protocol": "tcp",
            "port_range": [port, port],
            "source_network": cidr,
            "description": "%s: port %d from %s" % (RULE_PREFIX, port, cidr),
        }
        for port in ports
        for cidr in cidrs
    ]


def _rule_key(rule):
    network = str(ipaddress.IPv4Network(rule.get("source_network", "0.0.0.0/0"), strict=False))
    return (rule.get("protocol"), tuple(rule.get("port_range") or ()), network)


def ensure_firewall_ruleset(
    client, name, state="present", *, region=None, ports=None, allow_cidrs=None, allow_world=False, check_mode=False
):
    check_name(name)
    if state == "present":
        check_region(region)
        rules = wanted_rules(check_ports(ports), check_cidrs(allow_cidrs, allow_world))
    existing = _one(client.request("GET", "/api/v1/firewall-rulesets"), "firewall ruleset", name)
    if state == "absent":
        if existing is None:
            return {"changed": False, "firewall_ruleset": None}
        if existing.get("instance_ids"):
            raise ResourceError(
                "the firewall ruleset %r is in use by instances %s: terminate them first"
                % (name, ", ".join(existing["instance_ids"]))
            )
        if not check_mode:
            client.request("DELETE", "/api/v1/firewall-rulesets/%s" % existing["id"])
        return {"changed": True, "firewall_ruleset": None}
    if existing is None:
        if check_mode:
            return {"changed": True, "firewall_ruleset": {"name": name, "region": {"name": region}, "rules": rules}}
        body = {"name": name, "region": region, "rules": rules}
        return {"changed": True, "firewall_ruleset": client.request("POST", "/api/v1/firewall-rulesets", body)}
    if _region_of(existing) != region:
        raise ResourceError(
            "the firewall ruleset %r is in %s, not %s; a ruleset cannot move: use another name for %s"
            % (name, _region_of(existing), region, region)
        )
    if sorted(_rule_key(rule) for rule in existing.get("rules") or []) == sorted(_rule_key(rule) for rule in rules):
        return {"changed": False, "firewall_ruleset": existing}
    if check_mode:
        return {"changed": True, "firewall_ruleset": dict(existing, rules=rules)}
    patched = client.request("PATCH", "/api/v1/firewall-rulesets/%s" % existing["id"], {"rules": rules})
    return {"changed": True, "firewall_ruleset": patched}
