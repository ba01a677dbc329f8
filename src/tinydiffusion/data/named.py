"""The datasets known by name: where to download them, their checksums, class names and defaults.

Everything the project knows about a particular dataset is here and nowhere else. A named dataset is
files in a folder (by default in the cache, `<cache>/datasets/<name>`), read by one of the formats.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..files import cache_dir
from .formats.idx_folder import SPLIT_FILES as IDX_SPLITS

ASSETS = Path(__file__).resolve().parents[1] / "assets"


@dataclass(frozen=True)
class BundledReference:
    """What the package ships to score samples of a named dataset, even without its files: a feature classifier
    trained on it and its test split's statistics in that classifier's features (files in assets/)."""
    classifier: str
    statistics: str
    metric_name: str  # what an FD in those features is called in tables and metrics.jsonl

    @property
    def classifier_path(self) -> Path:
        return ASSETS / self.classifier

    @property
    def statistics_path(self) -> Path:
        return ASSETS / self.statistics


@dataclass(frozen=True)
class NamedDataset:
    name: str
    title: str
    mirrors: tuple[str, ...]
    files: dict[str, str]  # file name -> the official MD5, checked on what is downloaded
    source_file: str  # what the format reads, inside the folder ("" = the folder itself)
    class_names: tuple[str, ...]
    image_size: int
    channels: int
    hflip: bool  # whether mirrored images are still images of the dataset
    class_aliases: dict[str, str] = field(default_factory=dict)  # other spellings `--class` accepts
    split_files: dict[str, tuple[str, ...]] = field(default_factory=dict)  # the files a split needs (default: all)
    reference: BundledReference | None = None  # a classifier and statistics shipped for it

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)

    def default_folder(self) -> Path:
        """Where its files are downloaded to and looked for without --data-dir (the tutorial reads it too)."""
        return cache_dir() / "datasets" / self.name


IDX_FILES = (*IDX_SPLITS["train"], *IDX_SPLITS["test"])

FASHION_MNIST = NamedDataset(
    name="fashion-mnist", title="Fashion-MNIST",
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
             "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/"),
    files=dict(zip(IDX_FILES, ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
                               "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"), strict=True)),
    source_file="",
    class_names=("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"),
    image_size=28, channels=1, hflip=False, split_files=IDX_SPLITS,
    class_aliases={"t-shirt-top": "t-shirt", "tshirt": "t-shirt", "top": "t-shirt",
                   "boot": "ankle-boot", "ankle": "ankle-boot"},
    reference=BundledReference("fmnist-classifier.safetensors", "fmnist-reference.npz",
                               "FD (fmnist-classifier features)"),
)

MNIST = NamedDataset(
    name="mnist", title="MNIST",
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    files=dict(zip(IDX_FILES, ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
                               "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"), strict=True)),
    source_file="",
    class_names=tuple(str(d) for d in range(10)),
    image_size=28, channels=1, hflip=False, split_files=IDX_SPLITS,  # a mirrored digit is not a digit
)

CIFAR10 = NamedDataset(
    name="cifar10", title="CIFAR-10",
    mirrors=("https://www.cs.toronto.edu/~kriz/",),
    files={"cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530"},  # the binary version, never the pickles
    source_file="cifar-10-binary.tar.gz",
    class_names=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    image_size=32, channels=3, hflip=True,
    class_aliases={"car": "automobile", "plane": "airplane"},
)

NAMED: dict[str, NamedDataset] = {d.name: d for d in (FASHION_MNIST, MNIST, CIFAR10)}

# The dataset whose reference the package ships (and the bundled model is trained on): the evaluation's maintenance
# commands rebuild its classifier and statistics.
BUNDLED_DATASET = FASHION_MNIST
