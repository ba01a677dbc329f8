"""Sample quality of a model by sampler, step count and guidance scale.

Measures FD (fmnist-classifier features) against the test split, its real-data floor at the same N,
precision/recall and (for class-conditional models) class accuracy, for

  * every sampler over a range of step counts (FD against network evaluations), and
  * a range of classifier-free guidance scales (FD and class accuracy against guidance).

N is the same for every row, so the FDs compare. Writes a Markdown table and a plot.

    python benchmarks/quality.py --data-dir ../shared/data/fashion-mnist --num 10000 \
        --markdown docs/reports/quality.md --plot docs/quality.png --json docs/reports/runs/quality.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from common import cpu_description, markdown_table

from tinydiffusion import evaluation
from tinydiffusion.defaults import DEFAULT_GUIDANCE
from tinydiffusion.pipeline import generate, load_model
from tinydiffusion.samplers import network_evaluations

# Issue 3's rows (DDPM 1000; DDIM 10-250) and issue 4's fast samplers at comparable evaluations.
DEFAULT_ROWS = ("ddpm:1000 ddim:10,20,50,100,250 dpmpp-2m:10,20,50 euler:20,50 heun:10,25")
DEFAULT_GUIDANCE_SCALES = "0,1,1.5,2,3,4"


def parse_rows(text: str) -> list[tuple[str, int]]:
    rows = []
    for group in text.split():
        sampler, steps = group.split(":")
        rows += [(sampler, int(s)) for s in steps.split(",")]
    return rows


def score(model, sampler: str, steps: int, num: int, guidance: float, data_dir: str, seed: int,
          batch_size: int, classifier) -> dict:
    started = time.perf_counter()
    images, labels = generate(model, num, sampler=sampler, steps=steps, guidance=guidance, seed=seed,
                              batch_size=batch_size)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    sampling_seconds = time.perf_counter() - started
    result = evaluation.evaluate_samples(images.numpy(), None if labels is None else labels.numpy(),
                                         data_dir=data_dir, classifier=classifier, progress=False)
    row = {"sampler": sampler, "steps": steps, "nfe": network_evaluations(sampler, steps), "guidance": guidance,
           "sampling_seconds": round(sampling_seconds, 2)}
    row.update({k: result[k] for k in ("num", "fd", "fd_floor", "precision", "recall")})
    if "class_accuracy" in result:
        row["class_accuracy"] = result["class_accuracy"]
    print(json.dumps(row), flush=True)
    return row


def pick_guidance(rows: list[dict]) -> float:
    """The default scale: lowest FD among scales whose class accuracy reaches 90%, else the most accurate."""
    good = [r for r in rows if r.get("class_accuracy", 0) >= 0.90]
    best = min(good, key=lambda r: r["fd"]) if good else max(rows, key=lambda r: r.get("class_accuracy", 0))
    return best["guidance"]


def run_sweeps(model, classifier, *, num: int, rows: list[tuple[str, int]], guidance_scales: list[float],
               guidance_sampler: tuple[str, int], guidance: float | None, data_dir: str, seed: int, batch_size: int,
               json_path: str | None = None, deadline: float | None = None) -> dict:
    """Guidance sweep first (unless `guidance` is fixed, its result picks the scale the sampler rows
    use), then every (sampler, steps) row. Results are saved after every row; rows that would start
    after `deadline` (a time.perf_counter() value) are listed as skipped."""
    state = {"num": num, "guidance": [], "samplers": [], "skipped_for_time": []}

    def run(key, jobs):
        for sampler, steps, scale in jobs:
            if deadline is not None and time.perf_counter() > deadline:
                state["skipped_for_time"].append([sampler, steps, scale])
                continue
            state[key].append(score(model, sampler, steps, num, scale, data_dir, seed, batch_size, classifier))
            if json_path:
                Path(json_path).write_text(json.dumps(state, indent=2) + "\n")

    if model.num_classes and guidance_scales:
        run("guidance", [(*guidance_sampler, scale) for scale in guidance_scales])
    if guidance is None:
        guidance = pick_guidance(state["guidance"]) if state["guidance"] else (DEFAULT_GUIDANCE if model.num_classes
                                                                                else 1.0)
    state["chosen_guidance"] = guidance
    run("samplers", [(sampler, steps, guidance) for sampler, steps in rows])
    if json_path:
        Path(json_path).write_text(json.dumps(state, indent=2) + "\n")
    return state


def markdown(state: dict, header: str) -> str:
    samplers, guidance = state["samplers"], state["guidance"]
    lines = [header, ""]
    if samplers:
        lines += [f"Samplers at guidance {state['chosen_guidance']:g}:", ""]
        lines += markdown_table(
            ["sampler", "steps", "network evaluations", "FD", "FD floor (real, same N)", "precision", "recall",
             "class accuracy", "sampling s"],
            [(r["sampler"], r["steps"], r["nfe"], f"{r['fd']:.3f}", f"{r['fd_floor']:.3f}", f"{r['precision']:.3f}",
              f"{r['recall']:.3f}", f"{r.get('class_accuracy', float('nan')):.3f}", f"{r['sampling_seconds']:.1f}")
             for r in samplers])
    if guidance:
        r0 = guidance[0]
        lines += ["", f"Guidance scale ({r0['sampler']}, {r0['steps']} steps; 1 = plain conditional, "
                  "0 = unconditional):", ""]
        lines += markdown_table(
            ["guidance", "FD", "precision", "recall", "class accuracy"],
            [(f"{r['guidance']:g}", f"{r['fd']:.3f}", f"{r['precision']:.3f}", f"{r['recall']:.3f}",
              f"{r.get('class_accuracy', float('nan')):.3f}") for r in guidance])
    return "\n".join(lines) + "\n"


def plot(samplers: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in dict.fromkeys(r["sampler"] for r in samplers):
        rows = sorted((r for r in samplers if r["sampler"] == name), key=lambda r: r["nfe"])
        ax.plot([r["nfe"] for r in rows], [r["fd"] for r in rows], marker="o", label=name)
    ax.axhline(samplers[0]["fd_floor"], color="gray", linestyle="--", label="real data (floor)")
    ax.set_xscale("log")
    ax.set_xlabel("network evaluations")
    ax.set_ylabel(f"FD (fmnist-classifier features), N={samplers[0]['num']:,}")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="default: the bundled model")
    parser.add_argument("--data-dir", default="../shared/data/fashion-mnist")
    parser.add_argument("--num", type=int, default=10_000)
    parser.add_argument("--rows", default=DEFAULT_ROWS, help="e.g. 'ddpm:1000 ddim:10,50'; '' skips")
    parser.add_argument("--guidance", type=float, default=None,
                        help="scale for the sampler rows (default: picked by the guidance sweep)")
    parser.add_argument("--guidance-scales", default=DEFAULT_GUIDANCE_SCALES, help="'' skips the guidance sweep")
    parser.add_argument("--guidance-sampler", default="dpmpp-2m:20")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--markdown")
    parser.add_argument("--plot")
    parser.add_argument("--json")
    args = parser.parse_args()

    model = load_model(args.checkpoint, args.device)
    sampler, steps = args.guidance_sampler.split(":")
    state = run_sweeps(model, evaluation.load_classifier(), num=args.num, rows=parse_rows(args.rows),
                       guidance_scales=[float(s) for s in args.guidance_scales.split(",") if s],
                       guidance_sampler=(sampler, int(steps)), guidance=args.guidance, data_dir=args.data_dir,
                       seed=args.seed, batch_size=args.batch_size, json_path=args.json)
    text = markdown(state, describe(model, args.num, args.seed, args.device))
    if args.markdown:
        Path(args.markdown).write_text(text)
    if args.plot and state["samplers"]:
        plot(state["samplers"], args.plot)
    print(text)


def describe(model, num: int, seed: int, device: str) -> str:
    on_gpu = torch.cuda.is_available() and device != "cpu"
    where = torch.cuda.get_device_name() if on_gpu else f"CPU: {cpu_description()}, {torch.get_num_threads()} threads"
    return (f"Model: `{model.source.name}`; N = {num:,} samples per row, classes cycled evenly; seed {seed}; "
            f"{where}; torch {torch.__version__}.")


if __name__ == "__main__":
    main()
