"""The feature classifier of the FD metric: train one on any labelled images, save it, load it.

A named dataset that carries a reference (data/named.py; Fashion-MNIST's is `assets/fmnist-classifier.safetensors`)
uses the bundled classifier, so its scores stay comparable with docs/. Any other labelled dataset gets a classifier
of its own, trained once on its train split with the same recipe and kept beside the prepared data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save as save_safetensors

from ..checkpoint import load_into, load_weights, plain_state_dict
from ..data.named import BUNDLED_DATASET
from ..data.pixels import to_model_space
from ..errors import UserError
from ..files import atomic_write_bytes
from ..nets.classifier import ClassifierConfig, FeatureClassifier
from ..words import count
from .samples import as_image_batch

BUNDLED_CLASSIFIER = BUNDLED_DATASET.reference.classifier_path
EPOCHS = 6  # where test accuracy levelled off (docs/explanation/defaults.md)
MIN_TRAIN_IMAGES = 10


# --- the design and the recipe ---------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Recipe:
    """How a classifier is trained; part of a cached classifier's name, so a new recipe trains anew."""

    epochs: int = EPOCHS
    seed: int = 0
    batch_size: int = 128
    lr: float = 3e-3
    min_steps: int = 100  # a small dataset gets more epochs: 6 epochs of 1,000 images would be 46 steps

    def epochs_for(self, num_images: int) -> int:
        steps_per_epoch = max(1, num_images // min(self.batch_size, num_images))
        return max(self.epochs, math.ceil(self.min_steps / steps_per_epoch))


def config_for(image_shape: tuple[int, int, int], num_classes: int) -> ClassifierConfig:
    """The bundled classifier's design for images of any shape: as many of its three 2x-pooling stages
    as the size allows (a 4x4 image takes two), then global average pooling, so any size works."""
    channels, size, _ = image_shape
    stages = max(1, min(3, int(math.log2(size))))
    return ClassifierConfig(image_size=size, in_channels=channels, num_classes=num_classes,
                            channels=(16, 32, 64)[:stages])


# --- features ------------------------------------------------------------------------------

@torch.no_grad()
def extract_features(classifier: FeatureClassifier, images_uint8, batch_size: int = 1000,
                     progress: bool = False) -> np.ndarray:
    """Penultimate classifier features, float64 [N, feature_dim]. Always in eval mode: in train mode BatchNorm would
    normalise with each batch's own statistics (so a sample's features would depend on its batch mates) and update
    its running statistics."""
    config = classifier.config
    images = as_image_batch(images_uint8, (config.in_channels, config.image_size, config.image_size))
    device = next(classifier.parameters()).device
    was_training = classifier.training
    classifier.eval()
    try:
        batches = range(0, len(images), batch_size)
        if progress:
            from tqdm import tqdm

            batches = tqdm(batches, desc="features", unit="batch", leave=False)
        features = [classifier.features(to_model_space(images[i:i + batch_size].to(device))).cpu()
                    for i in batches]
    finally:
        classifier.train(was_training)
    return torch.cat(features).double().numpy()


@torch.no_grad()
def predict_classes(classifier: FeatureClassifier, features: np.ndarray) -> np.ndarray:
    """Class predicted from already extracted features: the head alone, without the dropout before it, so in any
    mode as in eval mode."""
    logits = classifier.head(torch.from_numpy(features).to(classifier.head.weight))
    return logits.argmax(dim=1).cpu().numpy()


def classifier_accuracy(classifier: FeatureClassifier, images_uint8, labels) -> float:
    predicted = predict_classes(classifier, extract_features(classifier, images_uint8))
    return float((predicted == np.asarray(labels)).mean())


# --- training ------------------------------------------------------------------------------

def fit_classifier(images: torch.Tensor, labels: torch.Tensor, config: ClassifierConfig,
                   recipe: Recipe = Recipe(), progress: bool = True) -> tuple[FeatureClassifier, dict]:
    """Train a classifier on uint8 images [N, C, H, W] and labels [N]; return it in eval mode, with facts.

    AdamW with a one-cycle learning rate (Smith & Topin 2019); everything random comes from the seed,
    drawn from a forked RNG, so a caller's random state (a training run's) is left as it was.
    No augmentation: it lowered test accuracy at this budget (docs/explanation/defaults.md), and shift-invariant
    features would make the FD blind to badly placed samples.
    The same seed, torch build and thread count give the same weights.
    """
    if len(images) < MIN_TRAIN_IMAGES:
        raise UserError(f"a feature classifier needs at least {MIN_TRAIN_IMAGES} labelled images to train on, "
                        f"not {len(images)}.")
    batch_size, epochs = min(recipe.batch_size, len(images)), recipe.epochs_for(len(images))
    steps_per_epoch = len(images) // batch_size
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        generator = torch.Generator().manual_seed(recipe.seed)
        model = FeatureClassifier(config)
        optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=5e-4)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr,
                                                        total_steps=epochs * steps_per_epoch)
        start, cpu_start = time.time(), time.process_time()
        for epoch in range(epochs):
            order, total_loss = torch.randperm(len(images), generator=generator), 0.0
            for step in range(steps_per_epoch):  # shuffled batches drawn by index; the last partial one dropped
                index = order[step * batch_size:(step + 1) * batch_size]
                loss = F.cross_entropy(model(to_model_space(images[index])), labels[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                total_loss += loss.item()
            if progress and (epoch + 1) % max(1, epochs // 10) == 0:
                print(f"classifier epoch {epoch + 1}/{epochs}: loss {total_loss / steps_per_epoch:.4f} "
                      f"({time.time() - start:.0f} s)", file=sys.stderr)
    info = {"config": dataclasses.asdict(config), **dataclasses.asdict(recipe), "batch_size": batch_size,
            "epochs": epochs, "train_images": len(images), "train_seconds": round(time.time() - start, 1),
            "train_cpu_seconds": round(time.process_time() - cpu_start, 1),
            "torch_threads": torch.get_num_threads(), "torch_version": torch.__version__}
    return model.eval(), info


# --- files -------------------------------------------------------------------------------

def dataset_checksum(*datasets) -> str:
    """sha256 of the images and labels of ImageDatasets, in order."""
    digest = hashlib.sha256()
    for dataset in datasets:
        digest.update(dataset.images.numpy().tobytes())
        digest.update(dataset.labels.numpy().tobytes())
    return digest.hexdigest()


def weights_checksum(model: torch.nn.Module) -> str:
    """sha256 of every tensor of the state dict (running BatchNorm statistics included), in key order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def save_classifier(model: FeatureClassifier, path: str | Path, info: dict) -> dict:
    """Weights as safetensors at `path`, config and provenance as JSON beside it, both atomically; the JSON's facts."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"format": "tinydiffusion-classifier", "version": 1, **info, "weights_sha256": weights_checksum(model)}
    atomic_write_bytes(path, save_safetensors(plain_state_dict(model)))
    atomic_write_bytes(path.with_suffix(".json"), (json.dumps(info, indent=2) + "\n").encode())
    return info


def load_classifier(path: str | Path | None = None) -> FeatureClassifier:
    """Rebuild a classifier from its safetensors + JSON (default: the bundled one), in eval mode.
    Its JSON is at `.info` (held-out accuracy, what it was trained on)."""
    path = Path(path) if path is not None else BUNDLED_CLASSIFIER
    info_path = path.with_suffix(".json")
    for needed in (path, info_path):
        if not needed.is_file():
            missing = "is not a regular file" if needed.exists() else "does not exist"
            raise UserError(f"classifier file {needed} {missing}; train one with "
                            "`python tools/train_classifier.py train-classifier` (in the source repository).")
    try:
        info = json.loads(info_path.read_text())
        config = ClassifierConfig(**{**info["config"], "channels": tuple(info["config"]["channels"])})
        model = FeatureClassifier(config)
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path} is not a classifier this version can load ({err}).") from None
    load_into(model, load_weights(path), path)  # a damaged or mismatched file is one sentence from these
    if weights_checksum(model) != info.get("weights_sha256"):
        raise UserError(f"{path} does not match the checksum in {info_path.name}; the files are damaged.")
    model.info = info
    return model.eval()


# --- a classifier for a dataset, trained once ----------------------------------------------

def train_classifier(train, held_out, out_path: str | Path, config: ClassifierConfig | None = None,
                     recipe: Recipe = Recipe(), progress: bool = True, **provenance) -> dict:
    """Train on the ImageDataset `train`, measure accuracy on `held_out`, save weights + JSON at `out_path`;
    `provenance` (what the data is, how it was split) is recorded in the JSON."""
    config = config or config_for(tuple(train.images.shape[1:]), len(train.class_names))
    model, info = fit_classifier(train.images, train.labels, config, recipe, progress)
    info.update(provenance, test_accuracy=classifier_accuracy(model, held_out.images, held_out.labels),
                held_out_images=len(held_out), class_names=list(train.class_names),
                data_sha256=dataset_checksum(train, held_out))
    return save_classifier(model, out_path, info)


def cached_classifier(path: Path, train, held_out, recipe: Recipe = Recipe(), config: ClassifierConfig | None = None,
                      progress: bool = True, **provenance) -> FeatureClassifier:
    """The classifier at `path` if it was trained on exactly these images with this recipe; else train it now,
    save it there and say its held-out accuracy (once: later calls load it)."""
    try:
        classifier = load_classifier(path)
        if classifier.info.get("data_sha256") == dataset_checksum(train, held_out):
            return classifier
    except UserError:
        pass  # missing or damaged: train it again
    if progress:
        print(f"training a feature classifier on {len(train):,} images of {provenance.get('data', 'the data')} "
              f"(once; it is kept at {path})", file=sys.stderr)
    info = train_classifier(train, held_out, path, config, recipe, progress, **provenance)
    print(f"classifier held-out accuracy {info['test_accuracy']:.4f} on {count(len(held_out), 'image')} of "
          f"{provenance.get('held_out_split', 'the held-out split')}; saved {path}")
    return load_classifier(path)
