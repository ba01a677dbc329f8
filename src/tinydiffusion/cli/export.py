"""`tinydiffusion export`: a model written for other runtimes (docs/export.md)."""

from __future__ import annotations

from ..errors import UserError
from .common import check_not_an_input, output_path, writing


def add(sub) -> None:
    p = sub.add_parser("export", help="write a model for other runtimes: one ONNX file",
                       description="Write a model as one ONNX file that any runtime can sample from: inputs x, t "
                       "(the continuous time in [0, 1]), y (the class) and, for a distilled student, guidance; "
                       "outputs x0 and eps; with the image shape, classes, schedule and default sampler in its "
                       "metadata (docs/export.md). An existing --out is replaced.")
    p.add_argument("checkpoint", nargs="?", metavar="RUN_OR_CHECKPOINT", help="a run directory, a checkpoint "
                   "directory or a .safetensors file (default: the bundled model)")
    p.add_argument("--fast", action="store_true", help="export the bundled model's distilled student (4 steps, "
                   "guidance folded in) instead")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="onnx: one .onnx file")
    p.add_argument("--out", default="model.onnx", help="the file to write, FILE.onnx")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..checkpoint import BUNDLED_STUDENT, resolve_checkpoint
    from ..export import write_onnx
    from ..pipeline import load_model

    if args.fast and args.checkpoint:
        raise UserError("--fast exports the bundled student; drop RUN_OR_CHECKPOINT (or --fast, to export that one).")
    out = output_path(args.out, "--out", (".onnx",))
    source = BUNDLED_STUDENT if args.fast else args.checkpoint
    weights, config = resolve_checkpoint(source)
    check_not_an_input(out, "--out", [("checkpoint", weights), ("checkpoint's config", config)])
    model = load_model(source, "cpu")
    with writing(out):
        size = write_onnx(model, out)
    print(f"wrote {out} ({size / 1e6:.1f} MB; inputs x, t, y{', guidance' if model.config.net.guidance_input else ''};"
          " outputs x0, eps)")
    return 0
