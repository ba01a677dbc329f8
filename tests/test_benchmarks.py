"""What the benchmarks rely on: the diffusers adapter fits the network interface; train.max_seconds stops a run."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import smoke_config

from tinydiffusion.checkpoint import latest_checkpoint
from tinydiffusion.config import apply_overrides
from tinydiffusion.errors import UserError
from tinydiffusion.presets import get_preset
from tinydiffusion.training import Batch, Trainer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_diffusers_adapter_takes_the_network_interface():
    pytest.importorskip("diffusers")
    from baselines import NUM_CLASSES, DiffusersUNet

    net = DiffusersUNet().eval()
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([3.0, 999.5])  # samplers pass fractional timesteps
    with torch.no_grad():
        conditional = net(x, t, torch.tensor([0, 9]))
        unconditional = net(x, t, None)
        explicit_null = net(x, t, torch.full((2,), NUM_CLASSES))
    assert conditional.shape == unconditional.shape == x.shape
    assert torch.equal(unconditional, explicit_null)  # y=None means the "no class" index
    assert 3.5e6 < sum(p.numel() for p in net.parameters()) < 4.5e6


def test_max_seconds_ends_training_like_its_last_step(tiny_data_dir, tmp_path):
    config = apply_overrides(get_preset("smoke"), {
        # with max_steps set the budget only cuts the run short (without it, it plans the run: test_time_budget.py)
        "data.data_dir": str(tiny_data_dir), "train.threads": 1, "train.max_steps": 100_000, "train.max_seconds": 1.0,
        "train.sample_every_epoch": False, "train.log_every": 10_000,
    })
    trainer = Trainer(config, tmp_path / "run", progress=False)
    scheduled = trainer.total_steps
    result = trainer.run()
    assert 0 < result.step < scheduled and not result.stopped_early
    assert trainer.total_steps == scheduled  # the LR schedule keeps its length
    assert latest_checkpoint(tmp_path / "run").name == f"step-{result.step:08d}"
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == result.step  # the final partial window is logged


def test_max_seconds_must_not_be_negative():
    with pytest.raises(UserError, match="max_seconds"):
        apply_overrides(get_preset("smoke"), {"train.max_seconds": -1}).validate()


def test_the_gpu_session_skip_check_poisons_the_noise_and_the_step_is_skipped(tiny_data_dir, tmp_path):
    """benchmarks/gpu_session.py's skip check, its core run eagerly on the CPU on tiny data. Its batch hook makes
    the noise of one step NaN and leaves the images, classes and times as drawn (a hook that unpacked the batch by
    position once poisoned the times instead); the Trainer skips that step and trains on."""
    import gpu_session

    batch = Batch(x0=torch.rand(4, 1, 8, 8), y=torch.arange(4), noise=torch.randn(4, 1, 8, 8),
                  drawn=(torch.rand(4, dtype=torch.float64),))
    poison = gpu_session.poison_noise_at(3)
    poisoned = poison(3, batch)
    assert torch.isnan(poisoned.noise).all()
    assert torch.equal(poisoned.x0, batch.x0) and torch.equal(poisoned.y, batch.y)
    assert torch.equal(poisoned.drawn[0], batch.drawn[0])
    assert poison(2, batch) is batch
    config = smoke_config(tiny_data_dir, **{"train.max_steps": 8, "train.log_every": 4, "train.fused_adamw": "on",
                                            "train.on_nan": "skip", "train.precision": "fp32", "train.device": "cpu"})
    records, weights = gpu_session.poisoned_run(config, tmp_path / "run", bad_step=3)
    assert [r["skipped_steps"] for r in records] == [1, 1]
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())


# --- benchmarks/common.py: what every benchmark shares, and the scripts that use it ------------

TOUCHED = ["common", "options", "startup", "datasets", "throughput", "vs_diffusers", "colour_throughput",
           "export_speed", "time_to_quality", "colour_figures", "demo_latency", "distill_quality", "distill_curve",
           "editing_figures", "novelty",
           "latent_route", "quality", "distributed_cpu"]
NEEDS = {"throughput": "diffusers", "vs_diffusers": "diffusers", "demo_latency": "gradio"}


def load_benchmark(name: str):
    """A benchmark script by path, under a name of its own ("datasets" could be another installed package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", TOUCHED)
def test_every_benchmark_imports(name):
    if name in NEEDS:
        pytest.importorskip(NEEDS[name])
    load_benchmark(name)


def test_the_cpu_description_names_the_cpu_proc_cpuinfo_names():
    import common

    description = common.cpu_description()
    assert description.strip() and f"({os.cpu_count()} CPUs, " in description
    assert common.machine_description().startswith(description)
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in (cpuinfo.read_text().splitlines() if cpuinfo.exists() else [])
             if line.split(":", 1)[0].strip() == "model name"]
    if names:
        assert description.startswith(names[0] + " (") and common.cpu_model() == names[0]
    record = common.machine_record(torch="t")
    assert list(record) == ["cpu", "logical_cpus", "torch", "date", "load_average_at_start"]
    assert record["cpu"] == description and json.loads(json.dumps(record)) == record


def test_the_cpu_description_says_the_widest_vector_instructions_and_bf16():
    import common

    assert common.widest_vector(["sse2"]) == "no AVX2"
    assert common.widest_vector(["avx", "avx2"]) == "AVX2, no AVX-512"
    assert common.widest_vector(["avx2", "avx512f"]) == "AVX-512"
    assert common.cpu_description(["avx2"]).endswith(", AVX2, no AVX-512)")
    assert common.cpu_description(["avx512f", "amx_bf16", "avx512_bf16"]).endswith(
        ", AVX-512, bf16 instructions: avx512_bf16, amx_bf16)")


def test_the_table_writers_on_a_tiny_table():
    import common

    assert common.markdown_table(["name", "n", "note"], [("a", 1, "x"), ("bb", 22.5, "")], "lr") == [
        "| name | n | note |", "| --- | ---: | --- |", "| a | 1 | x |", "| bb | 22.5 |  |"]
    assert common.markdown_table(["", "v"], []) == ["|  | v |", "| --- | --- |"]
    assert common.text_table([("", "ours", "ratio of two"), ("steps", "1,000", "0.5")]) == [
        "               ours  ratio of two",
        "steps         1,000           0.5"]


def test_timing_and_the_report_files(tmp_path, capsys):
    import common

    calls = []
    seconds = common.seconds_per_call(lambda: calls.append(1), 3, warmup=2)
    assert len(seconds) == 3 and len(calls) == 5 and all(s >= 0 for s in seconds)
    assert common.median_seconds(lambda: None, 3) >= 0
    common.report({"x": 1}, lambda r: {"double": 2 * r["x"]}, lambda r, s: f"| {s['double']} |\n",
                  str(tmp_path / "r.json"), str(tmp_path / "r.md"))
    assert json.loads((tmp_path / "r.json").read_text()) == {"x": 1, "summary": {"double": 2}}
    assert (tmp_path / "r.md").read_text() == "| 2 |\n" and "| 2 |" in capsys.readouterr().out


# --- each benchmark's report from tiny, made-up measurements (no test ran these; drift breaks them) --

def test_the_startup_report():
    startup = load_benchmark("startup")
    seconds = {tree: {label: [0.2, 0.4, 0.3] if tree == "baseline" else [0.1] for label in startup.COMMANDS}
               for tree in ("baseline", "current")}
    results = {"machine": "cpu", "python": "3", "baseline": "abc", "rounds": 3, "date": "d", "seconds": seconds}
    summary = startup.summarize(results)
    assert summary["--help"]["ratio"] == pytest.approx(3.0)
    text = startup.format_markdown(results, summary)
    assert "| `--help` | 0.30 | 0.10 | 3.0x |" in text and "| --- | ---: | ---: | ---: |" in text


def test_the_quality_and_distillation_reports():
    quality, distill = load_benchmark("quality"), load_benchmark("distill_quality")
    row = {"sampler": "ddim", "steps": 4, "nfe": 4, "fd": 1.5, "fd_floor": 0.5, "precision": 0.9, "recall": 0.8,
           "class_accuracy": 0.95, "sampling_seconds": 2.0}
    state = {"samplers": [row], "chosen_guidance": 2.0, "guidance": [{**row, "guidance": 2.0}]}
    text = quality.markdown(state, "header")
    assert "| ddim | 4 | 4 | 1.500 | 0.500 | 0.900 | 0.800 | 0.950 | 2.0 |" in text
    assert "| 2 | 1.500 | 0.900 | 0.800 | 0.950 |" in text
    state = {"teacher": "runs/t", "num": 10, "seed": 0, "guidance": 2.0, "machine": "m",
             "rows": [{**row, "model": "teacher", "evaluations": 8}], "speed": {"teacher": 1.234}}
    text = distill.markdown(state)
    assert "| teacher | ddim | 4 | 8 | 1.50 (0.50) | 0.90 / 0.80 | 0.950 |" in text and "| teacher | 1.23 s |" in text


def test_the_distillation_curve_report(tmp_path):
    curve = load_benchmark("distill_curve")
    assert curve.parse_run("progressive 2->1=runs/x+1500") == ("progressive 2->1", Path("runs/x"), 1500.0)
    assert curve.parse_run("c=runs/y") == ("c", Path("runs/y"), 0.0)
    with pytest.raises(SystemExit):
        curve.parse_run("runs/y")
    (tmp_path / "metrics.jsonl").write_text('{"step": 50, "elapsed_s": 10.5}\n{"step": 100, "elapsed_s": 21}\n'
                                            '{"epoch": 1}\n')
    assert curve.elapsed_at(tmp_path) == {50: 10.5, 100: 21}
    times = curve.elapsed_at(tmp_path)  # an epoch's end checkpointed between log lines: read off the line
    assert curve.seconds_at(times, 75) == pytest.approx(15.75) and curve.seconds_at(times, 100) == 21
    assert np.isnan(curve.seconds_at(times, 120))  # past the log: not guessed
    state = {"num": 10, "seed": 0, "guidance": 1.5, "teacher_fd": 2.0, "machine": "m",
             "rows": [{"run": "r", "steps": 1, "step": 100, "seconds": 1600.0, "fd": 2.5, "fd_floor": 0.5,
                       "class_accuracy": 0.97}]}
    assert "| r | 1 | 100 | 1,600 | 2.50 (0.50) | 1.25 | 0.970 |" in curve.markdown(state)


def test_novelty_picks_checkpoints_by_step_and_finds_their_time(trained_run):
    novelty = load_benchmark("novelty")
    every = novelty.checkpoints_of(trained_run)
    assert every and novelty.checkpoints_of(trained_run, 10**9) == every[-1:]
    assert novelty.checkpoints_of(every[-1]) == every[-1:]
    step = novelty.step_of(every[-1])
    seconds = novelty.elapsed(trained_run, step)
    assert seconds is not None and novelty.elapsed(every[-1], step) == seconds
    assert novelty.elapsed(trained_run, None) is None


@pytest.mark.parametrize("flags, says", [
    (["--markdown", "missing/novelty.md"], "for --markdown does not exist"),
    (["--json", "novelty.txt"], "--json must end in .json"),
    (["--num", "5"], "--num between 10 and"),
    (["--every", "0"], "--every and --figure-count must be positive"),
])
def test_novelty_refuses_bad_arguments_in_one_sentence_before_sampling(trained_run, tmp_path, monkeypatch, capsys,
                                                                       flags, says):
    novelty = load_benchmark("novelty")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["novelty.py", str(trained_run), "--out-dir", "samples", *flags])
    with pytest.raises(SystemExit) as exit_:
        novelty.main()
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_.value.code == 2 and says in error and "Traceback" not in error
    assert not (tmp_path / "samples").exists()


def test_novelty_finds_training_images_copied_and_held_out_images_new(trained_run, tmp_path):
    """The copying measure on known answers: training images given as samples are all nearer to a training image
    than held-out images are (at distance 0), held-out images themselves about 5% (the quantile's definition)."""
    novelty = load_benchmark("novelty")
    checkpoint = novelty.checkpoints_of(trained_run)[-1]
    reference = novelty.Reference(checkpoint)
    evaluator = reference.evaluator
    train_labels = np.arange(len(reference.train_images)) % len(evaluator.class_names)
    copies = reference.measure(reference.train_images[:48].permute(0, 2, 3, 1).numpy(), train_labels[:48])
    assert copies["share_nearer"] == 1.0 and copies["median_distance"] == 0.0
    assert all(torch.equal(reference.train_images[i], reference.train_images[j])
               for i, j in enumerate(copies["nearest"]))
    held_out = reference.held_out
    new = reference.measure(held_out.permute(0, 2, 3, 1).numpy(), np.zeros(len(held_out), dtype=np.int64))
    assert new["share_nearer"] <= novelty.QUANTILE + 1 / len(held_out)
    assert new["median_distance"] == pytest.approx(reference.held_out_median)
    assert new["fd_train"] == pytest.approx(new["fd_train_floor"]) and new["fd_train_num"] == len(held_out)
    assert len(held_out) > 40
    few = reference.measure(held_out[:40].permute(0, 2, 3, 1).numpy(), np.zeros(40, dtype=np.int64))
    assert few["fd_train"] == pytest.approx(few["fd_train_floor"]) and few["fd_train_num"] == 40  # floor at the same N
    assert new["fd_held_out"] == pytest.approx(0, abs=1e-6)  # the reference against itself
    row = {"run": "r", "step": 2, "train_seconds": 1.0, **new}
    assert "| r | 2 | 1 |" in novelty.format_markdown([row])
    novelty.figure(tmp_path / "f.png", held_out.permute(0, 2, 3, 1).numpy(), reference.train_images, new["nearest"], 4)
    from PIL import Image

    assert Image.open(tmp_path / "f.png").size == (4 * 28 * 2, 2 * 28 * 2)


def test_the_demo_latency_report():
    pytest.importorskip("gradio")
    demo = load_benchmark("demo_latency")
    calls = []
    seconds = demo.timed(lambda: calls.append(1), 2)
    assert len(seconds) == 3 == len(calls)
    timing = demo.summary([3.0, 1.0, 2.0])
    assert timing["first_s"] == 3.0 and timing["median_s"] == 1.5
    result = {"runs": 2, "cpu": "c", "torch": "t", "threads": 1, "date": "d", "sampler": "s", "steps": 2,
              "guidance": 1.5, "handler": timing, "server": timing, "server_sampling": timing, "others_cpu_s": 0.0,
              "wall_s": 1.0, "cpus": 2, "server_startup_s": 1.0, "load_before": [0.5, 0.5, 0.5]}
    assert "| the handler (sampling and the grid) | 1.50 s | 1.00 s | 2.00 s | 3.00 s |" in demo.markdown(result)


def test_the_throughput_and_vs_diffusers_reports():
    pytest.importorskip("diffusers")
    throughput = load_benchmark("throughput")
    assert throughput.matmul_gflops(size=32, reps=1) > 0
    one = {"matmul_gflops": 10.0, "bare_images_per_second": 100.0, "loop_images_per_second": 95.0,
           "loop_images_per_cpu_second": 50.0, "bare_images_per_cpu_second": 52.0, "peak_rss_bytes": 2**30,
           "rss_before_training_bytes": 2**29, "threads": 1}
    networks = {name: {"label": name, "parameters": 1000, "forward_flops_per_image": 1e6, "rounds": [one],
                       "sampling_images_per_second": [300.0]} for name in ("ours", "diffusers")}
    results = {"machine": {"machine": "m", "torch": "t", "diffusers": "d", "threads": 1, "date": "x",
                           "load_average_at_start": 0.0, "load_average_at_end": 0.0},
               "settings": {"precision": "fp32", "batch": 128, "repeats": 1, "loop_steps": 10, "loop_window": 5},
               "networks": networks}
    summary = throughput.summarize(results)
    assert summary["ours"]["loop_over_bare"] == pytest.approx(0.95)
    assert "| train img/s, bare step | 100.0 | 100.0 | 1.00 |" in throughput.format_markdown(results, summary)
    assert "ours/diffusers" in throughput.format_text(results, summary).splitlines()[-len(throughput.ROWS) - 1]


def test_the_time_to_quality_report():
    from types import SimpleNamespace

    ttq = load_benchmark("time_to_quality")
    points = [{"step": s, "epoch": s / 10, "train_seconds": 6.0 * s, "fd": 10.0 / s, "fd_floor": 0.5,
               "precision": 0.5, "recall": 0.5, "class_accuracy": 0.9} for s in (1, 2, 5)]
    results = [{"name": name, "flags": flags, "points": points, "process_wall_seconds": 60.0,
                "process_cpu_seconds": 100.0, "load_average_before": 0.0, "load_average_after": 0.0}
               for name, flags in (("base", []), ("faster", ["--x", "1"]))]
    args = SimpleNamespace(preset="auto", data=None, data_dir="d", common=[], every=1, num=10, sampler="ddim",
                           steps=4, guidance=1.0, target=3.0, plot=None, markdown=None)
    text = ttq.format_markdown(args, results)
    assert "| faster | `--x 1` | 60 (1.00x) | 100 (1.00x) | 30 s, step 5 (FD 2.00) | 2.00 (5) |" in text
    assert "| 5 | 0.50 | 30 | 2.00 | 0.50 | 0.500 | 0.500 | 0.900 |" in text


def test_colour_figures_stacks_runs_under_their_labels():
    from PIL import Image

    colour_figures = load_benchmark("colour_figures")
    bands = [Image.new("RGB", (30, 20), "red"), Image.new("RGB", (40, 10), "blue")]
    figure = colour_figures.stacked(bands, ["5 min", "60 min"], margin=50)
    assert figure.size == (90, 30)
    assert figure.getpixel((50, 0)) == (255, 0, 0) and figure.getpixel((89, 25)) == (0, 0, 255)
    assert figure.getpixel((85, 5)) == (255, 255, 255)  # the narrower band leaves white beside it
    assert any(max(figure.getpixel((x, y))) < 128 for x in range(50) for y in range(20))  # the first label
    with pytest.raises(ValueError):
        colour_figures.stacked(bands, ["one label for two runs"])


def test_colour_figures_draws_one_band_per_guidance_scale(trained_run, tmp_path, monkeypatch):
    from PIL import Image

    colour_figures = load_benchmark("colour_figures")
    one, two = tmp_path / "one.png", tmp_path / "two.png"
    for out, scales in ((one, "1"), (two, "1,3")):
        monkeypatch.setattr(sys, "argv", ["colour_figures.py", str(trained_run), str(out), "--rows", "1",
                                          "--scale", "1", "--guidance", scales])
        colour_figures.main()
    single, double = Image.open(one).convert("RGB"), Image.open(two).convert("RGB")
    band = single.height
    assert double.height == 2 * band and double.width > single.width  # a margin for the labels "w = 1", "w = 3"
    top, bottom = (np.asarray(double.crop((56, y, double.width, y + band))) for y in (0, band))
    assert np.array_equal(top, np.asarray(single)[:, : top.shape[1]])  # w = 1 is the single band, same noise
    assert not np.array_equal(top, bottom)  # the scale changes the images


@pytest.mark.parametrize("flags, message", [(["--guidance", "2,abc"], "is not a number"),
                                            (["--guidance", "1,2", "RUN2"], "one run")])
def test_colour_figures_refuses_bad_guidance_lists(flags, message, tmp_path, monkeypatch, capsys):
    colour_figures = load_benchmark("colour_figures")
    runs = ["RUN1"] + [f for f in flags if f.startswith("RUN")]
    options = [f for f in flags if not f.startswith("RUN")]
    monkeypatch.setattr(sys, "argv", ["colour_figures.py", *runs, str(tmp_path / "out.png"), *options])
    with pytest.raises(SystemExit) as exit_:
        colour_figures.main()
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out.png").exists()
