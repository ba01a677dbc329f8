"""`tinydiffusion visualize forward | reverse`: the forward process on the data, the reverse process of samples."""

from __future__ import annotations

import dataclasses
import math

from ..autoencoders import decode, image_shape
from ..errors import UserError
from ..words import count
from .common import (
    add_checkpoint,
    add_sampling_options,
    check_figure_fits,
    model_source,
    number,
    output_path,
    run_sampling,
    sampling_flags,
    writing,
)


def add(sub) -> None:
    from . import common

    p = sub.add_parser("visualize", help="draw the forward or reverse diffusion process")
    which = p.add_subparsers(dest="what", required=True, parser_class=common.Parser)
    fwd = which.add_parser("forward", help="images noised at evenly spaced t from 0 to T")
    fwd.add_argument("--checkpoint", help="model whose noise schedule to use (default: the bundled model)")
    fwd.add_argument("--data-dir", metavar="DIR", help="where the model's named dataset is (default: where training "
                     "put it)")
    fwd.add_argument("--num-images", type=number(int, 1, 100), default=4, help="rows: one image of each class in turn")
    fwd.add_argument("--columns", type=number(int, 2, 100), default=10, help="noise levels shown, from t = 0 to T")
    fwd.add_argument("--out", default="forward.png", help="the figure, FILE.png")
    fwd.set_defaults(run=run_forward)
    rev = which.add_parser("reverse", help="samples at several steps of the reverse process, and a GIF")
    add_checkpoint(rev)
    add_sampling_options(rev, default_num=8)
    rev.add_argument("--columns", type=number(int, 2, 1000), default=10, help="steps shown, evenly spread, the last "
                     "being the final image")
    rev.add_argument("--out", default="reverse.png", help="the figure, FILE.png: one row per image")
    rev.add_argument("--gif", help="also write an animated GIF of the denoising to this FILE.gif")
    rev.set_defaults(run=run_reverse)


def run_forward(args) -> int:
    from ..checkpoint import load_config, resolve_checkpoint
    from ..data import load_data
    from ..data.classes import first_of_each_class
    from ..diffusion import GaussianDiffusion
    from ..viz import forward_strip, save_image

    out = output_path(args.out, "--out", (".png",))
    _, config_path = resolve_checkpoint(args.checkpoint)
    config = load_config(config_path)
    image_bytes = math.prod(image_shape(config))
    # each row: float32 x_t at every column, kept as uint8, then drawn into the grid
    check_figure_fits(args.num_images * args.columns * image_bytes * 3 + args.columns * image_bytes * 8,
                      f"a figure of {args.num_images} x {args.columns} images", "lower --num-images or --columns")
    data_config = dataclasses.replace(config.data, data_dir=args.data_dir) if args.data_dir else config.data
    data = load_data(data_config, "test") or load_data(data_config, "train")
    if data is None:
        raise UserError(f"the model's data ({config.data.source}) is not on this machine; pass --data-dir.")
    if data.labels is not None:  # one image of each class in turn
        picks = first_of_each_class(data.labels.numpy(), len(data.class_names))[:args.num_images]
    else:
        picks = list(range(min(args.num_images, len(data))))
    image = forward_strip(GaussianDiffusion(config.diffusion), data.images[picks], args.columns)
    with writing(out):
        save_image(image, out)
    print(f"wrote {out}")
    return 0


def run_reverse(args) -> int:
    from ..pipeline import load_model, sampling_settings
    from ..viz import ReverseRecorder, save_image

    out = output_path(args.out, "--out", (".png",))
    gif = output_path(args.gif, "--gif", (".gif",)) if args.gif else None
    model = load_model(model_source(args), args.device)
    _, steps, _ = sampling_settings(model, **sampling_flags(args))
    check_figure_fits(steps * args.num * math.prod(image_shape(model.config)) * 4,  # x_t of every image at every step
                      f"recording {count(steps, 'step')} of {count(args.num, 'image')}", "lower --num or --steps")
    recorder = ReverseRecorder()

    def record(i, t, x_t, x0_pred):  # a latent model's x_t decoded to pixels, as its samples are
        recorder(i, t, decode(model.config.data, x_t), x0_pred)

    run_sampling(args, model, progress=False, callback=record)
    with writing(out):
        save_image(recorder.figure(args.columns), out)
    print(f"wrote {out}")
    if gif:
        with writing(gif):
            recorder.save_gif(gif)
        print(f"wrote {gif}")
    return 0
