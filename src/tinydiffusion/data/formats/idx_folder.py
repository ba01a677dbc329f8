"""A folder holding the four IDX files of an MNIST-style dataset (MNIST, Fashion-MNIST), train and test."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import UserError
from ..idx import read_idx
from .base import SourceImages, class_names_for_labels, stat_fingerprint

SPLITS_INSIDE = True
NAME = "IDX files"
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def _file(folder: Path, name: str) -> Path:
    """The gzipped file, or the same file already unpacked."""
    gz = folder / name
    return gz if gz.exists() or not (folder / gz.stem).exists() else folder / gz.stem


def claims(path: Path) -> bool:
    return path.is_dir() and _file(path, SPLIT_FILES["train"][0]).exists()


def read(path: Path, split: str) -> SourceImages:
    image_file, label_file = (_file(path, name) for name in SPLIT_FILES[split])
    if not (image_file.exists() and label_file.exists()):
        raise UserError(f"{path} does not hold the {split} split ({image_file.name} and {label_file.name}).")
    images = read_idx(image_file, expected_ndim=3)
    labels = read_idx(label_file, expected_ndim=1)
    if images.shape[0] != labels.shape[0]:
        raise UserError(f"{image_file} holds {images.shape[0]} images but {label_file} holds "
                        f"{labels.shape[0]} labels; the files do not belong together.")
    return SourceImages(class_names=class_names_for_labels(labels), array=images[..., None],
                        labels=labels.astype(np.int64), labels_from=str(label_file))


def fingerprint(path: Path, split: str) -> str:
    return "|".join(stat_fingerprint(_file(path, name)) for name in SPLIT_FILES[split])
