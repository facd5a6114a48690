"""What a deployment serves: a `Release`, named by its identity's hash.

A `Release` names the model repository and the commit its revision resolved to, the engine and its version with the
container image (and digest, when known) or the native venv's requirement (and lock hash), and a hash of the
rendered plan, so that any change to a flag is a different release. The controller's history records releases
(glm_deploy.history) and the `glm.deploy.release` filter names the hosts' releases with this same code.
`resolve_model_commit` asks the Hub which commit a plan's branch names now.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from glm_deploy.errors import GlmDeployError
from glm_deploy.render import Plan


def plan_hash(plan: Plan | Mapping[str, Any]) -> str:
    """sha256 of the plan's canonical JSON: equal plans, equal hashes."""
    document = plan.to_dict() if isinstance(plan, Plan) else dict(plan)
    if (document.get("tls") or {}).get("mode", "off") == "off" and document.get("engine_port") == document.get("port"):
        # Without TLS these two say nothing the rest of the plan does not: a plan rendered before they existed is
        # the same release, so hosts already serving it are not restarted for them.
        document.pop("tls", None)
        document.pop("engine_port", None)
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Release:
    """What a deployment serves. `model_commit`, `image_digest` and `venv_lock` are None until known."""

    model: str
    model_repo: str
    model_revision: str
    model_commit: str | None
    engine: str
    engine_version: str | None
    runtime: str
    image: str | None
    image_digest: str | None
    venv_requirement: str | None
    venv_lock: str | None
    served_model_name: str
    plan_hash: str

    @classmethod
    def from_plan(
        cls,
        plan: Plan,
        *,
        model_commit: str | None = None,
        image_digest: str | None = None,
        venv_lock: str | None = None,
    ) -> Release:
        if model_commit is None and plan.revision_pinned:
            model_commit = plan.model_revision
        return cls(
            model=plan.model,
            model_repo=plan.model_repo,
            model_revision=plan.model_revision,
            model_commit=model_commit,
            engine=plan.engine,
            engine_version=plan.engine_version,
            runtime=plan.runtime,
            image=plan.image,
            image_digest=image_digest,
            venv_requirement=str(plan.native["requirement"]) if plan.native else None,
            venv_lock=venv_lock,
            served_model_name=plan.served_model_name,
            plan_hash=plan_hash(plan),
        )

    @classmethod
    def from_plan_document(
        cls,
        plan: Mapping[str, Any],
        *,
        model_commit: str | None = None,
        image_digest: str | None = None,
        venv_lock: str | None = None,
    ) -> Release:
        """`from_plan` for a plan as a mapping (`Plan.to_dict()`, what the playbooks carry as glm_plan)."""
        revision = str(plan["model_revision"])
        if model_commit is None and plan.get("revision_pinned"):
            model_commit = revision
        native = plan.get("native")
        return cls(
            model=str(plan["model"]),
            model_repo=str(plan["model_repo"]),
            model_revision=revision,
            model_commit=model_commit,
            engine=str(plan["engine"]),
            engine_version=plan.get("engine_version"),
            runtime=str(plan["runtime"]),
            image=plan.get("image"),
            image_digest=image_digest,
            venv_requirement=str(native["requirement"]) if isinstance(native, Mapping) else None,
            venv_lock=venv_lock,
            served_model_name=str(plan["served_model_name"]),
            plan_hash=plan_hash(plan),
        )

    def identity(self) -> dict[str, Any]:
        """The fields that make two releases the same release (the branch name alone does not)."""
        return {
            "model_repo": self.model_repo,
            "model_commit": self.model_commit,
            "engine": self.engine,
            "engine_version": self.engine_version,
            "image": self.image_digest or self.image,
            "venv": self.venv_lock or self.venv_requirement,
            "plan_hash": self.plan_hash,
        }

    @property
    def release_id(self) -> str:
        """A short id for people: the first 12 hex digits of the identity's hash."""
        canonical = json.dumps(self.identity(), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    def same_as(self, other: Release | None) -> bool:
        """Whether `other` is the same release; unknown commits never compare equal. An image digest or venv
        lock known on one side only (the controller learns them from the hosts) compares by image or
        requirement."""
        if other is None or self.model_commit is None or other.model_commit is None:
            return False
        mine, theirs = self.identity(), other.identity()
        if self.image_digest is None or other.image_digest is None:
            mine["image"], theirs["image"] = self.image, other.image
        if self.venv_lock is None or other.venv_lock is None:
            mine["venv"], theirs["venv"] = self.venv_requirement, other.venv_requirement
        return mine == theirs

    def describe(self) -> str:
        commit = (self.model_commit or "?")[:12]
        engine = f"{self.engine} {self.engine_version or '?'}"
        where = self.image_digest or self.image or self.venv_requirement or self.runtime
        return f"{self.model_repo}@{commit} on {engine} ({where}), plan {self.plan_hash[:12]}"

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "release_id": self.release_id}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Release:
        names = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {name: data.get(name) for name in names}
        return cls(**values)


def resolve_model_commit(
    plan: Plan, *, endpoint: str | None, token: str | None = None, timeout_s: float = 30.0
) -> str:
    """The commit `plan.model_revision` names on the Hub at `endpoint` (a pinned revision is its own
    commit)."""
    if plan.revision_pinned:
        return plan.model_revision
    # Imported here: huggingface_hub is slow to import and only this path needs it.
    from huggingface_hub import HfApi  # noqa: PLC0415
    from huggingface_hub.errors import HfHubHTTPError  # noqa: PLC0415

    where = endpoint or "https://huggingface.co"
    try:
        info = HfApi(endpoint=endpoint, token=token or False).model_info(
            plan.model_repo, revision=plan.model_revision, timeout=timeout_s
        )
    except HfHubHTTPError as error:
        raise GlmDeployError(
            f"could not resolve {plan.model_repo}@{plan.model_revision} on {where}: {error}",
            hint="check the repository and branch exist there (glm_hf_endpoint / HF_ENDPOINT) and that "
            "HF_TOKEN is set for gated repositories",
        ) from None
    except Exception as error:
        raise GlmDeployError(
            f"could not reach the Hub at {where} to resolve {plan.model_repo}@{plan.model_revision}: {error}",
            hint="check glm_hf_endpoint / HF_ENDPOINT and the network",
        ) from None
    if not info.sha:
        raise GlmDeployError(
            f"the Hub at {where} returned no commit for {plan.model_repo}@{plan.model_revision}"
        )
    return str(info.sha)
