"""The editing figures of the README, and the measurements docs/reports/editing.md states, from the bundled model.

- Inpainting: real test images (Fashion-MNIST's test split, with --data-dir) under each built-in mask, three seeds.
- Image-to-image: real images redrawn toward another class across strengths.
- Interpolation: between two noises, from one class to another, and between two real images (DDIM inversion).
- Measured: the DDIM round trip of real test images (inversion then DDIM, 50 steps, guidance 1, their own class),
  RePaint against the exact conditional of a correlated Gaussian (tests/test_editing.py's model) at several
  settings, and each edit's time for one image and for 16 on this machine.

    python benchmarks/editing_figures.py --data-dir ../shared/data/fashion-mnist --json docs/reports/runs/editing.json
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

import torch
from common import cpu_description, median_seconds

from tinydiffusion.config import DataConfig
from tinydiffusion.data import load_data
from tinydiffusion.data.pixels import to_model_space
from tinydiffusion.editing import builtin_mask, img2img, inpaint, interpolate
from tinydiffusion.editing.draw import start_draw
from tinydiffusion.editing.interpolate import invert
from tinydiffusion.pipeline import load_model
from tinydiffusion.viz import labelled_rows, save_image

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from test_editing import conditional_errors, gaussian_inpainting  # noqa: E402  what the tests check RePaint against


def test_images(data_dir: str, count: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    data = load_data(DataConfig(source="fashion-mnist", data_dir=data_dir), "test", progress=False)
    return data.images[:count].clone(), data.labels[:count].clone()


def first_of(labels: torch.Tensor, cls: int) -> int:
    return int((labels == cls).nonzero()[0])


def masked_view(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    shown = image.clone()
    shown[:, mask] = 128  # the region to regenerate, drawn mid-grey
    return shown


def inpainting_figure(model, images, labels, path: Path) -> None:
    rows = []
    for mask_name, cls in zip(("left", "top", "centre", "strokes"), (0, 7, 8, 4), strict=True):
        image = images[first_of(labels, cls)]
        mask = builtin_mask(mask_name, 28, seed=2)
        results = inpaint(model, image, mask, 3, classes=[cls], seed=1)
        rows.append(torch.cat([image[None], masked_view(image, mask)[None], results]))
    save_image(labelled_rows(rows, ["given", "mask", "seed 1a", "seed 1b", "seed 1c"], scale=3), path)


STRENGTHS = (0.0, 0.4, 0.6, 0.75, 0.9, 1.0)


def img2img_figure(model, images, labels, path: Path) -> None:
    rows = []
    for source, target in ((6, 3), (7, 9), (0, 2)):  # shirt -> dress, sneaker -> ankle boot, t-shirt -> pullover
        image = images[first_of(labels, source)]
        rows.append(torch.cat([img2img(model, image, s, 1, classes=[target], seed=3) for s in STRENGTHS]))
    save_image(labelled_rows(rows, [f"s={s:g}" for s in STRENGTHS], scale=3), path)


def interpolation_figure(model, images, labels, path: Path, frames: int = 8) -> None:
    a, b = images[first_of(labels, 7)], images[first_of(labels, 5)]
    rows = [interpolate(model, frames, seeds=(1, 2), classes=(9,)),
            interpolate(model, frames, seeds=(4, 4), classes=(0, 3)),
            interpolate(model, frames, images=(a, b), classes=(7, 5))]
    save_image(labelled_rows(rows, [f"{i / (frames - 1):.2f}" for i in range(frames)], scale=3), path)


def round_trip(model, images, labels, steps: int = 50) -> dict:
    """Mean and 99th-percentile absolute error, in grey levels, of real images inverted and drawn back: what the
    ends of an interpolation between real images do (editing/interpolate.py), as one batch."""
    draw = start_draw(model, len(images), labels.tolist(), "ddim", steps, 1.0, 0, {})
    back = draw.pixels(draw.walk(invert(draw, to_model_space(images)), draw.levels))
    error = (back.float() - images.float()).abs()
    return {"images": len(error), "steps": steps, "guidance": 1.0, "mean_grey_levels": error.mean().item(),
            "p99_grey_levels": error.flatten().quantile(0.99).item(), "max_grey_levels": error.max().item()}


def repaint_against_the_exact_conditional(settings, num: int = 1000) -> list[dict]:
    gaussian, image, mask, mean, std = gaussian_inpainting()
    rows = []
    for sampler, steps, jump, resamplings in settings:
        out = inpaint(gaussian, image, mask, num, sampler=sampler, steps=steps, jump_length=jump,
                      resamplings=resamplings, seed=1)
        mean_error, std_error = conditional_errors(out, mask, mean, std)
        rows.append({"sampler": sampler, "steps": steps, "jump_length": jump, "resamplings": resamplings,
                     "num": num, "mean_error": mean_error, "std_error": std_error})
        print(rows[-1], flush=True)
    return rows


def timings(model, image, repeats: int = 3) -> dict:
    mask = builtin_mask("centre", 28)
    edits = {"inpaint": lambda n: inpaint(model, image, mask, n, classes=[0]),
             "img2img 0.6": lambda n: img2img(model, image, 0.6, n, classes=[3]),
             "interpolate 8 frames": lambda n: interpolate(model, 8, seeds=(0, 1), classes=(0,))}
    result = {}
    for name, edit in edits.items():
        for n in ((1, 16) if not name.startswith("interpolate") else (1,)):
            result[f"{name}, {n} image{'s' if n > 1 else ''}"] = median_seconds(partial(edit, n), repeats)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="Fashion-MNIST's IDX files")
    parser.add_argument("--figures", default="docs/figures", help="where the three figures go")
    parser.add_argument("--json", help="also write the measurements here")
    parser.add_argument("--skip-repaint", action="store_true", help="skip the (slow) analytic RePaint rows")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_model(device="cpu")
    images, labels = test_images(args.data_dir)
    figures = Path(args.figures)
    inpainting_figure(model, images, labels, figures / "inpaint.png")
    img2img_figure(model, images, labels, figures / "img2img.png")
    interpolation_figure(model, images, labels, figures / "interpolate.png")
    print("figures written", flush=True)
    report = {"cpu": cpu_description(),
              "torch": torch.__version__, "threads": torch.get_num_threads(),
              "seconds": timings(model, images[0])}
    print(report["seconds"], flush=True)
    report["round_trip"] = round_trip(model, images[:100], labels[:100])
    print(report["round_trip"], flush=True)
    if not args.skip_repaint:
        report["repaint"] = repaint_against_the_exact_conditional(
            [("ddpm", 100, 5, 1), ("ddpm", 100, 5, 10), ("ddpm", 250, 10, 1), ("ddpm", 250, 10, 10),
             ("dpmpp-2m", 20, 2, 5)])
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
