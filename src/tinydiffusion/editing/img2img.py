"""Image-to-image: SDEdit (Meng et al. 2022, sec. 3).

The image is noised to a level part of the way along the sampler's levels and the sampler walks the rest: the
noise drowns the details, and denoising puts back details that belong to the model's images (and to a class,
when one is given: a shirt turned into a dress), while the broad shapes survive. `strength` is how much of the
walk is redone: 0 returns the image, 1 forgets it and draws from noise, as generate() does with the same seed.
"""

from __future__ import annotations

import math

import torch

from ..errors import UserError
from ..pipeline import Model
from .draw import check_image, check_more_than_one_step, start_draw


def img2img(model: Model, image: torch.Tensor, strength: float, num: int = 1, *, classes: list[int] | None = None,
            sampler: str | None = None, steps: int | None = None, guidance: float | None = None, seed: int = 0,
            **sampler_options) -> torch.Tensor:
    """`num` variants of `image` (uint8 [C, H, W]) redrawn from the level `strength` of the way along the
    sampler's levels (for a uniform spacing, t of about strength x T); uint8 [num, C, H, W]."""
    if not (isinstance(strength, (int, float)) and math.isfinite(strength) and 0 <= strength <= 1):
        raise UserError(f"the strength must be a number from 0 (the image as it is) to 1 (a new image), "
                        f"not {strength}.")
    image = check_image(model, image)
    draw = start_draw(model, num, classes, sampler, steps, guidance, seed, sampler_options)
    if 0 < strength < 1:
        check_more_than_one_step(model, draw, "image-to-image", "can only return the image or draw a new one, its "
                                 "only level being pure noise")
    redone = round(strength * draw.steps)  # sampler steps walked again
    if redone == 0:
        return image.cpu().expand(num, -1, -1, -1).clone()
    levels = draw.levels[draw.steps - redone:]
    if redone == draw.steps:  # the samplers' first level is pure noise: the image is forgotten
        x = draw.noise
    else:
        x = levels[0].alpha * draw.space(image[None]) + levels[0].sigma * draw.noise  # q(x_t | x_0)
    return draw.pixels(draw.walk(x, levels))
