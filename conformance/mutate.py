"""Mutation adequacy of conform: mutate a conforming run and count how many mutants it rejects.

Operators (each yields mutants of one rank's trace; line indices ``i`` are renumbered so a mutant is
schema-valid and tests conform itself, not the loader):
- drop: remove one behavioural event;
- swap: exchange two adjacent behavioural events of a rank (timestamps stay in place);
- op / group / root / shape / dtype: change that field of one comm_enter to another valid value;
- call_id / chunk_index / cache_epoch: +1 on one event that carries it.

Behavioural events are the ones the abstraction map or c10d matching reads: comm_enter/comm_exit,
header, preflight, validation, generator_call, phase_b_end, result, chunk_emitted, hard_cut,
rank_exit.  Annotations the spec does not model (cache_reset/advance/recompute, mark, startup_step,
parity_ok, chunk_dropped, tripwire text, timings) are left alone: mutating them does not change the
behaviour, so those mutants are not counted.  A swap of two events that are identical but for their
position is not generated either.
"""
from __future__ import annotations

import copy
import random
from dataclasses import dataclass

from ..tracefmt import schema as S

BEHAVIOURAL = frozenset({
    S.COMM_ENTER, S.COMM_EXIT, S.HEADER_SENT, S.HEADER_RECV, S.PREFLIGHT_OK, S.PREFLIGHT_FAIL, S.VALIDATION_FAIL,
    S.GENERATOR_CALL, S.PHASE_B_END, S.RESULT_SENT, S.RESULT_RECV, S.RESULT_ACCEPTED, S.RESULT_DROPPED,
    S.CHUNK_EMITTED, S.HARD_CUT, S.RANK_EXIT})
ID_CARRIERS = frozenset({S.HEADER_SENT, S.HEADER_RECV, S.PREFLIGHT_OK, S.GENERATOR_CALL, S.PHASE_B_END, S.RESULT_SENT,
                         S.RESULT_RECV, S.RESULT_ACCEPTED, S.RESULT_DROPPED, S.CHUNK_EMITTED})
OPERATORS = ("drop", "swap", "op", "group", "root", "shape", "dtype", "call_id", "chunk_index", "cache_epoch")
_OPS = ("broadcast", "all_reduce", "all_gather", "send", "recv")
_DTYPES = ("float32", "int64", "uint8", "bfloat16")


@dataclass
class Mutant:
    operator: str
    rank: int
    line: int          # 1-based line of the mutated event in the original file
    detail: str
    run: S.RunTrace


def _renumber(events: list[dict]) -> list[dict]:
    for k, e in enumerate(events):
        e["i"] = k
    return events


def _with_rank(run: S.RunTrace, rank: int, events: list[dict]) -> S.RunTrace:
    new = S.RunTrace(path=run.path, manifest=run.manifest, ranks=dict(run.ranks))
    old = run.ranks[rank]
    new.ranks[rank] = S.RankTrace(rank=rank, path=old.path, events=events, truncated=old.truncated)
    return new


def _field_mutation(op_name: str, e: dict, groups: dict, rng: random.Random):
    """A changed copy of event e for a field operator, or None when it does not apply."""
    m = copy.deepcopy(e)
    if op_name in ("call_id", "chunk_index", "cache_epoch"):
        if e["ev"] not in ID_CARRIERS or op_name not in e:
            return None
        m[op_name] = e[op_name] + 1
        return m, f"{op_name} {e[op_name]} -> {m[op_name]}"
    if e["ev"] != S.COMM_ENTER:
        return None
    if op_name == "op":
        choices = [o for o in _OPS if o != e["op"] and (o in ("send", "recv")) == bool(e.get("p2p"))]
        m["op"] = rng.choice(choices)
        return m, f"op {e['op']} -> {m['op']}"
    if op_name == "group":
        others = [g for g in groups if g != e["group"]]
        if not others:
            return None
        m["group"] = rng.choice(others)
        return m, f"group {e['group']} -> {m['group']}"
    if op_name == "root":
        key = "src" if "src" in e else ("dst" if "dst" in e else None)
        if key is None:
            return None
        size = len(groups.get(e["group"], [])) or 2
        m[key] = (e[key] + 1) % max(size, 2)
        if m[key] == e[key]:
            return None
        return m, f"{key} {e[key]} -> {m[key]}"
    if op_name == "shape":
        sh = list(e.get("shape") or [])
        if not sh:
            return None
        k = rng.randrange(len(sh))
        sh[k] += 1
        m["shape"] = sh
        return m, f"shape {e['shape']} -> {sh}"
    if op_name == "dtype":
        if e.get("dtype") is None:
            return None
        m["dtype"] = rng.choice([d for d in _DTYPES if d != e["dtype"]])
        return m, f"dtype {e['dtype']} -> {m['dtype']}"
    return None


_MAIN_EVENTS = frozenset({S.PREFLIGHT_OK, S.PREFLIGHT_FAIL, S.RESULT_ACCEPTED, S.RESULT_DROPPED, S.CHUNK_EMITTED,
                          S.HARD_CUT})


def _equivalent_swap(a: dict, b: dict, two_threads: bool) -> bool:
    """Swaps that do not change behaviour: where an isend's wait was recorded, and the interleaving of
    records of rank0's two threads (main and comms) in PP."""
    if any(x["ev"] == S.COMM_EXIT and x["op"] == "isend" for x in (a, b)):
        return True
    if two_threads and ((a["ev"] in _MAIN_EVENTS) != (b["ev"] in _MAIN_EVENTS)):
        return True
    return _same_but_position(a, b)


def _same_but_position(a: dict, b: dict) -> bool:
    strip = lambda e: {k: v for k, v in e.items() if k not in ("i", "t", "ms")}
    return strip(a) == strip(b)


def mutants(run: S.RunTrace, n: int, seed: int = 0) -> list[Mutant]:
    """n mutants drawn evenly over the operators (as far as each applies), deterministic for a seed."""
    rng = random.Random(seed)
    groups = run.manifest["groups"]
    sites: dict[str, list[tuple[int, int]]] = {o: [] for o in OPERATORS}
    for r, tr in run.ranks.items():
        evs = tr.events
        two = run.manifest["roles"].get(str(r)) == "stage0"
        for k, e in enumerate(evs):
            if e["ev"] not in BEHAVIOURAL:
                continue
            sites["drop"].append((r, k))
            if k + 1 < len(evs) and evs[k + 1]["ev"] in BEHAVIOURAL and not _equivalent_swap(e, evs[k + 1], two):
                sites["swap"].append((r, k))
            for o in OPERATORS[2:]:
                if _field_mutation(o, e, groups, random.Random(0)) is not None:
                    sites[o].append((r, k))
    out: list[Mutant] = []
    ops = [o for o in OPERATORS if sites[o]]
    per = {o: n // len(ops) + (1 if i < n % len(ops) else 0) for i, o in enumerate(ops)}
    for o in ops:
        picks = rng.sample(sites[o], min(per[o], len(sites[o])))
        for r, k in picks:
            evs = [dict(e) for e in run.ranks[r].events]
            line = k + 1
            if o == "drop":
                detail = f"drop {evs[k]['ev']}" + (f" {evs[k].get('op')} {evs[k].get('purpose', '')}" if evs[k]["ev"] == S.COMM_ENTER else "")
                del evs[k]
            elif o == "swap":
                detail = f"swap {evs[k]['ev']} <-> {evs[k + 1]['ev']}"
                t0, t1 = evs[k]["t"], evs[k + 1]["t"]
                evs[k], evs[k + 1] = evs[k + 1], evs[k]
                evs[k]["t"], evs[k + 1]["t"] = t0, t1
            else:
                res = _field_mutation(o, evs[k], groups, rng)
                if res is None:
                    continue
                evs[k], detail = res
            out.append(Mutant(o, r, line, detail, _with_rank(run, r, _renumber(evs))))
    return out


def kill_rate(run: S.RunTrace, n: int = 200, seed: int = 0, budget_factor: int = 60):
    """(killed, total, survivors, per-operator counts) for n mutants of a conforming run."""
    from .check import conform_run
    from .loader import BadInput

    ms = mutants(run, n, seed)
    killed = 0
    survivors = []
    per: dict[str, list[int]] = {}
    for m in ms:
        total_events = sum(len(t.events) for t in m.run.ranks.values())
        try:
            for tr in m.run.ranks.values():
                for e in tr.events:
                    S.validate_event(e, tr.path, e["i"] + 1)
            rep = conform_run(m.run, check_variant=False, budget=budget_factor * total_events // 4 + 5000)
            dead = not rep.conforms
        except (BadInput, S.TraceSchemaError):
            dead = True
        per.setdefault(m.operator, [0, 0])
        per[m.operator][1] += 1
        if dead:
            killed += 1
            per[m.operator][0] += 1
        else:
            survivors.append(m)
    return killed, len(ms), survivors, per
