"""Checked downloads: each file streamed to a temporary name, its length and checksum compared with what was
promised, and only then renamed into place. A wrong sum, a dropped connection or Ctrl-C leave nothing behind. The
named datasets' files (checked against their official MD5s) and the web export's runtime (export/web_page.py,
against its pinned SHA-256) are both fetched by `download`."""

from __future__ import annotations

import hashlib
import http.client
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from ..errors import UserError
from ..files import atomic_file

CHUNK = 1 << 20
HASH_NAMES = {"md5": "MD5", "sha256": "SHA-256"}


class DownloadFailed(Exception):
    """A download that failed, or arrived but must not be kept (short, too large, or with another checksum); its
    text says why, as in "the connection closed after 4,000 of 10,240 bytes"."""


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
                download(mirror + name, target, "md5", md5, "official", progress=progress, timeout=timeout)
                break
            except DownloadFailed as err:
                errors.append(f"{mirror}: {err}")
        else:
            raise UserError(f"could not download {name} ({'; '.join(errors)}); download the {what} files by hand "
                            f"into {folder} or point --data-dir at a copy.")


def download(url: str, target: Path, algorithm: str, expected: str, whose: str, max_bytes: int | None = None,
             progress: bool = False, timeout: float = 60) -> None:
    """Stream `url` to a temporary file beside `target` (its folder made if missing) and rename it into place only
    if it arrived whole (as long as its Content-Length said), within `max_bytes`, and with the checksum `expected`
    (`algorithm`: "md5" or "sha256"; `whose` says whose sum it is: "official", "pinned"). DownloadFailed otherwise,
    saying why in a phrase, and nothing is left behind."""
    digest, received = hashlib.new(algorithm), 0
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(target) as tmp:  # removed on any exception, so a half file never gets the real name
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
                length = response.headers.get("Content-Length")
                expected_bytes = int(length) if length and length.isdigit() else None
                if max_bytes is not None and expected_bytes is not None and expected_bytes > max_bytes:
                    raise DownloadFailed(f"it is {expected_bytes:,} bytes, more than the {max_bytes:,} allowed")
                with tqdm(total=expected_bytes, unit="B", unit_scale=True, desc=f"downloading {target.name}",
                          disable=not progress, leave=False) as bar:
                    while chunk := response.read(CHUNK):
                        received += len(chunk)
                        if max_bytes is not None and received > max_bytes:
                            raise DownloadFailed(f"it is more than the {max_bytes:,} bytes allowed")
                        digest.update(chunk)
                        out.write(chunk)
                        bar.update(len(chunk))
            if expected_bytes is not None and received != expected_bytes:
                raise DownloadFailed(f"the connection closed after {received:,} of {expected_bytes:,} bytes")
            if digest.hexdigest() != expected:
                raise DownloadFailed(f"{HASH_NAMES[algorithm]} {digest.hexdigest()} does not match the {whose} "
                                     f"{expected}")
    except (OSError, http.client.HTTPException) as err:  # an HTTP error says its status; others their reason alone
        url_error = isinstance(err, urllib.error.URLError) and not isinstance(err, urllib.error.HTTPError)
        raise DownloadFailed(str(err.reason if url_error else err)) from None
