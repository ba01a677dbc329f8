"""A folder of image files in any format Pillow reads: one sub-folder per class, or flat (unlabelled)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .base import EncodedImage, SourceImages, assign_classes, image_extensions

SPLITS_INSIDE = False  # a held-out split is a sibling source (test/ beside train/)
NAME = "image folder"


def claims(path: Path) -> bool:
    return path.is_dir()


def _walk(root: Path):
    """(relative name, path) of every file below root, following links to folders but never in a loop,
    and the files that cannot be stat'ed (broken links, link loops) as (name, why)."""
    found, broken, seen = [], [], set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in seen:  # a link back up the tree: do not descend again
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs.sort()
        for name in files:
            path = Path(folder) / name
            relative = path.relative_to(root).as_posix()
            try:
                os.stat(path)
            except OSError as err:
                broken.append((relative, f"cannot be read ({err.strerror or err})"))
                continue
            found.append((relative, path))
    return found, broken


def _reader(path: Path):
    return lambda: path.read_bytes()


def read(path: Path, split: str) -> SourceImages | None:
    found, skipped = _walk(path)
    extensions = image_extensions()
    images = {name: p for name, p in found if Path(name).suffix.lower() in extensions}
    skipped += [(name, "is not an image file") for name, _ in found if name not in images]
    class_names, labelled, loose = assign_classes(list(images), path)
    files = [EncodedImage(name, label, _reader(images[name])) for name, label in labelled]
    return SourceImages(class_names=class_names, files=files, skipped=skipped + loose)


def fingerprint(path: Path, split: str) -> str:
    """Every file's name, size and modification time: a changed, added or removed image changes it."""
    digest = hashlib.sha256(str(path.resolve()).encode())
    found, broken = _walk(path)
    for name, p in sorted(found):
        st = os.stat(p)
        digest.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    for name, _ in broken:
        digest.update(f"{name}\0broken\n".encode())
    return digest.hexdigest()
