"""Inpainting: RePaint (Lugmayr et al. 2022), with any sampler.

After every step of the sampler, the pixels to keep are replaced by the given image noised to the step's level
(eq. 8: known parts from q(x_t | x_0), unknown parts from the reverse step, joined by the mask). That alone
leaves the new region unaware of what was pasted beside it at the last step, so RePaint resamples (sec. 4.2): every
`jump_length` steps it noises x back up that many levels with the forward process and walks down again, `resamplings`
times in all, which lets the two parts agree. The sampler is run one step at a time: a multistep sampler
(dpmpp-2m) then restarts its history at each step, since the pasted pixels change x between steps.
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch

from ..autoencoders import image_shape
from ..errors import UserError
from ..pipeline import Model
from ..samplers import Level, gaussian_like
from .draw import check_image, check_more_than_one_step, start_draw
from .images import builtin_mask, fit_image, fit_mask, picture_pixels, scale_mask, to_picture_size


def repaint_path(steps: int, jump_length: int, resamplings: int) -> list[int]:
    """The sampler's level indices in the order visited, from 0 (the noisiest) to `steps` (the clean image): down
    one at a time, and at every multiple of `jump_length` short of the end back up `jump_length` levels, until
    that stretch has been walked `resamplings` times (RePaint's jump schedule, sec. 4.2 and its appendix)."""
    jumps_left = {k: resamplings - 1 for k in range(jump_length, steps, jump_length)}
    path, i = [0], 0
    while i < steps:
        i += 1
        path.append(i)
        if jumps_left.get(i, 0) > 0:
            jumps_left[i] -= 1
            i -= jump_length
            path.append(i)
    return path


def at_network_size(mask: torch.Tensor, size: int) -> torch.Tensor:
    """A mask of the image's pixels -> one of the network's positions (a latent model's grid is coarser): a position
    is regenerated if any pixel it covers is."""
    if mask.shape[-1] == size:
        return mask
    return torch.nn.functional.adaptive_max_pool2d(mask[None, None].float(), size)[0, 0] > 0


def renoise(x: torch.Tensor, level: Level, noisier: Level, generator) -> torch.Tensor:
    """A draw of q(x_noisier | x_level), the forward process between two levels: alpha scales by the ratio of
    the alphas, and the variance added is what takes sigma^2 from level to noisier."""
    ratio = noisier.alpha / level.alpha
    return ratio * x + math.sqrt(max(0.0, noisier.sigma**2 - (ratio * level.sigma) ** 2)) * gaussian_like(x, generator)


def inpaint(model: Model, image: torch.Tensor, mask: torch.Tensor, num: int = 1, *, classes: list[int] | None = None,
            sampler: str | None = None, steps: int | None = None, guidance: float | None = None, seed: int = 0,
            jump_length: int | None = None, resamplings: int = 5, **sampler_options) -> torch.Tensor:
    """`num` inpaintings of `image` (uint8 [C, H, W]) where `mask` (bool [H, W]) is True; uint8 [num, C, H, W].
    The pixels outside the mask are the given ones, exactly. jump_length defaults to a tenth of the steps.

    A latent model inpaints its latent grid: every latent position the mask touches (8 x 8 pixels for TAEF2) is
    drawn anew, the others are kept as the image's own latents, and after decoding the pixels outside the mask are
    pasted back, so they stay exact while the fill beside them is the decoder's."""
    image = check_image(model, image)
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != image.shape[1:]:
        got = f"{mask.dtype} {tuple(mask.shape)}" if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise UserError(f"the mask must be bool shaped {tuple(image.shape[1:])}, the image's size, not {got}.")
    if not 1 <= resamplings <= 100:
        raise UserError(f"--resamplings must be between 1 and 100, not {resamplings}.")
    draw = start_draw(model, num, classes, sampler, steps, guidance, seed, sampler_options)
    check_more_than_one_step(model, draw, "inpainting", "cannot fit the fill to the kept pixels: its only step starts "
                             "from pure noise, where they are drowned")
    jump_length = jump_length or max(1, draw.steps // 10)
    if not 1 <= jump_length <= draw.steps:
        raise UserError(f"--jump-length must be between 1 and the {draw.steps} steps, not {jump_length}.")
    keep = ~at_network_size(mask.to(image.device), draw.noise.shape[-1])
    known = draw.space(image[None])

    def known_at(level: Level) -> torch.Tensor:  # eq. 8a: the given pixels, noised to the level
        if level.sigma == 0:
            return known
        return level.alpha * known + level.sigma * gaussian_like(draw.noise, draw.generators)

    x = torch.where(keep, known_at(draw.levels[0]), draw.noise)
    for a, b in pairwise(repaint_path(len(draw.levels) - 1, jump_length, resamplings)):
        if b > a:  # a step of the sampler, then the known pixels pasted in at the new level
            x = torch.where(keep, known_at(draw.levels[b]), draw.walk(x, [draw.levels[a], draw.levels[b]]))
        else:  # a jump back up: the forward process from level a to level b
            x = renoise(x, draw.levels[a], draw.levels[b], draw.generators)
    return torch.where(mask.cpu(), draw.pixels(x), image.cpu())  # exactly the given pixels outside the mask


def inpaint_picture(model: Model, picture, mask, num: int = 1, *, seed: int = 0, **options) -> torch.Tensor:
    """`num` inpaintings of a picture (a PIL image of any size) at its own size, uint8 [num, C, H, W]: `mask` is a
    built-in mask's name (editing.MASKS; "strokes" follows the seed) or a mask picture of the picture's size,
    white where to regenerate. Outside the mask the picture's own pixels are kept, exactly; `options` are
    inpaint()'s."""
    if isinstance(mask, str):
        at_model_size = builtin_mask(mask, image_shape(model.config)[1], seed=seed)
        at_picture_size = scale_mask(at_model_size, picture.size)
    else:
        at_model_size, at_picture_size = fit_mask(model, mask, picture.size)
    if not at_model_size.any():
        raise UserError("the mask is empty (no white pixel), so there is nothing to inpaint.")
    results = inpaint(model, fit_image(model, picture), at_model_size, num, seed=seed, **options)
    return torch.where(at_picture_size, to_picture_size(results, picture.size), picture_pixels(model, picture))
