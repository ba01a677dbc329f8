"""A folder of emoji in a style the bundled emoji model never saw: OpenMoji (CC BY-SA 4.0), from its npm package.

OpenMoji draws with thick black outlines and flat colours, unlike Noto's shading and Twemoji's outline-free shapes,
and sorts its emoji into the same nine Unicode groups as ../shared/data/emoji. This script rasterises the colour
SVGs of those nine groups to 64x64 PNGs on a transparent background (cairosvg, which needs the system's cairo) and
writes them as train/ and test/ folders, one sub-folder per group, the test split a fixed ~10% chosen by the
emoji's code points (skin-tone variants of one emoji stay in one split), as the emoji folder was split.

    npm pack openmoji@17.0.0            # openmoji-17.0.0.tgz, from the npm registry
    python benchmarks/openmoji_folder.py openmoji-17.0.0.tgz runs/openmoji

The folder is for measuring (docs/reports/bundled-emoji.md); nothing trained on it is bundled.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import tarfile
from pathlib import Path

from PIL import Image

GROUPS = ("activities", "animals-nature", "flags", "food-drink", "objects", "people-body", "smileys-emotion",
          "symbols", "travel-places")
SIZE = 64
TEST_SHARE = 10  # percent


def in_test(base_hexcode: str) -> bool:
    return int(hashlib.sha256(base_hexcode.encode()).hexdigest(), 16) % 100 < TEST_SHARE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tarball", help="openmoji-VERSION.tgz, as `npm pack openmoji` writes it")
    parser.add_argument("out", help="the folder to write train/ and test/ into (must not exist)")
    args = parser.parse_args()
    import cairosvg

    out = Path(args.out)
    out.mkdir(parents=True)
    counts: dict[str, int] = {}
    with tarfile.open(args.tarball) as tar:
        emoji = json.load(tar.extractfile("package/data/openmoji.json"))
        (out / "LICENSE.txt").write_bytes(tar.extractfile("package/LICENSE.txt").read())
        for entry in emoji:
            if entry["group"] not in GROUPS:
                continue
            svg = tar.extractfile(f"package/color/svg/{entry['hexcode']}.svg").read()
            png = cairosvg.svg2png(bytestring=svg, output_width=SIZE, output_height=SIZE)
            split = "test" if in_test(entry["skintone_base_hexcode"] or entry["hexcode"]) else "train"
            folder = out / split / entry["group"]
            folder.mkdir(parents=True, exist_ok=True)
            Image.open(io.BytesIO(png)).convert("RGBA").save(folder / f"openmoji-{entry['hexcode'].lower()}.png")
            counts[split] = counts.get(split, 0) + 1
    (out / "README.md").write_text(
        f"OpenMoji {Path(args.tarball).name}: the colour SVGs of {len(GROUPS)} groups rasterised to {SIZE}x{SIZE} by "
        f"benchmarks/openmoji_folder.py; {counts.get('train', 0)} train, {counts.get('test', 0)} test images. "
        "OpenMoji, https://openmoji.org, licensed CC BY-SA 4.0 (LICENSE.txt).\n")
    print(f"wrote {counts} to {out}")


if __name__ == "__main__":
    main()
