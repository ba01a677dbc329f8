"""The pretrained autoencoders a run may diffuse in the latent space of (`train --autoencoder NAME`, recorded as
data.autoencoder): a registry, one line each, free of torch so that the config and `--help` read it; and the one
place that maps latents to the network's space and back.

A latent run trains on the autoencoder's latents of its prepared images (data/latents.py encodes them once and
caches them), each channel standardised by the mean and spread measured on the training set and recorded in the run
(data.latent_mean, data.latent_std), as latent diffusion does (Rombach et al. 2022). generate() decodes what the
network samples (`decode`), so everything that samples through it gets pixels back. Another autoencoder is a module
in nets/ with a loader, and one line in AUTOENCODERS.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import UserError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Autoencoder:
    """One registry entry: its help, the latents' shape (channels, and pixels per latent position along a side),
    its loader (a device -> the frozen module with encode and decode in [-1, 1]) and its weights' identity (a hash
    that keys the latent cache: other weights, other latents)."""
    help: str
    latent_channels: int
    downscale: int
    load: Callable[[str], object]
    weights_sha256: Callable[[], str]


def _load_taef2(device: str):
    from .nets.taef2 import load_taef2

    return load_taef2(device=device)


def _taef2_weights() -> str:
    from .nets.taef2 import SHA256

    return hashlib.sha256(f"{SHA256['encoder']} {SHA256['decoder']}".encode()).hexdigest()


AUTOENCODERS: dict[str, Autoencoder] = {
    "taef2": Autoencoder("TAEF2, the tiny autoencoder of FLUX.2's latents: 32 channels at 1/8 of the size, pinned in "
                         "assets/ (nets/taef2.py)", 32, 8, _load_taef2, _taef2_weights),
}


def autoencoder_entry(name: str) -> Autoencoder:
    """The registry's entry of `name`; one sentence if there is none."""
    if name not in AUTOENCODERS:
        raise UserError(f"unknown autoencoder {name!r}; choose one of {', '.join(AUTOENCODERS)}.")
    return AUTOENCODERS[name]


@functools.lru_cache(maxsize=4)
def load_autoencoder(name: str, device: str = "cpu"):
    """The autoencoder `name`, frozen and in eval mode on `device`, loaded once per process and device."""
    return autoencoder_entry(name).load(device)


def _per_channel(values, like: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.tensor(values, dtype=like.dtype, device=like.device)[None, :, None, None]


def normalise(z: torch.Tensor, mean, std) -> torch.Tensor:
    """Latents as the autoencoder gives them -> the network's space: each channel (z - mean) / std."""
    return (z - _per_channel(mean, z)) / _per_channel(std, z)


def encode(data, x: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] -> the space the network of a run with data section `data` works in: for a latent run,
    encoded (on their own device) and normalised with the run's statistics; a pixel run's images as they are."""
    if not data.autoencoder:
        return x
    import torch

    autoencoder = load_autoencoder(data.autoencoder, str(x.device))
    with torch.no_grad():
        return normalise(autoencoder.encode(x.float()), data.latent_mean, data.latent_std)


def decode(data, x: torch.Tensor) -> torch.Tensor:
    """What a network of a run with data section `data` sampled -> images in [-1, 1]: for a latent run, its latents
    denormalised (each channel x * std + mean) and decoded (on their own device); a pixel run's images as they are."""
    if not data.autoencoder:
        return x
    import torch

    autoencoder, x = load_autoencoder(data.autoencoder, str(x.device)), x.float()
    with torch.no_grad():
        return autoencoder.decode(x * _per_channel(data.latent_std, x) + _per_channel(data.latent_mean, x))


def image_shape(config) -> tuple[int, int, int]:
    """The shape (C, H, W) of the images a run's model generates: its network's, or a latent run's recorded images'."""
    if config.data.autoencoder:
        return tuple(config.data.image_shape)
    return config.net.in_channels, config.net.image_size, config.net.image_size


def refuse_latent(data, what: str) -> None:
    """One sentence where a command does not work in latent space yet: `what` names it ("export to onnx")."""
    if data.autoencoder:
        raise UserError(f"{what} is not supported yet for a latent model (one trained with --autoencoder "
                        f"{data.autoencoder}); sample, evaluate, editing, distill and the demo work with it.")
