"""The checker core on small hand-made models whose answers are known by construction."""
from lockstep.model.api import BOUND_REACHED, DEADLOCK, FAIL_FAST, HOLDS, INVARIANT, LIVENESS, Violation
from lockstep.model.checker import Bounds, check


class Grid:
    """Walk on an n x n grid from (0,0) by +1 steps in x or y; (n-1, n-1) has no successors (a clean end).
    Optionally a 'bad' cell is an invariant violation; optionally the corner is a deadlock."""

    name = "grid"

    def __init__(self, n, bad=None, corner_deadlock=False):
        self.n, self.bad, self.corner_deadlock = n, bad, corner_deadlock

    def init_states(self):
        yield (0, 0)

    def successors(self, s):
        x, y = s
        if x + 1 < self.n:
            yield ("x", (x + 1, y))
        if y + 1 < self.n:
            yield ("y", (x, y + 1))

    def invariant(self, s):
        return Violation(INVARIANT, f"reached {s}") if s == self.bad else None

    def classify_end(self, s):
        return Violation(DEADLOCK, "corner") if self.corner_deadlock else None

    def describe(self, s, a, n):
        return {"rank": 0, "role": "walker", "transition": a, "op": None, "group": None, "ids": {}}

    def waiting(self, s):
        return []


def test_holds_counts_every_state_and_transition():
    r = check(Grid(4))
    assert r.verdict == HOLDS
    assert r.stats.states == 16
    assert r.stats.transitions == 2 * 4 * 3  # 12 x-moves + 12 y-moves
    assert r.stats.depth == 6
    assert r.stats.end_states == 1


def test_shortest_counterexample_is_manhattan_distance():
    r = check(Grid(6, bad=(3, 2)))
    assert r.verdict == INVARIANT
    assert len(r.counterexample) == 5  # |3| + |2|: BFS finds a shortest path
    assert [s["step"] for s in r.counterexample] == [1, 2, 3, 4, 5]
    assert sorted(s["transition"] for s in r.counterexample) == ["x", "x", "x", "y", "y"]


def test_end_state_classification():
    r = check(Grid(3, corner_deadlock=True))
    assert r.verdict == DEADLOCK
    assert len(r.counterexample) == 4


def test_bounds_are_never_confused_with_holds():
    assert check(Grid(50), Bounds(max_states=100)).verdict == BOUND_REACHED
    r = check(Grid(50), Bounds(max_depth=3))
    assert r.verdict == BOUND_REACHED and "max-depth" in r.bound
    # a violation inside the bound is still found
    assert check(Grid(50, bad=(1, 1)), Bounds(max_depth=5)).verdict == INVARIANT


class Spinner:
    """Process 0 commits an obligation, then may loop for ever 'retrying' (never resolving) or resolve it.
    Process 1 ticks independently.  With ``giveup`` the retry loop has a bound and liveness holds."""

    name = "spinner"

    def __init__(self, giveup):
        self.giveup = giveup

    def init_states(self):
        yield ("idle", 0)

    def successors(self, s):
        pc, tries = s
        if pc == "idle":
            yield ((0, "commit"), ("open", 0))
        elif pc == "open":
            if self.giveup and tries >= 2:
                yield ((0, "give_up"), ("done", tries))
            else:
                yield ((0, "retry"), ("open", min(tries + 1, 2) if self.giveup else 0))

    def invariant(self, s):
        return None

    def classify_end(self, s):
        return FAIL_FAST if s[0] == "done" else None

    def describe(self, s, a, n):
        return {"rank": a[0], "role": "p", "transition": a[1], "op": None, "group": None, "ids": {}}

    def waiting(self, s):
        return []

    def pending(self, s):
        return s[0] == "open"

    def actor_of(self, a):
        return a[0]


def test_liveness_lasso_and_its_fix():
    r = check(Spinner(giveup=False))
    assert r.verdict == LIVENESS
    assert r.cycle_start == 1  # prefix: commit; cycle: retry
    assert [s["transition"] for s in r.counterexample] == ["commit", "retry"]
    assert [s["in_cycle"] for s in r.counterexample] == [False, True]
    assert check(Spinner(giveup=True)).verdict == HOLDS


def test_only_the_reported_violation_is_described(monkeypatch):
    """A last level with many violations (8 ranks, each worker choosing between the right collective and
    a planted wrong one: 2**7 ways to mismatch): the search describes one counterexample, the one it
    reports, not every violation it meets (old: each one, 16 ranks took 14 s and 1.1 GB for 65,555
    states).  Which one is reported is unchanged: the first found among the shortest."""
    from lockstep.model.api import COLLECTIVE_MISMATCH
    from lockstep.model.checker import Explorer
    from lockstep.spec.fabric import Group, all_reduce, broadcast
    from lockstep.spec.machine import DONE, ActorDef, Protocol, Role

    sig = ("int64", (1,))
    lead = Role("leader", "GO", {})
    lead.op("go", "GO", "REDUCE", lambda c: broadcast("world", 0, sig, data=1))
    lead.op("reduce", "REDUCE", DONE, lambda c: all_reduce("world", sig, data=1))
    w = Role("worker", "WAIT", {})
    w.op("recv", "WAIT", "REDUCE", lambda c: broadcast("world", 0, sig))
    w.op("reduce", "REDUCE", DONE, lambda c: all_reduce("world", sig, data=1))
    w.op("wrong", "REDUCE", DONE, lambda c: broadcast("world", 0, sig))  # planted
    world = Protocol("many", {"world": Group("world", tuple(range(8)))},
                     [ActorDef(0, "main", lead)] + [ActorDef(r, "main", w) for r in range(1, 8)])
    calls = []
    real = Explorer.describe_path
    monkeypatch.setattr(Explorer, "describe_path", lambda self, steps, **kw: calls.append(len(steps)) or real(self, steps, **kw))
    res = check(world, liveness=False)
    assert res.verdict == COLLECTIVE_MISMATCH
    assert calls == [len(res.counterexample)]
    assert [s["transition"] for s in res.counterexample[-3:]] == ["reduce", "wrong", "all_reduce mismatch"]
    last = res.counterexample[-1]  # the calls met and differ: the row says so, and JSON has every rank's call
    assert last["calls"]["0"].startswith("all_reduce") and last["calls"]["7"].startswith("broadcast")
    assert res.message.endswith("ranks 0-6: all_reduce group=world sig=int64,(1,) op=sum; "
                                "rank 7: broadcast group=world src=0 sig=int64,(1,)")


def test_a_point_to_point_mismatch_is_not_a_completion():
    """The last step of a p2p mismatch's counterexample says ``send/recv mismatch`` (it said ``send/recv
    completes``: the step where the calls met and differed completed nothing)."""
    from lockstep.model.api import COLLECTIVE_MISMATCH
    from lockstep.spec.fabric import Group, recv, send
    from lockstep.spec.machine import DONE, ActorDef, Protocol, Role

    a = Role("a", "S", {})
    a.op("tx", "S", DONE, lambda c: send("world", 1, ("f32", (4,))))
    b = Role("b", "R", {})
    b.op("rx", "R", DONE, lambda c: recv("world", 0, ("f32", (8,))))
    r = check(Protocol("p", {"world": Group("world", (0, 1))}, [ActorDef(0, "main", a), ActorDef(1, "main", b)]), liveness=False)
    assert r.verdict == COLLECTIVE_MISMATCH
    assert [s["transition"] for s in r.counterexample] == ["tx", "rx", "send/recv mismatch"]
