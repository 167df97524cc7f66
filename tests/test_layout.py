"""The package's shape (issue #19): one predictor class, and no import circle between its modules.

Imports inside functions count too: a lazy import that closes a circle still
ties the two modules together (``run.py`` <-> ``onnx_model.py`` did).
"""
from __future__ import annotations

import ast
import re
from pathlib import Path


PACKAGE = Path(__file__).resolve().parents[1] / "src" / "maskcls"


def module_name(f: Path) -> str:
    parts = list(f.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (at the top or inside functions)."""
    files = {module_name(f): f for f in PACKAGE.rglob("*.py")}
    g: dict[str, set[str]] = {}
    for mod, f in files.items():
        g[mod] = set()
        package = mod.split(".") if f.name == "__init__.py" else mod.split(".")[:-1]
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = (".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
                        if node.level else node.module or "")
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            g[mod] |= {t for t in targets if t in files and t != mod}
    return g


def find_circle(g: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``g`` (depth-first search), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for t in sorted(g[m]):
            if state.get(t) == 1:
                return path[path.index(t):] + [t]
            if t not in state and (found := visit(t)):
                return found
        state[m] = 2
        path.pop()
        return None

    for m in sorted(g):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_import_graph_and_a_circle_are_found():
    g = import_graph()
    assert "maskcls.run" in g["maskcls.predict"] and "maskcls.onnx_model" in g["maskcls.run"]  # lazy import too
    g["maskcls.onnx_model"].add("maskcls.run")  # the circle this issue removed is found when present
    assert set(find_circle(g)) == {"maskcls.onnx_model", "maskcls.run"}


def test_no_import_circle_in_the_package():
    assert find_circle(import_graph()) is None


def test_one_predictor_class():
    pattern = re.compile(r"^class \w*Predictor\b", re.M)
    found = [f.name for f in PACKAGE.rglob("*.py") for _ in pattern.finditer(f.read_text())]
    assert found == ["predict.py"]
