"""One vendor's emoji as a folder of its own: the files of ../shared/data/emoji whose names start with `google-`
(Noto) or `twitter-` (Twemoji), copied with the same train/ and test/ layout and category sub-folders.

A prior trained on one vendor and fine-tuned on the other measures transfer to a style the prior never saw
(docs/reports/bundled-emoji.md):

    python benchmarks/vendor_folder.py ../shared/data/emoji google runs/emoji-google
    python benchmarks/vendor_folder.py ../shared/data/emoji twitter runs/emoji-twitter
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("emoji", help="the emoji folder, holding train/ and test/")
    parser.add_argument("vendor", choices=["google", "twitter"])
    parser.add_argument("out", help="the folder to write (must not exist)")
    args = parser.parse_args()
    source, out = Path(args.emoji), Path(args.out)
    out.mkdir(parents=True)
    counts = {}
    for split in ("train", "test"):
        files = sorted((source / split).glob(f"*/{args.vendor}-*.png"))
        for path in files:
            target = out / split / path.parent.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        counts[split] = len(files)
    shutil.copyfile(source / "LICENSES.txt", out / "LICENSES.txt")
    print(f"wrote {counts} {args.vendor} files to {out}")


if __name__ == "__main__":
    main()
