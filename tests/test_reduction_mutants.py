"""The differential has teeth: each known bug planted into a reduction (tests/mutants.py) is found by
the differential of tests/protogen.py within a few hundred generated specs, and the finding is the
mutant's (the same spec agrees with itself once the mutant is removed).  The figures and the mutants
no generated spec can tell apart are in docs/engine.md, "How sharp the differential is"."""
import inspect

import pytest

from mutants import MUTANTS, hunt, planted

BY_NAME = {m.name: m for m in MUTANTS}

# mutant -> (seed, specs within which the differential must kill it): the spec that kills it at
# this seed (bench/bench_reduction_mutants.py --seed 1, 2026-11-28) in the comment, with room for a
# generator that draws a little differently.  when-read-check (spec 541) is left to the bench.
KILLS = {
    "c2-control-state": (1, 60),  # 23
    "c2-pending": (1, 30),  # 7
    "c2-variables": (1, 30),  # 8
    "c2-exit": (1, 150),  # 87
    "c2-monitored": (1, 120),  # 70
    "when-field": (1, 50),  # 17
    "c0-conflicts": (1, 150),  # 98
    "c0-fifo": (1, 100),  # 58 (FIFO specs only)
    "c1-posting-order": (1, 30),  # 10
    "c3-back-edges": (3, 120),  # 37 at seed 3 (255 at seed 1)
    "c3-progress": (13, 30),  # 7 at seed 13 (262 at seed 1; seeds 6-11, 14, 15 survive 150-300)
    "c1-posts-exit": (1, 60),  # 12 (detach: specs with fire-and-forget posts only)
    "faults-kill": (1, 30),  # 5
    "faults-named": (1, 200),  # 140
    "footprint-check": (1, 30),  # 10
    "observed-check": (1, 60),  # 31 (unobserved reads only)
    "twins-fabric": (2, 200),  # 98 at seed 2 (detach; 117 at seed 1, four times slower)
    "ample-first-c2": (1, 30),  # 8
    "symmetry-check": (6, 60),  # 11 at seed 6 (wide: an accepted invariant that tells symmetric actors apart; 83 at
    #                              seed 1)
    "symmetry-peer": (1, 60),  # 1 (rooted, with symmetric ranks; 27 before the draw set shared variables)
    "symmetry-positions": (1, 60),  # 17 (positions: the symmetric role contributes x; 37 at seed 2)
    "symmetry-rank-read": (1, 30),  # 2 (ranked: guards and effects that read c.rank)
    "symmetry-when-rank": (1, 200),  # 117 (ranked: a monitor's when() on the rank)
    "concretize-ample": (3, 100),  # 49 at seed 3 (wide: a counterexample left as a path of orbit representatives;
    #                                 158 at seed 1, three times slower)
    "concretize-message": (10, 60),  # 15 at seed 10 (wide: a mismatch message naming the representative's ranks;
    #                                   45 at seed 6, 108 at seed 2, 296 at seed 1)
}


@pytest.mark.parametrize("m", MUTANTS, ids=[m.name for m in MUTANTS])
def test_each_mutant_edits_the_method_it_names(m):
    """The edit still matches the source (exactly once), it changes the method, and leaving the
    mutant restores the original."""
    import importlib
    import os

    if os.environ.get("LOCKSTEP_MUTANT"):
        pytest.skip("LOCKSTEP_MUTANT plants a mutant for the whole run (tests/conftest.py)")
    cls = getattr(importlib.import_module(m.module), m.qualname.split(".")[0])
    name = m.qualname.split(".")[1]
    original = cls.__dict__[name]
    with planted(m):
        assert cls.__dict__[name] is not original
        assert inspect.getsource(original)  # the original is untouched
    assert cls.__dict__[name] is original


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(KILLS))
def test_the_differential_kills_the_mutant(name):
    seed, within = KILLS[name]
    row = hunt(BY_NAME[name], within, seed)
    assert row["killed_at"] is not None, f"{name} survived {within} generated specs (seed {seed})"
    assert row["confirmed"], row


def _fifo_consumer_world():
    """A consumer that takes an item from an empty queue or gives up, and a producer that puts one: the
    take is disabled at first, and only the producer's put enables it."""
    from lockstep.spec.machine import ActorDef, Fifo, Protocol, Role

    p = Role("consumer", "A", {"k": 0}, shares=())
    p.local("take", "A", "GOT", guard=lambda c: c.g.f.nonempty(), do=lambda c: c.gset(f=c.g.f.take()[1]), takes=("f",))
    p.local("give_up", "A", "NONE")
    q = Role("producer", "A", {"k": 0}, shares=())
    q.local("put", "A", "DONE", do=lambda c: c.gset(f=c.g.f.put(1)), puts=("f",))
    return Protocol("fifo", {}, [ActorDef(0, "main", p), ActorDef(1, "main", q)], shared={"f": Fifo()})


def test_a_take_waiting_for_an_item_is_not_taken_alone():
    """C0 for FIFO ends, which no generated spec tells apart (docs/engine.md): the consumer's one
    enabled step (give up) must not be taken alone while the producer may still enable its take.
    Reduced and unreduced reach the same end states; with the condition switched off the reduced
    search never sees the consumer get the item."""
    import protogen

    full = protogen.end_states(_fifo_consumer_world(), False)
    assert protogen.end_states(_fifo_consumer_world(), True) == full
    assert {s[0][0].ctl for s in full} == {"GOT", "NONE"}
    with planted(BY_NAME["c0-fifo"]):
        assert {s[0][0].ctl for s in protogen.end_states(_fifo_consumer_world(), True)} == {"NONE"}


def _fire_and_forget_race():
    """Two symmetric ranks: each may post an all_reduce of 100 and never wait for it (the handle
    dropped, the op still runs), then both race for a token once both arrived; the winner all_reduces
    1, the loser 0.  Where only the loser posted, the winner's all_reduce meets the loser's posted one
    and reads 101.  The search meets that state only through one with the ranks in one local state,
    the one that posted ahead of the other in actor order: twins, told apart by their fabric entries
    alone."""
    from lockstep.model.api import INVARIANT
    from lockstep.spec.fabric import Group, all_reduce, post
    from lockstep.spec.machine import DONE, ActorDef, Protocol, Role

    sig = ("int64", (1,))
    r = Role("w", "S0", {"res": None, "won": 0}, observed=("res",))
    r.op("fire", "S0", "A0", lambda c: post("h", all_reduce("world", sig, data=100)))
    r.local("arrive_posted", "A0", "S1", do=lambda c: c.gset(arrived=c.g.arrived + 1))
    r.local("arrive", "S0", "S1", do=lambda c: c.gset(arrived=c.g.arrived + 1))
    r.local("take", "S1", "T", guard=lambda c: c.g.arrived == 2 and c.g.token,
            do=lambda c: (c.gset(token=False), c.set(won=1)))
    r.local("lose", "S1", "T", guard=lambda c: c.g.arrived == 2 and not c.g.token)
    r.op("reduce", "T", DONE, lambda c: all_reduce("world", sig, data=c.v.won), after=lambda c, d: c.set(res=d))

    def no_101(world):
        if any(a.vars is not None and a.vars.res == 101 for a in world.actors()):
            return "a rank read 101"

    return Protocol("twins", {"world": Group("world", (0, 1))}, [ActorDef(0, "main", r), ActorDef(1, "main", r)],
                    symmetric=(0, 1), shared={"arrived": 0, "token": True}, invariants=[("no_101", INVARIANT, no_101)])


def test_twins_told_apart_by_fabric_entries_keep_their_steps():
    """The twins shortcut (symmetric actors in one local state: only the first steps) is not taken in a
    state with fabric entries, which only the ``detach`` draw's specs tell apart (docs/engine.md).  Here:
    reduced and unreduced find the 101; with the exclusion switched off the reduced search says HOLDS."""
    from lockstep.model.checker import check

    for reduction in (False, True):
        assert check(_fire_and_forget_race(), reduction=reduction).verdict == "INVARIANT"
    with planted(BY_NAME["twins-fabric"]):
        assert check(_fire_and_forget_race(), reduction=True).verdict == "HOLDS"


def test_an_invariant_that_tells_symmetric_actors_apart_is_refused_or_found():
    """The symmetry check, checked: the differential evaluates the invariant on each unreduced state
    without fabric entries and on the same state with its symmetric actors sorted (the representative the
    reduced search evaluates instead).  The clean checker refuses the planted property of the spec that
    finds the symmetry-check mutant (the 83rd wide spec of seed 1); with the check switched off, the
    comparison finds the two arrangements the property tells apart."""
    import random

    import protogen
    from lockstep.model.api import SpecError
    from mutants import draw

    rng = random.Random(1)
    d = [draw(rng, i, "wide") for i in range(83)][-1]
    assert d["sym"] and d["plant_asym"]
    assert protogen.compare(d, workers=False) == []  # refused (a SpecError), as a planted declaration must be
    with pytest.raises(SpecError, match="symmetric"):
        protogen.explore(protogen.build(d), True)
    with planted(BY_NAME["symmetry-check"]):
        diffs = protogen.compare(d, workers=False)
    assert any("tells symmetric actors apart" in x for x in diffs), diffs
