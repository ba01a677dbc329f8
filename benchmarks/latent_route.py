"""The latent route at 64 px, measured against pixel space at equal wall time (issue 25).

Latent diffusion (Rombach et al. 2022) runs the diffusion in an autoencoder's latent space. Here the
autoencoder is trained by this script on the user's own images, and its time counts against the budget:

1. an autoencoder (under 0.2M parameters a half) learns to code a 64x64x3 image as a 32x32x3 latent in
   [-1, 1]: a pixel-unshuffle, residual blocks, tanh. Uniform noise of one 8-bit step is added to the latent
   in training, so that the decoder works on latents stored as uint8. A small pull of the latent towards the
   image's 2x2 average keeps the latent looking like a 32-px thumbnail, which the 32-px recipe is tuned for;
2. every training image is encoded, and the latents are written as an ordinary .npz dataset (uint8
   N x 32 x 32 x 3 with the labels and class names);
3. `tinydiffusion train` trains on that .npz with the budget that is left (so the 32-px colour recipe, chosen
   by the data's shape, plans its steps to end at the budget);
4. 1,000 samples (the command line's defaults: dpmpp-2m, 20 steps, guidance 1.5, classes in turn, seed 0)
   are decoded to 64 px and scored by `evaluate`'s Evaluator against emoji/test at 64 px, beside the
   autoencoder's own floor: 1,000 training images coded and decoded, scored the same way.

    python benchmarks/latent_route.py --data ../shared/data/emoji/train --minutes 30 --ae-minutes 6 \
        --out-dir runs/latent64
    python benchmarks/latent_route.py ... --score-only   # score the run again, no training
    python benchmarks/latent_route.py ... --score-only --figure ../docs/figures/emoji-64-latent.png

The decoder of a 2x2 average (bicubic upsampling) is scored the same way, as the route without learning.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from common import cpu_description
from torch import nn

from tinydiffusion import generate, load_model
from tinydiffusion.config import DataConfig
from tinydiffusion.data import load_data
from tinydiffusion.data.pixels import to_model_space, to_pixels
from tinydiffusion.evaluation import Evaluator
from tinydiffusion.viz import class_columns, save_image

QUANT = 2.0 / 255  # one 8-bit step of a latent in [-1, 1]


class Block(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.GroupNorm(8, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(F.silu(self.conv1(F.silu(self.norm(x)))))


class Encoder(nn.Module):
    """64x64x3 in [-1, 1] -> 32x32x3 in [-1, 1]."""

    def __init__(self, width: int, blocks: int):
        super().__init__()
        self.body = nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(12, width, 3, padding=1),
                                  *[Block(width) for _ in range(blocks)], nn.GroupNorm(8, width), nn.SiLU(),
                                  nn.Conv2d(width, 3, 3, padding=1))

    def forward(self, x):
        return torch.tanh(self.body(x))


class Decoder(nn.Module):
    """32x32x3 latent -> 64x64x3 in [-1, 1] (unclipped)."""

    def __init__(self, width: int, blocks: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), *[Block(width) for _ in range(blocks)],
                                  nn.GroupNorm(8, width), nn.SiLU(), nn.Conv2d(width, 12, 3, padding=1),
                                  nn.PixelShuffle(2))

    def forward(self, z):
        # the decoder refines a bicubic upsampling of the latent, which starts out as the image's thumbnail
        return F.interpolate(z, scale_factor=2, mode="bicubic", align_corners=False) + self.body(z)


def train_autoencoder(images: torch.Tensor, seconds: float, width: int, blocks: int, batch: int, lr: float,
                      thumb_weight: float, seed: int) -> tuple[Encoder, Decoder, dict]:
    torch.manual_seed(seed)
    enc, dec = Encoder(width, blocks), Decoder(width, blocks)
    params = list(enc.parameters()) + list(dec.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    start, step, losses = time.perf_counter(), 0, []
    while True:
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
        for group in opt.param_groups:  # held, then decayed linearly over the last third of the time
            group["lr"] = lr * min(1.0, 3.0 * (1.0 - elapsed / seconds))
        x = to_model_space(images[torch.randint(len(images), (batch,), generator=gen)])
        z = enc(x)
        recon = dec(z + (torch.rand_like(z) - 0.5) * QUANT)
        thumb = F.avg_pool2d(x, 2)
        loss = (recon - x).abs().mean() + thumb_weight * (z - thumb).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        step += 1
        if step % 200 == 0:
            print(f"autoencoder step {step}: loss {np.mean(losses[-200:]):.4f} ({elapsed:.0f} s)", flush=True)
    enc.eval(), dec.eval()
    return enc, dec, {"steps": step, "seconds": time.perf_counter() - start,
                      "final_loss": float(np.mean(losses[-200:])), "batch": batch, "lr": lr, "width": width,
                      "blocks": blocks, "thumb_weight": thumb_weight,
                      "parameters_per_half": sum(p.numel() for p in enc.parameters())}


@torch.no_grad()
def encode(enc: Encoder, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """uint8 N x 3 x 64 x 64 -> uint8 N x 3 x 32 x 32 latents."""
    return torch.cat([to_pixels(enc(to_model_space(images[i:i + batch]))) for i in range(0, len(images), batch)])


@torch.no_grad()
def decode(dec, latents: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """uint8 latents -> uint8 N x 3 x 64 x 64 images."""
    return torch.cat([to_pixels(dec(to_model_space(latents[i:i + batch]))) for i in range(0, len(latents), batch)])


def bicubic(z):
    return F.interpolate(z, scale_factor=2, mode="bicubic", align_corners=False)


def score(evaluator: Evaluator, images: torch.Tensor, labels) -> dict:
    result = evaluator.score(images.numpy(), None if labels is None else labels.numpy())
    return {k: v for k, v in result.items() if isinstance(v, (int, float, str))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="the training folder (emoji/train)")
    p.add_argument("--minutes", type=float, default=30.0, help="the whole budget: autoencoder and diffusion")
    p.add_argument("--ae-minutes", type=float, default=6.0)
    p.add_argument("--width", type=int, default=48)
    p.add_argument("--blocks", type=int, default=2)
    p.add_argument("--ae-batch", type=int, default=32)
    p.add_argument("--ae-lr", type=float, default=2e-3)
    p.add_argument("--thumb-weight", type=float, default=0.1)
    p.add_argument("--num", type=int, default=1000)
    p.add_argument("--out-dir", default="runs/latent64")
    p.add_argument("--train-args", default="", help="more flags for `tinydiffusion train`")
    p.add_argument("--score-only", action="store_true")
    p.add_argument("--figure", help="also write ROWS samples of each class, decoded, to this PNG")
    p.add_argument("--rows", type=int, default=4)
    args = p.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = DataConfig(source=args.data, image_size=64)
    train = load_data(data, "train")
    images, labels = train.images[:, :3].contiguous(), train.labels
    report_path = out / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    if not args.score_only:
        start = time.perf_counter()
        enc, dec, report["autoencoder"] = train_autoencoder(images, args.ae_minutes * 60, args.width, args.blocks,
                                                            args.ae_batch, args.ae_lr, args.thumb_weight, seed=0)
        torch.save({"encoder": enc.state_dict(), "decoder": dec.state_dict(), "config": report["autoencoder"]},
                   out / "autoencoder.pt")
        latents = encode(enc, images)
        np.savez(out / "latents.npz", images=latents.permute(0, 2, 3, 1).numpy(), labels=labels.numpy(),
                 class_names=np.array(train.class_names))
        report["encode_seconds"] = time.perf_counter() - start - report["autoencoder"]["seconds"]
        left = args.minutes * 60 - (time.perf_counter() - start)
        report["diffusion_budget_seconds"] = left
        command = [sys.executable, "-m", "tinydiffusion", "train", "--data", str(out / "latents.npz"),
                   "--run-dir", str(out / "diffusion"), "--train.max_seconds", f"{left:.0f}",
                   *args.train_args.split()]
        print(" ".join(command), flush=True)
        subprocess.run(command, check=True)
        report["total_seconds"] = time.perf_counter() - start
        report["cpu"] = cpu_description()
        report_path.write_text(json.dumps(report, indent=1))
    saved = torch.load(out / "autoencoder.pt")
    cfg = saved["config"]
    enc, dec = Encoder(cfg["width"], cfg["blocks"]), Decoder(cfg["width"], cfg["blocks"])
    enc.load_state_dict(saved["encoder"]), dec.load_state_dict(saved["decoder"])
    enc.eval(), dec.eval()
    evaluator = Evaluator(data)
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(1))[:args.num]
    report["autoencoder_floor"] = score(evaluator, decode(dec, encode(enc, images[pick])), labels[pick])
    thumbs = to_pixels(F.avg_pool2d(to_model_space(images[pick]), 2))
    report["bicubic_floor"] = score(evaluator, decode(bicubic, thumbs), labels[pick])
    model = load_model(out / "diffusion", device="cpu")
    latents, sample_labels = generate(model, args.num, seed=0)
    report["samples"] = score(evaluator, decode(dec, latents), sample_labels)
    report_path.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    if args.figure:
        names = model.config.data.class_names
        grid, _ = generate(model, args.rows * len(names), seed=0)  # every class in turn, as colour_figures.py
        save_image(class_columns(decode(dec, grid), names, scale=1), args.figure)


if __name__ == "__main__":
    main()
