"""A .zip of an image folder, read member by member without extracting it."""

from __future__ import annotations

import threading
import zipfile
import zlib
from pathlib import Path

from ...errors import UserError
from ..images import SkipImage
from .base import EncodedImage, SourceImages, assign_classes, image_extensions, stat_fingerprint

SPLITS_INSIDE = False  # a held-out split is a sibling source (test/ beside train/)
NAME = "zip of an image folder"
MAX_MEMBER_BYTES = 256 << 20  # no small image is near this; a bigger member is skipped unread


def claims(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".zip"


def _open(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile, ValueError) as err:
        raise UserError(f"{path} is not a readable zip archive ({err}).") from None


def read(path: Path, split: str) -> SourceImages | None:
    archive = _open(path)
    # macOS's Finder adds __MACOSX/ (resource forks, never images) beside the folder it compresses: not data.
    members = [m for m in archive.infolist() if not m.is_dir() and not m.filename.startswith("__MACOSX/")]
    # A zip made of a folder ("train/0/a.png", ...) holds everything under one top folder: drop it.
    tops = {m.filename.split("/", 1)[0] for m in members}
    prefix = f"{tops.pop()}/" if len(tops) == 1 and all("/" in m.filename for m in members) else ""
    extensions, skipped, usable = image_extensions(), [], {}
    for m in members:
        name = m.filename[len(prefix):]
        if Path(name).suffix.lower() not in extensions:
            skipped.append((name, "is not an image file"))
        elif m.flag_bits & 0x1:
            skipped.append((name, "is encrypted"))
        elif m.file_size > MAX_MEMBER_BYTES:
            skipped.append((name, f"is {m.file_size:,} bytes uncompressed, too large for an image"))
        else:
            usable[name] = m
    class_names, labelled, loose = assign_classes(list(usable), path)
    lock = threading.Lock()  # one ZipFile is shared by the decoding threads

    def reader(member: zipfile.ZipInfo):
        def read_member() -> bytes:
            try:
                with lock:
                    return archive.read(member)
            except (zipfile.BadZipFile, zlib.error, NotImplementedError, EOFError) as err:
                # a bad CRC, a damaged stream, or a compression method zipfile lacks (Deflate64): skipped
                raise SkipImage(f"cannot be read from {path.name} ({err})") from None
        return read_member

    files = [EncodedImage(name, label, reader(usable[name])) for name, label in labelled]
    return SourceImages(class_names=class_names, files=files, skipped=skipped + loose)


def fingerprint(path: Path, split: str) -> str:
    return stat_fingerprint(path)
