"""One prepared GPU session: speed figures, the bundled model, and its quality sweep.

Run on a lent GPU machine from the repository root (PYTHONPATH=src), with the Fashion-MNIST IDX
files in --data-dir. Every stage writes its results to OUT/results.json as soon as it ends, so a
session cut short still returns what it measured. Stages:

  skip_check  a non-finite step skipped on the device (fused AdamW's found_inf), the run training on;
  speed     benchmarks/options.py on the GPU: the preset's training images/s, warm-up and 5-epoch
            estimate for each option set (fused AdamW, bf16 + channels-last, and with --compile
            torch.compile and its reduce-overhead mode, which replays CUDA graphs);
  preset    the fashion-mnist preset's full 5 epochs through the command line, with the option set
            the speed stage estimates fastest (warm-up included);
  sampling  10,000 images with DPM-Solver++(2M) at 20 network evaluations, fp32 and bf16;
  bundled   the fashion-mnist-large preset for as many epochs as fit in --bundled-seconds;
  quality   benchmarks/quality.py's sweeps on the bundled model (samplers x steps, guidance scales).

    PYTHONPATH=src python benchmarks/gpu_session.py --data-dir gpu_data --out $OUT
    PYTHONPATH=src python benchmarks/gpu_session.py --tiny ...   # a minute-long dry run on a CPU
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import options  # noqa: E402
import quality  # noqa: E402

from tinydiffusion import evaluation  # noqa: E402
from tinydiffusion.config import apply_overrides  # noqa: E402
from tinydiffusion.pipeline import generate, load_model  # noqa: E402
from tinydiffusion.presets import get_preset  # noqa: E402
from tinydiffusion.training import Batch, Trainer  # noqa: E402

RESULTS: dict = {}


def record(out: Path, key: str, value) -> None:
    RESULTS[key] = value
    (out / "results.json").write_text(json.dumps(RESULTS, indent=2, default=str) + "\n")
    print(f"== {key}: {json.dumps(value, default=str)[:2000]}", flush=True)


def stage(out: Path, name: str, fn, *args):
    started = time.perf_counter()
    try:
        value = fn(*args)
        record(out, name, {"ok": True, "seconds": round(time.perf_counter() - started, 1), **value})
        return value
    except Exception:  # keep going: later stages may still work
        record(out, name, {"ok": False, "seconds": round(time.perf_counter() - started, 1),
                           "error": traceback.format_exc()[-3000:]})
        return None


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def environment() -> dict:
    info = {"torch": torch.__version__, "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["gpu_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return info


def preset_config(args, name="fashion-mnist", **overrides):
    base = {"data.data_dir": args.data_dir, "train.sample_every_epoch": False}
    return apply_overrides(get_preset(name), {**base, **overrides})


BAD_STEP = 20  # skip_check's poisoned step


def poison_noise_at(bad_step: int):
    """The Trainer's batch hook for skip_check: NaN noise at `bad_step`, the batch's other parts as drawn. The
    noise is named, not unpacked by position, so a change of the batch's order cannot poison something else."""
    def poison(step: int, batch: Batch) -> Batch:
        return dataclasses.replace(batch, noise=batch.noise * float("nan")) if step == bad_step else batch

    return poison


def poisoned_run(config, run: Path, bad_step: int = BAD_STEP) -> tuple[list[dict], dict]:
    """skip_check's core: `config` trained in `run` with NaN noise at `bad_step`; its metrics records and final
    weights."""
    shutil.rmtree(run, ignore_errors=True)
    trainer = Trainer(config, run, progress=False, on_batch=poison_noise_at(bad_step))
    trainer.run()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return records, {k: v.detach().clone() for k, v in trainer.state.net.state_dict().items()}


def skip_check(args, out: Path) -> dict:
    """The device-side skip on the GPU: 40 steps with fused AdamW, NaN noise at step 20; the one skipped step
    counted and the weights still finite."""
    if not torch.cuda.is_available():
        return {"skipped": "no GPU"}
    config = preset_config(args, **{"train.max_steps": 40, "train.log_every": 10, "train.fused_adamw": "on",
                                    "train.on_nan": "skip", "train.precision": "fp32"})
    records, weights = poisoned_run(config, out / "work" / "skip-check")
    finite = all(torch.isfinite(w).all().item() for w in weights.values() if w.is_floating_point())
    skipped = [r["skipped_steps"] for r in records]
    return {"losses": [r["loss"] for r in records], "skipped": skipped, "finite": finite,
            "same": finite and skipped[-1] == 1}


def speed(args, out: Path) -> dict:
    """benchmarks/options.py on this GPU: each option set's steady images/s, warm-up and 5-epoch estimate."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sets = options.DEFAULT_SETS[device]
    if not args.compile:
        sets = [label for label in sets if "compile" not in label]
    opts = argparse.Namespace(data_dir=args.data_dir, rounds=1 if args.tiny else 2, compile_rounds=1,
                              steps=args.speed_steps, log_every=5 if args.tiny else 25, threads=0, device=device,
                              sets=",".join(sets))
    results = options.measure(opts)
    summary = options.summarize(results)
    (out / "options.md").write_text(options.format_markdown(results, summary))
    return {"summary": summary}


def preset_run(args, out: Path, chosen: dict) -> dict:
    run = out / "work" / "preset"
    shutil.rmtree(run, ignore_errors=True)
    flags = [f"--{k}={v}" for k, v in chosen.items()]
    command = [sys.executable, "-m", "tinydiffusion", "train", "--preset", "fashion-mnist", "--data-dir",
               args.data_dir, "--run-dir", str(run), "--no-progress", *flags]
    if args.tiny:
        command += ["--max-steps", "20"]
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    grids = sorted((run / "samples").glob("*.png"))
    if grids:
        shutil.copy(grids[-1], out / "work" / "preset-samples.png")
    return {"options": chosen, "wall_seconds_including_startup": round(wall, 1), "stdout_tail": proc.stdout[-600:],
            "final_metrics": last}


def sampling_speed(args, out: Path, checkpoint: Path) -> dict:
    model = load_model(checkpoint)
    results = {}
    num = 200 if args.tiny else 10_000
    for label, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        for batch in (num, num // 5):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype is not None and torch.cuda.is_available()):
                generate(model, min(batch, 500), sampler="dpmpp-2m", steps=20, batch_size=batch)  # warm-up
                sync()
                times = []
                for repeat in range(2):
                    started = time.perf_counter()
                    generate(model, num, sampler="dpmpp-2m", steps=20, batch_size=batch, seed=repeat)
                    sync()
                    times.append(time.perf_counter() - started)
            results[f"{label}, batch {batch}"] = {"num": num, "median_seconds": round(statistics.median(times), 3)}
    return results


def bundled(args, out: Path) -> dict:
    """Train the bundled model for as many whole epochs as the time budget allows."""
    probe_config = preset_config(args, "fashion-mnist-large", **{"train.max_steps": 30 if args.tiny else 300,
                                                                 "train.log_every": 50})
    probe_run = out / "work" / "probe-large"
    shutil.rmtree(probe_run, ignore_errors=True)
    probe = Trainer(probe_config, probe_run, progress=False).run()
    windows = [json.loads(line)["images_per_second"] for line in (probe_run / "metrics.jsonl").read_text().splitlines()]
    ips = statistics.median(windows[1:] or windows)
    epochs = max(1, math.floor(args.bundled_seconds * ips / 60_000 * 0.92))  # margin for epoch-end sample grids
    if args.tiny:
        epochs = 1
    config = apply_overrides(get_preset("fashion-mnist-large"), {"data.data_dir": args.data_dir,
                                                                   "train.epochs": epochs})
    run = out / "work" / "bundled"
    shutil.rmtree(run, ignore_errors=True)
    if args.tiny:
        config = apply_overrides(config, {"train.max_steps": 20})
    started = time.perf_counter()
    result = Trainer(config, run, progress=False).run()
    wall = time.perf_counter() - started
    return {"probe_images_per_second": round(ips, 1), "probe_steps": probe.step, "epochs": epochs,
            "steps": result.step, "final_loss": result.final_loss, "wall_seconds": round(wall, 1),
            "command": f"tinydiffusion train --preset fashion-mnist-large --epochs {epochs}", "run": str(run)}


def quality_sweeps(args, out: Path, checkpoint: Path, deadline: float) -> dict:
    model = load_model(checkpoint)
    rows = quality.parse_rows("ddpm:50 ddim:10 dpmpp-2m:10" if args.tiny else args.rows)
    state = quality.run_sweeps(model, evaluation.load_classifier(), num=300 if args.tiny else args.num, rows=rows,
                               guidance_scales=[float(s) for s in args.guidance_scales.split(",")],
                               guidance_sampler=("dpmpp-2m", 20), guidance=None, data_dir=args.data_dir, seed=0,
                               batch_size=args.batch_size, json_path=str(out / "quality.json"), deadline=deadline)
    (out / "quality.md").write_text(quality.markdown(state, quality.describe(model, state["num"], 0, "auto")))
    return {"rows": len(state["samplers"]), "guidance_rows": len(state["guidance"]),
            "chosen_guidance": state["chosen_guidance"], "skipped": state["skipped_for_time"]}


def pack_bundled(out: Path) -> None:
    """Copy the bundled model's EMA weights and config to OUT at once, before anything can time out."""
    root = out / "work" / "bundled" / "checkpoints"
    latest = root / (root / "latest").read_text().strip()
    shutil.copy(latest / "ema.safetensors", out / "fashion-mnist.safetensors")
    shutil.copy(latest / "config.json", out / "fashion-mnist.json")


def pack_extras(out: Path) -> None:
    """The device returns at most 8 files: the small ones from the work folder go into one tar."""
    with tarfile.open(out / "extras.tar", "w") as tar:
        for path in (out / "work").rglob("*"):
            if path.suffix in (".png", ".jsonl") or path.name == "config.json":
                tar.add(path, arcname=str(path.relative_to(out / "work")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="gpu_data")
    parser.add_argument("--out", default="gpu_out")
    parser.add_argument("--tiny", action="store_true", help="a quick dry run of every stage")
    parser.add_argument("--speed-steps", type=int, default=300)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to warm up)")
    parser.add_argument("--bundled-seconds", type=float, default=200)
    parser.add_argument("--num", type=int, default=10_000)
    parser.add_argument("--rows", default=quality.DEFAULT_ROWS)
    parser.add_argument("--guidance-scales", default=quality.DEFAULT_GUIDANCE_SCALES)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--stages", default="skip_check,speed,preset,sampling,bundled,quality")
    parser.add_argument("--deadline-seconds", type=float, default=520, help="start no quality row after this")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.tiny:
        args.speed_steps = 15
    out = Path(args.out)
    (out / "work").mkdir(parents=True, exist_ok=True)
    stages = args.stages.split(",")
    record(out, "environment", environment())

    chosen = {}  # the preset runs with the option set whose 5 epochs (warm-up included) are estimated fastest
    if "skip_check" in stages:
        stage(out, "skip_check", skip_check, args, out)
    if "speed" in stages:
        measured = stage(out, "speed", speed, args, out)
        if measured:
            summary = measured["summary"]
            best = min(summary, key=lambda label: summary[label]["five_epoch_seconds"])
            chosen = {**options.OFF, **options.OPTION_SETS[best]}
            record(out, "chosen_options", {"set": best, "options": chosen})
    if "preset" in stages:
        stage(out, "preset_5_epochs", preset_run, args, out, chosen)
    if "bundled" in stages and stage(out, "bundled", bundled, args, out):
        pack_bundled(out)
        pack_extras(out)
    preset_ckpt = out / "work" / "preset"
    if "sampling" in stages and (preset_ckpt / "checkpoints").exists():
        stage(out, "sampling_10k_20nfe", sampling_speed, args, out, preset_ckpt)
    bundled_run = out / "work" / "bundled"
    if "quality" in stages and (bundled_run / "checkpoints").exists():
        stage(out, "quality", quality_sweeps, args, out, bundled_run, started + args.deadline_seconds)
    pack_extras(out)
    shutil.rmtree(out / "work", ignore_errors=True)
    print("done", flush=True)


if __name__ == "__main__":
    main()
