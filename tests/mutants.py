"""Known bugs to plant in the reductions, one at a time (*mutants*), to measure how sharp the
differential of tests/protogen.py is: each switches off one condition of the partial-order reduction,
the symmetry reduction, ``observed_when``, the search shortcuts or a declaration check, by a textual
edit of the method's source (which must match exactly once, so the list follows the code).
``hunt(mutant, specs, seed)`` runs the differential (reduced against unreduced) on generated specs
until it disagrees.  bench/bench_reduction_mutants.py runs them all; tests/test_reduction_mutants.py
keeps the kills."""
from __future__ import annotations

import contextlib
import importlib
import inspect
import random
import textwrap
import time
from dataclasses import dataclass

import protogen


@dataclass(frozen=True)
class Mutant:
    name: str
    what: str  # the condition switched off, in the words of docs/engine.md and model/por.py
    module: str
    qualname: str  # Class.method
    edits: tuple  # (old, new) text pairs, each old occurring exactly once in the method's source
    draw: str = "any"  # which generated specs: any, wide, when (observed_when invariants), aux (ops on a second
    # thread), fifo (one role takes from the FIFO, another puts, each declared per transition), unobserved
    # (the invariant reads a reducible actor's field, its observed= planted wrong), detach (worlds with symmetric ranks,
    # whose roles may post an op and never wait for it), rooted (worlds with symmetric ranks, with the rest of the
    # collective kinds, data that may differ by group rank, and ops that may address a symmetric rank), positions
    # (those of them whose symmetric role contributes its x to a call whose results go by group rank), ranked
    # (worlds with symmetric ranks whose guards and effects may read c.rank)


R, W, L, F = "lockstep.spec.reduce", "lockstep.spec.world", "lockstep.spec.lang", "lockstep.spec.wire"
MUTANTS = (
    Mutant("c2-control-state", "C2: a change of an observed control state is visible",
           R, "Reductions._visibility", (('if "ctl" in vis:', 'if False:'),)),
    Mutant("c2-pending", "C2: a change of an observed pending op is visible",
           R, "Reductions._visibility", (('if "pending" in vis:', 'if False:'),)),
    Mutant("c2-variables", "C2: a change of an observed variable (the actor's or a shared one) is visible",
           R, "Reductions._visibility", (('for f in role.observed if f != "ctl" and f != "pending"]',
                                          'for f in role.observed if f in ()]'),)),
    Mutant("c2-exit", "C2: a step that ends the process (other ranks' ops then fail) is visible",
           R, "Reductions._visibility", ((',\n             "    if nst[1] is None: return True"]', ']'),)),
    Mutant("c2-monitored", "C2: a step that fires an event a monitor watches, or has a check, is visible",
           R, "Reductions._visibility", (('''"    if action[2] in HOT: return True",''', ""),)),
    Mutant("when-field", "observed_when: a change of the field where the condition holds is visible",
           R, "Reductions._when_visible", ((" or (before and get(st) != get(nst))", ""),), draw="when"),
    Mutant("when-condition", "observed_when: a change of the condition is visible",
           R, "Reductions._when_visible", (("before != bool(self._call(where, cond, nst[1])) or ", ""),), draw="when"),
    Mutant("when-read-check", "observed_when: a property read where the condition is false is refused",
           R, "Reductions._check_reads", (("if v is not None and not self._call(", "if False and not self._call("),),
           draw="when"),
    Mutant("c0-conflicts", "C0/C1: an actor taken alone reads nothing another may write, writes nothing another touches",
           R, "Reductions.por_complete", (("if _conflict(fp, o):", "if False:"),)),
    Mutant("c0-fifo", "C0 for FIFO ends: a put waiting for room or a take waiting for an item could be enabled",
           R, "Reductions.por_complete", (("if P or T:", "if False:"),), draw="fifo"),
    Mutant("c1-posting-order", "C1 for threads of a rank: no other thread of the rank may still post an op",
           R, "Reductions.por_complete", (("if inside is None and ctl in self._posting[i] and self._thread_may_post(state, i):",
                                           "if False:"),), draw="aux"),
    Mutant("c3-back-edges", "C3: a control state left by a back edge is not taken alone (no progress measure)",
           R, "Reductions._complete_static", (("if ctl in self._back[i] and role.progress is None:", "if False:"),)),
    Mutant("c3-progress", "C3 with a progress measure: a step taken alone from a back-edge state raises it",
           R, "Reductions.por_no_ignoring", (("(strict and not after > before)", "False"),)),
    Mutant("faults-kill", "C1 with faults: a writing or ending step is not taken alone while its rank may be killed",
           R, "Reductions.por_independent", (("and self._rank_may_die(state, i):", "and False:"),)),
    Mutant("c1-posts-exit", "C1: a step that ends the actor while its rank has ops posted without blocking outstanding",
           R, "Reductions.por_independent", (("if state[3] and self._voids_posts(state, i, moves):", "if False:"),),
           draw="detach"),
    Mutant("faults-named", "C1 with faults: a named fault or a step off a hang point is not taken alone",
           R, "Reductions.por_independent", (("return not blocks_faults", "return True"),)),
    Mutant("observed-check", "declarations: a property read of something a reduced role does not observe is refused",
           R, "Reductions._check_reads", (("    if bad:\n", "    if False:\n"),), draw="unobserved"),
    Mutant("footprint-check", "declarations: a write outside a transition's footprint is refused",
           L, "Ctx._outside", (("    reads, writes, puts, takes = self.footprint()\n", "    return\n"),)),
    Mutant("symmetry-check", "symmetry: a property that tells symmetric actors apart is refused",
           R, "Reductions._check_symmetric", (('''    """A property of''', '''    return True, reads  # every permutation checked, it says\n    """A property of'''),),
           draw="wide"),
    Mutant("symmetry-peer", "symmetry: an op addressed to one symmetric rank, blocking or posted, is refused",
           F, "Fabric._refuse_symmetric_peer", (("if self._names_symmetric_rank(op):", "if False:"),), draw="rooted"),
    Mutant("symmetry-positions", "symmetry: a call whose results go by group rank (or whose afters write shared variables), "
           "leading elsewhere when symmetric ranks swap states, is refused",
           F, "Fabric._complete_collective", (("if self._sym_ranks and (", "if False and ("),), draw="positions"),
    Mutant("symmetry-rank-read", "symmetry: a symmetric actor's step that reads its rank must do the same at every symmetric rank",
           W, "Protocol._effects", (("if read:", "if False:"),), draw="ranked"),
    Mutant("symmetry-when-rank", "symmetry: a monitor's when() that reads a symmetric actor's rank must keep or drop the event alike "
           "at every symmetric rank", "lockstep.spec.monitor", "MonitorSet._advance", (("if ev.rank_read:", "if False:"),),
           draw="ranked"),
    Mutant("concretize-ample", "counterexamples: a path of orbit representatives is made concrete over every step, not an ample set",
           R, "Reductions.concretize", (("self._por_on = self._ample_shortcut = self._twin_steps = False", "pass"),), draw="wide"),
    Mutant("concretize-message", "counterexamples: the violation's message is taken again at the concrete run's end",
           "lockstep.model.checker", "Explorer.violation_result", (("w.verdict == v.verdict:", "w.verdict == v.verdict and False:"),), draw="wide"),
    Mutant("twins-fabric", "twins shortcut: not taken in a state with fabric entries (they name actors)",
           W, "Protocol.raw_successors", (("and self._sym_on and not fab and self._monitor_set is None",
                                           "and self._sym_on and self._monitor_set is None"),), draw="detach"),
    Mutant("ample-first-c2", "ample-first shortcut: C2, the chosen actor's steps are invisible",
           W, "Protocol._ample_first", (("and not any(self.por_visible(state, a, n) for a, n in moves) \\\n", "\\\n"),)),
)


class EditMismatch(Exception):
    pass


@contextlib.contextmanager
def planted(m: Mutant):
    """The mutant in place: its method recompiled from the edited source, restored on exit."""
    mod = importlib.import_module(m.module)
    cls_name, meth = m.qualname.split(".")
    cls = getattr(mod, cls_name)
    original = cls.__dict__[meth]
    src = textwrap.dedent(inspect.getsource(original))
    for old, new in m.edits:
        if src.count(old) != 1:
            raise EditMismatch(f"{m.name}: {old!r} occurs {src.count(old)} times in {m.module}.{m.qualname}, not once")
        src = src.replace(old, new)
    ns: dict = {}
    exec(compile(src, f"<mutant {m.name}>", "exec"), vars(mod), ns)  # noqa: S102 - the project's own source, edited
    setattr(cls, meth, ns[meth])
    try:
        yield
    finally:
        setattr(cls, meth, original)


def draw(rng: random.Random, i: int, kind: str) -> dict:
    """The i-th spec of a run, as bench_differential.py draws it (every 4th wide), filtered by kind."""
    wide = kind == "wide" or i % 4 == 3
    while True:
        d = protogen.describe(protogen.random_pick(rng), wide=wide, detach=kind == "detach",
                              rooted=kind in ("rooted", "positions"), ranked=kind == "ranked")
        if kind in ("detach", "rooted", "ranked") and not d["sym"]:
            continue
        if kind == "positions" and not protogen.by_position(d):
            continue
        if kind == "when" and not (d["inv"] or {}).get("when"):
            continue
        if kind == "aux" and not d["aux_ops"]:
            continue
        if kind == "fifo" and not protogen.fifo_ends(d):
            continue
        if kind == "unobserved" and not protogen.unobserved_reads(d):
            continue
        return d


def hunt(m: Mutant, specs: int, seed: int) -> dict:
    rng = random.Random(seed)
    t0 = time.perf_counter()
    for i in range(specs):
        d = draw(rng, i, m.draw)
        with planted(m):
            try:
                diffs = protogen.compare(d, workers=False)
            except Exception as e:  # the mutant broke the checker outright: killed, but say so
                diffs = [f"raised {type(e).__name__}: {e}"]
        if diffs:
            clean = protogen.compare(d, workers=False)  # the kill is the mutant's, not a standing disagreement
            return {"mutant": m.name, "killed_at": i + 1, "confirmed": not clean, "difference": diffs[0][:300],
                    "seconds": round(time.perf_counter() - t0, 1), "spec": d}
    return {"mutant": m.name, "killed_at": None, "seconds": round(time.perf_counter() - t0, 1)}
