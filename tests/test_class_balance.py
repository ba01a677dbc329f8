"""--train.class_balance: the rarer classes of an unbalanced folder drawn more often, resumably."""

import json

import numpy as np
import pytest
import torch
from conftest import assert_error, cli, smoke_config
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tinydiffusion.errors import UserError
from tinydiffusion.training import Trainer, balanced_draw, epoch_order, train

LABELS = torch.tensor([0] * 900 + [1] * 100)  # one class nine times as common as the other


def shares(indices: torch.Tensor, labels: torch.Tensor) -> list[float]:
    return (torch.bincount(labels[indices], minlength=int(labels.max()) + 1) / len(indices)).tolist()


def test_no_balance_is_the_old_permutation():
    """0 (every run before the option, and its default) keeps the permutation, so old runs resume bit-identically."""
    plain = epoch_order(1000, 3, 2, torch.device("cpu"))
    assert torch.equal(plain, epoch_order(1000, 3, 2, torch.device("cpu"), LABELS, 0.0))
    assert sorted(plain.tolist()) == list(range(1000))


@pytest.mark.parametrize("balance, expected", [(1.0, [0.5, 0.5]), (0.5, [0.75, 0.25]), (0.0, [0.9, 0.1])])
def test_each_class_drawn_in_proportion_to_its_count_to_the_power(balance, expected):
    """n ** (1 - balance): 900 and 100 images give 1:1 at 1, 30:10 at 0.5 (square roots), 9:1 at 0."""
    generator = torch.Generator().manual_seed(0)
    drawn = balanced_draw(LABELS, balance, 40_000, generator)
    assert shares(drawn, LABELS) == pytest.approx(expected, abs=0.01)


def test_a_class_s_images_are_drawn_uniformly():
    generator = torch.Generator().manual_seed(1)
    drawn = balanced_draw(LABELS, 1.0, 40_000, generator)
    rare = torch.bincount(drawn, minlength=1000)[900:]  # about 200 draws of each of the 100 rare images
    assert int(rare.min()) > 120 and int(rare.max()) < 290
    common = torch.bincount(drawn, minlength=1000)[:900]  # about 22 of each common one
    assert int((common == 0).sum()) < 5


def test_the_order_is_a_function_of_seed_and_epoch():
    device = torch.device("cpu")
    first = epoch_order(1000, 0, 4, device, LABELS, 1.0)
    assert torch.equal(first, epoch_order(1000, 0, 4, device, LABELS, 1.0))
    assert not torch.equal(first, epoch_order(1000, 0, 5, device, LABELS, 1.0))
    assert not torch.equal(first, epoch_order(1000, 1, 4, device, LABELS, 1.0))
    assert len(first) == 1000


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(0, 40), min_size=1, max_size=8).filter(lambda c: sum(c) > 0),
       balance=st.floats(0.0, 1.0), seed=st.integers(0, 2**32 - 1))
def test_any_labels_give_valid_indices_of_present_classes(counts, balance, seed):
    """Any class counts, absent classes (a label never used) included: indices in range, never an absent class,
    labels in any order."""
    labels = torch.tensor([c for c, n in enumerate(counts) for _ in range(n)])
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]
    drawn = epoch_order(len(labels), seed, 0, torch.device("cpu"), labels, balance)
    assert len(drawn) == len(labels) and 0 <= int(drawn.min()) and int(drawn.max()) < len(labels)
    assert all(counts[int(c)] > 0 for c in labels[drawn].unique())


def test_training_draws_the_rare_class_more_often(tmp_path):
    """Through the trainer's batches: 224 images of one class and 32 of another, drawn about equally at balance 1,
    in the order epoch_order gives."""
    from tinydiffusion.data import ImageDataset

    labels = torch.tensor([0] * 224 + [1] * 32)
    dataset = ImageDataset(torch.zeros(256, 1, 28, 28, dtype=torch.uint8), labels, ("common", "rare"))
    config = smoke_config(tmp_path, **{"train.class_balance": 1.0, "train.batch_size": 64,
                                       "train.label_dropout": 0.0})
    trainer = Trainer(config, tmp_path / "run", dataset=dataset, progress=False)
    drawn = torch.cat([trainer.batches.draw(step).y for step in range(4)])  # the epoch's 256 draws
    assert torch.equal(drawn, labels[epoch_order(256, 0, 0, torch.device("cpu"), labels, 1.0)])
    assert 100 <= int((drawn == 1).sum()) <= 156  # half of 256 is 128; the data's own share would give 32


def test_resume_with_class_balance_is_bit_identical(tiny_data_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file

    config = smoke_config(tiny_data_dir, **{"train.epochs": 2, "train.checkpoint_every": 10, "train.keep": 10,
                                            "train.class_balance": 0.5})
    whole, crashed = tmp_path / "whole", tmp_path / "crashed"
    train(config, whole, progress=False)
    assert json.loads((whole / "config.json").read_text())["train"]["class_balance"] == 0.5
    shutil.copytree(whole, crashed)
    for later in ("step-00000030", "step-00000032"):
        shutil.rmtree(crashed / "checkpoints" / later)
    (crashed / "checkpoints" / "latest").write_text("step-00000020\n")
    train(config, crashed, resume=True, progress=False)
    for name in ("model.safetensors", "ema.safetensors"):
        a = load_file(str(whole / "checkpoints" / "step-00000032" / name))
        b = load_file(str(crashed / "checkpoints" / "step-00000032" / name))
        assert all(torch.equal(a[k], b[k]) for k in a), name


@pytest.mark.parametrize("value", ["1.5", "-0.5", "nan", "inf", "half"])
def test_a_bad_value_is_one_sentence(capsys, tmp_path, value):
    code, _, err = cli(capsys, "train", "--preset", "smoke", "--run-dir", tmp_path / "run", "--no-progress",
                       "--train.class_balance", value)
    assert_error(code, err, "class_balance")
    assert not (tmp_path / "run").exists()


def test_unlabelled_data_is_one_sentence(capsys, tmp_path):
    """A folder without class folders has no classes to balance: refused, nothing written."""
    folder = tmp_path / "flat"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(20):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    code, _, err = cli(capsys, "train", "--data", folder, "--run-dir", tmp_path / "run", "--no-progress",
                       "--batch-size", "4", "--max-steps", "1", "--train.class_balance", "1")
    assert_error(code, err, "unlabelled", "class_balance")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_unlabelled_data_in_process_is_refused(tmp_path):
    from tinydiffusion.data import ImageDataset

    dataset = ImageDataset(torch.zeros(16, 1, 28, 28, dtype=torch.uint8), None)
    config = smoke_config(tmp_path, **{"train.class_balance": 1.0, "net.num_classes": 0})
    with pytest.raises(UserError, match="unlabelled"):
        train(config, tmp_path / "run", dataset=dataset, progress=False)
