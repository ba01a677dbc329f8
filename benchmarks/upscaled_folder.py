"""A copy of an image folder with every image upscaled by a whole factor (Lanczos), the sub-folders kept: for runs at a
size larger than the files (the emoji are 64x64 PNGs; issue 46 measures 128 pixels). Transparency is kept, so the
copy is prepared as the originals are. Upscaling adds no detail: a 128-px run on it learns 64-px emoji drawn larger.

    python benchmarks/upscaled_folder.py ../shared/data/emoji runs/emoji-128 --factor 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--factor", type=int, default=2)
    args = parser.parse_args()
    count = 0
    for path in sorted(args.source.rglob("*.png")):
        target = args.out / path.relative_to(args.source)
        if target.is_file():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as image:
            image = image.convert("RGBA")
            image.resize((image.width * args.factor, image.height * args.factor), Image.LANCZOS).save(target)
        count += 1
    print(f"wrote {count:,} images to {args.out}")


if __name__ == "__main__":
    main()
