"""CIFAR-10's *binary* archive (cifar-10-binary.tar.gz), read from the tar without extracting it.

Each record is 1 label byte and 3,072 pixel bytes: the red, green and blue 32x32 planes, row by row
(Krizhevsky 2009, the dataset page's "binary version"). The pickled "python version" is never read.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np

from ...errors import UserError
from .base import SourceImages, stat_fingerprint

SPLITS_INSIDE = True
NAME = "CIFAR-10 binary archive"
fingerprint = stat_fingerprint
FOLDER = "cifar-10-batches-bin"
SPLIT_MEMBERS = {"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)}
RECORD = 1 + 3 * 32 * 32
MAX_BATCH_BYTES = 10_000 * RECORD  # each official batch holds exactly 10,000 records


def claims(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith((".tar.gz", ".tgz", ".tar")) and "cifar-10" in path.name


def read(path: Path, split: str) -> SourceImages:
    try:
        with tarfile.open(path, "r:*") as archive:
            members = {m.name: m for m in archive.getmembers() if m.isfile()}
            chunks = []
            for name in SPLIT_MEMBERS[split]:
                member = members.get(f"{FOLDER}/{name}")
                if member is None:
                    raise UserError(f"{path} has no {FOLDER}/{name}; it is not CIFAR-10's binary archive.")
                if member.size % RECORD or member.size > MAX_BATCH_BYTES:
                    raise UserError(f"{FOLDER}/{name} in {path} is {member.size:,} bytes, not whole records of "
                                    f"{RECORD} bytes; the archive is damaged.")
                chunks.append(archive.extractfile(member).read())
            meta = members.get(f"{FOLDER}/batches.meta.txt")
            names = archive.extractfile(meta).read().decode("ascii", "replace").split() if meta else []
    except (OSError, EOFError, tarfile.TarError) as err:
        raise UserError(f"{path} is not a readable tar archive ({err}).") from None
    records = np.frombuffer(b"".join(chunks), dtype=np.uint8).reshape(-1, RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.size and labels.max() > 9:
        raise UserError(f"{path} holds label {labels.max()}; CIFAR-10 labels are 0-9.")
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # planes -> H x W x C
    if len(names) != 10:  # the meta file is missing or damaged: number the classes
        names = [str(i) for i in range(10)]
    return SourceImages(class_names=tuple(names), array=np.ascontiguousarray(images), labels=labels)
