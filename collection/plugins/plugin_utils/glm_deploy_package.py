# Copyright: glm-deploy developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The one place the collection's controller plugins say how to install the glm-deploy Python package.

The lookups, filters and wait actions run on the controller and call glm_deploy (the renderer, the catalog, the
release id, the progress line), so that the playbooks and the glm-deploy CLI share one implementation. They import
it when they run, never when Ansible loads them: a plugin that failed to load would be skipped with a warning and
the play would die later on "no filter named ..." or with "Unexpected Exception". Each import goes through
`glm_deploy_imports`, which turns an ImportError into an AnsibleError naming the plugin, the Python that runs
Ansible and the command that installs the package into it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from ansible.errors import AnsibleError


class GlmDeployMissing(AnsibleError):
    """The glm-deploy Python package cannot be imported by the Python that runs Ansible."""


def install_hint(plugin: str, error: ImportError) -> str:
    """What a user reads when `plugin` cannot import glm_deploy: what is missing, where, and how to install it."""
    python = sys.executable or "python3"
    return (
        f"{plugin} needs the glm-deploy Python package on the controller, in the Python that runs Ansible "
        f"({python}), and that Python cannot import it ({error}). Install it there: "
        f"`{python} -m pip install glm-deploy`, or from the wheel: "
        f"`{python} -m pip install glm_deploy-<version>-py3-none-any.whl` (from a checkout: `pip install -e .`). "
        "In an execution environment, build the image from the collection's execution-environment.yml."
    )


@contextmanager
def glm_deploy_imports(plugin: str) -> Iterator[None]:
    """Run the `from glm_deploy... import ...` lines of `plugin` (e.g. "the glm.deploy.plan lookup"); an
    ImportError among them becomes GlmDeployMissing with the install hint."""
    try:
        yield
    except ImportError as error:
        raise GlmDeployMissing(install_hint(plugin, error)) from None
