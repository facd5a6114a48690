# Controller-side: imports glm_deploy from the venv that runs ansible-playbook, so that the playbooks and
# `glm-deploy deploy` find (or make) the endpoint API key by the same code, in the same file.
from __future__ import annotations

DOCUMENTATION = r"""
name: api_key
author: glm-deploy developers (!UNKNOWN)
short_description: The endpoint API key from the controller (made once when there is none)
description:
  - Calls glm_deploy.credentials.endpoint_api_key on the controller, the code the glm-deploy Python API uses.
  - Returns the controller's GLM_API_KEY when set; else the key in the key file; else a new random key
    (48 letters and digits) written to the key file with mode 0600 and reused by every later run.
  - The key file is I(secrets_dir)/api_key when I(secrets_dir) is set, else the file GLM_API_KEY_FILE names, else
    .cache/secrets/api_key under I(project_dir).
  - Use it only in C(no_log) tasks.
  - Needs the glm-deploy Python package in the interpreter that runs ansible-playbook.
options:
  secrets_dir:
    description: Folder of the key file (the play's C(glm_secrets_dir)); empty for the default.
    type: str
    default: ""
  project_dir:
    description: Project folder whose C(.cache/secrets/api_key) is the default key file; empty for glm-deploy's own.
    type: str
    default: ""
  create:
    description: Make the key when there is none; when false, a missing key is an error.
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Resolve the endpoint API key
  ansible.builtin.set_fact:
    glm_api_key: "{{ lookup('glm.deploy.api_key', project_dir=playbook_dir | dirname) }}"
  no_log: true
"""

RETURN = r"""
_raw:
  description: The key, as one string.
  type: list
  elements: str
"""

from ansible.errors import AnsibleLookupError  # noqa: E402 - below the documentation, as Ansible wants
from ansible.plugins.lookup import LookupBase  # noqa: E402
from ansible_collections.glm.deploy.plugins.plugin_utils.glm_deploy_package import glm_deploy_imports  # noqa: E402


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        with glm_deploy_imports("the glm.deploy.api_key lookup"):
            from glm_deploy.credentials import api_key_file, endpoint_api_key
            from glm_deploy.errors import GlmDeployError
        self.set_options(var_options=variables, direct=kwargs)
        key_file = api_key_file(
            secrets_dir=self.get_option("secrets_dir") or None, project_dir=self.get_option("project_dir") or None
        )
        try:
            key = endpoint_api_key(key_file=key_file, create=self.get_option("create"))
        except GlmDeployError as error:
            raise AnsibleLookupError(f"glm.deploy.api_key: {error}") from None
        except OSError as error:
            raise AnsibleLookupError(f"glm.deploy.api_key: could not read or write {key_file}: {error}") from None
        if key is None:
            raise AnsibleLookupError(
                f"glm.deploy.api_key: no endpoint API key: GLM_API_KEY is not set and {key_file} does not exist"
            )
        return [key]
