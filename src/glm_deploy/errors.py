"""One exception hierarchy for everything glm-deploy refuses or fails at.

Every message says what was wrong (the input and its value), where (host, step) when known, and what to do.
The CLI maps each class to an exit code: input errors exit 2, a held controller lock 3, a cancelled run 130,
everything else 1.
"""

from __future__ import annotations


class GlmDeployError(Exception):
    """Base of every error glm-deploy raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class InputError(GlmDeployError):
    """The user asked for something that cannot work (unknown name, impossible combination, bad value)."""

    exit_code = 2


class CatalogError(GlmDeployError):
    """The catalog itself is malformed: a bug in glm-deploy's data, not in the user's input."""


class RunError(GlmDeployError):
    """An Ansible run failed or could not start."""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        host: str | None = None,
        step: str | None = None,
        artifact_dir: str | None = None,
    ) -> None:
        where = ", ".join(part for part in (f"host {host}" if host else "", f"step {step!r}" if step else "") if part)
        super().__init__(f"{where}: {message}" if where else message, hint=hint)
        self.host = host
        self.step = step
        self.artifact_dir = artifact_dir


class RunCancelled(RunError):
    """A run was cancelled by its caller."""

    # What a shell reports for a command stopped by Ctrl-C (128 + SIGINT).
    exit_code = 130


class LockHeldError(GlmDeployError):
    """Another glm-deploy run holds the controller lock; `holder` is its record (pid, host, user, command)."""

    exit_code = 3

    def __init__(
        self, message: str, *, holder: dict[str, object] | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.holder = dict(holder or {})
