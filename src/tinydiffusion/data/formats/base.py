"""The types every format returns, and what several formats share."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ... import words
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
    hidden: int = 0  # hidden and system entries left out (is_hidden): not counted as skipped files
    warnings: list[str] = field(default_factory=list)  # said once, when the source is prepared
    labels_from: str = ""  # the file the labels came from, for messages

    @property
    def labelled(self) -> bool:
        return bool(self.class_names)


def held_out_sibling(path: Path) -> Path | None:
    """The held-out split of a source named like a train split: `train/` -> `test/` or `val/` beside it
    (`train.zip` -> `test.zip` or a `test/` folder)."""
    stem = path.stem
    if "train" not in stem.lower():
        return None
    at = stem.lower().index("train")
    for name in HELD_OUT_NAMES:
        for suffix in dict.fromkeys((path.suffix, "", ".zip", ".npz", ".npy")):
            candidate = path.with_name(stem[:at] + name + stem[at + 5:] + suffix)
            if candidate.exists() and candidate != path:
                return candidate
    return None


def stat_fingerprint(path: Path, split: str = "") -> str:
    """Size and modification time: what changes when a file is rewritten, without reading it (any split)."""
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


def assign_classes(readers: dict[str, Callable[[], bytes]], source: Path, folders: set[str],
                   skipped: list[tuple[str, str]], hidden: int) -> SourceImages:
    """A folder's or a zip's images, by path relative to the source ("cat/001.png") with their readers, as classes
    and files; `skipped` and `hidden` are what listing them left out.

    Sub-folders are classes, named after the folder (images in deeper folders belong to the top one); a source
    with no sub-folders is unlabelled (label -1). One rule for folders and zips alike: a source whose only entry
    is one folder (a zip of `pets/`, or a folder holding just `cat/`) is read as that folder, so a lone class
    folder is unlabelled data. Beside class folders, loose files are skipped; a class folder without images is
    a warning. `folders` are every non-hidden folder of the source, empty ones included ("cat", "cat/young").
    """
    names = sorted(readers)
    if not names:
        raise UserError(f"{source} holds no image files.")
    prefix = _single_folder(names, folders)
    relative = {n: n[len(prefix):] for n in names}
    top = {r.split("/", 1)[0] for r in relative.values() if "/" in r}
    if not top:
        return SourceImages(files=[EncodedImage(n, -1, readers[n]) for n in names], skipped=skipped, hidden=hidden)
    train = next((t for t in sorted(top) if t.lower() == "train"), None)
    if train is not None and {t.lower() for t in top} & set(HELD_OUT_NAMES):
        raise UserError(f"{source} holds split folders ({', '.join(sorted(top))}), not class folders; "
                        f"point --data at its train folder ({source / prefix / train}).")
    class_names = tuple(sorted(top))
    check_class_names(class_names, f"{source}")
    index = {name: i for i, name in enumerate(class_names)}
    files = [EncodedImage(n, index[r.split("/", 1)[0]], readers[n]) for n, r in relative.items() if "/" in r]
    skipped = skipped + [(n, "lies outside the class folders") for n, r in relative.items() if "/" not in r]
    empty = sorted({f[len(prefix):].split("/", 1)[0] for f in folders if f.startswith(prefix)} - top)
    warnings = []
    if empty:
        listed = ", ".join(repr(e) for e in empty[:10]) + (f" and {len(empty) - 10} more" if len(empty) > 10 else "")
        verbs = ("holds", "is") if len(empty) == 1 else ("hold", "are")
        warnings.append(f"warning: {words.count(len(empty), 'class folder')} of {source} {verbs[0]} no image files and "
                        f"{verbs[1]} left out: {listed}.")
    return SourceImages(class_names, files, skipped=skipped, hidden=hidden, warnings=warnings)


def _single_folder(names: list[str], folders: set[str]) -> str:
    """The path ("pets/" or "data/pets/") of the one folder that holds everything, or "" when there is none."""
    prefix = ""
    while True:
        below = [n[len(prefix):] for n in names]
        tops = {b.split("/", 1)[0] for b in below} | {f[len(prefix):].split("/", 1)[0] for f in folders
                                                      if f.startswith(prefix) and len(f) > len(prefix)}
        if len(tops) != 1 or not all("/" in b for b in below):
            return prefix
        prefix += tops.pop() + "/"


def check_class_names(names, what: str) -> None:
    """`--class` picks a class by its name, in any case: names must be non-empty, distinct and not paths."""
    seen = {}
    for name in names:
        if not name.strip():
            raise UserError(f"{what} has an empty class name; give every class a name.")
        if "/" in name or "\\" in name or name.strip() in (".", "..") or not name.isprintable():
            raise UserError(f"{what} has the class name {name!r}, which looks like a path or holds control "
                            "characters; class names are plain words.")
        key = name.strip().lower()
        if key in seen:
            raise UserError(f"{what} has two classes named {seen[key]!r} and {name!r}, which --class cannot tell "
                            "apart; give each class its own name.")
        seen[key] = name


# Entries a person does not mean as data: hidden ones (a leading dot: .DS_Store, .ipynb_checkpoints, macOS's ._x
# resource forks, .git) and those an operating system or tool adds (macOS's __MACOSX in zips, Windows' Thumbs.db
# and desktop.ini, a Synology NAS's @eaDir, lost+found).
SYSTEM_NAMES = {"__macosx", "thumbs.db", "ehthumbs.db", "desktop.ini", "$recycle.bin", "system volume information",
                "@eadir", "lost+found", "__pycache__"}


def is_hidden(name: str) -> bool:
    """Whether one path component names a hidden or system entry, never data."""
    return name.startswith(".") or name.lower() in SYSTEM_NAMES


def shown(name: str) -> str:
    """A file name as messages and manifests print it: bytes that are not UTF-8 (an old archive's, a network
    share's) become U+FFFD rather than an error when printed."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
