"""How long the command line takes to answer `--help` (and an argument error), against a baseline revision.

Each measurement is a fresh `python -m tinydiffusion ARGS` process, timed from start to exit, with the
package imported from a source tree given by PYTHONPATH: this checkout's `src/`, or the baseline
revision's `src/` exported with `git archive`. Rounds alternate which tree goes first; each figure is the
median over rounds, and the ratio is baseline / current per command.

    python benchmarks/startup.py [--baseline 1673a25] [--rounds 7] [--json F] [--markdown docs/reports/startup.md]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import datetime
from pathlib import Path

from common import cpu_description, markdown_table, report

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {
    "--help": ["--help"],
    "train --help": ["train", "--help"],
    "sample --help": ["sample", "--help"],
    "sample --guidance inf": ["sample", "--guidance", "inf"],  # an argument error: answered before any work
}


def export_source(revision: str, into: Path) -> Path:
    """The revision's src/ folder, written under `into`."""
    archive = subprocess.run(["git", "archive", revision, "src"], cwd=REPO, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def time_command(source: Path, args: list[str], workdir: Path) -> float:
    """Seconds for one fresh process. It runs in `workdir`: the baseline's `sample --guidance inf` samples and
    writes samples.png (all black) there, where it harms nothing."""
    env = dict(os.environ, PYTHONPATH=str(source), OMP_NUM_THREADS="1")
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "tinydiffusion", *args], env=env, capture_output=True, text=True,
                            cwd=workdir)
    seconds = time.perf_counter() - start
    if result.returncode not in (0, 2):
        raise SystemExit(f"{args} failed with {source}: {result.stderr[-500:]}")
    return seconds


def imported_from(source: Path) -> str:
    env = dict(os.environ, PYTHONPATH=str(source))
    code = "import tinydiffusion, pathlib; print(pathlib.Path(tinydiffusion.__file__).parent.parent)"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout.strip()


def measure(baseline: str, rounds: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"baseline": export_source(baseline, Path(tmp)), "current": REPO / "src"}
        for name, tree in trees.items():  # the editable install must not shadow the tree being timed
            if Path(imported_from(tree)) != tree.resolve():
                raise SystemExit(f"the {name} tree was not the one imported ({imported_from(tree)})")
        times = {name: {label: [] for label in COMMANDS} for name in trees}
        for round_index in range(rounds):
            order = list(trees) if round_index % 2 == 0 else list(trees)[::-1]
            for label, args in COMMANDS.items():
                for name in order:
                    times[name][label].append(time_command(trees[name], args, Path(tmp)))
    return {"machine": cpu_description(), "python": sys.version.split()[0], "baseline": baseline, "rounds": rounds,
            "date": datetime.now().isoformat(timespec="seconds"), "seconds": times}


def summarize(results: dict) -> dict:
    summary = {}
    for label in COMMANDS:
        baseline, current = (statistics.median(results["seconds"][tree][label]) for tree in ("baseline", "current"))
        summary[label] = {"baseline_s": baseline, "current_s": current, "ratio": baseline / current}
    return summary


def format_markdown(results: dict, summary: dict) -> str:
    lines = [
        "# Start-up time of the command line",
        "",
        f"`python benchmarks/startup.py --baseline {results['baseline']} --rounds {results['rounds']}` on "
        f"{results['machine']}, Python {results['python']}, {results['date']}. Each figure is the median wall time "
        "of a fresh `python -m tinydiffusion ...` process over the rounds; the baseline is the revision before "
        "the command line stopped importing torch at start-up.",
        "",
        *markdown_table(["command", "baseline (s)", "now (s)", "baseline / now"],
                        [(f"`{label}`", f"{row['baseline_s']:.2f}", f"{row['current_s']:.2f}", f"{row['ratio']:.1f}x")
                         for label, row in summary.items()], "lrrr"),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="1673a25", help="the revision to compare against")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", help="write the measurements here")
    parser.add_argument("--markdown", help="write the table here")
    args = parser.parse_args()
    report(measure(args.baseline, args.rounds), summarize, format_markdown, args.json, args.markdown)


if __name__ == "__main__":
    main()
