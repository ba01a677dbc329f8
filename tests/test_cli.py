"""The command line end to end on tiny generated IDX files."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_env, command_lines, run_cli
from PIL import Image, ImageSequence

from tinydiffusion.samplers import SAMPLERS


@pytest.fixture(scope="module")
def cli_run(tiny_data_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    result = run_cli(["train", "--preset", "smoke", "--data-dir", tiny_data_dir, "--run-dir", run,
                      "--epochs", "1", "--batch-size", "32", "--seed", "3", "--no-progress"])
    assert result.returncode == 0, result.stderr
    assert "done: step 8" in result.stdout
    return run


@pytest.mark.parametrize("command", command_lines(), ids=lambda command: " ".join(command) or "tinydiffusion")
def test_help(command):
    result = run_cli([*command, "--help"])
    assert result.returncode == 0 and result.stdout.startswith("usage: ") and "tinydiffusion" in result.stdout


def test_sample_png_and_npz(cli_run, tmp_path):
    png, npz = tmp_path / "grid.png", tmp_path / "samples.npz"
    assert run_cli(["sample", "--checkpoint", cli_run, "--num", "6", "--steps", "4", "--out", png]).returncode == 0
    assert Image.open(png).size[0] > 28
    result = run_cli(["sample", "--checkpoint", cli_run, "--num", "5", "--sampler", "ddpm", "--steps", "10",
                      "--class", "sneaker", "--class", "0", "--out", npz])
    assert result.returncode == 0, result.stderr
    with np.load(npz) as f:
        assert f["arr_0"].shape == (5, 28, 28, 1) and f["arr_0"].dtype == np.uint8
        assert f["labels"].tolist() == [7, 0, 7, 0, 7]


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_every_sampler_from_the_command_line(cli_run, tmp_path, sampler):
    out = tmp_path / "s.npz"
    result = run_cli(["sample", "--checkpoint", cli_run, "--num", "2", "--steps", "3", "--sampler", sampler,
                      "--seed", "1", "--out", out])
    assert result.returncode == 0, result.stderr
    first = np.load(out)["arr_0"]
    out.unlink()  # the second run must write its own file, or there is nothing to compare
    result = run_cli(["sample", "--checkpoint", cli_run, "--num", "2", "--steps", "3", "--sampler", sampler,
                      "--seed", "1", "--out", out])
    assert result.returncode == 0, result.stderr
    assert np.array_equal(first, np.load(out)["arr_0"])  # a seed gives the same images


def test_visualize(cli_run, tiny_data_dir, tmp_path):
    forward, reverse, gif = tmp_path / "f.png", tmp_path / "r.png", tmp_path / "r.gif"
    result = run_cli(["visualize", "forward", "--checkpoint", cli_run, "--data-dir", tiny_data_dir,
                      "--out", forward])
    assert result.returncode == 0, result.stderr
    result = run_cli(["visualize", "reverse", "--checkpoint", cli_run, "--num", "3", "--sampler", "ddim",
                      "--steps", "12", "--out", reverse, "--gif", gif])
    assert result.returncode == 0, result.stderr
    assert Image.open(forward).size[0] > Image.open(forward).size[1]  # a strip
    # One 80-ms frame per step and the last held for 12 more; Pillow merges equal neighbours (an 8-step model's
    # samples may saturate early), adding their durations, so the time is counted, not the frames.
    assert sum(frame.info["duration"] for frame in ImageSequence.Iterator(Image.open(gif))) == (12 + 12) * 80


def test_resume_continues_from_the_command_line(cli_run, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(cli_run, run)
    result = run_cli(["train", "--resume", run, "--epochs", "2", "--no-progress"])
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stdout and "done: step 16" in result.stdout


def test_user_errors_are_one_sentence(tmp_path):
    result = run_cli(["sample", "--checkpoint", tmp_path / "missing", "--out", tmp_path / "x.png"])
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    result = run_cli(["train", "--preset", "nope"])
    assert result.returncode == 2 and "unknown preset" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow  # among the slowest (pyproject.toml: deselected by a plain `pytest`, run by CI)
def test_evaluate_a_run_and_a_samples_file(cli_run, tiny_data_dir, tmp_path):
    import json

    env = {"TINYDIFFUSION_CACHE": str(tmp_path / "cache")}
    scores = tmp_path / "scores.json"
    result = run_cli(["evaluate", cli_run, "--num", "24", "--steps", "2", "--data-dir", tiny_data_dir,
                      "--json", scores], env=env)
    assert result.returncode == 0, result.stderr
    assert "FD (fmnist-classifier features), N=24" in result.stdout
    figures = json.loads(scores.read_text())
    assert figures["num"] == 24 and figures["sampler"] == "dpmpp-2m"
    for key in ("fd", "fd_floor", "precision", "recall", "class_accuracy"):
        assert isinstance(figures[key], float)
    samples = tmp_path / "s.npz"
    made = run_cli(["sample", "--checkpoint", cli_run, "--num", "24", "--steps", "2", "--out", samples])
    assert made.returncode == 0, made.stderr
    result = run_cli(["evaluate", "--samples", samples, "--data-dir", tiny_data_dir, "--json", scores], env=env)
    assert result.returncode == 0, result.stderr
    # the same images scored from the file give the same FD as when sampled in the command
    assert json.loads(scores.read_text())["fd"] == pytest.approx(figures["fd"], rel=1e-6)


def test_resuming_a_finished_run_says_it_is_complete(cli_run, tmp_path):
    import shutil

    from conftest import files_of

    run = tmp_path / "copy"
    shutil.copytree(cli_run, run)
    before = files_of(run)
    result = run_cli(["train", "--resume", run, "--no-progress"])
    assert result.returncode == 0, result.stderr
    assert "is already complete: its checkpoint is at step 8 of 8" in result.stdout and "nan" not in result.stdout
    assert result.stdout.count("\n") == 1 and files_of(run) == before  # one sentence; nothing trained or written


def every_parser():
    from tinydiffusion.cli import build_parser

    pending = [build_parser()]
    while pending:
        parser = pending.pop()
        yield parser
        for action in parser._actions:
            if action.choices and isinstance(action.choices, dict):
                pending.extend(action.choices.values())


def test_one_placeholder_per_kind_of_value_in_every_command():
    shown = {}
    for parser in every_parser():
        for action in parser._actions:
            if action.option_strings and action.nargs != 0:
                text = parser._get_formatter()._format_args(action, action.dest.upper())
                assert not re.search(r"[A-Z]\.[A-Z]", text), f"{parser.prog} {action.option_strings[0]} shows {text}"
                shown.setdefault(action.option_strings[0], set()).add(text)
    assert shown["--data"] == {"SOURCE"} and shown["--data-dir"] == {"DIR"}
    assert shown["--data.download"] == {"BOOL"}


def test_distill_steps_are_the_students_and_said_in_the_users_terms(capsys):
    from conftest import cli

    from tinydiffusion.cli import build_parser

    assert getattr(build_parser().parse_args(["distill", "--student-steps", "2"]), "distill.steps") == 2
    for steps in ("3", "5", "8"):
        code, _, err = cli(capsys, "distill", "--steps", steps)
        assert code == 2 and "choose from 1, 2, 4" in err and "teacher_steps" not in err, err
    help_text = " ".join(build_parser()._subparsers._group_actions[0].choices["distill"].format_help().split())
    assert "the student's own sampling steps, 1, 2 or 4" in help_text  # whose steps they are
    assert "not a sampler's steps, as sample --steps" in help_text


def test_sample_counts_in_the_singular(cli_run, tmp_path):
    result = run_cli(["sample", "--checkpoint", cli_run, "--num", "1", "--steps", "2", "--out",
                      tmp_path / "one.png"])
    assert result.returncode == 0, result.stderr
    assert f"wrote 1 image to {tmp_path / 'one.png'}" in result.stdout


def test_the_bundled_classifier_is_not_a_model(capsys, tmp_path):
    from conftest import cli

    from tinydiffusion.evaluation import BUNDLED_CLASSIFIER

    for command in (["distill", "--teacher", BUNDLED_CLASSIFIER, "--run-dir", tmp_path / "s"],
                    ["sample", "--checkpoint", BUNDLED_CLASSIFIER, "--out", tmp_path / "x.png"]):
        code, _, err = cli(capsys, *command)
        assert code == 2 and "is a feature classifier" in err and "not a diffusion model" in err, err
        assert "unknown field" not in err and err.count("\n") == 1
    assert not (tmp_path / "s").exists()


def test_sample_needs_none_of_the_extras(tmp_path):
    """`tinydiffusion sample` imports only the base dependencies: none of the optional extras (the README's first
    install has none)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11
    extras = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    names = {re.split(r"[<>=\[ ]", req)[0].replace("-", "_").lower() for reqs in extras.values() for req in reqs}
    names |= {"torch_fidelity", "gradio_client"}  # imported under other names than their distributions'
    modules = tmp_path / "modules.txt"
    program = ("import runpy, sys\n"
               "try:\n"
               "    sys.argv[0] = 'tinydiffusion'; runpy.run_module('tinydiffusion', run_name='__main__')\n"
               "finally:\n"
               f"    open({str(modules)!r}, 'w').write('\\n'.join(sys.modules))\n")
    out = tmp_path / "s.png"
    done = subprocess.run([sys.executable, "-c", program, "sample", "--num", "2", "--steps", "2", "--out", str(out)],
                          env=cli_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and out.is_file(), done.stderr
    imported = {name.split(".")[0] for name in modules.read_text().split()}
    assert not imported & names, sorted(imported & names)
