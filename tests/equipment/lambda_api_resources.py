"""The account resources of the Lambda Cloud stand-in (`tests/equipment/lambda_api.py`): SSH keys, filesystems and
firewall rulesets, served at the paths of Lambda's OpenAPI description:

- `GET`/`POST /api/v1/ssh-keys`, `DELETE /api/v1/ssh-keys/{id}`;
- `GET /api/v1/file-systems` (listing) but `POST /api/v1/filesystems` and `DELETE /api/v1/filesystems/{id}`
  (creating and deleting): the description's paths differ, and so do the stand-in's;
- `GET`/`POST /api/v1/firewall-rulesets`, `GET`/`PATCH`/`DELETE /api/v1/firewall-rulesets/{id}`.

Bodies are checked against the operation's request schema; a name taken is `global/duplicate`; a filesystem or
ruleset that a live instance uses cannot be deleted (`filesystems/filesystem-in-use`,
`firewall-rulesets/firewall-ruleset-in-use`); `quota_rulesets` caps the rulesets (`global/quota-exceeded`).
A key added without `public_key` is generated: the answer holds a (fake) private key, as Lambda's does.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.equipment.lambda_api import LambdaCloudStandIn

Answer = tuple[int, dict[str, str], Any]
CREATED = "2026-01-01T00:00:00+00:00"
CREATOR = {"id": "8e0f3a1b2c4d4e5f8a9b0c1d2e3f4a5b", "email": "tests@example.com", "status": "active"}


@dataclasses.dataclass
class Filesystem:
    id: str
    name: str
    region: str


@dataclasses.dataclass
class Ruleset:
    id: str
    name: str
    region: str
    rules: list[dict[str, Any]]


class AccountResources:
    """What an account holds besides instances; `answer` serves a request or returns None (not one of its paths)."""

    def __init__(self, stand_in: LambdaCloudStandIn) -> None:
        self.stand_in = stand_in
        self.ssh_keys: dict[str, dict[str, str]] = {}
        self.filesystems: dict[str, Filesystem] = {}
        self.rulesets: dict[str, Ruleset] = {}
        self.quota_rulesets: int | None = None

    def answer(self, method: str, path: str, body: Any) -> Answer | None:
        parts = path.split("/")[3:]  # after /api/v1
        if not parts:
            return None
        collection, item = parts[0], (parts[1] if len(parts) == 2 else None)
        routes = {
            ("GET", "ssh-keys", False): lambda: (200, {}, {"data": list(self.ssh_keys.values())}),
            ("POST", "ssh-keys", False): lambda: self._add_key(path, body),
            ("DELETE", "ssh-keys", True): lambda: self._delete_key(item),
            ("GET", "file-systems", False): lambda: (
                200,
                {},
                {"data": [self._fs(f) for f in self.filesystems.values()]},
            ),
            ("POST", "filesystems", False): lambda: self._create_filesystem(path, body),
            ("DELETE", "filesystems", True): lambda: self._delete_filesystem(item),
            ("GET", "firewall-rulesets", False): lambda: (
                200,
                {},
                {"data": [self._ruleset(ruleset) for ruleset in self.rulesets.values()]},
            ),
            ("POST", "firewall-rulesets", False): lambda: self._create_ruleset(path, body),
            ("GET", "firewall-rulesets", True): lambda: self._get_ruleset(item),
            ("PATCH", "firewall-rulesets", True): lambda: self._patch_ruleset(item, body),
            ("DELETE", "firewall-rulesets", True): lambda: self._delete_ruleset(item),
        }
        route = routes.get((method, collection, item is not None))
        return route() if route is not None and len(parts) <= 2 else None

    # ------------------------------------------------------------------------------------ SSH keys

    def _add_key(self, path: str, body: Any) -> Answer:
        invalid = self.stand_in._invalid(path, body)
        if invalid is not None:
            return invalid
        if any(key["name"] == body["name"] for key in self.ssh_keys.values()):
            return 400, {}, _error("global/duplicate", f"An SSH key named {body['name']!r} already exists.")
        key = {"id": uuid.uuid4().hex, "name": body["name"], "public_key": body.get("public_key", "")}
        answer: dict[str, str] = dict(key)
        if not key["public_key"]:
            key["public_key"] = answer["public_key"] = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGenerated generated"
            answer["private_key"] = "-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n-----END OPENSSH PRIVATE KEY-----\n"
        self.ssh_keys[key["id"]] = key
        return 200, {}, {"data": answer}

    def _delete_key(self, key_id: str | None) -> Answer:
        if self.ssh_keys.pop(key_id or "", None) is None:
            return self.stand_in._spec_error(404, "ApiErrorNotFound")
        return 200, {}, {"data": {}}

    # ------------------------------------------------------------------------------------ filesystems

    def _fs(self, filesystem: Filesystem) -> dict[str, Any]:
        return {
            "id": filesystem.id,
            "name": filesystem.name,
            "mount_point": f"/lambda/nfs/{filesystem.name}",
            "created": CREATED,
            "created_by": CREATOR,
            "is_in_use": bool(self._users(filesystem_name=filesystem.name)),
            "region": _region(filesystem.region),
            "bytes_used": 0,
        }

    def _create_filesystem(self, path: str, body: Any) -> Answer:
        invalid = self.stand_in._invalid(path, body)
        if invalid is not None:
            return invalid
        if any(filesystem.name == body["name"] for filesystem in self.filesystems.values()):
            return 400, {}, _error("global/duplicate", f"A filesystem named {body['name']!r} already exists.")
        filesystem = Filesystem(uuid.uuid4().hex, body["name"], body["region"])
        self.filesystems[filesystem.id] = filesystem
        return 200, {}, {"data": self._fs(filesystem)}

    def _delete_filesystem(self, filesystem_id: str | None) -> Answer:
        filesystem = self.filesystems.get(filesystem_id or "")
        if filesystem is None:
            return self.stand_in._spec_error(404, "ApiErrorFilesystemNotFound")
        if self._users(filesystem_name=filesystem.name):
            return 400, {}, _error("filesystems/filesystem-in-use", "Filesystem is in use by an instance.")
        del self.filesystems[filesystem.id]
        return 200, {}, {"data": {"deleted_ids": [filesystem.id]}}

    # ------------------------------------------------------------------------------------ firewall rulesets

    def _ruleset(self, ruleset: Ruleset) -> dict[str, Any]:
        return {
            "id": ruleset.id,
            "name": ruleset.name,
            "region": _region(ruleset.region),
            "rules": [dict(rule) for rule in ruleset.rules],
            "created": CREATED,
            "instance_ids": self._users(ruleset_id=ruleset.id),
        }

    def _rules_problem(self, rules: list[dict[str, Any]]) -> Answer | None:
        for rule in rules:
            try:
                ipaddress.IPv4Network(rule["source_network"])
            except ValueError:
                return self.stand_in._spec_error(
                    400, "ApiErrorInvalidParameters", suggestion=f"{rule['source_network']!r} is not an IPv4 network."
                )
        return None

    def _create_ruleset(self, path: str, body: Any) -> Answer:
        invalid = self.stand_in._invalid(path, body) or self._rules_problem(body["rules"])
        if invalid is not None:
            return invalid
        if self.quota_rulesets is not None and len(self.rulesets) >= self.quota_rulesets:
            return self.stand_in._spec_error(400, "ApiErrorQuotaExceeded")
        ruleset = Ruleset(uuid.uuid4().hex, body["name"], body["region"], [dict(rule) for rule in body["rules"]])
        self.rulesets[ruleset.id] = ruleset
        return 200, {}, {"data": self._ruleset(ruleset)}

    def _get_ruleset(self, ruleset_id: str | None) -> Answer:
        ruleset = self.rulesets.get(ruleset_id or "")
        if ruleset is None:
            return self.stand_in._spec_error(404, "ApiErrorFirewallRulesetNotFound")
        return 200, {}, {"data": self._ruleset(ruleset)}

    def _patch_ruleset(self, ruleset_id: str | None, body: Any) -> Answer:
        ruleset = self.rulesets.get(ruleset_id or "")
        if ruleset is None:
            return self.stand_in._spec_error(404, "ApiErrorFirewallRulesetNotFound")
        invalid = self.stand_in._invalid("/api/v1/firewall-rulesets/{id}", body, method="PATCH")
        invalid = invalid or self._rules_problem(body.get("rules", []))
        if invalid is not None:
            return invalid
        ruleset.name = body.get("name", ruleset.name)
        if "rules" in body:
            ruleset.rules = [dict(rule) for rule in body["rules"]]
        return 200, {}, {"data": self._ruleset(ruleset)}

    def _delete_ruleset(self, ruleset_id: str | None) -> Answer:
        ruleset = self.rulesets.get(ruleset_id or "")
        if ruleset is None:
            return self.stand_in._spec_error(404, "ApiErrorFirewallRulesetNotFound")
        if self._users(ruleset_id=ruleset.id):
            return self.stand_in._spec_error(400, "ApiErrorFirewallRulesetInUse")
        del self.rulesets[ruleset.id]
        return 200, {}, {"data": {}}

    # ------------------------------------------------------------------------------------ shared

    def _users(self, *, filesystem_name: str | None = None, ruleset_id: str | None = None) -> list[str]:
        """Ids of the instances not terminated that mount the filesystem or use the ruleset."""
        return [
            instance.id
            for instance in self.stand_in._instances.values()
            if instance.status != "terminated"
            and (
                (filesystem_name is not None and filesystem_name in instance.file_system_names)
                or (ruleset_id is not None and ruleset_id in instance.firewall_ruleset_ids)
            )
        ]


def _region(name: str) -> dict[str, str]:
    from tests.equipment.lambda_api import REGIONS

    return {"name": name, "description": REGIONS.get(name, name)}


def _error(code: str, message: str, suggestion: str | None = None) -> dict[str, Any]:
    error = {"code": code, "message": message}
    if suggestion:
        error["suggestion"] = suggestion
    return {"error": error}
