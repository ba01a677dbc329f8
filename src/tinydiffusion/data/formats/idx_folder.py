"""A folder holding the four IDX files of an MNIST-style dataset (MNIST, Fashion-MNIST), train and test, read with
every header checked.

IDX (LeCun et al.): 2 zero bytes, a type byte (0x08 = ubyte), a byte giving the number of dimensions, then each
dimension as a big-endian uint32, then the data; gzipped or not.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from ...errors import UserError
from .base import SourceImages, class_names_for_labels, stat_fingerprint

SPLITS_INSIDE = True
NAME = "IDX files"
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
IDX_UBYTE = 0x08
MAX_IDX_BYTES = 1 << 31  # no real image file is near this; refuse headers that claim more


def _read_exactly(stream, n: int, path: Path, what: str) -> bytes:
    """Read n bytes in chunks, so a header that lies about the size cannot make us allocate it."""
    chunks, remaining = [], n
    while remaining > 0:
        chunk = stream.read(min(remaining, 1 << 20))
        if not chunk:
            raise UserError(f"{path} is truncated: its header promises {n} bytes of {what}, "
                            f"but it holds only {n - remaining}; delete it and download it again.")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_idx(path: str | Path, expected_ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (gzipped or not) of unsigned bytes, validating its header."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} {'is not a regular file' if path.exists() else 'does not exist'}.")
    try:
        with open(path, "rb") as f:
            gzipped = f.read(2) == b"\x1f\x8b"
        with gzip.open(path, "rb") if gzipped else open(path, "rb") as stream:
            magic = stream.read(4)
            if len(magic) < 4 or magic[0] != 0 or magic[1] != 0:
                raise UserError(f"{path} is not an IDX file (bad magic number {magic.hex() or 'empty'}).")
            if magic[2] != IDX_UBYTE:
                raise UserError(f"{path} holds IDX type 0x{magic[2]:02x}; only unsigned bytes (0x08) are supported.")
            ndim = magic[3]
            if ndim == 0 or (expected_ndim is not None and ndim != expected_ndim):
                raise UserError(f"{path} has {ndim} dimensions; expected {expected_ndim or 'at least 1'}.")
            shape = tuple(int.from_bytes(_read_exactly(stream, 4, path, "header"), "big") for _ in range(ndim))
            size = math.prod(shape)  # exact: an int64 product of lying dimensions can wrap to a small number
            if size <= 0 or size > MAX_IDX_BYTES:
                raise UserError(f"{path} has an implausible shape {shape} in its header.")
            data = _read_exactly(stream, size, path, "data")
            if stream.read(1):
                raise UserError(f"{path} is longer than its header {shape} says; the file is damaged.")
    except (OSError, EOFError, gzip.BadGzipFile, ValueError, zlib.error) as err:
        raise UserError(f"{path} cannot be read ({err}); delete it and download it again.") from None
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as a gzipped IDX file (used by tests and tools to make small datasets)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, IDX_UBYTE, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    Path(path).write_bytes(gzip.compress(header + array.tobytes(), mtime=0))


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
