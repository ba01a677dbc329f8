"""The network as the samplers call it, guidance included: torch at import, so apart from the registry (base.py)."""

from __future__ import annotations

import torch


class Denoiser:
    """(x_t, t, alpha, sigma) -> (eps, x0), with guidance at a scale that is a float or one per image.

    Classifier-free guidance (Ho & Salimans 2022, eq. 6) mixes the conditional and unconditional predictions, run as
    one batch, as uncond + scale * (cond - uncond): scale 1 is the conditional model, 0 the unconditional one. Every
    objective's (eps, x0) is affine in the network's output, so mixing the predictions is mixing the outputs. A
    network that takes the scale as an input (`guidance_input`, a distilled student) gives the guided output in one
    call. Autoguidance (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself", eq. 1) guides
    with a weaker model of the same task instead (`guide`, its own Denoiser), both conditional: guide + scale *
    (model - guide). `predict` is the one place the network is run; another runtime (export/runtime.py) replaces it
    and keeps the guidance. `evaluations` counts network calls.
    """

    def __init__(self, net, diffusion, y: torch.Tensor | None = None, guidance: float | torch.Tensor = 1.0,
                 null_class: int | None = None, guidance_input: bool = False, guide: Denoiser | None = None):
        self.net, self.diffusion, self.y, self.guidance = net, diffusion, y, guidance
        self.null_class, self.guidance_input, self.guide = null_class, guidance_input, guide
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
        if isinstance(scale, torch.Tensor):
            scale = scale.to(x_t).view(-1, *([1] * (x_t.dim() - 1)))
        if self.guide is not None:
            strong, weak = self.predict(x_t, t_batch, self.y, None, alpha, sigma), self.guide(x_t, t, alpha, sigma)
            return tuple(w + scale * (s - w) for s, w in zip(strong, weak, strict=True))
        if self.y is not None and (isinstance(scale, torch.Tensor) or scale != 1.0):
            null = torch.full_like(self.y, self.null_class)
            both = self.predict(torch.cat([x_t, x_t]), torch.cat([t_batch, t_batch]), torch.cat([self.y, null]),
                                None, alpha, sigma)
            halves = (prediction.chunk(2) for prediction in both)
            return tuple(uncond + scale * (cond - uncond) for cond, uncond in halves)
        return self.predict(x_t, t_batch, self.y, None, alpha, sigma)
