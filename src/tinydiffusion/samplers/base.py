"""What every sampler shares: the noise levels it visits, and the registry entry that joins a sampling algorithm to
the spacing function that chooses those levels (as k-diffusion's samplers are handed their sigmas by a
`get_sigmas_*` function). No torch at import (samplers/__init__.py says why)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from ..errors import UserError

if TYPE_CHECKING:
    import torch

Callback = Callable[[int, float, "torch.Tensor", "torch.Tensor"], None] | None


class Level(NamedTuple):
    """One noise level a sampler visits: x_t = alpha x0 + sigma eps, and the network's time input there."""
    t: float  # the step index the network is conditioned on (-1 for the clean image, never evaluated)
    alpha: float
    sigma: float

    @property
    def noise(self) -> float:
        """sigma / alpha: EDM's sigma (Karras et al. 2022), with x_t / alpha = x0 + noise * eps."""
        return self.sigma / self.alpha


CLEAN = Level(-1, 1.0, 0.0)  # where every sampler ends: its last step returns the denoised image


def gaussian_like(x: torch.Tensor, generator) -> torch.Tensor:
    """Standard normal noise shaped like x, from one generator, or from one generator per image (a list):
    then each image's noise is the same whatever batch it is drawn in (see pipeline.generate)."""
    import torch

    if isinstance(generator, (list, tuple)):
        return torch.stack([torch.randn(x.shape[1:], generator=g, device=x.device, dtype=x.dtype) for g in generator])
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def clip_to_data(x0: torch.Tensor, x_t: torch.Tensor, level: Level):
    """Clip x_0 to the data range and re-derive eps so (x0, eps) stay consistent with x_t."""
    x0 = x0.clamp(-1.0, 1.0)
    return x0, (x_t - level.alpha * x0) / level.sigma


# Keywords every sampler takes; the others in its functions' signatures are its own options.
COMMON_KEYWORDS = {"callback", "generator"}


def _own_options(function) -> dict[str, object]:
    parameters = inspect.signature(function).parameters.values()
    return {p.name: p.default for p in parameters if p.kind is p.KEYWORD_ONLY and p.name not in COMMON_KEYWORDS}


@dataclass(frozen=True)
class Sampler:
    """A registered sampler: `algorithm(denoise, x, levels, *, its options, callback, generator) -> x0` walks
    the levels `spacing(diffusion, steps, *, its options) -> [Level, ..., CLEAN]` chooses. Called as

        sampler(denoise, x, diffusion, steps, *, callback=None, generator=None, **options) -> x0

    where x is standard normal noise and `callback(i, t, x_t, x0_pred)` sees every step (figures, GIFs);
    `generator` draws a stochastic sampler's noise (a torch.Generator, or a list of one per image)."""
    algorithm: Callable
    spacing: Callable
    default_steps: int | None  # the steps it takes when none are given (None: all of the model's T)
    evaluations: Callable[[int], int] = lambda steps: steps  # its network calls for a number of steps
    deterministic: bool = False  # no noise drawn after the first: the same x always walks the same path
    students_only: bool = False  # it suits only a student distilled for it, so the demo offers it to those alone
    web: bool = False  # the web export's page runs it: export/web/tinydiffusion-web.js implements it
    diffusers_order: int | None = None  # the order of diffusers' DPMSolverMultistepScheduler taking its very steps

    def options(self) -> dict[str, object]:
        """Its own options and their defaults, read from the two functions' signatures."""
        return {**_own_options(self.spacing), **_own_options(self.algorithm)}

    def levels(self, diffusion, steps: int | None = None, **options) -> list[Level]:
        """The levels it visits for `steps` steps (its spacing options among `options`; the others are ignored)."""
        spacing_keys = _own_options(self.spacing)
        return self.spacing(diffusion, steps or diffusion.num_timesteps,
                            **{k: v for k, v in options.items() if k in spacing_keys})

    def walk(self, denoise, x, levels: list[Level], *, callback: Callback = None, generator=None, **options):
        """Run the algorithm from x at levels[0] through the given levels (its own options among `options`): the
        editing functions walk part of a sampler's levels, or one step of them at a time."""
        spacing_keys = _own_options(self.spacing)
        return self.algorithm(denoise, x, levels, callback=callback, generator=generator,
                              **{k: v for k, v in options.items() if k not in spacing_keys})

    def __call__(self, denoise, x, diffusion, steps: int | None = None, *, callback: Callback = None,
                 generator=None, **options):
        unknown = set(options) - set(self.options())
        if unknown:
            raise UserError(f"this sampler does not take {', '.join(sorted(unknown))}.")
        return self.walk(denoise, x, self.levels(diffusion, steps, **options), callback=callback,
                         generator=generator, **options)
