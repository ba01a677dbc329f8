"""Training: the loss falls, checkpoints round-trip, a resumed run continues bit-identically."""

import dataclasses
import json
import shutil

import pytest
import torch
from conftest import smoke_config
from safetensors.torch import load_file

from tinydiffusion.checkpoint import latest_checkpoint, resolve_checkpoint
from tinydiffusion.config import DataConfig, RunConfig, apply_overrides
from tinydiffusion.data import load_data
from tinydiffusion.data.pixels import to_model_space
from tinydiffusion.errors import UserError
from tinydiffusion.pipeline import generate, load_model
from tinydiffusion.presets import get_preset
from tinydiffusion.training import Trainer, epoch_order, learning_rate, train


def test_smoke_loss_falls(tiny_data_dir, tmp_path):
    config = smoke_config(tiny_data_dir, **{"train.epochs": 6, "train.log_every": 16})
    train(config, tmp_path / "run", progress=False)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 6
    assert losses[-1] < 0.7 * losses[0]


def test_run_directory_layout_and_checkpoint_round_trip(tiny_data_dir, tmp_path):
    run = tmp_path / "run"
    # a report per epoch, with its grid
    config = smoke_config(tiny_data_dir, grids=True, **{"train.epochs": 2, "train.sample_every": 16})
    result = train(config, run, progress=False)
    assert result.step == 32
    assert (run / "config.json").is_file() and (run / "metrics.jsonl").is_file()
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["epoch-001.png", "epoch-002.png"]
    newest = latest_checkpoint(run)
    assert newest.name == "step-00000032"
    # --checkpoint accepts the run dir, the checkpoint dir and the weights file alike
    assert resolve_checkpoint(run)[0] == resolve_checkpoint(newest)[0] == newest / "ema.safetensors"
    model = load_model(run, device="cpu")
    saved = load_file(str(newest / "ema.safetensors"))
    for name, tensor in model.net.state_dict().items():
        assert torch.equal(tensor, saved[name])
    recorded = model.config.data  # the run records what it trained on
    assert (recorded.num_images, recorded.image_shape, recorded.class_names[7]) == (256, (1, 28, 28), "sneaker")
    assert len(recorded.prepared_sha256) == 64
    assert model.config == dataclasses.replace(config, data=recorded)
    images, labels = generate(model, 4, sampler="ddim", steps=3)
    assert images.shape == (4, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("hflip", [False, True])
def test_resume_is_bit_identical(tiny_data_dir, tmp_path, hflip):
    config = smoke_config(tiny_data_dir, **{"train.epochs": 2, "train.checkpoint_every": 10, "train.keep": 10,
                                            "data.hflip": hflip})
    whole = tmp_path / "whole"
    train(config, whole, progress=False)
    # Simulate a crash right after the step-20 checkpoint: drop the later ones, then resume.
    crashed = tmp_path / "crashed"
    shutil.copytree(whole, crashed)
    for later in ("step-00000030", "step-00000032"):
        shutil.rmtree(crashed / "checkpoints" / later)
    (crashed / "checkpoints" / "latest").write_text("step-00000020\n")
    result = train(config, crashed, resume=True, progress=False)
    assert result.step == 32
    for name in ("model.safetensors", "ema.safetensors"):
        a = load_file(str(whole / "checkpoints" / "step-00000032" / name))
        b = load_file(str(crashed / "checkpoints" / "step-00000032" / name))
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_learning_rate_warmup_then_cosine():
    config = apply_overrides(get_preset("smoke"), {"train.warmup_steps": 10, "train.lr": 1.0,
                                                   "train.min_lr_ratio": 0.1})
    assert learning_rate(config, 0, 100) == pytest.approx(0.1)
    assert learning_rate(config, 9, 100) == pytest.approx(1.0)
    assert learning_rate(config, 99, 100) == pytest.approx(0.1)  # the last step is at the floor
    assert learning_rate(config, 55, 101) == pytest.approx(0.55)  # halfway from step 10 to the last, 100
    assert learning_rate(config, 98, 100) > 0.1


def test_in_memory_dataset(tiny_data_dir):
    data = load_data(DataConfig(data_dir=str(tiny_data_dir), download=False), "train", progress=False)
    assert data.images.shape == (256, 1, 28, 28) and data.images.dtype == torch.uint8
    assert data.labels.shape == (256,) and int(data.labels.max()) <= 9


def test_hflip_mirrors_about_half_of_each_batch(tiny_data_dir, tmp_path):
    trainer = Trainer(smoke_config(tiny_data_dir, **{"data.hflip": True, "train.batch_size": 64}), tmp_path / "r",
                      progress=False)
    x0 = trainer.batches.draw(0).x0
    order = epoch_order(len(trainer.dataset), trainer.state.config.train.seed, 0, trainer.state.device)
    plain = to_model_space(trainer.dataset.images[order[:64]])
    same = (x0 == plain).flatten(1).all(1)
    mirrored = (x0 == plain.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all()  # every image is itself or its mirror image, nothing else
    assert 16 <= int((mirrored & ~same).sum()) <= 48  # and about half are mirrored


def test_a_resumed_run_refuses_changed_data(tiny_data_dir, tmp_path):
    from conftest import make_idx_dataset

    data = make_idx_dataset(tmp_path / "data", seed=1)
    run = tmp_path / "run"
    train(smoke_config(data, **{"train.max_steps": 2}), run, progress=False)
    make_idx_dataset(data, seed=2)  # the same files rewritten with other images
    saved = RunConfig.from_json_file(run / "config.json")
    with pytest.raises(UserError, match="has changed since it started"):
        train(apply_overrides(saved, {"train.max_steps": 4}), run, resume=True, progress=False)
