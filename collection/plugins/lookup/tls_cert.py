# Controller-side: imports glm_deploy from the venv that runs ansible-playbook, so that the playbooks and
# `glm-deploy client-env` use one CA, in one folder beside the endpoint API key.
from __future__ import annotations

DOCUMENTATION = r"""
name: tls_cert
author: glm-deploy developers (!UNKNOWN)
short_description: A host's TLS certificate and key, signed by the controller's internal CA (made once)
description:
  - Calls glm_deploy.tls.server_certificate on the controller.
  - The CA (EC P-256) is made on first use in the folder C(tls/) beside the endpoint API key file (the
    glm.deploy.api_key lookup's file), every file mode 0600 in a folder of mode 0700, and reused by every later run.
  - The host's certificate names the given DNS names and IP addresses (subject alternative names). The one on file
    is returned again while it still fits (same names, more than 30 days left, signed by this CA), so a re-run
    copies the same bytes.
  - Use it only in C(no_log) tasks (the result holds the host's private key).
options:
  host:
    description: Inventory host name; the certificate and key are kept as C(hosts/<host>.crt) and C(.key).
    type: str
    required: true
  names:
    description: DNS names and IP addresses the certificate is valid for.
    type: list
    elements: str
    required: true
  secrets_dir:
    description: Folder of the API key file (the play's C(glm_secrets_dir)); empty for the default.
    type: str
    default: ""
  project_dir:
    description: Project folder whose C(.cache/secrets) is the default; empty for glm-deploy's own.
    type: str
    default: ""
"""

EXAMPLES = r"""
- name: Issue the host's certificate on the controller
  ansible.builtin.set_fact:
    _cert: "{{ lookup('glm.deploy.tls_cert', host=inventory_hostname, names=[inventory_hostname, ansible_host]) }}"
  no_log: true
"""

RETURN = r"""
_raw:
  description: One mapping with C(cert) (PEM), C(key) (PEM), C(ca) (PEM), C(names) and C(ca_file), the CA's path
    on the controller.
  type: list
  elements: dict
"""

from ansible.errors import AnsibleLookupError  # noqa: E402 - below the documentation, as Ansible wants
from ansible.plugins.lookup import LookupBase  # noqa: E402
from ansible_collections.glm.deploy.plugins.plugin_utils.glm_deploy_package import glm_deploy_imports  # noqa: E402


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        with glm_deploy_imports("the glm.deploy.tls_cert lookup"):
            from glm_deploy.errors import GlmDeployError
            from glm_deploy.tls import ca_cert_file, server_certificate, tls_dir
        self.set_options(var_options=variables, direct=kwargs)
        folder = tls_dir(
            secrets_dir=self.get_option("secrets_dir") or None, project_dir=self.get_option("project_dir") or None
        )
        try:
            issued = server_certificate(folder, self.get_option("host"), self.get_option("names"))
        except GlmDeployError as error:
            raise AnsibleLookupError(f"glm.deploy.tls_cert: {error}") from None
        except OSError as error:
            raise AnsibleLookupError(f"glm.deploy.tls_cert: could not read or write {folder}: {error}") from None
        return [
            {
                "cert": issued.cert_pem,
                "key": issued.key_pem,
                "ca": issued.ca_pem,
                "names": list(issued.names),
                "ca_file": str(ca_cert_file(folder)),
            }
        ]
