"""The documentation's layout holds: every page sits on one shelf (tutorial, how-to, reference, explanation) or
with the measurement reports, the index lists each shelf and the reports apart, the generated reference pages are
what the code gives now, each report names its CPU, and the README stays a five-minute read with nothing a
newcomer cannot run or place (no ../shared paths, no machine names). Pure text; no network, no torch."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SHELVES = {"tutorial": "Tutorial", "how-to": "How-to guides", "reference": "Reference",
           "explanation": "Explanation", "reports": "Reports"}
README_MOST_LINES = 220
MACHINE_NAME = re.compile(r"\bmachines? [A-D]\b|\bmachine-[a-d]\b", re.IGNORECASE)


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def index_sections() -> dict[str, str]:
    """docs/README.md's level-2 sections by heading."""
    text = (DOCS / "README.md").read_text(encoding="utf-8")
    return {part.split("\n", 1)[0].strip(): part for part in re.split(r"^## ", text, flags=re.M)[1:]}


def make_reference():
    return load_script(DOCS / "make_reference.py", "make_reference")


def test_every_page_is_on_exactly_one_shelf():
    misplaced = [str(p.relative_to(ROOT)) for p in pages()
                 if p != DOCS / "README.md" and p.relative_to(DOCS).parts[0] not in SHELVES]
    assert not misplaced, f"pages outside docs/{{{','.join(SHELVES)}}}/: {misplaced}"


def test_the_index_has_a_section_for_each_shelf_and_the_reports_apart():
    sections = index_sections()
    for folder, heading in SHELVES.items():
        assert heading in sections, f"docs/README.md has no '## {heading}' section"
        linked = re.findall(r"\]\(([^)#]+)", sections[heading])
        assert linked and all(target.startswith(f"{folder}/") for target in linked), \
            f"'## {heading}' in docs/README.md should link the pages of docs/{folder}/ only: {linked}"
    assert list(sections)[-1] == "Reports", "the reports come after the four shelves"
    assert "reports/README.md" in sections["Reports"]
    assert (DOCS / "reports" / "README.md").is_file()


def test_the_generated_reference_pages_are_current():
    stale = make_reference().stale_pages()
    assert not stale, f"docs/reference/{stale} is stale: run python docs/make_reference.py"


def test_the_command_reference_lists_every_command():
    from tinydiffusion.cli import COMMANDS

    text = (DOCS / "reference" / "commands.md").read_text(encoding="utf-8")
    for command in COMMANDS:
        name = command.__name__.rsplit(".", 1)[1].replace("_", "-")
        assert f"\n## {name}\n" in text and f"usage: tinydiffusion {name}" in text, name


def test_every_report_names_its_cpu_in_its_header():
    reports = [p for p in (DOCS / "reports").glob("*.md") if p.name != "README.md"]
    assert reports
    for report in reports:
        header = "\n".join(report.read_text(encoding="utf-8").splitlines()[:25])
        assert re.search(r"\bCPU|EPYC|Xeon|x86_64", header), f"{report.relative_to(ROOT)} names no CPU in its header"


@pytest.mark.parametrize("path", [ROOT / "README.md", *pages()], ids=lambda p: str(p.relative_to(ROOT)))
def test_no_page_names_a_machine_by_letter(path):
    """A report names the CPU type ("2-core AMD EPYC with AVX-512"), not the session's name for a machine."""
    found = MACHINE_NAME.findall(path.read_text(encoding="utf-8"))
    assert not found, f"{path.relative_to(ROOT)} names {found}"


def test_the_readme_is_a_five_minute_read():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MOST_LINES, f"README.md has {len(text.splitlines())} lines"
    assert "../shared" not in text, "README.md points at ../shared, a folder no user has"
    assert "## Commands" not in text and "| command |" not in text, "--help and docs/reference/commands.md hold it"
    for folder in SHELVES:
        assert f"docs/{folder}/" in text, f"README.md does not link the {folder} shelf"


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs the git checkout")
def test_run_lock_files_are_never_committed():
    tracked = subprocess.run(["git", "ls-files", "docs"], cwd=ROOT, capture_output=True, text=True, check=True)
    locks = [line for line in tracked.stdout.splitlines() if Path(line).name == ".lock"]
    assert not locks, f"committed run lock files: {locks}"
    ignored = subprocess.run(["git", "check-ignore", "-q", "docs/reports/runs/colour/some-run/.lock"], cwd=ROOT)
    assert ignored.returncode == 0, ".gitignore does not keep run lock files under docs/ out"
