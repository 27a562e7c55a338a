"""Properties as monitors: a small state machine over transition ``event=`` names, defined once and
run both by the model checker (its state is part of the world state) and by ``lockstep conform``
(over the events a recorded run's trace maps to).

A ``Monitor`` names its verdict, its initial state and its moves ``{(state, event): next}``, where
``next`` is a state name or ``Reject("why")``; ``"*"`` as the state matches every state.  An event the
monitor watches (one named in its moves) with no move from the current state leaves it where it is;
events it does not watch are never seen.  ``per="world"`` runs one instance over every actor's events,
``per="rank"`` one instance per rank over that rank's events (all its threads).  ``roles=`` keeps only
events fired by those roles; ``when=fn(ev)`` keeps only events whose firing actor satisfies it
(``ev.rank``, ``ev.vars``: the actor's variables after the step, ``ev.role``, ``ev.thread``,
``ev.event``).  ``must_end=`` names the states allowed at an end of the run where no process failed.

When an event fires: at the step that takes the transition.  An op transition's event fires when the
op is issued (posted), not when the fabric completes it.

In the checker, a move to ``Reject`` is a violation with the monitor's verdict (a shortest
counterexample, as for invariants); a monitor not in ``must_end`` at a clean end state is one too.  A
per-rank instance stops when its rank's process is gone (failed, crashed or wedged), as the rank's
variables do: it is neither advanced nor judged at the end any more.  So a per-rank monitor whose
state is a function of its rank's control state adds no states to the search.  Soundness with the
reductions: a step whose event some monitor watches is visible to partial-order reduction
(``Reductions.por_visible``); symmetry permutes the per-rank instances with their ranks, and a
``when`` predicate that reads the rank of a symmetric actor must keep or drop the event alike at every
symmetric rank (``MonitorSet._when_blind``; a SpecError otherwise).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from ..model.api import SpecError, Violation
from .state import MonitoredState

GONE = None  # a per-rank instance whose rank's process is gone


@dataclass(frozen=True)
class Reject:
    """A move that rejects the run; ``why`` is the message of the violation."""
    why: str


class Monitor:
    def __init__(self, name: str, verdict: str, init: str, on: dict, per: str = "world",
                 roles: Sequence[str] | None = None, when: Callable | None = None,
                 must_end: Iterable[str] | None = None, doc: str = ""):
        where = f"monitor {name}"
        if per not in ("world", "rank"):
            raise SpecError(where, ValueError(f"per={per!r}: expected 'world' or 'rank'"))
        if not isinstance(on, dict) or not on:
            raise SpecError(where, ValueError("on= must be a non-empty dict {(state, event): next state or Reject(why)}"))
        states = {init}
        for key, dst in on.items():
            if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(x, str) for x in key)):
                raise SpecError(where, ValueError(f"move key {key!r}: expected (state, event), both strings"))
            if isinstance(dst, str):
                if dst == "*":
                    raise SpecError(where, ValueError(f"move {key!r}: '*' is not a state to go to"))
                states.add(dst)
            elif not isinstance(dst, Reject):
                raise SpecError(where, ValueError(f"move {key!r} -> {dst!r}: expected a state name or Reject(why)"))
            if key[0] != "*":
                states.add(key[0])
        self.name, self.verdict, self.init, self.per, self.doc = name, verdict, init, per, doc
        self.on = dict(on)
        self.states = frozenset(states)
        self.events = frozenset(e for _, e in on)
        self.roles = frozenset(roles) if roles is not None else None
        self.when = when
        self.must_end = frozenset(must_end) if must_end is not None else None
        if self.must_end is not None:
            bad = sorted(self.must_end - self.states)
            if bad:
                raise SpecError(where, ValueError(f"must_end names unknown states {bad}; states: {sorted(self.states)}"))

    def move(self, state: str, event: str):
        """The next state (or a Reject) on ``event`` from ``state``."""
        nxt = self.on.get((state, event))
        if nxt is None:
            nxt = self.on.get(("*", event), state)
        return nxt

    # -- the two shapes most properties take ------------------------------------------------
    @classmethod
    def never_after(cls, name: str, verdict: str, first: str, then: str | Sequence[str], **kw) -> "Monitor":
        """After an event ``first``, no event of ``then``."""
        thens = (then,) if isinstance(then, str) else tuple(then)
        on = {("after", t): Reject(f"{t} after {first}") for t in thens}
        on[("before", first)] = "after"
        return cls(name, verdict, "before", on, **kw)

    @classmethod
    def followed_by(cls, name: str, verdict: str, trigger: str, ends: str | Sequence[str], must_end: bool = False,
                    **kw) -> "Monitor":
        """Every ``trigger`` is followed by one of ``ends`` before the next ``trigger``; with
        ``must_end``, also before the run ends cleanly."""
        ends_ = (ends,) if isinstance(ends, str) else tuple(ends)
        on = {("idle", trigger): "open",
              ("open", trigger): Reject(f"{trigger} again before {' or '.join(ends_)}")}
        for e in ends_:
            on[("open", e)] = "idle"
        return cls(name, verdict, "idle", on, must_end=("idle",) if must_end else None, **kw)

    def __repr__(self) -> str:
        return f"Monitor({self.name!r}, {self.verdict!r}, per={self.per!r})"


class Event:
    """What a ``when`` predicate sees: the event and its firing actor (after the step)."""

    __slots__ = ("event", "_rank", "vars", "role", "thread", "_symmetric", "rank_read")

    def __init__(self, event, rank, vars, role, thread, symmetric=False):
        self.event, self._rank, self.vars, self.role, self.thread = event, rank, vars, role, thread
        self._symmetric, self.rank_read = symmetric, False

    @property
    def rank(self) -> int:
        if self._symmetric:  # the monitor set checks that every symmetric rank gets the same from ``when``
            self.rank_read = True
        return self._rank


class MonitorSet:
    """A world's monitors: where each instance sits in ``MonitoredState.monitors`` and how the tuple
    advances on a step."""

    def __init__(self, world, monitors: Sequence[Monitor]):
        names = [m.name for m in monitors]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise SpecError(f"{world.name} monitors", ValueError(f"two monitors are named {dup[0]!r}"))
        known = {t.event for a in world.actors for t in a.role.transitions if t.event}
        roles = {a.role.name for a in world.actors}
        for m in monitors:
            if m.roles is not None and m.roles - roles:
                raise SpecError(f"monitor {m.name}", ValueError(
                    f"roles {sorted(m.roles - roles)} are not in the world; roles: {sorted(roles)}"))
            bad = sorted(m.events - known)
            if bad:
                raise SpecError(f"monitor {m.name}", ValueError(
                    f"watches events {bad} that no transition declares (event=...); declared: {sorted(known)}"))
        self.world = world
        self._blind: set = set()  # (monitor, event, vars, role, thread) whose when() every symmetric rank gets alike
        self.monitors = list(monitors)
        self.events = frozenset().union(*(m.events for m in monitors))
        # slot layout: a world monitor has one slot, a per-rank monitor one per rank (world.ranks order)
        self.base: list[int] = []
        k = 0
        for m in monitors:
            self.base.append(k)
            k += 1 if m.per == "world" else len(world.ranks)
        self.size = k
        self.rank_pos = {r: p for p, r in enumerate(world.ranks)}
        self.init = tuple(s for m in monitors for s in ([m.init] if m.per == "world" else [m.init] * len(world.ranks)))
        # per actor, per transition index: the (monitor index, slot) pairs its event reaches
        self.reach: list[dict[int, tuple]] = []
        for i, a in enumerate(world.actors):
            table = {}
            for tidx, t in enumerate(a.role.transitions):
                if t.event not in self.events:
                    continue
                hits = tuple((mi, self.slot(mi, a.rank)) for mi, m in enumerate(monitors)
                             if t.event in m.events and (m.roles is None or a.role.name in m.roles))
                if hits:
                    table[tidx] = hits
            self.reach.append(table)
        # per rank, the per-rank instances that rank's events can reach (a rank running none of a
        # monitor's roles keeps its instance in the initial state for ever: nothing to move or stop)
        role_of = {r: {world.actors[j].role.name for j in world.actors_of_rank[r]} for r in world.ranks}
        self.rank_slots = {r: tuple(self.base[mi] + self.rank_pos[r] for mi, m in enumerate(monitors)
                                    if m.per == "rank" and (m.roles is None or m.roles & role_of[r]))
                           for r in world.ranks}
        self._live = [(r, slots, tuple(world.actors_of_rank[r])) for r, slots in self.rank_slots.items() if slots]
        self.has_per_rank = bool(self._live)
        # whether symmetry must move per-rank instances along with the symmetric actors
        self.moves_with_symmetry = any(self.rank_slots[world.actors[i].rank] for i in world._sym_ranks_idx())

    def slot(self, mi: int, rank: int) -> int:
        m = self.monitors[mi]
        return self.base[mi] if m.per == "world" else self.base[mi] + self.rank_pos[rank]

    def initial(self, base) -> MonitoredState:
        return MonitoredState(*base, self.init)

    # -- the checker --------------------------------------------------------------------------
    def successors(self, state, base_successors) -> list:
        """The world's successors of a monitored state: the steps of the world without monitors,
        each advancing the monitors (or rejected by one)."""
        mon = state[4]
        out = []
        for act, n in base_successors:
            if isinstance(n, Violation):
                out.append((act, n))
                continue
            nm = mon
            if act is not None and act[0] == "t":
                hits = self.reach[act[1]].get(act[2])
                if hits is not None:
                    nm = self._advance(state, act, n, mon, hits)
                    if isinstance(nm, Violation):
                        out.append((act, nm))
                        continue
            if self.has_per_rank:
                nm = self._stop_gone(n, nm)
            out.append((act, MonitoredState(n[0], n[1], n[2], n[3], nm)))
        return out

    def _advance(self, state, act, n, mon, hits):
        world = self.world
        i, tidx = act[1], act[2]
        a = world.actors[i]
        t = a.role.transitions[tidx]
        ev = None
        nm = list(mon)
        for mi, s in hits:
            cur = nm[s]
            if cur is GONE:
                continue
            m = self.monitors[mi]
            if m.when is not None:
                if ev is None:
                    v = n[0][i][1]
                    ev = Event(t.event, a.rank, v if v is not None else state[0][i][1], a.role.name, a.thread,
                               i in world._sym_ranks_idx())
                ev.rank_read = False
                try:
                    keep = m.when(ev)
                except SpecError:
                    raise
                except Exception as e:  # noqa: BLE001 - a bug in the spec, reported with the monitor
                    raise SpecError(f"monitor {m.name} (when)", e) from e
                if ev.rank_read:
                    self._when_blind(m, ev, bool(keep))
                if not keep:
                    continue
            nxt = m.move(cur, t.event)
            if isinstance(nxt, Reject):
                return Violation(m.verdict, f"monitor {m.name}: {nxt.why} ({a.label} {a.role.name}.{t.name} fires "
                                            f"{t.event} in monitor state {cur})",
                                 {"monitor": m.name, "rank": a.rank, "actor": a.label, "event": t.event,
                                  "transition": t.name, "monitor_state": cur})
            nm[s] = nxt
        return tuple(nm)

    def _when_blind(self, m, ev, keep: bool) -> None:
        """A ``when`` that read a symmetric actor's rank must keep or drop the event alike at every
        symmetric rank (as a step that reads its rank: world.py's ``_rank_blind``)."""
        key = (m.name, ev.event, ev.vars, ev.role, ev.thread)
        if key in self._blind:
            return
        world = self.world
        by_rank = {ev._rank: keep}
        for r in sorted(world._sym_ranks):
            if r != ev._rank:
                try:
                    by_rank[r] = bool(m.when(Event(ev.event, r, ev.vars, ev.role, ev.thread, True)))
                except Exception as e:  # noqa: BLE001 - it differs: the rank told them apart
                    by_rank[r] = f"{type(e).__name__}: {e}"
        if any(x != keep for x in by_rank.values()):
            told = lambda x: ("keeps the event" if x else "drops the event") if isinstance(x, bool) else f"raises {x}"  # noqa: E731
            world._refuse_told_apart(f"monitor {m.name} (when)", by_rank, told, f" on {ev.event} (from {ev.vars!r:.100})")
        self._blind.add(key)

    def _stop_gone(self, n, nm):
        actors = n[0]
        out = None
        for _r, slots, idxs in self._live:
            if any(actors[j][1] is None for j in idxs):
                for s in slots:
                    if (out or nm)[s] is not GONE:
                        if out is None:
                            out = list(nm)
                        out[s] = GONE
        return nm if out is None else tuple(out)

    def end_violation(self, state) -> Violation | None:
        """A clean end (no process failed) where a monitor is not in its ``must_end`` states."""
        mon = state[4]
        for mi, m in enumerate(self.monitors):
            if m.must_end is None:
                continue
            # per rank: the ranks that run one of the monitor's roles
            slots = [(self.base[mi], None)] if m.per == "world" else [
                (self.base[mi] + p, r) for r, p in self.rank_pos.items() if self.base[mi] + p in self.rank_slots[r]]
            for s, r in slots:
                cur = mon[s]
                if cur is GONE or cur in m.must_end:
                    continue
                where = "" if r is None else f" on rank {r}"
                return Violation(m.verdict, f"monitor {m.name}: the run ends in monitor state {cur}{where}, not one of "
                                            f"{', '.join(sorted(m.must_end))}",
                                 {"monitor": m.name, "rank": r, "monitor_state": cur})
        return None

    def canonical(self, world, state):
        """The orbit representative of a state under the symmetry of ``world.symmetric``: the
        symmetric actors sorted by (actor state, their rank's per-rank monitor instances), the
        instances moving with their actors."""
        actors, mon = state[0], state[4]
        sym = world.symmetric
        slots = self.rank_slots
        rank = world._actor_rank

        def key(i):
            return world._order_key((actors[i], tuple(mon[s] for s in slots[rank[i]])))
        order = sorted(sym, key=key)
        if order == list(sym):
            return state
        return self.permute(world, state, order)

    def permute(self, world, state, order):
        """The state with symmetric actor ``order[k]``'s state (and its rank's per-rank instances) in
        the place of ``world.symmetric[k]``."""
        actors, mon = state[0], state[4]
        slots, rank = self.rank_slots, world._actor_rank
        nl = list(actors)
        nm = list(mon)
        for i_new, i_old in zip(world.symmetric, order):
            nl[i_new] = actors[i_old]
            for s_new, s_old in zip(slots[rank[i_new]], slots[rank[i_old]]):
                nm[s_new] = mon[s_old]
        return MonitoredState(tuple(nl), state[1], state[2], state[3], tuple(nm))

    def state_of(self, state, name: str, rank: int | None = None):
        """Monitor ``name``'s state in ``state``: its world instance, or ``rank``'s per-rank instance
        (None once that rank's process is gone)."""
        for mi, m in enumerate(self.monitors):
            if m.name == name:
                if m.per == "world":
                    return state[4][self.base[mi]]
                if rank not in self.rank_pos:
                    raise KeyError(f"monitor {name} is per rank: name one of the ranks {sorted(self.rank_pos)}")
                return state[4][self.base[mi] + self.rank_pos[rank]]
        raise KeyError(f"no monitor {name!r}; monitors: {', '.join(m.name for m in self.monitors) or '(none)'}")

    # -- traces --------------------------------------------------------------------------------
    def run_events(self, events: Iterable[tuple], skip: frozenset = frozenset()) -> list[dict]:
        """Run the monitors over recorded events ``(rank, actor label, role, event, line)``, in the
        order given (a per-rank monitor sees its rank's events in that order).  Monitors named in
        ``skip`` are not run.  Returns the first rejection of each monitor instance, as
        ``{monitor, verdict, rank, actor, line, event, monitor_state, message}``.  ``must_end`` is not
        judged on a trace (a recorded run may stop anywhere)."""
        mon = list(self.init)
        out = []
        dead: set = set()
        for rank, label, role, event, line in events:
            if event not in self.events:
                continue
            for mi, m in enumerate(self.monitors):
                if m.name in skip or event not in m.events or (m.roles is not None and role not in m.roles):
                    continue
                s = self.slot(mi, rank)
                if s in dead:
                    continue
                cur = mon[s]
                nxt = m.move(cur, event)
                if isinstance(nxt, Reject):
                    out.append({"monitor": m.name, "verdict": m.verdict, "rank": rank, "actor": label, "line": line,
                                "event": event, "monitor_state": cur,
                                "message": f"monitor {m.name}: {nxt.why} (rank {rank} line {line}: {event} in monitor "
                                           f"state {cur})"})
                    dead.add(s)
                    continue
                mon[s] = nxt
        return out


def monitors_of(world) -> MonitorSet | None:
    return getattr(world, "_monitor_set", None)


__all__ = ["Monitor", "Reject", "Event", "MonitorSet", "GONE", "monitors_of"]
