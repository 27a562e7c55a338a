"""How much of the generic engine's time is the visited set's hashing, and what keying states by
small integers would save: an upper bound for the "state of small integers" redesign, measured
before anyone builds it.

The script explores a spec unreduced with the engine's own successor function (plain BFS, safety
only), keeps every successor in discovery order, then times, side by side in this one process:

- visited inserts on the states themselves (``dict.setdefault(state, n)`` for every successor, in
  BFS order: what model/checker.py does per transition);
- the same inserts on integer keys (each actor state and the shared variables interned to a small
  number once, beforehand: the key a successor function could build from its parent's key and the
  number of the one actor state that changed);
- the local-step memo's lookups per expanded state and actor, keyed ``(actor state, shared id)`` as
  spec/world.py does, against ``(actor state id, shared id)``.

Interning is done outside the timed loops, so the integer figures are a floor, not a forecast: a
real implementation also pays for producing the numbers and for keeping each stored state's key.

    python bench/bench_engine_keys.py                       # the user-written 6/4/2 pipeline
    python bench/bench_engine_keys.py pp1 -p mesh=3 --repeat 3
"""
from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
USER_SPEC = HERE / "user_pipeline_spec.py"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec", nargs="?", default=str(USER_SPEC), help="spec name or file (default: the user pipeline)")
    ap.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args(argv)

    from lockstep.model.api import Violation
    from lockstep.spec.loading import build_model, load_spec

    info = load_spec(args.spec)
    params = {k: p.default for k, p in info.params.items()}
    for kv in args.param:
        k, _, v = kv.partition("=")
        if k not in params:
            ap.error(f"-p {kv}: {info.name} has no parameter {k!r} (it has {', '.join(params) or 'none'})")
        params[k] = type(params[k])(v) if params[k] is not None else v
    model = build_model(info, params, None, "gloo")
    model.set_reduction(False)
    gc.disable()

    succ = model.successors
    init = list(model.init_states())
    seen = dict.fromkeys(init)
    frontier, allsucc = list(init), []
    t0 = time.process_time()
    while frontier:
        nxt = []
        for s in frontier:
            for _, n in succ(s):
                if isinstance(n, Violation):
                    continue
                allsucc.append(n)
                if n not in seen:
                    seen[n] = None
                    nxt.append(n)
        frontier = nxt
    explore = time.process_time() - t0
    print(f"{info.name}: {len(seen):,} states, {len(allsucc):,} successors; BFS {explore:.2f} CPU s")

    ids: dict = {}
    gids: dict = {}

    def key(s):
        return tuple(ids.setdefault(x, len(ids)) for x in s[0]) + (gids.setdefault(s[1], len(gids)),) + tuple(s[2:])

    keys = [key(s) for s in allsucc]
    memo_state = [((x, gids[s[1]]), (ids[x], gids[s[1]])) for s in seen if len(s) == 4 for x in s[0]]
    for rep in range(args.repeat):
        d: dict = {}
        t = time.process_time()
        for n in allsucc:
            d.setdefault(n, len(d))
        on_states = time.process_time() - t
        d = {}
        t = time.process_time()
        for n in keys:
            d.setdefault(n, len(d))
        on_ints = time.process_time() - t
        m1 = {a: None for a, _ in memo_state}
        m2 = {b: None for _, b in memo_state}
        t = time.process_time()
        for a, _ in memo_state:
            m1.get(a)
        memo_states = time.process_time() - t
        t = time.process_time()
        for _, b in memo_state:
            m2.get(b)
        memo_ints = time.process_time() - t
        print(f"run {rep + 1}: visited inserts {on_states:.2f} s on states, {on_ints:.2f} s on integer keys "
              f"({on_states / max(on_ints, 1e-9):.1f}x); local-step memo lookups ({len(memo_state):,}) "
              f"{memo_states:.2f} s keyed by actor states, {memo_ints:.2f} s by ids")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
