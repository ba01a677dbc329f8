"""Interpolation along a spherical path between two noises, or between two real images found again by DDIM
inversion, and from one class to another.

- **Noises.** Gaussian noise in many dimensions lies near a sphere, and a straight line between two draws passes
  inside it, through noise too faint to be a sample; the spherical path (slerp, Shoemake 1985) keeps its norm.
- **Real images.** The DDIM ODE (Song et al. 2021, eq. 13) is deterministic, so it can be run backwards from an
  image to the noise that DDIM maps to it (sec. 4.3). Each backward step must use the predictions at its *end*,
  which is not yet known; it is found by fixed-point iteration (as ReNoise, Garibi et al. 2024, does), so that
  walking DDIM forward again lands back on the image.
- **Classes.** Between class a and class b the denoiser's outputs are mixed, (1 - w) of a's plus w of b's: a
  mixture of the two scores, which samples the product p_a^(1-w) p_b^w (Liu et al. 2022, eq. 10's conjunction).
"""

from __future__ import annotations

from itertools import pairwise

import torch

from ..errors import UserError
from ..pipeline import Model, start_noise, teacher_of
from ..samplers.denoiser import Denoiser
from .draw import Draw, check_image, start_draw

INVERSION_STEPS = 50  # DDIM steps of an inversion; each costs 1 + refinements network evaluations (invert)


def slerp(a: torch.Tensor, b: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Points along the great circle from a (weight 0) to b (weight 1), one per weight: [len(weights), *a.shape].
    The endpoints are a and b exactly."""
    cosine = (a * b).sum() / (a.norm() * b.norm())
    angle = torch.arccos(cosine.clamp(-1.0, 1.0))
    w = weights.to(a).view(-1, *([1] * a.dim()))
    if angle.abs() < 1e-4:  # nearly parallel: the straight line is the arc
        return (1 - w) * a + w * b
    return (torch.sin((1 - w) * angle) * a + torch.sin(w * angle) * b) / torch.sin(angle)


class ClassBlend:
    """A denoiser between two classes: each image's (eps, x0) is (1 - w) times class a's plus w times class b's,
    w its own weight. Both classes run as one batch."""

    def __init__(self, both: Denoiser, weights: torch.Tensor):
        self.both, self.weights = both, weights.view(-1, 1, 1, 1)

    def __call__(self, x_t, t, alpha, sigma):
        eps, x0 = self.both(torch.cat([x_t, x_t]), t, alpha, sigma)
        w = self.weights.to(x_t)
        (eps_a, eps_b), (x0_a, x0_b) = eps.chunk(2), x0.chunk(2)
        return (1 - w) * eps_a + w * eps_b, (1 - w) * x0_a + w * x0_b


@torch.no_grad()
def invert(draw: Draw, images: torch.Tensor, refinements: int = 3) -> torch.Tensor:
    """The noise at the first of the draw's DDIM levels that DDIM maps to `images` (model space [N, C, H, W]).

    A DDIM step from level m down to level l lands on x_l = alpha_l x0(x_m) + sigma_l eps(x_m), the network's two
    predictions at x_m, the point sought. Each backward step solves for it by fixed-point iteration, from the
    predictions at x_l as the first guess, in the form that contracts: where noise outweighs signal at m, the
    noise prediction hardly depends on x_m (it is nearly x_m itself), so the step is solved through x0,
        x_m = alpha_m x0(x_m) + (sigma_m / sigma_l) (x_l - alpha_l x0(x_m));
    elsewhere through eps, x_m = (alpha_m / alpha_l) (x_l - sigma_l eps(x_m)) + sigma_m eps(x_m)."""
    x = images
    levels = draw.levels[::-1]  # from the clean image up to the noisiest level
    for less, more in pairwise(levels):
        eps, x0 = draw.denoise(x, *(more if less.sigma == 0 else less))  # the first guess
        through_x0 = more.sigma > more.alpha and less.sigma > 0
        for refinement in range(refinements + 1):
            if through_x0:
                x_more = more.alpha * x0 + (more.sigma / less.sigma) * (x - less.alpha * x0)
            else:
                x_more = (more.alpha / less.alpha) * (x - less.sigma * eps) + more.sigma * eps
            if refinement < refinements:
                eps, x0 = draw.denoise(x_more, *more)
        x = x_more
    return x


def interpolate(model: Model, frames: int, *, seeds: tuple[int, int] = (0, 1), images: tuple | None = None,
                classes: tuple[int, ...] | None = None, sampler: str | None = None, steps: int | None = None,
                guidance: float | None = None, **sampler_options) -> torch.Tensor:
    """`frames` images along a path, uint8 [frames, C, H, W]:
    - between the noises of two seeds (each endpoint is generate()'s image 0 of its seed, with the same settings;
      with a stochastic sampler every frame takes the first seed's step noise, so only that endpoint is exact);
    - or between two real images (`images`, a pair of uint8 [C, H, W]), DDIM-inverted with `steps` (default 50)
      at `guidance` (default 1: a guided inversion drifts) and drawn back with DDIM;
    - `classes`: one class for every frame, or a pair, from the first class to the second."""
    if not 2 <= frames <= 1000:
        raise UserError(f"an interpolation has 2 to 1,000 frames, not {frames}.")
    classes = tuple(classes or ())
    if len(classes) > 2:
        raise UserError(f"an interpolation goes between at most two classes, not {len(classes)}.")
    weights = torch.linspace(0, 1, frames)
    first = [classes[0]] * frames if classes else None
    if images is not None:
        if model.config.distill.steps:
            raise UserError(f"an interpolation between real images finds their noise by inverting DDIM in fine steps "
                            f"({INVERSION_STEPS}), which a student distilled to {model.config.distill.steps} does not "
                            f"take; interpolate them with its teacher ({teacher_of(model)}).")
        if sampler not in (None, "ddim") or sampler_options:
            raise UserError("an interpolation between real images inverts them with DDIM and draws them back with "
                            "it; drop --sampler and sampler options.")
        sampler, steps = "ddim", steps or INVERSION_STEPS
        guidance = 1.0 if guidance is None and classes else guidance
    draw = start_draw(model, frames, first, sampler, steps, guidance, seeds[0], sampler_options)
    if images is not None:
        if len(images) != 2:
            raise UserError(f"an interpolation goes between two images, not {len(images)}.")
        pair = draw.space(torch.stack([check_image(model, image) for image in images]))
        ends = start_draw(model, 2, list(classes) if classes else None, "ddim", draw.steps, draw.guidance, 0, {})
        start, end = invert(ends, pair)
    else:
        start, end = draw.noise[0], start_noise(model, seeds[1], 0, 1)[0][0]
    path = slerp(start, end, weights)
    denoise = draw.denoise
    if len(classes) == 2:
        both = start_draw(model, 2 * frames, [classes[0]] * frames + [classes[1]] * frames, draw.sampler_name,
                       draw.steps, draw.guidance, seeds[0], sampler_options)
        denoise = ClassBlend(both.denoise, weights)
    draw.generators = [start_noise(model, seeds[0], 0, 1)[1][0] for _ in range(frames)]  # one step noise for all
    return draw.pixels(draw.walk(path, draw.levels, denoise))
