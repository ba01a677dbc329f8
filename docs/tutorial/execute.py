"""Run the tutorial notebook from top to bottom, as a learner's Jupyter would.

    python docs/tutorial/execute.py          # the full run: rewrites learn-diffusion.ipynb and figures/ in place
    python docs/tutorial/execute.py --fast   # the fast run CI makes: notebook and figures/ untouched
    python docs/tutorial/execute.py --scrub  # no run: take machine paths out of the committed notebook's outputs

TINYDIFFUSION_TUTORIAL_FAST=1 is the same as --fast: a fast run never writes over the committed notebook or
figures. Its figures go to TINYDIFFUSION_TUTORIAL_OUT if that is set (and are kept there), else to a temporary
folder removed at the end. The full run's outputs are the committed ones, with the paths of this machine replaced
(scrub); commit the notebook and figures/ together.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "learn-diffusion.ipynb"


def fast_requested(flag: bool) -> bool:
    return flag or os.environ.get("TINYDIFFUSION_TUTORIAL_FAST", "") not in ("", "0")


def machine_paths() -> list[tuple[re.Pattern, str]]:
    """(pattern, what a reader sees instead) for every path that names this machine's folders, most specific first:
    the data folder, the tutorial's own folder, the repository, temporary folders, the home folder."""
    pairs = []
    data = os.environ.get("TINYDIFFUSION_TUTORIAL_DATA")
    if data:
        pairs += [(str(Path(data).resolve()), "$TINYDIFFUSION_TUTORIAL_DATA"), (data, "$TINYDIFFUSION_TUTORIAL_DATA")]
    pairs += [(str(HERE) + "/", ""), (str(HERE), "."), (str(HERE.parents[1]) + "/", "")]
    patterns = [(re.compile(re.escape(path)), shown) for path, shown in pairs]
    temporary = {tempfile.gettempdir(), "/tmp", "/var/tmp"}
    patterns += [(re.compile(re.escape(folder) + r"/[^\s/'\"]+"), "<temporary folder>") for folder in temporary]
    return patterns + [(re.compile(re.escape(str(Path.home()))), "~")]


def scrub_text(text: str, patterns=None) -> str:
    for pattern, shown in patterns or machine_paths():
        text = pattern.sub(shown, text)
    return text


def scrub(notebook) -> None:
    """Machine paths out of every text output of the notebook (a reader's machine has other folders)."""
    patterns = machine_paths()
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if "text" in output:
                output["text"] = scrub_text(output["text"], patterns)
            for kind, value in output.get("data", {}).items():
                if kind.startswith("text/") and isinstance(value, str):
                    output["data"][kind] = scrub_text(value, patterns)


def execute(notebook, fast: bool) -> None:
    from nbclient import NotebookClient

    if fast:
        os.environ["TINYDIFFUSION_TUTORIAL_FAST"] = "1"
    else:
        os.environ.pop("TINYDIFFUSION_TUTORIAL_FAST", None)
        os.environ.pop("TINYDIFFUSION_TUTORIAL_OUT", None)  # figures/ beside the notebook
    NotebookClient(notebook, timeout=1800, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(HERE)}}).execute()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="shrink every experiment; do not save the notebook")
    parser.add_argument("--scrub", action="store_true", help="run nothing: take machine paths out of the "
                        "committed notebook's outputs")
    args = parser.parse_args(argv)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    if args.scrub:
        scrub(notebook)
        nbformat.write(notebook, NOTEBOOK)
        print(f"scrubbed {NOTEBOOK}", file=sys.stderr)
        return 0
    fast, started = fast_requested(args.fast), time.perf_counter()
    if not fast:
        execute(notebook, fast)
        scrub(notebook)
        nbformat.write(notebook, NOTEBOOK)
        print(f"executed in {time.perf_counter() - started:.0f} s; wrote {NOTEBOOK} and {HERE / 'figures'}",
              file=sys.stderr)
        return 0
    kept = os.environ.get("TINYDIFFUSION_TUTORIAL_OUT")
    with tempfile.TemporaryDirectory(prefix="tutorial-figures-") as temporary:
        os.environ["TINYDIFFUSION_TUTORIAL_OUT"] = kept or temporary
        execute(notebook, fast)
    print(f"executed in {time.perf_counter() - started:.0f} s; "
          + (f"figures in {kept}" if kept else "figures not kept (set TINYDIFFUSION_TUTORIAL_OUT to keep them)"),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
