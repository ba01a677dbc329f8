"""The table of runs from scratch against runs from a bundled model (`--train.init`), from `evaluate --json` files.

Each run is a file named SIZE-scratch-Mm.json or SIZE-tuned-Mm.json, or SIZE-tuned-VARIANT-Mm.json for a
fine-tune with other flags (as docs/reports/runs/bundled-emoji/make.sh writes them); the steps each run took are
read from its log beside the file (the same name, .log), when it is there. `--real FILE` adds the real held-out
images' own scores (`evaluate --samples` of them) to the per-category table: the classifier's accuracy on real
images of each category, the ceiling a model's can reach, and their mean over categories (the models draw every
category equally often, so that mean, not the held-out accuracy, is their overall ceiling).

    python benchmarks/transfer_table.py docs/reports/runs/bundled-emoji/openmoji
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from common import markdown_table

RUN = re.compile(r"(?P<size>\d+)-(?P<start>scratch|tuned)(-(?P<variant>[\w.+-]+?))?-(?P<minutes>\d+)m\.json$")


def steps_of(log: Path) -> str:
    found = re.search(r"done: step ([\d,]*\d)", log.read_text()) if log.is_file() else None
    return found.group(1) if found else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prefix", help="the JSON files' common start, e.g. docs/reports/runs/bundled-emoji/openmoji")
    parser.add_argument("--init", default="emoji", help="what the fine-tunes' --train.init named (default: emoji)")
    parser.add_argument("--real", help="an `evaluate --samples --json` file of the real held-out images")
    args = parser.parse_args()

    prefix = Path(args.prefix)
    runs = {}
    for path in prefix.parent.glob(prefix.name + "*.json"):
        found = RUN.search(path.name)
        if found:
            start = found["start"] + (f", {found['variant']}" if found["variant"] else "")
            runs[(int(found["size"]), int(found["minutes"]), start)] = (path, json.loads(path.read_text()))
    header = ["pixels", "minutes", "start", "steps", "FD (floor)", "precision", "recall", "class accuracy"]
    rows = []
    for size, minutes, start in sorted(runs):
        path, score = runs[size, minutes, start]
        rows.append([str(size), str(minutes), start.replace("tuned", f"`--train.init {args.init}`"),
                     steps_of(path.with_suffix(".log")), f"{score['fd']:.2f} "
                     f"({score['fd_floor']:.2f})", f"{score['precision']:.3f}", f"{score['recall']:.3f}",
                     f"{score['class_accuracy']:.3f}"])
    print("\n".join(markdown_table(header, rows)))
    names = next(iter(runs.values()))[1]["class_names"]
    print("\nclass accuracy per category\n")
    rows = [[f"{size} px, {minutes} min, {start}", *(f"{a:.2f}" for a in runs[size, minutes, start][1]
                                                     ["per_class_accuracy"])]
            for size, minutes, start in sorted(runs)]
    if args.real:
        try:
            accuracy = json.loads(Path(args.real).read_text())["per_class_accuracy"]
        except (OSError, ValueError, KeyError) as err:
            parser.error(f"--real {args.real} is not an `evaluate --json` file ({err})")
        rows.append(["real held-out images", *(f"{a:.2f}" for a in accuracy)])
        print(f"\nreal held-out images, mean over categories (the ceiling): {sum(accuracy) / len(accuracy):.3f}")
    print("\n".join(markdown_table(["run", *names], rows)))


if __name__ == "__main__":
    main()
