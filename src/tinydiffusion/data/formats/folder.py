"""A folder of image files in any format Pillow reads: one sub-folder per class, or flat (unlabelled)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from ...files import not_a_file, read_regular_file
from ..images import MAX_FILE_BYTES
from .base import SourceImages, assign_classes, image_extensions, is_hidden, shown

SPLITS_INSIDE = False  # a held-out split is a sibling source (test/ beside train/)
NAME = "image folder"


def claims(path: Path) -> bool:
    return path.is_dir()


@dataclass
class Walk:
    files: list[tuple[str, Path, os.stat_result]] = field(default_factory=list)  # (relative name, path, stat)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative name, why): never read
    folders: set[str] = field(default_factory=set)  # every folder walked, by relative name
    hidden: int = 0  # hidden and system entries, left out


def _walk(root: Path) -> Walk:
    """Every regular file below root, following links to folders but never in a loop nor up to a folder that
    holds root. Hidden and system entries are counted, never listed; what is not a regular file (a named pipe,
    a device, a socket: reading one could block or never end) and what cannot be stat'ed (a broken link, a link
    loop) is skipped with its reason. Names keep bytes that are not UTF-8 (os.fsencode gives them back)."""
    walk, seen, stack = Walk(), set(), [("", root)]
    top = os.path.realpath(root)
    while stack:
        prefix, folder = stack.pop()
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen:  # a link back into the tree: walked already
                continue
            seen.add((st.st_dev, st.st_ino))
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as err:
            walk.skipped.append((shown(prefix or "."), f"cannot be listed ({err.strerror or err})"))
            continue
        for entry in entries:
            name = prefix + entry.name
            if is_hidden(entry.name):
                walk.hidden += 1
                continue
            try:
                st = entry.stat()  # through links
            except OSError as err:
                walk.skipped.append((shown(name), f"cannot be read ({err.strerror or err})"))
                continue
            if not_a_file(st.st_mode) == "a folder":
                target = os.path.realpath(entry.path)
                if target != top and top.startswith(target.rstrip(os.sep) + os.sep):  # a link to / or above root
                    walk.skipped.append((shown(name), "links to a folder that holds the source"))
                    continue
                walk.folders.add(shown(name))
                stack.append((name + "/", Path(entry.path)))
            elif not_a_file(st.st_mode):
                walk.skipped.append((shown(name), f"is {not_a_file(st.st_mode)}, not a file"))
            else:
                walk.files.append((name, Path(entry.path), st))
    return walk


def read(path: Path, split: str) -> SourceImages | None:
    walk = _walk(path)
    extensions = image_extensions()
    images = {shown(name): partial(read_regular_file, p, MAX_FILE_BYTES) for name, p, _ in walk.files
              if Path(name).suffix.lower() in extensions}
    skipped = walk.skipped + [(shown(name), "is not an image file") for name, _, _ in walk.files
                              if shown(name) not in images]
    return assign_classes(images, path, walk.folders, skipped, walk.hidden)


def fingerprint(path: Path, split: str) -> str:
    """Every file's name, size and modification time: a changed, added or removed image changes it."""
    digest = hashlib.sha256(os.fsencode(path.resolve()))
    walk = _walk(path)
    for name, _, st in sorted(walk.files):
        digest.update(os.fsencode(name) + f"\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    for name, why in walk.skipped:
        digest.update(f"{name}\0{why}\n".encode())
    return digest.hexdigest()
