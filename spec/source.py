"""A guard as text: its label (``why=`` or a named guard function), else an anonymous lambda's
expression read from the spec's source file.

Reading source is the fallback: a spec author who names a guard (``def queue_not_full(c)``) or gives
``why="queue not full"`` decides what every explanation shows.  A lambda's text comes from the
module's syntax tree (the lambda whose line and instruction positions match), so several lambdas on
one line are told apart; a spec built from exec'd text has no source and shows the function's name.
"""
from __future__ import annotations

import ast
from functools import lru_cache
from typing import Callable


@lru_cache(maxsize=64)
def module_tree(filename: str):
    try:
        with open(filename, encoding="utf-8") as f:
            return ast.parse(f.read())
    except (OSError, SyntaxError, ValueError):
        return None


@lru_cache(maxsize=64)
def _index(filename: str):
    """A module's functions by (name, line) (the ``def`` line and each decorator's) and its lambdas by
    line: one walk of the tree per file, where every function looked up walked it whole (a spec built
    afresh for each search has new lambdas each time, and each stuck state's explanation looked its
    guards up again: 80 ms a lookup in a 1,200-line module)."""
    tree = module_tree(filename)
    if tree is None:
        return None
    defs: dict = {}
    lambdas: dict = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for line in (node.lineno, *(d.lineno for d in node.decorator_list)):
                defs.setdefault((node.name, line), node)
        elif isinstance(node, ast.Lambda):
            lambdas.setdefault(node.lineno, []).append(node)
    return defs, lambdas


@lru_cache(maxsize=4096)
def node_of(fn: Callable):
    """The ast node (Lambda or FunctionDef) of a function, or None (memoised: a search that passes many
    stuck states, a cross-check's, explains the same guards again and again)."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return None
    index = _index(code.co_filename)
    if index is None:
        return None
    defs, lambdas = index
    line = code.co_firstlineno
    if fn.__name__ != "<lambda>":
        return defs.get((fn.__name__, line))
    cands = lambdas.get(line, [])
    if len(cands) <= 1:
        return cands[0] if cands else None
    # several lambdas start on this line: the one whose body spans this code's instruction positions
    pos = {(ln, col) for ln, _e, col, _ec in code.co_positions() if ln is not None and col is not None}

    def score(n):
        b = n.body
        return sum(1 for ln, col in pos if (b.lineno, b.col_offset) <= (ln, col) <= (b.end_lineno, b.end_col_offset))
    return max(cands, key=score)


def text(node) -> str:
    try:
        return " ".join(ast.unparse(node).split())
    except Exception:  # noqa: BLE001 - unparse of odd nodes: no text rather than a crash
        return ""


def guard_text(t, limit: int = 160) -> str:
    """What a transition's guard says: its label, a lambda's expression, else the function's name;
    "always" for no guard."""
    if t.guard_label:
        return t.guard_label
    if t.guard is None:
        return "always"
    node = node_of(t.guard)
    if isinstance(node, ast.Lambda):
        s = text(node.body)
        if s:
            return s if len(s) <= limit else s[:limit - 1] + "…"
    return getattr(t.guard, "__name__", "guard")


__all__ = ["guard_text", "module_tree", "node_of", "text"]
