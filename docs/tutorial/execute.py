"""Run the tutorial notebook from top to bottom, as a learner's Jupyter would.

    python docs/tutorial/execute.py          # the full run: rewrites learn-diffusion.ipynb and figures/ in place
    python docs/tutorial/execute.py --fast   # the fast run CI makes: figures to a temporary folder, notebook untouched

The full run's outputs are the committed ones; commit the notebook and figures/ together.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "learn-diffusion.ipynb"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="shrink every experiment; do not save the notebook")
    fast = parser.parse_args().fast
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    if fast:
        os.environ["TINYDIFFUSION_TUTORIAL_FAST"] = "1"
        os.environ["TINYDIFFUSION_TUTORIAL_OUT"] = tempfile.mkdtemp(prefix="tutorial-figures-")
    else:
        os.environ.pop("TINYDIFFUSION_TUTORIAL_FAST", None)
        os.environ.pop("TINYDIFFUSION_TUTORIAL_OUT", None)  # figures/ beside the notebook
    started = time.perf_counter()
    NotebookClient(notebook, timeout=1800, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(HERE)}}).execute()
    print(f"executed in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if fast:
        print(f"figures in {os.environ['TINYDIFFUSION_TUTORIAL_OUT']}", file=sys.stderr)
    else:
        nbformat.write(notebook, NOTEBOOK)
        print(f"wrote {NOTEBOOK} and {HERE / 'figures'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
