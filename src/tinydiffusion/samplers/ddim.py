"""DDIM (Song et al. 2021, eq. 12): deterministic for eta = 0, DDPM-like for eta = 1 (eq. 16)."""

import math
from itertools import pairwise

from .base import Callback, clip_to_data, gaussian_like


def ddim(denoise, x, levels, *, eta=0.0, clip_x0=False, callback: Callback = None, generator=None):
    for i, (level, following) in enumerate(pairwise(levels)):
        eps, x0 = denoise(x, level.t, level.alpha, level.sigma)
        if clip_x0:
            x0, eps = clip_to_data(x0, x, level)
        noise_std = (eta * (following.sigma / level.sigma)
                     * math.sqrt(max(0.0, 1.0 - level.alpha**2 / following.alpha**2)))
        direction = math.sqrt(max(0.0, following.sigma**2 - noise_std**2))
        x = following.alpha * x0 + direction * eps
        if eta > 0:
            x = x + noise_std * gaussian_like(x, generator)
        if callback is not None:
            callback(i, level.t, x, x0)
    return x
