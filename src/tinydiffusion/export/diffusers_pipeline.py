"""The pipeline of a folder that `tinydiffusion export --format diffusers` writes, where this file is pipeline.py.
It needs torch and diffusers only: no tinydiffusion, which never imports it (the export copies its text).

    pipe = DiffusionPipeline.from_pretrained(FOLDER, trust_remote_code=True)
    images = pipe(class_labels=["sneaker"] * 4, generator=torch.Generator().manual_seed(0)).images

`denoiser` is tinydiffusion's network as a diffusers ModelMixin (the folder's denoiser/ module), `scheduler` a stock
diffusers scheduler whose prediction_type names what the pipeline hands it, and for a latent model `vae` its
autoencoder's decoder (the folder's vae/ module), which the samples are decoded by at the end, after the run's
standardisation of the latents is undone. model_index.json holds the objective, the class names, the steps and
guidance tinydiffusion samples with by default, whether those steps are the only ones it samples with (a distilled
student's), and a latent model's per-channel latent statistics.
"""

from __future__ import annotations

import inspect
import math
import operator

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput, ModelMixin, SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

OUTPUT_TYPES = ("pil", "np", "pt", "latent")
OBJECTIVE = None  # for flow or EDM, which diffusers has no name for: the export appends its class from objectives/


def whole(value, name: str) -> int:
    """An argument that must be a whole number (a Python or numpy integer), refused in one sentence otherwise: a
    float, True or a string would otherwise be rounded, counted as 1 or fail deep inside the sampling loop."""
    try:
        if not isinstance(value, bool):
            return operator.index(value)
    except TypeError:
        pass
    raise ValueError(f"{name} must be a whole number, not {value!r}.")


class TinyDiffusionPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "denoiser->vae"
    _optional_components = ["vae"]  # a pixel model's folder has none

    def __init__(self, denoiser: ModelMixin, scheduler: SchedulerMixin, vae: ModelMixin | None = None,
                 objective: str = "eps", labels: dict | None = None, steps: int = 20, guidance: float = 1.0,
                 guidance_min: float | None = None, guidance_max: float | None = None, steps_fixed: bool = False,
                 latent_mean: list | None = None, latent_std: list | None = None):
        super().__init__()
        self.register_modules(denoiser=denoiser, scheduler=scheduler, vae=vae)
        self.register_to_config(objective=objective, labels=dict(labels or {}), steps=steps, guidance=guidance,
                                guidance_min=guidance_min, guidance_max=guidance_max, steps_fixed=steps_fixed,
                                latent_mean=latent_mean, latent_std=latent_std)

    def class_tensor(self, class_labels, batch_size: int | None) -> tuple[torch.Tensor | None, int]:
        """The labels of a batch (names or indices, cycled to batch_size; every class in turn if none are given)
        and its size; None for an unconditional model."""
        count = self.denoiser.config.num_classes
        if isinstance(class_labels, (int, str)):
            class_labels = [class_labels]
        class_labels = [] if class_labels is None else [c if isinstance(c, str) else whole(c, "a class label")
                                                        for c in class_labels]
        if batch_size is not None and whole(batch_size, "batch_size") < 1:
            raise ValueError(f"batch_size must be 1 or more, not {batch_size}.")
        n = batch_size or len(class_labels) or 1
        if count == 0:
            if class_labels:
                raise ValueError("this model is unconditional; it takes no class_labels.")
            return None, n
        wanted = [self.config.labels.get(c, c) for c in class_labels or range(count)]
        for c in wanted:
            if isinstance(c, str) or not 0 <= c < count:
                names = ", ".join(self.config.labels)
                raise ValueError(f"class {c!r} is not one of the model's {count} classes ({names}).")
        return torch.tensor([wanted[i % len(wanted)] for i in range(n)], device=self.device), n

    def alpha_sigma(self, t) -> tuple[float, float]:
        """alpha(t), sigma(t) at a step index t of the scheduler's table; between two steps, linear in
        log(sigma / alpha), as tinydiffusion's process (and diffusers' sigma-to-t) interpolate."""
        table = self.scheduler.alphas_cumprod.double().cpu()
        position = min(max(float(t), 0.0), len(table) - 1.0)
        low = int(math.floor(position))
        if position == low:
            return math.sqrt(float(table[low])), math.sqrt(1.0 - float(table[low]))
        high = min(low + 1, len(table) - 1)
        log_noise = 0.5 * torch.log((1 - table[[low, high]]) / table[[low, high]])
        noise = math.exp(float(log_noise[0]) * (high - position) + float(log_noise[1]) * (position - low))
        return 1 / math.sqrt(1 + noise**2), noise / math.sqrt(1 + noise**2)

    def prediction(self, output: torch.Tensor, x: torch.Tensor, t) -> torch.Tensor:
        """The network's output as the scheduler's prediction_type names it: itself for the eps, x0 and v objectives
        (epsilon, sample, v_prediction); for another, which diffusers has no name for, the x0 it gives (sample), by
        the objective's own conversion (OBJECTIVE)."""
        output = output.float()
        if OBJECTIVE is None:
            return output
        alpha, sigma = self.alpha_sigma(t)
        return OBJECTIVE.eps_and_x0(output, x, alpha, sigma)[1]

    def predict(self, x: torch.Tensor, t, labels: torch.Tensor | None, guidance: float) -> torch.Tensor:
        """The scheduler's model_output at x and step t, with classifier-free guidance (uncond + w (cond - uncond),
        the class and the null class in one batch) or, for a distilled student, w as an input."""
        n, net = x.shape[0], self.denoiser.config
        time = torch.full((n,), float(t), device=x.device)
        if net.guidance_input:
            scales = torch.full((n,), float(guidance), device=x.device)
            return self.prediction(self.denoiser(x, time, labels, scales), x, t)
        if labels is None or guidance == 1.0:
            return self.prediction(self.denoiser(x, time, labels), x, t)
        both, null = torch.cat([x, x]), torch.full_like(labels, net.num_classes)
        output = self.denoiser(both, torch.cat([time, time]), torch.cat([labels, null]))
        cond, uncond = self.prediction(output, both, t).chunk(2)
        return uncond + guidance * (cond - uncond)

    def checked(self, steps: int | None, guidance: float | None, output_type: str) -> tuple[int, float]:
        """The steps and guidance to sample with, each refused in one sentence (ValueError) where tinydiffusion
        refuses it, before any work."""
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be 'pil', 'np', 'pt' or 'latent', not {output_type!r}.")
        steps = self.config.steps if steps is None else whole(steps, "num_inference_steps")
        guidance = self.config.guidance if guidance is None else float(guidance)
        total = self.scheduler.config.num_train_timesteps
        if not 1 <= steps <= total:
            raise ValueError(f"num_inference_steps must be between 1 and {total} (the model's steps), not {steps}.")
        fixed = self.config.steps_fixed and self.config.steps
        if fixed and steps != fixed:
            raise ValueError(f"this student was distilled to sample with {fixed} step{'s' if fixed > 1 else ''}, the "
                             f"only number it samples with, not {steps}; leave num_inference_steps out.")
        low, high = self.config.guidance_min, self.config.guidance_max
        if low is not None and not low <= guidance <= high:
            raise ValueError(f"this student learned guidance scales from {low:g} to {high:g}, not {guidance:g}.")
        if not (math.isfinite(guidance) and guidance >= 0):
            raise ValueError(f"guidance_scale must be a finite number, 0 or more, not {guidance}.")
        return steps, guidance

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """What the sampler ended on -> images in [-1, 1]: a latent model's latents with the run's standardisation
        undone (each channel x * latent_std + latent_mean) and decoded by `vae`; a pixel model's as they are."""
        if self.vae is None:
            return x
        mean, std = (torch.tensor(values, device=x.device, dtype=torch.float32).view(1, -1, 1, 1)
                     for values in (self.config.latent_mean, self.config.latent_std))
        return self.vae.decode(x * std + mean)

    @torch.no_grad()
    def __call__(self, class_labels=None, batch_size: int | None = None, num_inference_steps: int | None = None,
                 guidance_scale: float | None = None, generator=None, latents: torch.Tensor | None = None,
                 output_type: str = "pil", return_dict: bool = True):
        """Images for class_labels (names or indices; every class in turn if none), from `latents` (standard
        normal noise [N, C, H, W], the network's shape: a latent model's latents) or noise drawn with `generator` (one,
        or a list of one per image). The steps and guidance default to tinydiffusion's for the model. output_type:
        "pil", "np" (N, H, W, C in [0, 1]), "pt" (N, C, H, W in [0, 1]) or "latent" (the sampler's result in the
        network's space, unclipped: pixels in [-1, 1], or a latent model's standardised latents, not decoded)."""
        steps, guidance = self.checked(num_inference_steps, guidance_scale, output_type)
        net = self.denoiser.config
        if batch_size is None and latents is not None:
            batch_size = len(latents)
        labels, n = self.class_tensor(class_labels, batch_size)
        shape = (n, net.in_channels, net.image_size, net.image_size)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=self.device, dtype=torch.float32)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents must have the shape {shape}, not {tuple(latents.shape)}.")
        x = latents.to(self.device, torch.float32) * self.scheduler.init_noise_sigma
        self.scheduler.set_timesteps(steps, device=self.device)
        takes_generator = "generator" in inspect.signature(self.scheduler.step).parameters
        extra = {"generator": generator} if takes_generator else {}
        for t in self.progress_bar(self.scheduler.timesteps):
            output = self.predict(self.scheduler.scale_model_input(x, t), t, labels, guidance)
            x = self.scheduler.step(output, t, x, **extra).prev_sample
        if output_type != "latent":
            x = (self.decode(x) / 2 + 0.5).clamp(0, 1)
            if output_type in ("np", "pil"):
                x = x.cpu().permute(0, 2, 3, 1).float().numpy()
            if output_type == "pil":
                x = self.numpy_to_pil(x)
        return ImagePipelineOutput(images=x) if return_dict else (x,)
