"""Files: atomic writes and the one cache folder every command shares.

Nothing here knows about models or images; checkpoints, figures, prepared datasets and downloads
all write through these so that a crash never leaves half a file under a real name.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def cache_dir() -> Path:
    """$TINYDIFFUSION_CACHE, else $XDG_CACHE_HOME/tinydiffusion, else ~/.cache/tinydiffusion.

    Downloaded datasets, prepared arrays, domain classifiers and FD statistics all live below it.
    """
    if os.environ.get("TINYDIFFUSION_CACHE"):
        return Path(os.environ["TINYDIFFUSION_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tinydiffusion"


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write `payload` to a temporary file beside `path`, fsync it, rename it over `path`, fsync the folder."""
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        f.write(payload)


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write (by any means); on success it is fsynced and renamed
    over `path`, on failure removed. For outputs too large to hold in memory as one bytes object."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@contextmanager
def atomic_directory(path: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `path` to fill; on success it is renamed to `path`, on failure removed.
    Readers see either no folder or a complete one. For content named by its key (caches): when another
    process finished the same folder first, its copy is kept and this one discarded."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        for f in tmp.iterdir():
            with open(f, "rb") as handle:
                os.fsync(handle.fileno())
        fsync_dir(tmp)
        try:
            tmp.rename(path)
        except OSError:  # the folder exists (and is not empty): another process made it
            if not path.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(path.parent)


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on `path` (created if missing): a second process that asks for the same
    lock waits here until the first is done (e.g. every torchrun process preparing the same dataset)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, and atomic renames still keep every file whole
            yield
            return
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


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
