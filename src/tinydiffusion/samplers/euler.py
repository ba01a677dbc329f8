"""Euler steps of the probability-flow ODE (Karras et al. 2022, eq. 3 with sigma(t) = t).

In EDM's variables x = x_t / alpha = x0 + sigma n, where sigma is the level's sigma / alpha, and the ODE is
dx/dsigma = (x - D(x; sigma)) / sigma.
"""

from itertools import pairwise

from .base import Callback


def denoised(denoise, x, level):
    """D(x; sigma): the denoiser called at the level's x_t = alpha x."""
    return denoise(x * level.alpha, level.t, level.alpha, level.sigma)[1]


def euler(denoise, x, levels, *, callback: Callback = None, generator=None):
    x = x * levels[0].noise  # pure noise at the first level's sigma
    for i, (level, following) in enumerate(pairwise(levels)):
        x0 = denoised(denoise, x, level)
        x = x + (following.noise - level.noise) * (x - x0) / level.noise
        if callback is not None:
            callback(i, level.t, x, x0)
    return x
