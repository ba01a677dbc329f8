"""`python -m tinydiffusion.evaluation train-classifier | ship-statistics` (and `tinydiffusion train-classifier`):
training the bundled classifier and computing the statistics shipped with the package, for the dataset that carries
them (data/named.py's BUNDLED_DATASET)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..config import DataConfig
from ..data import load_data
from ..data.named import BUNDLED_DATASET
from ..errors import UserError
from . import metrics
from .classifier import BUNDLED_CLASSIFIER, EPOCHS, Recipe, load_classifier, train_classifier
from .metrics import SHIPPED_STATISTICS


def _at_least_one(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def main(argv: list[str] | None = None, parser_class=argparse.ArgumentParser) -> int:
    """`parser_class`: the command line passes its own, whose errors are one sentence."""
    parser = parser_class(prog="python -m tinydiffusion.evaluation")
    title, name = BUNDLED_DATASET.title, BUNDLED_DATASET.name
    commands = parser.add_subparsers(dest="command", required=True, parser_class=parser_class)
    train = commands.add_parser("train-classifier", help=f"train the bundled {title} FD classifier")
    train.add_argument("--data-dir", default="", help=f"the {title} files (default: the cache)")
    # Outputs default to the working folder, never into the installed package: replacing the bundled
    # classifier would change every FD the project reports. Shipping a new one is a deliberate copy.
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
            facts = metrics.write_shipped_statistics(Path(args.out), load_classifier(args.classifier), test_split,
                                                     train_split)
            print(f"wrote {args.out} ({Path(args.out).stat().st_size / 2**20:.1f} MiB): {json.dumps(facts)}")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
