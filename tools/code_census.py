"""The size of the package's source, and the files one command runs through (issue 47's before-and-after figures).

    python tools/code_census.py                      # this checkout's src/tinydiffusion
    python tools/code_census.py --trace -- train --preset smoke --max-steps 1 --run-dir /tmp/census --no-progress

Static: the number of modules and lines, and the largest class and function (by lines, decorators and docstrings
included). With --trace, the command runs in this process under sys.setprofile and the script lists the package's
files whose code ran (a module imported counts, as its body runs): what a reader may meet following that command.
To measure another tree, put its src/ first on the path: `PYTHONPATH=OLD/src python tools/code_census.py ...`.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path


def census(package: Path) -> dict:
    modules = sorted(package.rglob("*.py"))
    lines, classes, functions = 0, [], []
    for path in modules:
        text = path.read_text()
        lines += len(text.splitlines())
        for node in ast.walk(ast.parse(text)):
            first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))]) \
                if hasattr(node, "lineno") else 0
            where = f"{path.relative_to(package.parent)}:{getattr(node, 'name', '')}"
            if isinstance(node, ast.ClassDef):
                classes.append((node.end_lineno - first + 1, where))
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.append((node.end_lineno - first + 1, where))
    return {"modules": len(modules), "lines": lines, "largest class": max(classes),
            "largest function": max(functions)}


def traced_files(package: Path, argv: list[str]) -> list[str]:
    """The package's files whose code runs during `tinydiffusion ARGV`, imports included."""
    from tinydiffusion.cli import main

    root, seen = str(package), set()

    def profile(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.startswith(root):
            seen.add(frame.f_code.co_filename)

    sys.setprofile(profile)
    try:
        status = main(argv)
    finally:
        sys.setprofile(None)
    if status:
        raise SystemExit(f"the traced command failed with status {status}")
    return sorted(str(Path(f).relative_to(package.parent)) for f in seen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trace", action="store_true", help="run the command after -- and list the files it calls")
    parser.add_argument("command", nargs="*", help="the tinydiffusion command to trace, after --")
    args = parser.parse_args()
    import tinydiffusion

    package = Path(tinydiffusion.__file__).parent
    for key, value in census(package).items():
        print(f"{key}: {value}")
    if args.trace:
        files = traced_files(package, args.command)
        print(f"files called by `tinydiffusion {' '.join(args.command)}`: {len(files)}")
        for name in files:
            print(f"  {name}")


if __name__ == "__main__":
    main()
