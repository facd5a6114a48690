"""glm-deploy: deploy Z.ai's GLM-5 family with SGLang or vLLM, verified and benchmarked."""

from glm_deploy.errors import GlmDeployError

__all__ = ["GlmDeployError", "__version__"]
__version__ = "0.1.0"
