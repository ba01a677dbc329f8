"""Make a run's checkpoint a bundled model's files: src/tinydiffusion/assets/NAME.safetensors (the EMA weights, byte
for byte) and NAME.json (the run's config, with no path of the machine that trained it). Then register NAME in
src/tinydiffusion/bundled.py.

    python tools/bundle_model.py runs/emoji-prior-32 emoji
    python tools/bundle_model.py runs/emoji-student-4 emoji-student --teacher emoji

A student's config records its teacher by the bundled file's name (`--teacher NAME`), as the bundled students of
the default model do: a refusal that points at the teacher then names the bundled model, on any machine. Its
recorded SHA-256 must be that file's.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from pathlib import Path

from tinydiffusion.bundled import ASSETS
from tinydiffusion.checkpoint import load_config, resolve_checkpoint
from tinydiffusion.files import atomic_write_bytes, sha256_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a run directory, a checkpoint directory or a .safetensors file")
    parser.add_argument("name", help="the files' name in assets/, without a suffix")
    parser.add_argument("--teacher", help="a student's teacher: the bundled file's name, without a suffix")
    args = parser.parse_args()

    weights, config_path = resolve_checkpoint(args.checkpoint)
    config = load_config(config_path)
    source = Path(config.data.source)  # a folder by its last two names (emoji/train); a named dataset as it is
    data = dataclasses.replace(config.data, source=f"{source.parent.name}/{source.name}" if source.parent.name
                               else config.data.source, data_dir="")
    distill = config.distill
    if args.teacher:
        teacher = ASSETS / f"{args.teacher}.safetensors"
        if sha256_file(teacher) != distill.teacher_sha256:
            raise SystemExit(f"{args.checkpoint} was not distilled from {teacher} (another SHA-256).")
        distill = dataclasses.replace(distill, teacher=f"{teacher.name} (the bundled model, beside this file)")
    config = dataclasses.replace(config, data=data, distill=distill)
    target = ASSETS / f"{args.name}.safetensors"
    shutil.copyfile(weights, target)
    atomic_write_bytes(target.with_suffix(".json"), config.to_json().encode())
    print(f"wrote {target} (SHA-256 {sha256_file(target)}) and {target.with_suffix('.json').name}")


if __name__ == "__main__":
    main()
