"""A bundled model's quality per category, beside the real images' own ceiling.

Three rows of `tinydiffusion evaluate`, all against the same data, classifier and reference (the held-out split
beside `--data`): the model at the command line's defaults (DPM-Solver++(2M), 20 steps, its default guidance), its
bundled 4-step student (`--fast`), and the held-out images themselves as samples, whose class accuracy is the
ceiling a model's could reach (the classifier's own accuracy on real images of each category).

    python benchmarks/bundled_quality.py --model emoji --data ../shared/data/emoji/train \
        --real ../shared/data/emoji/test --num 1000 --json docs/reports/runs/bundled-emoji/quality.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from common import machine_description, markdown_table, write_json
from real_scores import evaluate, real_scores

from tinydiffusion.bundled import bundled
from tinydiffusion.checkpoint import load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="emoji", help="the bundled model's name")
    parser.add_argument("--data", required=True, help="the folder it trained on, with its held-out split beside it")
    parser.add_argument("--real", required=True, help="the held-out split's folder, scored as samples (the ceiling)")
    parser.add_argument("--num", type=int, default=1000)
    parser.add_argument("--json", help="write the three scores here")
    args = parser.parse_args()

    model = bundled(args.model)
    net = load_config(model.weights.with_suffix(".json")).net
    common = ["--data", args.data, "--num", str(args.num), "--device", "cpu"]
    with tempfile.TemporaryDirectory() as tmp:
        scores = {
            "model": evaluate(["--model", args.model, *common], Path(tmp) / "model.json"),
            "student": evaluate([str(model.student()), *common], Path(tmp) / "student.json"),
            "real": real_scores(args.real, args.data, net.image_size, net.in_channels, Path(tmp) / "real.json"),
        }
    names = scores["model"]["class_names"]
    header = ["category", "model", f"{model.fast_steps}-step student", f"real ({scores['real']['num']:,} images)"]
    rows = [[name, *(f"{scores[k]['per_class_accuracy'][i]:.2f}" for k in ("model", "student", "real"))]
            for i, name in enumerate(names)]
    rows.append(["**all**", *(f"**{scores[k]['class_accuracy']:.3f}**" for k in ("model", "student", "real"))])
    # The real images are the reference itself: their FD, precision and recall say nothing, so they are left out.
    rows.append(["FD (floor)", *(f"{scores[k]['fd']:.2f} ({scores[k]['fd_floor']:.2f})" for k in ("model", "student")),
                 "-"])
    rows.append(["precision / recall", *(f"{scores[k]['precision']:.3f} / {scores[k]['recall']:.3f}"
                                         for k in ("model", "student")), "-"])
    print(f"\n{machine_description()}\n")
    print("\n".join(markdown_table(header, rows)))
    if args.json:
        write_json(args.json, {"machine": machine_description(), "command": " ".join(sys.argv), **scores})


if __name__ == "__main__":
    main()
