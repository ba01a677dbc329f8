"""Files of samples and the checks on them: the guided-diffusion .npz layout, image layouts, labels.

A sample file holds `arr_0`, uint8 N x H x W x C, and optionally `labels`, the class each image was
asked for (the layout of guided-diffusion's evaluator, so files from other projects score as well).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from ..data.formats.arrays import load_arrays
from ..errors import UserError
from ..files import atomic_write_bytes, not_a_file


def save_npz(path: str | Path, images_nchw: np.ndarray, labels: np.ndarray | None,
             class_names: tuple[str, ...] = ()) -> None:
    """Write uint8 images [N, C, H, W] as arr_0 (N x H x W x C), with labels and the model's class names
    beside them (so the file is also a dataset `--data` reads), atomically."""
    arrays = {"arr_0": np.ascontiguousarray(np.asarray(images_nchw).transpose(0, 2, 3, 1))}
    if labels is not None:
        arrays["labels"] = np.asarray(labels).astype(np.int64)
        if class_names:
            arrays["class_names"] = np.array(class_names, dtype=str)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_samples_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read samples in the guided-diffusion layout: `arr_0` uint8 [N, H, W, C], optional `labels` [N]. The file is
    read as a dataset's .npz is (data/formats/arrays.py), then checked for this layout."""
    path = Path(path)
    try:
        kind = not_a_file(path.stat().st_mode)
    except FileNotFoundError:
        raise UserError(f"sample file {path} does not exist.") from None
    except OSError as err:
        raise UserError(f"cannot read sample file {path} ({err.strerror or err}).") from None
    if kind:  # never opened: a named pipe would block, a device never end
        raise UserError(f"sample file {path} is {kind}, not a regular file; samples are read from an .npz file.")
    images, labels, _ = load_arrays(path, ("arr_0",), npz_only="samples are an .npz holding arr_0, uint8 N x H x W "
                                    "x C, and optional labels, as `tinydiffusion sample --out FILE.npz` or np.savez "
                                    "writes")
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) == 0:
        raise UserError(f"arr_0 in {path} is {images.dtype} of shape {images.shape}; "
                        "it must be uint8 of shape N x H x W x C with N > 0.")
    if labels is not None and (labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer)):
        raise UserError(f"labels in {path} are {labels.dtype} of shape {labels.shape}; "
                        f"they must be {len(images)} integers, one per image.")
    return images, None if labels is None else labels.astype(np.int64)


def as_image_batch(images, image_shape: tuple[int, int, int]) -> torch.Tensor:
    """uint8 images as [N, C, H, W], [N, H, W, C] or (one channel) [N, H, W], numpy or torch ->
    uint8 [N, C, H, W] of `image_shape` (C, H, W); any other shape is one sentence."""
    images = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
    if images.dtype != torch.uint8:
        raise UserError(f"images must be uint8 pixels in [0, 255], not {images.dtype}.")
    c, h, w = image_shape
    if images.ndim == 3 and c == 1:
        images = images.unsqueeze(1)
    elif images.ndim == 4 and tuple(images.shape[1:]) != (c, h, w) and tuple(images.shape[1:]) == (h, w, c):
        images = images.permute(0, 3, 1, 2)
    if images.ndim != 4 or tuple(images.shape[1:]) != (c, h, w):
        raise UserError(f"images have shape {tuple(images.shape)}; these samples must be N x {h} x {w} x {c} "
                        f"(or N x {c} x {h} x {w}) images, the shape of the data they are scored against.")
    return images.contiguous()


def check_labels(labels, num: int, class_names: tuple[str, ...], what: str = "the data") -> np.ndarray | None:
    """The class each sample was asked for, as int64, or None; each must be one of the data's `class_names`."""
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.shape != (num,) or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"labels must be {num} integers, one per image, "
                        f"not {labels.dtype} of shape {labels.shape}.")
    if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise UserError(f"labels must be classes 0-{len(class_names) - 1} of {what}, "
                        f"but they run from {labels.min()} to {labels.max()}.")
    return labels.astype(np.int64)
