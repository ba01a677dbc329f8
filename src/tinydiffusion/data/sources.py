"""Naming and locating a source: a named dataset by its name (its files downloaded when missing and allowed), a
path made absolute, and which file or folder holds a split (a held-out split beside the train split's)."""

from __future__ import annotations

from pathlib import Path

from ..config import DataConfig
from ..errors import UserError
from . import prepared as store
from .download import download_files
from .formats import find_format
from .formats.base import held_out_sibling
from .named import NAMED, NamedDataset


def named_dataset(config: DataConfig) -> NamedDataset | None:
    return NAMED.get(config.source.strip().lower())


def canonical_source(source: str) -> str:
    """How a run records its source: a named dataset by its name, a path made absolute, so that `evaluate`
    and `visualize` find the data from any working directory."""
    if source.strip().lower() in NAMED:
        return source.strip().lower()
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else source


def dataset_folder(config: DataConfig) -> Path:
    """Where a named dataset's files are: --data-dir, else the cache (the same for train and evaluate)."""
    named = named_dataset(config)
    return Path(config.data_dir).expanduser() if config.data_dir else named.default_folder()


def _named_source(named: NamedDataset, config: DataConfig, split: str, progress: bool) -> Path:
    """The named dataset's files for `split`, downloaded if missing and allowed. A download fetches the
    test split too, so that `evaluate` finds its reference where `train` left the data."""
    folder = dataset_folder(config)

    def missing(files: dict[str, str]) -> dict[str, str]:
        return {name: md5 for name, md5 in files.items()
                if not (folder / name).exists() and not (folder / Path(name).stem).exists()}

    needed = missing({name: named.files[name] for name in named.split_files.get(split, named.files)})
    if needed:
        if not config.download:
            raise UserError(f"{named.title} is not in {folder} (missing {', '.join(needed)}); point --data-dir at "
                            f"the folder holding its files, or allow downloading (--data.download true).")
        download_files(folder, named.mirrors, missing(named.files), named.title, progress)
    return folder / named.source_file  # "": the folder itself


def locate(config: DataConfig, split: str, progress: bool):
    """(format, path, split to read) for the requested split, or None when the source has no such split."""
    named = named_dataset(config)
    if named is not None:
        here = Path(config.source)
        if split == "train" and here.exists() and here.resolve() != dataset_folder(config).resolve():
            print(f"note: {config.source} names the dataset {named.title}, not the {config.source} here; to read "
                  f"that, give --data ./{config.source}.")
        path = _named_source(named, config, split, progress)
    else:
        path = Path(config.source).expanduser()
        if not path.exists():
            raise UserError(f"{path} does not exist; --data takes a folder of images, a .zip, an .npz/.npy file, or "
                            f"a named dataset ({', '.join(NAMED)}).")
    if store.is_prepared(path):
        if split == "train":
            return None, path, split
        sibling = held_out_sibling(path)
        return (None, sibling, "train") if sibling is not None and store.is_prepared(sibling) else None
    fmt = find_format(path)
    if split == "train" or fmt.SPLITS_INSIDE:
        return fmt, path, split
    sibling = held_out_sibling(path)
    return None if sibling is None else (find_format(sibling), sibling, "train")
