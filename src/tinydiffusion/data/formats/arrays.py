"""Arrays in NumPy's own files: an .npy of uint8 N x H x W [x C], or an .npz holding such an array
(`images` or `arr_0`) with optional `labels` (N integers) and `class_names` (strings).

Loaded with allow_pickle=False: an array that needs pickle is refused, never unpickled.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from ...errors import UserError
from ..memory import default_memory_limit
from .base import SourceImages, check_class_names, class_names_for_labels, stat_fingerprint

SPLITS_INSIDE = False  # a held-out split is a sibling file (test.npz beside train.npz)
NAME = "NumPy array"
fingerprint = stat_fingerprint
IMAGE_KEYS = ("images", "arr_0")
MAX_CLASSES = 100_000  # a label above this is a mistake (ImageNet-21k has 21,841 classes), not a class index


def claims(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in (".npz", ".npy")


def npz_member(archive, name: str, path: Path) -> np.ndarray:
    """One array of an .npz, refused if its header claims more bytes than the archive holds for it, or more
    than memory holds: numpy allocates the claimed shape before reading, and an .npz cannot be memory-mapped,
    so a 28 MB file of zeros could otherwise ask for 6 GiB, and a 1 kB file for petabytes."""
    member = archive.zip.getinfo(name + ".npy" if name + ".npy" in archive.zip.namelist() else name)
    if member.flag_bits & 0x1:
        raise UserError(f"{path} is encrypted; save the arrays without a password.")
    with archive.zip.open(member) as stream:
        version = np.lib.format.read_magic(stream)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(stream)
    claimed = math.prod(shape) * dtype.itemsize
    if claimed > member.file_size:
        raise UserError(f"{name} in {path} claims shape {shape}, more data than the file holds; it is damaged.")
    if claimed > default_memory_limit():
        raise UserError(f"{name} in {path} is {claimed / 2**30:.1f} GiB uncompressed, more than the "
                        f"{default_memory_limit() / 2**30:.1f} GiB of memory data may take; save it as an .npy, "
                        "which is read from disk as needed.")
    return archive[name]


def load_arrays(path: Path, image_keys: tuple[str, ...] = IMAGE_KEYS, npz_only: str = "") -> tuple[
        np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(images, labels or None, class names or None) as stored: an .npy's array, or an .npz's first of `image_keys`
    with its `labels` and `class_names`. `npz_only`: what the caller wants instead (a clause), for callers that
    take an .npz alone (evaluation/samples.py); anything else is then refused with it."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError as err:
        raise UserError(f"{path} cannot be read ({err.strerror or err}).") from None
    npy, npz = head == b"\x93NUMPY", head[:4] in (b"PK\x03\x04", b"PK\x05\x06")
    if npz_only and not npz:
        raise UserError(f"{path} is {'a single .npy array' if npy else 'not an .npz file'}; {npz_only}.")
    # an .npy, an .npz (a zip), or a pickle, which np.load refuses in a sentence of its own (below)
    if not (npy or npz) and head[:1] != b"\x80":
        raise UserError(f"{path} is not a NumPy file (it does not start as an .npy or an .npz does).")
    try:
        loaded = np.load(path, allow_pickle=False, mmap_mode="r" if npy else None)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            return loaded, None, None
        with loaded:
            key = next((k for k in image_keys if k in loaded.files), None)
            if key is None:
                raise UserError(f"{path} has no array named {' or '.join(image_keys)} "
                                f"(it holds {', '.join(loaded.files) or 'nothing'}).")
            images = npz_member(loaded, key, path)
            labels = npz_member(loaded, "labels", path) if "labels" in loaded.files else None
            names = npz_member(loaded, "class_names", path) if "class_names" in loaded.files else None
            return images, labels, names
    except ValueError as err:
        if "pickle" in str(err) or "Python objects" in str(err):  # np.load, or its memory-mapping of an .npy
            raise UserError(f"{path} holds Python objects that only pickle can load; tinydiffusion never unpickles "
                            "files. Save plain uint8 arrays (and integer labels, string class names).") from None
        raise UserError(f"{path} is not a readable NumPy file ({err}).") from None
    # RuntimeError: zipfile's "encrypted"; KeyError: a member the archive lists but cannot find
    except (OSError, EOFError, KeyError, zipfile.BadZipFile, RuntimeError) as err:
        raise UserError(f"{path} is not a readable NumPy file ({err}).") from None


def read(path: Path, split: str) -> SourceImages:
    images, labels, names = load_arrays(path)
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or len(images) == 0 or \
            (images.ndim == 4 and images.shape[3] not in (1, 3, 4)):
        raise UserError(f"the images in {path} are {images.dtype} of shape {images.shape}; they must be uint8 "
                        "N x H x W or N x H x W x C (C = 1, 3 or 4) with N > 0.")
    if images.ndim == 3:
        images = images[..., None]
    if labels is None:
        if names is not None:
            raise UserError(f"{path} has class_names but no labels; add labels (one integer per image).")
        return SourceImages(array=images)
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer) or \
            (labels.size and labels.min() < 0):
        raise UserError(f"the labels in {path} are {labels.dtype} of shape {labels.shape}; they must be "
                        f"{len(images)} non-negative integers, one per image.")
    if labels.max() >= MAX_CLASSES:  # names "0".."max" and a class embedding are made for every value up to it
        raise UserError(f"the labels in {path} go up to {labels.max()}; class indices must be below {MAX_CLASSES:,} "
                        "(number the classes 0, 1, 2, ...).")
    if names is None:
        names = class_names_for_labels(labels)
    elif names.dtype.kind != "U" or names.ndim != 1 or len(names) <= labels.max():
        raise UserError(f"class_names in {path} must be {int(labels.max()) + 1} or more strings, one per label "
                        f"value, not {names.dtype} of shape {names.shape}.")
    check_class_names([str(n) for n in names], f"class_names in {path}")
    return SourceImages(class_names=tuple(str(n) for n in names), array=images, labels=labels.astype(np.int64))
