"""Sample grids of colour runs for the README: one column per class, its name above it.

Each figure is `generate()` at the command line's defaults (dpmpp-2m, 20 steps, guidance 1.5), ROWS images per
class with one seed, drawn from a run's EMA weights.

    python benchmarks/colour_figures.py RUN_DIR OUT.png [--rows 6] [--seed 0] [--scale 2]
"""

from __future__ import annotations

import argparse

from tinydiffusion import generate, load_model
from tinydiffusion.errors import UserError
from tinydiffusion.viz import class_columns, save_image


def figure(run: str, rows: int, seed: int, scale: int):
    model = load_model(run, device="cpu")
    names = model.config.data.class_names
    images, _ = generate(model, rows * len(names), seed=seed)  # every class in turn
    return class_columns(images, names, scale=scale)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run directory or checkpoint")
    parser.add_argument("out", help="the PNG to write")
    parser.add_argument("--rows", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=int, default=2)
    args = parser.parse_args()
    if args.rows < 1 or args.scale < 1 or args.seed < 0:
        parser.error("--rows and --scale must be at least 1, and --seed at least 0")
    try:
        save_image(figure(args.run, args.rows, args.seed, args.scale), args.out)
    except (UserError, OSError) as err:
        parser.error(str(err))


if __name__ == "__main__":
    main()
