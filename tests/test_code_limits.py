"""Files a reader takes in one sitting (issue 29): no function over 80 lines, no class over 250, and package faces
(`__init__.py`) of at most 80 lines, all through src/. Measured from a definition's first line (its decorators
included) to its last."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "tinydiffusion"
MAX_FUNCTION_LINES = 80
MAX_CLASS_LINES = 250
MAX_INIT_LINES = 80


def definitions(path: Path):
    """(kind, qualified name, lines) of every function and class in a file, nested ones included."""
    tree = ast.parse(path.read_text(), filename=str(path))

    def walk(node, prefix: str):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                kind = "class" if isinstance(child, ast.ClassDef) else "function"
                yield kind, f"{prefix}{child.name}", child.end_lineno - first + 1
                yield from walk(child, f"{prefix}{child.name}.")
            else:
                yield from walk(child, prefix)

    yield from walk(tree, "")


def too_long() -> list[str]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        where = path.relative_to(SRC.parent)
        lines = len(path.read_text().splitlines())
        if path.name == "__init__.py" and lines > MAX_INIT_LINES:
            found.append(f"{where}: {lines} lines (a package face holds at most {MAX_INIT_LINES})")
        for kind, name, length in definitions(path):
            limit = MAX_CLASS_LINES if kind == "class" else MAX_FUNCTION_LINES
            if length > limit:
                found.append(f"{where}: {kind} {name} is {length} lines (at most {limit})")
    return found


def test_functions_classes_and_package_faces_fit_their_limits():
    assert too_long() == []


def test_the_check_sees_a_long_function_and_a_long_class(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    path = tmp_path / "long.py"
    path.write_text(f"@decorated\ndef f():\n{body}\n\nclass C:\n" + "    pass\n" * MAX_CLASS_LINES)
    lengths = {name: (kind, length) for kind, name, length in definitions(path)}
    assert lengths["f"] == ("function", MAX_FUNCTION_LINES + 2)
    assert lengths["C"] == ("class", MAX_CLASS_LINES + 1)
