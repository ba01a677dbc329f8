"""Preparing and loading: a source's split decoded once into a prepared array in the cache (prepared.py), then read
as an ImageDataset, held in memory when it fits and memory-mapped when it does not."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .. import words
from ..config import DataConfig
from ..errors import UserError
from . import cache
from . import prepared as store
from .sources import locate, named_dataset

if TYPE_CHECKING:
    import torch


@dataclass
class ImageDataset:
    """A whole split: images uint8 [N, C, H, W] (a view of the prepared N x H x W x C array), labels int64 [N]
    (None when unlabelled), the class names, and the prepared data's manifest."""

    images: torch.Tensor
    labels: torch.Tensor | None
    class_names: tuple[str, ...] = ()
    manifest: dict = field(default_factory=dict)
    memory_mapped: bool = False

    def __len__(self) -> int:
        return self.images.shape[0]


def _cache_entry(fmt, path: Path, split: str, config: DataConfig) -> tuple[Path, str]:
    """The cache folder of this source, split and shape; its name changes whenever any file of the source does."""
    named = named_dataset(config)  # a named dataset's folder read by path has other class names: another entry
    source_key = hashlib.sha256(json.dumps([store.VERSION, fmt.NAME, str(path.resolve()), split, config.image_size,
                                            config.channels, config.alpha_background,
                                            named.name if named else ""]).encode()).hexdigest()
    input_hash = hashlib.sha256(fmt.fingerprint(path, split).encode()).hexdigest()
    return cache.entry_path(cache.prepared_root(), path.name, split, source_key, input_hash), input_hash


def _prepare_split(fmt, path: Path, split: str, config: DataConfig, stem: Path, input_hash: str,
                   progress: bool) -> dict:
    started = time.perf_counter()
    found = fmt.read(path, split)
    named = named_dataset(config)
    if named is not None:
        if found.labels is not None and found.labels.size and found.labels.max() >= len(named.class_names):
            raise UserError(f"{found.labels_from or path} holds label {found.labels.max()}; {named.title} labels are "
                            f"0-{len(named.class_names) - 1}. Delete the file and download it again.")
        found.class_names = named.class_names
    what = config.source if named else str(path)
    shape, channels_note = store.choose_shape(found, config.image_size, config.channels, config.alpha_background,
                                              what)
    description = {"source": what, "resolved": str(path.resolve()), "reader": fmt.NAME, "split": split,
                   "input_hash": input_hash, "read_seconds": time.perf_counter() - started}
    manifest = store.write_prepared(found, stem, shape, description, progress)
    print(store.summary(manifest))
    for line in found.warnings + ([f"note: {channels_note}"] if channels_note else []):
        print(line)
    scarce = [f"{name!r} ({count})" for name, count in zip(manifest["class_names"], manifest["class_counts"] or [],
                                                            strict=False) if count < 2]
    if scarce:
        listed = ", ".join(scarce[:10]) + (f" and {len(scarce) - 10} more" if len(scarce) > 10 else "")
        print(f"warning: {words.count(len(scarce), 'class')} of {manifest['source']} "
              f"{'have' if len(scarce) != 1 else 'has'} fewer than 2 images: {listed}; the model will hardly learn "
              f"{'them' if len(scarce) != 1 else 'it'}.")
    return manifest


def prepared_path(config: DataConfig, split: str = "train", progress: bool = True) -> Path | None:
    """The prepared .npy of a source's split, preparing it first if the cache has no current one.
    A held-out split takes the train split's size and channels, so its images compare with the model's."""
    if split != "train" and not (config.image_size and config.channels):
        train = prepared_path(config, "train", progress)
        channels, size, _ = store.open_prepared(train, memory_limit=0).manifest["image_shape"]
        config = dataclasses.replace(config, image_size=size, channels=channels)
    located = locate(config, split, progress)
    if located is None:
        return None
    fmt, path, split = located
    if fmt is None:  # already a prepared file: its shape is what it is
        channels, size, _ = store.open_prepared(path, memory_limit=0).manifest["image_shape"]
        for asked, has, what in ((config.image_size, size, "image_size"), (config.channels, channels, "channels")):
            if asked and asked != has:
                raise UserError(f"{path} was prepared with data.{what} {has}, not {asked}; prepare the source again "
                                f"with --data.{what} {asked}, or drop --data.{what}.")
        return path
    entry, input_hash = _cache_entry(fmt, path, split, config)

    def fill(folder: Path) -> None:
        _prepare_split(fmt, path, split, config, folder / "data", input_hash, progress)
        cache.remove_older(entry)  # the copies of older versions of the source, useless now

    cache.cached(entry, "data.json", fill, lambda done: store.open_prepared(done / "data.npy", memory_limit=0),
                 "prepared data")
    return entry / "data.npy"


def load_data(config: DataConfig, split: str = "train", progress: bool = True) -> ImageDataset | None:
    """One split of a source as an ImageDataset (None when the source has no such split)."""
    path = prepared_path(config, split, progress)
    if path is None:
        return None
    limit = int(config.memory_limit_mb * 2**20) if config.memory_limit_mb > 0 else None
    data = store.open_prepared(path, limit)  # a damaged cache entry was prepared again by prepared_path
    named = named_dataset(config)
    class_names = named.class_names if named else tuple(data.manifest["class_names"])
    import torch  # here, not at the top: the command line imports this module and starts without torch

    images = torch.from_numpy(data.images).permute(0, 3, 1, 2)  # N x C x H x W, a view: no copy
    labels = torch.from_numpy(data.labels) if data.labels is not None else None
    return ImageDataset(images, labels, class_names, data.manifest, data.memory_mapped)


def prepare_source(config: DataConfig, out: Path, progress: bool = True) -> dict:
    """`tinydiffusion prepare`: write a source's train split as a prepared file at `out` (an .npy)."""
    fmt, path, split = locate(config, "train", progress)
    if fmt is None:
        raise UserError(f"{path} is prepared already; use it with --data {path}.")
    _, input_hash = _cache_entry(fmt, path, split, config)
    try:
        return _prepare_split(fmt, path, split, config, out, input_hash, progress)
    except OSError as err:
        raise UserError(f"cannot write {out} ({err.strerror or err}).") from None
