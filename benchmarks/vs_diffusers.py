"""Time to quality: the `fashion-mnist` preset's UNet and diffusers' UNet2DModel, trained for equal wall-clock time.

1. The preset trains as it is (5 epochs, the project's Trainer); its training wall time is the budget.
2. The diffusers baseline (benchmarks/baselines.py) trains with the same Trainer, data, seed and settings
   for that many seconds. A run cut off by the clock would stop partway down its cosine LR decay, so
   the baseline's step count is fitted to the budget instead: a short timed run of the same loop gives
   its steps/s, `train.max_steps` is set to what fits, and the schedule ends on time. `train.max_seconds`
   still caps the run at the budget, so the baseline never gets more time (the table says whether the
   schedule finished).
3. Each EMA model draws the same N images (same sampler, steps, guidance, seed, classes cycled), and
   `tinydiffusion evaluate --samples` scores both alike: FD (fmnist-classifier features), precision, recall.

Sample grids are off in both runs, so the budget is training time. `--budget-seconds B` skips the 5-epoch
run and fits both networks to B seconds (for quick checks). On two idle CPU cores the defaults take about
45 minutes: two trainings of about 15 minutes each, then sampling, where the baseline's 2000 images x 20
steps x 2 (guidance) network evaluations at full resolution take about 10 minutes.

    python benchmarks/vs_diffusers.py --data-dir /path/to/fashion-mnist [--budget-seconds B]
        [--sampler dpmpp-2m] [--steps 20] [--num 2000] [--out-dir runs/vs-diffusers]
        [--markdown docs/reports/vs-diffusers.md]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import torch
from baselines import NETWORKS, build
from common import machine_description, markdown_table, text_table, write_json

from tinydiffusion.checkpoint import EMA_FILE, latest_checkpoint, load_config, load_into, load_weights
from tinydiffusion.config import DataConfig, RunConfig, apply_overrides
from tinydiffusion.data import load_data
from tinydiffusion.defaults import DEFAULT_GUIDANCE
from tinydiffusion.diffusion import GaussianDiffusion
from tinydiffusion.errors import UserError
from tinydiffusion.evaluation import save_npz
from tinydiffusion.files import atomic_write_bytes
from tinydiffusion.nets import count_parameters
from tinydiffusion.pipeline import Model, generate
from tinydiffusion.presets import get_preset
from tinydiffusion.samplers import SAMPLERS
from tinydiffusion.training import Trainer

TIMING_STEPS, TIMING_WINDOW = 10, 3  # the fitting run; its first window (warm-up) is left out
SEED = 0


def base_config(name: str, args) -> RunConfig:
    """The preset with sample grids off. For the baseline, the Trainer's `net=` replaces the network (config.net
    then only gives the data shape and the number of classes)."""
    return apply_overrides(get_preset("fashion-mnist"), {
        "name": f"fashion-mnist-{name}", "data.data_dir": str(args.data_dir), "data.download": False,
        "train.sample_every_epoch": False, "train.threads": args.threads, "train.seed": SEED,
    })


# --- training ----------------------------------------------------------------------------------

def steps_per_second(name: str, config: RunConfig, dataset) -> float:
    """Steady-state steps/s of the whole training loop, from a short run of it (warm-up window left out)."""
    timing = apply_overrides(config, {"train.max_steps": TIMING_STEPS, "train.log_every": TIMING_WINDOW})
    with tempfile.TemporaryDirectory() as run_dir:
        Trainer(timing, Path(run_dir), dataset=dataset, progress=False, net=build(name, SEED)).run()
        records = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    first, last = records[0], records[-1]
    return (last["step"] - first["step"]) / (last["elapsed_s"] - first["elapsed_s"])


def finished_run(run_dir: Path) -> dict:
    """The record of a preset run made earlier (e.g. `tinydiffusion train --preset fashion-mnist`), read back
    from its metrics.jsonl, so the 5-epoch run need not be repeated here."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    config = load_config(run_dir / "config.json")
    steps_per_epoch = 60_000 // config.train.batch_size
    last = records[-1]
    return {"label": NETWORKS["ours"][0], "parameters": count_parameters(build("ours", SEED)), "run_dir": str(run_dir),
            "steps": last["step"], "steps_in_schedule": last["step"], "schedule_finished": True,
            "epochs": last["step"] / steps_per_epoch, "train_seconds": last["elapsed_s"], "final_loss": last["loss"]}


def train(name: str, args, dataset, budget: float | None) -> dict:
    """Train one network: the preset as it is (budget None), or with its steps fitted to `budget` seconds."""
    config, fitted = base_config(name, args), {}
    if budget is not None:
        rate = steps_per_second(name, config, dataset)
        planned = max(1, int(budget * rate))
        config = apply_overrides(config, {"train.max_steps": planned, "train.max_seconds": budget})
        fitted = {"budget_seconds": budget, "fitted_steps_per_second": rate, "planned_steps": planned}
        print(f"{name}: {rate:.3f} steps/s in the timing run; {planned} steps planned for {budget:.0f} s",
              file=sys.stderr, flush=True)
    run_dir = args.out_dir / name
    net = build(name, SEED)
    trainer = Trainer(config, run_dir, dataset=dataset, progress=not args.no_progress, net=net)
    result = trainer.run()
    if name != "ours":  # config.json names the preset's network; say which one trained here
        atomic_write_bytes(run_dir / "network.txt", f"{NETWORKS[name][0]}, from benchmarks/baselines.py; "
                           "config.json's net section gives only the data shape and classes\n".encode())
    steps_in_schedule = trainer.total_steps
    return {"label": NETWORKS[name][0], "parameters": count_parameters(net), "run_dir": str(run_dir),
            "steps": result.step, "steps_in_schedule": steps_in_schedule,
            "schedule_finished": result.step >= steps_in_schedule, "epochs": result.step / trainer.steps_per_epoch,
            "train_seconds": result.wall_seconds, "final_loss": result.final_loss, **fitted}


# --- scoring -------------------------------------------------------------------------------------

def load_ema_model(name: str, run_dir: Path) -> Model:
    """The EMA weights of the run's newest checkpoint, in the network that trained them."""
    found = latest_checkpoint(run_dir)
    net = build(name)
    load_into(net, load_weights(found / EMA_FILE), found / EMA_FILE)
    config = load_config(run_dir / "config.json")
    return Model(net.eval(), GaussianDiffusion(config.diffusion), config, found / EMA_FILE)


def score(name: str, run_dir: Path, args) -> dict:
    """Sample N images, then score them with `tinydiffusion evaluate --samples` (the same for both networks)."""
    model = load_ema_model(name, run_dir)
    start = time.perf_counter()
    images, labels = generate(model, args.num, sampler=args.sampler, steps=args.steps, guidance=args.guidance,
                              seed=SEED)
    sampling_seconds = time.perf_counter() - start
    samples, scores = run_dir / "samples.npz", run_dir / "evaluation.json"
    save_npz(samples, images.numpy(), labels.numpy())
    command = [sys.executable, "-m", "tinydiffusion", "evaluate", "--samples", str(samples),
               "--data-dir", str(args.data_dir), "--json", str(scores)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"`{' '.join(command)}` failed:\n{done.stderr[-3000:]}")
    return {**json.loads(scores.read_text()), "sampling_seconds": sampling_seconds}


# --- the report ----------------------------------------------------------------------------------

def header_lines(args, results: dict) -> list[str]:
    seconds = results["diffusers"]["budget_seconds"]
    if args.budget_seconds is not None:
        budget = f"budget: {seconds:.0f} s of training per network (--budget-seconds; sample grids off)"
    elif args.ours_run:
        budget = (f"budget: {seconds:.0f} s of training per network: the training time of the finished preset run "
                  f"`{args.ours_run}` (5 epochs, its epoch-end sample grids included), reused with --ours-run; "
                  "the baseline ran with sample grids off")
    else:
        budget = f"budget: {seconds:.0f} s of training per network (the preset's 5 epochs; sample grids off)"
    return [
        f"machine: {machine_description()}; training device {'cuda' if torch.cuda.is_available() else 'cpu'}",
        f"torch {torch.__version__}, torch threads: {torch.get_num_threads()}, "
        f"{datetime.now().astimezone().isoformat(timespec='minutes')}",
        budget,
        f"scored: {args.num} samples, sampler {args.sampler}, {args.steps} steps, guidance {args.guidance:g}, "
        f"seed {SEED}, classes cycled; `tinydiffusion evaluate --samples`",
    ]


ROWS = [  # (label, key, format)
    ("parameters", "parameters", "{:,}"),
    ("training seconds", "train_seconds", "{:.0f}"),
    ("steps (batch 128)", "steps", "{:,}"),
    ("  steps planned to fit the budget", "planned_steps", "{:,}"),
    ("epochs", "epochs", "{:.2f}"),
    ("LR schedule finished", "schedule_finished", "{}"),
    ("final loss", "final_loss", "{:.4f}"),
    ("FD (fmnist-classifier features)", "fd", "{:.2f}"),
    ("  floor: real images at the same N", "fd_floor", "{:.2f}"),
    ("precision", "precision", "{:.3f}"),
    ("recall", "recall", "{:.3f}"),
    ("class accuracy", "class_accuracy", "{:.3f}"),
    ("sampling seconds", "sampling_seconds", "{:.0f}"),
]


def table(results: dict) -> list[tuple[str, str, str]]:
    def cell(record, key, fmt):
        if isinstance(record.get(key), bool):
            return "yes" if record[key] else "no"
        return fmt.format(record[key]) if key in record else "-"
    return [(label, *(cell(results[name], key, fmt) for name in NETWORKS)) for label, key, fmt in ROWS]


def format_text(args, results: dict) -> str:
    return "\n".join(header_lines(args, results) + [""] + text_table([("", "ours", "diffusers"), *table(results)]))


def format_markdown(args, results: dict) -> str:
    lines = ["# Time to quality against diffusers", "",
             "Measured by `benchmarks/vs_diffusers.py` (its docstring says how).", ""]
    lines += [f"- {line}" for line in header_lines(args, results)]
    lines += ["", *markdown_table(["", f"ours: {results['ours']['label']}", results["diffusers"]["label"]],
                                  [(label.strip(), ours, theirs) for label, ours, theirs in table(results)], "lrr")]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data/fashion-mnist"), help="Fashion-MNIST IDX files")
    parser.add_argument("--budget-seconds", type=float, help="train both this long (not the preset's 5 epochs)")
    parser.add_argument("--sampler", default="dpmpp-2m", choices=list(SAMPLERS))
    parser.add_argument("--steps", type=int, default=20, help="sampling steps")
    parser.add_argument("--num", type=int, default=2000, help="samples scored per network")
    parser.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE, help="classifier-free guidance scale")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 keeps torch's default")
    parser.add_argument("--out-dir", type=Path, default=Path("runs/vs-diffusers"), help="run directories go here")
    parser.add_argument("--markdown", help="write the table to this Markdown file (e.g. docs/reports/vs-diffusers.md)")
    parser.add_argument("--no-progress", action="store_true", help="no training progress bars")
    parser.add_argument("--ours-run", type=Path, help="a finished `train --preset fashion-mnist` run to use as ours "
                        "(its training time is the budget unless --budget-seconds is given)")
    args = parser.parse_args()
    if (args.budget_seconds is not None and args.budget_seconds <= 0) or args.steps < 1 or args.num < 1:
        parser.error("--budget-seconds, --steps and --num must be positive")
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in NETWORKS:
        if name == "ours" and args.ours_run:
            continue
        if (args.out_dir / name / "config.json").exists():
            parser.error(f"{args.out_dir / name} already holds a run; choose another --out-dir or delete it")

    try:
        dataset = load_data(DataConfig(data_dir=str(args.data_dir), download=False))
        if args.ours_run:
            results = {"ours": finished_run(args.ours_run)}
        else:
            results = {"ours": train("ours", args, dataset, args.budget_seconds)}
        budget = args.budget_seconds if args.budget_seconds is not None else results["ours"]["train_seconds"]
        results["diffusers"] = train("diffusers", args, dataset, budget)
        for name in NETWORKS:
            results[name].update(score(name, Path(results[name]["run_dir"]), args))
    except UserError as err:
        raise SystemExit(f"error: {err}") from None
    print(format_text(args, results))
    write_json(args.out_dir / "results.json", results, default=float)
    if args.markdown:
        atomic_write_bytes(Path(args.markdown), format_markdown(args, results).encode())


if __name__ == "__main__":
    main()
