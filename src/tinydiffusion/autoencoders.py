"""The pretrained autoencoders a run may diffuse in the latent space of (`train --autoencoder NAME`, recorded as
data.autoencoder): a registry, one line each, free of torch so that the config and `--help` read it; and the one
place that maps latents to the network's space and back.

A latent run trains on the autoencoder's latents of its prepared images (data/latents.py encodes them once and
caches them), each channel standardised by the mean and spread measured on the training set and recorded in the run
(data.latent_mean, data.latent_std), as latent diffusion does (Rombach et al. 2022). generate() decodes what the
network samples (`decode`), so everything that samples through it gets pixels back. Another autoencoder is a module
in nets/ with a loader, its licence, and one line in AUTOENCODERS; its module's class builds the decoder alone when
given encoder=False, which is what an exported diffusers folder ships (export/diffusers_folder.py).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import UserError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Autoencoder:
    """One registry entry: its help, the latents' shape (channels, and pixels per latent position along a side) and
    its module, nets/MODULE.py, imported only when used (it needs torch). The module has `load_MODULE(device=...)`
    (the frozen autoencoder, with encode and decode in [-1, 1]), `SHA256` (its encoder's and decoder's weights files)
    and `licence()` (the weights' licence, Markdown that travels with every exported decoder)."""
    help: str
    latent_channels: int
    downscale: int
    module: str

    def code(self):
        return importlib.import_module(f"{__package__}.nets.{self.module}")

    def weights_sha256(self) -> str:
        """The weights' identity, which keys the latent cache: other weights, other latents."""
        files = self.code().SHA256
        return hashlib.sha256(f"{files['encoder']} {files['decoder']}".encode()).hexdigest()


AUTOENCODERS: dict[str, Autoencoder] = {
    "taef2": Autoencoder("TAEF2, the tiny autoencoder of FLUX.2's latents: 32 channels at 1/8 of the size, pinned in "
                         "assets/ (nets/taef2.py)", 32, 8, "taef2"),
}


def autoencoder_entry(name: str) -> Autoencoder:
    """The registry's entry of `name`; one sentence if there is none."""
    if name not in AUTOENCODERS:
        raise UserError(f"unknown autoencoder {name!r}; choose one of {', '.join(AUTOENCODERS)}.")
    return AUTOENCODERS[name]


@functools.lru_cache(maxsize=4)
def load_autoencoder(name: str, device: str = "cpu"):
    """The autoencoder `name`, frozen and in eval mode on `device`, loaded once per process and device."""
    entry = autoencoder_entry(name)
    return getattr(entry.code(), f"load_{entry.module}")(device=device)


def licence_file(name: str, decoder: str) -> tuple[str, bytes]:
    """The file that travels with an exported decoder of autoencoder `name` in a folder: its name (LICENSE-NAME.md)
    and its text, the weights' source and licence, saying which file of the folder holds them (`decoder`)."""
    text = (f"{decoder} holds the weights of {name}'s decoder; their source and licence, as tinydiffusion's "
            f"assets/LICENSES.md gives them:\n\n{autoencoder_entry(name).code().licence()}")
    return f"LICENSE-{name}.md", text.encode()


def _per_channel(values, like: torch.Tensor) -> torch.Tensor:
    """One value a channel (a list, or a tensor of the exported decoder's) shaped to broadcast over `like`."""
    import torch

    return torch.as_tensor(values, dtype=like.dtype, device=like.device)[None, :, None, None]


def normalise(z: torch.Tensor, mean, std) -> torch.Tensor:
    """Latents as the autoencoder gives them -> the network's space: each channel (z - mean) / std."""
    return (z - _per_channel(mean, z)) / _per_channel(std, z)


def denormalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    """The network's space -> latents as the autoencoder takes them: each channel x * std + mean (`normalise`
    undone); what `decode` and an exported decoder graph (export/graph.py) do before the autoencoder's decoder."""
    return x * _per_channel(std, x) + _per_channel(mean, x)


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
        return autoencoder.decode(denormalise(x, data.latent_mean, data.latent_std))


def image_shape(config) -> tuple[int, int, int]:
    """The shape (C, H, W) of the images a run's model generates: its network's, or a latent run's recorded images'."""
    if config.data.autoencoder:
        return tuple(config.data.image_shape)
    return config.net.in_channels, config.net.image_size, config.net.image_size

