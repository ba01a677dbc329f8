"""A latent run's training data: the prepared images encoded once by the run's autoencoder (data.autoencoder), cached
beside the prepared data, and standardised per channel.

    latents/<source>-<autoencoder>-<prepared sha256>-<weights' hash>/
        latents.npy    float32 [N, C, h, w], the autoencoder's own latents
        latents.json   what they are: the autoencoder, the prepared array's hash, the shape, each channel's mean and
                       standard deviation over the set (measured once, when encoded)

Other images or other weights are encoded again, the same ones never are; an entry is written whole, under a lock,
as the prepared store is. A latent run trains on the latents standardised (autoencoders.normalise) with the
statistics its config recorded (a resumed run) or else the measured ones, which training records in the run
(data.latent_mean, data.latent_std) for sampling to undo.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..autoencoders import autoencoder_entry, load_autoencoder, normalise
from ..config import DataConfig
from ..errors import UserError
from ..files import read_regular_file
from . import cache
from .loading import ImageDataset, load_data

ENCODE_BATCH = 64
LATENTS_FILE, META_FILE = "latents.npy", "latents.json"


def load_training_data(config: DataConfig, progress: bool = True) -> ImageDataset:
    """The data a run with data section `config` trains on: the prepared images, or for a latent run their
    latents (encode_dataset)."""
    dataset = load_data(config, "train", progress)
    return encode_dataset(dataset, config, progress) if config.autoencoder else dataset


def check_encodable(dataset: ImageDataset, config: DataConfig) -> None:
    """Colour images whose sides the autoencoder divides, else one sentence saying what to change."""
    name, entry = config.autoencoder, autoencoder_entry(config.autoencoder)
    c, h, w = dataset.images.shape[1:]
    if c != 3:
        raise UserError(f"the autoencoder {name} encodes colour images, and {config.source} is grey ({c} channel"
                        f"{'s' if c != 1 else ''}); add --data.channels 3 to train on it as colour, or drop "
                        "--autoencoder.")
    if h % entry.downscale or w % entry.downscale:
        raise UserError(f"the autoencoder {name} encodes images whose sides are multiples of {entry.downscale}, and "
                        f"{config.source}'s are {w}x{h}; set --data.image_size to a multiple of {entry.downscale}.")


def entry_for(dataset: ImageDataset, config: DataConfig) -> Path:
    """The cache folder of this prepared array's latents under this autoencoder's weights."""
    digest = dataset.manifest.get("sha256")
    if not digest:
        raise UserError(f"{config.source} has no prepared array's hash to key its latents by; prepare it again "
                        "(`tinydiffusion prepare`).")
    weights = autoencoder_entry(config.autoencoder).weights_sha256()
    return cache.entry_path(cache.latents_root(), Path(config.source).name, config.autoencoder, digest, weights)


def _encode_into(folder: Path, dataset: ImageDataset, config: DataConfig, progress: bool) -> None:
    """Encode every image in batches (no gradients, the autoencoder in eval mode) into folder/latents.npy, and
    write each channel's mean and standard deviation (accumulated in float64) into folder/latents.json."""
    import torch
    from tqdm import tqdm

    from ..devices import pick_device
    from .pixels import to_model_space

    device = pick_device("auto")
    autoencoder = load_autoencoder(config.autoencoder, str(device))
    started, n = time.perf_counter(), len(dataset)
    print(f"encoding {n:,} images with {config.autoencoder} (once: the latents are cached)")
    out, sums, squares = None, 0.0, 0.0
    with torch.no_grad(), tqdm(total=n, desc="encoding", unit="img", disable=not progress) as bar:
        for start in range(0, n, ENCODE_BATCH):
            pixels = dataset.images[start:start + ENCODE_BATCH].to(device)
            z = autoencoder.encode(to_model_space(pixels)).float().cpu()
            if out is None:
                out = np.lib.format.open_memmap(folder / LATENTS_FILE, mode="w+", dtype=np.float32,
                                                shape=(n, *z.shape[1:]))
            out[start:start + len(z)] = z.numpy()
            sums = sums + z.double().sum(dim=(0, 2, 3))
            squares = squares + (z.double() ** 2).sum(dim=(0, 2, 3))
            bar.update(len(z))
    out.flush()
    count = n * out.shape[2] * out.shape[3]
    mean = sums / count
    std = (squares / count - mean**2).clamp(min=1e-12).sqrt()
    meta = {"autoencoder": config.autoencoder, "prepared_sha256": dataset.manifest["sha256"], "source":
            dataset.manifest.get("source", config.source), "count": n, "shape": list(out.shape[1:]),
            "mean": mean.tolist(), "std": std.tolist(), "encode_seconds": round(time.perf_counter() - started, 3)}
    del out
    (folder / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    print(f"encoded {n:,} images to latents of {'x'.join(map(str, meta['shape']))} in {meta['encode_seconds']:.1f} s")


def encode_dataset(dataset: ImageDataset, config: DataConfig, progress: bool = True) -> ImageDataset:
    """The dataset's latents, standardised, as an ImageDataset of float32 [N, C, h, w] with the prepared data's
    labels, class names and manifest (plus the autoencoder, the statistics used and the images' own shape): read
    from the cache, else encoded once and cached. A damaged entry is encoded again."""
    import torch

    check_encodable(dataset, config)

    def check(entry: Path) -> tuple[dict, np.ndarray]:
        meta = json.loads(read_regular_file(entry / META_FILE, cache.MANIFEST_BYTES))
        latents = np.load(entry / LATENTS_FILE, mmap_mode="r")
        if list(latents.shape[1:]) != meta["shape"] or len(latents) != meta["count"]:
            raise ValueError("the latents do not match their manifest")
        return meta, latents

    meta, latents = cache.cached(entry_for(dataset, config), META_FILE,
                                 lambda folder: _encode_into(folder, dataset, config, progress), check, "latents")
    mean, std = config.latent_mean or tuple(meta["mean"]), config.latent_std or tuple(meta["std"])
    images = normalise(torch.from_numpy(np.array(latents, dtype=np.float32)), mean, std)
    manifest = {**dataset.manifest, "autoencoder": config.autoencoder, "latent_mean": list(mean),
                "latent_std": list(std), "pixel_shape": list(dataset.images.shape[1:])}
    return ImageDataset(images, dataset.labels, dataset.class_names, manifest, memory_mapped=False)
