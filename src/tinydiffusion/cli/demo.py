"""`tinydiffusion demo`: the local web page to sample, watch and edit images (demo/, needs the demo extra)."""

from __future__ import annotations

from .common import add_checkpoint, number


def add(sub) -> None:
    p = sub.add_parser("demo", help="serve a local web page to sample, watch and edit images (needs the demo extra)",
                       description="Serve the demo page (Gradio; pip install -e \".[demo]\"): generate a grid, "
                       "watch the reverse process, run the forward process on a test image, inpaint, image to image "
                       "and interpolation. Its root URL serves the page; Ctrl-C stops it.")
    add_checkpoint(p)
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on: 127.0.0.1 is reachable from this "
                   "machine only; 0.0.0.0 opens the page to the network")
    p.add_argument("--port", type=number(int, 1, 65535), default=7860, help="the port to listen on")
    p.add_argument("--device", default="auto", help="auto (a GPU if there is one), cpu, cuda or cuda:N")
    p.add_argument("--data-dir", metavar="DIR", help="where the model's dataset is, for the forward-process test "
                   "images (default: where training put it; without it the model draws its own)")
    p.add_argument("--max-upload-mb", type=number(float, 0.01, 1024), default=10,
                   help="the largest upload the page accepts, in MB")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..demo import run_demo

    run_demo(args.checkpoint, args.device, args.host, args.port, args.data_dir, args.max_upload_mb)
    return 0
