"""The command line end to end on tiny generated IDX files."""

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image


@pytest.fixture(scope="module")
def trained_run(tiny_data_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    result = run_cli(["train", "--preset", "smoke", "--data-dir", tiny_data_dir, "--run-dir", run,
                      "--epochs", "1", "--batch-size", "32", "--seed", "3", "--no-progress"])
    assert result.returncode == 0, result.stderr
    assert "done: step 8" in result.stdout
    return run


@pytest.mark.parametrize("command", [[], ["train"], ["sample"], ["visualize"], ["visualize", "forward"],
                                     ["visualize", "reverse"], ["evaluate"], ["inpaint"], ["img2img"],
                                     ["interpolate"]])
def test_help(command):
    result = run_cli([*command, "--help"])
    assert result.returncode == 0 and "usage: tinydiffusion" in result.stdout


def test_sample_png_and_npz(trained_run, tmp_path):
    png, npz = tmp_path / "grid.png", tmp_path / "samples.npz"
    assert run_cli(["sample", "--checkpoint", trained_run, "--num", "6", "--steps", "4", "--out", png]).returncode == 0
    assert Image.open(png).size[0] > 28
    result = run_cli(["sample", "--checkpoint", trained_run, "--num", "5", "--sampler", "ddpm", "--steps", "10",
                      "--class", "sneaker", "--class", "0", "--out", npz])
    assert result.returncode == 0, result.stderr
    with np.load(npz) as f:
        assert f["arr_0"].shape == (5, 28, 28, 1) and f["arr_0"].dtype == np.uint8
        assert f["labels"].tolist() == [7, 0, 7, 0, 7]


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp-2m", "euler", "heun"])
def test_every_sampler_from_the_command_line(trained_run, tmp_path, sampler):
    out = tmp_path / "s.npz"
    result = run_cli(["sample", "--checkpoint", trained_run, "--num", "2", "--steps", "3", "--sampler", sampler,
                      "--seed", "1", "--out", out])
    assert result.returncode == 0, result.stderr
    first = np.load(out)["arr_0"]
    out.unlink()  # the second run must write its own file, or there is nothing to compare
    result = run_cli(["sample", "--checkpoint", trained_run, "--num", "2", "--steps", "3", "--sampler", sampler,
                      "--seed", "1", "--out", out])
    assert result.returncode == 0, result.stderr
    assert np.array_equal(first, np.load(out)["arr_0"])  # a seed gives the same images


def test_visualize(trained_run, tiny_data_dir, tmp_path):
    forward, reverse, gif = tmp_path / "f.png", tmp_path / "r.png", tmp_path / "r.gif"
    result = run_cli(["visualize", "forward", "--checkpoint", trained_run, "--data-dir", tiny_data_dir,
                      "--out", forward])
    assert result.returncode == 0, result.stderr
    result = run_cli(["visualize", "reverse", "--checkpoint", trained_run, "--num", "3", "--sampler", "ddim",
                      "--steps", "12", "--out", reverse, "--gif", gif])
    assert result.returncode == 0, result.stderr
    assert Image.open(forward).size[0] > Image.open(forward).size[1]  # a strip
    assert Image.open(gif).n_frames > 10


def test_resume_continues_from_the_command_line(trained_run, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(trained_run, run)
    result = run_cli(["train", "--resume", run, "--epochs", "2", "--no-progress"])
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stdout and "done: step 16" in result.stdout


def test_user_errors_are_one_sentence(tmp_path):
    result = run_cli(["sample", "--checkpoint", tmp_path / "missing", "--out", tmp_path / "x.png"])
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    result = run_cli(["train", "--preset", "nope"])
    assert result.returncode == 2 and "unknown preset" in result.stderr and "Traceback" not in result.stderr


def test_evaluate_a_run_and_a_samples_file(trained_run, tiny_data_dir, tmp_path):
    import json

    env = {"TINYDIFFUSION_CACHE": str(tmp_path / "cache")}
    scores = tmp_path / "scores.json"
    result = run_cli(["evaluate", trained_run, "--num", "24", "--steps", "2", "--data-dir", tiny_data_dir,
                      "--json", scores], env=env)
    assert result.returncode == 0, result.stderr
    assert "FD (fmnist-classifier features), N=24" in result.stdout
    figures = json.loads(scores.read_text())
    assert figures["num"] == 24 and figures["sampler"] == "dpmpp-2m"
    for key in ("fd", "fd_floor", "precision", "recall", "class_accuracy"):
        assert isinstance(figures[key], float)
    samples = tmp_path / "s.npz"
    made = run_cli(["sample", "--checkpoint", trained_run, "--num", "24", "--steps", "2", "--out", samples])
    assert made.returncode == 0, made.stderr
    result = run_cli(["evaluate", "--samples", samples, "--data-dir", tiny_data_dir, "--json", scores], env=env)
    assert result.returncode == 0, result.stderr
    # the same images scored from the file give the same FD as when sampled in the command
    assert json.loads(scores.read_text())["fd"] == pytest.approx(figures["fd"], rel=1e-6)
