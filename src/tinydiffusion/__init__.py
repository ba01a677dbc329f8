"""tinydiffusion: small, readable denoising diffusion models for small images."""

from .errors import UserError
from .version import __version__ as __version__  # re-exported: tinydiffusion.__version__

__all__ = ["GaussianDiffusion", "RunConfig", "UserError", "generate", "load_model", "load_student"]


def __getattr__(name: str):
    """The public names are imported on first use (PEP 562): `tinydiffusion --help` then starts in a fraction
    of a second instead of the seconds torch takes, and a Ctrl-C at start-up reaches the command line's
    handler instead of interrupting this file's imports."""
    if name == "RunConfig":
        from .config import RunConfig

        return RunConfig
    if name == "GaussianDiffusion":
        from .diffusion import GaussianDiffusion

        return GaussianDiffusion
    if name in ("generate", "load_model", "load_student"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'tinydiffusion' has no attribute {name!r}")
