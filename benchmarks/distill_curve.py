"""FD against distillation time: every checkpoint of each distillation run, scored as the student samples.

Each run is `LABEL=RUN_DIR`, optionally `+SECONDS`: the distillation time spent before the run started (a round of
progressive distillation counts the rounds before it), so that rounds and one-round students sit on one time axis.
A checkpoint's time is the run's elapsed training time at its step (metrics.jsonl). A consistency student is
scored at each of --consistency-steps; a trajectory or dmd student at its own steps. The teacher's FD (from one
`distill_quality.py --json` file, its row named teacher) is drawn as a line, with the issue's targets: 1.25x and
1.1x it.

    python benchmarks/distill_curve.py --run "progressive 4->2=runs/p27/prog-4to2" \
        --run "progressive 2->1=runs/p27/prog-2to1+1500" --run "consistency=runs/p27/cons-4" \
        --consistency-steps 1,2 --teacher-json docs/reports/runs/distill-bundled.json --num 1000 --guidance 2 \
        --json docs/reports/runs/distill-curve.json --plot docs/figures/distill_curve.png \
        --markdown docs/reports/runs/distill-curve.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from common import cpu_description, elapsed_at, markdown_table
from quality import score

from tinydiffusion import evaluation
from tinydiffusion.checkpoint import CHECKPOINTS, read_checkpoint_info
from tinydiffusion.pipeline import load_model


def parse_run(text: str) -> tuple[str, Path, float]:
    """LABEL=RUN_DIR[+SECONDS] -> (label, run directory, seconds spent before it)."""
    label, _, rest = text.partition("=")
    path, _, before = rest.partition("+")
    if not label or not path:
        raise SystemExit(f"--run {text!r}: give LABEL=RUN_DIR, optionally +SECONDS")
    return label, Path(path), float(before or 0)


def checkpoints(run: Path) -> list[tuple[int, Path]]:
    found = [(read_checkpoint_info(p)["step"], p) for p in (run / CHECKPOINTS).glob("step-*") if p.is_dir()]
    return sorted(found)


def seconds_at(times: dict[int, float], step: int) -> float:
    """A checkpoint's training time: logged at its step, or read off the line between the logged steps around it
    (an epoch's end is checkpointed between log lines)."""
    logged = sorted(times)
    if step in times or not logged or not logged[0] < step < logged[-1]:
        return times.get(step, float("nan"))
    return float(np.interp(step, logged, [times[s] for s in logged]))


def markdown(state: dict) -> str:
    lines = [f"N = {state['num']:,} per row, classes cycled, seed {state['seed']}, guidance {state['guidance']}; "
             f"teacher FD {state['teacher_fd']:.2f}; {state['machine']}.", ""]
    lines += markdown_table(
        ["run", "student steps", "distillation step", "distillation s (with earlier rounds)", "FD (floor)",
         "FD / teacher's", "class accuracy"],
        [(r["run"], r["steps"], r["step"], f"{r['seconds']:,.0f}", f"{r['fd']:.2f} ({r['fd_floor']:.2f})",
          f"{r['fd'] / state['teacher_fd']:.2f}", f"{r.get('class_accuracy', float('nan')):.3f}")
         for r in state["rows"]], "lrrrrrr")
    return "\n".join(lines) + "\n"


def plot(state: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.4))
    for run, steps in dict.fromkeys((r["run"], r["steps"]) for r in state["rows"]):
        rows = [r for r in state["rows"] if r["run"] == run and r["steps"] == steps]
        ax.plot([r["seconds"] / 60 for r in rows], [r["fd"] for r in rows], marker="o",
                label=f"{run}, sampled in {steps}")
    teacher = state["teacher_fd"]
    ax.axhline(teacher, color="black", label=f"teacher, 40 evaluations ({teacher:.2f})")
    ax.axhline(1.25 * teacher, color="gray", linestyle="--", label="1-step target (1.25x)")
    ax.axhline(1.1 * teacher, color="gray", linestyle=":", label="2-step target (1.1x)")
    ax.set_yscale("log")
    ax.set_xlabel("distillation time, minutes (earlier rounds included)")
    ax.set_ylabel(f"FD (fmnist-classifier features), N={state['num']:,}")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True, help="LABEL=RUN_DIR[+SECONDS] (repeatable)")
    parser.add_argument("--teacher-json", required=True, help="a distill_quality.py --json file; its row "
                        "named teacher is the teacher's")
    parser.add_argument("--consistency-steps", default="1,2")
    parser.add_argument("--data-dir", default="../shared/data/fashion-mnist")
    parser.add_argument("--num", type=int, default=1000)
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json")
    parser.add_argument("--plot")
    parser.add_argument("--markdown")
    args = parser.parse_args()

    teacher_rows = [r for r in json.loads(Path(args.teacher_json).read_text())["rows"] if r["model"] == "teacher"]
    classifier = evaluation.load_classifier()
    state = {"num": args.num, "guidance": args.guidance, "seed": args.seed, "teacher_fd": teacher_rows[0]["fd"],
             "machine": cpu_description(), "rows": []}
    for label, run, before in map(parse_run, args.run):
        times = elapsed_at(run)
        for step, path in checkpoints(run):
            model = load_model(path, "cpu")
            d = model.config.distill
            at = [int(k) for k in args.consistency_steps.split(",")] if d.method == "consistency" else [d.steps]
            for steps in at:
                row = score(model, d.sampler, steps, args.num, args.guidance, args.data_dir, args.seed, 500,
                            classifier)
                state["rows"].append({"run": label, "step": step, "seconds": before + seconds_at(times, step),
                                      **row})
                if args.json:
                    Path(args.json).write_text(json.dumps(state, indent=2) + "\n")
    text = markdown(state)
    if args.markdown:
        Path(args.markdown).write_text(text)
    if args.plot:
        plot(state, Path(args.plot))
    print(text)


if __name__ == "__main__":
    main()
