"""`tinydiffusion export`: a model written for other runtimes, in any format of export_formats.py
(docs/how-to/export.md)."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..export_formats import EXPORT_FORMATS, EXPORT_MARKER
from .common import add_checkpoint, check_not_an_input, model_source, output_folder, output_path, writing


def add(sub) -> None:
    formats = "; ".join(f"{name}: {f.help}" for name, f in EXPORT_FORMATS.items())
    p = sub.add_parser("export", help="write a model for other runtimes (" + ", ".join(EXPORT_FORMATS) + ")",
                       description="Write a model for runtimes other than tinydiffusion's PyTorch code: an ONNX "
                       "file (inputs x, t, the continuous time in [0, 1], y, the class, and for a distilled student "
                       "guidance; outputs x0 and eps; the image shape, classes, schedule and default sampler in its "
                       "metadata; a latent model's decoder in a second file beside it, FILE.decoder.onnx), a static "
                       "web page that samples it in the browser, or a folder diffusers loads "
                       "(docs/how-to/export.md). An existing --out file is replaced; in a folder an earlier export "
                       "wrote, which must hold nothing else, the files it wrote are replaced.")
    add_checkpoint(p, positional=True)
    p.add_argument("--fast", action="store_true", help="export the --model's bundled distilled student (4 steps, "
                   "guidance folded in, or --steps 1 or 2 for fashion-mnist) instead")
    p.add_argument("--steps", type=int, metavar="K",
                   help="with --fast: the bundled student's steps, 4 (fashion-mnist: 1, 2 or 4)")
    p.add_argument("--format", choices=list(EXPORT_FORMATS), default="onnx", help=formats)
    p.add_argument("--out", help="the file or folder to write (default: " +
                   ", ".join(f"{f.default_out} for {name}" for name, f in EXPORT_FORMATS.items()) + ")")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..checkpoint import resolve_checkpoint
    from ..pipeline import load_model

    if args.fast and args.checkpoint:
        raise UserError("--fast exports a bundled student; drop RUN_OR_CHECKPOINT (or --fast, to export that one).")
    if args.steps is not None and not args.fast:
        raise UserError("--steps chooses the bundled student of --fast; a model's own steps are in its export.")
    chosen = EXPORT_FORMATS[args.format]
    text = args.out or chosen.default_out
    source = model_source(args)
    weights, config = resolve_checkpoint(source)
    if chosen.suffix:
        out = output_path(text, "--out", (chosen.suffix,))
        check_not_an_input(out, "--out", [("checkpoint", weights), ("checkpoint's config", config)])
    else:  # a folder: refused before any work where it would replace the model it reads, or anything of the user's
        out = output_folder(text, "--out", EXPORT_MARKER, ([Path(source)] if source else []) + [weights, config])
    model = load_model(source, "cpu")
    with writing(out):
        wrote = chosen.write(model, out)
    print(f"wrote {wrote}")
    return 0
