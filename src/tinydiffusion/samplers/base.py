"""What every sampler shares: the denoiser it calls, the noise levels it visits, and the registry entry that
joins a sampling algorithm to the spacing function that chooses those levels (as k-diffusion's samplers are
handed their sigmas by a `get_sigmas_*` function)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..errors import UserError

Callback = Callable[[int, float, torch.Tensor, torch.Tensor], None] | None


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


class Denoiser:
    """The network as samplers see it: (x_t, t, alpha, sigma) -> (eps, x0), with guidance.

    Classifier-free guidance (Ho & Salimans 2022, eq. 6) mixes the conditional and unconditional
    predictions as uncond + scale * (cond - uncond): scale 1 is the conditional model, 0 the
    unconditional one. Both halves run as one batch. Every objective's (eps, x0) is affine in the network's
    output, so mixing the predictions is mixing the outputs. A network that takes the scale as an input
    (`guidance_input`, a distilled student) gives the guided output in one call instead. The scale
    is a float, or a tensor of one scale per image. `evaluations` counts network calls.

    `predict` is the one place the network is run; another runtime (export/runtime.py runs an exported graph)
    replaces it and keeps the guidance.
    """

    def __init__(self, net, diffusion, y: torch.Tensor | None = None, guidance: float | torch.Tensor = 1.0,
                 null_class: int | None = None, guidance_input: bool = False):
        self.net, self.diffusion, self.y, self.guidance = net, diffusion, y, guidance
        self.null_class, self.guidance_input = null_class, guidance_input
        self.evaluations = 0

    def predict(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None, scales: torch.Tensor | None,
                alpha: float, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(eps, x0) for a batch at the network's time t [B] (the step index), class y and, for a network that
        takes it, the guidance scales [B]: the network's output turned into both by the objective."""
        output = self.net(x_t, t, y) if scales is None else self.net(x_t, t, y, scales)
        return self.diffusion.eps_and_x0_from_output(output.float(), x_t, alpha, sigma)

    @torch.no_grad()
    def __call__(self, x_t: torch.Tensor, t: float, alpha: float, sigma: float):
        self.evaluations += 1
        t_batch = torch.full((x_t.shape[0],), float(t), device=x_t.device)
        scale = self.guidance
        if self.guidance_input:
            scales = torch.as_tensor(scale, dtype=torch.float32, device=x_t.device).expand(x_t.shape[0])
            return self.predict(x_t, t_batch, self.y, scales, alpha, sigma)
        if self.y is not None and (isinstance(scale, torch.Tensor) or scale != 1.0):
            null = torch.full_like(self.y, self.null_class)
            both = self.predict(torch.cat([x_t, x_t]), torch.cat([t_batch, t_batch]), torch.cat([self.y, null]),
                                None, alpha, sigma)
            if isinstance(scale, torch.Tensor):
                scale = scale.to(x_t).view(-1, *([1] * (x_t.dim() - 1)))
            mixed = []
            for prediction in both:
                cond, uncond = prediction.chunk(2)
                mixed.append(uncond + scale * (cond - uncond))
            return tuple(mixed)
        return self.predict(x_t, t_batch, self.y, None, alpha, sigma)


def gaussian_like(x: torch.Tensor, generator) -> torch.Tensor:
    """Standard normal noise shaped like x, from one generator, or from one generator per image (a list):
    then each image's noise is the same whatever batch it is drawn in (see pipeline.generate)."""
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
    evaluations: Callable[[int], int] = lambda steps: steps  # its network calls for a number of steps
    deterministic: bool = False  # no noise drawn after the first: the same x always walks the same path

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
