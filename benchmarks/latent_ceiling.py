"""The decoder's ceiling for latent diffusion (issue 46): real training images passed through an autoencoder's encode
and decode, written as a samples file that `tinydiffusion evaluate --samples` scores beside the floor, so a latent
run's FD can be read against the best its autoencoder allows.

`--num` images of the prepared training set at `--size` pixels (the same preparation `train` gives them), drawn by a
fixed seed, each with its label; encoded and decoded in batches, rounded to 8 bits as a sample would be.

    python benchmarks/latent_ceiling.py --data ../shared/data/emoji/train --size 64 --num 1000 --out ceiling-64.npz
    tinydiffusion evaluate --samples ceiling-64.npz --data ../shared/data/emoji/train --data.image_size 64 --num 1000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from common import cpu_description

from tinydiffusion.autoencoders import load_autoencoder
from tinydiffusion.config import DataConfig
from tinydiffusion.data import load_data
from tinydiffusion.data.pixels import to_pixels
from tinydiffusion.evaluation.samples import save_npz


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="the training folder")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--num", type=int, default=1000)
    parser.add_argument("--autoencoder", default="taef2")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="the samples file (.npz) to write")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    dataset = load_data(DataConfig(source=args.data, image_size=args.size, channels=3), progress=False)
    picks = torch.from_numpy(np.sort(np.random.default_rng(args.seed).permutation(len(dataset))[: args.num]))
    images = dataset.images[picks]
    model = load_autoencoder(args.autoencoder)
    start = time.perf_counter()
    decoded = [model.decode(model.encode(part.float() / 127.5 - 1)) for part in images.split(args.batch)]
    seconds = time.perf_counter() - start
    pixels = to_pixels(torch.cat(decoded)).numpy()
    save_npz(args.out, pixels, dataset.labels[picks].numpy(), dataset.class_names)
    print(f"{cpu_description()}; {torch.get_num_threads()} threads")
    print(f"{len(pixels):,} images of {args.size} px through {args.autoencoder} in {seconds:.1f} s "
          f"({seconds / len(pixels) * 1e3:.1f} ms an image, encode and decode); wrote {args.out}")


if __name__ == "__main__":
    main()
