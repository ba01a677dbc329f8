"""The tutorial, docs/tutorial/learn-diffusion.ipynb, runs end to end, so that it cannot rot.

Its fast mode (TINYDIFFUSION_TUTORIAL_FAST=1) executes every cell in about a minute on one CPU thread, offline:
the bundled model, the shipped FD statistics, and training data drawn by the bundled model (the session's
private cache holds no Fashion-MNIST, and the data variable is unset). Figures go to a temporary folder, never
over the committed ones. The committed notebook itself must carry the outputs of a full run without errors, and
its figures must be the ones the code writes.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import load_script
from nbclient import NotebookClient

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial"
NOTEBOOK = TUTORIAL / "learn-diffusion.ipynb"
PNG = b"\x89PNG\r\n\x1a\n"


def code_cells(notebook) -> list:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


@pytest.mark.slow
def test_tutorial_runs_in_fast_mode(tmp_path, monkeypatch):
    out = tmp_path / "figures"
    monkeypatch.setenv("TINYDIFFUSION_TUTORIAL_FAST", "1")
    monkeypatch.setenv("TINYDIFFUSION_TUTORIAL_OUT", str(out))
    monkeypatch.delenv("TINYDIFFUSION_TUTORIAL_DATA", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the kernel is a subprocess; CI's two cores run one test at a time
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in code_cells(notebook):
        cell.outputs, cell.execution_count = [], None
    # Runs in tmp_path; any failing cell raises CellExecutionError, which names the cell and its traceback.
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()

    results = json.loads((out / "results.json").read_text())
    assert results["fast"] is True and results["data"] is None  # offline: no dataset was found or fetched
    assert results["ddpm_check"]["max_abs_difference"] < 1e-4  # the hand-written sampler is the library's
    scored = results["fewer_steps"] + results["guidance"] + [results["training"]]
    assert len(results["fewer_steps"]) >= 3 and len(results["guidance"]) >= 3
    for row in scored:
        assert math.isfinite(row["fd"]) and row["fd"] >= 0 and math.isfinite(row["fd_floor"])
        assert 0 <= row["class_accuracy"] <= 1
    assert results["training"]["steps"] > 0 and math.isfinite(results["training"]["final_loss"])
    written = sorted(path.name for path in out.glob("*.png"))
    assert len(written) >= 10
    for name in written:
        assert (out / name).read_bytes()[:8] == PNG and (out / name).stat().st_size > 5_000
    committed = sorted(path.name for path in (TUTORIAL / "figures").glob("*.png"))
    assert written == committed, "the committed figures are not the ones the notebook writes; run it in full again"


def test_committed_notebook_holds_a_full_run():
    """Every code cell ran, in order, without an error, in the full mode; its figures and numbers are committed."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    cells = code_cells(notebook)
    assert [cell.execution_count for cell in cells] == list(range(1, len(cells) + 1))
    assert not [output for cell in cells for output in cell.outputs if output.output_type == "error"]
    assert any(output.get("data", {}).get("image/png") for cell in cells for output in cell.outputs)
    results = json.loads((TUTORIAL / "figures" / "results.json").read_text())
    assert results["fast"] is False and results["ddpm_check"]["steps"] == 1000


def test_read_the_code_references_point_at_their_code():
    """docs/tutorial/README.md's "read the code in this order" table names a file:line and quotes the code there;
    code that moves makes this fail with the line to write instead."""
    readme = (TUTORIAL / "README.md").read_text()
    rows = re.findall(r"\[`([\w/]+\.py):(\d+)`\]\(\.\./\.\./src/tinydiffusion/([\w/]+\.py)#L(\d+)\) \| `([^`]+)`",
                      readme)
    assert len(rows) >= 15
    source = TUTORIAL.parents[1] / "src" / "tinydiffusion"
    for shown, line, linked, linked_line, code in rows:
        assert (shown, line) == (linked, linked_line), f"{shown}:{line} links to {linked}#L{linked_line}"
        lines = (source / shown).read_text().splitlines()
        found = [number for number, text in enumerate(lines, 1) if code in text]
        assert code in lines[int(line) - 1], f"{shown}:{line} no longer holds `{code}` (now at line(s) {found})"


MACHINE_PATH = re.compile(r"(/work/|/tmp/|/var/tmp/|/home/|/Users/|/root/|[A-Z]:\\\\)")


def load_runner():
    """docs/tutorial/execute.py as a module."""
    return load_script(TUTORIAL / "execute.py", "tutorial_execute")


def test_committed_outputs_name_no_machine_paths():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    outputs = json.dumps([cell.outputs for cell in code_cells(notebook)])
    assert not MACHINE_PATH.findall(outputs)
    assert not MACHINE_PATH.findall((TUTORIAL / "figures" / "results.json").read_text())
    runner = load_runner()  # and a full run's outputs are scrubbed before they are written
    text = f"figures in {TUTORIAL}/figures, run in /tmp/tinydiffusion-tutorial-x1y2/tiny, cache {Path.home()}/.cache"
    assert runner.scrub_text(text) == "figures in figures, run in <temporary folder>/tiny, cache ~/.cache"


@pytest.mark.parametrize("how", [["--fast"], []])  # the flag, or only the variable set
def test_the_runners_fast_mode_writes_over_nothing_and_leaves_nothing(how, tmp_path, monkeypatch):
    import tempfile

    import nbclient

    seen = {}

    class Client:  # stands for the kernel: records the mode and writes a figure where the notebook would
        def __init__(self, notebook, resources, **options):
            self.folder = Path(resources["metadata"]["path"])

        def execute(self):
            seen["fast"] = os.environ.get("TINYDIFFUSION_TUTORIAL_FAST")
            out = Path(os.environ.get("TINYDIFFUSION_TUTORIAL_OUT") or self.folder / "figures")
            out.mkdir(parents=True, exist_ok=True)
            (out / "schedules.png").write_bytes(PNG)
            seen["out"] = out

    monkeypatch.setattr(nbclient, "NotebookClient", Client)
    runner = load_runner()
    here = tmp_path / "tutorial"
    here.mkdir()
    (here / NOTEBOOK.name).write_bytes(NOTEBOOK.read_bytes())
    monkeypatch.setattr(runner, "HERE", here)
    monkeypatch.setattr(runner, "NOTEBOOK", here / NOTEBOOK.name)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.setenv("TINYDIFFUSION_TUTORIAL_FAST", "1")
    monkeypatch.delenv("TINYDIFFUSION_TUTORIAL_OUT", raising=False)
    monkeypatch.setattr(sys, "argv", ["execute.py", *how])
    assert runner.main() == 0
    assert seen["fast"] == "1" and not seen["out"].exists()  # a fast run, its figures in a folder now removed
    assert (here / NOTEBOOK.name).read_bytes() == NOTEBOOK.read_bytes() and not (here / "figures").exists()
    assert list((tmp_path / "tmp").iterdir()) == []


def test_the_notebook_in_fast_mode_writes_its_figures_elsewhere_and_cleans_up(tmp_path):
    """As in Jupyter with TINYDIFFUSION_TUTORIAL_FAST=1: the first cell sends figures to a folder of the session's
    own, removed when the kernel ends, never to figures/ beside the notebook."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    setup = code_cells(notebook)[0].source + "\nprint('OUT', OUT.resolve())\nprint('WORK', WORK.name)\n"
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "TINYDIFFUSION_TUTORIAL_FAST": "1", "TMPDIR": str(tmp_path / "tmp"), "OMP_NUM_THREADS": "1",
           "MPLBACKEND": "Agg"}
    env.pop("TINYDIFFUSION_TUTORIAL_OUT", None)
    result = subprocess.run([sys.executable, "-c", setup], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"OUT {tmp_path / 'tmp'}" in result.stdout and "1 CPU thread\n" in result.stdout
    assert not (tmp_path / "figures").exists() and list((tmp_path / "tmp").iterdir()) == []
