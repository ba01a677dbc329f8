"""Dataset formats: each file here reads one kind of source into `SourceImages`, nothing more.

A format module has `NAME`, `claims(path) -> bool`, `read(path, split) -> SourceImages | None` (None:
the source has no such split) and `fingerprint(path, split) -> str` (changes when the source does).
Shaping (mode, size, channels) and caching happen later, once, for every format alike
(`prepared.py`). Adding a format is one new file here and one line in `FORMATS`.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import UserError
from . import arrays, cifar_binary, folder, idx_folder, zip_folder
from .base import EncodedImage, SourceImages

__all__ = ["FORMATS", "EncodedImage", "SourceImages", "find_format"]

FORMATS = (  # the first that claims a path reads it
    idx_folder,    # the four IDX files of MNIST-style datasets
    folder,        # a folder of image files, one sub-folder per class
    zip_folder,    # the same, inside a .zip
    cifar_binary,  # CIFAR-10's binary archive
    arrays,        # .npz / .npy: uint8 N x H x W [x C], optional labels and class_names
)


def find_format(path: Path):
    """The format that reads `path`, or one sentence saying none does."""
    for fmt in FORMATS:
        if fmt.claims(path):
            return fmt
    raise UserError(f"{path} is not a data source tinydiffusion can read: give a folder of images, a .zip of one, "
                    "an .npz or .npy array, or a named dataset (fashion-mnist, mnist, cifar10).")
