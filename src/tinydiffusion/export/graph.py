"""The network and the process's conversion as one module to export: (x, t, y[, guidance]) -> (x0, eps).

An exported model has to be usable by a sampler that knows nothing of tinydiffusion, so its inputs and outputs are
the process's, not the network's: t is the continuous time in [0, 1] (diffusion.py), and the outputs are the
denoised image and the noise, whatever the objective, with x = alpha(t) x0 + sigma(t) eps. Inside, t becomes the
network's step index and the schedule's alpha(t), sigma(t) by the same rule as GaussianDiffusion (the step's own
values on the steps, linear in log(sigma / alpha) between them), in float32, and the network's output becomes
(x0, eps) through the objective's own `eps_and_x0`. Nothing is clipped.

A latent model's denoiser works on latents; its decoder is a second module to export (DecoderGraph): the run's
standardisation undone and the autoencoder's decoder, z -> image, so that a runtime samples with the denoiser and
decodes once at the end, knowing nothing of the latents' statistics.
"""

from __future__ import annotations

import torch
from torch import nn

from ..autoencoders import denormalise, load_autoencoder
from ..diffusion import SNAP, GaussianDiffusion


class DenoiserGraph(nn.Module):
    """forward(x [N, C, H, W], t [N], y [N] int64, guidance [N] for a student) -> (x0, eps), both [N, C, H, W]."""

    def __init__(self, net: nn.Module, diffusion: GaussianDiffusion, guidance_input: bool = False):
        super().__init__()
        self.net, self.objective, self.guidance_input = net, diffusion.objective, guidance_input
        self.num_timesteps = diffusion.num_timesteps
        ab = diffusion.alphas_cumprod  # float64; the tables are cast once
        self.register_buffer("alpha_table", ab.sqrt().float())
        self.register_buffer("sigma_table", (1 - ab).sqrt().float())
        self.register_buffer("log_noise_table", (0.5 * ((1 - ab) / ab).log()).float())  # +inf at SNR 0

    def schedule(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(the network's time, alpha, sigma) at times t [N], as GaussianDiffusion computes them in float64."""
        position = t.float() * self.num_timesteps - 1
        nearest = torch.round(position)
        position = torch.where((position - nearest).abs() < SNAP, nearest, position)
        position = position.clamp(0, self.num_timesteps - 1)
        low = position.floor()
        w = position - low
        low_index = low.long()
        high_index = (low_index + 1).clamp(max=self.num_timesteps - 1)
        log_noise = self.log_noise_table[low_index] * (1 - w) + self.log_noise_table[high_index] * w
        noise = torch.exp(log_noise)  # sigma / alpha
        on_step = w == 0  # there the table's own values (and no inf * 0 at a zero-SNR last step)
        alpha = torch.where(on_step, self.alpha_table[low_index], torch.rsqrt(1 + noise**2))
        sigma = torch.where(on_step, self.sigma_table[low_index], torch.rsqrt(1 + noise**-2))
        return position, alpha, sigma

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, guidance: torch.Tensor | None = None):
        position, alpha, sigma = self.schedule(t)
        output = self.net(x, position, y, *([guidance] if self.guidance_input else []))
        shape = (-1, *([1] * (x.dim() - 1)))
        eps, x0 = self.objective.eps_and_x0(output.float(), x, alpha.view(shape), sigma.view(shape))
        return x0, eps


class DecoderGraph(nn.Module):
    """forward(z [N, c, h, w], a latent model's sample in its network's space) -> image [N, 3, H, W] in [-1, 1]: each
    channel z * std + mean with the run's statistics (autoencoders.denormalise), then the autoencoder's decoder, as
    autoencoders.decode does it."""

    def __init__(self, data):
        super().__init__()
        self.autoencoder = load_autoencoder(data.autoencoder, "cpu")
        self.register_buffer("mean", torch.tensor(data.latent_mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(data.latent_std, dtype=torch.float32))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.decode(denormalise(z, self.mean, self.std))
