"""`tinydiffusion inpaint`: the masked region of a picture regenerated (RePaint, editing/inpaint.py)."""

from __future__ import annotations

from pathlib import Path

from ..bounds import MAX_TIMESTEPS
from ..defaults import BUILTIN_MASKS, MASK_ALIASES
from ..errors import UserError
from .common import add_edit_options, edit_settings, number, read_edit_input, write_edits


def add(sub) -> None:
    p = sub.add_parser("inpaint", help="regenerate a masked region of a picture (RePaint)",
                       description="Regenerate the masked region of a picture in keeping with the rest (RePaint, "
                       "editing/inpaint.py); the pixels outside the mask are written back exactly as given.")
    add_edit_options(p, "inpainted.png")
    p.add_argument("--mask", required=True, type=lambda text: MASK_ALIASES.get(text, text),
                   help=f"an image the picture's size, white where to regenerate (black, or transparent, to keep), or "
                   f"a built-in mask: {', '.join(BUILTIN_MASKS)} (center is centre; the strokes follow --seed)")
    p.add_argument("--jump-length", type=number(int, 1, MAX_TIMESTEPS), default=None,
                   help="RePaint's jumps: levels gone back up at each (default: a tenth of the steps)")
    p.add_argument("--resamplings", type=number(int, 1, 100), default=5,
                   help="RePaint's resampling: times each stretch between jumps is walked (1: no jumps)")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..editing import inpaint_picture

    builtin = args.mask in BUILTIN_MASKS
    if not builtin and not Path(args.mask).exists():
        raise UserError(f"--mask {args.mask} is neither a file nor a built-in mask ({', '.join(BUILTIN_MASKS)}).")
    out, pictures, model = read_edit_input(args, *([] if builtin else [("--mask", args.mask)]))
    mask = args.mask if builtin else pictures[1]
    write_edits(inpaint_picture(model, pictures[0], mask, args.num, seed=args.seed, jump_length=args.jump_length,
                                resamplings=args.resamplings, **edit_settings(args, model, args.edit_class)), out)
    return 0
