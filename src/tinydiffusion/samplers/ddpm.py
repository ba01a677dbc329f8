"""Ancestral sampling from the DDPM posterior (Ho et al. 2020, eqs. 6-7)."""

import math
from itertools import pairwise

from .base import Callback, clip_to_data, gaussian_like


def ddpm(denoise, x, levels, *, clip_x0=True, callback: Callback = None, generator=None):
    """Each step draws x_s from q(x_s | x_t, x0_pred), with the posterior's variance beta-tilde. With fewer
    levels than the process has steps the chain is respaced (Nichol & Dhariwal 2021, sec. 4): the beta of a
    step follows from the alpha-bar at its two ends."""
    for i, (level, following) in enumerate(pairwise(levels)):
        eps, x0 = denoise(x, level.t, level.alpha, level.sigma)
        if clip_x0:
            x0, eps = clip_to_data(x0, x, level)
        ab, ab_prev = level.alpha**2, following.alpha**2
        beta = 1.0 - ab / ab_prev  # the respaced beta_t
        coef_x0 = following.alpha * beta / (1.0 - ab)
        coef_xt = math.sqrt(1.0 - beta) * (1.0 - ab_prev) / (1.0 - ab)
        x = coef_x0 * x0 + coef_xt * x
        if following.sigma > 0:
            variance = beta * (1.0 - ab_prev) / (1.0 - ab)
            x = x + math.sqrt(variance) * gaussian_like(x, generator)
        if callback is not None:
            callback(i, level.t, x, x0)
    return x
