"""metrics.jsonl: one JSON record per log line (and per evaluation), mirrored to TensorBoard when it is on."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError
from ..files import atomic_write_bytes


class MetricsLog:
    def __init__(self, run_dir: Path, tensorboard=None):
        self.path, self.tensorboard = Path(run_dir) / "metrics.jsonl", tensorboard

    def write(self, record: dict) -> None:
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as err:
            raise UserError(f"cannot write {self.path} ({err.strerror or err}).") from None
        if self.tensorboard is not None:
            self.tensorboard.scalars(record)

    def drop_after(self, step: int) -> None:
        """Keep the records of steps up to `step` (eval records included) and drop the rest: a resumed run
        logs the later steps again, so each step stays logged once. A line a kill cut short is dropped too.
        The file is replaced atomically, so a crash here loses nothing."""
        try:
            lines = self.path.read_bytes().splitlines(keepends=True)
        except FileNotFoundError:
            return
        kept = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:  # cut short by a kill mid-write (UnicodeDecodeError is a ValueError too)
                continue
            logged = record.get("step") if isinstance(record, dict) else None
            if isinstance(logged, (int, float)) and logged <= step:
                kept.append(line if line.endswith(b"\n") else line + b"\n")
        if kept != lines:
            atomic_write_bytes(self.path, b"".join(kept))
