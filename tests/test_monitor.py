"""Properties as monitors over transition ``event=`` names (spec/monitor.py): the checker's side
(violations with shortest counterexamples, end checks, soundness under partial-order and symmetry
reduction) and the trace side (``MonitorSet.run_events``)."""
import pytest

from lockstep.model.api import HOLDS, SpecError
from lockstep.model.checker import Bounds, check
from lockstep.spec.fabric import Group, broadcast
from lockstep.spec.machine import DONE, ActorDef, Protocol, Role
from lockstep.spec.monitor import Monitor, Reject
from lockstep.spec.state import MonitoredState, WorldState

HDR = ("int64", (1,))
LATE = "LATE_HEADER"


def _server(variant=None, monitors=(), workers=2, symmetric=False, observed=("ctl",)):
    """rank 0 serves ``chunks`` headers then a shutdown; planted bug ``late``: one more header after
    the shutdown (the workers take it as a header too, so the run ends cleanly: only the monitor sees it)."""
    chunks = 2
    L = Role("leader", "IDLE", {"sent": 0})
    L.op("send_header", "IDLE", "IDLE", lambda c: broadcast("world", 0, HDR, 1), guard=lambda c: c.v.sent < chunks,
         do=lambda c: c.set(sent=c.v.sent + 1), event="header_sent")
    L.op("shutdown", "IDLE", "CLOSED" if variant == "late" else DONE, lambda c: broadcast("world", 0, HDR, 0),
         guard=lambda c: c.v.sent >= chunks, event="shutdown_sent")
    if variant == "late":
        L.op("late_header", "CLOSED", DONE, lambda c: broadcast("world", 0, HDR, 0), event="header_sent")
    W = Role("worker", "WAIT", {"got": 0, "stopped": 0}, private=True, observed=observed)

    def on_header(c, d):
        if d == 0:
            c.set(stopped=c.v.stopped + 1)
            if c.v.stopped >= (2 if variant == "late" else 1):
                c.goto(DONE)
        else:
            c.set(got=c.v.got + 1)
            c.goto("WORK")
    W.op("recv_header", "WAIT", ("WAIT", "WORK", DONE), lambda c: broadcast("world", 0, HDR), after=on_header,
         event="header_recv")
    W.local("work", "WORK", "WAIT", event="worked")
    n = workers + 1
    actors = [ActorDef(0, "main", L)] + [ActorDef(r, "main", W) for r in range(1, n)]
    return Protocol("server", groups={"world": Group("world", tuple(range(n)))}, actors=actors,
                    monitors=list(monitors), symmetric=tuple(range(1, n)) if symmetric else ())


NO_HEADER_AFTER_SHUTDOWN = Monitor.never_after("no_header_after_shutdown", LATE, "shutdown_sent", "header_sent")


def test_monitor_holds_on_the_correct_server_and_adds_no_states():
    assert check(_server()).verdict == check(_server(monitors=[NO_HEADER_AFTER_SHUTDOWN])).verdict == HOLDS
    # the monitor's state is a function of rank 0's control state (before/after the shutdown).  (Reduced,
    # the counts differ: the events it watches make rank 0's steps visible to the partial-order reduction.)
    plain = check(_server(), reduction=False)
    mon = check(_server(monitors=[NO_HEADER_AFTER_SHUTDOWN]), reduction=False)
    assert plain.verdict == mon.verdict == HOLDS
    assert mon.stats.states == plain.stats.states


def test_planted_header_after_shutdown_is_caught_with_a_shortest_counterexample():
    res = check(_server("late", monitors=[NO_HEADER_AFTER_SHUTDOWN]))
    assert res.verdict == LATE
    assert "no_header_after_shutdown" in res.message and "header_sent after shutdown_sent" in res.message
    last = res.counterexample[-1]
    assert last["transition"] == "late_header"
    assert res.detail["monitor"] == "no_header_after_shutdown" and res.detail["rank"] == 0
    # shortest on the full graph: two headers (3 posts, the completion, 2 works each; the first needs no
    # work), the shutdown (3 posts, the completion), then the late header: 4 + 6 + 6 + 1
    full = check(_server("late", monitors=[NO_HEADER_AFTER_SHUTDOWN]), reduction=False)
    assert full.verdict == LATE and len(full.counterexample) == 17
    assert len(res.counterexample) >= 17  # partial-order reduction may postpone the leader's step
    # without the monitor the planted bug goes unnoticed: the run ends cleanly
    assert check(_server("late")).verdict == HOLDS


def test_states_carry_the_monitor_after_the_four_world_fields():
    w = _server(monitors=[NO_HEADER_AFTER_SHUTDOWN])
    s0 = next(iter(w.init_states()))
    assert isinstance(s0, MonitoredState) and s0.monitors == ("before",)
    assert s0[:4] == tuple(WorldState(s0.actors, s0.shared, s0.faults_used, s0.fabric))
    assert next(iter(_server().init_states())).__class__ is WorldState


def test_must_end_is_judged_at_clean_ends():
    every_header_worked = Monitor("every_header_worked", "UNWORKED", "idle",
                                  {("idle", "header_recv"): "busy", ("busy", "worked"): "idle",
                                   ("busy", "header_recv"): "idle"},
                                  per="rank", roles=("worker",), must_end=("idle",))
    # a worker's last header is the shutdown: it moves the monitor to busy and the worker never works
    res = check(_server(monitors=[every_header_worked]))
    assert res.verdict == "UNWORKED" and "ends in monitor state busy on rank" in res.message
    ok = Monitor("every_header_worked", "UNWORKED", "idle",
                 {("idle", "worked"): "idle", ("idle", "header_recv"): "idle"}, per="rank", must_end=("idle",))
    assert check(_server(monitors=[ok])).verdict == HOLDS
    # a per-rank must_end is judged only on the ranks that run the monitor's roles (rank 0 never works)
    worked = Monitor("worked_once", "LAZY", "fresh", {("fresh", "worked"): "used"}, per="rank", roles=("worker",),
                     must_end=("used",))
    assert check(_server(monitors=[worked])).verdict == HOLDS


def _two_private(monitors):
    """Two private actors with one local step each, on different ranks: partial-order reduction
    explores one order only unless the steps are visible."""
    a = Role("first", "S", {}, private=True)
    a.local("go", "S", DONE, event="a")
    b = Role("second", "S", {}, private=True)
    b.local("go", "S", DONE, event="b")
    return Protocol("pair", groups={}, actors=[ActorDef(0, "main", a), ActorDef(1, "main", b)], monitors=list(monitors))


def test_watched_events_are_visible_to_partial_order_reduction():
    # "b never before a": violated only by the order rank1-then-rank0
    m = Monitor.never_after("a_first", "ORDER", "b", "a")
    w = _two_private([m])
    assert w._por_on
    reduced, full = check(w, reduction=True), check(w, reduction=False)
    assert reduced.verdict == full.verdict == "ORDER"
    # the same world without monitors is reduced to one order (3 states instead of 4)
    assert check(_two_private([]), reduction=True).stats.states == 3
    assert check(_two_private([]), reduction=False).stats.states == 4


def test_per_rank_monitor_under_symmetry_agrees_with_the_full_graph():
    # per-rank: a worker may work at most once (violated: each worker gets two headers)
    once = Monitor("work_once", "TWICE", "fresh", {("fresh", "worked"): "used", ("used", "worked"): Reject("worked twice")},
                   per="rank", roles=("worker",))
    w = _server(monitors=[once], workers=3, symmetric=True)
    sym, full = check(w, reduction=True), check(w, reduction=False)
    assert sym.verdict == full.verdict == "TWICE"
    # the unreduced counterexample is the shortest; the partial-order reduction (every role of this world
    # without shared variables is private) may lengthen it
    assert 0 < len(full.counterexample) <= len(sym.counterexample)
    # a holding per-rank monitor: the symmetric graph is smaller and both agree
    atmost2 = Monitor("work_twice", "THRICE", "z", {("z", "worked"): "o", ("o", "worked"): "t", ("t", "worked"): Reject("3")},
                      per="rank", roles=("worker",))
    w2 = _server(monitors=[atmost2], workers=3, symmetric=True)
    r_sym, r_full = check(w2, reduction=True), check(w2, reduction=False)
    assert r_sym.verdict == r_full.verdict == HOLDS
    assert r_sym.stats.states < r_full.stats.states


def test_when_predicate_filters_events_and_may_not_tell_symmetric_actors_apart():
    """Old: a ``when`` that read a symmetric actor's rank at all was refused; now only one that keeps an
    event at one symmetric rank and drops it at another."""
    first_rank_only = Monitor("rank1_once", "R1", "z", {("z", "worked"): "o", ("o", "worked"): Reject("rank 1 worked twice")},
                              when=lambda ev: ev.rank == 1)
    assert check(_server(monitors=[first_rank_only])).verdict == "R1"
    by_vars = Monitor("second_header", "V", "z", {("z", "worked"): Reject("worked on a second header")},
                      when=lambda ev: ev.vars.got >= 2)
    assert check(_server(monitors=[by_vars])).verdict == "V"
    # under symmetry a ``when`` may read the rank only where every symmetric rank gets the same from it
    with pytest.raises(SpecError, match=r"monitor rank1_once \(when\): PermissionError: reads its rank, and what it does tells the "
                                        r"symmetric ranks 1,2 apart on worked .*: at rank 1 it keeps the event; at rank 2 "
                                        r"it drops the event"):
        check(_server(monitors=[first_rank_only], symmetric=True))
    workers_only = Monitor("worker_once", "W1", "z", {("z", "worked"): "o", ("o", "worked"): Reject("worked twice")},
                           per="rank", when=lambda ev: ev.rank > 0)
    sym, full = check(_server(monitors=[workers_only], symmetric=True)), check(_server(monitors=[workers_only]), reduction=False)
    assert sym.verdict == full.verdict == "W1" and sym.stats.states < full.stats.states


def test_bad_monitor_declarations_are_spec_errors():
    with pytest.raises(SpecError, match="no transition declares"):
        _server(monitors=[Monitor.never_after("m", "V", "shutdown_sent", "nonsense")])
    with pytest.raises(SpecError, match="per="):
        Monitor("m", "V", "a", {("a", "x"): "b"}, per="thread")
    with pytest.raises(SpecError, match="must_end names unknown states"):
        Monitor("m", "V", "a", {("a", "x"): "b"}, must_end=("c",))
    with pytest.raises(SpecError, match="two monitors are named"):
        _server(monitors=[NO_HEADER_AFTER_SHUTDOWN, NO_HEADER_AFTER_SHUTDOWN])


def test_run_events_on_a_recorded_order():
    w = _server(monitors=[NO_HEADER_AFTER_SHUTDOWN])
    ms = w._monitor_set
    ok = [(0, "rank0", "leader", "header_sent", 3), (0, "rank0", "leader", "shutdown_sent", 9)]
    assert ms.run_events(ok) == []
    bad = ok + [(0, "rank0", "leader", "header_sent", 12)]
    (rej,) = ms.run_events(bad)
    assert rej["monitor"] == "no_header_after_shutdown" and rej["line"] == 12 and rej["rank"] == 0
    assert rej["verdict"] == LATE and "line 12" in rej["message"]
    assert ms.run_events(bad, skip=frozenset({"no_header_after_shutdown"})) == []


# ---------------------------------------------------------------------------------------------- tp
def test_tp_monitor_adds_no_states_and_catches_a_planted_unchecked_emit():
    from lockstep.model.api import CALL_COUNT
    from lockstep.spec import registry

    info = registry.load("tp")
    _, p = registry.resolve("tp", None, {"chunks": "1"}, "gloo")
    with_mon = info.build(p, None, "gloo")
    assert [m.name for m in with_mon.monitors] == ["emit_after_count_check"]
    bare = info.build(p, None, "gloo")
    bare.monitors = []
    bare._prepare()
    for red in (True, False):
        a, b = check(with_mon, reduction=red), check(bare, reduction=red)
        assert a.verdict == b.verdict == HOLDS and a.stats.states == b.stats.states
    # planted: rank 0 may emit straight from Phase B, skipping the generator-call count check
    buggy = info.build(p, None, "gloo")
    leader = buggy.actors[0].role
    emit = next(t for t in leader.transitions if t.name == "emit")
    leader.local("emit_unchecked", "PHASE_B", "IDLE", do=emit.do, event="chunk_emitted")
    res = check(buggy)
    assert res.verdict == CALL_COUNT and res.detail["monitor"] == "emit_after_count_check"
    assert res.counterexample[-1]["transition"] == "emit_unchecked"
    assert "emitted before its generator-call count check" in res.message


def _drop_first(path, rank: int, ev: str) -> int:
    """Remove rank's first ``ev`` record (renumbering ``i``); returns the 1-based line it had."""
    import json

    f = path / f"rank{rank}.jsonl"
    events = [json.loads(x) for x in f.read_text().splitlines()]
    k = next(j for j, e in enumerate(events) if e["ev"] == ev)
    del events[k]
    for j, e in enumerate(events):
        e["i"] = j
    f.write_text("".join(json.dumps(e) + "\n" for e in events))
    return k + 1


@pytest.mark.multirank
@pytest.mark.slow
def test_conform_runs_the_monitor_on_a_real_gloo_trace(tmp_path):
    import json
    import shutil

    from click.testing import CliRunner

    from lockstep.cli.conform import conform
    from lockstep.impl.config import RunConfig
    from lockstep.impl.launch import launch_local, resolve_config

    run = tmp_path / "tp"
    cfg = resolve_config(RunConfig(topology="tp", world=2).with_(chunks=2, dist_timeout_s=2.0, heartbeat_s=0.25,
                                                                   watchdog_s=4.0))
    s = launch_local(cfg, run, deadline_s=40.0)
    assert not s.deadline_hit, s.render()
    r = CliRunner().invoke(conform, [str(run), "--json"])
    out = json.loads(r.output)
    assert r.exit_code == 0 and out["verdict"] == "CONFORMS" and out["monitor_rejections"] == []
    # rewritten: rank 0's first Phase-B end (its count check) is gone, so its first emit comes unchecked
    bad = tmp_path / "tp-unchecked"
    shutil.copytree(run, bad)
    _drop_first(bad, 0, "phase_b_end")
    emit_line = 1 + next(j for j, x in enumerate((bad / "rank0.jsonl").read_text().splitlines())
                         if json.loads(x)["ev"] == "chunk_emitted")
    r = CliRunner().invoke(conform, [str(bad), "--json"])
    out = json.loads(r.output)
    assert r.exit_code == 1 and out["verdict"] == "DOES_NOT_CONFORM"
    (rej,) = out["monitor_rejections"]
    assert rej["monitor"] == "emit_after_count_check" and rej["rank"] == 0 and rej["line"] == emit_line
    assert rej["event"] == "chunk_emitted" and rej["verdict"] == "CALL_COUNT"
    # the same run read as streams (how a long run is read) gives the same rejection, and the clean one none
    from lockstep.conformance.check import conform_dir

    streamed = conform_dir(str(bad), stream=True)
    assert [(m["monitor"], m["rank"], m["line"]) for m in streamed.monitors] == [("emit_after_count_check", 0, emit_line)]
    assert not streamed.conforms and conform_dir(str(run), stream=True).monitors == []
    text = CliRunner().invoke(conform, [str(bad)]).output
    # render --trace's highlight points at the monitor's rejection
    from lockstep.conformance import check as conform_check, loader

    hit = conform_check.first_unexplained(loader.load(str(bad)))
    assert hit["rank"] == 0 and hit["i"] == emit_line - 1 and "emit_after_count_check" in hit["message"]
    assert (f"CALL_COUNT: monitor emit_after_count_check: a chunk is emitted before its generator-call count check "
            f"(rank 0 line {emit_line}: chunk_emitted in monitor state open)") in text


# ------------------------------------------------------------------------------------ the example
def test_the_guide_example_through_the_cli():
    import json
    from pathlib import Path

    from click.testing import CliRunner

    from lockstep.cli.main import cli
    from lockstep.spec.loading import load_spec

    path = str(Path(__file__).resolve().parent.parent / "examples" / "shutdown_monitor.py")
    for extra in ([], ["--no-reduction"]):
        r = CliRunner().invoke(cli, ["check", path, "--json", *extra])
        assert r.exit_code == 0 and json.loads(r.stdout)["monitor"] is None
        r = CliRunner().invoke(cli, ["check", path, "--json", "--variant", "late-header", *extra])
        d = json.loads(r.stdout)
        assert r.exit_code == 1 and d["verdict"] == "LATE_HEADER"
        assert d["monitor"] == {"monitor": "no_header_after_shutdown", "rank": 0, "actor": "rank0", "event": "header_sent",
                                "transition": "late_header", "monitor_state": "after"}
        assert d["counterexample"][-1]["transition"] == "late_header"
    # the planted bug is invisible to every other property: without the monitor the variant holds
    info = load_spec(path)
    w = info.build({}, "late-header", "gloo")
    w.monitors = []
    w._prepare()
    assert check(w).verdict == HOLDS


# ------------------------------------------------------------------------- differential (random worlds)
def _monitored_random_world(seed: int):
    """tests/protogen.py's random world (honest declarations only), with events on its transitions and
    a random world monitor and per-rank monitor over them; None when the draw plants a wrong declaration."""
    import dataclasses
    import random
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import protogen

    d = protogen.describe(protogen.random_pick(random.Random(seed)))
    if protogen.planted(d) or d["live"]:
        return None
    rng = random.Random(seed * 7919 + 1)
    w = protogen.build(d)
    events = ("e0", "e1", "e2")
    for role in {a.role.name: a.role for a in w.actors}.values():
        role.transitions[:] = [dataclasses.replace(t, event=rng.choice(events + (None,))) for t in role.transitions]
    fired = sorted({t.event for a in w.actors for t in a.role.transitions if t.event})
    if not fired:
        return None
    mons = []
    for k, per in enumerate(("world", "rank")):
        on = {}
        for st in ("a", "b"):
            for ev in fired:
                x = rng.randint(0, 5)
                on[(st, ev)] = Reject(f"{ev} in {st}") if x == 0 else ("a", "b")[x % 2]
        mons.append(Monitor(f"m{k}", f"MON{k}", "a", on, per=per, must_end=("a", "b") if rng.randint(0, 1) else ("a",)))
    w.monitors = mons
    w._prepare()
    return w


def test_random_monitored_worlds_agree_reduced_and_unreduced():
    """Reduced (partial-order, symmetry) and unreduced searches of random monitored worlds reach the
    same violation classes (monitor verdicts included), the same end states (monitor states included)
    and agree on the verdict class."""
    from protogen import end_states

    from lockstep.model.crosscheck import reachable_classes, verdict_class

    compared = with_monitor_verdicts = 0
    for seed in range(120):
        if _monitored_random_world(seed) is None:
            continue
        out = {}
        for red in (True, False):
            try:
                res = check(_monitored_random_world(seed), Bounds(max_states=20_000), liveness=False, reduction=red)
                cls, _, complete = reachable_classes(_monitored_random_world(seed), red, 20_000)
            except SpecError:
                out = None
                break
            out[red] = (verdict_class(res.verdict), cls, complete, end_states(_monitored_random_world(seed), red))
        if out is None:
            continue
        compared += 1
        (rv, rc, rdone, rends), (uv, uc, udone, uends) = out[True], out[False]
        if rends is not None and uends is not None:
            assert rends == uends, f"seed {seed}: {len(uends - rends)} end states only unreduced, {len(rends - uends)} only reduced"
        if "BOUND_REACHED" not in (rv, uv):
            assert rv == uv, f"seed {seed}: reduced {rv}, unreduced {uv}"
        if rdone and udone:
            assert rc == uc, f"seed {seed}: reduced {sorted(rc)}, unreduced {sorted(uc)}"
            with_monitor_verdicts += bool({"MON0", "MON1"} & set(uc))
    assert compared >= 40 and with_monitor_verdicts >= 10, (compared, with_monitor_verdicts)


def test_properties_read_monitor_states_through_the_view():
    used = Monitor("work_seen", "X", "fresh", {("fresh", "worked"): "used"}, per="rank", roles=("worker",))

    def worked_after_a_header(world):  # symmetric in the workers; pairs each one's instance with its vars
        for r in (1, 2, 3):
            if world.monitor("work_seen", r) == "used" and world.actor(r).vars.got == 0:
                return f"rank {r} worked before any header"
        return None
    w = _server(monitors=[used], workers=3, symmetric=True, observed=("ctl", "got"))
    w.invariants = [("HEADER_FIRST", "EARLY", worked_after_a_header)]
    w.__post_init__()
    assert check(w).verdict == HOLDS  # symmetry on, monitors permuted with their ranks: no false refusal
    assert check(w, reduction=False).verdict == HOLDS

    def rank1_only(world):  # tells the symmetric workers apart
        return "rank 1 worked" if world.monitor("work_seen", 1) == "used" else None
    w2 = _server(monitors=[used], workers=3, symmetric=True)
    w2.invariants = [("R1", "R1", rank1_only)]
    w2.__post_init__()
    with pytest.raises(SpecError, match="tells the symmetric actors"):
        check(w2)
    with pytest.raises(KeyError, match="per rank"):
        w2._monitor_set.state_of(next(iter(w2.init_states())), "work_seen")


def test_twins_with_per_rank_monitors_reach_the_same_states():
    """Symmetric workers whose per-rank monitor instances move with them: leaving out the steps of a
    worker equal to an earlier one (its state and its instances) reaches the same states, verdict and
    counterexample over fewer edges."""
    once = Monitor("work_once", "TWICE", "fresh", {("fresh", "worked"): "used", ("used", "worked"): Reject("worked twice")},
                   per="rank", roles=("worker",))
    atmost2 = Monitor("work_twice", "THRICE", "z", {("z", "worked"): "o", ("o", "worked"): "t", ("t", "worked"): Reject("3")},
                      per="rank", roles=("worker",))
    for mon, verdict in ((once, "TWICE"), (atmost2, HOLDS)):
        runs = []
        for twins in (True, False):
            w = _server(monitors=[mon], workers=3, symmetric=True)
            assert w._monitor_set.moves_with_symmetry
            w._twin_steps = twins
            runs.append(check(w, reduction=True))
        on, off = runs
        assert on.verdict == off.verdict == verdict
        assert (on.stats.states, on.counterexample) == (off.stats.states, off.counterexample)
        assert on.stats.transitions <= off.stats.transitions
        if verdict == HOLDS:
            assert on.stats.transitions < off.stats.transitions  # 39 against 51: the twins' steps were left out
