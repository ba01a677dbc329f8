"""Heun's second-order method on the probability-flow ODE (Karras et al. 2022, algorithm 1): 2 * steps - 1
network evaluations, as the last step, to sigma = 0, stays Euler's."""

from itertools import pairwise

from .base import Callback
from .euler import denoised


def heun(denoise, x, levels, *, callback: Callback = None, generator=None):
    x = x * levels[0].noise
    for i, (level, following) in enumerate(pairwise(levels)):
        x0 = denoised(denoise, x, level)
        slope = (x - x0) / level.noise
        x_euler = x + (following.noise - level.noise) * slope
        if following.sigma > 0:
            slope_next = (x_euler - denoised(denoise, x_euler, following)) / following.noise
            x = x + (following.noise - level.noise) * 0.5 * (slope + slope_next)
        else:
            x = x_euler
        if callback is not None:
            callback(i, level.t, x, x0)
    return x
