"""The Gaussian diffusion process: noising, the training loss, and parameterisation conversions.

The process is *given* the network; it never wraps or owns it. It lives in continuous time t in [0, 1]:
x_t = alpha(t) x_0 + sigma(t) eps with alpha^2 + sigma^2 = 1 (Kingma et al. 2021), t = 0 the clean image and
t = 1 the end of the forward process. A schedule of T discrete steps (Ho et al. 2020; `alphas_cumprod[k]` is
their alpha-bar) is a special case: step k sits at t = (k + 1) / T, where alpha and sigma are the table's
exactly. Between those points the process interpolates the noise level log(sigma / alpha) (the log of EDM's
sigma, Karras et al. 2022), the scale on which samplers and EDM's training draw place their noise levels.
The network is conditioned on its time as the step index t T - 1, the number it was always trained on.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .config import DiffusionConfig
from .loss_weighting import LOSS_WEIGHTINGS
from .objectives import OBJECTIVES
from .schedules import make_betas
from .timestep_sampling import TIMESTEP_SAMPLINGS

Network = Callable[..., torch.Tensor]  # net(x_t, t, y) -> prediction shaped like x_t

SNAP = 1e-3  # a time within this many steps of a grid point is that point (float32 times carry ~1e-4 error)


class GaussianDiffusion:
    def __init__(self, config: DiffusionConfig):
        self.config = config
        self.betas = make_betas(config)  # float64 throughout; cast per use
        self.alphas_cumprod = torch.cumprod(1 - self.betas, dim=0)
        self.num_timesteps = config.timesteps
        self.objective = OBJECTIVES[config.objective]()
        self._cache: dict[torch.device, dict[str, torch.Tensor]] = {}

    # --- time ---------------------------------------------------------------------------------

    def step_time(self, step) -> torch.Tensor:
        """The time t of discrete step k (0-based): (k + 1) / T, in float64."""
        return (torch.as_tensor(step, dtype=torch.float64) + 1) / self.num_timesteps

    def network_time(self, t: torch.Tensor) -> torch.Tensor:
        """What the network's time embedding is given at time t: the step index t T - 1, exact at the steps."""
        return self._position(t).float()

    def _position(self, t) -> torch.Tensor:
        """t T - 1 in float64, snapped to the nearest step within SNAP and clamped to [0, T - 1]: below the first
        step only t = 0 (the clean image) exists, and samplers never ask the network there."""
        position = torch.as_tensor(t, dtype=torch.float64) * self.num_timesteps - 1
        nearest = position.round()
        position = torch.where((position - nearest).abs() < SNAP, nearest, position)
        return position.clamp(0, self.num_timesteps - 1)

    def _table(self, device: torch.device) -> dict[str, torch.Tensor]:
        """The schedule's values at its steps, in float64 on `device`; made once per device, so nothing
        during training moves data between host and device (a CUDA graph can hold every lookup)."""
        if device not in self._cache:
            ab = self.alphas_cumprod
            log_noise = 0.5 * ((1 - ab) / ab).log()  # log(sigma / alpha); +inf at SNR 0
            table = {"alpha": ab.sqrt(), "sigma": (1 - ab).sqrt(), "snr": ab / (1 - ab), "log_noise": log_noise,
                     "finite_log_noise": log_noise[torch.isfinite(log_noise)]}
            self._cache[device] = {name: values.to(device) for name, values in table.items()}
        return self._cache[device]

    def _values(self, t: torch.Tensor, device) -> dict[str, torch.Tensor]:
        """alpha, sigma and SNR at times t, in float64: the table's own values at the steps, and in between
        interpolated linearly in log(sigma / alpha)."""
        table = self._table(device)
        position = self._position(t.to(device))
        low = position.floor().long()
        high = (low + 1).clamp(max=self.num_timesteps - 1)
        w = position - low
        noise = torch.exp(table["log_noise"][low] * (1 - w) + table["log_noise"][high] * w)  # sigma / alpha
        between = {"alpha": torch.rsqrt(1 + noise**2), "sigma": torch.rsqrt(1 + noise**-2), "snr": noise**-2}
        return {name: torch.where(w == 0, table[name][low], value) for name, value in between.items()}

    def _shaped(self, t: torch.Tensor, x: torch.Tensor, *names: str) -> tuple[torch.Tensor, ...]:
        """Schedule values at times t [B], in float32, shaped to broadcast against x: one lookup for all."""
        values = self._values(t, x.device)
        return tuple(values[name].float().view(-1, *([1] * (x.dim() - 1))) for name in names)

    def alpha_sigma(self, t: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._shaped(t, x, "alpha", "sigma")

    def alpha_sigma_at(self, t: float) -> tuple[float, float]:
        """alpha(t), sigma(t) as Python floats (t = 0: the clean image, 1 and 0)."""
        if t <= 0:
            return 1.0, 0.0
        values = self._values(torch.tensor([float(t)], dtype=torch.float64), torch.device("cpu"))
        return float(values["alpha"]), float(values["sigma"])

    def noise_range(self) -> tuple[float, float]:
        """The lowest and highest finite sigma / alpha of the process (a zero-terminal-SNR end is infinite)."""
        finite = self._table(torch.device("cpu"))["finite_log_noise"]
        return float(finite[0].exp()), float(finite[-1].exp())

    def time_of_noise(self, noise) -> torch.Tensor:
        """The inverse: the time t at which sigma / alpha equals `noise` (EDM's sigma), from the first step's
        level up to the last finite one; float64, interpolated in log(sigma / alpha) like the rest."""
        target = torch.as_tensor(noise, dtype=torch.float64).log()
        finite = self._table(target.device)["finite_log_noise"]
        target = target.clamp(finite[0], finite[-1])
        high = torch.searchsorted(finite, target).clamp(1, len(finite) - 1)
        low_value, high_value = finite[high - 1], finite[high]
        w = ((target - low_value) / (high_value - low_value)).clamp(0, 1)
        return self.step_time(high - 1 + w)

    def draw_times(self, batch: int, generator: torch.Generator, device) -> torch.Tensor:
        """A training batch's times t, in float64, drawn as diffusion.timestep_sampling says (timestep_sampling.py)."""
        return TIMESTEP_SAMPLINGS[self.config.timestep_sampling].run(self, batch, generator, device)

    # --- forward process --------------------------------------------------------------------

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Sample q(x_t | x_0) in closed form (Ho et al. 2020, eq. 4)."""
        alpha, sigma = self.alpha_sigma(t, x0)
        return alpha * x0 + sigma * noise

    # --- what the network predicts: the objective (objectives/) --------------------------------

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network is trained to output at times t."""
        alpha, sigma = self.alpha_sigma(t, x0)
        return self.objective.target(x0, noise, alpha, sigma)

    def predict_eps_and_x0(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        """Turn the network's raw output at times t into (eps, x_0) predictions."""
        alpha, sigma = self.alpha_sigma(t, x_t)
        return self.eps_and_x0_from_output(output, x_t, alpha, sigma)

    def eps_and_x0_from_output(self, output, x_t, alpha, sigma):
        """Same, for given alpha and sigma (the samplers know theirs)."""
        return self.objective.eps_and_x0(output, x_t, alpha, sigma)

    # --- training ---------------------------------------------------------------------------

    def loss_weight(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-sample loss weight, as diffusion.loss_weighting says (loss_weighting.py: none, or Min-SNR-gamma)."""
        (snr,) = self._shaped(t, x, "snr")
        return LOSS_WEIGHTINGS[self.config.loss_weighting].run(snr, self)

    def training_loss(self, net: Network, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                      y: torch.Tensor | None = None) -> torch.Tensor:
        """Mean weighted squared error of the network's prediction (Ho et al. 2020, eq. 14). t and noise are passed
        in, not drawn here, so a run is reproducible and several processes share one global batch's draws."""
        alpha, sigma, snr = self._shaped(t, x0, "alpha", "sigma", "snr")  # one schedule lookup per step
        x_t = alpha * x0 + sigma * noise  # q_sample
        prediction = net(x_t, self.network_time(t), y)
        error = (prediction.float() - self.objective.target(x0, noise, alpha, sigma)) ** 2
        return (LOSS_WEIGHTINGS[self.config.loss_weighting].run(snr, self) * error).mean()
