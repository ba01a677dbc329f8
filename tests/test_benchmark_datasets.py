"""benchmarks/datasets.py at a tiny size on generated data: its workers, the subprocess plumbing that runs them,
and the report it writes, so that the benchmark cannot rot unnoticed."""

from __future__ import annotations

import importlib.util
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import make_idx_dataset
from PIL import Image

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # the script imports its neighbour options.py
# By path, under its own name: "datasets" could be another installed package.
_spec = importlib.util.spec_from_file_location("benchmark_datasets", BENCHMARKS / "datasets.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """The layout of ../shared/data: mnist-10k/train/<class>/*.png, mnist-10k/train.zip and fashion-mnist/."""
    root = tmp_path_factory.mktemp("shared-data")
    train = root / "mnist-10k" / "train"
    rng = np.random.default_rng(0)
    for label in range(10):
        (train / str(label)).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(train / str(label) / f"{i}.png")
    with zipfile.ZipFile(root / "mnist-10k" / "train.zip", "w", zipfile.ZIP_STORED) as archive:
        for path in sorted(train.rglob("*.png")):
            archive.write(path, path.relative_to(train.parent).as_posix())
    make_idx_dataset(root / "fashion-mnist", num_train=64, num_test=8)
    return root


def test_prepare_worker_on_every_source(data_root, tmp_path, monkeypatch):
    for index, (label, source) in enumerate(bench.sources(data_root).items()):
        monkeypatch.setenv("TINYDIFFUSION_CACHE", str(tmp_path / f"cache-{index}"))  # fresh, as the benchmark has it
        run = bench.prepare_worker(source, hit_repeats=2)
        assert run["images"] == (64 if "Fashion" in label else 30)
        assert run["image_shape"] == [1, 28, 28] and run["classes"] == 10 and run["skipped"] == 0
        assert run["first_use_s"] > 0 and len(run["hits_s"]) == 2 and run["hit_s"] > 0


def test_training_workers_and_the_report(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("TINYDIFFUSION_CACHE", str(tmp_path / "cache"))
    known = bench.sources(data_root)
    labels = list(known)
    folder, idx = known[labels[0]], known[labels[2]]
    train = {"1": {"folder": [], "idx": []}}
    for name, source in (("folder", folder), ("idx", idx)):
        run = bench.train_worker(source, steps=3, threads=1, batch=8, log_every=1)
        assert [w["step"] for w in run["windows"]] == [1, 2, 3] and run["images"] == (30 if name == "folder" else 64)
        train["1"][name].append(run)
    cifar = bench.cifar_worker(steps=2, threads=1, images=2, batch=1)
    assert len(cifar["windows"]) == 2 and "image_size=32, in_channels=3" in cifar["net"]

    prepare = {label: [{"images": 30, "image_shape": [1, 28, 28], "classes": 10, "first_use_s": 0.5, "hit_s": 0.01,
                        "skipped": 0}] for label in labels}
    results = {"machine": {"cpu": bench.lscpu_name(), "logical_cpus": 2, "torch": "x", "date": "today",
                           "load_average_at_start": 0.0, "load_average_at_end": 0.0},
               "settings": {"rounds": 1, "threads": [1], "steps": 3, "log_every": 1, "batch": 8, "cifar_steps": 2,
                            "cifar_threads": 1, "cifar_images": 8, "command": "python benchmarks/datasets.py"},
               "prepare": prepare, "train": train, "cifar": cifar,
               "flops": {"fashion-mnist": 0.1, "cifar10": 3.0}}
    assert 0.09 < bench.forward_gflops_per_image("fashion-mnist") < 0.12  # the README's 106 MFLOP
    summary = bench.summarize(results)
    assert summary["train"]["1"]["ratios"] and summary["cifar"]["seconds_per_step"] > 0
    assert len(run["load_average"]) == 2
    text = bench.format_markdown(results, summary)
    for heading in ("## Preparing a source", "## Training speed", "## What the `cifar10` preset costs",
                    "One GPU: not measured", "(load "):
        assert heading in text


@pytest.mark.slow  # a fresh interpreter imports torch: several seconds on a busy 2-core machine
def test_a_worker_runs_in_its_subprocess(data_root, tmp_path):
    source = bench.sources(data_root)["mnist-10k train.zip"]
    run = bench.run_worker("prepare", tmp_path / "cache", source=source, hit_repeats=1)
    assert run["images"] == 30 and len(run["hits_s"]) == 1 and (tmp_path / "cache" / "prepared").is_dir()
