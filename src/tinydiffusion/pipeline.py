"""The short public API: load a trained model and generate images with any sampler.

    model = load_model()                       # the bundled Fashion-MNIST model
    images, labels = generate(model, 16, classes=[7] * 16, sampler="dpmpp-2m", steps=20)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from .checkpoint import build_and_load, load_config, resolve_checkpoint
from .config import RunConfig
from .data import NAMED, class_aliases, class_index, to_pixels
from .diffusion import GaussianDiffusion
from .errors import UserError
from .samplers import DEFAULT_STEPS, Denoiser, get_sampler

# The classifier-free guidance scale used when none is given, for class-conditional models: the
# scale with the lowest FD among those whose samples the classifier assigns to the requested class
# at least 90% of the time, measured on the bundled model (docs/guidance.md: 1.5 gives FD 2.05 and
# 94% class accuracy; 2 gives 2.16 and 99%; N = 300, so the two FDs are within sampling noise).
DEFAULT_GUIDANCE = 1.5


@dataclass
class Model:
    net: torch.nn.Module
    diffusion: GaussianDiffusion
    config: RunConfig
    source: Path

    @property
    def num_classes(self) -> int:
        return self.config.net.num_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        """The names of the classes the model was trained on (numbers where a run did not record them)."""
        if self.num_classes == 0:
            return ()
        named = NAMED.get(self.config.data.source)
        names = self.config.data.class_names or (named.class_names if named else ())
        return tuple(names) if len(names) == self.num_classes else tuple(str(i) for i in range(self.num_classes))

    def class_index(self, name_or_index: str) -> int:
        """A class by its name (as the model's data named it) or index; one sentence if there is none."""
        return class_index(name_or_index, self.class_names, class_aliases(self.config.data.source))


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu or cuda.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("CUDA was asked for but no GPU is available; use --device cpu.")
    return device


def load_model(checkpoint: str | Path | None = None, device: str = "auto") -> Model:
    """Rebuild the network from the config stored beside the weights, and load the (EMA) weights."""
    weights_path, config_path = resolve_checkpoint(checkpoint)
    config = load_config(config_path)
    net = build_and_load(config.net, weights_path)
    net.eval().to(pick_device(device))
    return Model(net, GaussianDiffusion(config.diffusion), config, weights_path)


def resolve_labels(model: Model, num: int, classes: list[int] | None) -> torch.Tensor | None:
    """Labels for `num` samples: the requested classes cycled, every class in turn, or None."""
    if model.num_classes == 0:
        if classes:
            raise UserError("this model is unconditional; it cannot generate a requested class (drop --class).")
        return None
    classes = classes if classes else list(range(model.num_classes))
    for c in classes:
        if not 0 <= c < model.num_classes:
            raise UserError(f"class {c} is out of range for a model of {model.num_classes} classes.")
    return torch.tensor([classes[i % len(classes)] for i in range(num)], dtype=torch.long)


def generate(model: Model, num: int, *, classes: list[int] | None = None, sampler: str = "ddim",
             steps: int | None = None, guidance: float = 1.0, seed: int = 0, batch_size: int = 500,
             progress: bool = False, callback=None, **sampler_options) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Generate `num` images; returns (uint8 [N, C, H, W], labels [N] or None).

    The noise for each batch comes from one seeded generator, so a seed gives the same images.
    """
    sample_fn = get_sampler(sampler)
    steps = steps if steps is not None else (DEFAULT_STEPS[sampler] or model.diffusion.num_timesteps)
    if not 1 <= steps <= model.diffusion.num_timesteps:
        raise UserError(f"--steps must be between 1 and {model.diffusion.num_timesteps} (the model's T), not {steps}.")
    if num < 1:
        raise UserError(f"the number of images must be at least 1, not {num}.")
    if guidance != 1.0 and model.num_classes == 0:
        raise UserError("guidance needs a class-conditional model; this one is unconditional.")
    labels = resolve_labels(model, num, classes)
    device = next(model.net.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    net_cfg = model.config.net
    shape = (net_cfg.in_channels, net_cfg.image_size, net_cfg.image_size)
    images = []
    bar = tqdm(total=num, desc=f"sampling ({sampler}, {steps} steps)", unit="img", disable=not progress)
    for start in range(0, num, batch_size):
        n = min(batch_size, num - start)
        noise = torch.randn((n, *shape), generator=generator, device=device)
        y = labels[start:start + n].to(device) if labels is not None else None
        denoise = Denoiser(model.net, model.diffusion, y, guidance, null_class=net_cfg.num_classes)
        x0 = sample_fn(denoise, noise, model.diffusion, steps, callback=callback, generator=generator,
                       **sampler_options)
        images.append(to_pixels(x0).cpu())
        bar.update(n)
    bar.close()
    return torch.cat(images), labels
