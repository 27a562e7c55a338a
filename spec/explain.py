"""Explanations of a ``Protocol``'s states and steps for people and JSON: who waits on whom, and
one record per counterexample step.  A mixin: the world's semantics are in world.py.
"""
from __future__ import annotations

from typing import Any

from ..model.api import COLLECTIVE_MISMATCH, Violation
from .lang import BUILTIN_TERMINAL, Ctx
from .source import guard_text


class Explanation:
    # -- coverage ------------------------------------------------------------------------------
    def coverage(self) -> dict[str, dict]:
        """Per role: its transitions, which fired in the explored graph and which never did (fault
        transitions of faults not enabled are left out: they cannot fire by configuration), and its
        essential ones (commitment or emission) and whether any fired."""
        by_role: dict[str, tuple] = {}
        for i, a in enumerate(self.actors):
            by_role.setdefault(a.role.name, (a.role, set()))[1].add(i)
        out = {}
        for name, (role, idxs) in by_role.items():
            fired = {t for i, t in self.fired if i in idxs}
            fired_names = {role.transitions[k].name for k in fired}
            possible = [t for t in role.transitions if not (t.fault and t.fault not in self.faults)]
            never = sorted({t.name for t in possible} - fired_names)
            essential = sorted({t.name for t in role.transitions if t.essential})
            out[name] = {"transitions": len({t.name for t in possible}), "fired": len(fired_names), "never_fired": never,
                         "essential": essential, "essential_fired": sorted(set(essential) & fired_names)}
        return out

    def vacuous_roles(self, cov: dict) -> list[str]:
        """Roles with commitment/emission transitions none of which ever fired."""
        return [r for r, c in cov.items() if c["essential"] and not c["essential_fired"]]

    def waiting(self, state) -> list[dict]:
        actors = state[0]
        status = self.rank_status(actors)
        out = []
        for i, (ctl, v, pend) in enumerate(actors):
            a = self.actors[i]
            if ctl in BUILTIN_TERMINAL:
                continue
            if pend is not None:
                partners = self._partners(actors, i, state[3])
                out.append({"rank": a.rank, "role": a.role.name, "actor": a.label, "state": ctl,
                            "op": pend[1].short(), "group": pend[1].group, "waits_for": partners,
                            "partner_status": {str(r): status[r] for r in partners}})
            elif ctl in a.role.by_src:
                false = self.false_guards(state, i)
                out.append({"rank": a.rank, "role": a.role.name, "actor": a.label, "state": ctl, "op": None,
                            "group": None, "waits_for": [], "partner_status": {},
                            "condition": "no transition enabled in " + ctl + (
                                "; guard false: " + "; ".join(f"{f['transition']}: {f['guard']}" for f in false) if false else ""),
                            "false_guards": false})
        return out

    def false_guards(self, state, i: int) -> list[dict]:
        """The guards out of actor i's control state that are false in ``state``, each as
        {transition, guard}: the guard's label (``why=``, a named guard) or a lambda's source text.
        Fault transitions are left out (they wait for the fault, not for a condition)."""
        ctl, v, _pend = state[0][i]
        a = self.actors[i]
        ctx = Ctx(v, state[1], self.params, a.rank, None, self, i)
        out = []
        for tidx in a.role.by_src.get(ctl, ()):
            t = a.role.transitions[tidx]
            if t.fault is not None or t.guard is None:
                continue
            try:
                ok = t.guard(ctx)
            except Exception:  # noqa: BLE001 - a guard that cannot be read here is not reported as false
                continue
            if not ok:
                out.append({"transition": t.name, "guard": guard_text(t)})
        return out

    # -- counterexample steps ---------------------------------------------------------------
    def _ids(self, i, v) -> dict:
        if v is None:
            return {}
        return {k: getattr(v, k) for k in self.actors[i].role.ids}

    @staticmethod
    def _diff(a, b) -> dict:
        if a is None or b is None or a == b:
            return {}
        return {k: getattr(b, k) for k in a._fields if getattr(a, k) != getattr(b, k)}

    def describe(self, state, action, nxt) -> dict:
        actors, g, fu = state[:3]
        nactors = nxt[0] if isinstance(nxt, tuple) else None
        ng = nxt[1] if isinstance(nxt, tuple) else None
        d: dict[str, Any] = {"rank": None, "role": None, "actor": None, "transition": None, "op": None, "group": None,
                             "ids": {}, "changed": {}}
        if action is None:
            d.update(transition="(stuck)", verdict=nxt.verdict if isinstance(nxt, Violation) else None)
            return d
        kind = action[0]
        fabric_step = self.describe_fabric_step(state, action, nxt)  # eager and non-blocking ops (world.py)
        if fabric_step is not None:
            d.update(fabric_step)
        elif kind == "t":
            _, i, tidx, ch = action
            a = self.actors[i]
            t = a.role.transitions[tidx]
            d.update(rank=a.rank, role=a.role.name, actor=a.label, transition=t.name, src=t.src, ids=self._ids(i, actors[i][1]))
            if ch is not None:
                d["choice"] = _jsonable(ch)
            if t.commit:
                d["commit"] = True
            if t.fault:
                d["fault"] = t.fault
            if t.event:
                d["event"] = t.event
            if nactors is not None:
                nctl, nv, npend = nactors[i]
                if npend is not None:
                    d["op"] = npend[1].short()
                    d["group"] = npend[1].group
                    d["issued"] = True
                    d["dst"] = nctl
                else:
                    d["dst"] = nctl
                d["ids"] = self._ids(i, nv)
                d["changed"] = self._diff(actors[i][1], nv)
        elif kind == "m":
            _, gname, idxs = action
            op = actors[idxs[0]][2][1]
            d.update(rank=[self.actors[i].rank for i in idxs], role="fabric", transition=f"{op.kind} completes",
                     op=op.short(), group=gname, ids=self._ids(idxs[0], actors[idxs[0]][1]))
            if isinstance(nxt, Violation):
                d["calls"] = {str(self.actors[i].rank): actors[i][2][1].short() for i in idxs}
                if nxt.verdict == COLLECTIVE_MISMATCH:  # the calls met and differ (``calls``): nothing completes
                    d["transition"] = f"{op.kind} mismatch"
            elif nactors is not None:
                d["completes"] = {self.actors[i].label: self.actors[i].role.transitions[actors[i][2][0]].name for i in idxs}
                ch = {self.actors[i].label: self._diff(actors[i][1], nactors[i][1]) for i in idxs}
                d["changed"] = {k: v for k, v in ch.items() if v}
        elif kind == "p":
            _, gname, (si, ri) = action
            sop, rop = actors[si][2][1], actors[ri][2][1]
            d.update(rank=[self.actors[si].rank, self.actors[ri].rank], role="fabric",
                     transition="send/recv mismatch" if isinstance(nxt, Violation) and nxt.verdict == COLLECTIVE_MISMATCH
                     else "send/recv completes", op=f"{sop.short()} -> {rop.short()}", group=gname,
                     ids=self._ids(si, actors[si][1]))
            if nactors is not None:
                ch = {self.actors[i].label: self._diff(actors[i][1], nactors[i][1]) for i in (si, ri)}
                d["changed"] = {k: v for k, v in ch.items() if v}
        elif kind in ("e", "x"):
            i = action[1]
            a = self.actors[i]
            t = a.role.transitions[actors[i][2][0]]
            d.update(rank=a.rank, role=a.role.name, actor=a.label, op=actors[i][2][1].short(), group=actors[i][2][1].group,
                     ids=self._ids(i, actors[i][1]),
                     transition=(f"{t.name} fails: partner process gone ({self.backend})" if kind == "e"
                                 else f"{t.name} times out (watchdog)"))
            if nactors is not None:
                d["dst"] = nactors[i][0]
        elif kind in ("crash", "hang"):
            r = action[1]
            d.update(rank=r, role=self.actors[self.actors_of_rank[r][0]].role.name, transition=f"injected {kind}",
                     fault=kind)
        if kind == "t" and isinstance(nxt, tuple) and nxt[3] != state[3]:
            d.update(self.posted(state, action, nxt))  # ops posted without blocking (world.py)
        if ng is not None and g != () and ng != g:
            d["shared"] = self._diff(g, ng)
        return d



def _jsonable(x):
    if isinstance(x, tuple) and hasattr(x, "_asdict"):
        return {k: _jsonable(v) for k, v in x._asdict().items()}
    if isinstance(x, (tuple, list)):
        return [_jsonable(y) for y in x]
    if isinstance(x, (int, float, str, bool)) or x is None:
        return x
    return str(x)


