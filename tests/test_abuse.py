"""Abuse: every value an option or a file can give is checked before any work, and nothing silent comes out.

Each class of failure is a table of cases asserting the exact sentence (or the exact outcome): non-finite and
out-of-range options, hostile config.json files, non-finite weights, non-finite samples, sizes beyond memory,
outputs checked before the work, multi-batch figures, Ctrl-C during start-up, and help that lists everything.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, assert_error, cli, cli_env, default_sigint, load_script, run_cli
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import load_file, save_file
from test_hostile import checkpoint_dir

from tinydiffusion import pipeline
from tinydiffusion.cli import build_parser
from tinydiffusion.config import RunConfig, config_fields
from tinydiffusion.errors import UserError
from tinydiffusion.nets.memory import activation_bytes
from tinydiffusion.pipeline import generate, load_model

# --- options: non-finite, out of range, or naming what does not exist -------------------------

SAMPLE_OPTIONS = {  # arguments -> the exact sentence
    "guidance-inf": (["--guidance", "inf"], "argument --guidance: inf must be a finite number between 0 and 100 "
                     "(see 'tinydiffusion sample --help')."),
    "guidance-nan": (["--guidance", "nan"], "argument --guidance: nan must be a finite number between 0 and 100 "
                     "(see 'tinydiffusion sample --help')."),
    "guidance-huge": (["--guidance", "1e9"], "argument --guidance: 1e9 must be a finite number between 0 and 100 "
                      "(see 'tinydiffusion sample --help')."),
    "eta-inf": (["--sampler", "ddim", "--eta", "inf"], "argument --eta: inf must be a finite number between 0 and 1 "
                "(see 'tinydiffusion sample --help')."),
    "eta-above-1": (["--sampler", "ddim", "--eta", "1.5"], "argument --eta: 1.5 must be a finite number between 0 "
                    "and 1 (see 'tinydiffusion sample --help')."),
    "num-huge": (["--num", "1000000000000"], "argument --num: 1000000000000 must be between 1 and 10,000,000 "
                 "(see 'tinydiffusion sample --help')."),
    "seed-negative": (["--seed", "-1"], "argument --seed: -1 must be between 0 and 9,223,372,036,854,775,807 "
                      "(see 'tinydiffusion sample --help')."),
    "seed-too-big": (["--seed", str(2**63)], f"argument --seed: {2**63} must be between 0 and "
                     "9,223,372,036,854,775,807 (see 'tinydiffusion sample --help')."),
    "steps-huge": (["--steps", "10000000000"], "argument --steps: 10000000000 must be between 1 and 100,000 "
                   "(see 'tinydiffusion sample --help')."),
    "batch-huge": (["--batch-size", "1000000000"], "argument --batch-size: 1000000000 must be between 1 and "
                   "100,000 (see 'tinydiffusion sample --help')."),
    "nrow-beyond-num": (["--nrow", "1000000"], "--nrow 1000000 is more than the 2 images asked for (--num)."),
    "device-mps": (["--device", "mps"], "unknown device 'mps'; use auto, cpu, cuda or cuda:N."),
    "device-cuda-99": (["--device", "cuda:99"], None),  # no GPU here: the sentence depends on the machine
    "out-is-a-folder": (["--out", "{tmp}/folder.png"], "--out {tmp}/folder.png is a folder; give a file name "
                        "ending in .png or .npz."),
    "out-under-a-file": (["--out", "{tmp}/file.png/x.png"], "the folder {tmp}/file.png for --out is not a folder."),
    "out-wrong-format": (["--out", "{tmp}/x.gif"], "--out must end in .png or .npz, not 'x.gif'."),
}


@pytest.mark.parametrize("kind", list(SAMPLE_OPTIONS))
def test_bad_sample_options_are_one_sentence_before_any_work(trained_run, tmp_path, capsys, monkeypatch, kind):
    monkeypatch.setattr(pipeline, "generate", _must_not_sample)
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "file.png").write_bytes(b"not a folder")
    before = sorted(tmp_path.rglob("*"))
    args, sentence = SAMPLE_OPTIONS[kind]
    args = [a.format(tmp=tmp_path) for a in args]
    if "--out" not in args:
        args += ["--out", tmp_path / "f.png"]
    code, _, err = cli(capsys, "sample", "--checkpoint", trained_run, "--num", 2, "--steps", 2, *args)
    if sentence is None:
        assert code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1 and "cuda" in err.lower(), err
    else:
        assert_error(code, err, exact=sentence.format(tmp=tmp_path))
    assert sorted(tmp_path.rglob("*")) == before


def _must_not_sample(*args, **kwargs):
    raise AssertionError("sampling started before the arguments were checked")


VISUALIZE_OPTIONS = {
    "gif-under-txt-name": (["reverse", "--gif", "{tmp}/x.txt"], "--gif must end in .gif, not 'x.txt'."),
    "png-under-gif-name": (["reverse", "--out", "{tmp}/x.gif"], "--out must end in .png, not 'x.gif'."),
    "columns-huge": (["reverse", "--columns", str(10**18)], f"argument --columns: {10**18} must be between 2 and "
                     "1,000 (see 'tinydiffusion visualize reverse --help')."),
    "forward-columns-huge": (["forward", "--columns", "5000"], "argument --columns: 5000 must be between 2 and 100 "
                             "(see 'tinydiffusion visualize forward --help')."),
    "forward-num-images-huge": (["forward", "--num-images", "5000"], "argument --num-images: 5000 must be between "
                                "1 and 100 (see 'tinydiffusion visualize forward --help')."),
    "forward-data-missing": (["forward", "--data-dir", "{tmp}/nowhere"], "Fashion-MNIST is not in {tmp}/nowhere "
                             "(missing train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz); point --data-dir at "
                             "the folder holding its files, or allow downloading (--data.download true)."),
}


@pytest.mark.parametrize("kind", list(VISUALIZE_OPTIONS))
def test_bad_visualize_options(trained_run, tmp_path_factory, capsys, kind):
    run = tmp_path_factory.mktemp("visualize") / "run"  # a copy that does not download its data
    shutil.copytree(trained_run, run)
    _edit_config(run, lambda d: d["data"].update(download=False))
    tmp_path = tmp_path_factory.mktemp("out")
    args, sentence = VISUALIZE_OPTIONS[kind]
    args = [a.format(tmp=tmp_path) for a in args]
    if "--out" not in args:
        args += ["--out", tmp_path / "f.png"]
    code, _, err = cli(capsys, "visualize", *args, "--checkpoint", run)
    assert_error(code, err, exact=sentence.format(tmp=tmp_path))
    assert list(tmp_path.iterdir()) == []


TRAIN_OPTIONS = {  # config fields from the command line; a config.json is checked by the same code
    "log-every-0": (["--train.log_every", "0"], "train.log_every must be at least 1."),
    "dit-patch-0": (["--net", "dit", "--net.patch_size", "0"], "net.patch_size must be at least 1."),
    "seed-out-of-range": (["--seed", str(2**40)], "train.seed must be between 0 and 4294967295."),
    "seed-negative": (["--seed", "-5"], "train.seed must be between 0 and 4294967295."),
    "device-mps": (["--device", "mps"], "train.device must be auto, cpu, cuda or cuda:N, not 'mps'."),
    "negative-min-lr-ratio": (["--train.min_lr_ratio", "-1"],
                              "train.min_lr_ratio must be between 0 and 1 (a fraction of train.lr)."),
    "attention-level-outside": (["--net.attention_levels", "7"], "net.attention_levels must name levels of the "
                                "UNet, 0 to 1 (net.channel_mults has 2)."),
    "lr-inf": (["--lr", "inf"], "train.lr must be a finite number, not inf."),
    "lr-nan": (["--lr", "nan"], "train.lr must be a finite number, not nan."),
    "grad-clip-inf": (["--train.grad_clip", "inf"], "train.grad_clip must be a finite number, not inf."),
    "max-seconds-inf": (["--train.max_seconds", "inf"], "train.max_seconds must be a finite number, not inf."),
    "cosine-s-negative": (["--diffusion.cosine_s", "-0.5"], "diffusion.cosine_s must be between 0 and 1."),
    "beta-end-nan": (["--diffusion.beta_end", "nan"], "diffusion.beta_end must be a finite number, not nan."),
    "min-snr-gamma-0": (["--diffusion.min_snr_gamma", "0"], "diffusion.min_snr_gamma must be positive."),
    "timesteps-huge": (["--diffusion.timesteps", "1000000000"], "diffusion.timesteps must be between 2 and 100,000."),
    "image-size-huge": (["--net.image_size", "100000"], "net.image_size must be between 4 and 1024."),
    "channels-2": (["--net.in_channels", "2"], "net.in_channels must be 1 (grey) or 3 (colour)."),
    "max-steps-huge": (["--max-steps", str(10**30)], "train.max_steps must be 0 (no limit) or up to 1e+12."),
    "mlp-ratio-0": (["--net", "dit", "--net.mlp_ratio", "0"], "net.mlp_ratio must be above 0 and at most 16."),
    "threads-negative": (["--train.threads", "-1"], "train.threads must be between 0 (torch's default) and 1024."),
    "lognormal-std-0": (["--diffusion.lognormal_std", "0"],
                        "diffusion.logit_std and diffusion.lognormal_std must be positive."),
    "unknown-timestep-sampling": (["--diffusion.timestep_sampling", "beta"],
                                  "diffusion.timestep_sampling must be one of uniform, logit-normal, log-normal."),
    "edm-at-zero-snr": (["--diffusion.objective", "edm", "--diffusion.zero_terminal_snr", "true"],
                        "diffusion.zero_terminal_snr and the rectified-flow schedule reach SNR 0, where objective "
                        "edm is undefined; use v, x0 or flow."),
    "other-network-field": (["--net.hidden_size", "64"], "--net.hidden_size is a setting of the dit network, and "
                            "this run's network is unet (choose one with --net)."),
    "recorded-field": (["--data.num_images", "5"], None),  # not a setting: argparse refuses the flag
}


@pytest.mark.parametrize("kind", list(TRAIN_OPTIONS))
def test_bad_train_options_are_one_sentence_before_any_work(tiny_data_dir, tmp_path, capsys, kind):
    args, sentence = TRAIN_OPTIONS[kind]
    run = tmp_path / "run"
    code, _, err = cli(capsys, "train", "--preset", "smoke", "--data-dir", tiny_data_dir, "--run-dir", run,
                       "--no-progress", *args)
    if sentence is None:
        assert code == 2 and err.startswith("error: unrecognized arguments: --data.num_images"), err
    else:
        assert_error(code, err, exact=sentence)
    assert not run.exists()


def test_the_classifier_tools_epochs_0_and_its_output_never_the_package(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # help on one line per option
    tool = load_script(REPO / "tools" / "train_classifier.py", "train_classifier_tool")
    with pytest.raises(SystemExit) as exit_:
        tool.main(["train-classifier", "--epochs", "0"])
    assert_error(exit_.value.code, capsys.readouterr().err, exact="argument --epochs: '0' is not a whole number of "
                 "at least 1 (see 'python tools/train_classifier.py train-classifier --help').")
    for command in ("train-classifier", "ship-statistics"):
        with pytest.raises(SystemExit):
            tool.main([command, "--help"])
        help_text = " ".join(capsys.readouterr().out.split())
        default_out = re.search(r"--out OUT [^-]*\(default: ([^)]+)\)", help_text).group(1)
        assert default_out in ("fmnist-classifier.safetensors", "fmnist-reference.npz"), help_text


@given(st.sampled_from([dotted for dotted, _ in config_fields()]),
       st.one_of(st.integers(-10**30, 10**30), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                 st.lists(st.integers(-10**6, 10**6), max_size=12), st.booleans()))
@settings(max_examples=300, deadline=None)
def test_any_config_value_is_accepted_or_one_sentence(dotted, value):
    """Whatever a config.json holds in any field: a UserError or a config whose numbers are all finite and
    whose network can be built (shapes only)."""
    section, name = dotted.split(".")
    data = RunConfig().to_dict()
    data[section][name] = value
    try:
        config = RunConfig.from_dict(data)
        config.validate()
    except UserError as err:
        assert str(err).endswith(".")
        return
    from tinydiffusion.nets import build_network

    with torch.device("meta"):
        build_network(config.net)


# --- config.json and weights from disk are untrusted ------------------------------------------

def _edit_config(run: Path, edit) -> None:
    for path in [run / "config.json", checkpoint_dir(run) / "config.json"]:
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))


CONFIG_EDITS = {  # edit -> the exact sentence `sample` must give
    "beta-end-nan": (lambda d: d["diffusion"].update(schedule="linear", beta_end=float("nan")),
                     "diffusion.beta_end must be a finite number, not nan."),
    "cosine-s-inf": (lambda d: d["diffusion"].update(cosine_s=float("inf")),
                     "diffusion.cosine_s must be a finite number, not inf."),
    "cosine-s-out-of-range": (lambda d: d["diffusion"].update(cosine_s=-0.9),
                              "diffusion.cosine_s must be between 0 and 1."),
    "timesteps-huge": (lambda d: d["diffusion"].update(timesteps=10**12),
                       "diffusion.timesteps must be between 2 and 100,000."),
    "image-size-huge": (lambda d: d["net"].update(image_size=10**6), "net.image_size must be between 4 and 1024."),
    "channels-huge": (lambda d: d["net"].update(in_channels=10**6), "net.in_channels must be 1 (grey) or 3 (colour)."),
    "attention-outside": (lambda d: d["net"].update(attention_levels=[5]),
                          "net.attention_levels must name levels of the UNet, 0 to 1 (net.channel_mults has 2)."),
    "string-for-number": (lambda d: d["net"].update(base_channels="eight"),
                          "config.net.base_channels must be of type int, not 'eight'."),
}


@pytest.mark.parametrize("kind", list(CONFIG_EDITS))
def test_hostile_config_json_is_one_sentence(run_copy, tmp_path, capsys, kind):
    edit, sentence = CONFIG_EDITS[kind]
    _edit_config(run_copy, edit)
    code, _, err = cli(capsys, "sample", "--checkpoint", run_copy, "--num", 2, "--out", tmp_path / "f.png")
    assert_error(code, err, exact=sentence)
    assert not (tmp_path / "f.png").exists()


@pytest.mark.parametrize("kind", ["nested", "huge", "folder", "long-integer"])
def test_config_json_that_is_no_config(run_copy, tmp_path, capsys, kind):
    path = checkpoint_dir(run_copy) / "config.json"
    if kind == "nested":
        path.write_text("[" * 100_000 + "]" * 100_000)
        sentence = f"{path} is nested too deeply to be a config.json."
    elif kind == "huge":
        path.write_text(" " * (2 << 20) + "{}")
        sentence = f"{path} is {(2 << 20) + 2:,} bytes, too large to be a config.json."
    elif kind == "long-integer":  # more digits than Python converts to an int
        path.write_text('{"net": {"image_size": ' + "9" * 5000 + "}}")
        sentence = f"{path} holds a number of thousands of digits, which no config field takes."
    else:
        path.unlink()
        path.mkdir()
        sentence = f"{checkpoint_dir(run_copy)} is not a checkpoint (no ema.safetensors/model.safetensors with " \
                   "config.json)."
    code, _, err = cli(capsys, "sample", "--checkpoint", run_copy, "--num", 2, "--out", tmp_path / "f.png")
    assert_error(code, err, exact=sentence)


def test_image_size_beyond_memory_is_refused_before_allocation(run_copy, tmp_path, capsys):
    """The UNet's weights do not depend on the image size, so only a memory estimate can catch this."""
    _edit_config(run_copy, lambda d: d["net"].update(image_size=1024))
    code, _, err = cli(capsys, "sample", "--checkpoint", run_copy, "--num", 500, "--out", tmp_path / "f.png")
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("error: 500 images of 1x1024x1024 in batches of 500 need about ") and \
        "of memory on cpu; lower --batch-size (about " in err and err.endswith(" fit).\n"), err
    fits = int(err.split("(about ")[1].split(" fit")[0].replace(",", ""))
    assert 1 <= fits < 500


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_weights_are_refused(run_copy, tmp_path, capsys, value):
    weights = checkpoint_dir(run_copy) / "ema.safetensors"
    tensors = load_file(str(weights))
    name = sorted(tensors)[3]
    tensors[name].view(-1)[0] = value
    save_file(tensors, str(weights))
    code, _, err = cli(capsys, "sample", "--checkpoint", run_copy, "--num", 2, "--out", tmp_path / "f.png")
    first_bad = sorted(k for k, t in tensors.items() if not torch.isfinite(t).all())[0]
    assert_error(code, err, exact=f"{weights} holds weights that are not finite (NaN or infinity, e.g. "
                 f"{first_bad}); the training that wrote them diverged, so use an earlier checkpoint.")
    assert not (tmp_path / "f.png").exists()


def test_non_finite_samples_are_an_error_not_a_black_image(trained_run, tmp_path, capsys, monkeypatch):
    """Whatever produced them (here a network that returns NaN at one step), NaNs never become an image."""
    real_load = load_model

    def load_broken(*args, **kwargs):
        model = real_load(*args, **kwargs)
        forward = model.net.forward
        model.net.forward = lambda x, t, y=None: forward(x, t, y) * float("nan")
        return model

    monkeypatch.setattr(pipeline, "load_model", load_broken)
    code, _, err = cli(capsys, "sample", "--checkpoint", trained_run, "--num", 2, "--steps", 3, "--guidance", "2",
                       "--out", tmp_path / "f.png")
    err = err.splitlines()[-1] + "\n"  # after the progress bar's lines
    assert_error(code, err, exact="sampling gave values that are not finite (NaN or infinity) with dpmpp-2m, 3 steps, "
                 "guidance 2.0; these settings or the model's weights are broken, so no image was written.")
    assert not (tmp_path / "f.png").exists()


def test_generate_refuses_sizes_beyond_memory_before_allocating(trained_run):
    model = load_model(trained_run, "cpu")
    with pytest.raises(UserError, match=r"^10,000,000,000 images of 1x28x28 in batches of 500 need about "):
        generate(model, 10**10, steps=2)


@pytest.mark.slow  # among the slowest (pyproject.toml: deselected by a plain `pytest`, run by CI)
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc to measure peak memory")
def test_memory_estimate_is_within_a_factor_of_two_of_a_measured_pass(tmp_path):
    """The estimate that refuses a config must be near the truth: measured as the peak resident memory
    of a real forward (and forward + backward) pass in a fresh process."""
    script = tmp_path / "measure.py"
    script.write_text(MEASURE)
    for net, batch in [({"image_size": 28, "num_classes": 10}, 64),
                       ({"image_size": 32, "in_channels": 3, "base_channels": 64, "num_res_blocks": 2}, 32),
                       ({"kind": "dit", "image_size": 28, "patch_size": 2}, 32)]:
        for training in (False, True):
            result = subprocess.run([sys.executable, script, json.dumps(net), str(batch), str(int(training))],
                                    env=cli_env(), capture_output=True, text=True, timeout=120)
            assert result.returncode == 0, result.stderr
            measured = int(result.stdout)
            from tinydiffusion.config import RunConfig

            config = RunConfig.from_dict({"net": net}).net
            estimate = activation_bytes(config, batch, training)
            assert measured / 2 <= estimate <= measured * 2, (net, training, estimate, measured)


MEASURE = """
import json, sys, torch
from tinydiffusion.config import RunConfig
from tinydiffusion.nets import build_network
net_config = RunConfig.from_dict({"net": json.loads(sys.argv[1])}).net
batch, training = int(sys.argv[2]), sys.argv[3] == "1"
net = build_network(net_config)
x = torch.randn(batch, net_config.in_channels, net_config.image_size, net_config.image_size)
t, y = torch.rand(batch) * 999, torch.zeros(batch, dtype=torch.long) if net_config.num_classes else None
with torch.no_grad():
    net(x[:1], t[:1], None if y is None else y[:1])  # kernels and allocator warmed up before the baseline
def status(field):  # kB; /proc, since ru_maxrss keeps the pytest parent's peak across exec
    return int(next(line for line in open("/proc/self/status") if line.startswith(field)).split()[1])
open("/proc/self/clear_refs", "w").write("5")  # resets the peak (VmHWM) to the present RSS
before = status("VmRSS:")
if training:
    net(x, t, y).square().mean().backward()
else:
    with torch.no_grad():
        net(x, t, y)
print((status("VmHWM:") - before) * 1024)
"""


# --- the same images and figures at any batch size --------------------------------------------

@pytest.mark.parametrize("sampler", ["dpmpp-2m", "ddpm"])
def test_a_seed_gives_the_same_images_at_any_batch_size(trained_run, sampler):
    model = load_model(trained_run, "cpu")
    whole, labels = generate(model, 5, sampler=sampler, steps=4, seed=7, batch_size=5)
    split, split_labels = generate(model, 5, sampler=sampler, steps=4, seed=7, batch_size=2)
    assert torch.equal(labels, split_labels)
    assert (whole.int() - split.int()).abs().max() <= 1  # convolutions may round differently per batch size


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        frames = []
        for index in range(getattr(image, "n_frames", 1)):
            image.seek(index)
            frames.append(np.asarray(image.convert("L"), dtype=np.int16))
    return np.stack(frames)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_multi_batch_reverse_figure_and_gif_match_a_single_batch(trained_run, tmp_path, capsys, sampler):
    """visualize reverse with --num above --batch-size: as many rows as images, columns in step order, the
    same content as one batch gives, in the figure and in the GIF."""
    outputs = {}
    for batch in (5, 2):
        out, gif = tmp_path / f"b{batch}.png", tmp_path / f"b{batch}.gif"
        code, _, err = cli(capsys, "visualize", "reverse", "--checkpoint", trained_run, "--num", 5, "--steps", 6,
                           "--sampler", sampler, "--batch-size", batch, "--columns", 4, "--out", out, "--gif", gif)
        assert code == 0, err
        outputs[batch] = (_pixels(out), _pixels(gif))
    (figure, frames), (split_figure, split_frames) = outputs[5], outputs[2]
    assert figure.shape == split_figure.shape and frames.shape == split_frames.shape
    assert np.abs(figure - split_figure).max() <= 2 and np.abs(frames - split_frames).max() <= 2
    # five rows of 28 * 2 pixels (scale 2) plus padding, under a 14-pixel header
    assert figure.shape[1] == 14 + 5 * (28 + 2) * 2 + 2 * 2


# --- outputs and optional dependencies are checked before the work ---------------------------

EVALUATE_CASES = {
    "json-wrong-name": (["--json", "{tmp}/scores.txt"], "--json must end in .json, not 'scores.txt'."),
    "json-is-a-folder": (["--json", "{tmp}/folder.json"], "--json {tmp}/folder.json is a folder; give a file name "
                         "ending in .json."),
    "json-folder-missing": (["--json", "{tmp}/no/such.json"], "the folder {tmp}/no for --json does not exist."),
    "data-missing": (["--data", "{tmp}/nowhere"], "{tmp}/nowhere does not exist; --data takes a folder of images, a "
                     ".zip, an .npz/.npy file, or a named dataset (fashion-mnist, mnist, cifar10)."),
}


@pytest.mark.parametrize("kind", list(EVALUATE_CASES))
def test_evaluate_checks_everything_before_sampling(trained_run, tmp_path, capsys, monkeypatch, kind):
    from tinydiffusion.cli import evaluate as evaluate_command

    monkeypatch.setattr(evaluate_command, "run_sampling", _must_not_sample)
    (tmp_path / "folder.json").mkdir()
    args, sentence = EVALUATE_CASES[kind]
    code, _, err = cli(capsys, "evaluate", trained_run, "--num", 20, *[a.format(tmp=tmp_path) for a in args])
    assert_error(code, err, exact=sentence.format(tmp=tmp_path))


def test_evaluate_inception_without_torch_fidelity_fails_before_sampling(trained_run, tiny_data_dir, capsys,
                                                                         monkeypatch):
    from tinydiffusion.cli import evaluate as evaluate_command
    from tinydiffusion.evaluation import inception_unavailable

    if inception_unavailable() is None:
        pytest.skip("torch-fidelity and its weights are installed here")
    monkeypatch.setattr(evaluate_command, "run_sampling", _must_not_sample)
    code, _, err = cli(capsys, "evaluate", trained_run, "--num", 20, "--inception", "--data-dir", tiny_data_dir)
    last = err.splitlines()[-1]  # after the progress of preparing the reference data
    assert code == 2 and last.startswith("error: Inception FID cannot be computed here") and "Traceback" not in err


# --- Ctrl-C during start-up, and help --------------------------------------------------------

@pytest.mark.parametrize("delay", [0.3, 1.0, 1.8, 2.5])  # importing, loading the model, sampling
def test_ctrl_c_during_start_up_is_one_line(trained_run, tmp_path, delay):
    proc = subprocess.Popen([sys.executable, "-m", "tinydiffusion", "sample", "--checkpoint", str(trained_run),
                             "--num", "2000", "--out", str(tmp_path / "f.png")], env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    # the progress bar, and what its carriage returns leave of it when it is cleared
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("sampling")]
    assert proc.returncode == 130 and lines == ["interrupted."], (proc.returncode, err)
    assert not (tmp_path / "f.png").exists()


def loaded(pid: int, library: str) -> bool:
    """Whether the process has mapped a shared object whose path holds `library` (numpy, torch): how far its
    start-up has come."""
    try:
        return library in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


# seconds, or the moment a library is mapped: numpy during the command line's imports, torch during the command's.
# Not the first ~40 ms: the interpreter's start and the script's own `import re` come before any code of the package.
@pytest.mark.parametrize("moment", [0.15, 0.3, 0.6, 1.0, "numpy", "torch"])
def test_ctrl_c_during_the_console_script_s_start_up_is_one_line(tmp_path, moment):
    """The installed `tinydiffusion` script (pyproject's entry point, not `python -m`), interrupted while it is
    still importing, ends as it does later: status 130 and one line; or, before Python itself handles SIGINT,
    by SIGINT with no line."""
    script = Path(sys.executable).with_name("tinydiffusion")
    script = str(script) if script.is_file() else shutil.which("tinydiffusion")
    if script is None:
        pytest.skip("the tinydiffusion console script is not installed (pip install -e .)")
    if isinstance(moment, str) and not Path("/proc/self/maps").is_file():
        pytest.skip("no /proc here to see what the process has loaded")
    proc = subprocess.Popen([script, "sample", "--num", "2000", "--out", str(tmp_path / "f.png")], env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    if isinstance(moment, str):
        deadline = time.monotonic() + 60
        while not loaded(proc.pid, moment) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
    else:
        time.sleep(moment)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("sampling")]
    assert (proc.returncode, lines) in ((130, ["interrupted."]), (-signal.SIGINT, [])), (proc.returncode, err)
    assert not (tmp_path / "f.png").exists()


def _all_parsers(parser):
    yield parser
    for action in parser._actions:
        if hasattr(action, "choices") and isinstance(action.choices, dict):
            for sub in action.choices.values():
                yield from _all_parsers(sub)


def test_every_option_has_help_and_shows_its_default():
    for parser in _all_parsers(build_parser()):
        formatter = parser._get_formatter()
        for action in parser._actions:
            if action.help == "==SUPPRESS==" or not action.option_strings or action.dest == "help":
                continue
            assert action.help, f"{parser.prog} {action.option_strings} has no help"
            text = formatter._get_help_string(action)
            if not (action.default is None or action.default is False):
                assert "default" in text, f"{parser.prog} {action.option_strings}: {text}"


def test_train_help_lists_every_config_field_with_its_description_and_default():
    result = run_cli(["train", "--help"], env={"COLUMNS": "1000"})
    assert result.returncode == 0, result.stderr
    from tinydiffusion.presets import get_preset

    preset = get_preset("fashion-mnist")
    text = " ".join(result.stdout.split())  # COLUMNS=1000: no help text is wrapped, only moved to its own line
    for dotted, field in config_fields():
        section, name = dotted.split(".")
        value = getattr(getattr(preset, section), name, field.default)  # another network's field: its own default
        shown = {True: "true", False: "false", "": "empty", (): "none"}.get(value, value) \
            if not isinstance(value, (int, float)) or isinstance(value, bool) else value
        shown = ",".join(map(str, shown)) if isinstance(shown, tuple) else shown
        entry = f"--{dotted} {{}} {field.metadata['help']} (default: {shown})"
        assert re.search(re.escape(entry).replace(re.escape("{}"), r"\S+"), text), entry


def test_help_does_not_import_torch():
    """`--help` answers without torch, which takes seconds to import."""
    code = "import sys, io, contextlib\nfrom tinydiffusion.cli import main\n" \
           "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n" \
           "    main(['train', '--help'])\nprint('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr


def test_readme_says_which_outputs_are_replaced():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "Which files are replaced" in readme



@pytest.mark.parametrize("args,words", [
    (["--net.base_channels", "4096", "--net.channel_mults", "64,64"], "training this network (14,006,258.09M "
     "parameters) on batches of 16 needs about "),
    (["--batch-size", "100000"], "training this network (0.05M parameters) on batches of 100000 needs about "),
])
def test_training_beyond_memory_is_refused_before_allocation(tiny_data_dir, tmp_path, capsys, args, words):
    run = tmp_path / "run"
    code, _, err = cli(capsys, "train", "--preset", "smoke", "--data-dir", tiny_data_dir, "--run-dir", run,
                       "--no-progress", *args)
    assert code == 2 and err.startswith(f"error: {words}") and len(err.splitlines()) == 1, err
    assert err.endswith(" of memory on cpu; make the network or --batch-size smaller.\n"), err
    assert not run.exists()


@pytest.mark.parametrize("args,what,advice", [
    (["reverse", "--num", "10000000", "--sampler", "ddpm"], "recording 100 steps of 10,000,000 images needs about "
     "2.9 TiB", "lower --num or --steps"),
])
def test_figures_beyond_memory_are_refused_before_sampling(trained_run, tmp_path, capsys, monkeypatch, args, what,
                                                           advice):
    monkeypatch.setattr(pipeline, "generate", _must_not_sample)
    code, _, err = cli(capsys, "visualize", *args, "--checkpoint", trained_run, "--out", tmp_path / "f.png")
    assert code == 2 and err.startswith(f"error: {what}, more than the ") and len(err.splitlines()) == 1, err
    assert err.endswith(f" of memory here; {advice}.\n"), err
    assert list(tmp_path.iterdir()) == []


def test_forward_figure_beyond_memory_is_refused(run_copy, tmp_path, capsys):
    _edit_config(run_copy, lambda d: d["net"].update(image_size=1024, in_channels=3))
    code, _, err = cli(capsys, "visualize", "forward", "--checkpoint", run_copy, "--num-images", 100, "--columns",
                       100, "--out", tmp_path / "f.png")
    assert code == 2 and err.startswith("error: a figure of 100 x 100 images needs about 90.2 GiB, more than the "), err
    assert err.endswith(" of memory here; lower --num-images or --columns.\n") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "f.png").exists()
