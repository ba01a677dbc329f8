"""The demo page (`tinydiffusion demo`): handlers.py does each tab's work without Gradio, page.py builds the page
with Gradio and serves it, and run_demo() here starts it. This module imports neither torch nor Gradio at the
top, so a port in use or a missing Gradio is one sentence at once.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import tempfile

from ..errors import UserError
from .limits import MAX_PIXELS, MAX_UPLOAD_MB, import_gradio


def check_port(host: str, port: int) -> None:
    """One sentence now, rather than after the model and the page are ready, if the server could not listen."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as err:
        raise UserError(f"--host {host} is not an address of this machine ({err}); try 127.0.0.1 or 0.0.0.0.") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server sets it
        try:
            probe.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise UserError(f"port {port} on {host} is in use; choose another --port.") from None
            raise UserError(f"cannot listen on {host}:{port} ({err.strerror or err}); choose another --port or "
                            "--host.") from None


def run_demo(checkpoint: str | None = None, device: str = "auto", host: str = "127.0.0.1", port: int = 7860,
             data_dir: str | None = None, max_upload_mb: float = MAX_UPLOAD_MB, max_pixels: int = MAX_PIXELS) -> None:
    """`tinydiffusion demo`: check the port and Gradio, load the model, serve the page until Ctrl-C or SIGTERM.
    Gradio keeps uploads in a private folder made here (before Gradio is imported, which reads where it is; inside
    GRADIO_TEMP_DIR if that is set), bounded by limits.py, and removed on the way out whatever stops the server."""
    check_port(host, port)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    given = os.environ.get("GRADIO_TEMP_DIR")  # a folder of the user's own: the page's goes inside it
    made = os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix="tinydiffusion-demo-", dir=given)
    try:
        import_gradio()
        from ..pipeline import load_model
        from .page import serve

        serve(load_model(checkpoint, device), host, port, data_dir, max_upload_mb, max_pixels)
    finally:
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(made, ignore_errors=True)
        if given is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = given


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM stops the server as Ctrl-C does, so the upload folder is still removed
