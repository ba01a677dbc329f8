"""The FD metric: formula, precision/recall, eval-mode features, caching, npz loading, bundled classifier."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REAL_DATA, REPO, cli_env

from tinydiffusion import evaluation
from tinydiffusion.config import DataConfig
from tinydiffusion.data import load_data, write_idx
from tinydiffusion.errors import UserError
from tinydiffusion.evaluation import (
    extract_features,
    feature_statistics,
    frechet_distance,
    load_classifier,
    load_samples_npz,
    precision_recall,
)
from tinydiffusion.nets.classifier import ClassifierConfig, FeatureClassifier

pytestmark = pytest.mark.usefixtures("private_cache")  # each test its own cache (conftest)


def fake_images(num: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class c: a bright horizontal bar at row 2 + 2c on noise, so classes differ and are learnable."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, num)
    images = rng.integers(0, 60, (num, 28, 28)).astype(np.uint8)
    for i, c in enumerate(labels):
        images[i, 2 + 2 * c:5 + 2 * c, 3:25] = 230
    return images, labels.astype(np.uint8)


@pytest.fixture
def fake_data_dir(tmp_path) -> Path:
    """A tiny Fashion-MNIST look-alike in the official file names."""
    folder = tmp_path / "fmnist"
    folder.mkdir()
    for split, num, seed in (("train", 300, 1), ("t10k", 120, 2)):
        images, labels = fake_images(num, seed)
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels)
    return folder


@pytest.fixture(scope="module")
def tiny_classifier() -> FeatureClassifier:
    torch.manual_seed(0)
    return FeatureClassifier(ClassifierConfig(channels=(4, 8), feature_dim=16)).eval()


# --- Fréchet distance ------------------------------------------------------------------------

def test_fd_of_a_set_with_itself_is_zero():
    features = np.random.default_rng(0).normal(size=(500, 8))
    stats = feature_statistics(features)
    assert abs(frechet_distance(*stats, *stats)) < 1e-6


def test_fd_matches_the_closed_form_for_gaussians():
    rng = np.random.default_rng(0)
    dim = 4
    mu1, mu2 = np.zeros(dim), np.array([1.0, -0.5, 0.0, 2.0])
    sigma1 = np.diag([1.0, 2.0, 0.5, 1.0])
    a = rng.normal(size=(dim, dim))
    sigma2 = a @ a.T / dim + 0.5 * np.eye(dim)
    # Closed form, with (S1 S2)^(1/2) computed independently: Tr = sum of sqrt(eig(S1^1/2 S2 S1^1/2)).
    root1 = np.diag(np.sqrt(np.diag(sigma1)))
    tr_covmean = np.sqrt(np.linalg.eigvalsh(root1 @ sigma2 @ root1)).sum()
    exact = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(exact, rel=1e-9)
    n = 200_000
    x = rng.multivariate_normal(mu1, sigma1, n)
    y = rng.multivariate_normal(mu2, sigma2, n)
    estimate = frechet_distance(*feature_statistics(x), *feature_statistics(y))
    assert estimate == pytest.approx(exact, abs=0.05)  # sampling error at n = 200k is ~0.01


def test_fd_is_symmetric_and_handles_singular_covariances():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 6))
    y = rng.normal(loc=0.3, size=(300, 6))
    x[:, 0] = 0.0  # a dead feature: zero variance, as a ReLU unit that never fires gives
    y[:, 0] = 0.0
    a, b = feature_statistics(x), feature_statistics(y)
    forward, backward = frechet_distance(*a, *b), frechet_distance(*b, *a)
    assert np.isfinite(forward) and forward > 0
    assert forward == pytest.approx(backward, rel=1e-6)


# --- precision and recall ----------------------------------------------------------------------

def test_precision_recall_of_identical_sets_is_one():
    features = np.random.default_rng(0).normal(size=(400, 5))
    assert precision_recall(features, features.copy(), k=3) == pytest.approx((1.0, 1.0))


def test_precision_recall_of_far_apart_clusters_is_zero():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(300, 5))
    fake = rng.normal(loc=100.0, size=(200, 5))
    assert precision_recall(real, fake, k=3, chunk=64) == (0.0, 0.0)


def test_precision_recall_see_mode_collapse_as_low_recall():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(1000, 2))
    fake = real[np.linalg.norm(real, axis=1) < 0.5]  # only the centre of the distribution
    precision, recall = precision_recall(real, fake, k=3)
    assert precision > 0.95 and recall < 0.5


# --- features are taken in eval mode -----------------------------------------------------------

def test_features_do_not_depend_on_batch_mates_even_if_left_in_train_mode(tiny_classifier):
    images, _ = fake_images(16, seed=3)
    tiny_classifier.train()  # the bug class: a caller forgets eval(); extraction must not care
    running_mean = [m.running_mean.clone() for m in tiny_classifier.modules() if hasattr(m, "running_mean")]
    together = extract_features(tiny_classifier, images, batch_size=16)
    one_by_one = np.concatenate([extract_features(tiny_classifier, images[i:i + 1]) for i in range(16)])
    after = [m.running_mean for m in tiny_classifier.modules() if hasattr(m, "running_mean")]
    assert tiny_classifier.training  # the caller's mode is given back
    tiny_classifier.eval()
    np.testing.assert_allclose(together, one_by_one, rtol=1e-5, atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(running_mean, after, strict=True))
    assert together.dtype == np.float64 and together.shape == (16, 16)


def test_features_accept_the_three_layouts(tiny_classifier):
    images, _ = fake_images(4, seed=4)
    nchw = extract_features(tiny_classifier, images[:, None])
    np.testing.assert_array_equal(extract_features(tiny_classifier, images), nchw)
    np.testing.assert_array_equal(extract_features(tiny_classifier, images[..., None]), nchw)
    with pytest.raises(UserError, match="must be uint8"):
        extract_features(tiny_classifier, images.astype(np.float32))
    with pytest.raises(UserError, match="have shape"):
        extract_features(tiny_classifier, np.zeros((2, 32, 32, 3), np.uint8))


# --- sample files ----------------------------------------------------------------------------

def test_load_samples_npz_round_trip(tmp_path):
    images = np.zeros((5, 28, 28, 1), np.uint8)
    np.savez(tmp_path / "s.npz", images, labels=np.arange(5))
    loaded, labels = load_samples_npz(tmp_path / "s.npz")
    np.testing.assert_array_equal(loaded, images)
    np.testing.assert_array_equal(labels, np.arange(5))
    np.savez(tmp_path / "u.npz", images)
    assert load_samples_npz(tmp_path / "u.npz")[1] is None


@pytest.mark.parametrize("make, words", [
    (lambda p: None, "does not exist"),
    (lambda p: p.write_bytes(b"not a zip at all"), "is not an .npz file; samples are an .npz holding arr_0"),
    (lambda p: np.savez(p, images=np.zeros((2, 28, 28, 1), np.uint8)), "arr_0"),
    (lambda p: np.savez(p, np.zeros((2, 28, 28, 1), np.float32)), "uint8"),
    (lambda p: np.savez(p, np.zeros((2, 28, 28), np.uint8)), "N x H x W x C"),
    (lambda p: np.savez(p, np.zeros((2, 28, 28, 1), np.uint8), labels=np.arange(3)), "one per image"),
    (lambda p: np.savez(p, np.array([object()], dtype=object)), "only pickle can load"),  # never unpickled
])
def test_load_samples_npz_errors_are_user_errors(tmp_path, make, words):
    path = tmp_path / "samples.npz"
    make(path)
    with pytest.raises(UserError, match=words):
        load_samples_npz(path)


def test_load_samples_npz_refuses_a_plain_npy(tmp_path):
    path = tmp_path / "samples.npy"
    np.save(path, np.zeros((2, 28, 28, 1), np.uint8))
    with pytest.raises(UserError, match="np.savez"):
        load_samples_npz(path)


# --- the bundled classifier ----------------------------------------------------------------------

def test_bundled_classifier_loads_in_eval_mode_with_its_config():
    classifier = load_classifier()
    info = json.loads(evaluation.BUNDLED_CLASSIFIER.with_suffix(".json").read_text())
    assert not classifier.training
    assert not any(module.training for module in classifier.modules())
    assert classifier.config == ClassifierConfig(**{**info["config"], "channels": tuple(info["config"]["channels"])})
    assert info["test_accuracy"] >= 0.92
    assert evaluation.weights_checksum(classifier) == info["weights_sha256"]
    logits = classifier(torch.zeros(2, 1, 28, 28))
    assert logits.shape == (2, 10)


def test_damaged_classifier_file_is_a_user_error(tmp_path):
    source = evaluation.BUNDLED_CLASSIFIER
    (tmp_path / "c.safetensors").write_bytes(source.read_bytes()[:-100])
    (tmp_path / "c.json").write_text(source.with_suffix(".json").read_text())
    with pytest.raises(UserError):
        load_classifier(tmp_path / "c.safetensors")
    with pytest.raises(UserError, match="does not exist"):
        load_classifier(tmp_path / "missing.safetensors")


@pytest.mark.slow
@pytest.mark.skipif(not REAL_DATA.is_dir(), reason="real Fashion-MNIST not at ../shared/data/fashion-mnist")
def test_bundled_classifier_is_accurate_on_the_real_test_split():
    test = load_data(DataConfig(data_dir=str(REAL_DATA), download=False), "test", progress=False)
    accuracy = evaluation.classifier_accuracy(load_classifier(), test.images, test.labels)
    assert accuracy >= 0.92


# --- training and the whole evaluation on tiny data -------------------------------------------

def test_train_classifier_saves_a_loadable_classifier(fake_data_dir, tmp_path):
    out = tmp_path / "clf" / "c.safetensors"
    config = ClassifierConfig(channels=(4, 8), feature_dim=16)
    data = DataConfig(data_dir=str(fake_data_dir), download=False)
    train, test = load_data(data, "train", progress=False), load_data(data, "test", progress=False)
    info = evaluation.train_classifier(train, test, out, config=config,
                                       recipe=evaluation.Recipe(epochs=1, batch_size=50, min_steps=0), progress=False)
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["seed"] == 0 and saved["epochs"] == 1 and saved["config"]["channels"] == [4, 8]
    assert saved["test_accuracy"] == info["test_accuracy"] and len(saved["data_sha256"]) == 64
    loaded = load_classifier(out)
    assert loaded.config == config and not loaded.training


def test_the_maintainers_classifier_tool_reports_missing_data_in_one_line(tmp_path):
    """The tool (tools/, not the package) runs as a script; no data is one sentence and writes nothing."""
    empty = tmp_path / "empty"
    empty.mkdir()
    for command, out in (("train-classifier", "c.safetensors"), ("ship-statistics", "s.npz")):
        done = subprocess.run([sys.executable, str(REPO / "tools" / "train_classifier.py"), command, "--data-dir",
                               str(empty), "--out", str(empty / out)], capture_output=True, text=True, timeout=300,
                              env=cli_env())
        assert done.returncode == 2 and done.stderr.startswith(f"error: Fashion-MNIST is not in {empty}"), done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and list(empty.iterdir()) == []


def test_evaluate_samples_returns_every_key_and_caches(fake_data_dir, tiny_classifier, private_cache, monkeypatch):
    images, labels = fake_images(60, seed=5)
    result = evaluation.evaluate_samples(images[..., None], labels, data_dir=fake_data_dir,
                                         classifier=tiny_classifier, progress=False)
    for key in ("metric", "fd", "fd_floor", "num", "precision", "recall", "class_accuracy", "per_class_accuracy"):
        assert key in result
    assert result["metric"] == "FD (fmnist-classifier features)"
    assert result["num"] == 60 and result["fd_floor_num"] == 60 and len(result["per_class_accuracy"]) == 10
    assert 0.0 <= result["precision"] <= 1.0 and 0.0 <= result["class_accuracy"] <= 1.0
    cached = sorted(p.name for p in private_cache.rglob("fd-*"))  # beside the prepared splits
    assert [name.split("-")[1] for name in cached] == ["floor", "reference"]
    real_extract, extracted = evaluation.metrics.extract_features, []

    def counting(classifier, batch, *args, **kwargs):
        extracted.append(len(batch))
        return real_extract(classifier, batch, *args, **kwargs)

    monkeypatch.setattr(evaluation.metrics, "extract_features", counting)
    again = evaluation.evaluate_samples(images, labels, data_dir=fake_data_dir,
                                        classifier=tiny_classifier, progress=False)
    assert extracted == [60], "the reference and floor features were not read from the cache"
    assert again["fd"] == result["fd"] and again["fd_floor"] == result["fd_floor"]
    assert sorted(p.name for p in private_cache.rglob("fd-*")) == cached
    table = evaluation.format_table(result)
    assert "FD (fmnist-classifier features)" in table and "N=60" in table


def test_evaluate_samples_of_the_reference_images_scores_zero(fake_data_dir, tiny_classifier):
    test_images = load_data(DataConfig(data_dir=str(fake_data_dir), download=False), "test", progress=False).images
    result = evaluation.evaluate_samples(test_images, data_dir=fake_data_dir, classifier=tiny_classifier,
                                         num_floor=100, progress=False)
    assert abs(result["fd"]) < 1e-6  # the samples are the reference set itself
    assert result["precision"] == 1.0 and result["recall"] == 1.0
    assert result["fd_floor_num"] == 100 and "class_accuracy" not in result


def test_evaluate_samples_rejects_bad_labels(fake_data_dir, tiny_classifier):
    images, _ = fake_images(20, seed=6)
    with pytest.raises(UserError, match="one per image"):
        evaluation.evaluate_samples(images, np.arange(3), data_dir=fake_data_dir, classifier=tiny_classifier)
    with pytest.raises(UserError, match="0-9"):
        evaluation.evaluate_samples(images, np.full(20, 10), data_dir=fake_data_dir, classifier=tiny_classifier)


def test_inception_fid_without_the_package_is_a_user_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_torch_fidelity(name, *args, **kwargs):
        if name == "torch_fidelity":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch_fidelity)
    with pytest.raises(UserError, match="torch-fidelity"):
        evaluation.inception_fid(np.zeros((4, 1, 28, 28), np.uint8), np.zeros((4, 1, 28, 28), np.uint8))
