"""The types every format returns, and what several formats share."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import UserError

HELD_OUT_NAMES = ("test", "val", "valid", "validation")


@dataclass
class EncodedImage:
    """One image file, not yet decoded: where it came from (for messages), its class, and its bytes."""

    name: str
    label: int  # -1 when the source is unlabelled
    read: Callable[[], bytes]


@dataclass
class SourceImages:
    """What a format found: encoded files (folders, zips) or an already decoded array, with classes."""

    class_names: tuple[str, ...] = ()
    files: list[EncodedImage] = field(default_factory=list)
    array: np.ndarray | None = None  # uint8 [N, H, W, C]
    labels: np.ndarray | None = None  # int64 [N], for array sources
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, why), found while listing
    labels_from: str = ""  # the file the labels came from, for messages

    @property
    def labelled(self) -> bool:
        return bool(self.class_names)


def held_out_sibling(path: Path) -> Path | None:
    """The held-out split of a source named like a train split: `train/` -> `test/` or `val/` beside it
    (`train.zip` -> `test.zip` or a `test/` folder)."""
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    if "train" not in stem.lower():
        return None
    at = stem.lower().index("train")
    for name in HELD_OUT_NAMES:
        for suffix in dict.fromkeys((path.suffix, "", ".zip", ".npz", ".npy")):
            candidate = path.with_name(stem[:at] + name + stem[at + 5:] + suffix)
            if candidate.exists() and candidate != path:
                return candidate
    return None


def stat_fingerprint(path: Path) -> str:
    """Size and modification time: what changes when a file is rewritten, without reading it."""
    try:
        st = os.stat(path)
    except OSError as err:
        raise UserError(f"{path} cannot be read ({err.strerror or err}).") from None
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def class_names_for_labels(labels: np.ndarray) -> tuple[str, ...]:
    """Names "0", "1", ... for integer labels that come without names."""
    return tuple(str(i) for i in range(int(labels.max()) + 1)) if labels.size else ()


def image_extensions() -> set[str]:
    """Every file ending of a format images are read in (.png, .jpg, .webp, .bmp, .tif, ...; not .eps)."""
    from PIL import Image

    from ..images import readable_formats

    formats = set(readable_formats())
    return {ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in formats}


def assign_classes(names: list[str], source: Path) -> tuple[tuple[str, ...], list[tuple[str, int]],
                                                            list[tuple[str, str]]]:
    """Image paths relative to the source ("cat/001.png") -> (class names, [(path, label)], skipped).

    Sub-folders are classes, named after the folder (images in deeper folders belong to the top one);
    a source with no sub-folders is unlabelled (label -1). Beside class folders, loose files are skipped.
    """
    names = sorted(names)
    if not names:
        raise UserError(f"{source} holds no image files.")
    top = {n.split("/", 1)[0] for n in names if "/" in n}
    if not top:
        return (), [(n, -1) for n in names], []
    train = next((t for t in sorted(top) if t.lower() == "train"), None)
    if train is not None and {t.lower() for t in top} & set(HELD_OUT_NAMES):
        raise UserError(f"{source} holds split folders ({', '.join(sorted(top))}), not class folders; "
                        f"point --data at its train folder ({source / train}).")
    class_names = tuple(sorted(top))
    index = {name: i for i, name in enumerate(class_names)}
    labelled = [(n, index[n.split("/", 1)[0]]) for n in names if "/" in n]
    skipped = [(n, "lies outside the class folders") for n in names if "/" not in n]
    return class_names, labelled, skipped
