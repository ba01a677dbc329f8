"""`tinydiffusion sample`: images from a trained model (the bundled one by default) as a grid or an .npz."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import UserError
from ..words import count
from .common import (
    MAX_NUM,
    add_checkpoint,
    add_sampling_options,
    model_source,
    number,
    output_path,
    run_sampling,
    writing,
)


def add(sub) -> None:
    p = sub.add_parser("sample", help="generate images", description="Generate images from a trained model "
                       "(default: the model bundled with the package). An existing --out is replaced.")
    add_checkpoint(p)
    p.add_argument("--fast", action="store_true", help="draw with the --model's bundled distilled student: "
                   "4 steps of one network evaluation each, guidance folded in, or with --steps 1 or 2 the "
                   "fashion-mnist model's 1- or 2-step student (instead of --checkpoint)")
    add_sampling_options(p, default_num=64)
    p.add_argument("--out", default="samples.png", help="FILE.png (a grid) or FILE.npz (uint8 arr_0 N x H x W x C)")
    p.add_argument("--nrow", type=number(int, 1, MAX_NUM),
                   help="images per row in the PNG grid (default: a square grid, or one column per class)")
    p.add_argument("--runtime", choices=["torch", "onnxruntime"], default="torch", help="run the network in "
                   "PyTorch, or export it to ONNX in memory and run that graph in onnxruntime, on the CPU (pip "
                   "install 'tinydiffusion[onnx]'; docs/how-to/export.md): the same images, within float rounding; "
                   "with onnxruntime, --checkpoint may also be a file `export` wrote, FILE.onnx, with a latent "
                   "model's decoder, FILE.decoder.onnx, beside it")
    p.set_defaults(run=run)


def sampling_model(args, checkpoint):
    """The model `sample` draws with: in PyTorch, or (--runtime onnxruntime) through its graph exported in memory,
    or read from an exported .onnx file alone."""
    from ..pipeline import load_model

    is_onnx = checkpoint is not None and Path(checkpoint).suffix.lower() == ".onnx"
    if args.runtime == "torch":
        if is_onnx:
            raise UserError(f"{checkpoint} is an exported ONNX file; sample it with --runtime onnxruntime.")
        return load_model(checkpoint, args.device)
    from ..export import load_onnx_model, onnx_graph

    if args.device not in ("auto", "cpu"):
        raise UserError("--runtime onnxruntime runs on the CPU; drop --device.")
    if is_onnx:
        return load_onnx_model(checkpoint)
    model = load_model(checkpoint, "cpu")
    return dataclasses.replace(model, graph=onnx_graph(model))


def run(args) -> int:
    from ..evaluation.samples import save_npz
    from ..viz import class_columns, save_grid, save_image

    out = output_path(args.out, "--out", (".png", ".npz"))
    if args.nrow and args.nrow > args.num:
        raise UserError(f"--nrow {args.nrow} is more than the {count(args.num, 'image')} asked for (--num).")
    model = sampling_model(args, model_source(args))
    images, labels = run_sampling(args, model)
    with writing(out):
        if out.suffix.lower() == ".npz":
            save_npz(out, images.numpy(), None if labels is None else labels.numpy(), model.class_names)
        elif args.classes is None and model.num_classes and args.num % model.num_classes == 0 and not args.nrow:
            save_image(class_columns(images, model.class_names), out)  # every class in turn: one named column each
        else:
            save_grid(images, out, nrow=args.nrow)
    print(f"wrote {count(len(images), 'image')} to {out}")
    return 0
