"""Noise schedules: the betas of the forward Markov chain, in float64, one function each, joined in SCHEDULES.

Everything downstream derives from `alphas_cumprod` (written alpha-bar_t in Ho et al. 2020):
x_t = sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) eps. Adding a schedule means one function and one line in
SCHEDULES. config.py reads SCHEDULES for diffusion.schedule's help and checks, and `train --help` imports no torch,
so the functions import torch where they use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import UserError
from .fields import Choice

if TYPE_CHECKING:
    import torch

    from .config import DiffusionConfig


def linear_betas(timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Ho et al. 2020, sec. 4: betas rising linearly from 1e-4 to 0.02 over T = 1000 steps."""
    import torch

    return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)


def cosine_betas(timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal 2021, eq. 17: alpha-bar(t) = cos^2(((t/T + s) / (1 + s)) * pi/2), and beta_t =
    1 - alpha-bar(t) / alpha-bar(t - 1) clipped at 0.999 to avoid a singularity at t = T."""
    import torch

    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    alpha_bar = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    betas = 1 - alpha_bar[1:] / alpha_bar[:-1]
    return betas.clamp(max=max_beta)


def rectified_flow_betas(timesteps: int) -> torch.Tensor:
    """The straight path of rectified flow (Liu et al. 2022), x_tau = (1 - tau) x0 + tau eps at tau = t / T,
    as a variance-preserving schedule: scaled by 1 / sqrt((1 - tau)^2 + tau^2), it has
    alpha-bar = (1 - tau)^2 / ((1 - tau)^2 + tau^2), and SNR 0 at the last step. Use with objective "flow"."""
    import torch

    tau = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    alpha_bar = (1 - tau) ** 2 / ((1 - tau) ** 2 + tau**2)
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(min=0.0, max=1.0)


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2023, algorithm 1: shift and scale sqrt(alpha-bar) so the last step has SNR 0 and x_T is pure
    noise, as sampling assumes. Needs an objective defined at SNR 0 (v, x0, flow; not eps)."""
    import torch

    sqrt_ab = torch.cumprod(1 - betas, dim=0).sqrt()
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    sqrt_ab = (sqrt_ab - last) * first / (first - last)
    alphas_cumprod = sqrt_ab**2
    alphas = torch.cat([alphas_cumprod[:1], alphas_cumprod[1:] / alphas_cumprod[:-1]])
    return 1 - alphas


def shift_logsnr(betas: torch.Tensor, shift: float) -> torch.Tensor:
    """The schedule whose log-SNR, log(alpha-bar / (1 - alpha-bar)), is this one's plus `shift` at every step.

    Hoogeboom et al. 2023 (simple diffusion, sec. 3.1): at s times a schedule's base resolution, an image's average
    over s x s blocks keeps s^2 times the SNR, so a larger image needs the log-SNR lowered by 2 ln s to be as hard to
    denoise. alpha-bar' = sigmoid(logit(alpha-bar) + shift), written without the logit so that alpha-bar = 0 stays 0.
    """
    import torch

    alphas_cumprod = torch.cumprod(1 - betas, dim=0)
    shifted = alphas_cumprod / (alphas_cumprod + (1 - alphas_cumprod) * math.exp(-shift))
    previous = torch.cat([shifted.new_ones(1), shifted[:-1]])
    return 1 - shifted / previous


@dataclass(frozen=True)
class Schedule(Choice):
    reaches_zero_snr: bool = False  # SNR 0 at the last step, where some objectives are undefined


SCHEDULES: dict[str, Schedule] = {
    "linear": Schedule(lambda d: linear_betas(d.timesteps, d.beta_start, d.beta_end), "Ho et al. 2020"),
    "cosine": Schedule(lambda d: cosine_betas(d.timesteps, d.cosine_s), "Nichol & Dhariwal 2021"),
    "rectified-flow": Schedule(lambda d: rectified_flow_betas(d.timesteps), "the straight path of flow matching, "
                               "Liu et al. 2022; use objective flow", reaches_zero_snr=True),
}


def make_betas(config: DiffusionConfig) -> torch.Tensor:
    """The betas of the config's schedule, its log-SNR shifted and rescaled to zero terminal SNR if it asks,
    checked to lie in [0, 1]."""
    import torch

    if config.schedule not in SCHEDULES:
        raise UserError(f"unknown noise schedule {config.schedule!r}; use {', '.join(SCHEDULES)}.")
    betas = SCHEDULES[config.schedule].run(config)
    if config.logsnr_shift:
        betas = shift_logsnr(betas, config.logsnr_shift)
    if config.zero_terminal_snr:
        betas = rescale_zero_terminal_snr(betas)
    if not (torch.isfinite(betas).all() and (betas >= 0).all() and (betas <= 1).all()):
        # a config from disk is untrusted: a schedule out of [0, 1] would sample NaNs, silently
        raise UserError(f"the {config.schedule} schedule with these settings gives betas outside [0, 1]; "
                        "check the diffusion section of the config.")
    return betas


TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")  # timestep_spacing's choices


def timestep_spacing(num_train_steps: int, num_steps: int, spacing: str = "trailing") -> list[int]:
    """The descending subset of training timesteps a sampler visits (Lin et al. 2023, table 2):
    "leading" (DDIM's original): 0, k, 2k, ... so the first step starts below T - 1;
    "trailing": counted back from T - 1, so sampling starts from the noisiest step;
    "linspace": evenly spaced from T - 1 down to 0, rounded.
    """
    import torch

    if not 1 <= num_steps <= num_train_steps:
        raise UserError(f"the number of sampling steps must be between 1 and {num_train_steps}, not {num_steps}.")
    T = num_train_steps
    if spacing == "leading":
        stride = T // num_steps
        steps = [i * stride for i in range(num_steps)]
    elif spacing == "trailing":
        stride = T / num_steps
        steps = [round(T - i * stride) - 1 for i in range(num_steps)][::-1]
    elif spacing == "linspace":
        steps = torch.linspace(0, T - 1, num_steps, dtype=torch.float64).round().long().tolist()
    else:
        raise UserError(f"unknown timestep spacing {spacing!r}; use leading, trailing or linspace.")
    return sorted(set(steps), reverse=True)
