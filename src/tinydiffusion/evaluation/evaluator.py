"""The Evaluator: what scoring samples of one dataset needs, made ready before sampling, and the scores."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

import torch

from ..config import DataConfig
from ..data import ImageDataset, dataset_folder, load_data
from ..data import named_dataset as named_dataset_of
from ..errors import UserError
from ..words import count
from . import metrics, reference
from .classifier import Recipe, cached_classifier, config_for, load_classifier, predict_classes, weights_checksum
from .metrics import INCEPTION_METRIC, inception_fid
from .samples import as_image_batch, check_labels


class Evaluator:
    """Everything needed to score samples of one dataset, made ready (and checked) before any sample is drawn:
    the data, the feature classifier (trained and cached on first use), the reference statistics."""

    def __init__(self, data: DataConfig | None = None, *, classifier=None, recipe: Recipe = Recipe(),
                 k: int = 3, inception: bool = False, progress: bool = True,
                 sample_shape: tuple[int, int, int] | None = None, model_classes: tuple[str, ...] = ()):
        """`classifier` replaces the dataset's own; `inception` also computes Inception FID (labelled data).
        `sample_shape` (C, H, W) and `model_classes` (a model's class names) are checked against the data
        first, before a classifier is trained."""
        self.data = data or DataConfig(download=False)
        self.recipe, self.k, self.progress, self.inception = recipe, k, progress, inception
        self.name = reference.data_name(self.data)
        self.notes: list[str] = []
        self.classifier, self.classifier_text = None, ""
        self.reference_images = self.pool = None
        if self._use_shipped_statistics(classifier):
            self.check_samples(sample_shape, model_classes)
            return
        train = load_data(self.data, "train", progress)
        test = load_data(self.data, "test", progress)
        self.image_shape = tuple(train.images.shape[1:])
        self.class_names = tuple(train.class_names) if train.labels is not None else ()
        self.check_samples(sample_shape, model_classes)
        reference_set, pool, held_out = self._reference_and_pool(train, test)
        self.reference_images, self.pool = reference_set.images, pool.images
        self.cache_folder = reference.artefact_folder(self.data, "train", train)
        unlabelled = classifier is None and not self.class_names  # Inception FID is the only score there
        reason = metrics.inception_unavailable() if unlabelled or self.inception else None
        if reason is not None and unlabelled:
            raise UserError(f"{self.name} is unlabelled, so no classifier can be trained on it for FD in its own "
                            f"features, and Inception FID cannot be computed here: {reason}.")
        if reason is not None:
            raise UserError(f"Inception FID cannot be computed here: {reason}.")
        if unlabelled:
            self.inception, self.reference = True, None
            return
        named = reference.with_reference(self.data)
        if classifier is not None:
            self.classifier = classifier
        elif named is not None and self.image_shape == named.image_shape and self.class_names == named.class_names:
            self.classifier = load_classifier(named.reference.classifier_path)
            self.classifier_text = f"the bundled {named.title} classifier"
        else:
            self.classifier = self._domain_classifier(pool, reference.with_class_names(reference_set, self.class_names),
                                                      held_out)
        split = "test" if test is not None else "train"  # a held-out 10% is cached with the train split
        folder = reference.artefact_folder(self.data, split, reference_set)
        self.reference = metrics.reference_statistics(reference_set.images, self.classifier, folder, progress)

    # --- setting up -------------------------------------------------------------------------

    def _use_shipped_statistics(self, classifier) -> bool:
        """A named dataset with a reference shipped for it, when its files are not on disk: the shipped statistics."""
        named = reference.with_reference(self.data)
        if (named is None or self.data.image_size not in (0, named.image_size)
                or self.data.channels not in (0, named.channels) or reference.named_files_present(self.data)):
            return False
        classifier = classifier if classifier is not None else load_classifier(named.reference.classifier_path)
        shipped = metrics.shipped_statistics(classifier, named.reference.statistics_path)
        if shipped is None:
            return False
        if self.inception:
            raise UserError(f"Inception FID needs the real images, and {named.title} is not in "
                            f"{dataset_folder(self.data)}; point --data-dir at its files.")
        self.image_shape, self.class_names = named.image_shape, named.class_names
        self.classifier, self.classifier_text = classifier, f"the bundled {named.title} classifier"
        self.reference = shipped
        self.reference_text = f"the {named.name} test split ({shipped['facts']['test_images']:,} images)"
        self.notes.append(f"shipped statistics: {named.title}'s files are not in {dataset_folder(self.data)}")
        if self.data.prepared_sha256 and self.data.prepared_sha256 != shipped["facts"]["train_sha256"]:
            self.notes.append(f"the run was trained on other {named.title} files than the shipped statistics come "
                              "from (checksums differ), so compare its scores with care")
        return True

    def _reference_and_pool(self, train: ImageDataset, test: ImageDataset | None):
        """(the reference images, the train images the floor draws from, a name for the reference): the test
        split and the whole train split, or without a test split a fixed seeded 10% of the train split and the rest."""
        if test is None:
            reference_set, pool = reference.hold_out(train)
            self.notes.append(reference.NO_TEST_SPLIT)
            self.reference_text = f"{len(reference_set):,} held-out images of the {self.name} train split"
            return reference_set, pool, "the held-out 10% of the train split"
        where = reference.short_path(test.manifest.get("source", "test"))
        if train.labels is not None and test.labels is None:
            raise UserError(f"the train split of {self.name} has classes but its held-out split {where} has none; "
                            "give it the same classes.")
        if named_dataset_of(self.data):
            self.reference_text = f"the {self.name} test split ({count(len(test), 'image')})"
            return test, train, f"the {self.name} test split"
        self.reference_text = f"{where}, the held-out split beside {self.name} ({count(len(test), 'image')})"
        return test, train, where

    def _domain_classifier(self, train: ImageDataset, held_out: ImageDataset, held_out_text: str):
        """The classifier trained on this train split with this recipe, from the cache or trained now."""
        config = config_for(self.image_shape, len(self.class_names))
        recipe_key = hashlib.sha256(json.dumps([dataclasses.asdict(config), dataclasses.asdict(self.recipe),
                                                reference.HOLDOUT_SEED]).encode()).hexdigest()[:12]
        path = self.cache_folder / f"classifier-{recipe_key}.safetensors"
        classifier = cached_classifier(path, train, held_out, self.recipe, config, self.progress,
                                       data=self.name, held_out_split=held_out_text)
        self.classifier_text = (f"a classifier trained on {classifier.info['train_images']:,} images of {self.name}, "
                                f"held-out accuracy {classifier.info['test_accuracy']:.3f} on {held_out_text}")
        note = usefulness(classifier.info["test_accuracy"], len(self.class_names), self.name, held_out_text)
        if note:
            self.notes.append(note)
        return classifier

    @property
    def metric(self) -> str:
        return INCEPTION_METRIC if self.classifier is None else reference.metric_name(self.data, self.image_shape)

    # --- checks before sampling ------------------------------------------------------------

    def check_samples(self, image_shape: tuple[int, int, int] | None, class_names: tuple[str, ...] = ()) -> None:
        """Samples can be scored here: the same image shape (C, H, W), and a model's classes are the data's."""
        if image_shape is not None and tuple(image_shape) != tuple(self.image_shape):
            c, h, _ = image_shape
            # data is resized down, never up (data/images.py skips smaller images), so only smaller samples fit it
            resized = (f", or read the data at their shape with --data.image_size {h} --data.channels {c}"
                       if h <= self.image_shape[1] else "")
            raise UserError(f"the samples are {'x'.join(map(str, image_shape))} images but {self.name} holds "
                            f"{'x'.join(map(str, self.image_shape))} images; score them against the data the model "
                            f"was trained on{resized}.")
        if class_names and self.class_names and tuple(class_names) != tuple(self.class_names):
            raise UserError(f"the model's classes ({', '.join(class_names[:5])}, ...) are not those of {self.name} "
                            f"({', '.join(self.class_names[:5])}, ...); score it against the data it was trained on.")

    # --- scoring ----------------------------------------------------------------------------

    def floor(self, num: int) -> dict:
        """The scores of `num` real images (a fixed seeded subset of the train split): a perfect model's at this N."""
        if self.pool is None:  # shipped: the floor's first images' features, a prefix of one fixed permutation
            features = self.reference["floor_features"][:num]
            return metrics.feature_scores(features, self.reference, self.k)
        return metrics.real_floor(self.pool, self.classifier, num, self.reference, self.cache_folder, self.k,
                                  self.progress)

    def score(self, images_uint8, labels=None, num_floor: int | None = None) -> dict:
        """Score generated uint8 images (optionally with the class each was asked for). `num_floor` (default: the
        number of samples) is the N of the real-image floor; compare FDs only at equal N."""
        start = time.time()
        images = as_image_batch(images_uint8, self.image_shape)
        labels = check_labels(labels, len(images), self.class_names, self.name) if self.class_names else None
        num_floor = num_floor or len(images)
        if self.classifier is None:
            result = self._score_inception(images, num_floor)
        else:
            result = self._score_features(images, labels, num_floor)
        result.update(data=self.name, reference=self.reference_text, notes=list(self.notes),
                      classifier=self.classifier_text, seconds=round(time.time() - start, 2))
        return result

    def _score_features(self, images: torch.Tensor, labels, num_floor: int) -> dict:
        features = metrics.extract_features(self.classifier, images, progress=self.progress)
        scores, floor = metrics.feature_scores(features, self.reference, self.k), self.floor(num_floor)
        result = {
            "metric": self.metric, "num": len(images), "fd": scores["fd"],
            "fd_floor": floor["fd"], "fd_floor_num": floor["num"],
            "precision": scores["precision"], "recall": scores["recall"], "k": self.k,
            "precision_floor": floor["precision"], "recall_floor": floor["recall"],
            "classifier_sha256": weights_checksum(self.classifier),
        }
        if labels is not None:
            predicted = predict_classes(self.classifier, features)
            result.update(metrics.class_agreement(predicted, labels, len(self.class_names)),
                          class_names=list(self.class_names))
        if self.inception:
            result["inception_fid"] = inception_fid(images, self.reference_images)
        return result

    def _score_inception(self, images: torch.Tensor, num_floor: int) -> dict:
        """Unlabelled data: Inception FID of the samples and of N real images, against the same reference."""
        floor_images = self.pool[metrics.floor_indices(len(self.pool), num_floor).sort().values]
        return {"metric": INCEPTION_METRIC, "num": len(images),
                "fd": inception_fid(images, self.reference_images),
                "fd_floor": inception_fid(floor_images, self.reference_images), "fd_floor_num": len(floor_images)}


def evaluate_samples(images_uint8, labels=None, data_dir: str | Path = "", classifier=None,
                     num_floor: int | None = None, progress: bool = True, k: int = 3,
                     data: DataConfig | None = None) -> dict:
    """Score samples against `data` (default: the default data source in `data_dir`, or the cache); see Evaluator."""
    data = data or DataConfig(data_dir=str(data_dir or ""), download=False)
    return Evaluator(data, classifier=classifier, k=k, progress=progress).score(images_uint8, labels, num_floor)


def usefulness(accuracy: float, classes: int, name: str, held_out_text: str) -> str | None:
    """A classifier right on fewer held-out images than half what guessing gets has learned classes the held-out
    split does not share, and its features say nothing about samples: refused. One closer to chance than to perfect
    is used, with a warning for the table (returned)."""
    chance = 1 / classes
    if accuracy < chance / 2:
        raise UserError(f"the feature classifier trained on {name} is right on {accuracy:.0%} of {held_out_text}, "
                        f"worse than chance ({chance:.0%} for {count(classes, 'class')}), so FD, precision and "
                        "recall in its features would mean nothing; check that the held-out split's classes are the "
                        "train split's.")
    if accuracy < (1 + chance) / 2:
        return (f"warning: the feature classifier is right on only {accuracy:.0%} of {held_out_text} "
                f"(chance: {chance:.0%}), so these scores say little")
    return None

