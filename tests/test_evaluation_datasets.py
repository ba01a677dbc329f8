"""Evaluation beyond Fashion-MNIST: a classifier per dataset, references without a test split, unlabelled data,
the shipped Fashion-MNIST statistics, and FD and TensorBoard logging during training."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
import torch
from conftest import REAL_DATA, assert_error, run_cli, smoke_config
from conftest import cli as cli_in_process

from tinydiffusion import cli, evaluation
from tinydiffusion.config import DataConfig
from tinydiffusion.data import load_data
from tinydiffusion.errors import UserError
from tinydiffusion.training import Trainer

CLASS_NAMES = ["bar-top", "bar-middle", "bar-bottom"]
FAST = evaluation.Recipe(epochs=2, min_steps=10)  # a classifier in a fraction of a second; what it learns is not tested


pytestmark = pytest.mark.usefixtures("private_cache")  # each test its own cache (conftest)


def bars(num: int, seed: int, size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Class c: a bright bar in the c-th third of the image, on noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, num)
    images = rng.integers(0, 60, (num, size, size)).astype(np.uint8)
    for i, c in enumerate(labels):
        images[i, c * size // 3:c * size // 3 + 2, 1:-1] = 230
    return images, labels


def write_npz(path, num: int, seed: int, labelled: bool = True, size: int = 8):
    images, labels = bars(num, seed, size)
    arrays = {"images": images}
    if labelled:
        arrays.update(labels=labels, class_names=np.array(CLASS_NAMES))
    np.savez(path, **arrays)
    return path


@pytest.fixture
def split_dataset(tmp_path):
    """train.npz with test.npz beside it: 3 classes of 8x8 grey bars."""
    folder = tmp_path / "bars"
    folder.mkdir()
    write_npz(folder / "test.npz", 45, seed=2)
    return write_npz(folder / "train.npz", 150, seed=1)


def evaluator_for(source, **options) -> evaluation.Evaluator:
    return evaluation.Evaluator(DataConfig(source=str(source), download=False), recipe=FAST, progress=False, **options)


def counting_fits(monkeypatch) -> list:
    real_fit, fits = evaluation.classifier.fit_classifier, []

    def fit(*args, **kwargs):
        fits.append(None)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(evaluation.classifier, "fit_classifier", fit)
    return fits


# --- a labelled dataset: its own classifier, trained once ----------------------------------------

def test_a_labelled_dataset_gets_a_classifier_trained_once_and_cached(split_dataset, private_cache, monkeypatch,
                                                                      capsys):
    fits = counting_fits(monkeypatch)
    samples, labels = bars(40, seed=3)
    result = evaluator_for(split_dataset).score(samples, labels)
    assert len(fits) == 1 and "held-out accuracy" in capsys.readouterr().out  # said the first time
    saved = list(private_cache.glob("prepared/*/classifier-*.safetensors"))
    assert len(saved) == 1 and "train" in saved[0].parent.name  # beside the prepared train split
    info = json.loads(saved[0].with_suffix(".json").read_text())
    assert info["held_out_images"] == 45 and 0.0 <= info["test_accuracy"] <= 1.0 and info["seed"] == 0

    again = evaluator_for(split_dataset).score(samples, labels)
    assert len(fits) == 1, "the cached classifier was trained again"
    assert "held-out accuracy" not in capsys.readouterr().out
    assert again["fd"] == result["fd"] and again["fd_floor"] == result["fd_floor"]

    assert result["metric"] == "FD (bars/train.npz classifier features)"
    for key in ("fd", "fd_floor", "precision", "recall", "precision_floor", "recall_floor", "class_accuracy"):
        assert isinstance(result[key], float), key
    assert result["num"] == result["fd_floor_num"] == 40 and len(result["per_class_accuracy"]) == 3
    table = evaluation.format_table(result)
    assert all(f"  {name}" in table for name in CLASS_NAMES)
    assert "bars/test.npz, the held-out split beside bars/train.npz (45 images)" in table
    assert "held-out accuracy" in table and "10% of the train split" not in table


def test_labels_must_be_classes_of_the_data(split_dataset):
    evaluator = evaluator_for(split_dataset)
    samples, _ = bars(10, seed=4)
    with pytest.raises(UserError, match="0-2"):
        evaluator.score(samples, np.full(10, 3))
    with pytest.raises(UserError, match="have shape"):
        evaluator.score(np.zeros((10, 28, 28), np.uint8))


def test_without_a_held_out_split_the_table_says_which_reference(tmp_path):
    (tmp_path / "data").mkdir()
    source = write_npz(tmp_path / "data" / "digits.npz", 200, seed=1)  # no test split beside it
    evaluator = evaluator_for(source)
    result = evaluator.score(*bars(30, seed=5))
    assert evaluation.NO_TEST_SPLIT in result["notes"]
    assert len(evaluator.reference_images) == 20 and len(evaluator.pool) == 180
    table = evaluation.format_table(result)
    assert "reference: 10% of the train split held out; no test split found" in table
    assert "20 held-out images of the data/digits.npz train split" in table


def test_a_model_that_does_not_fit_the_data_is_refused_before_any_work(split_dataset, monkeypatch, capsys):
    from tinydiffusion import pipeline

    fits = counting_fits(monkeypatch)
    monkeypatch.setattr(pipeline, "generate", lambda *a, **k: pytest.fail("sampled before checking the data"))
    assert cli.main(["evaluate", "--data", str(split_dataset), "--num", "10"]) == 2  # the bundled 28x28 model
    err = capsys.readouterr().err
    assert "the samples are 1x28x28 images but bars/train.npz holds 1x8x8" in err
    assert "--data.image_size" not in err  # data is never resized up, so that is not offered
    assert not fits  # refused before a classifier was trained


def test_evaluate_samples_of_a_labelled_dataset_from_the_command_line(tmp_path):
    (tmp_path / "bars").mkdir()
    write_npz(tmp_path / "bars" / "test.npz", 20, seed=2)
    split_dataset = write_npz(tmp_path / "bars" / "train.npz", 40, seed=1)  # small: the default recipe's 100 steps
    samples = tmp_path / "s.npz"
    images, labels = bars(30, seed=6)
    np.savez(samples, images[..., None], labels=labels)
    result = run_cli(["evaluate", "--samples", samples, "--data", split_dataset, "--json", tmp_path / "r.json"],
                     env={"TINYDIFFUSION_CACHE": str(tmp_path / "cli-cache")})
    assert result.returncode == 0, result.stderr
    assert "classifier held-out accuracy" in result.stdout  # said the first time
    assert "FD (bars/train.npz classifier features), N=30" in result.stdout and "  bar-middle" in result.stdout
    assert json.loads((tmp_path / "r.json").read_text())["class_names"] == CLASS_NAMES


def test_samples_smaller_than_the_data_are_scored_against_it_resized(tmp_path, capsys):
    """8-pixel samples against data of 16-pixel images: refused with the flags that fix it, then scored with them,
    the data read at the samples' size as train would read it."""
    (tmp_path / "bars").mkdir()
    write_npz(tmp_path / "bars" / "test.npz", 20, seed=2, size=16)
    data = write_npz(tmp_path / "bars" / "train.npz", 40, seed=1, size=16)
    samples = tmp_path / "s.npz"
    images, labels = bars(30, seed=6)
    np.savez(samples, images[..., None], labels=labels)
    code, _, err = cli_in_process(capsys, "evaluate", "--samples", samples, "--data", data)
    assert_error(code, err.splitlines(keepends=True)[-1], "1x8x8", "1x16x16",  # after the progress of preparing
                 "--data.image_size 8 --data.channels 1")
    code, out, err = cli_in_process(capsys, "evaluate", "--samples", samples, "--data", data, "--data.image_size", "8",
                                    "--json", tmp_path / "r.json")
    assert code == 0, err
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["num"] == 30 and result["class_names"] == CLASS_NAMES and np.isfinite(result["fd"])


@pytest.mark.parametrize("flags, fragment", [(["--data.image_size", "3"], "data.image_size"),
                                             (["--data.image_size", "big"], "data.image_size"),
                                             (["--data.channels", "2"], "data.channels"),
                                             (["--data.image_size", "nan"], "data.image_size")])
def test_a_bad_size_for_the_data_is_one_sentence(tmp_path, capsys, flags, fragment):
    samples = tmp_path / "s.npz"
    np.savez(samples, bars(10, seed=6)[0][..., None])
    code, _, err = cli_in_process(capsys, "evaluate", "--samples", samples, *flags)
    assert_error(code, err, fragment)


# --- unlabelled data: Inception FID, or one sentence before any sampling --------------------------

def test_unlabelled_data_without_torch_fidelity_is_one_sentence_before_sampling(tmp_path):
    source = write_npz(tmp_path / "plain.npz", 60, seed=1, labelled=False, size=28)
    hidden = tmp_path / "hide" / "torch_fidelity"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('hidden for this test')\n")
    result = run_cli(["evaluate", "--data", source, "--num", "20", "--steps", "2"],
                     env={"PYTHONPATH": str(tmp_path / "hide"), "TINYDIFFUSION_CACHE": str(tmp_path / "c")})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "sampling" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "unlabelled" in error[0] and "torch-fidelity" in error[0]


def test_unlabelled_data_is_checked_before_sampling_in_process(tmp_path, monkeypatch, capsys):
    from tinydiffusion import pipeline

    source = write_npz(tmp_path / "plain.npz", 60, seed=1, labelled=False, size=28)
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)  # import fails
    monkeypatch.setattr(pipeline, "generate", lambda *a, **k: pytest.fail("sampled before checking the data"))
    assert cli.main(["evaluate", "--data", str(source), "--num", "20"]) == 2
    assert "Inception FID cannot be computed here" in capsys.readouterr().err


def stand_in_torch_fidelity(monkeypatch, hub, calls: list):
    """A torch_fidelity module that returns FID 12.5, with its weights' URL; torch.hub's folder is `hub`."""
    fake = types.ModuleType("torch_fidelity")
    fake.calculate_metrics = lambda **kw: calls.append(kw) or {"frechet_inception_distance": 12.5}
    extractor = types.ModuleType("torch_fidelity.feature_extractor_inceptionv3")
    extractor.URL_INCEPTION_V3 = "https://example.invalid/releases/weights-inception-test.pth"
    monkeypatch.setitem(sys.modules, "torch_fidelity", fake)
    monkeypatch.setitem(sys.modules, "torch_fidelity.feature_extractor_inceptionv3", extractor)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    return hub / "checkpoints" / "weights-inception-test.pth"


def test_unlabelled_data_gets_inception_fid_through_torch_fidelity(tmp_path, monkeypatch):
    """With a stand-in torch-fidelity whose weights are in place: Inception FID and its floor, nothing else."""
    calls = []
    weights = stand_in_torch_fidelity(monkeypatch, tmp_path / "hub", calls)
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"weights")
    source = write_npz(tmp_path / "plain.npz", 60, seed=1, labelled=False)
    result = evaluator_for(source).score(bars(10, seed=2)[0], labels=np.zeros(10, np.int64))  # ignored: no classes
    assert result["metric"] == evaluation.INCEPTION_METRIC and result["fd"] == result["fd_floor"] == 12.5
    assert len(calls) == 2 and calls[0]["input1"][0].shape == (3, 8, 8)  # grey replicated to RGB
    assert "precision" not in result and "Inception FID (torch-fidelity), N=10" in evaluation.format_table(result)


def test_missing_inception_weights_that_cannot_be_downloaded_are_one_sentence(tmp_path, monkeypatch):
    weights = stand_in_torch_fidelity(monkeypatch, tmp_path / "hub", [])

    def no_internet(url, destination, progress=True):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_internet)
    source = write_npz(tmp_path / "plain.npz", 60, seed=1, labelled=False)
    with pytest.raises(UserError, match="Inception weights are not at .*name resolution.*copy that file") as info:
        evaluator_for(source)
    assert str(weights) in str(info.value) and "plain.npz is unlabelled" in str(info.value)


# --- Fashion-MNIST with no data on disk: the statistics shipped with the package ---------------------

def test_shipped_statistics_are_small_and_keyed_to_the_bundled_classifier():
    path = evaluation.SHIPPED_STATISTICS
    assert path.is_file() and path.stat().st_size < 6 * 2**20
    shipped = evaluation.metrics.shipped_statistics(evaluation.load_classifier())
    classifier_info = json.loads(evaluation.BUNDLED_CLASSIFIER.with_suffix(".json").read_text())
    assert shipped["facts"]["classifier_sha256"] == classifier_info["weights_sha256"]
    assert shipped["mu"].dtype == np.float64 and shipped["sigma"].shape == (128, 128)
    assert len(shipped["features"]) == 10_000 and len(shipped["floor_features"]) == 10_000


def test_evaluate_samples_works_with_no_dataset_anywhere(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (40, 28, 28, 1)).astype(np.uint8)
    np.savez(tmp_path / "x.npz", images, labels=np.arange(40) % 10)
    result = run_cli(["evaluate", "--samples", tmp_path / "x.npz", "--json", tmp_path / "r.json"], cwd=tmp_path,
                     env={"TINYDIFFUSION_CACHE": str(tmp_path / "fresh-cache")})
    assert result.returncode == 0, result.stderr
    assert "FD (fmnist-classifier features), N=40" in result.stdout and "shipped statistics" in result.stdout
    assert "sandal" in result.stdout  # per-class rows by the dataset's class names
    scores = json.loads((tmp_path / "r.json").read_text())
    assert scores["fd_floor_num"] == 40 and scores["fd"] > scores["fd_floor"]
    assert not (tmp_path / "fresh-cache" / "datasets").exists()  # nothing was downloaded


@pytest.mark.slow
@pytest.mark.skipif(not REAL_DATA.is_dir(), reason="real Fashion-MNIST not at ../shared/data/fashion-mnist")
def test_shipped_statistics_score_like_the_real_data(tmp_path):
    train = load_data(DataConfig(data_dir=str(REAL_DATA), download=False), "train", progress=False)
    images, labels = train.images[-600:], train.labels[-600:]
    computed = evaluation.evaluate_samples(images, labels, data_dir=REAL_DATA, progress=False)
    shipped = evaluation.evaluate_samples(images, labels, data_dir=tmp_path / "no-data-here", progress=False)
    assert not computed["notes"] and "shipped statistics" in shipped["notes"][0]
    assert shipped["fd"] == pytest.approx(computed["fd"], rel=1e-6)  # mean and covariance are float64
    assert shipped["fd_floor"] == pytest.approx(computed["fd_floor"], rel=1e-3)  # float16 floor features
    for key in ("precision", "recall", "precision_floor", "recall_floor"):
        assert shipped[key] == pytest.approx(computed[key], abs=0.01), key
    assert shipped["class_accuracy"] == computed["class_accuracy"]


# --- during training: FD every few epochs, and TensorBoard --------------------------------------------

def test_eval_every_logs_fd_to_metrics_jsonl(tiny_data_dir, tmp_path):
    config = smoke_config(tiny_data_dir, **{"train.epochs": 2, "train.eval_every": 1, "train.eval_num": 16})
    Trainer(config, tmp_path / "run", progress=False).run()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evaluations = [r for r in records if "fd" in r]
    assert [r["epoch"] for r in evaluations] == [1, 2]
    for record in evaluations:
        assert record["eval_num"] == 16 and record["fd"] > 0 and record["fd_floor"] >= 0
        assert record["metric"] == "FD (fmnist-classifier features)" and "class_accuracy" in record
    assert evaluations[-1]["step"] == records[-1]["step"]


def test_eval_settings_are_checked():
    with pytest.raises(UserError, match="eval_num"):
        smoke_config("x", **{"train.eval_num": 3}).validate()
    with pytest.raises(UserError, match="eval_every"):
        smoke_config("x", **{"train.eval_every": -1}).validate()


def test_tensorboard_writes_scalars_and_sample_grids(tiny_data_dir, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = smoke_config(tiny_data_dir, **{"train.tensorboard": True, "train.eval_every": 1, "train.eval_num": 16,
                                            "train.sample_every_epoch": True})
    Trainer(config, tmp_path / "run", progress=False).run()
    events = list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert events
    accumulator = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
    tags = accumulator.Tags()
    assert {"train/loss", "train/lr", "train/images_per_second", "eval/fd", "eval/fd_floor"} <= set(tags["scalars"])
    assert tags["images"] == ["samples"]


def test_tensorboard_missing_is_one_sentence_before_training(tiny_data_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    config = smoke_config(tiny_data_dir, **{"train.tensorboard": True})
    with pytest.raises(UserError, match="tinydiffusion\\[tensorboard\\]"):
        Trainer(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_a_classifier_worse_than_chance_is_refused(tmp_path):
    """A held-out split whose labels name other classes than the train split's (bar c labelled c + 1): the
    classifier is right on none of it, and FD in its features would mean nothing."""
    folder = tmp_path / "bars"
    folder.mkdir()
    write_npz(folder / "train.npz", 150, seed=1)
    images, labels = bars(45, seed=2)
    np.savez(folder / "test.npz", images=images, labels=(labels + 1) % 3, class_names=np.array(CLASS_NAMES))
    with pytest.raises(UserError, match="worse than chance") as err:  # a classifier that learns the bars
        evaluation.Evaluator(DataConfig(source=str(folder / "train.npz"), download=False), progress=False,
                             recipe=evaluation.Recipe(epochs=2, min_steps=60))
    assert "\n" not in str(err.value) and "33% for 3 classes" in str(err.value)


def test_too_few_images_to_hold_out_count_in_the_singular(tmp_path):
    np.savez(tmp_path / "one.npz", images=np.zeros((3, 8, 8), np.uint8), labels=np.array([0, 1, 2]),
             class_names=np.array(CLASS_NAMES))
    data = load_data(DataConfig(source=str(tmp_path / "one.npz"), download=False), "train", progress=False)
    with pytest.raises(UserError, match="has 3 images, too few") as err:
        evaluation.hold_out(data)
    one = evaluation.ImageDataset(data.images[:1], data.labels[:1], data.class_names, data.manifest)
    with pytest.raises(UserError, match="has 1 image, too few") as err:
        evaluation.hold_out(one)
    assert "\n" not in str(err.value)
