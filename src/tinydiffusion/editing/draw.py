"""What every edit shares: its sampling set up as generate() sets up a batch, and the image it starts from."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..autoencoders import decode, encode, image_shape
from ..config import DataConfig
from ..data.pixels import to_model_space, to_pixels
from ..errors import UserError
from ..pipeline import (
    Model,
    check_finite,
    check_memory,
    checked_settings,
    denoiser,
    resolve_labels,
    start_noise,
    teacher_of,
)
from ..samplers import SAMPLERS, Level, Sampler
from ..samplers.denoiser import Denoiser


@dataclass
class Draw:
    """An edit's sampling: the settings as used, the sampler's levels, each image's noise and generator, the
    denoiser, and the model's data section (a latent model's autoencoder). Image i of a seed starts from the same
    noise as generate()'s image i."""
    sampler_name: str
    steps: int
    guidance: float
    options: dict
    sampler: Sampler
    levels: list[Level]
    noise: torch.Tensor
    generators: list[torch.Generator]
    denoise: Denoiser
    data: DataConfig

    def walk(self, x: torch.Tensor, levels: list[Level], denoise=None) -> torch.Tensor:
        """The sampler from x at levels[0] through `levels`."""
        return self.sampler.walk(denoise or self.denoise, x, levels, generator=self.generators, **self.options)

    def space(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images [N, C, H, W] -> the network's space: [-1, 1], and for a latent model their latents."""
        return encode(self.data, to_model_space(images))

    def pixels(self, x0: torch.Tensor) -> torch.Tensor:
        """What the sampler ended on -> uint8 images (a latent model's decoded)."""
        check_finite(x0, self.sampler_name, self.steps, self.guidance, self.options)
        return to_pixels(decode(self.data, x0)).cpu()


def start_draw(model: Model, num: int, classes: list[int] | None, sampler: str | None, steps: int | None,
               guidance: float | None, seed: int, options: dict) -> Draw:
    """An edit's Draw of `num` images: its settings checked, its memory estimated, its noise drawn. With no class
    asked for, a class-conditional model runs unconditionally (its null label): the class of a given image is
    unknown, and guessing one would pull the edit toward it."""
    if num < 1:
        raise UserError(f"the number of images must be at least 1, not {num}.")
    if classes or not model.num_classes:
        labels = resolve_labels(model, num, classes)
    elif guidance not in (None, 1.0):
        raise UserError("guidance steers toward a class; add --class NAME, or drop --guidance to edit without one.")
    else:
        labels, guidance = torch.full((num,), model.num_classes, dtype=torch.long), 1.0
    sampler, steps, guidance = checked_settings(model, sampler, steps, guidance, seed, options)
    device = next(model.net.parameters()).device
    check_memory(model, num, num, guided=guidance != 1.0 and not model.config.net.guidance_input, device=device)
    noise, generators = start_noise(model, seed, 0, num)
    chosen = SAMPLERS[sampler]
    return Draw(sampler, steps, guidance, options, chosen, chosen.levels(model.diffusion, steps, **options), noise,
                generators, denoiser(model, labels, guidance), model.config.data)


def check_more_than_one_step(model: Model, draw: Draw, edit: str, why: str) -> None:
    """An edit that needs a level between pure noise and the image: one sentence when the draw takes one step, naming
    what to use instead (for a 1-step student, its teacher)."""
    if draw.steps > 1:
        return
    student = model.config.distill
    instead = (f"use a student of more steps or its teacher ({teacher_of(model)})" if student.steps
               else "take more --steps")
    raise UserError(f"{edit} in one step {why}; {instead}.")


def check_image(model: Model, image: torch.Tensor, what: str = "the image") -> torch.Tensor:
    """uint8 [C, H, W] in the shape of the model's images (fit_image makes one from any picture), on the network's
    device."""
    shape = image_shape(model.config)
    if not isinstance(image, torch.Tensor) or image.dtype != torch.uint8 or tuple(image.shape) != shape:
        got = f"{image.dtype} {tuple(image.shape)}" if isinstance(image, torch.Tensor) else type(image).__name__
        raise UserError(f"{what} must be uint8 pixels shaped {shape} for this model, not {got}; "
                        "editing.fit_image makes one from any picture.")
    return image.to(next(model.net.parameters()).device)
