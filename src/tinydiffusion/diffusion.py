"""The Gaussian diffusion process: noising, the training loss, and parameterisation conversions.

The process is *given* the network; it never wraps or owns it. Notation (Ho et al. 2020):
alpha-bar_t = `alphas_cumprod[t]`, x_t = sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) eps.
We also write alpha_t = sqrt(alpha-bar_t) and sigma_t = sqrt(1 - alpha-bar_t) (Kingma et al. 2021).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .config import DiffusionConfig
from .objectives import OBJECTIVES
from .schedules import make_betas

Network = Callable[..., torch.Tensor]  # net(x_t, t, y) -> prediction shaped like x_t


class GaussianDiffusion:
    def __init__(self, config: DiffusionConfig):
        self.config = config
        self.betas = make_betas(config)  # float64 throughout; cast per use
        self.alphas_cumprod = torch.cumprod(1 - self.betas, dim=0)
        self.num_timesteps = config.timesteps
        self.objective = OBJECTIVES[config.objective]()
        self._cache: dict[torch.device, dict[str, torch.Tensor]] = {}

    # --- per-device float32 views of the schedule -----------------------------------------

    def _table(self, device: torch.device) -> dict[str, torch.Tensor]:
        if device not in self._cache:
            ab = self.alphas_cumprod
            self._cache[device] = {
                "alpha": ab.sqrt().float().to(device),
                "sigma": (1 - ab).sqrt().float().to(device),
                "snr": (ab / (1 - ab)).float().to(device),
            }
        return self._cache[device]

    def _at(self, name: str, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Schedule value `name` at integer timesteps t [B], shaped to broadcast against x."""
        values = self._table(x.device)[name][t.long()]
        return values.view(-1, *([1] * (x.dim() - 1)))

    def alpha_sigma(self, t: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._at("alpha", t, x), self._at("sigma", t, x)

    def draw_timesteps(self, batch: int, generator: torch.Generator, device) -> torch.Tensor:
        """Integer steps for a training batch, as diffusion.timestep_sampling says: uniform (Ho et al. 2020),
        or logit-normal (Esser et al. 2024, eq. 19), which trains the middle noise levels more often."""
        if self.config.timestep_sampling == "uniform":
            return torch.randint(0, self.num_timesteps, (batch,), generator=generator, device=device)
        u = torch.randn(batch, generator=generator, device=device) * self.config.logit_std + self.config.logit_mean
        return (torch.sigmoid(u) * self.num_timesteps).long().clamp(max=self.num_timesteps - 1)

    # --- forward process --------------------------------------------------------------------

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Sample q(x_t | x_0) in closed form (Ho et al. 2020, eq. 4)."""
        alpha, sigma = self.alpha_sigma(t, x0)
        return alpha * x0 + sigma * noise

    # --- what the network predicts: the objective (objectives/) --------------------------------

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network is trained to output at integer steps t."""
        alpha, sigma = self.alpha_sigma(t, x0)
        return self.objective.target(x0, noise, alpha, sigma)

    def predict_eps_and_x0(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        """Turn the network's raw output at integer steps t into (eps, x_0) predictions."""
        alpha, sigma = self.alpha_sigma(t, x_t)
        return self.eps_and_x0_from_output(output, x_t, alpha, sigma)

    def eps_and_x0_from_output(self, output, x_t, alpha, sigma):
        """Same, for given alpha/sigma (samplers that evaluate between the integer steps use this)."""
        return self.objective.eps_and_x0(output, x_t, alpha, sigma)

    # --- training ---------------------------------------------------------------------------

    def loss_weight(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-sample loss weight. Min-SNR-gamma (Hang et al. 2023, eq. 11 and sec. 3.4).

        The paper's weight on the x_0 error is min(SNR, gamma). Each objective's squared error is a
        rescaled x_0 error (||eps - eps'||^2 = SNR ||x0 - x0'||^2, for one), so its weight is min(SNR, gamma)
        divided by that scale, which the objective gives.
        """
        if self.config.loss_weighting == "none":
            return torch.ones(x.shape[0], device=x.device).view(-1, *([1] * (x.dim() - 1)))
        snr = self._at("snr", t, x)
        return snr.clamp(max=self.config.min_snr_gamma) / self.objective.error_scale(snr)

    def training_loss(
        self,
        net: Network | nn.Module,
        x0: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor,
        y: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean weighted squared error of the network's prediction (Ho et al. 2020, eq. 14).

        t and noise are passed in (not drawn here) so callers control the randomness: that keeps a
        run reproducible and lets several processes share one global batch's draws.
        """
        x_t = self.q_sample(x0, t, noise)
        prediction = net(x_t, t.float(), y)
        error = (prediction.float() - self.target(x0, noise, t)) ** 2
        return (self.loss_weight(t, x0) * error).mean()
