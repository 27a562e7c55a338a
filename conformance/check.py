"""``conform``: check a recorded run against its spec.

Three layers, each reporting the first thing it cannot explain:
1. c10d matching (fabric_check.py): the raw comm ops of all ranks, including impl-only ones, match
   per group (collectives) and per peer pair (p2p); header IDs agree between sender and receivers;
   identifiers are consistent.
2. replay (replay.py) of the abstracted observables (mapping.py) against the spec built from the
   manifest (world size, chunks, steps, hard cuts, the fault's spec faults; backend gloo).
3. the spec's monitors (spec/monitor.py) over the events the run recorded (``trace_monitors``): a
   rejection names the monitor, the rank, the trace line and the event, and the run does not conform;
4. for an ``--unsafe`` run: the replay against the matching spec variant, and the model checker's
   verdict for that variant; the report says whether the run is an instance of that counterexample
   class (e.g. ``fm04-throw-after-header: STRANDED``).
A run directory larger than STREAM_ABOVE is checked over streams of its rank files (stream.py:
memory flat in the trace's length); a smaller one, or a run in memory, over its event lists, with the
same checks and the same report.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..spec import registry
from . import fabric_check, loader, mapping, monitors, payload
from ..tracefmt import schema as S
from .replay import Replayer, ReplayResult

SPEC_OF_TOPOLOGY = {"tp": "tp", "pp0": "pp0", "pp1": "pp1"}
# verdict -> exit code of `lockstep conform` (2 is bad input)
EXIT_CODES = {"CONFORMS": 0, "DOES_NOT_CONFORM": 1, "INCONCLUSIVE": 3, "CONFORMS_TO_VARIANT": 4}


@dataclass
class ConformReport:
    trace_dir: str
    topology: str
    spec: str
    variant: str | None
    params: dict
    conforms: bool
    fabric: list = field(default_factory=list)       # c10d-level mismatches
    replay: ReplayResult | None = None
    notes: list = field(default_factory=list)
    truncated: list = field(default_factory=list)    # ranks whose last line was cut off
    unsafe: dict | None = None                       # {switch, variant, checker, instance, message}
    interrupted: list = field(default_factory=list)  # ranks whose trace ends with rank_exit how=interrupted
    run_interrupted: bool = False                    # the launcher's summary.json says interrupted
    monitors: list = field(default_factory=list)     # rejections by the spec's monitors (trace_monitors)

    @property
    def verdict(self) -> str:
        """CONFORMS | DOES_NOT_CONFORM | INCONCLUSIVE | CONFORMS_TO_VARIANT (see EXIT_CODES)."""
        if self.was_interrupted:
            # a signal ended the run: the trace is a prefix, cut at a different point on each rank (an op
            # one rank saw complete may be missing its partner's record), so neither verdict is sound;
            # the replay of the prefix is still reported (how far it got)
            return "INCONCLUSIVE"
        if self.conforms:
            return "CONFORMS"
        if self.unsafe and self.unsafe.get("instance"):
            return "CONFORMS_TO_VARIANT"
        if not self.fabric and not self.monitors and self.replay is not None and self.replay.budget_hit:
            return "INCONCLUSIVE"
        return "DOES_NOT_CONFORM"

    @property
    def was_interrupted(self) -> bool:
        return bool(self.interrupted) or self.run_interrupted

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    def to_dict(self) -> dict:
        return {"schema": 1, "trace_dir": self.trace_dir, "topology": self.topology, "spec": self.spec,
                "variant": self.variant, "params": self.params,
                "verdict": self.verdict, "interrupted": self.was_interrupted, "interrupted_ranks": self.interrupted,
                "fabric_mismatches": self.fabric, "monitor_rejections": self.monitors, "replay": self.replay.to_dict() if self.replay else None,
                "truncated_ranks": self.truncated, "notes": self.notes, "unsafe": self.unsafe}


def build_model(spec: str, variant: str | None, params: dict, backend: str = "gloo"):
    info = registry.load(spec)
    raw = {k: str(v) for k, v in params.items() if k in info.params}
    _, p = registry.resolve(spec, variant, raw, backend)
    from ..spec.loading import build_model as build  # a spec's mistakes as one-line SpecErrors

    return build(info, p, variant, backend), p


def _size(p) -> int:
    try:
        return p.stat().st_size
    except OSError:
        return 0


class NotCheckable(loader.BadInput):
    """A run the spec cannot be built for (e.g. a 1-rank tp world): exit 2 with "not checkable: ..."."""


def run_backend(run) -> str:
    b = run.manifest.get("backend", "gloo")
    if b not in ("gloo", "nccl"):
        raise loader.BadInput(f"{run.path}/manifest.json: field 'backend': {b!r} is not one of gloo, nccl",
                              str(run.path), None, "backend")
    return b


def checkable_model(spec_name: str, params: dict, backend: str, run, variant: str | None = None):
    try:
        return build_model(spec_name, variant, params, backend)
    except (registry.UsageError, ValueError, AssertionError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise NotCheckable(f"not checkable: the {spec_name} spec cannot model this run's world of "
                           f"{run.manifest['world_size']} rank(s) on {backend} ({msg})", str(run.path), None, "world_size") from None


def conform_run(run: S.RunTrace, spec: str = "auto", budget: int | None = None, check_variant: bool = True,
                checker_timeout: float = 60.0, seconds: float | None = None) -> ConformReport:
    """Conformance of an in-memory run (the same streamed checks as ``conform_dir``, over its event lists)."""
    from .stream import MemSource
    with loader.no_cyclic_gc():
        return _conform_source(MemSource(run), None, spec, budget, check_variant, checker_timeout, seconds, run)


# rank files of a run up to this size (bytes, all ranks) are loaded whole, larger ones streamed (a small
# run is checked faster in memory: read once, mapped once; a long one in memory that does not grow)
STREAM_ABOVE = 16 << 20


def conform_dir(path, spec: str = "auto", budget: int | None = None, check_variant: bool = True,
                checker_timeout: float = 60.0, seconds: float | None = None, stream: bool | None = None) -> ConformReport:
    """Conformance of a run directory: its rank files streamed (memory flat in the trace's length) when
    they are larger than STREAM_ABOVE or ``stream`` is true, else loaded whole; the same report either
    way.  Bad input raises loader.BadInput, as ``loader.load`` would, with the same message."""
    src, deferred, checks = loader.open_run(path)
    if stream is None:
        stream = sum(_size(p) for p in Path(src.path).glob("rank*.jsonl")) > STREAM_ABOVE
    if not stream:
        return conform_run(loader.load(path), spec, budget, check_variant, checker_timeout, seconds)
    with loader.no_cyclic_gc():
        return _conform_source(src, (deferred, checks), spec, budget, check_variant, checker_timeout, seconds, None)


def _conform_source(src, opening, spec: str, budget: int | None, check_variant: bool, checker_timeout: float,
                    seconds: float | None, run: S.RunTrace | None) -> ConformReport:
    from . import stream
    m = src.manifest
    if opening is not None:
        sc = stream.scan(src, validate=True, deferred=opening[0], first_checks=opening[1])
        loader.finish_open(src)
    else:
        sc = stream.scan(src, validate=False)
    topo = m["topology"]
    if spec == "auto":
        spec = SPEC_OF_TOPOLOGY[topo]
    elif spec != SPEC_OF_TOPOLOGY[topo]:
        raise loader.BadInput(f"--spec {spec} does not fit this run: its manifest says topology {topo!r}",
                              str(src.path), None, "topology")
    mapped = sc.mapped
    spec_name, variant, params = mapping.spec_params(m, mapped)
    rep = ConformReport(trace_dir=src.path, topology=topo, spec=spec_name, variant=None, params=params, conforms=False,
                        notes=list(mapped.notes), truncated=sc.truncated)
    streamed = not isinstance(src, stream.MemSource)
    if not streamed:
        rep.fabric = stream.scan_fabric(src, sc) + sc.payload
    # the hardened spec, with the run's fault enabled, on the run's backend profile
    backend = run_backend(src)
    model, params = checkable_model(spec_name, params, backend, src)
    rep.params = params
    rep.interrupted = sorted(r for r, f in sc.facts.items() if f.exit is not None and f.exit.get("how") == "interrupted")
    rep.run_interrupted = src.summary.get("interrupted") is True
    matcher = fabric_check.Matcher(m["groups"], src.ranks()) if streamed else None
    lazy = stream.lazy_mapped(src, sc, model.actors, matcher)
    rep.replay = Replayer(model, lazy, budget=budget, seconds=seconds).run()
    if streamed:
        # the c10d matching was fed what the replay's maps read; the rest of the files now
        rep.fabric = stream.finish_fabric(src, sc, matcher, lazy) + sc.payload
    rep.monitors, mnotes = trace_monitors(model, sc.mapped, stream.observables(src, sc))
    rep.notes += mnotes
    rep.conforms = rep.replay.conforms and not rep.fabric and not rep.monitors
    unsafe = m.get("unsafe") or m["config"].get("unsafe") or ""
    if unsafe:
        # the variant replay and the trace monitors read the whole run: an --unsafe run is held in memory
        if run is None:
            run = loader.load(src.path)
        rep.unsafe = unsafe_report(run, mapping.map_run(run), unsafe, spec_name, params, budget, check_variant,
                                   checker_timeout)
    return rep


def trace_monitors(model, mapped, observables) -> tuple[list, list]:
    """Run the spec's monitors over the events the run recorded: each observable of an actor maps to
    the spec transitions that explain it (mapping.py), and those to their ``event=``.  A per-rank
    monitor reads its rank's events in trace order, a world monitor all ranks' events in timestamp
    order.  ``observables`` yields ``(rank, thread, observable)`` (stream.observables: a fresh pass over
    the rank files, so only the watched events are held).  A monitor is skipped, with a note, when it has a ``when`` predicate (it reads spec
    variables a trace does not record) or watches an event of a transition the trace does not record
    (the replay takes those steps unobserved).  Returns (rejections, notes)."""
    ms = getattr(model, "_monitor_set", None)
    if ms is None:
        return [], []
    from .adapters import for_topology

    adapter = for_topology(mapped.topology)
    notes, skip = [], set()
    for m in ms.monitors:
        if m.when is not None:
            skip.add(m.name)
            notes.append(f"monitor {m.name} not run on the trace: its when= predicate reads spec variables a trace "
                         f"does not record")
            continue
        for a in model.actors:
            if m.roles is not None and a.role.name not in m.roles:
                continue
            seen = adapter.observed(mapped.topology, a.role.name, mapped.produced((a.rank, a.thread)))
            hidden = sorted({t.name for t in a.role.transitions if t.event in m.events and t.name not in seen
                             and (t.fault is None or t.fault in model.faults)})
            if hidden:
                skip.add(m.name)
                notes.append(f"monitor {m.name} not run on the trace: {a.role.name} transitions "
                             f"{', '.join(hidden)} fire events it watches but are not recorded")
                break
    events = []
    actors = {(a.rank, a.thread): (a, {t.name: t.event for t in a.role.transitions}) for a in model.actors}
    for r, th, o in observables:
        if o.kind != "step" or (r, th) not in actors:
            continue
        a, by_name = actors[(r, th)]
        evs = {by_name.get(n, by_name.get(n.split("@", 1)[0])) for n in o.names} - {None}
        if len(evs) == 1:
            ev = evs.pop()
            if ev in ms.events:
                events.append((o.t, a.rank, o.line + 1, a.label, a.role.name, ev))
        elif len(evs) > 1 and evs & ms.events:
            notes.append(f"rank {a.rank} line {o.line + 1} ({o.label}) may be any of the events "
                         f"{', '.join(sorted(evs))}: the monitors skip it")
    events.sort(key=lambda x: (x[0], x[1], x[2]))
    rejections = ms.run_events(((r, label, role, ev, line) for _t, r, line, label, role, ev in events), frozenset(skip))
    return rejections, notes


def unsafe_report(run, mapped, switch: str, spec_name: str, params: dict, budget, check_variant: bool,
                  checker_timeout: float) -> dict:
    variant = mapping.UNSAFE_VARIANT.get(switch)
    out = {"switch": switch, "variant": variant, "checker": None, "replay_class": None, "instance": False, "message": ""}
    if variant is None:
        out["message"] = f"--unsafe {switch} has no spec variant: nothing to match it against"
        return out
    info = registry.load(spec_name)
    if variant not in info.variants:
        out["message"] = f"spec {spec_name} has no variant {variant}"
        return out
    vinfo = info.variants[variant]
    vparams = dict(params)
    vparams.update({k: v for k, v in vinfo.params.items() if k == "faults" and params.get("faults") == "none"})
    # the variant replay: on the run's backend, then, if that reaches no counterexample class, on the
    # variant's documented backend (e.g. nccl for om07: no PG timeout, so where the gloo run's ranks only time
    # out the spec is stuck — the checker's STRANDED)
    doc_backend = registry.pick_backend(info, variant, None)
    cls = None
    where = ""
    for vbackend in dict.fromkeys((run_backend(run), doc_backend)):
        vmodel, vparams = build_model(spec_name, variant, dict(vparams), vbackend)
        vres = Replayer(vmodel, mapped, budget=budget).run()
        out["variant_backend"] = vbackend
        if vres.violation is not None:
            cls = vres.violation["verdict"]
            where = f"{vres.violation['actor']} line {vres.violation['line']}: {vres.violation['message']}"
        elif vres.stuck is not None and _ends_match_stuck(vres, mapped):
            cls = vres.stuck["verdict"]
            where = vres.stuck["message"]
        if cls is not None:
            if vbackend != run_backend(run):
                where += f"; variant replayed on its documented backend {vbackend}"
            break
    out["replay_class"] = cls
    mons = monitors.monitor(run)
    out["monitors"] = mons
    out["variant_replay"] = vres.to_dict()
    if check_variant:
        from ..model.checker import Bounds, check
        backend = registry.pick_backend(info, variant, None)  # the backend the variant is documented on
        cm, _ = build_model(spec_name, variant, {**vparams, **vinfo.params}, backend)
        import gc
        was = gc.isenabled()
        gc.enable()  # the model checker manages its own memory: the collector runs as usual there
        try:
            res = check(cm, Bounds(timeout=checker_timeout))
        finally:
            if not was:
                gc.disable()
        out["checker"] = {"verdict": res.verdict, "message": res.message, "expected": list(vinfo.expected),
                          "params": {**vparams, **vinfo.params}, "backend": backend}
        checker_cls = res.verdict
    else:
        checker_cls = None
    classes = {checker_cls} if checker_cls else set(vinfo.expected)
    if (cls is None or cls not in classes):
        hit = next((m for m in mons if m["verdict"] in classes), None)
        if hit is not None:
            cls = hit["verdict"]
            where = f"rank {hit['rank']} line {hit['line']}: {hit['message']}; found by the trace monitor, the variant replay " + (
                f"stops at rank {vres.unexplained[0].rank} line {vres.unexplained[0].line}" if vres.unexplained else "explains the run")
            out["class_source"] = "monitor"
        else:
            out["class_source"] = "replay"
    else:
        out["class_source"] = "replay"
    if cls is not None and cls in classes:
        out["instance"] = True
        out["message"] = f"this run is an instance of {variant}: {cls} ({where})"
    elif cls is not None:
        out["message"] = (f"the run reaches {cls} under variant {variant}, but the checker's class for it is "
                          f"{checker_cls or '/'.join(vinfo.expected)} ({where})")
    else:
        first = vres.unexplained[0] if vres.unexplained else None
        out["message"] = (f"the run is not an instance of {variant}: " +
                          (f"rank {first.rank} line {first.line} ({first.event}) is not explained by the variant either"
                           if first else "the variant explains it without a violation"))
    return out


def _ends_match_stuck(vres: ReplayResult, mapped) -> bool:
    """The spec is stuck where the trace goes on only with failures: every observable left per actor
    is a failed or never-completed op, or the rank's exit/kill (a rank blocked until the PG timeout or
    the launcher's kill).  That is how a STRANDED/DEADLOCK counterexample looks in a real run."""
    for u in vres.unexplained:
        obs = mapped.per_actor.get(_actor_key(u))
        if obs is None:
            continue
        for o in obs[_index_of(obs, u.line - 1):]:
            if o.kind in ("exit", "crash"):
                continue
            if o.op is not None and o.outcome in ("failed", "pending"):
                continue
            return False
    return True


def _actor_key(u) -> tuple:
    label = u.actor
    th = label.split(".", 1)[1] if "." in label else "main"
    return (u.rank, th)


def _index_of(obs, line0: int) -> int:
    for k, o in enumerate(obs):
        if o.line == line0:
            return k
    return len(obs)


def first_unexplained(run: S.RunTrace, budget: int | None = None) -> dict | None:
    """The first recorded event conformance rejects, for ``lockstep render --trace``'s highlight:
    ``{"rank", "i", "message"}`` (``i`` the event's 0-based index in its rank file), or None when the run
    conforms.  Of the replay's first unexplained event per actor and the c10d-level mismatches, the
    earliest by timestamp; for an ``--unsafe`` run the hardened spec's verdict (the variant is not
    replayed, the checker not run); a rejection by one of the spec's monitors counts as an event conform
    rejects."""
    mapped = mapping.map_run(run)
    spec_name, _, params = mapping.spec_params(run.manifest, mapped)
    model, _ = checkable_model(spec_name, params, run_backend(run), run)
    res = Replayer(model, mapped, budget=budget).run()
    fabric = fabric_check.check(run) + payload.check(run)
    cands = []

    def t_of(rank: int, i: int) -> float:
        evs = run.ranks[rank].events if rank in run.ranks else []
        return evs[i]["t"] if 0 <= i < len(evs) else float("inf")

    for u in res.unexplained:
        i = u.line - 1
        why = f"; {u.reasons[0]}" if u.reasons else ""
        guard = f"; guard false: {u.guards[0]['transition']}: {u.guards[0]['guard']}" if u.guards else ""
        msg = (f"{u.actor}: {u.event} is not explained by the spec (expects {'/'.join(u.expected) or 'nothing'}; "
               f"spec state {u.spec_state}{', pending ' + u.waiting_op if u.waiting_op else ''}){why}{guard}")
        cands.append((t_of(u.rank, i), 0, {"rank": u.rank, "i": i, "message": msg}))
    for f in fabric:
        i = f["line"] - 1
        cands.append((t_of(f["rank"], i), 1, {"rank": f["rank"], "i": i, "message": f"c10d matching: {f['message']}"}))
    from .stream import mapped_observables
    for m in trace_monitors(model, mapped, mapped_observables(mapped))[0]:
        i = m["line"] - 1
        cands.append((t_of(m["rank"], i), -1, {"rank": m["rank"], "i": i, "message": f"{m['verdict']}: {m['message']}"}))
    if not cands:
        return None
    return min(cands, key=lambda c: (c[0], c[1]))[2]
