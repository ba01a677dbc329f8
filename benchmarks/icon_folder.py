"""A folder of colour images that are not emoji: five open icon sets from npm, one class each.

The colour issue asks whether the bundled emoji model's head start helps or hurts on colour images that are not
emoji. This script rasterises five colour icon sets of the Iconify project's npm packages (each set's SVGs, its
licence in the package) to 64x64 PNGs on a transparent background (cairosvg, which needs the system's cairo), one
sub-folder per set, and writes train/ and test/ folders (each set's licence, as the package states it, in
README.md), the test split a fixed ~10% chosen by each icon's name:

    cryptocurrency-color  coins of crypto currencies          CC0-1.0  (Christopher Downer)
    devicon               programming languages and tools      MIT      (konpa)
    flat-color-icons      flat pictograms of objects           MIT      (Icons8)
    logos                 company and product logos            CC0-1.0  (Gil Barbara)
    vscode-icons          file-type and folder icons           MIT      (Roberto Huertas)

    for s in cryptocurrency-color@1.2.4 devicon@1.2.68 flat-color-icons@1.2.3 logos@1.2.20 vscode-icons@1.2.99; do
        npm pack @iconify-json/$s; done
    python benchmarks/icon_folder.py runs/icons iconify-json-*.tgz

At most --per-class icons of a set are kept (the first by name), so no set outweighs the others by much. The folder
is for measuring (docs/reports/bundled-emoji.md); nothing trained on it is bundled.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import tarfile
from pathlib import Path

from PIL import Image

SIZE = 64
TEST_SHARE = 10  # percent


def in_test(name: str) -> bool:
    return int(hashlib.sha256(name.encode()).hexdigest(), 16) % 100 < TEST_SHARE


def svg_of(icon: dict, icons: dict) -> str:
    """An Iconify icon as a whole SVG document: its body in a square view box around its own box (or the set's),
    so a wide logo is centred, not stretched."""
    width, height = icon.get("width", icons.get("width", 16)), icon.get("height", icons.get("height", 16))
    side = max(width, height)
    left, top = icon.get("left", 0) - (side - width) / 2, icon.get("top", 0) - (side - height) / 2
    return (f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            f'viewBox="{left} {top} {side} {side}">{icon["body"]}</svg>')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="the folder to write train/ and test/ into (must not exist)")
    parser.add_argument("tarballs", nargs="+", help="iconify-json-SET-VERSION.tgz files, as `npm pack` writes them")
    parser.add_argument("--per-class", type=int, default=1000, help="at most this many icons of a set")
    args = parser.parse_args()
    import cairosvg

    out = Path(args.out)
    out.mkdir(parents=True)
    counts: dict[str, dict[str, int]] = {}
    credits = []
    for tarball in args.tarballs:
        with tarfile.open(tarball) as tar:
            icons = json.load(tar.extractfile("package/icons.json"))
            info = json.load(tar.extractfile("package/info.json"))
            name = icons["prefix"]
            licence = info["license"]
            credits.append(f"- {name} {Path(tarball).name}: {info['name']}, by {info['author']['name']}, "
                           f"{licence['title']} ({licence.get('spdx', '')}), {licence.get('url', '')}")
            kept = 0
            for icon_name in sorted(icons["icons"]):
                if kept >= args.per_class:
                    break
                try:
                    png = cairosvg.svg2png(bytestring=svg_of(icons["icons"][icon_name], icons).encode(),
                                           output_width=SIZE, output_height=SIZE)
                except Exception as err:  # an SVG cairo cannot draw is left out, and said
                    print(f"skipped {name}:{icon_name} ({type(err).__name__})")
                    continue
                split = "test" if in_test(f"{name}:{icon_name}") else "train"
                folder = out / split / name
                folder.mkdir(parents=True, exist_ok=True)
                Image.open(io.BytesIO(png)).convert("RGBA").save(folder / f"{icon_name}.png")
                counts.setdefault(name, {}).setdefault(split, 0)
                counts[name][split] += 1
                kept += 1
    lines = "\n".join(credits)
    (out / "README.md").write_text(
        f"Five Iconify icon sets rasterised to {SIZE}x{SIZE} by benchmarks/icon_folder.py, one class each, at most "
        f"{args.per_class} icons a set; images per class and split: {json.dumps(counts)}.\n\n{lines}\n")
    print(f"wrote {counts} to {out}")


if __name__ == "__main__":
    main()
