"""Data: any source of images, prepared once into a uint8 array, and the one pixel <-> [-1, 1] map.

A source is a named dataset (fashion-mnist, mnist, cifar10: downloaded when missing), a folder of
images (sub-folders are classes), a .zip of one, an .npz/.npy array, or a file written by `prepare`.
The first use decodes it into a prepared array in the cache (`prepared.py`); every later use of the
unchanged source reads that array, held in memory when it fits and memory-mapped when it does not.
Training draws batches from it by index: no per-image Python work in the training loop.

    dataset = load_data(DataConfig(source="path/to/folder"))   # ImageDataset: images uint8 [N, C, H, W]
"""

from . import cache, prepared
from .classes import class_aliases, class_index
from .formats.idx_folder import MAX_IDX_BYTES, read_idx, write_idx
from .loading import ImageDataset, load_data, prepare_source, prepared_path
from .named import NAMED, NamedDataset
from .sources import canonical_source, dataset_folder, locate, named_dataset

__all__ = ["MAX_IDX_BYTES", "NAMED", "ImageDataset", "NamedDataset", "cache", "canonical_source", "class_aliases",
           "class_index", "dataset_folder", "load_data", "locate", "named_dataset", "prepare_source", "prepared",
           "prepared_path", "read_idx", "write_idx"]
