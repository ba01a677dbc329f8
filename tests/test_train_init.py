"""--train.init: a new run's network starting from another run's EMA weights (fine-tuning, or a UNet trained at
one image size continued at another)."""

import json
import shutil

import pytest
import torch
from conftest import assert_error, cli, final_weights, run_cli, smoke_config, train_args
from safetensors.torch import load_file, save_file

from tinydiffusion.checkpoint import EMA_FILE, MODEL_FILE, latest_checkpoint, load_config
from tinydiffusion.data import ImageDataset
from tinydiffusion.errors import UserError
from tinydiffusion.training import Trainer, train


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_starts_from_the_other_run_s_ema_weights(trained_run, tiny_data_dir, tmp_path):
    ema = final_weights(trained_run)[EMA_FILE]
    started = Trainer(smoke_config(tiny_data_dir, **{"train.init": str(trained_run)}), tmp_path / "run",
                      progress=False)
    assert same_weights(started.state.net.state_dict(), ema)
    assert same_weights(started.state.ema.net.state_dict(), ema)
    fresh = Trainer(smoke_config(tiny_data_dir), tmp_path / "fresh", progress=False)
    assert not same_weights(fresh.state.net.state_dict(), ema)  # the seed's weights are others


def test_a_unet_trained_at_28_pixels_continues_at_32(trained_run, tmp_path):
    """The UNet's weights do not depend on the image size: a 28-px run starts a 32-px one, which trains."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (32, 1, 32, 32), dtype=torch.uint8, generator=generator)
    names = load_config(trained_run / "config.json").data.class_names  # the same classes: the whole network kept
    dataset = ImageDataset(images, torch.arange(32) % 10, names)
    config = smoke_config(tmp_path, **{"train.init": str(trained_run), "net.image_size": 32,
                                       "data.image_size": 32, "train.max_steps": 3})
    start = final_weights(trained_run)[EMA_FILE]
    trainer = Trainer(config, tmp_path / "run", dataset=dataset, progress=False)
    assert same_weights(trainer.state.net.state_dict(), start)  # started from the 28-px run, not from the seed
    result = trainer.run()
    assert result.step == 3 and torch.isfinite(torch.tensor(result.final_loss))
    moved = final_weights(tmp_path / "run")[MODEL_FILE]
    assert moved.keys() == start.keys() and not same_weights(moved, start)


@pytest.mark.parametrize("classes", [3, 10])
def test_data_of_other_classes_starts_with_a_fresh_class_table(trained_run, tmp_path, capsys, classes):
    """A folder whose classes are not the start's (fewer, or as many under other names): the class table is the new
    network's own, with the start's "no class" row; every other weight is the start's."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (32, 1, 28, 28), dtype=torch.uint8, generator=generator)
    dataset = ImageDataset(images, torch.arange(32) % classes, tuple(f"c{i}" for i in range(classes)))
    config = smoke_config(tmp_path, **{"train.init": str(trained_run), "net.num_classes": classes})
    start = final_weights(trained_run)[EMA_FILE]
    own = Trainer(smoke_config(tmp_path, **{"net.num_classes": classes}), tmp_path / "own", dataset=dataset,
                  progress=False).state.net.state_dict()
    started = Trainer(config, tmp_path / "run", dataset=dataset, progress=False).state.net.state_dict()
    assert "fresh class table" in capsys.readouterr().out
    table = next(key for key in started if key.endswith("class_embedding.weight"))
    assert torch.equal(started[table][:-1], own[table][:-1]) and torch.equal(started[table][-1], start[table][-1])
    rest = [k for k in start if k != table]
    assert same_weights({k: started[k] for k in rest}, {k: start[k] for k in rest})


def test_the_command_line_records_where_it_started(capsys, trained_run, tiny_data_dir, tmp_path, monkeypatch):
    """A relative path is recorded absolute in config.json, so the run says what it was fine-tuned from wherever it
    is read."""
    shutil.copytree(trained_run, tmp_path / "start")
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, *train_args(tiny_data_dir, tmp_path / "run", "--max-steps", "2",
                                             "--train.init", "start"))
    assert code == 0, err
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["train"]["init"]
    assert recorded == str((tmp_path / "start").resolve())


def test_resume_does_not_start_again_and_is_bit_identical(trained_run, tiny_data_dir, tmp_path):
    """A resumed run continues from its own checkpoint, not from train.init (which may be gone by then)."""
    shutil.copytree(trained_run, tmp_path / "start")
    config = smoke_config(tiny_data_dir, **{"train.init": str(tmp_path / "start"), "train.max_steps": 12,
                                            "train.checkpoint_every": 4, "train.keep": 10})
    whole, crashed = tmp_path / "whole", tmp_path / "crashed"
    train(config, whole, progress=False)
    shutil.copytree(whole, crashed)
    for later in ("step-00000008", "step-00000012"):
        shutil.rmtree(crashed / "checkpoints" / later)
    (crashed / "checkpoints" / "latest").write_text("step-00000004\n")
    shutil.rmtree(tmp_path / "start")
    train(config, crashed, resume=True, progress=False)
    for name in (MODEL_FILE, EMA_FILE):
        assert same_weights(load_file(str(latest_checkpoint(whole) / name)),
                            load_file(str(latest_checkpoint(crashed) / name))), name


def test_another_network_is_one_sentence(capsys, trained_run, tiny_data_dir, tmp_path):
    code, _, err = cli(capsys, *train_args(tiny_data_dir, tmp_path / "run", "--max-steps", "1",
                                           "--net.base_channels", "16", "--train.init", trained_run))
    assert_error(code, err, "train.init", "another network")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_missing_start_is_refused_before_the_data_is_read(capsys, tmp_path):
    code, _, err = cli(capsys, *train_args(tmp_path / "no-data", tmp_path / "run", "--train.init",
                                           tmp_path / "nowhere"))
    assert_error(code, err, "--train.init", "nowhere", "does not exist")  # the flag, not only the path
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("damage", ["nan", "truncated", "not-a-run"])
def test_damaged_weights_are_one_sentence(capsys, trained_run, tiny_data_dir, tmp_path, damage):
    start = tmp_path / "start"
    shutil.copytree(trained_run, start)
    ema_file = latest_checkpoint(start) / EMA_FILE
    if damage == "nan":
        weights = load_file(str(ema_file))
        first = next(iter(weights))
        weights[first] = torch.full_like(weights[first], float("nan"))
        save_file(weights, str(ema_file))
    elif damage == "truncated":
        ema_file.write_bytes(ema_file.read_bytes()[:100])
    else:
        start = tmp_path / "empty"
        start.mkdir()
    code, _, err = cli(capsys, *train_args(tiny_data_dir, tmp_path / "run", "--max-steps", "1",
                                           "--train.init", start))
    assert_error(code, err, {"nan": "not finite", "truncated": "safetensors", "not-a-run": "checkpoint"}[damage],
                 "train.init")  # named by its flag; refused on loading, not by a NaN loss later
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_student_is_refused(tmp_path, tiny_data_dir):
    config = smoke_config(tiny_data_dir, **{"train.init": str(tmp_path), "distill.steps": 1,
                                            "distill.teacher": str(tmp_path)})
    with pytest.raises(UserError, match="train.init is for training"):
        config.validate()


@pytest.mark.parametrize("command", ["train", "sample"])
def test_a_named_pipe_as_weights_is_one_sentence_not_a_hang(trained_run, tiny_data_dir, tmp_path, command):
    """A .safetensors path that is a named pipe, with a config beside it: reading it would block for ever."""
    import os

    pipe = tmp_path / "weights.safetensors"
    os.mkfifo(pipe)
    shutil.copy(trained_run / "config.json", tmp_path / "weights.json")
    args = (train_args(tiny_data_dir, tmp_path / "run", "--max-steps", "1", "--train.init", pipe)
            if command == "train" else ["sample", "--checkpoint", pipe, "--num", "1", "--out", tmp_path / "x.png"])
    done = run_cli(args, timeout=120)
    assert_error(done.returncode, done.stderr, "not a regular file", *(["train.init"] if command == "train" else []))
    assert not (tmp_path / "run").exists() and not (tmp_path / "x.png").exists()


def test_resume_refuses_a_new_start(capsys, trained_run, tmp_path):
    """A resumed run continues from its own checkpoint; a --train.init there would be recorded and not used."""
    shutil.copytree(trained_run, tmp_path / "run")
    before = (tmp_path / "run" / "config.json").read_bytes()
    code, _, err = cli(capsys, "train", "--resume", tmp_path / "run", "--no-progress", "--train.init", trained_run)
    assert_error(code, err, "--train.init", "--resume")
    assert (tmp_path / "run" / "config.json").read_bytes() == before
