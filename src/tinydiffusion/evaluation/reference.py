"""The data an evaluation measures against: its name in messages and metric names, where its files and cached
artefacts are, and a held-out reference where the source has no test split."""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import DataConfig
from ..data import ImageDataset, dataset_folder, prepared_path
from ..data import named_dataset as named_dataset_of
from ..data.cache import prepared_root
from ..data.named import NamedDataset
from ..errors import UserError
from ..files import cache_dir
from ..words import count

HOLDOUT_FRACTION = 0.1  # of the train split, held out where a source has no test split
HOLDOUT_SEED = 0
NO_TEST_SPLIT = "reference: 10% of the train split held out; no test split found"


def with_reference(data: DataConfig) -> NamedDataset | None:
    """The named dataset `data` is, when the package ships a reference for it (a classifier and statistics)."""
    named = named_dataset_of(data)
    return named if named is not None and named.reference is not None else None


def data_name(data: DataConfig) -> str:
    """A short name for messages and metric names: the named dataset's, else the source's last two path parts."""
    named = named_dataset_of(data)
    if named is not None:
        return named.name
    return short_path(str(Path(data.source).expanduser()))


def short_path(source: str) -> str:
    path = Path(source)
    return "/".join(part for part in (path.parent.name, path.name) if part) or source


def metric_name(data: DataConfig, image_shape: tuple[int, ...]) -> str:
    """Which features an FD is in: a named dataset's bundled classifier's, or the one trained on this train split."""
    named = with_reference(data)
    if named is not None and tuple(image_shape) == named.image_shape:
        return named.reference.metric_name
    return f"FD ({data_name(data)}{'/train' if named_dataset_of(data) else ''} classifier features)"


def named_files_present(data: DataConfig) -> bool:
    """Whether every file of a named dataset is in its folder (gzipped or unpacked), without downloading."""
    named, folder = named_dataset_of(data), dataset_folder(data)
    return all((folder / name).exists() or (folder / Path(name).stem).exists() for name in named.files)


def artefact_folder(data: DataConfig, split: str, dataset: ImageDataset) -> Path:
    """Where per-dataset artefacts (classifier, statistics) go: beside the prepared split in the cache; for a
    user's own prepared file, a cache folder named by its checksum, so nothing is written beside the user's data."""
    folder = prepared_path(data, split, progress=False).parent
    if folder.resolve().is_relative_to(prepared_root().resolve()):
        return folder
    return cache_dir() / "evaluation" / dataset.manifest.get("sha256", "unknown")[:16]


def hold_out(train: ImageDataset) -> tuple[ImageDataset, ImageDataset]:
    """(a fixed seeded 10% of the train split, the rest), for a source without a test split."""
    num = len(train)
    num_held = max(2, round(HOLDOUT_FRACTION * num))
    if num - num_held < 2:
        raise UserError(f"{train.manifest.get('source', 'the data')} has {count(num, 'image')}, too few to hold "
                        "some out as a reference; add a test split beside it.")
    order = torch.randperm(num, generator=torch.Generator().manual_seed(HOLDOUT_SEED))
    held, rest = order[:num_held].sort().values, order[num_held:].sort().values

    def subset(index: torch.Tensor) -> ImageDataset:
        labels = None if train.labels is None else train.labels[index]
        return ImageDataset(train.images[index], labels, train.class_names, train.manifest)

    return subset(held), subset(rest)


def with_class_names(held_out: ImageDataset, class_names: tuple[str, ...]) -> ImageDataset:
    """The held-out split with its labels renumbered to the train split's classes, by name (a test folder
    that lacks a class numbers the others differently); images of classes the train split lacks are left out."""
    if tuple(held_out.class_names) == tuple(class_names):
        return held_out
    index = {name: i for i, name in enumerate(class_names)}
    mapping = torch.tensor([index.get(name, -1) for name in held_out.class_names], dtype=torch.int64)
    labels = mapping[held_out.labels]
    keep = labels >= 0
    return ImageDataset(held_out.images[keep], labels[keep], class_names, held_out.manifest)
