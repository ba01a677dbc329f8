"""`tinydiffusion interpolate`: images along a path between two noises, two pictures or two classes
(editing/interpolate.py)."""

from __future__ import annotations

from ..bounds import MAX_SEED
from ..errors import UserError
from .common import (
    add_checkpoint,
    add_sampler_options,
    check_not_an_input,
    edit_settings,
    model_source,
    number,
    output_path,
    writing,
)


def add(sub) -> None:
    p = sub.add_parser("interpolate", help="images along a path between two noises, two pictures or two classes",
                       description="Draw images along a spherical path between the noises of two seeds (--seed, "
                       "--seed-end), or between two pictures found again by DDIM inversion (--images), and from "
                       "one class to another with two --class (editing/interpolate.py).")
    add_checkpoint(p)
    p.add_argument("--images", nargs=2, metavar=("FIRST", "SECOND"), help="two pictures to go between, inverted "
                   "with DDIM (then the sampler is ddim, with --steps 50 unless given)")
    p.add_argument("--seed-end", type=number(int, 0, MAX_SEED), default=None,
                   help="seed of the second noise (default: --seed + 1)")
    p.add_argument("--class", dest="classes", action="append", metavar="NAME", help="the class of every frame, "
                   "or given twice, the first and last frames' classes (default: none, the model runs "
                   "unconditionally)")
    p.add_argument("--frames", type=number(int, 2, 1000), default=8, help="images along the path, both ends included")
    add_sampler_options(p, "seed of the first noise")
    p.add_argument("--out", default="interpolation.png", help="the strip, FILE.png (replaced if it exists)")
    p.add_argument("--gif", help="also write the frames, there and back, as an animated FILE.gif")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..editing import fit_image, interpolate, read_picture
    from ..pipeline import load_model
    from ..viz import grid_image, save_image

    out = output_path(args.out, "--out", (".png",))
    gif = output_path(args.gif, "--gif", (".gif",)) if args.gif else None
    for flag, path in (("--out", out), ("--gif", gif)):
        if path is not None:
            check_not_an_input(path, flag, [("--images", image) for image in args.images or ()])
    if args.classes and len(args.classes) > 2:
        raise UserError(f"an interpolation goes between at most two classes, not {len(args.classes)} --class.")
    if args.images and args.seed_end is not None:
        raise UserError("--seed-end picks the second noise; with --images the pictures give both ends, so drop it.")
    pictures = [read_picture(path, "--images") for path in args.images or ()]
    model = load_model(model_source(args), args.device)
    images = tuple(fit_image(model, picture) for picture in pictures) or None
    seed_end = args.seed + 1 if args.seed_end is None else args.seed_end
    if seed_end > MAX_SEED:
        raise UserError(f"--seed {args.seed} has no next seed; give --seed-end.")
    frames = interpolate(model, args.frames, seeds=(args.seed, seed_end), images=images,
                         **edit_settings(args, model, args.classes))
    with writing(out):
        save_image(grid_image(frames, nrow=len(frames), scale=2), out)
    print(f"wrote {out}")
    if gif:
        pictures = [grid_image(frame[None], padding=0, scale=4) for frame in frames]
        with writing(gif):
            save_image(pictures[0], gif, save_all=True, append_images=pictures[1:] + pictures[-2:0:-1],
                       duration=120, loop=0)
        print(f"wrote {gif}")
    return 0
