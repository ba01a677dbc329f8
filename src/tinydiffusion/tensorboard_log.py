"""Optional TensorBoard logging of a training run (`pip install 'tinydiffusion[tensorboard]'`): metrics.jsonl's
scalars as curves (that file stays the record) and the sample grids, in RUN_DIR/tensorboard (`tensorboard --logdir`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .errors import UserError


class TensorBoardLog:
    """A SummaryWriter opened on first use, so that asking for it checks the package before training starts
    but writes nothing until the run does."""

    def __init__(self, folder: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("--train.tensorboard needs the tensorboard package, which is not installed; "
                            "pip install 'tinydiffusion[tensorboard]', or leave --train.tensorboard off.") from None
        self.folder, self._writer_class, self._writer = Path(folder), SummaryWriter, None

    @property
    def writer(self):
        if self._writer is None:
            self._writer = self._writer_class(str(self.folder))
        return self._writer

    def scalars(self, record: dict) -> None:
        """One metrics.jsonl record: each number but the step and epoch, as eval/NAME (FD records) or train/NAME."""
        group = "eval" if "fd" in record else "train"
        for name, value in record.items():
            if name not in ("step", "epoch") and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{group}/{name}", value, record["step"])
        self.writer.flush()  # a crash loses nothing that metrics.jsonl has

    def image(self, tag: str, image: Image.Image, step: int) -> None:
        self.writer.add_image(tag, np.asarray(image.convert("RGB")), step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
