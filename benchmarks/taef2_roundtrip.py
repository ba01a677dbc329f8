"""TAEF2 (the pretrained tiny autoencoder for FLUX.2 latents) on real emoji at 64 px: its latent shape, how well
it reconstructs, against the 32-px route (a 2x2 average upscaled bicubically), and its speed (issue 46).

A fixed set of emoji: of the test split's PNG files, sorted by path, `--count` evenly spaced ones (all
categories), each composited on white and made RGB as the data loader does (data/images.py). PSNR is per image
over all pixels and channels with the peak at 1 on [0, 1] pixels, then averaged over images ("mean PSNR"); the
PSNR of the pooled mean squared error is given beside it. Reconstructions are clamped to [0, 1] and not
rounded to 8 bits. Times are medians per image, on the CPU, float32, with torch's threads as set
(OMP_NUM_THREADS): one image at a time (8 x `--calls` calls), and in batches of `--batch`. On a shared
machine the load average printed matters: other processes lengthen every time.

    OMP_NUM_THREADS=1 python benchmarks/taef2_roundtrip.py [--data ../shared/data/emoji/test] [--count 256]
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from common import cpu_description, median_seconds
from PIL import Image

from tinydiffusion.data.images import Shape, to_mode
from tinydiffusion.nets.taef2 import load_taef2

REPO = Path(__file__).resolve().parents[1]


def emoji(folder: Path, count: int) -> torch.Tensor:
    """`count` evenly spaced PNGs of `folder` (sorted by path), composited on white: N x 3 x 64 x 64 in [0, 1]."""
    paths = sorted(folder.rglob("*.png"))
    if len(paths) < count:
        raise SystemExit(f"{folder} holds {len(paths)} PNG files, fewer than --count {count}")
    picks = np.unique(np.linspace(0, len(paths) - 1, count).round().astype(int))
    arrays = [np.asarray(to_mode(Image.open(paths[i]), Shape(64, 3))) for i in picks]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255


def psnr(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(mean of per-image PSNR, PSNR of the pooled MSE), in dB, for images in [0, 1]."""
    mse = (a - b).pow(2).flatten(1).mean(1)
    return (-10 * torch.log10(mse)).mean().item(), (-10 * torch.log10(mse.mean())).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "emoji" / "test")
    parser.add_argument("--count", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--calls", type=int, default=5, help="timed calls per measurement (the median is given)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    images = emoji(args.data, args.count)
    model = load_taef2()
    x = images * 2 - 1
    latents = torch.cat([model.encode(part) for part in x.split(args.batch)])
    decoded = torch.cat([model.decode(part) for part in latents.split(args.batch)])
    route32 = F.interpolate(F.avg_pool2d(images, 2), scale_factor=2, mode="bicubic", align_corners=False)
    results = {"TAEF2 encode + decode": psnr((decoded + 1) / 2, images),
               "32 px: 2x2 average, bicubic up": psnr(route32.clamp(0, 1), images)}
    print(f"machine: {cpu_description()}, {platform.platform()}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.1f} at the start")
    print(f"data: {len(images)} of the PNGs in {args.data}, evenly spaced by sorted path, composited on white")
    print(f"latent at 64 px: {tuple(latents.shape[1:])} (channels x h x w), {latents[0].numel()} numbers for "
          f"{images[0].numel()} pixel values ({images[0].numel() / latents[0].numel():.0f}x fewer)")
    per_channel = latents.transpose(0, 1).flatten(1).std(1)
    print(f"latent values: mean {latents.mean():.3f}, std {latents.std():.3f} (per channel {per_channel.min():.2f}"
          f" to {per_channel.max():.2f}), range [{latents.min():.2f}, {latents.max():.2f}]")
    for name, (mean_psnr, pooled) in results.items():
        print(f"{name:32s} mean PSNR {mean_psnr:6.2f} dB  (pooled MSE: {pooled:.2f} dB)")
    one, many = x[:1], x[: args.batch]
    z_one, z_many = model.encode(one), model.encode(many)
    for label, batch, z, calls in (("1 image at a time", one, z_one, 8 * args.calls),
                                   (f"batches of {len(many)}", many, z_many, args.calls)):
        encode = median_seconds(lambda b=batch: model.encode(b), calls, warmup=2) / len(batch)
        decode = median_seconds(lambda z=z: model.decode(z), calls, warmup=2) / len(batch)
        print(f"time per image, {label:18s} encode {encode * 1e3:6.2f} ms, decode {decode * 1e3:6.2f} ms")


if __name__ == "__main__":
    main()
