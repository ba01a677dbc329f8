"""DPM-Solver++(2M) (Lu et al. 2022, algorithm 2): data prediction, multistep, second order."""

import math
from itertools import pairwise

from .base import Callback


def _half_log_snr(level) -> float:
    """lambda = log(alpha / sigma); -inf at a zero-terminal-SNR first level (alpha = 0), where the step h is
    then infinite and the update, expm1(-h) = -1, is DDIM's from pure noise."""
    return math.log(level.alpha / level.sigma) if level.alpha > 0 else -math.inf


def dpmpp_2m(denoise, x, levels, *, callback: Callback = None, generator=None):
    """The first step has no history and the last step (to the clean image, lambda = +inf) is taken
    first-order, the standard final-step handling that keeps few-step sampling stable."""
    previous_x0, previous_h = None, None
    for i, (level, following) in enumerate(pairwise(levels)):
        _, x0 = denoise(x, level.t, level.alpha, level.sigma)
        if following.sigma == 0:
            x = x0  # lambda_next = inf: the first-order update reduces to the data prediction
        else:
            h = _half_log_snr(following) - _half_log_snr(level)
            if previous_x0 is None:
                d = x0
            else:
                r = previous_h / h
                d = x0 + (x0 - previous_x0) / (2.0 * r)  # (1 + 1/2r) D_i - (1/2r) D_{i-1}
            x = (following.sigma / level.sigma) * x - following.alpha * math.expm1(-h) * d
            previous_h = h
        previous_x0 = x0
        if callback is not None:
            callback(i, level.t, x, x0)
    return x
