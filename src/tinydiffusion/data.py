"""Fashion-MNIST: IDX files in, one uint8 tensor in memory, and the pixel <-> model-space map.

The whole dataset (60,000 x 28 x 28 bytes = 47 MB) stays in memory as a uint8 tensor; training
draws batches by index, so there is no per-image Python work in the training loop.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import UserError

CLASS_NAMES = (
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle-boot",
)

MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
)

# The official MD5 sums, checked on what is downloaded (not on files already in a directory,
# which are checked by their headers: a re-split copy has other sums but is just as valid).
FILES = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

IDX_UBYTE = 0x08
MAX_IDX_BYTES = 1 << 31  # no real image file is near this; refuse headers that claim more


# --- pixels <-> model space: the only place that knows the model works in [-1, 1] ------------

def to_model_space(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels in [0, 255] -> float in [-1, 1]."""
    return pixels.float().div(127.5).sub(1.0)


def to_pixels(x: torch.Tensor) -> torch.Tensor:
    """Model-space float in [-1, 1] (clipped) -> uint8 pixels in [0, 255]."""
    return ((x.float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)


# --- IDX files -----------------------------------------------------------------------------

def _open(path: Path):
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


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
    """Read an IDX file (gzipped or not) of unsigned bytes, validating its header.

    Format (LeCun et al.): 2 zero bytes, a type byte (0x08 = ubyte), a byte giving the number
    of dimensions, then each dimension as a big-endian uint32, then the data.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist.")
    try:
        with _open(path) as stream:
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


# --- download ------------------------------------------------------------------------------

def download(data_dir: str | Path, mirrors: tuple[str, ...] = MIRRORS, files: dict[str, str] = FILES) -> None:
    """Fetch the missing IDX files, verify their MD5 sums and write each atomically."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    for name, md5 in files.items():
        target = data_dir / name
        if target.exists():
            continue
        errors = []
        for mirror in mirrors:
            try:
                with urllib.request.urlopen(mirror + name, timeout=60) as response:
                    payload = response.read()
            except OSError as err:
                errors.append(f"{mirror}: {err}")
                continue
            digest = hashlib.md5(payload).hexdigest()
            if digest != md5:
                errors.append(f"{mirror}: MD5 {digest} does not match the official {md5}")
                continue
            atomic_write_bytes(target, payload)
            break
        else:
            raise UserError(f"could not download {name} ({'; '.join(errors)}); download the four Fashion-MNIST "
                            f"IDX files by hand into {data_dir} or point --data-dir at a copy.")


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write to a temporary file beside `path`, fsync it, rename it over `path`, fsync the folder."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes files private (0600); outputs should read like any other file
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- the dataset ---------------------------------------------------------------------------

@dataclass
class ImageDataset:
    """A whole split in memory: images uint8 [N, C, H, W], labels int64 [N]."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...] = CLASS_NAMES

    def __len__(self) -> int:
        return self.images.shape[0]


def load_fashion_mnist(data_dir: str | Path, split: str = "train", download_missing: bool = True) -> ImageDataset:
    if split not in SPLIT_FILES:
        raise UserError(f"unknown split {split!r}; use 'train' or 'test'.")
    data_dir = Path(data_dir)
    image_file, label_file = (data_dir / name for name in SPLIT_FILES[split])
    if not (image_file.exists() and label_file.exists()):
        if not download_missing:
            raise UserError(f"Fashion-MNIST is not in {data_dir} (need {image_file.name} and {label_file.name}); "
                            "point --data-dir at the folder holding the four IDX files.")
        download(data_dir, files={n: FILES[n] for n in SPLIT_FILES[split]})
    images = read_idx(image_file, expected_ndim=3)
    labels = read_idx(label_file, expected_ndim=1)
    if images.shape[0] != labels.shape[0]:
        raise UserError(f"{image_file} holds {images.shape[0]} images but {label_file} holds "
                        f"{labels.shape[0]} labels; the files do not belong together.")
    if labels.size and labels.max() >= len(CLASS_NAMES):
        raise UserError(f"{label_file} holds label {labels.max()}; Fashion-MNIST labels are 0-9.")
    return ImageDataset(
        images=torch.from_numpy(images.copy()).unsqueeze(1),
        labels=torch.from_numpy(labels.astype(np.int64)),
    )


def load_dataset(name: str, data_dir: str | Path, split: str = "train", download_missing: bool = True) -> ImageDataset:
    if name != "fashion-mnist":
        raise UserError(f"unknown dataset {name!r}; the available one is 'fashion-mnist'.")
    return load_fashion_mnist(data_dir, split, download_missing)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as a gzipped IDX file (used by tests and tools to make small datasets)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, IDX_UBYTE, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    Path(path).write_bytes(gzip.compress(header + array.tobytes(), mtime=0))


def class_index(name_or_index: str, class_names: tuple[str, ...] = CLASS_NAMES) -> int:
    """'sneaker', 'Sneaker' or '7' -> 7; an unknown name lists the valid ones."""
    text = str(name_or_index).strip().lower()
    if text.isdigit() and int(text) < len(class_names):
        return int(text)
    normalized = text.replace("_", "-").replace(" ", "-").replace("/", "-")
    aliases = {"t-shirt-top": "t-shirt", "tshirt": "t-shirt", "top": "t-shirt",
               "boot": "ankle-boot", "ankle": "ankle-boot"}
    normalized = aliases.get(normalized, normalized)
    if normalized in class_names:
        return class_names.index(normalized)
    raise UserError(f"unknown class {name_or_index!r}; choose one of {', '.join(class_names)} "
                    f"or an index 0-{len(class_names) - 1}.")
