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

docs/explanation/code-map.md lists the package's modules.
"""

from ..data import ImageDataset
from . import classifier, metrics, samples
from .classifier import (
    BUNDLED_CLASSIFIER,
    Recipe,
    classifier_accuracy,
    extract_features,
    load_classifier,
    train_classifier,
    weights_checksum,
)
from .evaluator import Evaluator, evaluate_samples
from .metrics import (
    INCEPTION_METRIC,
    SHIPPED_STATISTICS,
    feature_statistics,
    frechet_distance,
    inception_fid,
    inception_unavailable,
    precision_recall,
)
from .reference import NO_TEST_SPLIT, hold_out
from .samples import load_samples_npz, save_npz
from .table import format_table

__all__ = [
    "BUNDLED_CLASSIFIER", "INCEPTION_METRIC", "NO_TEST_SPLIT", "SHIPPED_STATISTICS", "Evaluator", "ImageDataset",
    "Recipe", "classifier", "classifier_accuracy", "evaluate_samples", "extract_features", "feature_statistics",
    "format_table", "frechet_distance", "hold_out", "inception_fid", "inception_unavailable", "load_classifier",
    "load_samples_npz", "metrics", "precision_recall", "samples", "save_npz",
    "train_classifier", "weights_checksum",
]
