"""FD against network evaluations: a teacher with each sampler beside its distilled students.

Every row draws N images (classes cycled evenly, one seed) at one guidance scale and scores them with the
project's evaluation (fmnist-classifier FD with its real-data floor at the same N). A network evaluation is one
forward pass per image: the teacher's guided steps take two (the conditional and unconditional halves), a
student's one. Also writes a grid of teacher and student samples from the same seeds, and times 64 images from a
warm process for each student and for the teacher at DPM-Solver++(2M), 20 steps.

    python benchmarks/distill_quality.py --teacher runs/preset --student runs/preset-student-4 \
        --student runs/preset-student-1 --num 1000 --guidance 2 --markdown docs/reports/distillation.md \
        --plot docs/figures/distill_fd.png --grid docs/figures/distill_grid.png --json docs/reports/runs/distill.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from common import cpu_description, markdown_table, median_seconds
from quality import parse_rows, score

from tinydiffusion import evaluation
from tinydiffusion.pipeline import generate, load_model
from tinydiffusion.viz import labelled_rows, save_image

DEFAULT_TEACHER_ROWS = "dpmpp-2m:4,8,20 ddim:4,10,20,50 heun:5,10"


def evaluations_per_image(model, row: dict) -> int:
    """Forward passes per image: guidance doubles a teacher's, a student takes the scale as an input."""
    guided_twice = row["guidance"] != 1.0 and model.num_classes and not model.config.net.guidance_input
    return row["nfe"] * (2 if guided_twice else 1)


def warm_seconds_for_64(model, guidance: float, repeats: int = 5, **sampling) -> float:
    """The median time of 64 images from a process that has already drawn once (the speed target's measure)."""
    generate(model, 64, guidance=guidance, **sampling)
    return median_seconds(lambda: generate(model, 64, guidance=guidance, batch_size=64, **sampling), repeats)


def sample_grid(teacher, students, guidance: float, seed: int, path: Path) -> None:
    """One row per model (the teacher at DPM-Solver++(2M) 20 steps first, then each student), each class once,
    the same seeds in every row."""
    n = max(teacher.num_classes, 10)
    rows = [generate(teacher, n, sampler="dpmpp-2m", steps=20, guidance=guidance, seed=seed)[0]]
    rows += [generate(student, n, guidance=guidance, seed=seed)[0] for student in students]
    save_image(labelled_rows(rows, list(teacher.class_names) or [str(i) for i in range(n)]), path)


def machine() -> str:
    return f"{cpu_description()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def markdown(state: dict) -> str:
    lines = [f"Teacher `{state['teacher']}`; N = {state['num']:,} per row, classes cycled, seed {state['seed']}, "
             f"guidance {state['guidance']}; {state['machine']}.", ""]
    lines += markdown_table(
        ["model", "sampler", "steps", "network evaluations per image", "FD (floor)", "precision / recall",
         "class accuracy"],
        [(row["model"], row["sampler"], row["steps"], row["evaluations"], f"{row['fd']:.2f} ({row['fd_floor']:.2f})",
          f"{row['precision']:.2f} / {row['recall']:.2f}", f"{row.get('class_accuracy', float('nan')):.3f}")
         for row in state["rows"]], "llrrrrr")
    if state.get("speed"):
        lines += ["", *markdown_table(["model", "64 images from a warm process (median of 5)"],
                                      [(name, f"{seconds:.2f} s") for name, seconds in state["speed"].items()], "lr")]
    return "\n".join(lines) + "\n"


def plot(state: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for model, sampler in dict.fromkeys((r["model"], r["sampler"]) for r in state["rows"]):
        rows = sorted((r for r in state["rows"] if r["model"] == model and r["sampler"] == sampler),
                      key=lambda r: r["evaluations"])
        label = f"teacher, {sampler}" if model == "teacher" else model
        ax.plot([r["evaluations"] for r in rows], [r["fd"] for r in rows], marker="o" if model == "teacher" else "*",
                markersize=6 if model == "teacher" else 12, label=label)
    ax.axhline(state["rows"][0]["fd_floor"], color="gray", linestyle="--", label="real data (floor)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("network evaluations per image")
    ax.set_ylabel(f"FD (fmnist-classifier features), N={state['num']:,}")
    ax.set_title(f"guidance {state['guidance']}", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", help="default: the bundled model")
    parser.add_argument("--student", action="append", default=[], help="a student run or checkpoint (repeatable)")
    parser.add_argument("--rows", default=DEFAULT_TEACHER_ROWS, help="the teacher's rows, e.g. 'ddim:10,20' "
                        "(an empty string: no teacher rows)")
    parser.add_argument("--consistency-steps", default="", help="the steps to score a consistency student at, "
                        "e.g. '1,2' (default: its own); it samples at any number")
    parser.add_argument("--no-speed", action="store_true", help="skip the warm-process timings")
    parser.add_argument("--data-dir", default="../shared/data/fashion-mnist")
    parser.add_argument("--num", type=int, default=1000)
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--markdown")
    parser.add_argument("--plot")
    parser.add_argument("--grid")
    parser.add_argument("--json")
    args = parser.parse_args()

    teacher = load_model(args.teacher, "cpu")
    students = [load_model(s, "cpu") for s in args.student]
    classifier = evaluation.load_classifier()
    state = {"teacher": str(teacher.source), "num": args.num, "guidance": args.guidance, "seed": args.seed,
             "machine": machine(), "rows": [], "speed": {}}

    def add(model, name, sampler, steps):
        row = score(model, sampler, steps, args.num, args.guidance, args.data_dir, args.seed, args.batch_size,
                    classifier)
        state["rows"].append({"model": name, **row, "evaluations": evaluations_per_image(model, row)})
        if args.json:
            Path(args.json).write_text(json.dumps(state, indent=2) + "\n")

    for student, path in zip(students, args.student, strict=True):
        d = student.config.distill
        own = [d.steps]
        if d.method == "consistency" and args.consistency_steps:
            own = [int(k) for k in args.consistency_steps.split(",")]
        for steps in own:
            name = f"{d.method} student, {steps} step{'s' if steps > 1 else ''}"
            add(student, name, d.sampler, steps)
            if not args.no_speed:
                state["speed"][f"{name} ({path})"] = warm_seconds_for_64(student, args.guidance, steps=steps)
    if not args.no_speed:
        state["speed"]["teacher, dpmpp-2m 20 steps"] = warm_seconds_for_64(teacher, args.guidance, repeats=3,
                                                                            sampler="dpmpp-2m", steps=20)
    for sampler, steps in parse_rows(args.rows):
        add(teacher, "teacher", sampler, steps)
    if args.grid:
        sample_grid(teacher, students, args.guidance, args.seed, Path(args.grid))
    text = markdown(state)
    if args.markdown:
        Path(args.markdown).write_text(text)
    if args.plot:
        plot(state, Path(args.plot))
    if args.json:
        Path(args.json).write_text(json.dumps(state, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
