"""tinydiffusion: small, readable denoising diffusion models for small images."""

from .config import RunConfig
from .diffusion import GaussianDiffusion
from .errors import UserError
from .pipeline import generate, load_model

__version__ = "0.1.0"
__all__ = ["GaussianDiffusion", "RunConfig", "UserError", "generate", "load_model"]
