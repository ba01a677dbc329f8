"""The table of pixel space against latent diffusion (issue 46), from the runs docs/reports/runs/latent-vs-pixel/make.sh
trains and scores: OUT/px{SIZE}-{M}min/{pixel,latent}/, each with its metrics.jsonl and the `evaluate --json` file
of its last checkpoint; and the decoder's ceiling, `evaluate --json` files named ceiling-{SIZE}.json in OUT.

    python benchmarks/latent_table.py runs/lvp
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from common import markdown_table

PAIR = re.compile(r"px(?P<size>\d+)-(?P<minutes>\d+)min$")


def last_score(run: Path) -> tuple[int, dict] | None:
    """(step, scores) of the run's last scored checkpoint, or None."""
    found = sorted(run.glob("evaluation-step-*.json"))
    if not found:
        return None
    return int(found[-1].stem.rsplit("-", 1)[1]), json.loads(found[-1].read_text())


def images_per_second(run: Path, step: int) -> float:
    """Training images per second of wall time over the run: its steps times its batch, over the loop's time."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    elapsed = max(r["elapsed_s"] for r in records if "elapsed_s" in r and r.get("step", 0) <= step)
    batch = json.loads((run / "config.json").read_text())["train"]["batch_size"]
    return step * batch / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the folder of the pairs (make.sh's runs/lvp)")
    args = parser.parse_args()

    header = ["pixels", "minutes", "route", "steps", "images/s", "FD (floor)", "precision", "recall",
              "class accuracy"]
    rows, per_class, names = [], [], []
    pairs = sorted((int(m["size"]), int(m["minutes"]), d) for d in args.out.iterdir() if (m := PAIR.match(d.name)))
    for size, minutes, folder in pairs:
        for route in ("pixel", "latent"):
            scored = last_score(folder / route)
            if scored is None:
                continue
            step, score = scored
            rows.append([str(size), str(minutes), route, f"{step:,}", f"{images_per_second(folder / route, step):.0f}",
                         f"{score['fd']:.2f} ({score['fd_floor']:.2f})", f"{score['precision']:.3f}",
                         f"{score['recall']:.3f}", f"{score['class_accuracy']:.3f}"])
            names = score["class_names"]
            per_class.append([f"{size} px, {minutes} min, {route}",
                              *(f"{a:.2f}" for a in score["per_class_accuracy"])])
    for ceiling in sorted(args.out.glob("ceiling-*.json"), key=lambda path: int(path.stem.split("-")[1])):
        score = json.loads(ceiling.read_text())
        size = ceiling.stem.split("-")[1]
        rows.append([size, "", "real images through encode + decode", "", "", f"{score['fd']:.2f} "
                     f"({score['fd_floor']:.2f})", f"{score['precision']:.3f}", f"{score['recall']:.3f}",
                     f"{score['class_accuracy']:.3f}"])
        per_class.append([f"{size} px, real through the autoencoder",
                          *(f"{a:.2f}" for a in score["per_class_accuracy"])])
    print("\n".join(markdown_table(header, rows)))
    print("\nclass accuracy per category\n")
    print("\n".join(markdown_table(["run", *names], per_class)))


if __name__ == "__main__":
    main()
