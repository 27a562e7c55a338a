"""The package's structure: model/ modules import alone and without cycles; checks go through one
engine; optional model features are declared."""
from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODEL = ROOT / "model"
MODULES = sorted(p.stem for p in MODEL.glob("*.py") if p.stem != "__init__")


def _model_imports(path: pathlib.Path, top_level_only: bool) -> set[str]:
    """The model/ modules ``path`` imports (relative imports inside model/)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                out.add(node.module.split(".")[0])
            else:
                out.update(a.name for a in node.names)
    return out & set(MODULES)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    color: dict[str, int] = {}
    stack: list[str] = []

    def visit(u):
        color[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if color.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if color.get(v) is None:
                c = visit(v)
                if c:
                    return c
        stack.pop()
        color[u] = 2
        return None

    for u in sorted(graph):
        if color.get(u) is None:
            c = visit(u)
            if c:
                return c
    return None


def test_model_has_no_import_cycles():
    """Module-level imports between model/ modules form no cycle; neither do all imports (function-level
    ones included) once the one compatibility wrapper, ``checker.check`` -> engine, is left out."""
    top = {m: _model_imports(MODEL / f"{m}.py", True) for m in MODULES}
    assert _cycle(top) is None, f"import cycle at module level: {' -> '.join(_cycle(top))}"
    every = {m: _model_imports(MODEL / f"{m}.py", False) for m in MODULES}
    every["checker"] = every["checker"] - {"engine"}
    assert _cycle(every) is None, f"import cycle: {' -> '.join(_cycle(every))}"
    assert "checker" not in every["result"] and not every["result"], "result.py depends on nothing in model/"


@pytest.mark.parametrize("module", MODULES)
def test_model_module_imports_alone(module):
    """Each model/ module imports by itself in a fresh interpreter (no hidden order dependence), and
    spec-free modules pull in neither torch nor graphviz."""
    code = (f"import sys, lockstep.model.{module}\n"
            "bad = [m for m in ('torch', 'graphviz') if m in sys.modules]\n"
            "assert not bad, bad\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_old_result_import_paths_still_work():
    from lockstep.model import checker, result

    for name in ("Bounds", "Stats", "Result", "peak_rss_mb"):
        assert getattr(checker, name) is getattr(result, name)
