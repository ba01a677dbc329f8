"""Samplers: plain functions that turn noise into images with a trained denoiser.

Every sampler has the same signature,

    sample_x(denoise, x, diffusion, steps, *, callback=None, generator=None, **options) -> x_0

where `denoise(x_t, t, alpha, sigma) -> (eps, x0)` is a `Denoiser` (the network plus guidance),
`x` is the starting noise (standard normal), `diffusion` gives the schedule, `steps` is the number
of steps, and `callback(i, t, x_t, x0_pred)` is called after every step (for figures and GIFs).
`generator` draws the noise of stochastic samplers: a torch.Generator, or a list of one per image.
Every sampler ends at t = 0: its last step returns the denoised image, not a noisy one.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import torch

from .diffusion import GaussianDiffusion
from .errors import UserError
from .schedules import timestep_spacing

Callback = Callable[[int, float, torch.Tensor, torch.Tensor], None] | None


class Denoiser:
    """The network as samplers see it: (x_t, t, alpha, sigma) -> (eps, x0), with guidance.

    Classifier-free guidance (Ho & Salimans 2022, eq. 6) mixes the conditional and unconditional
    outputs as uncond + scale * (cond - uncond): scale 1 is the conditional model, 0 the
    unconditional one. Both halves run as one batch. `evaluations` counts network calls.
    """

    def __init__(self, net, diffusion: GaussianDiffusion, y: torch.Tensor | None = None,
                 guidance: float = 1.0, null_class: int | None = None):
        self.net, self.diffusion, self.y, self.guidance = net, diffusion, y, guidance
        self.null_class = null_class
        self.evaluations = 0

    @torch.no_grad()
    def __call__(self, x_t: torch.Tensor, t: float, alpha: float, sigma: float):
        self.evaluations += 1
        t_batch = torch.full((x_t.shape[0],), float(t), device=x_t.device)
        guided = self.y is not None and self.guidance != 1.0
        if guided:
            null = torch.full_like(self.y, self.null_class)
            both = self.net(torch.cat([x_t, x_t]), torch.cat([t_batch, t_batch]), torch.cat([self.y, null]))
            cond, uncond = both.float().chunk(2)
            output = uncond + self.guidance * (cond - uncond)
        else:
            output = self.net(x_t, t_batch, self.y).float()
        return self.diffusion.eps_and_x0_from_output(output, x_t, alpha, sigma)


def gaussian_like(x: torch.Tensor, generator) -> torch.Tensor:
    """Standard normal noise shaped like x, from one generator, or from one generator per image (a list):
    then each image's noise is the same whatever batch it is drawn in (see pipeline.generate)."""
    if isinstance(generator, (list, tuple)):
        return torch.stack([torch.randn(x.shape[1:], generator=g, device=x.device, dtype=x.dtype) for g in generator])
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _alpha_sigma(diffusion: GaussianDiffusion, t: int) -> tuple[float, float]:
    """sqrt(alpha-bar_t), sqrt(1 - alpha-bar_t) as Python floats; t = -1 means the clean image."""
    if t < 0:
        return 1.0, 0.0
    ab = float(diffusion.alphas_cumprod[t])
    return math.sqrt(ab), math.sqrt(1.0 - ab)


def _visited_steps(diffusion, steps: int, spacing: str):
    """(i, t, t_next, alpha, sigma, alpha_next, sigma_next) for each step; t_next = -1 is the clean image."""
    timesteps = timestep_spacing(diffusion.num_timesteps, steps, spacing)
    for i, t in enumerate(timesteps):
        t_next = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        yield (i, t, t_next, *_alpha_sigma(diffusion, t), *_alpha_sigma(diffusion, t_next))


def _clip(x0: torch.Tensor, x_t: torch.Tensor, alpha: float, sigma: float):
    """Clip x_0 to the data range and re-derive eps so (x0, eps) stay consistent with x_t."""
    x0 = x0.clamp(-1.0, 1.0)
    return x0, (x_t - alpha * x0) / sigma


def sample_ddpm(denoise, x, diffusion, steps=None, *, spacing="trailing", clip_x0=True,
                callback: Callback = None, generator=None):
    """Ancestral sampling from the DDPM posterior q(x_{t-1} | x_t, x_0) (Ho et al. 2020, eqs. 6-7).

    With steps < T the chain is respaced (Nichol & Dhariwal 2021, sec. 4): the betas between the
    visited steps follow from alpha-bar. The variance is the posterior's, beta-tilde.
    """
    for i, t, t_prev, alpha, sigma, alpha_prev, _ in _visited_steps(diffusion, steps or diffusion.num_timesteps,
                                                                    spacing):
        eps, x0 = denoise(x, t, alpha, sigma)
        if clip_x0:
            x0, eps = _clip(x0, x, alpha, sigma)
        ab, ab_prev = alpha**2, alpha_prev**2
        beta = 1.0 - ab / ab_prev  # the respaced beta_t
        coef_x0 = alpha_prev * beta / (1.0 - ab)
        coef_xt = math.sqrt(1.0 - beta) * (1.0 - ab_prev) / (1.0 - ab)
        x = coef_x0 * x0 + coef_xt * x
        if t_prev >= 0:
            variance = beta * (1.0 - ab_prev) / (1.0 - ab)
            x = x + math.sqrt(variance) * gaussian_like(x, generator)
        if callback is not None:
            callback(i, t, x, x0)
    return x


def sample_ddim(denoise, x, diffusion, steps=50, *, eta=0.0, spacing="trailing", clip_x0=False,
                callback: Callback = None, generator=None):
    """DDIM (Song et al. 2021, eq. 12): deterministic for eta = 0, DDPM-like for eta = 1 (eq. 16)."""
    for i, t, _, alpha, sigma, alpha_prev, sigma_prev in _visited_steps(diffusion, steps, spacing):
        eps, x0 = denoise(x, t, alpha, sigma)
        if clip_x0:
            x0, eps = _clip(x0, x, alpha, sigma)
        noise_std = eta * (sigma_prev / sigma) * math.sqrt(max(0.0, 1.0 - alpha**2 / alpha_prev**2))
        direction = math.sqrt(max(0.0, sigma_prev**2 - noise_std**2))
        x = alpha_prev * x0 + direction * eps
        if eta > 0:
            x = x + noise_std * gaussian_like(x, generator)
        if callback is not None:
            callback(i, t, x, x0)
    return x


def _log_snr_half(alpha: float, sigma: float) -> float:
    """lambda = log(alpha / sigma); -inf at a zero-terminal-SNR first step (alpha = 0), where the step size
    h is then infinite and the update, expm1(-h) = -1, is DDIM's from pure noise."""
    return math.log(alpha / sigma) if alpha > 0 else -math.inf


def sample_dpmpp_2m(denoise, x, diffusion, steps=20, *, spacing="trailing",
                    callback: Callback = None, generator=None):
    """DPM-Solver++(2M) (Lu et al. 2022, algorithm 2) in data prediction, multistep.

    The first step has no history and the last step (to the clean image, lambda = +inf) is taken
    first-order, the standard final-step handling that keeps few-step sampling stable.
    """
    previous_x0, previous_h = None, None
    for i, t, t_next, alpha, sigma, alpha_next, sigma_next in _visited_steps(diffusion, steps, spacing):
        _, x0 = denoise(x, t, alpha, sigma)
        if t_next < 0:
            x = x0  # lambda_next = inf: the first-order update reduces to the data prediction
        else:
            h = _log_snr_half(alpha_next, sigma_next) - _log_snr_half(alpha, sigma)  # lambda step
            if previous_x0 is None:
                d = x0
            else:
                r = previous_h / h
                d = x0 + (x0 - previous_x0) / (2.0 * r)  # (1 + 1/2r) D_i - (1/2r) D_{i-1}
            x = (sigma_next / sigma) * x - alpha_next * math.expm1(-h) * d
            previous_h = h
        previous_x0 = x0
        if callback is not None:
            callback(i, t, x, x0)
    return x


# --- Karras et al. 2022 (EDM): samplers in the sigma parameterisation ------------------------
# There x = x_0 + sigma n with sigma = sigma_t / alpha_t, so x_edm = x_t / alpha_t; the ODE is
# dx/dsigma = (x - D(x; sigma)) / sigma (Karras et al. 2022, eq. 3 with sigma(t) = t).

def karras_sigmas(sigma_min: float, sigma_max: float, steps: int, rho: float = 7.0) -> list[float]:
    """Karras et al. 2022, eq. 5: sigmas evenly spaced in sigma^(1/rho), then a final 0."""
    if steps == 1:
        return [sigma_max, 0.0]
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return [(hi + i / (steps - 1) * (lo - hi)) ** rho for i in range(steps)] + [0.0]


def _edm_denoise(denoise, diffusion, x_edm: torch.Tensor, edm_sigma: float) -> torch.Tensor:
    """D(x; sigma) through a network trained on discrete VP steps: interpolate t in log-sigma."""
    alpha = 1.0 / math.sqrt(1.0 + edm_sigma**2)
    t = _sigma_to_t(diffusion, edm_sigma)
    _, x0 = denoise(x_edm * alpha, t, alpha, edm_sigma * alpha)
    return x0


def _sigma_to_t(diffusion, edm_sigma: float) -> float:
    log_sigmas = _edm_sigmas(diffusion).log()
    s = math.log(edm_sigma)
    idx = int(torch.searchsorted(log_sigmas, torch.tensor(s, dtype=torch.float64)).clamp(1, len(log_sigmas) - 1))
    lo, hi = float(log_sigmas[idx - 1]), float(log_sigmas[idx])
    w = min(max((s - lo) / (hi - lo), 0.0), 1.0)
    return idx - 1 + w


def _edm_sigmas(diffusion) -> torch.Tensor:
    ab = diffusion.alphas_cumprod
    return ((1 - ab) / ab).sqrt()  # increasing in t; inf at a zero-terminal-SNR last step


def _sigma_range(diffusion, sigma_max_cap: float) -> tuple[float, float]:
    """The schedule's sigma range, the top capped: the cosine schedule's last step has sigma ~ 2e4,
    and spacing steps from there wastes most of them where the image is pure noise anyway. Karras
    et al. 2022 (table 1) start at 80 for data in [-1, 1]; at that level x_T is still noise."""
    sigmas = _edm_sigmas(diffusion)
    finite = sigmas[torch.isfinite(sigmas)]
    return float(finite[0]), min(float(finite[-1]), sigma_max_cap)


def _karras_ode(denoise, x, diffusion, steps, rho, sigma_max, callback: Callback, second_order: bool):
    """Integrate the probability-flow ODE from sigma_max to 0 on Karras sigmas (Euler or Heun)."""
    sigma_min, sigma_max = _sigma_range(diffusion, sigma_max)
    sigmas = karras_sigmas(sigma_min, sigma_max, steps, rho)
    x = x * sigmas[0]
    for i in range(steps):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = _edm_denoise(denoise, diffusion, x, sigma)
        slope = (x - x0) / sigma
        x_euler = x + (sigma_next - sigma) * slope
        if second_order and sigma_next > 0:  # Heun's correction; the last step to sigma = 0 stays Euler
            slope_next = (x_euler - _edm_denoise(denoise, diffusion, x_euler, sigma_next)) / sigma_next
            x = x + (sigma_next - sigma) * 0.5 * (slope + slope_next)
        else:
            x = x_euler
        if callback is not None:
            callback(i, _sigma_to_t(diffusion, sigma), x, x0)
    return x


def sample_euler(denoise, x, diffusion, steps=20, *, rho=7.0, sigma_max=80.0, callback: Callback = None,
                 generator=None):
    """Euler steps of the probability-flow ODE on Karras sigmas (Karras et al. 2022, eq. 3)."""
    return _karras_ode(denoise, x, diffusion, steps, rho, sigma_max, callback, second_order=False)


def sample_heun(denoise, x, diffusion, steps=10, *, rho=7.0, sigma_max=80.0, callback: Callback = None,
                generator=None):
    """Heun's second-order method (Karras et al. 2022, algorithm 1): 2 * steps - 1 evaluations."""
    return _karras_ode(denoise, x, diffusion, steps, rho, sigma_max, callback, second_order=True)


SAMPLERS = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "dpmpp-2m": sample_dpmpp_2m,
    "euler": sample_euler,
    "heun": sample_heun,
}


def get_sampler(name: str):
    if name not in SAMPLERS:
        raise UserError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}.")
    return SAMPLERS[name]


# Keywords every sampler takes; the others in its signature are its own options (eta, spacing, rho, ...).
COMMON_KEYWORDS = {"callback", "generator"}


def sampler_options(name: str) -> dict[str, object]:
    """A sampler's own options and their defaults, read from its signature: each sampler declares them
    there, and generate() and the command line ask here instead of knowing which sampler takes what."""
    parameters = inspect.signature(get_sampler(name)).parameters.values()
    return {p.name: p.default for p in parameters if p.kind is p.KEYWORD_ONLY and p.name not in COMMON_KEYWORDS}


def check_sampler_options(name: str, options: dict) -> None:
    """Refuse options the sampler does not take, in one sentence naming the samplers that do."""
    for option in options:
        if option not in sampler_options(name):
            takers = [other for other in SAMPLERS if option in sampler_options(other)]
            where = f"the {', '.join(takers)} sampler{'s' if len(takers) > 1 else ''} only" if takers else "no sampler"
            raise UserError(f"--{option.replace('_', '-')} applies to {where}.")


def network_evaluations(name: str, steps: int) -> int:
    """How many denoiser calls a sampler makes for `steps` steps."""
    return 2 * steps - 1 if name == "heun" else steps
