"""Sample quality for any dataset the project reads: FD in the features of a classifier of that domain.

Inception FID (Heusel et al. 2017) compares 2048-d features of an ImageNet network on images
upscaled 10x; on 28x28 grey clothes or digits those features say little. Here the same Fréchet
distance is computed in the penultimate features of a small CNN trained on the dataset itself: the
bundled one for Fashion-MNIST ("FD (fmnist-classifier features)"), for any other labelled dataset
one trained once on its train split ("FD (mnist-10k/train classifier features)"). The reference is
the held-out split, or a fixed 10% of the train split where there is none. FD is biased upwards at
small N, so every score carries its floor: N real train images against the same reference.
Precision and recall (Kynkäänniemi et al. 2019) say whether a bad FD is bad fidelity or bad coverage,
and with labels the classifier checks that each sample looks like its class. Unlabelled data has no
classes to train a classifier on: it gets Inception FID through torch-fidelity where that can run.

    evaluator = Evaluator(DataConfig(source="path/to/train"))  # data, classifier, reference: before sampling
    result = evaluator.score(images, labels)                   # uint8 N x H x W x C (or N x C x H x W)
    print(format_table(result))

classifier.py  the feature classifier: design, training, features, files
metrics.py     FD, precision/recall, reference statistics and floors (cached), shipped statistics, Inception FID
samples.py     sample .npz files and the checks on images and labels
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

import torch

from ..config import DataConfig
from ..data import ImageDataset, dataset_folder, load_data, prepared_path
from ..data import named_dataset as named_dataset_of
from ..data.named import FASHION_MNIST
from ..errors import UserError
from ..files import cache_dir
from ..words import count
from . import metrics
from .classifier import (
    BUNDLED_CLASSIFIER,
    EPOCHS,
    Recipe,
    cached_classifier,
    classifier_accuracy,
    config_for,
    dataset_checksum,
    extract_features,
    fit_classifier,
    load_classifier,
    predict_classes,
    save_classifier,
    train_classifier,
    weights_checksum,
)
from .metrics import (
    FLOOR_SEED,
    INCEPTION_METRIC,
    SHIPPED_STATISTICS,
    equal_size_subsets,
    feature_statistics,
    frechet_distance,
    inception_fid,
    inception_unavailable,
    precision_recall,
    real_floor,
    reference_statistics,
)
from .samples import as_image_batch, check_labels, load_samples_npz, save_npz

__all__ = [
    "BUNDLED_CLASSIFIER", "EPOCHS", "FLOOR_SEED", "INCEPTION_METRIC", "METRIC_NAME", "SHIPPED_STATISTICS",
    "Evaluator", "Recipe", "as_image_batch", "check_labels", "classifier_accuracy", "config_for", "dataset_checksum",
    "equal_size_subsets", "evaluate_samples", "extract_features", "feature_statistics", "fit_classifier",
    "format_table", "frechet_distance", "inception_fid", "inception_unavailable", "load_classifier",
    "load_samples_npz", "precision_recall", "predict_classes", "real_floor", "reference_statistics", "save_classifier",
    "save_npz", "train_classifier", "weights_checksum",
]

METRIC_NAME = "FD (fmnist-classifier features)"  # Fashion-MNIST's, in the bundled classifier: as in docs/
HOLDOUT_FRACTION = 0.1  # of the train split, held out where a source has no test split
HOLDOUT_SEED = 0
NO_TEST_SPLIT = "reference: 10% of the train split held out; no test split found"


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
        self.name = data_name(self.data)
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
        self.cache_folder = artefact_folder(self.data, "train", train)
        if classifier is None and not self.class_names:
            self._check_inception(unlabelled=True)
            self.reference = None
            return
        if classifier is not None:
            self.classifier = classifier
        elif self._fits_bundled():
            self.classifier = load_classifier()
            self.classifier_text = "the bundled Fashion-MNIST classifier"
        else:
            self.classifier = self._domain_classifier(pool, with_class_names(reference_set, self.class_names),
                                                      held_out)
        if self.inception:
            self._check_inception(unlabelled=False)
        split = "test" if test is not None else "train"  # a held-out 10% is cached with the train split
        self.reference = metrics.reference_statistics(reference_set.images, self.classifier,
                                                      artefact_folder(self.data, split, reference_set), progress)

    # --- setting up -------------------------------------------------------------------------

    def _use_shipped_statistics(self, classifier) -> bool:
        """Fashion-MNIST, when its files are not on disk: the statistics shipped with the package."""
        if not (is_fashion_mnist(self.data) and self.data.image_size in (0, 28) and self.data.channels in (0, 1)):
            return False
        if named_files_present(self.data):
            return False
        classifier = classifier if classifier is not None else load_classifier()
        shipped = metrics.shipped_statistics(classifier)
        if shipped is None:
            return False
        if self.inception:
            raise UserError("Inception FID needs the real images, and Fashion-MNIST is not in "
                            f"{dataset_folder(self.data)}; point --data-dir at its files.")
        self.image_shape, self.class_names = (1, 28, 28), FASHION_MNIST.class_names
        self.classifier, self.classifier_text = classifier, "the bundled Fashion-MNIST classifier"
        self.reference = shipped
        self.reference_text = f"the fashion-mnist test split ({shipped['facts']['test_images']:,} images)"
        self.notes.append(f"shipped statistics: Fashion-MNIST's files are not in {dataset_folder(self.data)}")
        if self.data.prepared_sha256 and self.data.prepared_sha256 != shipped["facts"]["train_sha256"]:
            self.notes.append("the run was trained on other Fashion-MNIST files than the shipped statistics come "
                              "from (checksums differ), so compare its scores with care")
        return True

    def _reference_and_pool(self, train: ImageDataset, test: ImageDataset | None):
        """(the reference images, the train images the floor draws from, a name for the reference): the test
        split and the whole train split, or without a test split a fixed seeded 10% of the train split and the rest."""
        if test is None:
            reference_set, pool = hold_out(train)
            self.notes.append(NO_TEST_SPLIT)
            self.reference_text = f"{len(reference_set):,} held-out images of the {self.name} train split"
            return reference_set, pool, "the held-out 10% of the train split"
        if train.labels is not None and test.labels is None:
            raise UserError(f"the train split of {self.name} has classes but its held-out split "
                            f"{short_path(test.manifest.get('source', 'test'))} has none; give it the same classes.")
        if named_dataset_of(self.data):
            self.reference_text = f"the {self.name} test split ({count(len(test), 'image')})"
            return test, train, f"the {self.name} test split"
        where = short_path(test.manifest.get("source", "test"))
        self.reference_text = f"{where}, the held-out split beside {self.name} ({count(len(test), 'image')})"
        return test, train, where

    def _fits_bundled(self) -> bool:
        return (is_fashion_mnist(self.data) and self.image_shape == (1, 28, 28)
                and self.class_names == FASHION_MNIST.class_names)

    def _domain_classifier(self, train: ImageDataset, held_out: ImageDataset, held_out_text: str):
        """The classifier trained on this train split with this recipe, from the cache or trained now."""
        config = config_for(self.image_shape, len(self.class_names))
        recipe_key = hashlib.sha256(json.dumps([dataclasses.asdict(config), dataclasses.asdict(self.recipe),
                                                HOLDOUT_SEED]).encode()).hexdigest()[:12]
        path = self.cache_folder / f"classifier-{recipe_key}.safetensors"
        classifier = cached_classifier(path, train, held_out, self.recipe, config, self.progress,
                                       data=self.name, held_out_split=held_out_text)
        self.classifier_text = (f"a classifier trained on {classifier.info['train_images']:,} images of {self.name}, "
                                f"held-out accuracy {classifier.info['test_accuracy']:.3f} on {held_out_text}")
        self._check_useful(classifier.info["test_accuracy"], held_out_text)
        return classifier

    def _check_useful(self, accuracy: float, held_out_text: str) -> None:
        """A classifier right on fewer held-out images than half what guessing gets has learned classes the
        held-out split does not share, and its features say nothing about samples: refused. One closer to chance
        than to perfect is used, with a warning in the table."""
        chance = 1 / len(self.class_names)
        if accuracy < chance / 2:
            raise UserError(f"the feature classifier trained on {self.name} is right on {accuracy:.0%} of "
                            f"{held_out_text}, worse than chance ({chance:.0%} for "
                            f"{count(len(self.class_names), 'class')}), so FD, precision and recall in its features "
                            "would mean nothing; check that the held-out split's classes are the train split's.")
        if accuracy < (1 + chance) / 2:
            self.notes.append(f"warning: the feature classifier is right on only {accuracy:.0%} of {held_out_text} "
                              f"(chance: {chance:.0%}), so these scores say little")

    def _check_inception(self, unlabelled: bool) -> None:
        reason = inception_unavailable()
        if reason is None:
            self.inception = True
            return
        if unlabelled:
            raise UserError(f"{self.name} is unlabelled, so no classifier can be trained on it for FD in its own "
                            f"features, and Inception FID cannot be computed here: {reason}.")
        raise UserError(f"Inception FID cannot be computed here: {reason}.")

    @property
    def metric(self) -> str:
        return INCEPTION_METRIC if self.classifier is None else metric_name(self.data, self.image_shape)

    # --- checks before sampling ------------------------------------------------------------

    def check_samples(self, image_shape: tuple[int, int, int] | None, class_names: tuple[str, ...] = ()) -> None:
        """Samples can be scored here: the same image shape (C, H, W), and a model's classes are the data's."""
        if image_shape is not None and tuple(image_shape) != tuple(self.image_shape):
            raise UserError(f"the samples are {'x'.join(map(str, image_shape))} images but {self.name} holds "
                            f"{'x'.join(map(str, self.image_shape))} images; score them against the data the model "
                            "was trained on.")
        if class_names and self.class_names and tuple(class_names) != tuple(self.class_names):
            raise UserError(f"the model's classes ({', '.join(class_names[:5])}, ...) are not those of {self.name} "
                            f"({', '.join(self.class_names[:5])}, ...); score it against the data it was trained on.")

    # --- scoring ----------------------------------------------------------------------------

    def floor(self, num: int) -> dict:
        """The scores of `num` real images (a fixed seeded subset of the train split): a perfect model's at this N."""
        if self.pool is None:  # shipped: the floor's first images' features, a prefix of one fixed permutation
            features = self.reference["floor_features"][:num]
            return metrics.floor_from_features(features, self.reference, self.k)
        return real_floor(self.pool, self.classifier, num, self.reference, self.cache_folder, self.k, self.progress)

    def score(self, images_uint8, labels=None, num_floor: int | None = None) -> dict:
        """Score generated uint8 images (optionally with the class each was asked for).

        `num_floor` (default: the number of samples) is the N of the real-image floor; compare FDs only
        at equal N. Precision/recall use equal-size seeded subsets of the two sets.
        """
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
        floor = self.floor(num_floor)
        precision, recall = precision_recall(*equal_size_subsets(self.reference["features"], features), k=self.k)
        result = {
            "metric": self.metric,
            "num": len(images),
            "fd": frechet_distance(*feature_statistics(features), self.reference["mu"], self.reference["sigma"]),
            "fd_floor": floor["fd"], "fd_floor_num": floor["num"],
            "precision": precision, "recall": recall, "k": self.k,
            "precision_floor": floor["precision"], "recall_floor": floor["recall"],
            "classifier_sha256": weights_checksum(self.classifier),
        }
        if labels is not None:
            was_training = self.classifier.training  # a caller's classifier is given back in its own mode
            predicted = predict_classes(self.classifier.eval(), features)
            self.classifier.train(was_training)
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
    """Score samples against `data` (default: Fashion-MNIST in `data_dir`, or the cache); see Evaluator."""
    data = data or DataConfig(source="fashion-mnist", data_dir=str(data_dir or ""), download=False)
    return Evaluator(data, classifier=classifier, k=k, progress=progress).score(images_uint8, labels, num_floor)


# --- naming and locating the data ----------------------------------------------------------

def is_fashion_mnist(data: DataConfig) -> bool:
    named = named_dataset_of(data)
    return named is not None and named.name == FASHION_MNIST.name


def data_name(data: DataConfig) -> str:
    """A short name for messages and metric names: the named dataset's, else the source's last two path parts."""
    named = named_dataset_of(data)
    if named is not None:
        return named.name
    return short_path(str(Path(data.source).expanduser()))


def short_path(source: str) -> str:
    path = Path(source)
    return "/".join(part for part in (path.parent.name, path.name) if part) or source


def metric_name(data: DataConfig, image_shape: tuple[int, ...]) -> str:
    """Which features an FD is in: Fashion-MNIST's bundled classifier's, or the one trained on this train split."""
    if is_fashion_mnist(data) and tuple(image_shape) == (1, 28, 28):
        return METRIC_NAME
    return f"FD ({data_name(data)}{'/train' if named_dataset_of(data) else ''} classifier features)"


def named_files_present(data: DataConfig) -> bool:
    """Whether every file of a named dataset is in its folder (gzipped or unpacked), without downloading."""
    named, folder = named_dataset_of(data), dataset_folder(data)
    return all((folder / name).exists() or (folder / Path(name).stem).exists() for name in named.files)


def artefact_folder(data: DataConfig, split: str, dataset: ImageDataset) -> Path:
    """Where per-dataset artefacts (classifier, statistics) go: beside the prepared split in the cache; for a
    user's own prepared file, a cache folder named by its checksum, so nothing is written beside the user's data."""
    folder = prepared_path(data, split, progress=False).parent
    prepared_root = (cache_dir() / "prepared").resolve()
    if folder.resolve().is_relative_to(prepared_root):
        return folder
    return cache_dir() / "evaluation" / dataset.manifest.get("sha256", "unknown")[:16]


def hold_out(train: ImageDataset) -> tuple[ImageDataset, ImageDataset]:
    """(a fixed seeded 10% of the train split, the rest), for a source without a test split."""
    num = len(train)
    num_held = max(2, round(HOLDOUT_FRACTION * num))
    if num - num_held < 2:
        raise UserError(f"{train.manifest.get('source', 'the data')} has {count(num, 'image')}, too few to hold "
                        "some out as a reference; add a test split beside it.")
    order = torch.randperm(num, generator=torch.Generator().manual_seed(HOLDOUT_SEED))
    held, rest = order[:num_held].sort().values, order[num_held:].sort().values

    def subset(index: torch.Tensor) -> ImageDataset:
        labels = None if train.labels is None else train.labels[index]
        return ImageDataset(train.images[index], labels, train.class_names, train.manifest)

    return subset(held), subset(rest)


def with_class_names(held_out: ImageDataset, class_names: tuple[str, ...]) -> ImageDataset:
    """The held-out split with its labels renumbered to the train split's classes, by name (a test folder
    that lacks a class numbers the others differently); images of classes the train split lacks are left out."""
    if tuple(held_out.class_names) == tuple(class_names):
        return held_out
    index = {name: i for i, name in enumerate(class_names)}
    mapping = torch.tensor([index.get(name, -1) for name in held_out.class_names], dtype=torch.int64)
    labels = mapping[held_out.labels]
    keep = labels >= 0
    return ImageDataset(held_out.images[keep], labels[keep], class_names, held_out.manifest)


# --- the table -------------------------------------------------------------------------------

def format_table(result: dict) -> str:
    """A plain-text table of a score; the metric's name, N and the reference are always in it."""
    num = result["num"]
    rows = [(f"{result['metric']}, N={num:,}", f"{result['fd']:.3f}"),
            (f"  floor: N={result['fd_floor_num']:,} real train images", f"{result['fd_floor']:.3f}")]
    if "precision" in result:
        rows += [
            (f"precision (k={result['k']}), N={num:,}", f"{result['precision']:.3f}"),
            ("  floor: real train images", f"{result['precision_floor']:.3f}"),
            (f"recall (k={result['k']}), N={num:,}", f"{result['recall']:.3f}"),
            ("  floor: real train images", f"{result['recall_floor']:.3f}"),
        ]
    if "class_accuracy" in result:
        names = result.get("class_names") or [str(c) for c in range(len(result["per_class_accuracy"]))]
        rows.append((f"class accuracy, N={num:,}", f"{result['class_accuracy']:.3f}"))
        rows += [(f"  {name}", "-" if value is None else f"{value:.3f}")
                 for name, value in zip(names, result["per_class_accuracy"], strict=True)]
    if "inception_fid" in result:
        rows.append((f"{INCEPTION_METRIC}, N={num:,}", f"{result['inception_fid']:.3f}"))
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value:>8}" for name, value in rows]
    lines.append(f"vs {result['reference']}; FD depends on N, so compare only at equal N.")
    lines += result.get("notes", [])
    if result.get("classifier"):
        lines.append(f"features: {result['classifier']}")
    return "\n".join(lines)


# --- command line: training the classifier and the shipped statistics ------------------------

def load_fashion_mnist(data_dir: str | Path, split: str) -> ImageDataset:
    """A split of Fashion-MNIST from `data_dir` (or the cache), never downloading."""
    return load_data(DataConfig(source="fashion-mnist", data_dir=str(data_dir or ""), download=False), split,
                     progress=False)


def _at_least_one(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def main(argv: list[str] | None = None, parser_class=argparse.ArgumentParser) -> int:
    """`parser_class`: the command line passes its own, whose errors are one sentence."""
    parser = parser_class(prog="python -m tinydiffusion.evaluation")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=parser_class)
    train = commands.add_parser("train-classifier", help="train the bundled Fashion-MNIST FD classifier")
    train.add_argument("--data-dir", default="", help="the four Fashion-MNIST IDX files (default: the cache)")
    # Outputs default to the working folder, never into the installed package: replacing the bundled
    # classifier would change every FD the project reports. Shipping a new one is a deliberate copy.
    train.add_argument("--out", default=BUNDLED_CLASSIFIER.name, help="weights path; the JSON goes beside it")
    train.add_argument("--epochs", type=_at_least_one, default=EPOCHS, help="passes over the train split")
    train.add_argument("--seed", type=int, default=0, help="seed of the initial weights and the batch order")
    ship = commands.add_parser("ship-statistics", help="compute the Fashion-MNIST statistics shipped with the package")
    ship.add_argument("--data-dir", default="", help="the four Fashion-MNIST IDX files (default: the cache)")
    ship.add_argument("--classifier", default=str(BUNDLED_CLASSIFIER), help="the classifier whose features they are")
    ship.add_argument("--out", default=SHIPPED_STATISTICS.name, help="the statistics, FILE.npz")
    args = parser.parse_args(argv)
    try:
        out = Path(args.out)
        suffix = ".safetensors" if args.command == "train-classifier" else ".npz"
        if out.suffix != suffix or not out.parent.is_dir():
            raise UserError(f"--out must be a {suffix} file in a folder that exists, not {out}.")
        train_split, test_split = load_fashion_mnist(args.data_dir, "train"), load_fashion_mnist(args.data_dir, "test")
        if args.command == "train-classifier":
            recipe = Recipe(epochs=args.epochs, seed=args.seed)
            info = train_classifier(train_split, test_split, args.out, recipe=recipe, data="fashion-mnist",
                                    held_out_split="the fashion-mnist test split")
            print(f"test accuracy {info['test_accuracy']:.4f}; saved {args.out}", file=sys.stderr)
        else:
            facts = metrics.write_shipped_statistics(Path(args.out), load_classifier(args.classifier), test_split,
                                                     train_split)
            print(f"wrote {args.out} ({Path(args.out).stat().st_size / 2**20:.1f} MiB): {json.dumps(facts)}")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
