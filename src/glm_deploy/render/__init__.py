"""The pure renderer: (model, engine, hardware, nodes, options) -> `Plan`.

No I/O happens here: the same function serves `glm-deploy plan`, the `glm.deploy.plan` lookup that playbooks
call, and the tests. Every flag, image and size comes from the catalog; this package only decides which
catalog entries apply and refuses combinations that cannot work, with a message that names the input, the
value and what would work instead.

Its modules, in the order a plan is rendered: `options` (what a user may choose, and the checks of the values),
`context` (the catalog entries chosen by name, checked to work together), `engine` (the image or venv that runs
the engine), `renderer` (`render_plan`: layout, flags, secrets, nodes, container), `jit` (the JIT caches and their
warm-up), `gates` (the quality gate and benchmark workload), and `plan` (the `Plan` it returns).
"""

from glm_deploy.render.context import ASSUMED_HOST_CUDA
from glm_deploy.render.options import DEFAULT_PORT, STATE_ROOT, PlanOptions, normalised_flag_is
from glm_deploy.render.plan import ContainerSpec, Explanation, Mount, NodePlan, Plan, SecretFile, Warmup
from glm_deploy.render.renderer import CONFIG_ROOT, render_plan

__all__ = [
    "ASSUMED_HOST_CUDA",
    "CONFIG_ROOT",
    "DEFAULT_PORT",
    "STATE_ROOT",
    "ContainerSpec",
    "Explanation",
    "Mount",
    "NodePlan",
    "Plan",
    "PlanOptions",
    "SecretFile",
    "Warmup",
    "normalised_flag_is",
    "render_plan",
]
