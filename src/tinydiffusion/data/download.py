"""Checked downloads: each file streamed to a temporary name, its MD5 compared with the official sum,
and only then renamed into place. A wrong sum, a dropped connection or Ctrl-C leave nothing behind."""

from __future__ import annotations

import hashlib
import http.client
import urllib.request
from pathlib import Path

from tqdm import tqdm

from ..errors import UserError
from ..files import atomic_file

CHUNK = 1 << 20


class _BadDownload(Exception):
    """A download that arrived but must not be kept (short, or with the wrong checksum)."""


def download_files(folder: Path, mirrors: tuple[str, ...], files: dict[str, str], what: str,
                   progress: bool = True, timeout: float = 60) -> None:
    """Fetch each missing file of `files` ({name: official MD5}) from the first mirror that serves it whole."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the data folder {folder} ({err.strerror or err}).") from None
    for name, md5 in files.items():
        target = folder / name
        if target.exists():
            continue
        errors = []
        for mirror in mirrors:
            try:
                _fetch(mirror + name, target, md5, progress, timeout)
                break
            except (OSError, http.client.HTTPException, _BadDownload) as err:
                errors.append(f"{mirror}: {err}")
        else:
            raise UserError(f"could not download {name} ({'; '.join(errors)}); download the {what} files by hand "
                            f"into {folder} or point --data-dir at a copy.")


def _fetch(url: str, target: Path, md5: str, progress: bool, timeout: float) -> None:
    with atomic_file(target) as tmp:  # removed on any exception, so a half file never gets the real name
        digest, received = hashlib.md5(), 0
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            with tqdm(total=expected, unit="B", unit_scale=True, desc=f"downloading {target.name}",
                      disable=not progress, leave=False) as bar:
                while chunk := response.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if expected is not None and received != expected:
            raise _BadDownload(f"the connection closed after {received:,} of {expected:,} bytes")
        if digest.hexdigest() != md5:
            raise _BadDownload(f"MD5 {digest.hexdigest()} does not match the official {md5}")
