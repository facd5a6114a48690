"""Sub-commands of the `glm-deploy` CLI, one module each (see glm_deploy.cli)."""
