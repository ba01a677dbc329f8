"""`tinydiffusion img2img`: a picture redrawn from part-way along the reverse process (SDEdit, editing/img2img.py)."""

from __future__ import annotations

from .common import add_edit_options, edit_settings, number, read_edit_input, write_edits


def add(sub) -> None:
    p = sub.add_parser("img2img", help="redraw a picture from part-way along the reverse process (SDEdit)",
                       description="Noise a picture to a depth and denoise it, optionally toward another class "
                       "(SDEdit, editing/img2img.py): --strength 0 returns it as the model sees it (at the model's "
                       "size, resized back), 1 draws a new image.")
    add_edit_options(p, "img2img.png")
    p.add_argument("--strength", type=number(float, 0, 1), required=True,
                   help="how much of the reverse process is redone, from 0 (the picture as it is) to 1 (a new image)")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..editing import fit_image, img2img, to_picture_size

    out, (picture,), model = read_edit_input(args)
    results = img2img(model, fit_image(model, picture), args.strength, args.num, seed=args.seed,
                      **edit_settings(args, model, args.edit_class))
    write_edits(to_picture_size(results, picture.size), out)
    return 0
