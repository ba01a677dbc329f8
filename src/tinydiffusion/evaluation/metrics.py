"""The numbers: the Fréchet distance, precision and recall on classifier features, the reference statistics
and real-data floors they are measured against (cached beside the data), Fashion-MNIST's shipped
statistics, and Inception FID through torch-fidelity for data without classes.
"""

from __future__ import annotations

import hashlib
import io
import json
import socket
import warnings
import zipfile
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import scipy.linalg
import torch

from ..data.named import BUNDLED_DATASET
from ..errors import UserError
from ..files import atomic_write_bytes
from ..nets.classifier import FeatureClassifier
from .classifier import extract_features, weights_checksum

FLOOR_SEED = 0  # which real images make the floor; fixed so floors are comparable across runs
SHIPPED_STATISTICS = BUNDLED_DATASET.reference.statistics_path


# --- scores on features --------------------------------------------------------------------

def class_agreement(predicted: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    """How often the classifier sees the requested class, overall and per class (None: no samples)."""
    per_class = [float((predicted[labels == c] == c).mean()) if (labels == c).any() else None
                 for c in range(num_classes)]
    return {"class_accuracy": float((predicted == labels).mean()), "per_class_accuracy": per_class,
            "class_counts": np.bincount(labels, minlength=num_classes).tolist()}


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of features [N, D] -> ([D], [D, D])."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise UserError(f"need at least 2 feature vectors for a covariance, got shape {features.shape}.")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) (Dowson & Landau 1982; Heusel et al. 2017, eq. 6).

    As in the reference FID code, a singular product (dead features have zero variance) is made
    regular by adding eps to both diagonals, and a numerically small imaginary part of the square
    root is dropped. Unlike it, the traces then use the same offset covariances, so FD(x, x) is 0.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"mismatched statistics: {mu1.shape}, {sigma1.shape}, {mu2.shape}, {sigma2.shape}")
    covmean = _sqrtm_or_none(sigma1 @ sigma2)
    if covmean is None:
        sigma1, sigma2 = sigma1 + eps * np.eye(len(mu1)), sigma2 + eps * np.eye(len(mu1))
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary part {np.abs(covmean.imag).max():.3g} in the covariance square root")
        covmean = covmean.real
    diff = mu1 - mu2
    distance = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)
    return max(float(distance), 0.0)  # rounding leaves about -1e-12 for identical statistics


def _sqrtm_or_none(matrix: np.ndarray) -> np.ndarray | None:
    """scipy's matrix square root, or None where scipy finds the matrix singular or the result not finite."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", scipy.linalg.LinAlgWarning)
        try:
            root = scipy.linalg.sqrtm(matrix)
        except scipy.linalg.LinAlgWarning:
            return None
    return root if np.isfinite(root).all() else None


def _knn_radii(points: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Distance from each point to its k-th nearest other point (the point itself, at 0, is the 1st)."""
    return torch.cat([torch.cdist(points[i:i + chunk], points).topk(k + 1, dim=1, largest=False).values[:, k]
                      for i in range(0, len(points), chunk)])


def precision_recall(real_features, fake_features, k: int = 3, chunk: int = 1000) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019, sec. 2).

    Each set's manifold is the union of balls around its points reaching their k-th nearest
    neighbour; precision is the fraction of fake samples inside the real manifold, recall the
    fraction of real samples inside the fake one. Distances are computed `chunk` rows at a time,
    so 10,000 x 10,000 needs about 80 MB.
    """
    real = torch.as_tensor(np.asarray(real_features, dtype=np.float64))
    fake = torch.as_tensor(np.asarray(fake_features, dtype=np.float64))
    if min(len(real), len(fake)) <= k:
        raise UserError(f"precision and recall with k={k} need more than {k} samples in each set.")
    real_radii, fake_radii = _knn_radii(real, k, chunk), _knn_radii(fake, k, chunk)
    fake_inside = torch.zeros(len(fake), dtype=torch.bool)
    real_inside = torch.zeros(len(real), dtype=torch.bool)
    for i in range(0, len(fake), chunk):
        distances = torch.cdist(fake[i:i + chunk], real)  # one block serves both directions
        fake_inside[i:i + chunk] = (distances <= real_radii[None, :]).any(dim=1)
        real_inside |= (distances <= fake_radii[i:i + chunk, None]).any(dim=0)
    return fake_inside.double().mean().item(), real_inside.double().mean().item()


def equal_size_subsets(real: np.ndarray, fake: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random subsets of the larger set, so both have the same size: k-NN radii depend on N."""
    num = min(len(real), len(fake))
    rng = np.random.default_rng(seed)

    def pick(x: np.ndarray) -> np.ndarray:
        return x if len(x) == num else x[np.sort(rng.choice(len(x), num, replace=False))]

    return pick(real), pick(fake)


# --- reference statistics and floors, cached beside the data they come from -----------------

def _cache_key(*parts) -> str:
    """sha256 of the parts: bytes as they are, a tensor (images) by its own sha256, anything else as text."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            part = hashlib.sha256(part.contiguous().numpy().tobytes()).digest()
        digest.update(part if isinstance(part, bytes) else str(part).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def _write_cache(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, payload)


def reference_statistics(images: torch.Tensor, classifier: FeatureClassifier, cache_folder: Path,
                         progress: bool = False) -> dict:
    """Features, mean and covariance of the reference images, cached in `cache_folder` by images and weights."""
    key = _cache_key("fd-reference-v2", images, weights_checksum(classifier))
    path = Path(cache_folder) / f"fd-reference-{key[:24]}.npz"
    try:
        with np.load(path, allow_pickle=False) as cached:
            if str(cached["key"]) == key:
                features = cached["features"].astype(np.float64)
                return {"features": features, "mu": cached["mu"], "sigma": cached["sigma"], "key": key}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass  # missing or damaged: compute it again
    features = extract_features(classifier, images, progress=progress)
    mu, sigma = feature_statistics(features)
    buffer = io.BytesIO()
    # float32 is lossless here: the network computes in float32
    np.savez(buffer, key=np.array(key), features=features.astype(np.float32), mu=mu, sigma=sigma)
    _write_cache(path, buffer.getvalue())
    return {"features": features, "mu": mu, "sigma": sigma, "key": key}


def floor_indices(pool_size: int, num: int) -> torch.Tensor:
    """Which real images make the floor at N = num: a prefix of one fixed permutation, so the floor
    images at a smaller N are among those at a larger one (and shipped features serve every N up to theirs)."""
    return torch.randperm(pool_size, generator=torch.Generator().manual_seed(FLOOR_SEED))[:num]


def feature_scores(features: np.ndarray, reference: dict, k: int = 3) -> dict:
    """FD, precision and recall of a set of features (samples' or real images') against the reference."""
    precision, recall = precision_recall(*equal_size_subsets(reference["features"], features), k=k)
    fd = frechet_distance(*feature_statistics(features), reference["mu"], reference["sigma"])
    return {"num": len(features), "fd": fd, "precision": precision, "recall": recall}


def real_floor(pool: torch.Tensor, classifier: FeatureClassifier, num: int, reference: dict, cache_folder: Path,
               k: int = 3, progress: bool = False) -> dict:
    """The scores of `num` real images of `pool` (a fixed seeded subset): what a perfect model gets at this N."""
    num = min(num, len(pool))
    images = pool[floor_indices(len(pool), num).sort().values]
    key = _cache_key("fd-floor-v2", images, reference["key"], num, k)
    path = Path(cache_folder) / f"fd-floor-{key[:24]}.json"
    try:
        cached = json.loads(path.read_text())
        if cached["key"] == key:
            return cached
    except (OSError, ValueError, KeyError, TypeError):
        pass
    floor = {"key": key, **feature_scores(extract_features(classifier, images, progress=progress), reference, k)}
    _write_cache(path, json.dumps(floor).encode())
    return floor


# --- a named dataset's statistics, shipped with the package (data/named.py's references) ---------
# (written by the maintainers' tools/train_classifier.py ship-statistics)

def shipped_statistics(classifier: FeatureClassifier, path: Path = SHIPPED_STATISTICS) -> dict | None:
    """The shipped reference for this classifier (mu, sigma, features, floor_features, facts), or None
    when there is none for its weights."""
    try:
        with np.load(path, allow_pickle=False) as shipped:
            facts = json.loads(str(shipped["facts"]))
            if facts["classifier_sha256"] != weights_checksum(classifier):
                return None
            return {"mu": shipped["mu"], "sigma": shipped["sigma"], "facts": facts,
                    "features": shipped["test_features"].astype(np.float64),
                    "floor_features": shipped["floor_features"].astype(np.float64),
                    "key": _cache_key("fd-shipped-v1", facts["test_sha256"], facts["classifier_sha256"])}
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile):
        return None


# --- Inception FID, where torch-fidelity and its weights can be had ----------------------------

INCEPTION_METRIC = "Inception FID (torch-fidelity)"


def inception_unavailable() -> str | None:
    """Why Inception FID cannot be computed here (a clause for a sentence), or None when it can.

    Checked before any sample is drawn. Missing weights are fetched once where the machine can (the
    download torch-fidelity would make itself); without internet that fails at once, and we say so.
    """
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        return ("it needs the torch-fidelity package, which is not installed "
                "(pip install 'tinydiffusion[inception]' on a machine that can download its Inception weights once)")
    try:  # its weights' URL; a version of torch-fidelity that does not say is left to fetch them itself
        from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3 as url
    except (ImportError, AttributeError):
        return None
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name  # as torch.hub names it
    if path.is_file():
        return None
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)  # a machine without internet says so in seconds, not minutes
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), progress=True)
        return None
    except Exception as err:  # noqa: BLE001 - any failure to download means the same to the user
        return (f"torch-fidelity's Inception weights are not at {path} and downloading them failed ({err}); "
                "copy that file there from a machine with internet")
    finally:
        socket.setdefaulttimeout(previous_timeout)


def inception_fid(images_uint8, reference_uint8) -> float:
    """Standard Inception FID via torch-fidelity between two uint8 [N, C, H, W] image sets
    (grey replicated to RGB; torch-fidelity resizes to 299x299 as the TensorFlow original does)."""
    reason = inception_unavailable()
    if reason is not None:
        raise UserError(f"Inception FID cannot be computed here: {reason}.")
    import torch_fidelity

    def rgb(images) -> torch.Tensor:
        images = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
        return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images

    try:
        scores = torch_fidelity.calculate_metrics(input1=_TensorImages(rgb(images_uint8)),
                                                  input2=_TensorImages(rgb(reference_uint8)), fid=True,
                                                  cuda=torch.cuda.is_available(), verbose=False)
    except (OSError, RuntimeError, ValueError) as err:
        raise UserError(f"torch-fidelity could not compute Inception FID ({err}).") from None
    return float(scores["frechet_inception_distance"])


class _TensorImages(torch.utils.data.Dataset):
    """uint8 [3, H, W] images one at a time, the input torch-fidelity takes."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index].contiguous()
