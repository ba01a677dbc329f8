"""Samplers: plain functions that turn noise into images with a trained denoiser.

Each sampler is an algorithm (one file here) handed its noise levels by a spacing function (spacing.py),
joined in SAMPLERS. Every one works with any process and objective: it sees only the Levels and
`denoise(x_t, t, alpha, sigma) -> (eps, x0)`, a Denoiser (denoiser.py: the network plus guidance). Adding a
sampler means one file here and one line in SAMPLERS, whose entry declares what the command line, the demo and
the exports read (its default steps, the exports that run it). Nothing here imports torch, so `--help` reads it.
"""

from __future__ import annotations

from ..errors import UserError
from ..schedules import TIMESTEP_SPACINGS
from .base import CLEAN, Level, Sampler, gaussian_like
from .consistency import consistency
from .ddim import ddim
from .ddpm import ddpm
from .dpmpp_2m import dpmpp_2m
from .euler import euler
from .heun import heun
from .spacing import karras_levels, karras_sigmas, uniform_levels

SAMPLERS: dict[str, Sampler] = {
    "ddpm": Sampler(ddpm, uniform_levels, default_steps=None),
    "ddim": Sampler(ddim, uniform_levels, default_steps=50, deterministic=True, web=True, diffusers_order=1),
    "dpmpp-2m": Sampler(dpmpp_2m, uniform_levels, default_steps=20, deterministic=True, web=True, diffusers_order=2),
    "euler": Sampler(euler, karras_levels, default_steps=50, deterministic=True),
    "heun": Sampler(heun, karras_levels, default_steps=10, evaluations=lambda steps: 2 * steps - 1, deterministic=True),
    "consistency": Sampler(consistency, uniform_levels, default_steps=4, students_only=True, web=True),
}

# The sampler options the command line offers as --NAME: (a number's bounds or a text's choices, what it does); their
# type, default and takers are the signatures'. The others (clip_x0, rho, ...) are keywords of generate() and edits.
FLAGS = {
    "eta": ((0, 1), "the noise added at each step, from 0 (deterministic) to 1 (as DDPM)"),
    "spacing": (TIMESTEP_SPACINGS, "which of the model's timesteps are visited"),
}


def get_sampler(name: str) -> Sampler:
    if name not in SAMPLERS:
        raise UserError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}.")
    return SAMPLERS[name]


def sampler_options(name: str) -> dict[str, object]:
    """A sampler's own options and their defaults, as its functions declare them."""
    return get_sampler(name).options()


def check_sampler_options(name: str, options: dict) -> None:
    """Refuse options the sampler does not take, in one sentence naming the samplers that do."""
    for option in options:
        if option not in sampler_options(name):
            takers = [other for other in SAMPLERS if option in sampler_options(other)]
            where = f"the {', '.join(takers)} sampler{'s' if len(takers) > 1 else ''} only" if takers else "no sampler"
            raise UserError(f"--{option.replace('_', '-')} applies to {where}.")


def teacher_samplers() -> tuple[str, ...]:
    """The samplers a distillation teacher may walk its path with: deterministic, on the process's own steps (so a
    student's levels lie on the teacher's)."""
    return tuple(name for name, s in SAMPLERS.items() if s.deterministic and s.spacing is uniform_levels)


def network_evaluations(name: str, steps: int) -> int:
    """How many denoiser calls a sampler makes for `steps` steps."""
    return get_sampler(name).evaluations(steps)


__all__ = ["CLEAN", "FLAGS", "SAMPLERS", "Level", "Sampler", "check_sampler_options", "gaussian_like", "get_sampler",
           "karras_levels", "karras_sigmas", "network_evaluations", "sampler_options", "teacher_samplers",
           "uniform_levels"]
