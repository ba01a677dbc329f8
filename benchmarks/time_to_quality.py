"""Time to quality: FD against training wall time, for a preset (default `fashion-mnist`) and variants of it.

Each `--run "NAME: FLAGS"` trains `tinydiffusion train --preset PRESET [--data SOURCE] COMMON FLAGS` (the command
users run, as a subprocess; `--preset auto` leaves the preset to the data) with a checkpoint every `--every` steps,
all kept, and sample grids off; the checkpoints at multiples of `--every` and the last are scored. The runs train
one after another, never side by side, so each has the machine's cores to itself. Afterwards, each checkpoint's EMA
weights are scored by `tinydiffusion evaluate` (N images, one sampler, steps, guidance and seed for all), so
scoring never overlaps the training it measures. A point of the curve is (the training loop's wall time at that
step, from the run's metrics.jsonl, FD). The process's CPU time (user + system, from the kernel) is recorded too:
on a shared machine it is less disturbed by other load than the wall time.

Note what a point in the middle of a run is: the weights at that step of a longer schedule (the learning
rate not yet decayed), not a shorter run's result.

Rerunning with the same --out-dir reuses finished runs and scores, so an interrupted measurement goes on.

    python benchmarks/time_to_quality.py --data-dir ../shared/data/fashion-mnist \
        --run "preset:" --run "half-batch: --batch-size 64 --train.max_steps 2340" \
        [--preset NAME|auto] [--data SOURCE] [--common "FLAGS FOR EVERY RUN"] \
        [--every 468] [--num 1000] [--guidance 2] [--out-dir runs/time-to-quality] \
        [--markdown docs/reports/time-to-quality.md] [--plot docs/figures/time_to_quality.png] [--target 1.45]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from common import cpu_model, machine_description, markdown_table

from tinydiffusion.checkpoint import is_complete
from tinydiffusion.data.named import NAMED


def parse_run(text: str) -> tuple[str, list[str]]:
    name, sep, flags = text.partition(":")
    if not sep or not name.strip() or "/" in name:
        raise argparse.ArgumentTypeError(f"--run takes 'NAME: FLAGS' (NAME a plain word), not {text!r}")
    return name.strip(), shlex.split(flags)


def tinydiffusion(*args: str) -> list[str]:
    return [sys.executable, "-m", "tinydiffusion", *args]


# --- training ----------------------------------------------------------------------------------

def train(name: str, flags: list[str], args) -> dict:
    """Train one run (or reuse it, finished, from an earlier invocation); its wall and CPU seconds."""
    run_dir = args.out_dir / name
    record_file = run_dir / "training.json"
    if record_file.is_file():
        print(f"{name}: reusing the finished run in {run_dir}", file=sys.stderr, flush=True)
        return json.loads(record_file.read_text())
    command = tinydiffusion("train", *data_flags(args), "--run-dir", str(run_dir),
                            "--no-progress", "--train.sample_every_epoch", "false", "--train.keep", "1000",
                            "--train.checkpoint_every", str(args.every), *args.common, *flags)
    print(f"{name}: {shlex.join(command[1:])}", file=sys.stderr, flush=True)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{name}: training failed (exit {os.waitstatus_to_exitcode(status)}); see above")
    record = {"name": name, "flags": flags, "command": shlex.join(command[1:]), "checkpoint_every": args.every,
              "process_wall_seconds": time.perf_counter() - started,
              "process_cpu_seconds": usage.ru_utime + usage.ru_stime,
              "load_average_before": load_before, "load_average_after": os.getloadavg()[0]}
    record_file.write_text(json.dumps(record, indent=2) + "\n")
    return record


def data_flags(args) -> list[str]:
    """The preset and the data every run trains on."""
    preset = [] if args.preset == "auto" else ["--preset", args.preset]
    return preset + (["--data", args.data] if args.data else ["--data-dir", str(args.data_dir)])


def elapsed_at(records: list[dict], step: int) -> float:
    """The training loop's wall time at `step`, interpolated between the metrics.jsonl lines around it."""
    timed = [(r["step"], r["elapsed_s"]) for r in records if "elapsed_s" in r]
    before = max(((s, e) for s, e in timed if s <= step), default=(0, 0.0))
    after = min(((s, e) for s, e in timed if s >= step), default=before)
    if after[0] == before[0]:
        return before[1]
    return before[1] + (after[1] - before[1]) * (step - before[0]) / (after[0] - before[0])


# --- scoring -------------------------------------------------------------------------------------

def score_checkpoints(name: str, args) -> list[dict]:
    """`tinydiffusion evaluate` on every checkpoint of the run, one point of the curve each."""
    run_dir = args.out_dir / name
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    config = json.loads((run_dir / "config.json").read_text())
    steps_per_epoch = config["data"]["num_images"] // config["train"]["batch_size"]
    points = []
    checkpoints = sorted(p for p in (run_dir / "checkpoints").glob("step-*") if is_complete(p))
    for checkpoint in checkpoints:  # the reports' checkpoints between the curve's points are not scored
        step = int(checkpoint.name.removeprefix("step-"))
        if step % args.every and checkpoint != checkpoints[-1]:
            continue
        scores_file = run_dir / f"evaluation-{checkpoint.name}.json"
        if not scores_file.is_file():
            command = tinydiffusion("evaluate", str(checkpoint), "--num", str(args.num), "--sampler", args.sampler,
                                    "--steps", str(args.steps), "--guidance", str(args.guidance), "--seed", "0",
                                    *([] if args.data else ["--data-dir", str(args.data_dir)]),
                                    "--json", str(scores_file))
            print(f"{name}: scoring {checkpoint.name}", file=sys.stderr, flush=True)
            if subprocess.run(command, stdout=subprocess.DEVNULL).returncode != 0:
                raise SystemExit(f"{name}: scoring {checkpoint.name} failed; see above")
        scores = json.loads(scores_file.read_text())
        points.append({"step": step, "epoch": step / steps_per_epoch, "train_seconds": elapsed_at(records, step),
                       **{key: scores[key] for key in ("fd", "fd_floor", "precision", "recall", "class_accuracy",
                                                       "metric") if key in scores}})
    return points


# --- the report ----------------------------------------------------------------------------------

def first_reaching(points: list[dict], target: float) -> dict | None:
    return next((p for p in points if p["fd"] <= target), None)


def header_lines(args, results: list[dict]) -> list[str]:
    loads = ", ".join(f"{r['name']} {r['load_average_before']:.2f} -> {r['load_average_after']:.2f}" for r in results)
    return [
        f"machine: {machine_description()}; training device cpu, torch's default threads",
        f"Python {platform.python_version()}, {datetime.now().astimezone().isoformat(timespec='minutes')}",
        f"each run: `tinydiffusion train {shlex.join(data_flags(args) + args.common)}` with its flags, sample grids "
        "off, a checkpoint every N steps (" + ", ".join(f"{r['name']} {r.get('checkpoint_every', args.every)}"
                                                         for r in results) + "); the runs trained one after another",
        f"scored: the EMA at every N steps and at the end, {args.num} samples, {args.sampler} {args.steps} steps, "
        f"guidance {args.guidance:g}, seed 0, classes cycled; `tinydiffusion evaluate` ({metric_of(results)})",
        f"load average (1 min) before -> after each training: {loads}",
    ]


def metric_of(results: list[dict]) -> str:
    """The metric the scores were computed in, as `evaluate` names it."""
    return results[0]["points"][0].get("metric", "FD") if results and results[0].get("points") else "FD"


def format_markdown(args, results: list[dict]) -> str:
    lines = ["# Time to quality", "", "Measured by `benchmarks/time_to_quality.py` (its docstring says how).", ""]
    lines += [f"- {line}" for line in header_lines(args, results)]
    baseline = results[0]
    if args.plot and args.markdown:
        lines += ["", f"![FD against training wall time]({os.path.relpath(args.plot, args.markdown.parent)})"]
    lines += ["", f"Target: FD <= {args.target:g}. Time ratios are against `{baseline['name']}`, the first run.", ""]
    rows = []
    for r in results:
        reached = first_reaching(r["points"], args.target)
        when = "not reached" if reached is None else (
            f"{reached['train_seconds']:.0f} s, step {reached['step']} (FD {reached['fd']:.2f})")
        best = min(r["points"], key=lambda p: p["fd"])
        wall, cpu = r["process_wall_seconds"], r["process_cpu_seconds"]
        rows.append((r["name"], f"`{shlex.join(r['flags']) or '(none)'}`",
                     f"{wall:.0f} ({wall / baseline['process_wall_seconds']:.2f}x)",
                     f"{cpu:.0f} ({cpu / baseline['process_cpu_seconds']:.2f}x)", when,
                     f"{best['fd']:.2f} ({best['step']})"))
    lines += markdown_table(["run", "flags", "training s (process)", "CPU s", "first FD <= target at",
                             "best FD (step)"], rows, "llrr")
    for r in results:
        lines += ["", f"## {r['name']}", ""]
        lines += markdown_table(
            ["step", "epoch", "training s", "FD", "floor", "precision", "recall", "class acc."],
            [(p["step"], f"{p['epoch']:.2f}", f"{p['train_seconds']:.0f}", f"{p['fd']:.2f}", f"{p['fd_floor']:.2f}",
              f"{p['precision']:.3f}", f"{p['recall']:.3f}", f"{p['class_accuracy']:.3f}") for p in r["points"]],
            "r" * 8)
    return "\n".join(lines) + "\n"


def plot(path: Path, args, results: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for r in results:
        points = r["points"]
        ax.plot([p["train_seconds"] / 60 for p in points], [p["fd"] for p in points], marker="o", label=r["name"])
    ax.axhline(args.target, color="grey", linestyle="--", linewidth=1, label=f"FD {args.target:g}")
    half = results[0]["points"][-1]["train_seconds"] / 2 / 60
    ax.axvline(half, color="grey", linestyle=":", linewidth=1, label=f"half of {results[0]['name']}'s time")
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(FixedLocator([1, 1.5, 2, 3, 5, 10, 20, 30, 50, 100, 200]))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("training wall time (minutes)")
    ax.set_ylabel(f"FD, N={args.num} (log scale)")
    machine = cpu_model()
    ax.set_title(f"{args.sampler} {args.steps} steps, guidance {args.guidance:g}; {machine}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data/fashion-mnist"), help="Fashion-MNIST IDX files")
    parser.add_argument("--run", type=parse_run, action="append", required=True, metavar="'NAME: FLAGS'",
                        help="a run: a name, then flags for `train --preset PRESET` (the first is the baseline)")
    parser.add_argument("--preset", default="fashion-mnist", help="the preset every run starts from (auto: none, the "
                        "data chooses)")
    parser.add_argument("--data", help="train on this source (a folder, a zip, ...) instead of Fashion-MNIST in "
                        "--data-dir; scored against the data each run recorded")
    parser.add_argument("--common", type=shlex.split, default=[], metavar="'FLAGS'",
                        help="flags for every run, before its own")
    parser.add_argument("--every", type=int, default=468, help="steps between checkpoints, the curve's points")
    parser.add_argument("--num", type=int, default=1000, help="samples scored per checkpoint")
    parser.add_argument("--sampler", default="dpmpp-2m")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps")
    parser.add_argument("--guidance", type=float, default=2.0, help="classifier-free guidance scale")
    parser.add_argument("--target", type=float, default=1.45, help="the FD the preset reaches today")
    parser.add_argument("--out-dir", type=Path, default=Path("runs/time-to-quality"), help="run directories go here")
    parser.add_argument("--markdown", type=Path, help="write the tables here (e.g. docs/reports/time-to-quality.md)")
    parser.add_argument("--plot", type=Path, help="write the curves here (e.g. docs/figures/time_to_quality.png)")
    parser.add_argument("--train-only", action="store_true", help="train, and score later with a second invocation")
    args = parser.parse_args()
    names = [name for name, _ in args.run]
    if len(set(names)) != len(names) or args.every < 1 or args.num < 10 or args.steps < 1:
        parser.error("run names must differ, and --every, --num (>= 10) and --steps must be positive")
    if not (0 <= args.guidance <= 100 and args.target > 0):  # nan fails these too
        parser.error("--guidance must be between 0 and 100, and --target a positive FD")
    if args.data is not None and not Path(args.data).exists() and args.data not in NAMED:
        parser.error(f"--data {args.data} is neither a file, a folder nor a named dataset ({', '.join(NAMED)})")
    if args.data is None and not any(args.data_dir.glob("train-images*")):
        parser.error(f"{args.data_dir} holds no Fashion-MNIST training images (train-images-idx3-ubyte[.gz])")
    for output in (args.markdown, args.plot):  # written at the end: refuse an impossible path before hours of work
        if output is not None and not output.parent.is_dir():
            parser.error(f"{output.parent} is not a folder, so {output} cannot be written")

    results = [train(name, flags, args) for name, flags in args.run]
    if args.train_only:
        return
    for result in results:
        result["points"] = score_checkpoints(result["name"], args)
    (args.out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    text = format_markdown(args, results)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    if args.plot:
        plot(args.plot, args, results)


if __name__ == "__main__":
    main()
