"""How training draws the time t of each image (diffusion.timestep_sampling): one function each, given the process
and returning float64 times in (0, 1], and one line in TIMESTEP_SAMPLINGS. config.py reads it for the field's help
and checks, and `train --help` imports no torch, so the functions import torch where they use it."""

from __future__ import annotations

from .fields import Choice


def uniform(diffusion, batch: int, generator, device):
    """A uniformly drawn step (Ho et al. 2020)."""
    import torch

    steps = torch.randint(0, diffusion.num_timesteps, (batch,), generator=generator, device=device)
    return diffusion.step_time(steps)


def logit_normal(diffusion, batch: int, generator, device):
    """A step at sigmoid(N(logit_mean, logit_std)) of the way (Esser et al. 2024, eq. 19), which trains the middle
    noise levels more often."""
    import torch

    d, T = diffusion.config, diffusion.num_timesteps
    u = torch.randn(batch, generator=generator, device=device)
    steps = (torch.sigmoid(u * d.logit_std + d.logit_mean) * T).long().clamp(max=T - 1)
    return diffusion.step_time(steps)


def log_normal(diffusion, batch: int, generator, device):
    """EDM's log(sigma / alpha) ~ N(lognormal_mean, lognormal_std) (Karras et al. 2022, table 1), at any time
    between the steps."""
    import torch

    d = diffusion.config
    u = torch.randn(batch, generator=generator, device=device)
    return diffusion.time_of_noise((u.double() * d.lognormal_std + d.lognormal_mean).exp())


TIMESTEP_SAMPLINGS: dict[str, Choice] = {
    "uniform": Choice(uniform, "a step drawn uniformly, Ho et al. 2020"),
    "logit-normal": Choice(logit_normal, "Esser et al. 2024"),
    "log-normal": Choice(log_normal, "in the noise level, as EDM, Karras et al. 2022"),
}
