"""Spacing functions: which noise levels a sampler visits, from the process and a number of steps, as a list of
Levels from the noisiest down to the clean image (base.CLEAN)."""

from __future__ import annotations

from ..schedules import timestep_spacing
from .base import CLEAN, Level


def uniform_levels(diffusion, steps: int, *, spacing: str = "trailing") -> list[Level]:
    """A subset of the process's T steps, chosen as `spacing` says (leading, trailing or linspace; Lin et al.
    2023, table 2), with each step's alpha(t) and sigma(t) at its time t = (k + 1) / T."""
    chosen = timestep_spacing(diffusion.num_timesteps, steps, spacing)
    return [Level(step, *diffusion.alpha_sigma_at(float(diffusion.step_time(step)))) for step in chosen] + [CLEAN]


def karras_sigmas(sigma_min: float, sigma_max: float, steps: int, rho: float = 7.0) -> list[float]:
    """Karras et al. 2022, eq. 5: sigmas evenly spaced in sigma^(1/rho), then a final 0."""
    if steps == 1:
        return [sigma_max, 0.0]
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return [(hi + i / (steps - 1) * (lo - hi)) ** rho for i in range(steps)] + [0.0]


def karras_levels(diffusion, steps: int, *, rho: float = 7.0, sigma_max: float = 80.0) -> list[Level]:
    """Levels evenly spaced in (sigma / alpha)^(1 / rho) (Karras et al. 2022, eq. 5), between the process's
    lowest noise level and its highest, capped at `sigma_max`: the cosine schedule's last step has
    sigma / alpha ~ 2e4, and spacing steps from there wastes most of them where the image is pure noise
    anyway. Karras et al. 2022 (table 1) start at 80 for data in [-1, 1]; x is still noise there."""
    lowest, highest = diffusion.noise_range()
    levels = []
    for noise in karras_sigmas(lowest, min(highest, sigma_max), steps, rho)[:-1]:
        t = float(diffusion.network_time(diffusion.time_of_noise(noise)))
        alpha = (1.0 + noise**2) ** -0.5
        levels.append(Level(t, alpha, noise * alpha))
    return levels + [CLEAN]
