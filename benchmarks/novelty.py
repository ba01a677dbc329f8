"""Novelty: as a run trains on, do its samples approach the data, or only its training images? A second measure
beside `evaluate`'s FD, for a run whose FD against the held-out split stops falling while it still improves by eye.

For each checkpoint (every complete checkpoint of the run directories given, or the checkpoint directories
given), N samples are drawn by `tinydiffusion sample` at the command line's defaults (DPM-Solver++(2M) 20 steps,
the model's default guidance, seed 0, classes cycled: the images `evaluate` scores) and measured three ways
against the data the run trained on, all with `evaluate`'s own data, classifier and reference:

- **FD against the held-out split**, as `evaluate` gives it, with its floor (N training images);
- **FD against the training split**, in the same classifier's features, for the first M samples, M being the
  held-out split's size, beside its floor: the held-out split's M real images against the training split. A model
  that draws the data's distribution scores near that floor; one drawn towards its own training images goes below
  it, while its FD against the held-out split rises;
- **copying, in pixels** (the nearest-neighbour test of Carlini et al. 2023, sec. 4, and Somepalli et al. 2023):
  each sample's Euclidean distance in [0, 1] pixels to its nearest training image, against the same for each
  held-out image: the median of each, and the share of samples nearer to a training image than 95% of held-out
  images are (about 5% for a model that draws new images as close as new real ones are; towards 100% for one
  that reproduces its training set).

`--figure` draws the first samples of the last checkpoint over their nearest training images.

    python benchmarks/novelty.py runs/c32-30keep/colour-32 [--every 1000] [--num 1000] [--out-dir runs/novelty] \
        [--markdown docs/reports/novelty.md] [--json docs/reports/runs/novelty.json] [--figure docs/figures/novelty.png]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from common import elapsed_at, machine_description, markdown_table, write_json

from tinydiffusion import load_model
from tinydiffusion.checkpoint import is_complete
from tinydiffusion.cli.common import MAX_NUM, output_path
from tinydiffusion.errors import UserError
from tinydiffusion.evaluation import (
    Evaluator,
    extract_features,
    feature_statistics,
    frechet_distance,
    load_samples_npz,
)
from tinydiffusion.files import atomic_write_bytes

QUANTILE = 0.05  # a sample "nearer than all but 5% of held-out images" to a training image


def checkpoints_of(path: Path, every: int = 1) -> list[Path]:
    """A run directory's complete checkpoints at multiples of `every` steps and its last, in step order; or the
    checkpoint directory itself."""
    if not (path / "checkpoints").is_dir():
        return [path]
    found = sorted(p for p in (path / "checkpoints").glob("step-*") if is_complete(p))
    return [p for p in found if p == found[-1] or (step_of(p) or 0) % every == 0]


def run_of(path: Path) -> Path:
    """The run directory a checkpoint folder (RUN/checkpoints/step-N) belongs to; a run directory itself."""
    return path.parent.parent if path.parent.name == "checkpoints" else path


def draw(checkpoint: Path, num: int, out: Path) -> tuple[np.ndarray, np.ndarray]:
    """N samples at the command line's defaults, drawn once and kept in `out` (reused on a rerun)."""
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "tinydiffusion", "sample", "--checkpoint", str(checkpoint), "--num",
                   str(num), "--seed", "0", "--out", str(out)]
        if subprocess.run(command, stdout=subprocess.DEVNULL).returncode != 0:
            raise SystemExit(f"sampling {checkpoint} failed; see above")
    return load_samples_npz(out)


def pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, C, H, W] -> float [N, C*H*W] in [0, 1]."""
    return images.reshape(len(images), -1).float() / 255


def nearest_distances(queries: torch.Tensor, data: torch.Tensor, chunk: int = 500) -> tuple[torch.Tensor, ...]:
    """Each query's Euclidean distance to its nearest row of `data`, and that row's index."""
    found = [torch.cdist(queries[i:i + chunk], data).min(dim=1) for i in range(0, len(queries), chunk)]
    return torch.cat([f.values for f in found]), torch.cat([f.indices for f in found])


class Reference:
    """What every checkpoint of one run is measured against: `evaluate`'s data, classifier and reference, the
    training split's feature statistics, and the held-out images' own distances to the training split."""

    def __init__(self, checkpoint: Path):
        model = load_model(checkpoint, "cpu")
        net = model.config.net
        self.evaluator = Evaluator(model.config.data, progress=False,
                                   sample_shape=(net.in_channels, net.image_size, net.image_size),
                                   model_classes=model.class_names)
        self.train_images, self.held_out = self.evaluator.pool, self.evaluator.reference_images
        self.train_stats = feature_statistics(self.features(self.train_images))
        self.train_pixels = pixels(self.train_images)
        held_out_distances, _ = nearest_distances(pixels(self.held_out), self.train_pixels)
        self.held_out_median = held_out_distances.median().item()
        self.threshold = torch.quantile(held_out_distances, QUANTILE).item()
        self.held_out_features = self.features(self.held_out)

    def features(self, images: torch.Tensor) -> np.ndarray:
        return extract_features(self.evaluator.classifier, images)

    def fd_to_train(self, images: torch.Tensor) -> float:
        return frechet_distance(*feature_statistics(self.features(images)), *self.train_stats)

    def train_fd_floor(self, count: int) -> float:
        """FD against the training split of the first `count` held-out images: new real images, at the same N."""
        return frechet_distance(*feature_statistics(self.held_out_features[:count]), *self.train_stats)

    def measure(self, images_nhwc: np.ndarray, labels: np.ndarray) -> dict:
        scores = self.evaluator.score(images_nhwc, labels)
        images = torch.as_tensor(images_nhwc).permute(0, 3, 1, 2).contiguous()
        distances, nearest = nearest_distances(pixels(images), self.train_pixels)
        num_train_fd = min(len(images), len(self.held_out))
        return {
            "fd_held_out": scores["fd"], "fd_held_out_floor": scores["fd_floor"], "num": len(images),
            "class_accuracy": scores.get("class_accuracy"), "precision": scores["precision"],
            "recall": scores["recall"],
            "fd_train": self.fd_to_train(images[:num_train_fd]), "fd_train_floor": self.train_fd_floor(num_train_fd),
            "fd_train_num": num_train_fd,
            "median_distance": distances.median().item(), "held_out_median_distance": self.held_out_median,
            "share_nearer": (distances < self.threshold).double().mean().item(), "nearest": nearest.tolist(),
        }


def figure(path: Path, samples: np.ndarray, train_images: torch.Tensor, nearest: list[int], count: int) -> None:
    """The first `count` samples (top row) over their nearest training images (bottom row), as one PNG."""
    from PIL import Image

    top = samples[:count]
    bottom = train_images[nearest[:count]].permute(0, 2, 3, 1).numpy()
    rows = [np.concatenate(list(row), axis=1) for row in (top, bottom)]
    grid = np.concatenate(rows, axis=0)
    if grid.shape[2] == 1:
        grid = grid[:, :, 0]
    scale = max(1, 64 // samples.shape[1])
    image = Image.fromarray(grid)
    image.resize((image.width * scale, image.height * scale), Image.NEAREST).save(path)


def step_of(checkpoint: Path) -> int | None:
    name = checkpoint.name
    return int(name.removeprefix("step-")) if name.startswith("step-") and name[5:].isdigit() else None


def elapsed(run_dir: Path, step: int | None) -> float | None:
    """The training loop's wall time at `step` from the run's metrics.jsonl (None where it is not logged); a
    checkpoint folder reads its run's log."""
    log_dir = run_of(run_dir)
    if step is None or not (log_dir / "metrics.jsonl").is_file():
        return None
    return elapsed_at(log_dir).get(step)


def format_markdown(rows: list[dict]) -> str:
    first = rows[0]
    lines = ["# Novelty: FD against the held-out and the training split, and copying", "",
             "Measured by `benchmarks/novelty.py` (its docstring says how).", "",
             f"- machine: {machine_description()}",
             f"- N = {first['num']} samples a checkpoint (DPM-Solver++(2M) 20 steps, default guidance, seed 0); "
             f"FD against the training split with the first {first['fd_train_num']} of them; distances in [0, 1] "
             f"pixels; share nearer: samples nearer to a training image than {1 - QUANTILE:.0%} of held-out images "
             f"are ({QUANTILE:.0%} for held-out images themselves)", ""]
    lines += markdown_table(
        ["run", "step", "training s", "FD held-out (floor)", "FD train (floor)", "class acc.",
         "median distance (held-out's)", "share nearer"],
        [(r["run"], r["step"], "" if r["train_seconds"] is None else f"{r['train_seconds']:.0f}",
          f"{r['fd_held_out']:.2f} ({r['fd_held_out_floor']:.2f})", f"{r['fd_train']:.2f} ({r['fd_train_floor']:.2f})",
          "" if r["class_accuracy"] is None else f"{r['class_accuracy']:.3f}",
          f"{r['median_distance']:.2f} ({r['held_out_median_distance']:.2f})", f"{r['share_nearer']:.3f}")
         for r in rows], "lrrrrrrr")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (every checkpoint, or see --every) or "
                        "checkpoint folders")
    parser.add_argument("--num", type=int, default=1000, help="samples a checkpoint")
    parser.add_argument("--out-dir", type=Path, default=Path("runs/novelty"), help="the samples are kept here")
    parser.add_argument("--markdown", type=Path, help="write the table here")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--figure", type=Path, help="the last checkpoint's first samples over their nearest "
                        "training images, as a PNG")
    parser.add_argument("--figure-count", type=int, default=18, help="samples in the figure")
    parser.add_argument("--every", type=int, default=1, help="of a run directory, only the checkpoints at multiples "
                        "of this many steps, and the last")
    args = parser.parse_args()
    if args.every < 1 or not 10 <= args.num <= MAX_NUM or args.figure_count < 1:
        parser.error(f"--every and --figure-count must be positive and --num between 10 and {MAX_NUM:,}")
    try:
        measure(args)
    except (UserError, OSError) as err:
        parser.error(str(err))


def measure(args) -> None:
    """Every checkpoint named, against its run's Reference (built once a run), then the outputs."""
    outputs = {flag: output_path(str(path), flag, suffixes)  # before minutes of sampling
               for flag, path, suffixes in (("--markdown", args.markdown, (".md",)), ("--json", args.json, (".json",)),
                                            ("--figure", args.figure, (".png",))) if path}
    references: dict[Path, Reference] = {}
    rows, samples = [], None
    for path in args.runs:
        checkpoints = checkpoints_of(path, args.every)
        if not checkpoints:
            raise UserError(f"{path} has no complete checkpoint.")
        run = run_of(path)
        for checkpoint in checkpoints:
            if run not in references:
                references[run] = Reference(checkpoint)
            reference, step = references[run], step_of(checkpoint)
            samples, labels = draw(checkpoint, args.num, args.out_dir / run.name / f"{checkpoint.name}-{args.num}.npz")
            row = {"run": run.name, "checkpoint": str(checkpoint), "step": step,
                   "train_seconds": elapsed(run, step), **reference.measure(samples, labels)}
            print(f"{run.name} {checkpoint.name}: FD held-out {row['fd_held_out']:.2f}, train {row['fd_train']:.2f} "
                  f"(floor {row['fd_train_floor']:.2f}), share nearer {row['share_nearer']:.3f}", flush=True)
            rows.append(row)
    if "--figure" in outputs:
        figure(outputs["--figure"], samples, reference.train_images, rows[-1]["nearest"], args.figure_count)
    if "--markdown" in outputs:
        atomic_write_bytes(outputs["--markdown"], format_markdown(rows).encode())
    if "--json" in outputs:
        write_json(outputs["--json"], {"machine": machine_description(),
                                       "rows": [{k: v for k, v in r.items() if k != "nearest"} for r in rows]})


if __name__ == "__main__":
    main()
