"""Every relative link in README.md and docs/**/*.md resolves: the file (or folder) exists inside the repository,
and an #anchor into a markdown file names one of its headings, slugged as GitHub does. Pure text; no network."""
import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]

FENCE = re.compile(r"^ {0,3}(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
INLINE = re.compile(r"\]\(\s*<?([^)\s>]*)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")  # [text](target) and ![alt](target)
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")  # [label]: target
HTML = re.compile(r"<(?:a|img)\b[^>]*?\b(?:href|src)\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def markdown_files(root=ROOT):
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def prose_lines(text):
    """(line number, line) outside fenced code blocks, with inline code spans blanked out."""
    fence = None
    for number, line in enumerate(text.splitlines(), 1):
        opened = FENCE.match(line)
        if fence is None and opened:
            fence = opened.group(1)
        elif fence is not None:
            if line.strip().startswith(fence):
                fence = None
        else:
            yield number, CODE_SPAN.sub("``", line)


def slug(heading):
    """GitHub's anchor for a heading: markup dropped, lowercase, punctuation dropped except hyphens, spaces to
    hyphens (letters, digits and underscores stay)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link or image in a heading keeps its text
    text = re.sub(r"<[^>]+>", "", text).lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LMN")
    return kept.replace(" ", "-")


def anchors(path):
    found, seen = set(), {}
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        heading = HEADING.match(line)
        if heading:
            base = slug(heading.group(2).replace("``", ""))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path):
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        for pattern in (INLINE, REFERENCE, HTML):
            for match in pattern.finditer(line):
                yield number, match.group(1)


def broken_links(files, root=ROOT):
    """'file:line: target (why)' for every relative link that does not resolve."""
    root = root.resolve()
    problems = []
    for path in files:
        for number, target in links(path):
            if not target or SCHEME.match(target) or target.startswith("//"):
                continue
            where = f"{path.relative_to(root)}:{number}: {target}"
            file_part, _, anchor = target.partition("#")
            file_part = unquote(file_part.split("?")[0])
            if not file_part:
                resolved = path
            elif file_part.startswith("/"):
                resolved = (root / file_part.lstrip("/")).resolve()
            else:
                resolved = (path.parent / file_part).resolve()
            if not resolved.is_relative_to(root):
                problems.append(f"{where} (outside the repository)")
            elif not resolved.exists():
                problems.append(f"{where} (no such file)")
            elif anchor and resolved.suffix == ".md" and resolved.is_file() \
                    and unquote(anchor).lower() not in anchors(resolved):
                problems.append(f"{where} (no heading with that anchor)")
    return problems


def test_every_relative_link_in_readme_and_docs_resolves():
    problems = broken_links(markdown_files())
    assert not problems, "broken links:\n" + "\n".join(problems)


def linked_pages(index):
    return {(index.parent / unquote(t.partition("#")[0])).resolve() for _, t in links(index)
            if t and not SCHEME.match(t)}


def test_docs_index_links_every_page():
    """docs/README.md links every page outside docs/reports/, and the reports' own index; docs/reports/README.md
    links every page under docs/reports/."""
    index, reports = ROOT / "docs" / "README.md", ROOT / "docs" / "reports"
    every = markdown_files()[1:]
    shelves = [p for p in every if not p.is_relative_to(reports)] + [reports / "README.md"]
    for this, pages in ((index, shelves), (reports / "README.md", [p for p in every if p.is_relative_to(reports)])):
        targets = linked_pages(this)
        missing = [str(p.relative_to(ROOT)) for p in pages if p != this and p.resolve() not in targets]
        assert not missing, f"{this.relative_to(ROOT)} does not link: {missing}"


@pytest.mark.parametrize("heading,expected", [
    ("Train on your own images", "train-on-your-own-images"),
    ("Distillation: images in one to four steps", "distillation-images-in-one-to-four-steps"),
    ("Edit pictures: inpainting, image-to-image", "edit-pictures-inpainting-image-to-image"),
    ("On a GPU (one H200)", "on-a-gpu-one-h200"),
    ("`train_step` and [the loop](x.md)", "train_step-and-the-loop"),
    ("Time to quality: the same FD in half the time?", "time-to-quality-the-same-fd-in-half-the-time"),
])
def test_slugs_follow_github(heading, expected):
    assert slug(heading.replace("`", "")) == expected


def test_a_broken_link_or_anchor_is_reported(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# A page\n\n## Its part\n\n## Its part\n")
    (tmp_path / "pic.png").write_bytes(b"")
    (tmp_path / "README.md").write_text(
        "# Top\n[ok](docs/page.md#its-part) [ok](docs/page.md#its-part-1) ![ok](pic.png) [ok](#top)\n"
        "[ok](https://example.com/x.md) `[code](missing.md)`\n```\n[fenced](missing.md)\n```\n"
        "[gone](docs/gone.md) ![gone](docs/pic.png) [bad anchor](docs/page.md#nothing) [self](#nowhere)\n"
        "[outside](../elsewhere.md)\n[ref]: docs/missing.md\n")
    problems = broken_links(markdown_files(tmp_path), tmp_path)
    assert [p.split(": ", 1)[1] for p in problems] == [
        "docs/gone.md (no such file)", "docs/pic.png (no such file)",
        "docs/page.md#nothing (no heading with that anchor)", "#nowhere (no heading with that anchor)",
        "../elsewhere.md (outside the repository)", "docs/missing.md (no such file)"], problems


def test_the_quickstart_installs_in_a_virtual_environment_only_what_sampling_needs():
    """A system Python may refuse a bare `pip install` (PEP 668): the virtual environment comes first; the first
    install has no extras (sampling needs none: test_sample_needs_none_of_the_extras), the tests' install has."""
    quickstart = ROOT.joinpath("README.md").read_text().split("## Quickstart", 1)[1].split("```bash\n", 1)[1]
    venv, install, tests = quickstart.split("```", 1)[0].splitlines()[:3]
    assert venv == "python3 -m venv .venv && . .venv/bin/activate"
    assert "pip install -e . &&" in install and "[" not in install and "tinydiffusion sample" in install
    assert 'pip install -e ".[test]"' in tests


def test_every_static_server_in_the_docs_listens_on_this_machine_only():
    """`python -m http.server` listens on every interface unless told otherwise."""
    for path in markdown_files():
        for line in path.read_text().splitlines():
            if "http.server" in line:
                assert "--bind 127.0.0.1" in line, f"{path.relative_to(ROOT)}: {line}"
