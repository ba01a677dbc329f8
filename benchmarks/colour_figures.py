"""Sample grids of colour runs for the README: one column per class, its name above it.

Each figure is `generate()` at the command line's defaults (dpmpp-2m, 20 steps, guidance 1.5), ROWS images per
class with one seed, drawn from a run's EMA weights. Several runs make one figure, one band each, under the
labels given (the same seed, so the same noise in each band: what longer training changed, image by image).
Several guidance scales of one run make one band each likewise, labelled by the scale.

    python benchmarks/colour_figures.py RUN_DIR OUT.png [--rows 6] [--seed 0] [--scale 2]
    python benchmarks/colour_figures.py RUN_5 RUN_15 RUN_60 OUT.png --labels "5 min,15 min,60 min" --rows 2
    python benchmarks/colour_figures.py RUN_DIR OUT.png --guidance 1.5,2.5,4 --rows 2
"""

from __future__ import annotations

import argparse

from PIL import Image, ImageDraw

from tinydiffusion import generate, load_model
from tinydiffusion.bounds import MAX_GUIDANCE
from tinydiffusion.cli.common import number, output_path
from tinydiffusion.errors import UserError
from tinydiffusion.viz import class_columns, save_image


def figure(run: str, rows: int, seed: int, scale: int, guidance: float | None = None) -> Image.Image:
    model = load_model(run, device="cpu")
    names = model.config.data.class_names
    images, _ = generate(model, rows * len(names), seed=seed, guidance=guidance)  # every class in turn
    return class_columns(images, names, scale=scale)


def stacked(bands: list[Image.Image], labels: list[str], margin: int = 56) -> Image.Image:
    """Figures one above the other, each with its label in a left margin."""
    width = margin + max(band.width for band in bands)
    canvas = Image.new("RGB", (width, sum(band.height for band in bands)), "white")
    draw, top = ImageDraw.Draw(canvas), 0
    for band, label in zip(bands, labels, strict=True):
        canvas.paste(band.convert("RGB"), (margin, top))
        draw.text((4, top + band.height // 2 - 5), label, fill="black")
        top += band.height
    return canvas


def scales(text: str) -> list[float]:
    """--guidance: scales separated by commas, each checked as the command line's --guidance is."""
    scale = number(float, 0, MAX_GUIDANCE)
    return [scale(w) for w in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run directories or checkpoints")
    parser.add_argument("out", help="the PNG to write")
    parser.add_argument("--labels", help="one label per band, comma-separated (with several runs or scales)")
    parser.add_argument("--rows", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--guidance", type=scales,
                        help="guidance scales, comma-separated: one band each (with one run)")
    args = parser.parse_args()
    if args.rows < 1 or args.scale < 1 or args.seed < 0:
        parser.error("--rows and --scale must be at least 1, and --seed at least 0")
    guidance = args.guidance or [None]  # None: the command line's default
    if len(guidance) > 1 and len(args.runs) > 1:
        parser.error("several --guidance scales go with one run")
    labels = args.labels.split(",") if args.labels else []
    if len(guidance) > 1 and not labels:
        labels = [f"w = {w:g}" for w in guidance]
    bands_wanted = max(len(args.runs), len(guidance))
    if (bands_wanted > 1 or labels) and len(labels) != bands_wanted:
        parser.error(f"give --labels, one for each of the {bands_wanted} bands")
    try:
        out = output_path(args.out, "OUT", (".png",))  # before minutes of sampling
        bands = [figure(run, args.rows, args.seed, args.scale, w) for run in args.runs for w in guidance]
        save_image(stacked(bands, labels) if labels else bands[0], out)
    except (UserError, OSError) as err:
        parser.error(str(err))


if __name__ == "__main__":
    main()
