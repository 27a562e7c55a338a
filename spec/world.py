"""World semantics: a ``Protocol`` places actors (a rank's thread running a role) on ranks, declares
the process groups and shared variables (per-world, e.g. the rank0 queues), and implements the
checker's ``Model`` interface:

- actor steps: a local transition, or issuing an op (the actor then waits in its source state);
- fabric steps: a collective completes when every member's next call on the group is posted
  (signatures compared), a send completes with its matching recv;
- failure steps (backend profile): an op whose partner's process is gone fails, and the actor goes to
  the transition's ``on_error`` state;
- quiescent steps: watchdogs and timed waits (``timeout=`` on an op, ``quiescent=True`` on a local
  transition) fire only when no other step can happen — time passes only when nothing else can —
  and only after a fault was injected: deadlines are the designed recovery from faults, so a
  fault-free run that can only continue through a timeout is stuck;
- fault steps, enabled by configuration and at most ``max_faults`` per run: named fault transitions
  (a throw at a named point), ``crash`` (the process dies, anywhere) and ``hang`` (the process wedges,
  alive, at a message boundary its role declares in ``hang_points``).

A state where no step but a fault can happen and some actor is still waiting is stuck: STRANDED when
a waiter's partner is gone, wedged or idle for good, DEADLOCK when every partner is itself waiting.
Faults never rescue a stuck state: it is reported as the violation it is, and the search ends at its
depth.  The faults that may still strike there are offered as its successors all the same (a rank can
crash in a hung job too); so a step that leads into a stuck state never disables a fault, which the
partial-order reduction relies on (reduce.py, ``por_independent``).  An end where every process
finished or failed is clean or FAIL_FAST (crash beats hang).

Matching, completion and failure of fabric ops (queues, buffered messages, posted ops and their waits)
live in wire.py; reductions (partial order, symmetry) in reduce.py, explanations (describe, waiting) in
explain.py; states are the typed tuples of state.py.
"""
from __future__ import annotations

import difflib
import operator
import struct
from collections import namedtuple
from dataclasses import dataclass, field
from itertools import compress
from typing import Any, Callable, Iterable

from ..model.api import DEADLOCK, FAIL_FAST, STRANDED, WRONG_GROUP, SpecError, Violation
from .explain import Explanation
from .fabric import COLLECTIVES, ROOTED, Group, Op, Post, check_op, check_splits, parse_profile, ranks_text
from ..model.por import ample
from .lang import BUILTIN_TERMINAL, DEAD, DONE, EXITED, FAILED, HUNG, PRIVATE, SYMMETRIC, ActorDef, Ctx, Role, Transition
from .reduce import AGGREGATE_FROM, MEMO_LIMIT, SYM_CHECK_BUDGET, Reductions, arrangements
from .wire import Fabric
from .monitor import MonitorSet
from .state import ActorState, PendingOp, WorldState
from .view import ALIVE, RAW, SHARED, WORLD, WorldView

_WORLD_FEATURES = frozenset({"reduction", "liveness-mode", "symmetry", "coverage", "keyed", "key-fields"})  # model/features.py
_LIVE_FEATURES = frozenset({"liveness"})
_FAST, _VIOLATION, _SLOW, _OP = 0, 1, 2, 3  # kinds of the records of Protocol._local_steps
_new_world = tuple.__new__  # WorldState(...) (or ActorState(...)) without the namedtuple's Python-level __new__


@dataclass
class Protocol(Fabric, Reductions, Explanation):
    """A world of actors over the fabric; implements model.api.Model."""

    name: str
    groups: dict[str, Group]
    actors: list[ActorDef]
    shared: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    backend: str = "gloo"
    faults: frozenset = frozenset()
    max_faults: int = 1
    crash_ranks: tuple[int, ...] = ()
    hang_ranks: tuple[int, ...] = ()
    phase_groups: dict[str, frozenset] = field(default_factory=dict)
    # (name, verdict, fn(view) -> msg|None): fn takes a view.WorldView; a two-argument fn(world, state)
    # is still accepted, but it reads raw tuples the world cannot watch, so it turns the
    # partial-order reduction off
    invariants: list[tuple[str, str, Callable]] = field(default_factory=list)
    pending_fn: Callable | None = None  # fn(view) -> bool: a liveness obligation is open
    variant: str | None = None
    symmetric: tuple[int, ...] = ()  # actor indices whose roles are interchangeable (symmetry reduction)
    monitors: list = field(default_factory=list)  # monitor.Monitor properties over transition event= names

    def __post_init__(self):
        try:
            self.profile = parse_profile(self.backend)
        except ValueError as e:
            raise SpecError(f"{self.name} backend", e) from None
        self._checked = False
        self._recovers: dict = {}  # op transition with a timeout -> whether the timeout is a designed recovery
        self.G = namedtuple("shared_vars", list(self.shared)) if self.shared else None
        self.ranks = sorted({a.rank for a in self.actors})
        self.actors_of_rank = {r: [i for i, a in enumerate(self.actors) if a.rank == r] for r in self.ranks}
        # ranks running two or more threads (their threads' steps may form one ample set: Reductions.por_sets)
        self._thread_ranks = tuple(r for r in self.ranks if len(self.actors_of_rank[r]) > 1)
        self._rank_mates = [self.actors_of_rank[a.rank] for a in self.actors]  # per actor, its rank's actors
        self._actor_rank = [a.rank for a in self.actors]
        self.member_of = {g: frozenset(grp.ranks) for g, grp in self.groups.items()}
        if self.pending_fn is not None:
            self.pending = self._pending
            self.actor_of = self._actor_of
        self.validate()
        self._sym_wanted = self._sym_on = len(self.symmetric) > 1
        self._sym_keys: dict = {}
        self._sym_checks = 0
        self._sym_ranks = frozenset(self.actors[i].rank for i in self.symmetric) if len(self.symmetric) > 1 else frozenset()
        # a role of a world without shared variables is private whether it says so or not: it has nothing
        # to share (the Ctx refuses ``c.g`` to it as to a declared one, so the reduction relies on nothing
        # unchecked).  Only where no invariant or obligation reads roles: a private role's variables that a
        # property reads must be declared ``observed``, which a spec that declared nothing did not promise
        self._implied_private = not self.shared and not self.invariants and self.pending_fn is None
        self._ctx_flags = [(PRIVATE if a.role.private or self._implied_private else 0) | (SYMMETRIC if i in self._sym_ranks_idx() else 0)
                           for i, a in enumerate(self.actors)]
        self._props = [(name, verdict, *_as_view_fn(fn)) for name, verdict, fn in self.invariants]
        self._pending_view = _as_view_fn(self.pending_fn) if self.pending_fn is not None else None
        # where a property's error is reported
        self._prop_what = [f"{self.name} invariant {name}" for name, _, _, _ in self._props]
        self._pending_what = f"{self.name} liveness obligation"
        self._por_reduce = True
        # two shortcuts of raw_successors that change no state the search reaches (tests turn them off
        # to compare): twins' steps left out (_twins), the ample set found first (_ample_first)
        self._twin_steps = self._ample_shortcut = True
        self._por_live = False
        raw = any(not viewed for _, _, _, viewed in self._props) or (self._pending_view is not None and not self._pending_view[1])
        self._por_actors = frozenset() if raw else self._por_eligible_actors()
        self._faults_possible = bool(("crash" in self.faults and self.crash_ranks) or ("hang" in self.faults and self.hang_ranks)
                                     or any(t.fault in self.faults for a in self.actors for t in a.role.transitions))
        if self.profile.eager_below > 0:
            # buffered messages name ranks and carry an order: no symmetry or partial-order argument
            # covers them yet, so eager profiles explore the full interleaving graph
            self.symmetric = ()
            self._sym_on = self._sym_wanted = False
            self._por_actors = frozenset()
        self._por_on = bool(self._por_actors)
        self._refresh_flags()
        self.fired: set = set()  # (actor index, transition index) of every actor step offered so far
        # how many such pairs there are: once ``fired`` holds them all, adding more changes nothing
        self._pairs_total = sum(len(a.role.transitions) for a in self.actors)
        # integer keys (``keyed``): per actor, its distinct actor states numbered in order of first
        # sight (value -> number, number -> the one object kept for it, id(that object) -> number), and
        # the shared variables likewise; never emptied, so a key stays valid for the world's lifetime
        self._anum: list[dict] = [{} for _ in self.actors]
        self._areps: list[list] = [[] for _ in self.actors]
        self._aids: list[dict] = [{} for _ in self.actors]
        self._gnum: dict = {}
        self._greps: list = []
        # (key, actors, shared, faults used, key fields) of the state keyed_successors expanded last
        self._kparent = None
        # a key's fields as bytes: the actors' numbers, the shared variables' number, the faults used
        self._key_fields = struct.Struct(f"<{len(self.actors) + 2}I")
        self._prepare()

    def forget_memos(self) -> None:
        """Empty the transition memos (a long trace replay moves on past states it never meets again)."""
        self._memo.clear()
        self._status_memo.clear()
        self._gone_memo.clear()
        self._fault_memo.clear()
        self._kfault_memo.clear()
        self._rank_fault_memo.clear()
        self._rank_status_memo.clear()
        self._err_memo.clear()

    def _prepare(self) -> None:
        """(Re)build the per-actor step tables and empty the memos; run again by ``init_states`` so a
        role changed after the world was built (tests plant bugs that way) is explored as it is now."""
        self._memo: dict = {}  # (actor, transition, vars[, shared]) -> _effects record
        self._blind: set = set()  # (role, transition, vars, shared[, op result]) found the same at every symmetric rank
        self.concretize_missed = 0  # counterexamples left as paths of orbit representatives (Reductions.concretize)
        # per whether faults are spent, per actor: actor state (private role) or (actor state, shared
        # variables' number in _gids) -> _local_steps
        self._local_memo = {nfl: [{} for _ in self.actors] for nfl in (False, True)}
        self._local_size = 0
        self._gids: dict = {}
        # the same, keyed by numbers (keyed_successors): actor state number (private role), or it
        # | shared variables' number << KEY_BITS -> _keyed_steps
        self._klocal_memo = {nfl: [{} for _ in self.actors] for nfl in (False, True)}
        self._err_memo: dict = {}  # (actor, its rank's actors' state numbers) -> what its error step adds to the key
        self._private = [bool(f & PRIVATE) for f in self._ctx_flags]
        # a role that issues ops blocks in them: keyed_successors' shortcut would mostly give up
        self._issues_ops = any(t.op is not None for a in self.actors for t in a.role.transitions)
        self._status_memo: dict = {}
        self._gone_memo: dict = {}
        self._fault_memo: dict = {}
        self._kfault_memo: dict = {}  # _fault_memo's keys -> the faults as _fault_steps' keyed form
        self._rank_fault_memo: dict = {}  # (fault kind index, rank, keyed, its actors' key entries) -> _rank_fault
        self._rank_status_memo: dict = {}  # (rank, its actors' key entries) -> its status
        self._canon_memo: dict = {}  # symmetric actors' states -> their sorted order, () when already sorted
        self._twin_memo: dict = {}  # symmetric actors' states -> the later of equal ones (_twins)
        self._slice_memo: dict = {}  # a run of symmetric actors' states -> (_canon_perm, _twins) (successors)
        self._vis_fns: dict = {}  # actor -> its compiled por_visible (Reductions._visibility)
        self._when_fns: dict = {}  # role name -> its observed_when visibility test (Reductions._when_visible)
        self._pc_static: list = [{} for _ in self.actors]  # per actor, ctl -> Reductions._complete_static
        self._pi_static: list = [{} for _ in self.actors]  # per actor, ctl -> Reductions._independent_static
        self._sym_get = operator.itemgetter(*self.symmetric) if len(self.symmetric) > 1 else None
        sym = tuple(self.symmetric)
        self._sym_span = (sym[0], sym[-1] + 1) if len(sym) > 1 and sym == tuple(range(sym[0], sym[-1] + 1)) else None
        # view properties memoised on the values they read (_PropertyMemo)
        self._prop_memo = {fn: _PropertyMemo() for _, _, fn, viewed in self._props if viewed}
        if self._pending_view is not None and self._pending_view[1]:
            self._prop_memo[self._pending_view[0]] = _PropertyMemo(is_pending=True)
        # the same, for the permuted states the symmetry check evaluates (kept apart: a hit in
        # ``_prop_memo`` skips the read checks, which permuted states never went through)
        self._sym_memo = {fn: _PropertyMemo() for fn in self._prop_memo}
        # the classes of states on which a property's symmetry tree finished, or did not (_symmetry_proof)
        self._sym_proofs = {fn: _SymmetryMemo(self.symmetric) for fn in self._prop_memo} if len(self.symmetric) > 1 else {}
        # properties the symmetry check could only test with a few permutations on some state (the
        # CLI's note after a HOLDS): property -> what it read there, and how many states it was so on
        self.sym_detected: dict = {}
        self.sym_unproved: dict = {}
        self._sym_given_up: set = set()  # properties whose aggregates met a state with too many arrangements
        # what the properties read of reduced actors' observed variables, and the boolean observed
        # variables beside them at those reads (the CLI's observed_when hint: ``gated_fields``)
        self._gates: dict = {}  # (role, field, flag) -> values the flag had where the field was read
        self._flags: dict = {}  # (role, flag) -> values the flag had where properties read it
        self._gate_budget = GATE_EVALUATIONS
        self._fault_kinds = tuple((kind, ranks, ctl) for kind, ranks, ctl in
                                  (("crash", self.crash_ranks, DEAD), ("hang", self.hang_ranks, HUNG))
                                  if kind in self.faults and ranks)
        # per actor, per control state: the transitions a step may take (quiescent ones and named
        # faults this configuration never injects left out)
        self._steps = [{ctl: tuple((tidx, a.role.transitions[tidx]) for tidx in tids
                                   if not a.role.transitions[tidx].quiescent
                                   and (a.role.transitions[tidx].fault is None or a.role.transitions[tidx].fault in self.faults))
                        for ctl, tids in a.role.by_src.items()} for a in self.actors]
        self._monitor_set = MonitorSet(self, self.monitors) if self.monitors else None

    def _sym_ranks_idx(self) -> frozenset:
        return frozenset(self.symmetric) if len(self.symmetric) > 1 else frozenset()

    def validate(self) -> None:
        """Refuse a world whose declarations cannot be right (SpecError, one line): unknown groups,
        ranks outside the world, states no transition reaches, symmetric actors that differ."""
        if not isinstance(self.max_faults, int) or isinstance(self.max_faults, bool) or self.max_faults < 0:
            raise SpecError(f"{self.name} max_faults", ValueError(f"expected an int >= 0, got {self.max_faults!r}"))
        ranks = {a.rank for a in self.actors}
        neg = sorted({a.rank for a in self.actors if not isinstance(a.rank, int) or a.rank < 0}, key=str)
        if neg:
            raise SpecError(f"{self.name} actors", ValueError(f"ranks {neg}: expected ranks 0, 1, 2, ..."))
        for gname, grp in self.groups.items():
            bad = [r for r in grp.ranks if r not in ranks]
            if bad:
                raise SpecError(f"{self.name} group {gname}", ValueError(f"ranks {bad} run no actor"))
            if len(set(grp.ranks)) != len(grp.ranks):
                raise SpecError(f"{self.name} group {gname}", ValueError(f"a rank appears twice in {tuple(grp.ranks)}"))
            if grp.name != gname:
                raise SpecError(f"{self.name} group {gname}", ValueError(
                    f"declared under the name {gname!r} but named {grp.name!r}: ops name groups by one name"))
        for ph, gs in self.phase_groups.items():
            bad = sorted(x for x in gs if x not in self.groups)
            if bad:
                raise SpecError(f"{self.name} phase {ph}", ValueError(f"unknown groups {bad}; declared: {sorted(self.groups)}"))
        for what, rs in (("crash_ranks", self.crash_ranks), ("hang_ranks", self.hang_ranks)):
            bad = [r for r in rs if r not in ranks]
            if bad:
                raise SpecError(f"{self.name} {what}", ValueError(f"ranks {bad} run no actor"))
        # a fault no transition declares is never injected: refused where it looks like a misspelling of
        # one that is (a spec's list of faults may name ones that only some configurations declare)
        known = sorted({"crash", "hang"} | {t.fault for a in self.actors for t in a.role.transitions if t.fault})
        for f in sorted(set(self.faults) - set(known), key=str):
            near = difflib.get_close_matches(str(f), known, n=1, cutoff=0.6)
            if near:
                raise SpecError(f"{self.name} faults", ValueError(
                    f"{f!r}: no such fault here; did you mean {near[0]!r}? (a misspelt fault is never injected; "
                    f"known: {', '.join(known)})"))
        seen_roles = {}
        for a in self.actors:
            if seen_roles.setdefault(a.role.name, a.role) is not a.role:
                raise SpecError(f"{self.name}", ValueError(f"two different roles are named {a.role.name!r}"))
        for role in seen_roles.values():
            _validate_role(role)
        sym = self.symmetric
        if len(sym) > 1:
            if len(set(sym)) != len(sym) or any(not 0 <= i < len(self.actors) for i in sym):
                raise SpecError(f"{self.name} symmetric", ValueError(
                    f"expected distinct indices into actors (0..{len(self.actors) - 1}), got {tuple(sym)}"))
            first = self.actors[sym[0]]
            for i in sym:
                a = self.actors[i]
                if a.role is not first.role or a.thread != first.thread:
                    raise SpecError(f"{self.name} symmetric", ValueError(
                        f"symmetric actors must run one role on one thread name: {first.label} runs {first.role.name}, "
                        f"{a.label} runs {a.role.name}"))
            srank = [self.actors[i].rank for i in sym]
            if len(set(srank)) != len(srank) or any(len(self.actors_of_rank[r]) != 1 for r in srank):
                raise SpecError(f"{self.name} symmetric", ValueError("symmetric actors must each be alone on its rank"))
            for what, rs in (("group", None), ("crash_ranks", self.crash_ranks), ("hang_ranks", self.hang_ranks)):
                sets = [grp.ranks for grp in self.groups.values()] if rs is None else [rs]
                for rr in sets:
                    inside = [r in rr for r in srank]
                    if any(inside) and not all(inside):
                        raise SpecError(f"{self.name} symmetric", ValueError(
                            f"symmetric ranks {srank} are not treated alike by {what} {tuple(rr)}"))

    def _note_gates(self, state, rec) -> None:
        """Record, for each observed variable of a reduced actor that a property read, the values of
        the role's boolean observed variables there (on the first ``GATE_EVALUATIONS`` evaluations)."""
        self._gate_budget -= 1
        pa, actors = self._por_actors, state[0]
        for i, f in rec:
            if i not in pa:
                continue
            role, v = self.actors[i].role, actors[i][1]
            if v is None or f not in role.observed or f not in v._fields:
                continue
            x = getattr(v, f)
            if isinstance(x, bool):
                self._flags.setdefault((role.name, f), set()).add(x)
            for b in role.observed:
                y = getattr(v, b, None) if b != f else None
                if isinstance(y, bool):
                    self._gates.setdefault((role.name, f, b), set()).add(y)

    def gated_fields(self) -> list[tuple[str, str, str, bool]]:
        """(role, field, flag, value): an observed variable the properties read only where a boolean
        observed variable of its role had one value, while that flag took both values where read.  The
        role could declare the field ``observed_when={field: lambda v: v.flag is value}``, and its steps
        that change the field elsewhere would become invisible: a hint for the user (the checker
        refuses the declaration where a property reads the field elsewhere after all)."""
        out = []
        for (role, f, b), seen in sorted(self._gates.items()):
            if len(seen) == 1 and self._flags.get((role, b)) == {False, True}:
                out.append((role, f, b, next(iter(seen))))
        return out

    def symmetry_candidates(self) -> list[tuple[int, ...]]:
        """Sets of actors (indices) that ``symmetric=`` could name and does not: two or more actors of one
        role on one thread name, each alone on its rank, in the same groups and treated alike by the
        crash and hang ranks (what ``validate`` asks of a declared set).  Whether anything else tells
        them apart (a step reading ``c.rank``, an op addressing one of them, a property) only the
        search finds out, and then refuses the declaration: a hint for the user, not a reduction."""
        declared = set(self.symmetric) if len(self.symmetric) > 1 else set()
        sets = [grp.ranks for grp in self.groups.values()] + [self.crash_ranks, self.hang_ranks]
        alike: dict = {}
        for i, a in enumerate(self.actors):
            if i in declared or len(self.actors_of_rank[a.rank]) != 1:
                continue
            alike.setdefault((id(a.role), a.thread, tuple(a.rank in rr for rr in sets)), []).append(i)
        return [part for ix in alike.values() if len(ix) > 1 for part in self._alike_on_steps(ix) if len(part) > 1]

    def _alike_on_steps(self, ix, sample: int = 300) -> list[tuple[int, ...]]:
        """``ix`` (actors of one role) split by what their steps do on inputs the search met (up to
        ``sample`` of the memoised (transition, variables, shared variables)): an SPMD role that branches
        on ``c.rank == 0`` splits into rank 0 and the rest, which may be declared symmetric."""
        inputs = []
        seen = set()
        g0 = self.G(**self.shared) if self.G else ()
        for key in self._memo:
            if key[0] in ix and key[1:] not in seen:
                seen.add(key[1:])
                inputs.append((key[1], key[2], key[3] if len(key) > 3 else g0))
                if len(inputs) >= sample:
                    break
        by_sig: dict = {}
        for j in ix:
            role, rank = self.actors[j].role, self.actors[j].rank
            sig = []
            for tidx, v, g in inputs:
                try:
                    sig.append(_outcome(self._effects_at(j, tidx, role.transitions[tidx], v, g, rank)[0]))
                except SpecError as e:
                    sig.append(("raises", str(e)))
            by_sig.setdefault(tuple(sig), []).append(j)
        return [tuple(p) for p in by_sig.values()]

    def _timeout_recovers(self, role: str, t: Transition) -> bool:
        r = self._recovers.get(id(t))
        if r is None:
            r = self._recovers[id(t)] = timeout_kind(role, t) == "recovers"
        return r

    def _check_declarations(self):
        """Spec mistakes a run may never reach, found before exploring: every op timeout says
        whether it is the designed recovery."""
        for a in self.actors:
            for t in a.role.transitions:
                if t.timeout and t.op is not None:
                    self._recovers[id(t)] = timeout_kind(a.role.name, t) == "recovers"
        self._checked = True


    # -- Model interface ----------------------------------------------------------------
    def init_states(self):
        if not self._checked:
            self._check_declarations()
        self._prepare()
        actors = tuple(ActorState(a.role.init, a.role.init_vars, None) for a in self.actors)
        g = self.G(**self.shared) if self.G else ()
        if self._monitor_set is not None:
            yield self._monitor_set.initial(WorldState(actors, g, 0, ()))
            return
        yield WorldState(actors, g, 0, ())

    def invariant(self, state):
        for (name, verdict, fn, _viewed), what in zip(self._props, self._prop_what):
            msg = self._property(what, fn, state)
            if msg:
                return Violation(verdict, f"{name}: {msg}", {"invariant": name})
        return None

    def _property(self, what: str, fn, state):
        """Evaluate a property on a view of ``state``; under reduction, check what it read.  A view
        property is memoised on the values it read (``_PropertyMemo``): an evaluation that reads the
        same fields with the same values takes the same path and returns the same result.  A hit
        whose result is a violation is evaluated again, so its message is the one this state gives."""
        memo = self._prop_memo.get(fn)
        out, reads = _MISS, None  # reads: what it read here (None: the raw state)
        if memo is not None:
            hit = memo.lookup_reads(state)
            if hit is not _MISS:
                out, reads = hit
        if out is _MISS or (out and not memo.is_pending):
            rec = set() if memo is not None or self._por_on else None
            try:
                out = fn(self, state, rec)
            except SpecError:
                raise
            except Exception as e:  # noqa: BLE001 - a spec bug, reported as such
                raise SpecError(what, e) from e
            if rec and self._por_on:
                # what the reduction must see: actors' fields (not whether they are alive, which no
                # reduced step changes unseen) and shared variables
                self._check_reads(what, [r for r in rec if (r[0] >= 0 and r[1] != ALIVE) or r[0] == SHARED], state, rec)
                if self._gate_budget > 0:
                    self._note_gates(state, rec)
            if memo is not None:
                memo.store(rec, state, out)
                reads = None if (WORLD, RAW) in rec else rec
        if self._sym_on:
            self._symmetry_proof(what, fn, memo, state, out, reads)
        return out

    def _symmetry_proof(self, what, fn, memo, state, out, reads) -> None:
        """Check that the property ``fn``, which gave ``out`` reading ``reads`` (None: the raw state),
        gives it on every permutation of the symmetric actors of ``state``: the whole decision tree
        of ``Reductions._check_symmetric``, once per class of states ``_SymmetryMemo`` shows to get
        the same tree.  Where the tree cannot finish (the property reads the raw state, or the tree
        outgrew its budget on this class) a swap, a rotation and the reversal are tried instead, on
        every such state while the search is young, then on one in eight: a detector, bounded in cost."""
        tree = True
        proofs = self._sym_proofs.get(fn) if reads is not None else None
        if proofs is not None:
            key = proofs.key(state)
            if key is not None:
                known = proofs.known.get(key)
                if known:
                    return  # proved for every state of this class
                if known is None:  # a class not met before: the whole tree
                    # An aggregate (it read every symmetric actor) has a leaf per distinct arrangement of
                    # them: the tree where there are few enough, until a state has too many; from then
                    # on the property's aggregates get the generators (the note says so).
                    if not proofs.aggregate(reads) or (
                            fn not in self._sym_given_up and arrangements(self._sym_parts(state)) <= SYM_CHECK_BUDGET):
                        finished, read = self._check_symmetric(what, self._prober(fn, memo), state, out, reads)
                        proofs.learn(read, state, finished)
                        return
                    self._sym_given_up.add(fn)
                tree = False  # the tree outgrew its budget on this class before, or gave up on aggregates
        if len(self.symmetric) == 2:  # the swap is the one other permutation: a proof, on every state
            self._check_symmetric(what, self._prober(fn, memo), state, out, reads, tree=tree)
            return
        if what not in self.sym_detected:  # what reads every symmetric actor, the raw state, or too much
            self.sym_detected[what] = "the raw state" if reads is None else "every symmetric actor at once"
        self.sym_unproved[what] = self.sym_unproved.get(what, 0) + 1
        self._sym_checks += 1
        if self._sym_checks <= 5000 or not self._sym_checks & 7:
            self._check_symmetric(what, self._prober(fn, memo), state, out, reads, tree=tree)

    def _prober(self, fn, memo):
        """state -> (the property ``fn`` there, what it read): ``_probe`` with the shadow memo."""
        shadow = self._sym_memo.get(fn)
        return lambda st: _probe(fn, self, st, memo, shadow)

    @property
    def features(self) -> frozenset:
        """What this world offers the checker (model/features.py); liveness only with an obligation."""
        return _WORLD_FEATURES | _LIVE_FEATURES if self.pending_fn is not None else _WORLD_FEATURES

    def _pending(self, state) -> bool:
        return bool(self._property(self._pending_what, self._pending_view[0], state))

    @staticmethod
    def _actor_of(action):
        if action is None:
            return None
        k = action[0]
        if k == "e" and action[1] < 0:
            return ("fabric", action[1])
        if k in ("t", "e", "x", "w"):
            return ("actor", action[1])
        if k in ("m", "p", "b", "r", "M", "P"):
            return ("fabric", action[1])
        return None  # faults are never owed a step under fairness

    # -- helpers ---------------------------------------------------------------------------
    def vars_of(self, state, role_name: str) -> list:
        return [st[1] for a, st in zip(self.actors, state[0]) if a.role.name == role_name]

    def rank_status(self, actors) -> dict[int, str]:
        """alive | gone (exited or crashed) | finished (returned, process alive: profiles whose finished
        peers linger) | hung | idle (alive, terminal, issues nothing more).  It depends only on each
        actor's control state and whether it waits on an op: memoised on that.  The dict returned is
        shared: callers must not change it."""
        key = tuple([(st[0], st[2] is None) for st in actors])
        out = self._status_memo.get(key)
        if out is None:
            out = self._rank_status(key)
            if len(self._status_memo) < MEMO_LIMIT:
                self._status_memo[key] = out
        return out

    def _gone_ranks(self, actors) -> frozenset:
        """The ranks whose status is ``gone``, memoised on the control states (which alone decide it)."""
        key = tuple([st[0] for st in actors])
        out = self._gone_memo.get(key)
        if out is None:
            status = self.rank_status(actors)
            out = frozenset(r for r, s in status.items() if s == "gone")
            if len(self._gone_memo) < MEMO_LIMIT:
                self._gone_memo[key] = out
        return out

    def _rank_status(self, key: tuple) -> dict[int, str]:
        """``rank_status`` of a state whose actors' (control state, whether it waits) are ``key``:
        each rank's status depends on its own actors' entries alone, memoised per rank."""
        memo = self._rank_status_memo
        out = {}
        for r, idxs in self.actors_of_rank.items():
            sub = tuple([key[i] for i in idxs])
            s = memo.get((r, sub))
            if s is None:
                s = self._one_rank_status(idxs, sub)
                if len(memo) < MEMO_LIMIT:
                    memo[(r, sub)] = s
            out[r] = s
        return out

    def _one_rank_status(self, idxs: list, sub: tuple) -> str:
        ctls = [c for c, _ in sub]
        if any(c in (FAILED, DEAD) for c in ctls):
            return "gone"
        if all(c == DONE for c in ctls):
            return "finished" if self.profile.finished_peer == "alive" else "gone"
        if any(c == HUNG for c in ctls):
            return "hung"
        if all(idle and (c in BUILTIN_TERMINAL or c not in self.actors[i].role.by_src) for i, (c, idle) in zip(idxs, sub)):
            return "idle"
        return "alive"

    def _terminal(self, i: int, ctl: str) -> bool:
        return ctl in BUILTIN_TERMINAL or ctl not in self.actors[i].role.by_src

    def _call(self, where: str, fn, *args):
        try:
            return fn(*args)
        except SpecError:
            raise
        except Exception as e:  # noqa: BLE001
            raise SpecError(where, e) from e

    def _kill_rank(self, actors: list, rank: int, ctl: str):
        # a failed, dead or wedged process keeps no variables: where exactly it stopped cannot matter
        # to anyone, so runs that differ only there end in one state
        for j in self.actors_of_rank[rank]:
            c = actors[j][0]
            if c not in (DONE, FAILED, DEAD):
                actors[j] = _new_world(ActorState, (ctl, None, None))

    def _finish(self, actors: list, i: int, ctl: str, v):
        if ctl in (FAILED, DEAD):  # a process that exits with an error takes its threads with it
            actors[i] = _new_world(ActorState, (ctl, None, None))
            self._kill_rank(actors, self.actors[i].rank, ctl)
        else:
            actors[i] = _new_world(ActorState, (ctl, v, None))

    def raw_successors(self, state, key=None, twins=None) -> Iterable:
        """The successors of ``state``: (action, next state or Violation) in a fixed order.  With
        ``key`` (``keyed_successors``: its ``state_key``), a successor made by a memoised local step
        comes as its key instead, built from ``key`` and the numbers the memo record carries.
        ``twins``: the symmetric actors whose own steps are left out (``_twins``; found here for a
        world without monitors)."""
        if len(state) > 4:  # a monitored world: its monitors advance around the world's steps (monitor.py)
            if self._twin_steps and self._sym_on and not state[3]:
                ms = self._monitor_set  # (without per-rank instances on symmetric ranks, actor states alone)
                twins = self._twins(state[0], state[4] if ms.moves_with_symmetry else None)
            return self._monitor_set.successors(state, self.raw_successors(WorldState(*state[:4]), twins=twins))
        actors, g, fu, fab = state
        keyed = key is not None and type(key) is int  # a state with fabric entries is its own key
        # symmetric actors equal to an earlier one: their own steps lead where the earlier one's do
        if twins is None and self._twin_steps and self._sym_on and not fab and self._monitor_set is None:
            twins = self._twins(actors)
        scanned = False  # _ample_first looked at every candidate and none qualifies
        built = None  # actor -> its successors, as _ample_first built them
        if self._ample_shortcut and self._por_on and not keyed:
            built = {}
            first = self._ample_first(state, twins, built)
            if first:
                return self._drop_gone_posts(first, state)
            scanned = first is not None
        if keyed:
            klocal = self._klocal_memo[fu >= self.max_faults]
            nums = self._key_fields.unpack(key.to_bytes(self._key_fields.size, "little"))
            gpos, gk_n = len(actors), nums[-2]
            gk = gk_n << KEY_BITS  # memo keys: actor state number | shared variables' number << KEY_BITS
            self._kparent = (key, actors, g, fu, nums)  # state_of and state_key build its successors' from it
        normal: list = []
        fire = self._fire
        no_faults_left = fu >= self.max_faults
        local = self._local_memo[no_faults_left]
        private = self._private
        gid = None  # the shared variables' interned number, looked up once per state
        pend_any = False
        used: list = []  # the (actor, transition) pairs of the memoised local steps offered
        slow = False  # whether a step came from _fire (its pairs are read off the output)
        new_world, world_state, fast, append = _new_world, WorldState, _FAST, normal.append
        # one pass: local steps of the actors not blocked, and the posted ops sorted by kind
        by_group: dict[str, list] = {}
        sends: list = []
        recvs: list = []
        arank = self._actor_rank
        exited = False
        track = len(self.fired) < self._pairs_total  # coverage still incomplete: note the pairs offered
        eps: list = []  # (ref, rank, op, pos) of the actors' posted ops, as _endpoints lists them
        for i, st in enumerate(actors):
            pend = st[2]
            if pend is not None:
                pend_any = True
                op = pend[1]
                kind = op.kind
                if kind != "wait":
                    eps.append((i, arank[i], op, pend[2]))
                if kind in COLLECTIVES:
                    if pend[2] == 0:
                        by_group.setdefault(op.group, []).append((i, arank[i], op, 0))
                elif kind == "send":
                    sends.append((i, arank[i], op, pend[2]))
                elif kind == "recv":
                    recvs.append((i, arank[i], op, pend[2]))
                continue
            ctl = st[0]
            if ctl in BUILTIN_TERMINAL:
                if ctl in EXITED:
                    exited = True
                continue
            if twins and i in twins:
                continue
            if keyed:
                mk = nums[i] if private[i] else nums[i] | gk
                entry = klocal[i].get(mk)
                if entry is None:
                    entry = self._keyed_steps(i, st, g, no_faults_left, nums[i], gk >> KEY_BITS)
                    if self._local_size < MEMO_LIMIT:
                        self._local_size += 1
                        klocal[i][mk] = entry
                if entry[2] is not None:  # local steps only: each successor is the key plus a constant
                    if entry[0] and track:
                        used.append(entry[0])
                    for a, d in entry[2]:
                        append((a, key + d))
                    continue
            else:
                if private[i]:
                    mk = st
                else:
                    if gid is None:
                        gid = self._gids.get(g)
                        if gid is None:
                            gid = len(self._gids) if len(self._gids) < MEMO_LIMIT else g
                            if gid is not g:
                                self._gids[g] = gid
                    mk = (st, gid)
                entry = local[i].get(mk)
                if entry is None:
                    entry = self._local_steps(i, st, g, no_faults_left)
                    if self._local_size < MEMO_LIMIT:
                        self._local_size += 1
                        local[i][mk] = entry
            pairs, items = entry[0], entry[1]
            if pairs and track:
                used.append(pairs)
            if built:
                moves = built.get(i)
                if moves is not None:
                    normal.extend(moves)
                    continue
            for kind, a, x, ng, dfu in items:
                if kind == fast:
                    if keyed:  # x: what the step adds to the key (_keyed_steps); the successor as its key
                        append((a, key + x))
                        continue
                    nl = list(actors)
                    nl[i] = x
                    append((a, new_world(world_state, (tuple(nl), g if ng is None else ng, fu + dfu if dfu else fu, fab))))
                elif kind == _OP:
                    if not keyed:
                        normal.append((a, self._posted(state, i, x, ng, dfu)))
                        continue
                    otidx, op, octl, nv, solo, by_pos = x
                    pos = 0 if solo and not fab else self._queue_pos(actors, fab, arank[i], op)
                    na = by_pos.get(pos)
                    if na is None:
                        na = by_pos[pos] = ActorState(octl, nv, PendingOp(otidx, op, pos))
                    # keyed: ng is the shared variables' number (_keyed_steps); the successor as its key
                    an = self._aids[i].get(id(na))
                    if an is None:
                        an = self._actor_number(i, na)
                        na = by_pos[pos] = self._areps[i][an]  # the kept object: found by id next time
                    nk = key + ((an - nums[i]) << (KEY_BITS * i))
                    if ng is not None:
                        nk += (ng - gk_n) << (KEY_BITS * gpos)
                    if dfu:
                        nk += dfu << (KEY_BITS * (gpos + 1))
                    normal.append((a, nk))
                elif kind == _VIOLATION:
                    normal.append((a, x))
                else:
                    slow = True
                    normal.extend(fire(state, i, a, x, ctl, st[1], g, fu))
        if fab:
            for ep in self._endpoints(actors, fab):
                if ep[0] >= 0:
                    continue
                op = ep[2]
                if op.kind in COLLECTIVES:
                    if ep[3] == 0:
                        by_group.setdefault(op.group, []).append(ep)
                elif op.kind == "send":
                    sends.append(ep)
                else:
                    recvs.append(ep)
        for gname, members in by_group.items():
            if len(members) != len(self.groups[gname].ranks):
                continue
            normal.append(self._complete_collective(state, gname, members))
        if sends or recvs:
            fifo = not self.profile.p2p_tags
            eager_on = self.profile.eager_below > 0
        for sref, src_rank, sop, spos in sends:
            if fifo and spos != 0:
                continue
            if eager_on and self.profile.eager(sop):
                normal.append(self._buffer_send(state, sref, sop))
                continue
            grp = self.groups[sop.group]
            src_local = grp.local(src_rank)
            dst_rank = grp.ranks[sop.peer]
            if fab and self._older_message(fab, sop, src_rank, dst_rank):
                continue
            for rref, r_rank, rop, rpos in recvs:
                if r_rank != dst_rank or rop.group != sop.group or rop.peer != src_local:
                    continue
                if fifo:
                    if rpos != 0:
                        continue
                elif rop.tag != sop.tag:
                    continue
                normal.append(self._complete_p2p(state, sref, sop, rref, rop))
        if fab:
            for rref, r_rank, rop, rpos in recvs:
                if fifo and rpos != 0:
                    continue
                k = self._message_for(fab, rop, r_rank)
                if k >= 0:
                    normal.append(self._take_message(state, rref, rop, k))
            for i, (ctl, v, pend) in enumerate(actors):
                if pend is not None and pend[1].kind == "wait":
                    step = self._wait_step(state, i)
                    if step is not None:
                        normal.append(step)
        # failure steps: an op whose partner's process is gone
        gone_waits = []
        if exited and (pend_any or fab):  # no posted op: no endpoints
            gone = self._gone_ranks(actors)
            if gone:  # else no op waits on a gone process
                if fab:
                    eps = self._endpoints(actors, fab)
                waits_on = self._waits_on_gone
                for ep in eps:
                    if waits_on(actors, fab, gone, ep) and not (twins and ep[0] in twins):
                        gone_waits.append(ep[0])
        if gone_waits and self.profile.gone_peer == "immediate":
            if keyed:
                for ref in gone_waits:
                    normal.append(self._keyed_error_step(state, ref, key, nums))
            else:
                for ref in gone_waits:
                    normal.append(self._error_step(state, ref))
        quiet: list = []
        # Deadlines are the designed recovery from faults: a run with no fault injected that can only
        # go on by letting a timeout fire is itself stuck (a protocol that always needs the PG timeout).
        # A timeout declared ``hangs`` never rescues a run: the waiter is reported as stranded.
        if not normal and fu > 0:
            if self.profile.gone_peer == "timeout":
                quiet.extend(self._error_step(state, ref) for ref in gone_waits)
            for i, (ctl, v, pend) in enumerate(actors):
                if ctl in BUILTIN_TERMINAL or (twins and i in twins):
                    continue
                role = self.actors[i].role
                if pend is not None:
                    t = role.transitions[pend[0]]
                    if t.timeout and self._timeout_recovers(role.name, t):
                        nl = list(actors)
                        self._finish(nl, i, t.timeout, v)
                        quiet.append((("x", i), WorldState(tuple(nl), g, fu, fab)))
                    continue
                for tidx in role.by_src.get(ctl, ()):
                    t = role.transitions[tidx]
                    if t.quiescent:
                        slow = True
                        quiet.extend(self._fire(state, i, tidx, t, ctl, v, g, fu))
        faults = self._fault_steps(state, key if keyed else None, twins) if self._fault_kinds and not no_faults_left else []
        if not normal and not quiet:
            stuck = self._stuck(state)
            if stuck is not None:  # the violation, then the faults that may still strike (module docstring)
                return [(None, stuck)] + (self._drop_gone_posts(faults) if fab else faults)
        out = normal + quiet + faults
        if fab or slow:  # else no successor holds a posted op (only _fire posts; a fault keeps the fabric)
            out = self._drop_gone_posts(out, state)
        if self._por_on and len(out) > 1 and (not scanned or (self._thread_ranks and self._rank_set_possible(state))):
            pa = self._por_actors
            if any(a[0] == "t" and a[1] in pa for a, _ in normal):
                out = ample(self, state, out, sets_only=scanned)  # (scanned: no actor qualifies alone)
                slow = True
        if len(self.fired) >= self._pairs_total:  # every transition of every actor has fired already
            return out
        if slow:
            self.fired.update((a[1], a[2]) for a, _ in out if a is not None and a[0] == "t")
        elif used:  # every actor step in ``out`` came from the memoised local steps
            self.fired.update(*used)
        return out

    def _posted(self, state, i, x, ng, dfu):
        """The successor of ``state`` in which actor i posts the op of a ``_OP`` record (x, ng, dfu)."""
        actors, g, fu, fab = state
        otidx, op, octl, nv, solo, by_pos = x
        pos = 0 if solo and not fab else self._queue_pos(actors, fab, self._actor_rank[i], op)
        na = by_pos.get(pos)
        if na is None:
            na = by_pos[pos] = ActorState(octl, nv, PendingOp(otidx, op, pos))
        nl = list(actors)
        nl[i] = na
        return _new_world(WorldState, (tuple(nl), g if ng is None else ng, fu + dfu, fab))

    def _ample_first(self, state, twins, built: dict):
        """The ample set ``raw_successors`` would pick, found without building the other actors'
        successors; () when no actor's steps qualify alone (the rule would reduce nothing, unless
        the threads of a rank qualify together: ``por_sets``, which the full pass tries); None when
        this shortcut cannot tell (then the full list is built and reduced).
        model/por.py's rule takes the first qualifying process in the order its steps appear, and an
        actor's memoised local steps come in actor order before anything else: so the first actor
        here, in actor order, whose steps qualify is the one the rule would take from the full list,
        provided the rule runs at all (two or more steps in the full list, faults included): the actor
        has two steps, or another actor has a step too (else the full pass finds out).  It stops at
        the first actor whose steps it cannot read from the memo (not memoised yet, or a step that is
        not a plain local step or an op post), so a spec error in an actor before the chosen one is
        raised where the full pass raises it; the steps of the actors after it are not evaluated in
        this state, and like every step the reduction postpones they are evaluated where they are
        taken (C3), which is all the footprint argument of model/por.py relies on.  The successors it built for actors whose steps
        do not qualify are left in ``built`` for the full pass."""
        actors, g, fu, fab = state
        pa = self._por_actors
        local = self._local_memo[fu >= self.max_faults]
        private = self._private
        gid = None
        other = False  # another actor (before this one) has a step
        for i, st in enumerate(actors):
            if st[2] is not None or st[0] in BUILTIN_TERMINAL or (twins and i in twins):
                continue
            if private[i]:
                entry = local[i].get(st)
            else:
                if gid is None:
                    gid = self._gids.get(g)
                    if gid is None:
                        return None
                entry = local[i].get((st, gid))
            if entry is None:
                return None
            items = entry[1]
            if not items:
                continue
            if any(r[0] == _SLOW for r in items):
                return None
            if i not in pa or self._pc_static[i].get(st[0]) is False or self._refused_alone(state, i, st[0]):
                other = True  # not eligible, or refused whatever its steps are
                continue
            moves = []
            for kind, a, x, ng, dfu in items:
                if kind == _FAST:
                    nl = list(actors)
                    nl[i] = x
                    moves.append((a, _new_world(WorldState, (tuple(nl), g if ng is None else ng, fu + dfu if dfu else fu, fab))))
                elif kind == _OP:
                    moves.append((a, self._posted(state, i, x, ng, dfu)))
                elif kind == _VIOLATION:
                    moves = None
                    break
            if moves is not None:
                built[i] = moves
                if not (len(moves) > 1 or other or self._another_step(state, i, twins, local, gid)):
                    return None  # one step and no other known: whether the rule runs is for the full pass to find
                if self.por_complete(state, i, moves) and not any(self.por_visible(state, a, n) for a, n in moves) \
                        and self.por_independent(state, i, moves, None) and self.por_no_ignoring(state, i, moves):
                    if len(self.fired) < self._pairs_total:
                        self.fired.update((i, a[2]) for a, _ in moves)
                    return moves
            other = True
        return ()

    def _rank_set_possible(self, state) -> bool:
        """Whether some rank has two or more threads that have not ended, none blocked in an op and
        none refused whatever its steps are (``por_sets`` may then find its threads' steps a set to
        take together)."""
        actors, pa, static = state[0], self._por_actors, self._pc_static
        for r in self._thread_ranks:
            n = 0
            for j in self.actors_of_rank[r]:
                ctl, v, pend = actors[j]
                if pend is not None:
                    break
                if v is not None and not self._terminal(j, ctl):
                    if j not in pa or static[j].get(ctl) is False or self._refused_alone(state, j, ctl):
                        break
                    n += 1
            else:
                if n > 1:
                    return True
        return False

    def _refused_alone(self, state, i, ctl) -> bool:
        """Whether ``por_independent`` refuses actor i's steps at ``ctl`` before looking at them: a
        step there writes shared variables while i's rank may still be killed, or interacts with
        the faults by itself while one can still be injected."""
        st = self._pi_static[i].get(ctl)
        if st is None:
            return False
        writes, blocks_faults = st
        if writes and self._rank_may_die(state, i):
            return True
        return blocks_faults and state[2] < self.max_faults and self._faults_possible

    def _another_step(self, state, i, twins, local, gid) -> bool:
        """Whether an actor after i has a memoised local step in ``state``."""
        actors = state[0]
        private = self._private
        for j in range(i + 1, len(actors)):
            st = actors[j]
            if st[2] is not None or st[0] in BUILTIN_TERMINAL or (twins and j in twins):
                continue
            entry = local[j].get(st if private[j] else (st, gid))
            if entry is not None and any(r[0] != _SLOW for r in entry[1]):
                return True
        return False

    def keyed_successors(self, state, key):
        """``raw_successors(state, key)``, with a shortcut for the states of a keyed world (no role
        issues ops: no posted op, no fabric entry, no failure step) where every actor's steps are
        memoised local steps and no crash or hang can strike: the successors are then the key plus
        each record's constant, in the same order.  Anything else goes through raw_successors."""
        if self._issues_ops or type(key) is not int:
            return self.raw_successors(state, key)
        actors, g, fu = state[0], state[1], state[2]
        if self._fault_kinds and fu < self.max_faults:
            return self.raw_successors(state, key)
        nums = self._key_fields.unpack(key.to_bytes(self._key_fields.size, "little"))
        gk = nums[-2] << KEY_BITS
        klocal = self._klocal_memo[fu >= self.max_faults]
        private = self._private
        out: list = []
        append = out.append
        used: list = []
        for i, st in enumerate(actors):
            if st[0] in BUILTIN_TERMINAL:
                continue
            if st[2] is not None:  # blocked in an op (a world with ops keyed by force: tests)
                return self.raw_successors(state, key)
            entry = klocal[i].get(nums[i] if private[i] else nums[i] | gk)
            if entry is None or entry[2] is None:  # not memoised yet, or not only local steps
                return self.raw_successors(state, key)
            if entry[0]:
                used.append(entry[0])
            for a, d in entry[2]:
                append((a, key + d))
        if not out:  # stuck, or only quiescent steps
            return self.raw_successors(state, key)
        self._kparent = (key, actors, g, fu, nums)
        if used and len(self.fired) < self._pairs_total:
            self.fired.update(*used)
        return out

    def _keyed_error_step(self, state, ref: int, key: int, nums) -> tuple:
        """``_error_step`` of actor ``ref`` in a keyed search (no fabric), the successor as its key.
        The step writes only the actors of ref's rank (ref goes to its op's ``on_error`` state; when
        that ends the process, the rank's other actors end too) and what each gets depends only on
        its own state and ref's: so what the step adds to the key is memoised on the numbers of
        the rank's actors."""
        mates = self._rank_mates[ref]
        mk = (ref, nums[ref]) if len(mates) == 1 else (ref,) + tuple([nums[j] for j in mates])
        d = self._err_memo.get(mk)
        if d is None:
            act, n = self._error_step(state, ref)
            d = 0
            for j in mates:
                if n[0][j] is not state[0][j]:
                    d += (self._actor_number(j, n[0][j]) - nums[j]) << (KEY_BITS * j)
            if len(self._err_memo) < MEMO_LIMIT:
                self._err_memo[mk] = d
        return ("e", ref), key + d

    def _keyed_steps(self, i, st, g, no_faults_left, an: int, gn: int) -> tuple:
        """``_local_steps`` of actor ``i`` in actor state number ``an`` under shared variables number
        ``gn``, each fast record carrying instead of the new actor state what the step adds to the
        state's key (``state_key``): the change of actor i's number, of the shared variables' number
        and of the faults used, each in its field.  A third item lists (action, what it adds) when
        every record is a fast one (else None)."""
        pairs, items = self._local_steps(i, st, g, no_faults_left)
        n = len(self.actors)
        out = []
        for k, a, x, ng, dfu in items:
            if k == _FAST:
                d = (self._actor_number(i, x) - an) << (KEY_BITS * i)
                if ng is not None:
                    d += (self._shared_number(ng) - gn) << (KEY_BITS * n)
                if dfu:
                    d += dfu << (KEY_BITS * (n + 1))
                out.append((k, a, d, None, 0))
            elif k == _OP:  # its new shared variables as their number (raw_successors' keyed op branch)
                out.append((k, a, x, None if ng is None else self._shared_number(ng), dfu))
            else:
                out.append((k, a, x, ng, dfu))
        only_fast = tuple((a, d) for _, a, d, _, _ in out) if all(r[0] == _FAST for r in out) else None
        return pairs, tuple(out), only_fast

    # -- integer keys (model/features.py's ``keyed``) ----------------------------------------------
    def keyed(self) -> bool:
        """Whether the explorer keys this search's states by numbers: the successors are the raw ones
        (no ample sets nor orbit representatives, which read whole states) and carry no monitors."""
        return not self._por_on and not self._sym_on and self._monitor_set is None

    def state_key(self, state):
        """One int: the number of each actor's state, then the shared variables' number, then the
        faults used, in fields of KEY_BITS bits (lowest first).  Equal keys exactly for equal states.
        A state with fabric entries or monitors is its own key."""
        if len(state) > 4 or state[3]:
            return state
        actors = state[0]
        p = self._kparent
        if p is not None and p[1] is not actors:  # a successor of the state expanded last: what changed
            key = p[0]
            nums = p[4]
            aids = self._aids
            for i in compress(_POSITIONS, map(operator.is_not, actors, p[1])):
                a = actors[i]
                x = aids[i].get(id(a))  # the object kept for a number (memoised steps return it)
                key += ((self._actor_number(i, a) if x is None else x) - nums[i]) << (KEY_BITS * i)
            n = len(actors)
            if state[1] is not p[2]:
                key += (self._shared_number(state[1]) - nums[n]) << (KEY_BITS * n)
            return key + ((state[2] - p[3]) << (KEY_BITS * (n + 1)))
        aids = self._aids
        out = []
        for i, a in enumerate(actors):
            n = aids[i].get(id(a))  # the object kept for a number: found without hashing it
            out.append(self._actor_number(i, a) if n is None else n)
        out.append(self._shared_number(state[1]))
        out.append(state[2])
        return int.from_bytes(self._key_fields.pack(*out), "little")

    def state_of(self, key):
        """The state whose ``state_key`` is ``key``.  A key that differs in one actor's field from the
        state last expanded by ``keyed_successors`` (a local step's successor) is built from that state."""
        if type(key) is not int:
            return key
        reps = self._areps
        p = self._kparent
        n = len(reps)
        if p is not None:
            d = key ^ p[0]
            low = d & ((1 << (KEY_BITS * n)) - 1)  # the actors' fields that differ
            i = (low.bit_length() - 1) // KEY_BITS
            if low and i == ((low & -low).bit_length() - 1) // KEY_BITS:  # one actor's field
                nl = list(p[1])
                nl[i] = reps[i][(key >> (KEY_BITS * i)) & KEY_MASK]
                high = d >> (KEY_BITS * n)
                if not high:
                    return _new_world(WorldState, (tuple(nl), p[2], p[3], ()))
                g = self._greps[(key >> (KEY_BITS * n)) & KEY_MASK] if high & KEY_MASK else p[2]
                return _new_world(WorldState, (tuple(nl), g, key >> (KEY_BITS * (n + 1)), ()))
        nums = self._key_fields.unpack(key.to_bytes(self._key_fields.size, "little"))
        return _new_world(WorldState, (tuple(map(list.__getitem__, reps, nums)), self._greps[nums[-2]], nums[-1], ()))

    def key_tables(self) -> list:
        """The values each field of an int key numbers (model/features.py's ``key-fields``): per actor
        its actor states, then the shared variables; the faults field is its own number."""
        return [*self._areps, self._greps, None]

    def key_parent(self, state, key) -> None:
        """Key the successors of ``state`` (keyed ``key``) that come next by what they change: an actor
        state, the shared variables or the faults used that is the very object it is in ``state``
        keeps its number from ``key`` (``state_key``'s successor case)."""
        if type(key) is int:
            nums = self._key_fields.unpack(key.to_bytes(self._key_fields.size, "little"))
            self._kparent = (key, state[0], state[1], state[2], nums)

    def key_number(self, field: int, value) -> int:
        """The number of ``value`` in field ``field`` of an int key (given now if it has none)."""
        n = len(self.actors)
        if field < n:
            return self._actor_number(field, value)
        if field == n:
            return self._shared_number(value)
        return value

    def _actor_number(self, i: int, a) -> int:
        table = self._anum[i]
        n = table.get(a)
        if n is None:
            n = len(self._areps[i])
            if n >> KEY_BITS:
                raise SpecError(f"{self.actors[i].label} states", OverflowError(f"more than 2**{KEY_BITS} distinct states"))
            table[a] = n
            self._areps[i].append(a)
            self._aids[i][id(a)] = n
        return n

    def _shared_number(self, g) -> int:
        n = self._gnum.get(g)
        if n is None:
            n = len(self._greps)
            if n >> KEY_BITS:
                raise SpecError(f"{self.name} shared variables", OverflowError(f"more than 2**{KEY_BITS} distinct values"))
            self._gnum[g] = n
            self._greps.append(g)
        return n

    def _local_steps(self, i, st, g, no_faults_left) -> tuple:
        """The steps of actor ``i`` (not blocked, not terminal) from actor state ``st`` under shared
        variables ``g``, in transition order, as records (kind, action, new actor state or violation,
        new shared variables or None, faults spent): ``_FAST`` for a local step that only replaces
        the actor's state (and the shared variables), ``_VIOLATION`` for one that flags a violation,
        ``_SLOW`` (kind, tidx, transition) for anything else (ops, process exits, errors), which
        ``_fire`` runs on the whole state.  Memoised per (actor, actor state, shared variables when the
        role is not private, whether faults are spent): every record depends on those alone.
        Returns (the (actor, transition) pairs of the fast and violation records, the records)."""
        ctl, v, _ = st
        items = []
        pairs = []
        private = self._ctx_flags[i] & PRIVATE
        for tidx, t in self._steps[i].get(ctl, ()):
            if t.fault is not None and no_faults_left:
                continue
            key = (i, tidx, v) if private else (i, tidx, v, g)
            eff = self._memo.get(key)
            if eff is None:
                try:
                    eff = self._effects(i, tidx, t, v, g)
                except SpecError:  # raised again by _fire, after the steps before it
                    items.append((_SLOW, tidx, t, None, 0))
                    break
                if len(self._memo) < MEMO_LIMIT:
                    self._memo[key] = eff
            if t.op is not None:
                try:
                    recs = self._op_records(i, tidx, t, ctl, eff)
                except SpecError:  # raised again by _fire, after the steps before it
                    items.append((_SLOW, tidx, t, None, 0))
                    break
                if recs is None:
                    items.append((_SLOW, tidx, t, None, 0))
                    continue
                items.extend(recs)
                if eff:
                    pairs.append((i, tidx))
                continue
            if any(err is not None or check_err is not None or dst not in t.dst or (dst in (FAILED, DEAD) and violation is None)
                   for _, err, _, dst, _, _, _, check_err, violation in eff):
                items.append((_SLOW, tidx, t, None, 0))
                continue
            dfu = 1 if t.fault is not None else 0
            for ch, _, _, dst, nv, ng, _, _, violation in eff:
                act = ("t", i, tidx, ch)
                if violation is not None:
                    items.append((_VIOLATION, act, violation, None, 0))
                else:
                    items.append((_FAST, act, ActorState(dst, nv, None), ng, dfu))
            if eff:
                pairs.append((i, tidx))
        return tuple(pairs), tuple(items)

    def _op_records(self, i, tidx, t: Transition, ctl, eff):
        """``_local_steps``' records for an op transition whose every choice issues one plain op
        (not a wait, not a batch) that passes the checks ``_fire`` makes: ``_OP`` (the actor then waits
        on it; its queue position is counted on the whole state) or ``_VIOLATION`` (the group rules);
        None when a choice needs ``_fire``.  A SpecError is one ``_fire`` raises too."""
        a = self.actors[i]
        out = []
        solo = len(self.actors_of_rank[a.rank]) == 1
        dfu = 1 if t.fault is not None else 0
        for ch, err, _, _, nv, ng, op, check_err, violation in eff:
            if err is not None or isinstance(op, Post):
                return None
            try:
                if check_op(op) is not None or op.kind == "wait":
                    return None
            except Exception:  # noqa: BLE001 - _fire reports it
                return None
            if self._sym_ranks and self._names_symmetric_rank(op):
                return None
            act = ("t", i, tidx, ch)
            bad = self._group_rule(a, t, op)
            if bad is not None:
                out.append((_VIOLATION, act, bad, None, 0))
                continue
            if check_err is not None:
                return None
            if violation is not None:
                out.append((_VIOLATION, act, violation, None, 0))
                continue
            out.append((_OP, act, (tidx, op, ctl, nv, solo, {}), ng, dfu))
        return out

    def successors(self, state):
        """Reductions.successors, with ``canonical``'s memo hit inlined for a consecutive run of
        symmetric actors.  The run's states in ``state`` are looked up once (``_slice_memo``): their
        sorted order and the twins ``raw_successors`` leaves out; a successor whose run is equal to
        the parent's (a step of another actor, a fault elsewhere) takes the parent's sorted order
        without hashing its run again."""
        span = self._sym_span
        if not self._sym_on or span is None:
            return Reductions.successors(self, state)
        lo, hi = span
        memo = self._canon_memo
        canon = self.canonical
        twins = psl = pperm = None
        if len(state) == 4 and not state[3]:
            psl = state[0][lo:hi]
            info = self._slice_memo.get(psl)
            if info is None:
                info = (self._canon_perm(psl), self._twins(state[0]))
                if len(self._slice_memo) < MEMO_LIMIT:
                    self._slice_memo[psl] = info
            pperm = info[0]
            if self._twin_steps and self._monitor_set is None:  # as raw_successors would find them
                twins = info[1]
        out = []
        for a, n in self.raw_successors(state, twins=twins):
            if n.__class__ is WorldState and not n[3]:
                actors = n[0]
                sl = actors[lo:hi]
                perm = pperm if sl == psl else memo.get(sl)
                if perm is not None:
                    if perm:
                        n = _new_world(WorldState, (actors[:lo] + perm + actors[hi:], n[1], n[2], n[3]))
                    out.append((a, n))
                    continue
            out.append((a, n if isinstance(n, Violation) else canon(n)))
        return out

    def _twins(self, actors, monitors=None):
        """The symmetric actors whose state equals an earlier symmetric actor's (a frozenset, empty when
        none; memoised on the symmetric actors' states).  With ``monitors`` (a monitored state's
        instances), an actor's state includes its rank's per-rank monitor instances, which move with
        it under symmetry.  Sound under the symmetry reduction's own premise: swapping two symmetric
        actors in equal states maps the state (with no fabric entries) to itself, so each step of the
        later one is matched by the same step of the earlier one into a state of the same orbit, and
        the orbit's representative is what the search keeps (monitors treat symmetric actors alike: a
        ``when`` predicate may not read their rank).  Leaving the later one's steps out changes no
        state the search reaches, only how many edges lead there."""
        if monitors is not None:
            slots, rank = self._monitor_set.rank_slots, self._actor_rank
            parts = tuple((actors[i], tuple([monitors[s] for s in slots[rank[i]]])) for i in self.symmetric)
        else:
            span = self._sym_span
            parts = actors[span[0]:span[1]] if span is not None else self._sym_get(actors)
        tw = self._twin_memo.get(parts)
        if tw is None:
            seen, later = set(), []
            for i, p in zip(self.symmetric, parts):
                if p in seen:
                    later.append(i)
                else:
                    seen.add(p)
            tw = frozenset(later)
            if len(self._twin_memo) < MEMO_LIMIT:
                self._twin_memo[parts] = tw
        return tw

    def canonical(self, state):
        """The orbit representative (Reductions.canonical), memoised on the symmetric actors' states:
        the sorted order of a tuple of actor states is computed once."""
        # fabric entries name actors and ranks: a state holding some is its own representative
        if state[3] or self._sym_get is None:
            return state
        if len(state) > 4 and self._monitor_set.moves_with_symmetry:
            return self._monitor_set.canonical(self, state)  # per-rank monitors move with their ranks
        actors = state[0]
        perm = self._canon_perm(self._sym_get(actors))
        if not perm:
            return state
        span = self._sym_span
        if span is not None and len(state) == 4:  # the symmetric actors are a run: splice it
            lo, hi = span
            return _new_world(WorldState, (actors[:lo] + perm + actors[hi:], state[1], state[2], state[3]))
        nl = list(actors)
        for i, p in zip(self.symmetric, perm):
            nl[i] = p
        if len(state) > 4:  # a monitored world's state keeps its monitors
            return type(state)(tuple(nl), *state[1:])
        return _new_world(WorldState, (tuple(nl), state[1], state[2], state[3]))

    def _canon_perm(self, parts):
        """The symmetric actors' states ``parts`` sorted (the representative's), () when already
        sorted; memoised."""
        perm = self._canon_memo.get(parts)
        if perm is None:
            perm = tuple(sorted(parts, key=self._order_key))
            if all(x is y for x, y in zip(parts, perm)):
                perm = ()
            if len(self._canon_memo) < MEMO_LIMIT:
                self._canon_memo[parts] = perm
        return perm

    def _fire(self, state, i, tidx, t: Transition, ctl, v, g, fu):
        """Offer transition ``tidx`` of actor ``i``.  What the spec's functions make of (local vars,
        shared vars) is computed once per distinct input (``_effects``, memoised: spec functions are
        pure functions of the Ctx); what depends on the rest of the world (posting the op, checking it
        against the fabric and the groups) is redone on every call, in the original order, and a spec
        error is raised at the same point as without the memo."""
        private = self._ctx_flags[i] & PRIVATE
        key = (i, tidx, v) if private else (i, tidx, v, g)
        eff = self._memo.get(key)
        if eff is None:
            eff = self._effects(i, tidx, t, v, g)
            if len(self._memo) < MEMO_LIMIT:
                self._memo[key] = eff
        if not eff:
            return ()
        actors = state[0]
        fab = state[3]
        a = self.actors[i]
        out = []
        nfu = fu + 1 if t.fault is not None else fu
        for ch, err, stage, dst, nv, ng, op, check_err, violation in eff:
            if err is not None:
                if isinstance(err, SpecError):
                    raise err
                raise SpecError(f"{a.role.name}.{t.name} ({stage})", err) from err
            if ng is None:
                ng = g
            act = ("t", i, tidx, ch)
            nfab = fab
            try:
                if t.op is not None:
                    if isinstance(op, Post):
                        res = self._post(actors, fab, i, a, t, op)
                        if isinstance(res, Violation):
                            out.append((act, res))
                            continue
                        nfab = res
                        if dst not in t.dst:
                            raise SpecError(f"{a.role.name}.{t.name}",
                                            ValueError(f"goto({dst!r}) is not one of the declared destinations {t.dst}"))
                        nl = list(actors)
                        self._finish(nl, i, dst, nv)
                    else:
                        bad = check_op(op)
                        if bad is not None:
                            raise SpecError(f"{a.role.name}.{t.name}", ValueError(bad))
                        if op.kind == "wait":
                            if not any(e[0] == "op" and e[1] == i and e[2] == op.data for e in fab):
                                raise SpecError(f"{a.role.name}.{t.name}",
                                                ValueError(f"wait({op.data!r}): no op is outstanding under that handle"))
                        else:
                            if self._sym_ranks:
                                self._refuse_symmetric_peer(a, t, op)
                            bad = self._group_rule(a, t, op)
                            if bad is not None:
                                out.append((act, bad))
                                continue
                        nl = list(actors)
                        pos = 0 if op.kind == "wait" else self._queue_pos(actors, fab, a.rank, op)
                        nl[i] = ActorState(ctl, nv, PendingOp(tidx, op, pos))
                else:
                    if dst not in t.dst:
                        raise SpecError(f"{a.role.name}.{t.name}",
                                        ValueError(f"goto({dst!r}) is not one of the declared destinations {t.dst}"))
                    nl = list(actors)
                    self._finish(nl, i, dst, nv)
            except SpecError:
                raise
            except Exception as e:  # noqa: BLE001 - a bug in the spec, reported with its role and transition
                raise SpecError(f"{a.role.name}.{t.name} (op)", e) from e
            if check_err is not None:
                if isinstance(check_err, SpecError):
                    raise check_err
                raise SpecError(f"{a.role.name}.{t.name} (check)", check_err) from check_err
            if violation is not None:
                out.append((act, violation))
                continue
            out.append((act, WorldState(tuple(nl), ng, nfu, nfab)))
        return out

    def _effects(self, i, tidx, t: Transition, v, g) -> tuple:
        """Run the spec's functions of transition ``tidx`` of actor ``i`` on (v, g): () when the guard
        is false, else one record per choice: (choice, error, stage, dst, vars, shared or None when
        untouched by a private role, op, check error, violation).  An error in the guard or ``choose``
        is raised here; one in a choice's ``do``/``op``/``check`` is recorded and raised by ``_fire``
        where the unmemoised evaluation would have raised it.  A symmetric actor's step that read its
        rank is run again at every other symmetric rank (``_rank_blind``)."""
        out, read = self._effects_at(i, tidx, t, v, g, self.actors[i].rank)
        if read:
            self._rank_blind(i, tidx, t, v, g, out)
        return out

    def _rank_blind(self, i, tidx, t: Transition, v, g, out) -> None:
        """A symmetric actor's step that read ``c.rank`` (or ``c.local_rank``) must give the same at
        every symmetric rank: the symmetry reduction keeps one arrangement of the symmetric actors'
        states and moves a state from one of them to another, so what a step makes of (its variables,
        the shared ones) must not depend on which symmetric rank runs it.  ``rank != 0`` on ranks 1-7
        is fine; ``rank == 2`` is refused (``_refuse_told_apart``).  Every input
        (transition, variables, shared variables) the search meets is checked once per role."""
        a = self.actors[i]
        key = (id(a.role), tidx, v, g)
        if key in self._blind:
            return
        mine = _outcome(out)
        apart = False
        by_rank = {a.rank: mine}
        for r in sorted(self._sym_ranks):
            if r == a.rank:
                continue
            try:
                by_rank[r] = _outcome(self._effects_at(i, tidx, t, v, g, r)[0])
            except SpecError as e:
                by_rank[r] = ("raises", f"{type(e.__cause__ or e).__name__}: {e.__cause__ or e}")
            apart = apart or by_rank[r] != mine
        if apart:
            self._refuse_told_apart(f"{a.role.name}.{t.name}", by_rank, lambda o: _told(o, g), f" (from {_short(v)})")
        if len(self._blind) < MEMO_LIMIT:
            self._blind.add(key)

    def _refuse_told_apart(self, where: str, by_rank: dict, told, given: str = ""):
        """The spec error of a step that does something else at another symmetric rank: the symmetric
        ranks grouped by what the step does there, and the declaration of the largest group."""
        groups: dict = {}
        for r in sorted(by_rank):
            groups.setdefault(by_rank[r], []).append(r)
        parts = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[1][0]))
        said = "; ".join(f"at {ranks_text(rs)} it {told(o)}" for o, rs in parts[:3]) + ("; ..." if len(parts) > 3 else "")
        best = parts[0][1]
        idx = [k for k in self.symmetric if self.actors[k].rank in best]
        decl = f"tuple(range({idx[0]}, {idx[-1] + 1}))" if idx == list(range(idx[0], idx[-1] + 1)) and len(idx) > 3 \
            else repr(tuple(idx))
        fix = (f"declare only ranks that do the same (symmetric={decl}: {ranks_text(best)})" if len(best) > 1 else
               "drop the ranks where it differs from Protocol(symmetric=...)")
        raise SpecError(where, PermissionError(
            f"reads its rank, and what it does tells the symmetric {ranks_text(sorted(self._sym_ranks))} apart{given}: "
            f"{said}; {fix}, or make it the same at each of them"))

    def _effects_at(self, i, tidx, t: Transition, v, g, rank) -> tuple[tuple, bool]:
        """``_effects`` of the actor placed at ``rank``, and whether the step read its rank."""
        a = self.actors[i]
        fl = self._ctx_flags[i]
        private = fl & PRIVATE
        stage = "guard"
        try:
            ctx = Ctx(v, g, self.params, rank, t.dst[0], self, i, None, fl, t.name)
            if t.guard is not None and not t.guard(ctx):
                return (), ctx.rank_read
            stage = "choose"
            choices = t.choose(ctx) if t.choose is not None else None
            if ctx._qneg is not None:  # a FIFO end found full/empty by a step that runs (guard, choose)
                ctx.queue_check()
        except SpecError:
            raise
        except Exception as e:  # noqa: BLE001 - a bug in the spec, reported with its role and transition
            raise SpecError(f"{a.role.name}.{t.name} ({stage})", e) from e
        out = []
        read = ctx.rank_read
        for ch in (choices if choices is not None else (None,)):
            c = ctx if choices is None else Ctx(v, g, self.params, rank, t.dst[0], self, i, ch, fl, t.name)
            op = None
            try:
                if t.do is not None:
                    stage = "do"
                    t.do(c)
                if t.op is not None:
                    stage = "op"
                    op = t.op(c)
                if c._qneg is not None:
                    c.queue_check()
            except Exception as e:  # noqa: BLE001 - raised by _fire in order
                out.append((ch, e, stage, None, None, None, None, None, None))
                read = read or c.rank_read
                break
            check_err = None
            if t.check is not None:
                try:
                    t.check(c)
                except Exception as e:  # noqa: BLE001 - raised by _fire in order
                    check_err = e
            read = read or c.rank_read
            bad = _unhashable(c.v) or (not private and _unhashable(c._g))
            if bad:  # the variables it sets become part of states, which are hashed
                out.append((ch, _unhashable_error(f"{self.actors[i].role.name}.{t.name}", bad), stage, None, None, None, None,
                            None, None))
                continue
            out.append((ch, None, stage, c.dst, c.v, None if private else c._g, op, check_err, c.violation))
        return tuple(out), read

    def _group_rule(self, a: ActorDef, t: Transition, op: Op):
        if op.group not in self.groups:
            raise SpecError(f"{a.role.name}.{t.name}", ValueError(f"unknown group {op.group!r}"))
        grp = self.groups[op.group]
        bad = check_splits(op, len(grp.ranks))
        if bad is not None:
            raise SpecError(f"{a.role.name}.{t.name}", ValueError(bad))
        if a.rank not in self.member_of[op.group]:
            return Violation(WRONG_GROUP, f"rank {a.rank} ({a.role.name}) calls {op.kind} on {op.group}, a group it is not a "
                                          f"member of (c10d: 'Invalid process group specified')",
                             {"rank": a.rank, "group": op.group, "transition": t.name})
        if t.phase is not None and t.phase in self.phase_groups and op.group not in self.phase_groups[t.phase]:
            allowed = ", ".join(sorted(self.phase_groups[t.phase]))
            return Violation(WRONG_GROUP, f"rank {a.rank} ({a.role.name}) issues {op.kind} on {op.group} in {t.phase}, where "
                                          f"only {allowed} is allowed", {"rank": a.rank, "group": op.group, "expected": allowed,
                                                                         "transition": t.name})
        if op.kind not in COLLECTIVES or op.kind in ROOTED:
            if not 0 <= op.peer < len(grp.ranks):
                what = "root" if op.kind in ROOTED else "peer"
                return Violation(WRONG_GROUP, f"rank {a.rank} ({a.role.name}) {op.kind} with group-local {what} {op.peer} on "
                                              f"{op.group} of size {len(grp.ranks)}", {"rank": a.rank, "group": op.group})
        return None

    def _after(self, nl, i, data, g):
        ctl, v, pend = nl[i]
        a = self.actors[i]
        t = a.role.transitions[pend[0]]
        c = Ctx(v, g, self.params, a.rank, t.dst[0], self, i, None, self._ctx_flags[i], t.name)
        if t.after is not None:
            self._call(f"{a.role.name}.{t.name} after", t.after, c, data)
            if c._qneg is not None:
                c.queue_check()
            bad = _unhashable(c.v) or (c._g is not g and _unhashable(c._g))
            if bad:  # what it sets becomes part of the state, which is hashed
                raise _unhashable_error(f"{a.role.name}.{t.name} after", bad)
            if c.rank_read:
                self._after_blind(i, pend[0], t, v, g, data, c)
        if c.dst not in t.dst:
            raise SpecError(f"{a.role.name}.{t.name}", ValueError(f"goto({c.dst!r}) is not one of the declared destinations {t.dst}"))
        self._finish(nl, i, c.dst, c.v)
        return c

    def _after_blind(self, i, tidx, t: Transition, v, g, data, c) -> None:
        """``_rank_blind`` for an op's ``after``: what it makes of (variables, shared variables, the op's
        result) at every other symmetric rank."""
        a = self.actors[i]
        key = (id(a.role), tidx, v, g, data)
        try:
            if key in self._blind:
                return
        except TypeError:  # a result that is not hashable: checked every time
            key = None
        mine = (c.dst, c.v, c._g)
        apart = False
        by_rank = {a.rank: mine}
        for r in sorted(self._sym_ranks):
            if r == a.rank:
                continue
            o = Ctx(v, g, self.params, r, t.dst[0], self, i, None, self._ctx_flags[i], t.name)
            try:
                t.after(o, data)
                by_rank[r] = (o.dst, o.v, o._g)
            except Exception as e:  # noqa: BLE001 - it differs: the rank told them apart
                by_rank[r] = ("raises", f"{type(e).__name__}: {e}")
            apart = apart or by_rank[r] != mine
        if apart:
            told = lambda x: f"raises {x[1]}" if x[0] == "raises" else \
                f"goes to {x[0]} with {_short(x[1])}{_shared_writes(g, x[2])}"  # noqa: E731
            self._refuse_told_apart(f"{a.role.name}.{t.name} after", by_rank, told, f" (given {_short(data)})")
        if key is not None and len(self._blind) < MEMO_LIMIT:
            self._blind.add(key)


    def _fault_steps(self, state, skey=None, twins=None):
        """The crash and hang steps that may strike now; with ``skey`` (the state's key, from
        raw_successors in a keyed search) each successor comes as its key.  ``twins`` (``_twins``):
        symmetric actors whose rank's faults are left out, as an earlier twin's lead to the same orbit."""
        actors, g, fu, fab = state
        if fu >= self.max_faults:
            return []
        if not self._fault_kinds:
            return []
        # which (kind, rank) may strike depends only on each actor's control state and whether it waits
        key = tuple([(st[0], st[2] is None) for st in actors])
        if skey is not None:  # keyed_successors (no symmetry: no twins): the successors as their keys
            kw = self._kfault_memo.get(key)
            if kw is None:
                kw = self._which_faults(key, True)
                if len(self._kfault_memo) < MEMO_LIMIT:
                    self._kfault_memo[key] = kw
            nums = self._kparent[4]
            base = skey + (1 << (KEY_BITS * (len(actors) + 1)))  # one more fault used
            out = []
            for act, kills in kw:
                nk = base
                for j, sh, dk in kills:
                    nk += dk - (nums[j] << sh)
                out.append((act, nk))
            return out
        which = self._fault_memo.get(key)
        if which is None:
            which = self._which_faults(key, False)
            if len(self._fault_memo) < MEMO_LIMIT:
                self._fault_memo[key] = which
        if twins:
            arank = self._actor_rank
            skip = {arank[j] for j in twins}
            which = [w for w in which if w[0][1] not in skip]
        out = []
        for act, kills in which:
            nl = list(actors)
            for j, dead in kills:
                nl[j] = dead
            out.append((act, _new_world(WorldState, (tuple(nl), g, fu + 1, fab))))
        return out

    def _which_faults(self, key: tuple, keyed: bool) -> tuple:
        """(fault action, kills) of each fault that may strike in a state whose actors' (control state,
        whether it waits) are ``key``, all that decides them (and all that ``_kill_rank`` reads).  A
        kill is (actor, its dead state), or keyed (actor, its field's shift, the dead state's number
        there).  Whether a fault strikes a rank, and whom it kills, depends on that rank's actors'
        entries alone: memoised per rank, so a state new to the memo costs a lookup per rank."""
        out = []
        memo = self._rank_fault_memo
        for f, (kind, ranks, ctl) in enumerate(self._fault_kinds):
            for r in ranks:
                sub = tuple([key[j] for j in self.actors_of_rank[r]])
                mk = (f, r, keyed, sub)
                entry = memo.get(mk, _MISS)
                if entry is _MISS:
                    entry = self._rank_fault(kind, r, ctl, sub, keyed)
                    if len(memo) < MEMO_LIMIT:
                        memo[mk] = entry
                if entry is not None:
                    out.append(entry)
        return tuple(out)

    def _rank_fault(self, kind: str, r: int, ctl: str, sub: tuple, keyed: bool):
        """``_which_faults``' entry for fault ``kind`` on rank ``r`` whose actors' (control state,
        whether it waits) are ``sub``, or None when it cannot strike: a rank whose every actor is
        terminal and waits on nothing is past faults; a hang strikes only a rank whose every live
        actor stands at one of its role's hang points."""
        idxs = self.actors_of_rank[r]
        if all(self._terminal(j, c) and idle for j, (c, idle) in zip(idxs, sub)):
            return None
        if kind == "hang" and not all(c in self.actors[j].role.hang_points or self._terminal(j, c) for j, (c, _) in zip(idxs, sub)):
            return None
        dead = ActorState(ctl, None, None)
        victims = [j for j, (c, _) in zip(idxs, sub) if c not in (DONE, FAILED, DEAD)]
        if keyed:  # per actor it ends: (actor, its field's shift, the dead state's number there)
            return (kind, r), tuple((j, KEY_BITS * j, self._actor_number(j, dead) << (KEY_BITS * j)) for j in victims)
        return (kind, r), tuple((j, dead) for j in victims)

    def _hang_timeout(self, state, w) -> str:
        """' until its timeout ... fires' when the waiter's op declares a timeout that hangs, else ''."""
        for i, a in enumerate(self.actors):
            if a.label == w["actor"]:
                pend = state[0][i][2]
                if pend is None:
                    return ""
                t = a.role.transitions[pend[0]]
                if t.timeout and timeout_kind(a.role.name, t) == "hangs":
                    return f" until its {t.name} timeout{_duration(t)} fires (declared hangs)"
        return ""

    def _stuck(self, state):
        actors = state[0]
        status = self.rank_status(actors)
        waiting = self.waiting(state)
        if not waiting:
            return None
        stranded = [w for w in waiting if any(status.get(r) in ("gone", "hung", "idle", "finished") for r in w["waits_for"])]
        timed = [w for w in waiting if self._hang_timeout(state, w)]
        if stranded or timed:
            w = stranded[0] if stranded else timed[0]
            who = ", ".join(f"rank {r} ({status[r]})" for r in w["waits_for"])
            until = self._hang_timeout(state, w)
            what = "blocked for ever" if not until else "blocked"
            detail = {"waiting": waiting}
            if until:
                detail["timeout"] = until.strip()
            return Violation(STRANDED, f"rank {w['rank']} ({w['role']}) is {what} in {w['op'] or w['state']}{until}"
                                       + (f" waiting on {who}" if who else ""), detail)
        ops = "; ".join(f"rank {w['rank']} in {w['op'] or w['state']}" for w in waiting)
        return Violation(DEADLOCK, f"every live rank is blocked and nothing can time out: {ops}", {"waiting": waiting})

    def classify_end(self, state):
        actors = state[0]
        if any(c in (FAILED, DEAD, HUNG) for c, _, _ in actors):
            return FAIL_FAST
        if len(state) > 4:
            return self._monitor_set.end_violation(state)
        return None



TIMEOUT_KINDS = ("recovers", "hangs")
HANG_AFTER_S = 60.0  # an op timeout longer than this is not a recovery unless declared so


def timeout_kind(role: str, t: Transition) -> str:
    """``recovers`` (the designed recovery: the op fails and the actor goes to ``timeout=``'s state once
    nothing else can happen) or ``hangs`` (the waiter counts as stranded).  Declared with
    ``timeout_kind=``; else from ``timeout_s=``: over a minute hangs."""
    kind = getattr(t, "timeout_kind", None)
    if kind is not None:
        if kind not in TIMEOUT_KINDS:
            raise SpecError(f"{role}.{t.name}", ValueError(f"timeout_kind={kind!r}: expected one of {', '.join(TIMEOUT_KINDS)}"))
        return kind
    secs = getattr(t, "timeout_s", None)
    if secs is None:
        raise SpecError(f"{role}.{t.name}", ValueError(
            f"timeout={t.timeout!r} needs timeout_kind='recovers' (the designed recovery) or 'hangs', or a duration "
            f"timeout_s=SECONDS (over {HANG_AFTER_S:g} s it hangs)"))
    return "hangs" if secs > HANG_AFTER_S else "recovers"


def _duration(t: Transition) -> str:
    secs = getattr(t, "timeout_s", None)
    return "" if secs is None else f" ({secs:g} s)"


def _as_view_fn(fn):
    """(fn(world, state, record), takes_a_view) for a property written over a WorldView (one
    parameter) or over the raw state (two parameters: world, state)."""
    import inspect

    try:
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = [None, None]
    if len(params) == 1:
        return (lambda world, state, rec: fn(WorldView(world, state, rec))), True
    return (lambda world, state, rec: fn(world, state)), False


def _probe(fn, world, state, memo=None, shadow=None):
    """(the property on a permuted state, what it read there): looked up in ``shadow``, where what it
    gives on permuted states is memoised, then in the property's memo.  The reads are None for a
    property over the raw state (``memo`` None) or one that took it; the verdict is None where the
    property cannot read the permuted state."""
    if memo is None:
        try:
            return fn(world, state, None), None
        except Exception:  # noqa: BLE001 - a permuted state the property cannot read: no verdict
            return None, None
    for m in (shadow, memo):  # (permuted states are rarely representatives: the shadow first)
        if m is not None:
            hit = m.lookup_reads(state)
            if hit is not _MISS:
                return hit
    rec = set()
    try:
        out = fn(world, state, rec)
    except Exception:  # noqa: BLE001 - a permuted state the property cannot read: no verdict
        return None, None
    if shadow is not None:
        shadow.store(rec, state, out)
    return out, (None if (WORLD, RAW) in rec else rec)


KEY_BITS = 32  # width of each field of a state key (state_key; packed as struct "I", 4 bytes)
_POSITIONS = range(1 << 16)  # actor positions, for itertools.compress
KEY_MASK = (1 << KEY_BITS) - 1


_MISS = object()
_ABSENT = object()  # the value of a variable of an actor without variables, in a memo key
MEMO_SHAPES = 256  # distinct read sets a property memo keeps


def _read_order(r):
    return (r[0], str(r[1]))


GATE_EVALUATIONS = 20_000  # property evaluations whose reads feed ``gated_fields``


class _PropertyMemo:
    """Results of one view property, keyed on what it read.  Each distinct read set (a *shape*: the
    sorted (actor, field) entries an evaluation recorded) gets a compiled key function and a table
    from the values at those fields to the result.  A state whose values at a shape's fields are
    equal to a stored key makes the property read exactly those fields again, with the same
    values, so it returns the same result: properties are deterministic functions of what they read
    through the view.  An evaluation that took the raw state is not stored.

    Any shape whose key matches gives the right result, so the order shapes are tried in is free.
    A lookup does not walk every shape: the fields every shape reads (the *common* fields, e.g. which
    actors are alive) index the shapes by their stored values there, and a state tries only the
    shapes holding an entry with its own values at the common fields (the others cannot match)."""

    __slots__ = ("shapes", "by_reads", "is_pending", "common_key", "index", "seen")

    def __init__(self, is_pending: bool = False):
        self.shapes: list = []  # [key function, table, reads, positions of the common fields in reads, number]
        self.by_reads: dict = {}
        self.is_pending = is_pending
        self.common_key = _key_function(())  # state -> its values at the common fields
        self.index: dict = {}  # values at the common fields -> ((key, table), ...) of the shapes that hold them
        self.seen: set = set()  # (values at the common fields, shape number) in ``index``

    def lookup(self, state):
        """The result of a stored evaluation ``state`` matches, or _MISS."""
        hit = self.lookup_reads(state)
        return hit if hit is _MISS else hit[0]

    def lookup_reads(self, state):
        """(result, the fields it read) of a stored evaluation ``state`` matches, or _MISS."""
        try:
            cands = self.index.get(self.common_key(state))
        except TypeError:  # an unhashable value read: try every shape
            cands = [(s[0], s[1], s[2]) for s in self.shapes]
        for key, table, reads in cands or ():
            try:
                out = table.get(key(state), _MISS)
            except TypeError:  # an unhashable value read
                continue
            if out is not _MISS:
                return out, reads
        return _MISS

    def store(self, rec, state, out) -> None:
        if (WORLD, RAW) in rec:
            return
        reads = tuple(sorted(rec, key=_read_order))
        shape = self.by_reads.get(reads)
        if shape is None:
            if len(self.shapes) >= MEMO_SHAPES:
                return
            shape = self.by_reads[reads] = [_key_function(reads), {}, reads, (), len(self.shapes)]
            self.shapes.append(shape)
            self._reindex()
        key, table = shape[0], shape[1]
        if len(table) < MEMO_LIMIT:
            try:
                k = key(state)
                table[k] = out
            except TypeError:
                return
            self._add(shape, k)

    def _add(self, shape, k) -> None:
        n = shape[4]
        ck = tuple([k[p] for p in shape[3]])
        if (ck, n) not in self.seen:
            self.seen.add((ck, n))
            self.index[ck] = self.index.get(ck, ()) + ((shape[0], shape[1], shape[2]),)

    def _reindex(self) -> None:
        """A shape was added: the common fields may have shrunk; index every stored entry again."""
        common = frozenset(self.shapes[0][2]).intersection(*(s[2] for s in self.shapes[1:]))
        order = tuple(sorted(common, key=_read_order))
        self.common_key = _key_function(order)
        self.index, self.seen = {}, set()
        for shape in self.shapes:
            pos = {r: p for p, r in enumerate(shape[2])}
            shape[3] = tuple(pos[r] for r in order)
            for k in shape[1]:
                self._add(shape, k)


def _unhashable_error(where: str, bad: str) -> SpecError:
    """The spec error for a transition that set a value states cannot hold (``_unhashable``'s ``bad``)."""
    return SpecError(where, TypeError(f"sets {bad}, which cannot be hashed (states are); use a tuple, a frozenset "
                                      "or a frozen dataclass"))


def _outcome(records) -> tuple:
    """What ``_effects`` records say a step does, as compared across symmetric ranks: per choice, the
    destination, variables, shared variables, op, errors (type and text) and a violation's verdict."""
    def err(e):
        return None if e is None else (type(e).__name__, str(e))
    return tuple((ch, err(e), stage, dst, nv, ng, op, err(ce), viol and viol.verdict)
                 for ch, e, stage, dst, nv, ng, op, ce, viol in records)


def _told(outcome, g=None) -> str:
    """An ``_outcome`` in words, for the refusal of a step that tells symmetric ranks apart; with the
    shared variables ``g`` it started from, the ones it writes."""
    if not outcome:
        return "is not enabled"
    if outcome[0] == "raises":
        return f"raises {outcome[1]}"
    parts = []
    for ch, e, stage, dst, nv, ng, op, ce, verdict in outcome:
        if e is not None:
            parts.append(f"raises {e[0]}: {e[1]} in {stage}")
            continue
        issued = (op.short() + (f" data={_short(op.data, 40)}" if op.data is not None else "") if isinstance(op, Op)
                  else f"posts {', '.join(o.short() for o in op.ops)} under {op.handle!r}" if isinstance(op, Post) else _short(op))
        what = f"goes to {dst} with {_short(nv)}" + _shared_writes(g, ng) + (f" and issues {issued}" if op is not None else "")
        parts.append((f"choosing {ch!r} " if ch is not None else "") + what + (f", finding {verdict}" if verdict else ""))
    return "; ".join(parts)


def _shared_writes(g, ng) -> str:
    """' and sets shared NAME=VALUE, ...' for the shared variables a step changed (``g`` before, ``ng`` after)."""
    if g is None or ng is None or ng == g:
        return ""
    return " and sets shared " + ", ".join(f"{k}={_short(getattr(ng, k), 60)}" for k in g._fields
                                           if getattr(ng, k) != getattr(g, k))


def _short(x, n: int = 120) -> str:
    s = repr(x)
    return s if len(s) <= n else s[:n - 3] + "..."


def _unhashable(vs) -> str | None:
    """'variable NAME to VALUE (a TYPE)' for the first variable of ``vs`` (a vars namedtuple, or None)
    whose value cannot be hashed."""
    if vs is None:
        return None
    try:
        hash(vs)
        return None
    except TypeError:
        for name, val in zip(vs._fields, vs):
            try:
                hash(val)
            except TypeError:
                return f"variable {name} to {val!r:.60} (a {type(val).__name__})"
        return "a variable to a value"


def _read_source(i, f) -> str:
    """Python source for the value at read (i, f) of state S (A: its actors); an actor field's value
    is the one reduce.py's ``_field`` gives, which the symmetry check matches on."""
    if i == WORLD:
        return "S[2]" if f == "faults_used" else "None"
    if i == SHARED:
        return f"getattr(S[1], {f!r}, M)"
    if f == ALIVE:
        return f"A[{i}][1] is None"
    if f == "ctl":
        return f"A[{i}][0]"
    if f == "pending":
        return f"A[{i}][2]"
    return f"getattr(A[{i}][1], {f!r}, M)"


def _compile_key(expr: str):
    """state -> ``expr``, compiled once (``expr`` built from ``_read_source`` parts)."""
    ns = {"M": _ABSENT, "H": hash}
    exec(f"def key(S):\n    A = S[0]\n    return {expr}\n", ns)  # noqa: S102 - from field names the view recorded
    return ns["key"]


def _key_function(reads):
    """state -> the tuple of the values at ``reads`` (compiled once per shape)."""
    return _compile_key("(" + "".join(_read_source(i, f) + ", " for i, f in reads) + ")")


PROVEN = True  # _SymmetryMemo.known: the symmetry tree finished on this class of states


class _SymmetryMemo:
    """The classes of states on which one property's symmetry tree (``Reductions._check_symmetric``)
    finished, or outgrew its budget.  A state's class is its values at every read that property's
    trees made so far outside the symmetric actors, and the multiset of its symmetric actors' values
    at every field the trees read there.

    Why a finished tree proves the whole class: take a state r whose tree finished and r' in r's
    class.  The multisets are equal, so every arrangement a' of r' matches an arrangement a of r
    position by position at the fields read, and holds r's values at the reads outside.  The tree
    evaluated some arrangement b that a agrees with at everything b read (the leaves of the tree
    cover every arrangement), and b read only what the class key covers; so a' agrees with b there
    too, and a deterministic property gives a' what it gave b: the state's own verdict.  When a tree
    reads something new the key covers it from then on, and the classes learnt before are
    forgotten (they were keyed on less)."""

    __slots__ = ("sym", "outside", "fields", "key", "known", "shapes")

    def __init__(self, symmetric):
        self.sym = frozenset(symmetric)
        self.outside: frozenset = frozenset()  # reads outside the symmetric actors
        self.fields: frozenset = frozenset()  # fields read at symmetric actors
        self.known: dict = {}  # class key -> PROVEN, or False where the tree outgrew its budget
        self.shapes: dict = {}  # id of a read set the property memo keeps -> (it, whether aggregate)
        self._compile()

    def aggregate(self, reads) -> bool:
        """Whether ``reads`` (what the property read on a state) covers every symmetric actor: its
        tree would have a leaf per distinct arrangement, so such states get the generators.  Over two
        symmetric actors the tree has at most two leaves: never an aggregate."""
        hit = self.shapes.get(id(reads))
        if hit is not None and hit[0] is reads:
            return hit[1]
        out = len(self.sym) > AGGREGATE_FROM and len({i for i, _ in reads if i in self.sym}) == len(self.sym)
        if type(reads) is tuple and len(self.shapes) < MEMO_SHAPES:  # a memo's shape: kept alive there
            self.shapes[id(reads)] = (reads, out)
        return out

    def _compile(self) -> None:
        out = "".join(_read_source(i, f) + ", " for i, f in sorted(self.outside, key=_read_order))
        fields = sorted(self.fields)
        proj = "".join("(" + "".join(_read_source(i, f) + ", " for f in fields) + "), " for i in sorted(self.sym))
        key = _compile_key(f"(({out}), tuple(sorted(({proj}), key=H)))")

        def guarded(state):  # an unhashable value read: no class
            try:
                return key(state)
            except TypeError:
                return None
        self.key = guarded

    def learn(self, read, state, finished: bool) -> None:
        """Remember the class of ``state``, whose tree read ``read`` (None: the raw state) and
        ``finished`` or not."""
        if read is None:
            return
        outside = frozenset(r for r in read if r[0] not in self.sym)
        fields = frozenset(f for i, f in read if i in self.sym)
        if not (outside <= self.outside and fields <= self.fields):
            self.outside |= outside
            self.fields |= fields
            self.known = {}
            self._compile()
        k = self.key(state)
        if k is not None and len(self.known) < MEMO_LIMIT:
            self.known[k] = PROVEN if finished else False


def _one_edit(a: str, b: str) -> bool:
    """Whether ``a`` is ``b`` or one edit from it (a letter added, dropped, changed, or two neighbours swapped)."""
    if a == b:
        return True
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]]
                                  and a[diff[1]] == b[diff[0]])
    if abs(len(a) - len(b)) != 1:
        return False
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


def _validate_role(role: Role) -> None:
    """Every state with transitions is reachable from the initial one, and no end state is DONE or FAILED
    misspelt."""
    edges: dict[str, set] = {}
    for t in role.transitions:
        edges.setdefault(t.src, set()).update(t.targets)
    seen, todo = {role.init}, [role.init]
    while todo:
        for d in edges.get(todo.pop(), ()):
            if d not in seen:
                seen.add(d)
                todo.append(d)
    unknown = sorted(role.hang_points - set(role.states()))
    if unknown:
        raise SpecError(f"role {role.name} hang_points", ValueError(
            f"{', '.join(map(repr, unknown))} {'is' if len(unknown) == 1 else 'are'} not a state of the role "
            f"(a misspelt hang point would leave that hang unexplored); states: {', '.join(role.states())}"))
    dead = [s for s in role.by_src if s not in seen]
    if dead:
        raise SpecError(f"role {role.name}", ValueError(
            f"states {', '.join(dead)} have transitions but no transition reaches them from {role.init}"))
    for st in sorted(role.terminal_states() - BUILTIN_TERMINAL, key=str):
        # (the first letter right: GONE, NONE or MAILED are names of their own)
        near = next((b for b in (DONE, FAILED) if str(st)[:1].casefold() == b[:1].casefold()
                     and _one_edit(str(st).casefold(), b.casefold())), None)
        if near is not None:  # a misspelt end: the rank would stop there and every check still pass
            raise SpecError(f"role {role.name}", ValueError(
                f"state {st!r} has no transitions, so the role ends there, and it looks like {near} misspelt; use "
                f"{near} (lockstep.spec.machine.{near}), or a name of its own if the role is meant to end in another state"))
    named: set = set()
    for t in role.transitions:
        if (t.src, t.name) in named:
            raise SpecError(f"role {role.name}", ValueError(
                f"two transitions named {t.name!r} leave {t.src}: traces, coverage and counterexamples name a step "
                f"by its transition"))
        named.add((t.src, t.name))
