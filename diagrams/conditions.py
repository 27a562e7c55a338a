"""Why a thread with no enabled transition waits: the condition, read from the role's own transitions.

A thread that is not blocked in an op but has no enabled transition waits on a condition: the
guards of the transitions out of its control state.  A guard is shown in its author's words where
it has them (``why=``, or a named guard function's name: Transition.guard_label), else as its source
text (a lambda's expression, spec/source.py); a lambda guard is split into its conjuncts, each
evaluated at the end state (which part is false).  This module also lists the shared variables the
guard reads (``c.g.NAME``, also through helper functions it calls) with their values, and finds
which other threads write those variables (``c.gset(NAME=...)`` in their roles' transition
functions): the threads that could make the condition true are the ones this thread waits for.

Everything comes from the spec's source and the state; nothing is written down a second time.  When
the source cannot be read (a spec built from exec'd text), the condition is named by its transitions
only.
"""
from __future__ import annotations

import ast
import inspect
import re
import textwrap
from dataclasses import dataclass, field
from typing import Any, Callable

from ..spec.source import module_tree, node_of, text


@dataclass
class GuardInfo:
    transition: str
    text: str                        # the guard's expression (or "always" / "fault: NAME")
    reads: tuple[str, ...] = ()      # shared variables it reads
    false_parts: tuple[str, ...] = ()  # conjuncts that are false at the end state
    doc: str = ""
    labelled: bool = False           # the text is the author's (``why=`` or a named guard), not source


@dataclass
class Condition:
    actor: str
    state: str
    guards: list[GuardInfo] = field(default_factory=list)
    reads: dict[str, str] = field(default_factory=dict)    # shared variable -> its value at the end, shown
    constants: dict[str, str] = field(default_factory=dict)  # free variables the guards use (e.g. depth=2)
    writers: dict[str, list[str]] = field(default_factory=dict)  # shared variable -> actor labels that write it
    helpers: dict[str, str] = field(default_factory=dict)  # "room(c)" -> the helper lambda's expression

    def short(self) -> str:
        """One line: what the thread waits for (the false parts of the guards that read shared
        variables, which another thread can make true, first)."""
        normal = [g for g in self.guards if not g.text.startswith("fault")]
        shared = [g for g in normal if g.reads] or normal
        parts = []
        for g in shared:
            if g.labelled:  # the author's words for the guard, when it is false
                if g.false_parts and g.text not in parts:
                    parts.append(g.text)
                continue
            for f in (g.false_parts or (g.text,)):
                if f not in parts and (g.labelled or not g.reads or any(r in f for r in g.reads) or f in self.helpers):
                    parts.append(f)
            if not parts and g.false_parts:
                parts.append(g.false_parts[0])
        shown = [plain(f"{p} [{self.helpers[p]}]" if p in self.helpers else p) for p in parts]
        head = " or ".join(shown) or "no transition enabled"
        # the values worth showing: those the shown text names, and for a guard shown in words, those
        # its false conjuncts (and the helpers they call) name
        detail = [f"{p} {self.helpers.get(p, '')}" for g in shared if g.labelled for p in g.false_parts]
        text = plain(" ".join(shown + detail))
        vals = [f"{k}: {v}" for k, v in self.reads.items() if k in text] + [
            f"{k}={v}" for k, v in self.constants.items() if re.search(rf"\b{re.escape(k)}\b", text)]
        return f"waits until {head}" + (f" ({', '.join(vals)})" if vals else "")

    def lines(self) -> list[str]:
        """Every transition out of the state and why it cannot fire."""
        out = []
        for g in self.guards:
            why = f" — false: {'; '.join(g.false_parts)}" if g.false_parts else ""
            out.append(f"{g.transition}: {g.text}{why}")
        return out


def plain(expr: str) -> str:
    """A guard's text as a reader says it: ``c.g.d_in`` (shared) and ``c.v.x`` (own) as bare names."""
    return re.sub(r"\bc\.[gv]\.", "", expr)


# -- source of a function (spec/source.py; the names below are this module's since before) -----------
_module_tree, _node_of, _text = module_tree, node_of, text


def _closure(fn) -> dict[str, Any]:
    code = getattr(fn, "__code__", None)
    cells = getattr(fn, "__closure__", None) or ()
    out = {}
    if code is not None:
        for name, cell in zip(code.co_freevars, cells):
            try:
                out[name] = cell.cell_contents
            except ValueError:
                pass
    return out


def _attr_reads(node, obj: str) -> list[str]:
    """NAME for every ``c.<obj>.NAME`` in node."""
    out = []
    for n in ast.walk(node):
        if (isinstance(n, ast.Attribute) and isinstance(n.value, ast.Attribute) and n.value.attr == obj
                and isinstance(n.value.value, ast.Name)):
            out.append(n.attr)
    return list(dict.fromkeys(out))


def shared_reads(fn: Callable, _seen=None) -> tuple[list[str], dict[str, Any]]:
    """(shared variables fn reads, simple constants from its closure), following helpers it calls."""
    seen = _seen if _seen is not None else set()
    if fn is None or id(fn) in seen:
        return [], {}
    seen.add(id(fn))
    node = _node_of(fn)
    if node is None:
        return [], {}
    reads = _attr_reads(node, "g")
    consts: dict[str, Any] = {}
    clo = _closure(fn)
    used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
    for name, val in clo.items():
        if name not in used:
            continue
        if callable(val) and hasattr(val, "__code__"):
            r, c = shared_reads(val, seen)
            reads += [x for x in r if x not in reads]
            consts.update(c)
        elif isinstance(val, (int, float, str, bool)):
            consts[name] = val
    return reads, consts


def shared_writes(fn: Callable, _seen=None) -> list[str]:
    """Shared variables fn writes (``c.gset(NAME=...)``), following helper functions in its closure."""
    seen = _seen if _seen is not None else set()
    if fn is None or id(fn) in seen:
        return []
    seen.add(id(fn))
    node = _node_of(fn)
    if node is None:
        return []
    out = []
    for n in ast.walk(node):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "gset":
            out += [k.arg for k in n.keywords if k.arg]
    used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
    for name, val in _closure(fn).items():
        if name in used and callable(val) and hasattr(val, "__code__"):
            out += shared_writes(val, seen)
    return list(dict.fromkeys(out))


def role_writes(role) -> set[str]:
    """Every shared variable some transition of the role writes."""
    out: set[str] = set()
    for t in role.transitions:
        for fn in (t.do, t.after, t.choose, t.op):
            if fn is not None:
                out.update(shared_writes(fn))
    return out


def _helper_calls(fn) -> dict[str, str]:
    """``room(c)`` -> ``len(c.g.d_in) < depth`` for every call in a lambda guard to a helper lambda
    from its closure."""
    node = _node_of(fn)
    out: dict[str, str] = {}
    if node is None:
        return out
    clo = _closure(fn)
    for n in ast.walk(node):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in clo:
            h = _node_of(clo[n.func.id]) if callable(clo[n.func.id]) else None
            if isinstance(h, ast.Lambda):
                out[_text(n)] = _text(h.body)
    return out


def _conjuncts(node) -> list:
    body = node.body if isinstance(node, ast.Lambda) else None
    if body is None:
        return []
    if isinstance(body, ast.BoolOp) and isinstance(body.op, ast.And):
        return list(body.values)
    return [body]


def _false_parts(fn, ctx) -> list[str]:
    """The conjuncts of a lambda guard that are false in ctx (empty when it cannot tell)."""
    node = _node_of(fn)
    if not isinstance(node, ast.Lambda) or not node.args.args:
        return []
    arg = node.args.args[0].arg
    env = dict(_closure(fn))
    env[arg] = ctx
    out = []
    for part in _conjuncts(node):
        try:
            val = eval(compile(ast.Expression(body=part), "<guard>", "eval"), fn.__globals__, env)  # noqa: S307 - the spec's own code
        except Exception:  # noqa: BLE001 - a conjunct that only makes sense after an earlier one
            return out
        if not val:
            out.append(_text(part))
    return out


def show(value) -> str:
    if isinstance(value, (tuple, list)):
        return f"{len(value)} item{'s' if len(value) != 1 else ''}"
    s = str(value)
    return s if len(s) <= 24 else s[:23] + "…"


def condition(world, state, i: int) -> Condition:
    """Why actor i of ``world`` (a spec Protocol) cannot move in ``state``."""
    try:
        from ..spec.machine import Ctx  # read-only use of the spec language's transition context
    except ImportError:  # the spec language moved: guards are still named, only not evaluated
        Ctx = None

    actors, g, _fu = state[:3]
    a = world.actors[i]
    ctl, v, _pend = actors[i]
    role = a.role
    cond = Condition(actor=a.label, state=ctl)
    reads: list[str] = []
    consts: dict[str, Any] = {}
    for tidx in role.by_src.get(ctl, ()):
        t = role.transitions[tidx]
        if t.fault is not None:
            cond.guards.append(GuardInfo(t.name, f"fault: {t.fault}", doc=t.doc))
            continue
        if t.guard is None:
            cond.guards.append(GuardInfo(t.name, "quiescent (only when nothing else can move)" if t.quiescent else "always",
                                         doc=t.doc))
            continue
        label = t.guard_label
        node = _node_of(t.guard)
        if label:
            text = label
        elif isinstance(node, ast.Lambda):
            text = _text(node.body)
        elif node is not None:
            text = f"{t.guard.__name__}(…)" + (f": {inspect.getdoc(t.guard).splitlines()[0]}" if inspect.getdoc(t.guard) else "")
        else:
            text = getattr(t.guard, "__name__", "guard")
        for call, body in _helper_calls(t.guard).items():
            cond.helpers.setdefault(call, body)
        r, c = shared_reads(t.guard)
        reads += [x for x in r if x not in reads]
        consts.update(c)
        try:
            ctx = Ctx(v, g, world.params, a.rank, None, world, i) if Ctx else None
            if label:  # the author's words name the guard; its false conjuncts (a lambda's) are the detail
                false = (_false_parts(t.guard, ctx) or [label]) if ctx is not None and not t.guard(ctx) else []
            else:
                false = _false_parts(t.guard, ctx) if ctx is not None else []
        except Exception:  # noqa: BLE001 - a context the guard cannot read: the guard is named, not evaluated
            false = []
        cond.guards.append(GuardInfo(t.name, textwrap.shorten(text, 160), tuple(r), tuple(false), t.doc, bool(label)))
    for name in reads:
        if g != () and hasattr(g, name):
            cond.reads[name] = show(getattr(g, name))
    for name, val in consts.items():
        cond.constants[name] = show(val)
    for j, b in enumerate(world.actors):
        if j == i:
            continue
        w = role_writes(b.role)
        for name in reads:
            if name in w:
                cond.writers.setdefault(name, []).append(b.label)
    return cond


__all__ = ["Condition", "GuardInfo", "condition", "shared_reads", "shared_writes", "role_writes"]
