# Controller-side: imports glm_deploy from the venv that runs ansible-playbook, so the playbooks and
# `glm-deploy plan` render the same plan from the same catalog.
from __future__ import annotations

DOCUMENTATION = r"""
name: plan
author: glm-deploy developers (!UNKNOWN)
short_description: Render a glm-deploy plan (argv, env, container spec per node) from the catalog
description:
  - Calls glm_deploy.render.render_plan on the controller and returns Plan.to_dict().
  - Needs the glm-deploy Python package in the interpreter that runs ansible-playbook.
options:
  model:
    description: Catalog model name, for example C(glm-5.1-fp8).
    type: str
    required: true
  engine:
    description: Catalog engine name (C(sglang), C(vllm), C(vllm-cpu)).
    type: str
    required: true
  hardware:
    description: Catalog hardware name (C(b200), C(h200), C(h100), C(mi300x), C(mi325x), C(mi355x), C(cpu)).
    type: str
    required: true
  nodes:
    description: Nodes to span; omit (or 0) for what the model needs on the hardware.
    type: int
  options:
    description: Plan options (port, served_name, max_model_len, speculative, revision, head_address, ...).
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: Show the plan
  ansible.builtin.debug:
    msg: "{{ lookup('glm.deploy.plan', model='glm-5.1-fp8', engine='vllm', hardware='b200') }}"
"""

RETURN = r"""
_raw:
  description: One plan dictionary (see glm_deploy.render.Plan.to_dict).
  type: list
  elements: dict
"""

from ansible.errors import AnsibleLookupError  # noqa: E402 - below the documentation, as Ansible wants
from ansible.plugins.lookup import LookupBase  # noqa: E402
from ansible_collections.glm.deploy.plugins.plugin_utils.glm_deploy_package import glm_deploy_imports  # noqa: E402


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        with glm_deploy_imports("the glm.deploy.plan lookup"):
            from glm_deploy.catalog import load_catalog
            from glm_deploy.errors import GlmDeployError
            from glm_deploy.render import PlanOptions, render_plan
        self.set_options(var_options=variables, direct=kwargs)
        nodes = self.get_option("nodes")
        try:
            options = PlanOptions.from_mapping(dict(self.get_option("options") or {}))
            plan = render_plan(
                load_catalog(),
                model=self.get_option("model"),
                engine=self.get_option("engine"),
                hardware=self.get_option("hardware"),
                nodes=int(nodes) if nodes not in (None, "", 0, "0") else None,
                options=options,
            )
        except GlmDeployError as error:
            raise AnsibleLookupError(f"glm.deploy.plan: {error}") from None
        return [plan.to_dict()]
