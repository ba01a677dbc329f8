"""The maintainers' files behind every FD of the named dataset that carries them (data/named.py's BUNDLED_DATASET,
Fashion-MNIST): its feature classifier, and the statistics shipped with the package so that scoring needs no
data on disk.

    python tools/train_classifier.py train-classifier --data-dir ../shared/data/fashion-mnist
    python tools/train_classifier.py ship-statistics --data-dir ../shared/data/fashion-mnist

Both write to the working folder unless told otherwise, never into the installed package: replacing the bundled
classifier would change every FD the project reports, so shipping a new one is a deliberate copy into
src/tinydiffusion/assets/ (and new statistics go with a new classifier: they are keyed by its weights' checksum).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np

from tinydiffusion.cli import Parser
from tinydiffusion.config import DataConfig
from tinydiffusion.data import load_data
from tinydiffusion.data.named import BUNDLED_DATASET
from tinydiffusion.errors import UserError
from tinydiffusion.evaluation import (
    BUNDLED_CLASSIFIER,
    SHIPPED_STATISTICS,
    Recipe,
    extract_features,
    feature_statistics,
    load_classifier,
    train_classifier,
    weights_checksum,
)
from tinydiffusion.evaluation.classifier import EPOCHS
from tinydiffusion.evaluation.metrics import FLOOR_SEED, floor_indices
from tinydiffusion.files import atomic_write_bytes

SHIPPED_FLOOR_MAX = 10_000  # floor features shipped: enough for any N up to the test split's size


def write_shipped_statistics(path: Path, classifier, test, train, progress: bool = True) -> dict:
    """Save what scoring needs when the data is not on disk (evaluation.metrics.shipped_statistics reads it): the
    test split's feature mean and covariance (float64), its features (float16, for precision and recall) and the
    features of the floor's first SHIPPED_FLOOR_MAX train images, in the floor's order, keyed by the classifier's
    and the data's checksums."""
    test_features = extract_features(classifier, test.images, progress=progress)
    mu, sigma = feature_statistics(test_features)
    order = floor_indices(len(train), SHIPPED_FLOOR_MAX)
    floor_features = extract_features(classifier, train.images[order], progress=progress)
    facts = {"classifier_sha256": weights_checksum(classifier), "test_sha256": test.manifest["sha256"],
             "train_sha256": train.manifest["sha256"], "floor_seed": FLOOR_SEED,
             "test_images": len(test), "train_images": len(train)}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, facts=np.array(json.dumps(facts)), mu=mu, sigma=sigma,
                        test_features=test_features.astype(np.float16),
                        floor_features=floor_features.astype(np.float16))
    atomic_write_bytes(Path(path), buffer.getvalue())
    return facts


def _at_least_one(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python tools/train_classifier.py", description=__doc__.split("\n\n")[0])
    title, name = BUNDLED_DATASET.title, BUNDLED_DATASET.name
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    train = commands.add_parser("train-classifier", help=f"train the bundled {title} FD classifier")
    train.add_argument("--data-dir", default="", help=f"the {title} files (default: the cache)")
    train.add_argument("--out", default=BUNDLED_CLASSIFIER.name, help="weights path; the JSON goes beside it")
    train.add_argument("--epochs", type=_at_least_one, default=EPOCHS, help="passes over the train split")
    train.add_argument("--seed", type=int, default=0, help="seed of the initial weights and the batch order")
    ship = commands.add_parser("ship-statistics", help=f"compute the {title} statistics shipped with the package")
    ship.add_argument("--data-dir", default="", help=f"the {title} files (default: the cache)")
    ship.add_argument("--classifier", default=str(BUNDLED_CLASSIFIER), help="the classifier whose features they are")
    ship.add_argument("--out", default=SHIPPED_STATISTICS.name, help="the statistics, FILE.npz")
    args = parser.parse_args(argv)
    try:
        out = Path(args.out)
        suffix = ".safetensors" if args.command == "train-classifier" else ".npz"
        if out.suffix != suffix or not out.parent.is_dir():
            raise UserError(f"--out must be a {suffix} file in a folder that exists, not {out}.")
        data = DataConfig(source=name, data_dir=str(args.data_dir or ""), download=False)
        train_split, test_split = load_data(data, "train", progress=False), load_data(data, "test", progress=False)
        if args.command == "train-classifier":
            recipe = Recipe(epochs=args.epochs, seed=args.seed)
            info = train_classifier(train_split, test_split, args.out, recipe=recipe, data=name,
                                    held_out_split=f"the {name} test split")
            print(f"test accuracy {info['test_accuracy']:.4f}; saved {args.out}", file=sys.stderr)
        else:
            facts = write_shipped_statistics(out, load_classifier(args.classifier), test_split, train_split)
            print(f"wrote {args.out} ({out.stat().st_size / 2**20:.1f} MiB): {json.dumps(facts)}")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
