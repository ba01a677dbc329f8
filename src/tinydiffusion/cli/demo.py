"""`tinydiffusion demo`: the local web page to sample, watch and edit images (demo/, needs the demo extra)."""

from __future__ import annotations

from .common import add_checkpoint, model_source, number


def add(sub) -> None:
    p = sub.add_parser("demo", help="serve a local web page to sample, watch and edit images (needs the demo extra)",
                       description="Serve the demo page (Gradio; pip install -e \".[demo]\"): generate a grid, "
                       "watch the reverse process, run the forward process on a test image, inpaint, image to image "
                       "and interpolation. Its root URL serves the page; Ctrl-C stops it.")
    add_checkpoint(p)
    p.add_argument("--fast", action="store_true", help="serve the --model's bundled distilled student (4 steps, "
                   "or --steps 1 or 2 for fashion-mnist): with 1 or 2 steps the Generate tab redraws as a setting "
                   "changes")
    p.add_argument("--steps", type=int, metavar="K",
                   help="with --fast: the bundled student's steps, 4 (fashion-mnist: 1, 2 or 4)")
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
    from ..errors import UserError

    if args.steps is not None and not args.fast:
        raise UserError("--steps chooses the bundled student of --fast; the page has its own steps slider.")
    run_demo(model_source(args), args.device, args.host, args.port, args.data_dir, args.max_upload_mb)
    return 0
