"""Shared fixtures: tiny generated Fashion-MNIST-format data and a CLI runner.

Tests never need the real dataset (a user's clone has no ../shared); they write small IDX files.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinydiffusion.checkpoint import EMA_FILE, MODEL_FILE, latest_checkpoint, load_weights
from tinydiffusion.config import RunConfig, apply_overrides
from tinydiffusion.data import write_idx
from tinydiffusion.diffusion import GaussianDiffusion
from tinydiffusion.presets import get_preset

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO.parent / "shared" / "data" / "fashion-mnist"


def make_idx_dataset(folder: Path, num_train: int = 256, num_test: int = 64, seed: int = 0) -> Path:
    """Write the four standard IDX files with smooth random blobs (so a model has something to learn)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:28]
    for prefix, n in (("train", num_train), ("t10k", num_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        centres = 6 + 16 * rng.random((n, 2))
        radius = (3 + labels[:, None, None] * 0.8)
        dist2 = (yy[None] - centres[:, 0, None, None]) ** 2 + (xx[None] - centres[:, 1, None, None]) ** 2
        images = (255 * np.exp(-dist2 / (2 * radius**2))).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    return make_idx_dataset(tmp_path_factory.mktemp("fashion-mnist"))


def cli_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    return env


def default_sigint() -> None:
    """The `preexec_fn` of every child a test sends SIGINT to: SIGINT's default handler. A shell starts its background
    jobs (`bash .ci/run &`, nohup, CI runners) with SIGINT ignored, and their children inherit that: such a child
    would not show what Ctrl-C does."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_cli(args: list[str], cwd: Path | None = None, timeout: float = 300, env: dict | None = None,
            **kwargs) -> subprocess.CompletedProcess:
    """Run `python -m tinydiffusion ARGS` in a subprocess with one CPU thread (`env` adds variables)."""
    return subprocess.run([sys.executable, "-m", "tinydiffusion", *map(str, args)], cwd=cwd,
                          env={**cli_env(), **(env or {})}, capture_output=True, text=True, timeout=timeout, **kwargs)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Prepared data, downloads and FD statistics go to a fresh folder, never the user's ~/.cache; the
    environment variable reaches the CLI subprocesses too."""
    folder = tmp_path_factory.mktemp("cache")
    old = os.environ.get("TINYDIFFUSION_CACHE")
    os.environ["TINYDIFFUSION_CACHE"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("TINYDIFFUSION_CACHE", None)
    else:
        os.environ["TINYDIFFUSION_CACHE"] = old


@pytest.fixture
def private_cache(tmp_path, monkeypatch) -> Path:
    """A cache of this test's own (the session's is shared by every test): for tests that count what is cached."""
    monkeypatch.setenv("TINYDIFFUSION_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    import torch

    torch.set_num_threads(1)  # the CI machine has two cores; tests run many small models


# --- refusals: one sentence, one line, no traceback --------------------------------------------


def one_sentence(error, *fragments: str) -> str:
    """The text of a refusal (a string, or a pytest.ExceptionInfo of one raised), checked to be one sentence: one
    line, no traceback, ending in a full stop, and holding each fragment (in any case). Returns it."""
    text = str(error.value) if isinstance(error, pytest.ExceptionInfo) else error
    assert "\n" not in text and "Traceback" not in text and text.endswith("."), text
    for fragment in fragments:
        assert fragment.lower() in text.lower(), text
    return text


def assert_error(code: int, err: str, *fragments: str, exact: str | None = None) -> str:
    """Exit status 2 and exactly one line `error: <sentence>` on stderr (the sentence `exact`, when given, else one
    holding each fragment). Returns the sentence."""
    assert code == 2, err
    assert err.startswith("error: ") and err.endswith("\n") and err.count("\n") == 1, err
    sentence = one_sentence(err[len("error: "):-1], *fragments)
    assert exact is None or sentence == exact, err
    return sentence


# --- helpers the training, crash and hostile-input tests share ----------------------------------


def cli(capsys, *args) -> tuple[int, str, str]:
    """Run the command line in-process; returns (exit status, stdout, stderr)."""
    from tinydiffusion.cli import main

    try:
        code = main([str(a) for a in args])
    except SystemExit as exit_:  # argparse errors
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained_run(tiny_data_dir, tmp_path_factory) -> Path:
    """A class-conditional smoke run of two steps, one per test module; tests copy it (run_copy) to damage it."""
    from tinydiffusion.training import train

    run = tmp_path_factory.mktemp("trained") / "run"
    train(smoke_config(tiny_data_dir, **{"train.max_steps": 2}), run, progress=False)
    return run


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    return run


def smoke_config(data_dir, grids: bool = False, **overrides) -> RunConfig:
    """The smoke preset on the tiny data, one thread, sample grids only if asked for."""
    return apply_overrides(get_preset("smoke"), {"data.data_dir": str(data_dir), "train.threads": 1,
                                                 "train.sample_every_epoch": grids, **overrides})


def train_args(data_dir, run_dir, *extra) -> list:
    """`tinydiffusion train` arguments for a smoke run."""
    return ["train", "--preset", "smoke", "--data-dir", data_dir, "--run-dir", run_dir, "--no-progress",
            "--train.threads", "1", *extra]


def files_of(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def final_weights(run_dir: Path) -> dict[str, dict]:
    """The latest checkpoint's model and EMA weights."""
    found = latest_checkpoint(run_dir)
    return {name: load_weights(found / name) for name in (MODEL_FILE, EMA_FILE)}


def poison_loss(monkeypatch, bad_calls: set[int], value: float = float("nan")) -> None:
    """Make GaussianDiffusion.training_loss non-finite on the given (0-based) calls."""
    real_loss, calls = GaussianDiffusion.training_loss, []

    def loss(self, *args, **kwargs):
        calls.append(None)
        result = real_loss(self, *args, **kwargs)
        return result * value if len(calls) - 1 in bad_calls else result

    monkeypatch.setattr(GaussianDiffusion, "training_loss", loss)


def gaussian_denoiser(mean: float = 0.3, std: float = 0.25):
    """The exact posterior mean for data ~ N(mean, std^2) per pixel: the optimal denoiser. The times it is called
    at are in `.calls`.

    x_t = a x0 + s eps  =>  E[x0 | x_t] = mean + a std^2 / (a^2 std^2 + s^2) (x_t - a mean).
    """
    calls = []

    def denoise(x_t, t, alpha, sigma):
        calls.append(t)
        x0 = mean + alpha * std**2 / (alpha**2 * std**2 + sigma**2) * (x_t - alpha * mean)
        eps = (x_t - alpha * x0) / sigma
        return eps, x0

    denoise.calls = calls
    return denoise


def command_lines(parser=None, prefix: tuple[str, ...] = ()) -> list[list[str]]:
    """Every command and sub-command of the command line, as the arguments that name it ([]: the program itself),
    read from its parser: a new command is tested without a list to update."""
    import argparse

    from tinydiffusion.cli import build_parser

    parser = parser or build_parser()
    found = [list(prefix)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += command_lines(sub, (*prefix, name))
    return found


def load_script(path: Path, name: str):
    """A script of the repository (not a package module, e.g. docs/make_reference.py) imported as a module."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
