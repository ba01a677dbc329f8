"""TAEF2: the tiny autoencoder for FLUX.2 latents, as a fixed, pretrained dependency (issue 46).

The weights are Ollin Boer Bohan's `taef2_encoder.pth` and `taef2_decoder.pth` from
https://github.com/madebyollin/taesd (MIT licence, text and provenance in assets/LICENSES.md), converted once to
safetensors with their tensors unchanged (float16). Only those two files are loaded, and only after their SHA-256
matches the one pinned here: anything else (a damaged or truncated file, the encoder given as the decoder, other
tensors, NaNs) is refused with one sentence saying which.

The network is written here from the weights' names and shapes and checked by its reconstructions. Both halves
are plain Conv-ReLU stacks at 64 channels with 3x3 convolutions throughout:

    encoder  image [0, 1], 3 x H x W
             conv 3->64, Block, then three times: conv stride 2 (no bias), Block x 3, then conv 64->32
             -> latent, 32 x H/8 x W/8 (as FLUX.2's VAE; on emoji mean 0.04, std 0.85, within about +-5)
    decoder  latent -> 3 tanh(z / 3) (a soft clamp), conv 32->64, ReLU, Block x 3, then three times:
             2x nearest upsampling, conv (no bias), Block x 3 (x 1 the last time), then conv 64->3
             -> image, about [0, 1]

A Block is x -> ReLU(conv(ReLU(conv(ReLU(conv(x))))) + x). The three Blocks next to the latent on either side
also carry a per-pixel MLP, `pool` (1x1 conv 64->256, GroupNorm with 4 groups, ReLU, 1x1 conv 256->64), added to
the Block's input first: x <- x + pool(x). Every choice above that the names and shapes leave open (where
`pool` is added and that it works per pixel, 4 groups, nearest upsampling, the clamp at 3, images in [0, 1]) is
the one that reconstructs best: each alternative tried lost 0.4 to 15 dB of PSNR on a photograph.

`TinyAutoencoder` speaks the project's pixel space, [-1, 1]: `encode` maps to TAESD's [0, 1] first and `decode`
maps back and clamps. Latents are TAEF2's own, unscaled (TAESD's latent scale factor is 1).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from ..files import read_file

ASSETS = Path(__file__).resolve().parent.parent / "assets"
ENCODER_FILE = "taef2_encoder.safetensors"
DECODER_FILE = "taef2_decoder.safetensors"
SHA256 = {  # the files in assets/, converted from madebyollin/taesd at 5cccb12dc72074a4be35680c3b108548a7c69978
    "encoder": "9b833eb0edb80e270c161709662da59ae171523fda3b75171a3dc26d4f13ca76",
    "decoder": "7dc4391324157654f13f93fff80715e2fc52ba9d7ee141c609af60a6841680fe",
}
LATENT_CHANNELS = 32
DOWNSCALE = 8  # pixels per latent position, along each side
WIDTH = 64
MAX_BYTES = 8 * 2**20  # each published file is about 2.7 MB


def _conv(n_in: int, n_out: int, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class Block(nn.Module):
    """ReLU(conv(x) + x) with three 3x3 convolutions, optionally after x <- x + pool(x), a per-pixel MLP."""

    def __init__(self, channels: int = WIDTH, pool: bool = False):
        super().__init__()
        self.conv = nn.Sequential(_conv(channels, channels), nn.ReLU(), _conv(channels, channels), nn.ReLU(),
                                  _conv(channels, channels))
        self.pool = nn.Sequential(nn.Conv2d(channels, 4 * channels, 1, bias=False), nn.GroupNorm(4, 4 * channels),
                                  nn.ReLU(), nn.Conv2d(4 * channels, channels, 1, bias=False)) if pool else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return torch.relu(self.conv(x) + x)


class Clamp(nn.Module):
    """A soft clamp of the latents to (-3, 3): 3 tanh(z / 3)."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return 3 * torch.tanh(z / 3)


class Encoder(nn.Sequential):
    """Image in [0, 1], B x 3 x H x W -> latents, B x 32 x H/8 x W/8 (rounded up)."""

    def __init__(self):
        layers = [_conv(3, WIDTH), Block()]
        for level in range(3):
            layers += [_conv(WIDTH, WIDTH, stride=2, bias=False)] + [Block(pool=level == 2) for _ in range(3)]
        super().__init__(*layers, _conv(WIDTH, LATENT_CHANNELS))


class Decoder(nn.Sequential):
    """Latents, B x 32 x h x w -> image in about [0, 1], B x 3 x 8h x 8w."""

    def __init__(self):
        layers = [Clamp(), _conv(LATENT_CHANNELS, WIDTH), nn.ReLU()] + [Block(pool=True) for _ in range(3)]
        for blocks in (3, 3, 1):
            layers += [nn.Upsample(scale_factor=2), _conv(WIDTH, WIDTH, bias=False)] + [Block() for _ in range(blocks)]
        super().__init__(*layers, _conv(WIDTH, 3))


class TinyAutoencoder(nn.Module):
    """TAEF2 in the project's pixel space: `encode` takes images in [-1, 1], `decode` gives them back. With
    encoder=False, the decoder alone: what an exported diffusers folder ships (export/diffusers_folder.py)."""

    def __init__(self, encoder: bool = True):
        super().__init__()
        self.encoder = Encoder() if encoder else None
        self.decoder = Decoder()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1], B x 3 x H x W (H and W multiples of 8) -> latents, B x 32 x H/8 x W/8."""
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] % DOWNSCALE or x.shape[3] % DOWNSCALE:
            raise ValueError(f"TAEF2 encodes B x 3 x H x W images with H and W multiples of {DOWNSCALE}, "
                             f"not {tuple(x.shape)}")
        return self.encoder((x + 1) / 2)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents, B x 32 x h x w -> images in [-1, 1], B x 3 x 8h x 8w."""
        if z.ndim != 4 or z.shape[1] != LATENT_CHANNELS:
            raise ValueError(f"TAEF2 decodes B x {LATENT_CHANNELS} x h x w latents, not {tuple(z.shape)}")
        return (self.decoder(z) * 2 - 1).clamp(-1, 1)


def licence() -> str:
    """The weights' source and licence (MIT) as assets/LICENSES.md gives them, its TAEF2 section alone: the text that
    travels with every exported decoder (the licence asks that its notice go with every copy of the weights)."""
    text = (ASSETS / "LICENSES.md").read_text(encoding="utf-8")
    section = text.split("\n## TAEF2", 1)[1].split("\n## ", 1)[0]
    return "# TAEF2" + section.rstrip() + "\n"


def _refusal(path: Path, part: str, payload: bytes, digest: str, expected: dict[str, torch.Size]) -> str:
    """Why a file whose hash is not the pinned one is refused: one sentence, as precise as the file allows."""
    other = "decoder" if part == "encoder" else "encoder"
    if digest == SHA256[other]:
        return f"{path} holds TAEF2's {other} weights, not its {part}; the two files have been swapped."
    from safetensors.torch import load as load_safetensors

    try:
        tensors = load_safetensors(payload)
    except Exception:  # whatever the parser says about a damaged header, the sentence is the same
        return (f"{path} is not a readable safetensors file ({len(payload):,} bytes): it is damaged or truncated; "
                f"reinstall tinydiffusion to restore taef2_{part}.safetensors.")
    wrong = sorted(set(expected) ^ set(tensors)) or sorted(k for k in expected if tensors[k].shape != expected[k])
    if wrong:
        return (f"{path} does not hold TAEF2's {part} weights (tensor {wrong[0]!r} has another name or shape); "
                f"give TAEF2's {part} file, taef2_{part}.safetensors.")
    bad = next((k for k, v in sorted(tensors.items()) if not torch.isfinite(v).all()), None)
    if bad is not None:
        return (f"{path} holds NaN or infinite values (in {bad!r}): the {part} weights are damaged; "
                f"reinstall tinydiffusion to restore taef2_{part}.safetensors.")
    return (f"{path} is not the published TAEF2 {part} (its SHA-256 begins {digest[:12]}, not {SHA256[part][:12]}); "
            f"reinstall tinydiffusion to restore taef2_{part}.safetensors.")


def _load_part(module: nn.Module, path: Path, part: str) -> None:
    """Load `path` into `module` (the encoder or decoder) after checking it is exactly the published file."""
    published = f"TAEF2's {part} weights are the regular file {ASSETS / f'taef2_{part}.safetensors'} (about 2.7 MB)"
    payload = read_file(Path(path), MAX_BYTES, str(path), published)
    digest = hashlib.sha256(payload).hexdigest()
    if digest != SHA256[part]:
        expected = {k: v.shape for k, v in module.state_dict().items()}
        raise UserError(_refusal(path, part, payload, digest, expected))
    from safetensors.torch import load as load_safetensors

    module.load_state_dict({k: v.float() for k, v in load_safetensors(payload).items()})


def load_taef2(encoder: str | Path | None = None, decoder: str | Path | None = None,
               device: str | torch.device = "cpu") -> TinyAutoencoder:
    """The published TAEF2, frozen and in eval mode, float32 on `device`.

    The weights are the package's (assets/) unless `encoder` or `decoder` names another copy of the same file;
    each is read as safetensors only after its SHA-256 matches the pinned one, and refused (UserError, one
    sentence) otherwise."""
    model = TinyAutoencoder()
    _load_part(model.encoder, Path(encoder) if encoder is not None else ASSETS / ENCODER_FILE, "encoder")
    _load_part(model.decoder, Path(decoder) if decoder is not None else ASSETS / DECODER_FILE, "decoder")
    return model.requires_grad_(False).eval().to(device)
