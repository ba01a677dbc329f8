"""Multistep consistency sampling (Song et al. 2023, algorithm 1): denoise all the way, then noise afresh.

At each level the denoiser's x0 estimate is taken as the answer, and the next level's x is drawn from
q(x_t | x0) with new noise. Meant for a consistency-distilled student, whose x0 estimate from any level is the
end of its teacher's ODE path; one step from pure noise is then a whole sample, and more steps refine it.
"""

from itertools import pairwise

from .base import Callback, gaussian_like


def consistency(denoise, x, levels, *, callback: Callback = None, generator=None):
    for i, (level, following) in enumerate(pairwise(levels)):
        _, x0 = denoise(x, level.t, level.alpha, level.sigma)
        x = x0 if following.sigma == 0 else following.alpha * x0 + following.sigma * gaussian_like(x, generator)
        if callback is not None:
            callback(i, level.t, x, x0)
    return x
