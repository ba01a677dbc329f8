"""What a visitor can store on the server. Gradio bounds each uploaded file (max_file_size) but not how many files
one request carries, how much all requests store, or for how long: this ASGI middleware, in front of the page,
bounds the bytes of every request that carries a body, keeps everything the page stores (uploads, images sent as
data: URLs, results) within a total by deleting the oldest, and deletes what is older than a time limit. No Gradio
here (import_gradio() imports it only when called), so the tests call the middleware and sweep() directly."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from ..errors import UserError

MAX_PIXELS = 4096 * 4096  # an upload with more pixels is refused before it is decoded (handlers.read_upload)
MAX_UPLOAD_MB = 10  # and a larger file by the server, before it is stored (page.serve)
KEEP_SECONDS = 600  # stored files older than this are deleted (a page uses an upload within seconds)
STORED_FILES = 20  # the total the page stores: this many files of the largest size a file may have
GRACE_SECONDS = 60  # a file younger than this is never deleted to make room: a request may be using it


class StorageLimit:
    """ASGI middleware: a request with a body must say its length (Content-Length), within request_bytes, and is
    let in only once the folder has room for it within total_bytes."""

    def __init__(self, app, folder: str | Path, request_bytes: int, total_bytes: int,
                 keep_seconds: float = KEEP_SECONDS):
        self.app, self.folder = app, Path(folder)
        self.request_bytes, self.total_bytes, self.keep_seconds = request_bytes, total_bytes, keep_seconds

    async def __call__(self, scope, receive, send):
        bodiless = scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS")
        refusal = None if bodiless else self.refusal(dict(scope["headers"]))
        if refusal is None:
            return await self.app(scope, receive, send)
        status, message = refusal
        print(f"refused a request to {scope['path']}: {message}", file=sys.stderr, flush=True)
        body = json.dumps({"error": message, "detail": message}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    def refusal(self, headers: dict[bytes, bytes]) -> tuple[int, str] | None:
        """(HTTP status, one sentence) for a request that may not come in, else None."""
        if b"transfer-encoding" in headers or b"content-length" not in headers:
            return 411, "a request with a body must give its length (Content-Length); this page takes no streams."
        try:
            length = int(headers[b"content-length"])
        except ValueError:
            return 400, "the request's Content-Length is not a number."
        if length > self.request_bytes:
            return 413, (f"a request may carry at most {self.request_bytes / 2**20:.2g} MB, and this one is "
                         f"{length / 2**20:.2g} MB; send one image at a time.")
        if length and not sweep(self.folder, self.keep_seconds, self.total_bytes - length):
            return 507, "the page's storage for uploads is full; try again in a few minutes."
        return None


def sweep(folder: Path, keep_seconds: float, room_for: int) -> bool:
    """Delete the files in `folder` older than keep_seconds, then the oldest others (but none younger than
    GRACE_SECONDS) until at most `room_for` bytes are left; whether that was reached."""
    now = time.time()
    files = []
    for root, _, names in os.walk(folder):
        for name in names:
            path = Path(root, name)
            try:
                stat = path.lstat()
            except OSError:
                continue  # deleted meanwhile
            files.append((stat.st_mtime, stat.st_size, path))
    files.sort()
    total = sum(size for _, size, _ in files)
    for mtime, size, path in files:
        if now - mtime <= keep_seconds and (total <= room_for or now - mtime < GRACE_SECONDS):
            continue
        try:
            path.unlink()
            total -= size
        except OSError:
            pass
    return total <= room_for


def import_gradio():
    """Gradio, with its analytics off (it would otherwise report to its makers), or one sentence without it."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError:
        raise UserError('the demo page needs Gradio, an optional extra; install it with pip install -e ".[demo]" '
                        '(or pip install "tinydiffusion[demo]").') from None
    return gradio
