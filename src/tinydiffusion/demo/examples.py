"""A few images of a model's data for the demo page, read without preparing the source: the page shows ten, so
only those ten are decoded, and nothing is written to the prepared-data cache (a 70,000-image folder is listed,
not decoded)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..config import DataConfig
from ..data import load_data, locate, named_dataset
from ..data.classes import first_of_each_class
from ..data.images import Shape, SkipImage, array_to_image, open_image, shape_image
from ..errors import UserError

COUNT = 10  # images on the page: one per class in turn, the first of each


def examples(data: DataConfig, shape: tuple[int, int, int], count: int = COUNT
             ) -> tuple[torch.Tensor, list[str | None]] | None:
    """Up to `count` images of the data's test split (else its train split) as uint8 [N, C, H, W] of `shape`,
    with each one's class name (None without classes), or None when the data is not on this machine."""
    data = dataclasses.replace(data, download=False)
    for split in ("test", "train"):
        try:
            located = locate(data, split, progress=False)
        except UserError:  # not on this machine, or not data at all
            return None
        if located is None:
            continue
        fmt, path, split = located
        if fmt is None:  # already a prepared file: opening it reads nothing (memory-mapped)
            prepared = load_data(data, split, progress=False)
            return _pick(prepared.images, prepared.labels, prepared.class_names, shape, count)
        found = fmt.read(path, split)
        named = named_dataset(data)
        class_names = named.class_names if named else found.class_names
        if found.array is not None:
            return _pick(found.array, found.labels, class_names, shape, count)
        labels = np.array([file.label for file in found.files]) if class_names else None
        return _pick([file.read for file in found.files], labels, class_names, shape, count)
    return None


def _pick(images, labels, class_names, shape, count):
    """The first decodable image of each class in turn (or the first `count`), shaped; the rest are not read."""
    channels, size, _ = shape
    order = range(len(images))
    if labels is not None and len(class_names):
        labels = np.asarray(labels)
        order = first_of_each_class(labels, len(class_names), per_class=3)  # a spare or two for a damaged file
    picked, names, classes_done = [], [], set()
    for i in order:
        label = None if labels is None else int(labels[i])
        if label in classes_done:
            continue
        try:
            picked.append(_shaped(images[i], Shape(size, channels)))
        except SkipImage:
            continue
        names.append(None if label is None else class_names[label])
        if label is not None:
            classes_done.add(label)
        if len(picked) == count:
            break
    if not picked:
        return None
    return torch.from_numpy(np.stack(picked)).permute(0, 3, 1, 2).contiguous(), names


def _shaped(image, shape: Shape) -> np.ndarray:
    if callable(image):  # an encoded file, read and decoded only now
        return shape_image(open_image(image()), shape)
    array = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[2] not in (1, 3, 4):  # C, H, W
        array = array.transpose(1, 2, 0)
    return shape_image(array_to_image(array if array.ndim == 3 else array[..., None]), shape)
