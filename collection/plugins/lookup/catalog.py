# Controller-side: reads the same catalog the glm-deploy CLI reads (one source of truth).
from __future__ import annotations

DOCUMENTATION = r"""
name: catalog
author: glm-deploy developers (!UNKNOWN)
short_description: Read glm-deploy's catalog of models, engines and hardware
description:
  - Returns the parsed catalog (models, engines, hardware, cuda_driver_minimum),
    or the sections named as terms.
  - Needs the glm-deploy Python package in the interpreter that runs ansible-playbook.
options:
  _terms:
    description:
      - Sections to return (C(models), C(engines), C(hardware), C(cuda_driver_minimum)); none for all.
    type: list
    elements: str
    required: false
"""

EXAMPLES = r"""
- name: GPU name patterns of the B200
  ansible.builtin.debug:
    msg: "{{ lookup('glm.deploy.catalog', 'hardware').b200.gpu_name_patterns }}"
"""

RETURN = r"""
_raw:
  description: The catalog (one dictionary), or one dictionary per requested section.
  type: list
  elements: dict
"""

from ansible.errors import AnsibleLookupError  # noqa: E402 - below the documentation, as Ansible wants
from ansible.plugins.lookup import LookupBase  # noqa: E402
from ansible_collections.glm.deploy.plugins.plugin_utils.glm_deploy_package import glm_deploy_imports  # noqa: E402


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        with glm_deploy_imports("the glm.deploy.catalog lookup"):
            from glm_deploy.catalog import load_catalog
            from glm_deploy.errors import GlmDeployError
        self.set_options(var_options=variables, direct=kwargs)
        try:
            raw = load_catalog().raw
        except GlmDeployError as error:
            raise AnsibleLookupError(f"glm.deploy.catalog: {error}") from None
        if not terms:
            return [raw]
        sections = []
        for term in terms:
            if term not in raw:
                raise AnsibleLookupError(
                    f"glm.deploy.catalog: unknown section {term!r}; known sections: {', '.join(sorted(raw))}"
                )
            sections.append(raw[term])
        return sections
