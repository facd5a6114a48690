"""Filters that write values into systemd unit files safely (the rules are in glm_deploy.systemd_text).

Controller-side: imports glm_deploy from the venv that runs ansible-playbook, like the glm.deploy.plan lookup.
"""

from __future__ import annotations

from glm_deploy.systemd_text import (
    systemd_command_line,
    systemd_environment,
    systemd_escape_word,
    systemd_unsafe_values,
)


class FilterModule:
    """glm.deploy filters for unit files."""

    def filters(self) -> dict[str, object]:
        return {
            "systemd_escape_word": systemd_escape_word,
            "systemd_command_line": systemd_command_line,
            "systemd_environment": systemd_environment,
            "systemd_unsafe_values": systemd_unsafe_values,
        }
