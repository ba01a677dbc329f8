"""No import circles among tinydiffusion's modules (issue 47): every `import` counts, at the top of a file or inside a
function, except those under `if TYPE_CHECKING:`, which never run. A circle means a low module climbs to a high
one, so the low one cannot be read, tested or imported (by `--help`, say) without the high one."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(node: ast.AST, name: str, is_package: bool, modules: set[str]) -> set[str]:
    """The modules of `modules` one import statement in module `name` imports: `from pkg import x` names the
    module pkg.x where there is one, else pkg itself (its __init__)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in modules}
    base = name if is_package else name.rpartition(".")[0]
    if node.level:
        base = ".".join(base.split(".")[:len(base.split(".")) - node.level + 1])
        target = f"{base}.{node.module}" if node.module else base
    else:
        target = node.module or ""
    found = {f"{target}.{alias.name}" for alias in node.names} & modules
    return found | ({target} & modules if len(found) < len(node.names) else set())


def type_checking_only(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and ast.unparse(test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")


def import_graph(root: Path) -> dict[str, set[str]]:
    """Each module under `root` (a folder holding packages) and the modules under it that it imports."""
    paths = {module_name(path, root): path for path in sorted(root.rglob("*.py"))}
    graph = {}
    for name, path in paths.items():
        edges: set[str] = set()
        pending = [ast.parse(path.read_text(), filename=str(path))]
        while pending:
            node = pending.pop()
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges |= imported(node, name, path.name == "__init__.py", set(paths))
            pending += [child for child in ast.iter_child_nodes(node) if not type_checking_only(child)]
        graph[name] = edges - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = stack[stack.index(node):]
                del stack[stack.index(node):]
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_module_imports_itself_through_others():
    graph = import_graph(SRC)
    assert len(graph) > 100 and "tinydiffusion.samplers" in graph["tinydiffusion.pipeline"]
    assert cycles(graph) == [], "\n".join(" <-> ".join(component) for component in cycles(graph))


def test_the_check_sees_a_circle_through_a_function_s_import_and_not_a_type_checking_one(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "low.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .high import H\n")
    (package / "high.py").write_text("from . import low\n")
    (package / "sub" / "__init__.py").write_text("from .a import A\n")
    (package / "sub" / "a.py").write_text("def f():\n    from ..sub import b\n")
    (package / "sub" / "b.py").write_text("import pkg.sub.c\n")
    (package / "sub" / "c.py").write_text("from pkg.sub import a\n")
    graph = import_graph(tmp_path)
    assert graph["pkg.low"] == set() and graph["pkg.high"] == {"pkg.low"} and graph["pkg.sub"] == {"pkg.sub.a"}
    assert cycles(graph) == [["pkg.sub.a", "pkg.sub.b", "pkg.sub.c"]]
