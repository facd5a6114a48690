"""Filters that write values into systemd unit files safely (the rules are in glm_deploy.systemd_text).

Controller-side: calls glm_deploy from the Python that runs ansible-playbook, like the glm.deploy.plan lookup; it is
imported when a filter runs, so that without the package the task fails saying how to install it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ansible_collections.glm.deploy.plugins.plugin_utils.glm_deploy_package import glm_deploy_imports


def _from_systemd_text(name: str) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        with glm_deploy_imports(f"the glm.deploy.{name} filter"):
            from glm_deploy import systemd_text
        return getattr(systemd_text, name)(*args, **kwargs)

    run.__name__ = name
    return run


systemd_escape_word = _from_systemd_text("systemd_escape_word")
systemd_command_line = _from_systemd_text("systemd_command_line")
systemd_environment = _from_systemd_text("systemd_environment")
systemd_unsafe_values = _from_systemd_text("systemd_unsafe_values")


class FilterModule:
    """glm.deploy filters for unit files."""

    def filters(self) -> dict[str, object]:
        return {
            "systemd_escape_word": systemd_escape_word,
            "systemd_command_line": systemd_command_line,
            "systemd_environment": systemd_environment,
            "systemd_unsafe_values": systemd_unsafe_values,
        }
