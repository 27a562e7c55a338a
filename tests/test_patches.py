"""Planted bugs as named patches (spec/patch.py, the Role edits in spec/lang.py) and named guards
(``why=``, named guard functions) where guards are shown: role diagrams, wait-for conditions and the
counterexample's ``waiting`` entries."""
from __future__ import annotations

from collections import deque

import pytest

from lockstep.model.api import DEADLOCK, SpecError, Violation
from lockstep.model.checker import check
from lockstep.spec.fabric import Group, barrier, recv, send
from lockstep.spec.machine import DONE, FAILED, ActorDef, Protocol, Role
from lockstep.spec.patch import Draft, Patches
from lockstep.spec.source import guard_text


def names(role: Role) -> list[str]:
    return [t.name for t in role.transitions]


def by_src_ok(role: Role) -> bool:
    want: dict[str, list[int]] = {}
    for k, t in enumerate(role.transitions):
        want.setdefault(t.src, []).append(k)
    return role.by_src == want


def abc() -> Role:
    r = Role("r", "A", {"n": 0})
    r.local("a", "A", "B")
    r.local("b", "B", "C", guard=lambda c: c.v.n == 0, why="n is zero")
    r.local("c", "C", DONE)
    return r


# ---------------------------------------------------------------- Role edits
def test_insert_after_and_before_keep_order_and_index():
    r = abc()
    with r.insert_after("a"):
        r.local("x", "B", "B")
        r.local("y", "B", "C")
    with r.insert_before("a"):
        r.local("w", "A", "A")
    r.local("z", "C", "A")  # outside a block: appended
    assert names(r) == ["w", "a", "x", "y", "b", "c", "z"]
    assert by_src_ok(r)
    assert r.by_src["B"] == [2, 3, 4]


def test_replace_changes_fields_in_place_and_drops_stale_why():
    r = abc()
    t = r.replace("b", dst="A", doc="back")
    assert names(r) == ["a", "b", "c"] and t.dst == ("A",) and t.why == "n is zero"
    t = r.replace("b", guard=lambda c: c.v.n == 1)
    assert t.why == "", "a new guard without new words drops the words of the old guard"
    t = r.replace("b", name="b2", src="C", guard=lambda c: True, why="always")
    assert names(r) == ["a", "b2", "c"] and r.by_src == {"A": [0], "C": [1, 2]} and t.why == "always"


def test_an_op_made_local_must_drop_its_op_only_fields():
    r = Role("r", "A", {})
    r.op("sync", "A", DONE, lambda c: barrier("w"), after=lambda c, d: None, timeout=FAILED, timeout_kind="recovers")
    with pytest.raises(SpecError, match=r"'sync' is local \(op=None\) but keeps op-only fields after, timeout, timeout_kind"):
        r.replace("sync", op=None)
    assert r.transition("sync").op is not None, "a refused replace changes nothing"
    t = r.replace("sync", op=None, after=None, timeout=None, timeout_kind=None)
    assert t.op is None


def test_remove_keeps_the_rest_in_order():
    r = abc()
    r.remove("a", "c")
    assert names(r) == ["b"] and by_src_ok(r)


def test_unknown_names_and_fields_are_spec_errors():
    r = abc()
    with pytest.raises(SpecError, match=r"role r.*no transition 'nope'; transitions: a, b, c"):
        r.replace("nope", doc="x")
    with pytest.raises(SpecError, match="no transition 'nope'"):
        r.remove("a", "nope")
    assert names(r) == ["a", "b", "c"], "a failed remove changes nothing"
    with pytest.raises(SpecError, match="no transition field colour"):
        r.replace("a", colour="red")
    with pytest.raises(SpecError, match="no transition 'nope'"):
        with r.insert_after("nope"):
            pass


def test_a_name_that_leaves_several_states_is_named_with_its_source():
    r = Role("r", "A", {})
    r.local("step", "A", "B")
    r.local("step", "B", "C")
    with pytest.raises(SpecError, match=r"'step' leaves several states \(A, B\); name one as \('step', SRC\)"):
        r.replace("step", doc="x")
    r.replace(("step", "B"), doc="second")
    assert [t.doc for t in r.transitions] == ["", "second"]
    assert ("step", "A") in r and ("step", "Z") not in r


def test_insert_blocks_do_not_nest():
    r = abc()
    with pytest.raises(SpecError, match="do not nest"):
        with r.insert_after("a"):
            with r.insert_after("b"):
                pass
    r.local("after", "C", "C")
    assert names(r)[-1] == "after", "the cursor is reset after a failed block"


# ---------------------------------------------------------------- the patch table
def test_patch_table_applies_by_name_and_names_the_patch_in_errors():
    P = Patches()

    @P("skip-b")
    def skip_b(draft):
        """b is skipped"""
        draft["r"].remove("b")

    @P("typo")
    def typo(draft):
        draft["r"].remove("bb")

    @P("no-role")
    def no_role(draft):
        draft["q"].remove("b")

    @P("rank-specific", breaks_symmetry=True)
    def rank_specific(draft):
        draft["r"].replace("b", guard=lambda c: c.rank == 1)

    r = abc()
    assert P.apply(None, Draft({"r": r})).roles["r"] is r and names(r) == ["a", "b", "c"]
    P.apply("skip-b", Draft({"r": r}))
    assert names(r) == ["a", "c"] and P.table["skip-b"].doc == "b is skipped"
    with pytest.raises(SpecError, match=r"patch typo \(role r\).*no transition 'bb'"):
        P.apply("typo", Draft({"r": abc()}))
    with pytest.raises(SpecError, match=r"patch no-role \(roles\).*no role 'q'; roles: r"):
        P.apply("no-role", Draft({"r": abc()}))
    with pytest.raises(SpecError, match=r"no patch named 'other'; patches: skip-b, typo, no-role, rank-specific"):
        P.apply("other", Draft({"r": abc()}))
    assert P.apply("rank-specific", Draft({"r": abc()})).breaks_symmetry
    with pytest.raises(ValueError, match="registered twice"):
        P("typo")(lambda d: None)


def test_every_shipped_variant_is_a_patch():
    from lockstep.spec.specs import kv, pp, tp
    from lockstep.spec.registry import load

    for spec, table in (("tp", tp.PATCHES), ("kv", kv.PATCHES), ("pp0", pp.PATCHES), ("pp1", pp.PATCHES)):
        missing = set(load(spec).variants) - set(table)
        assert not missing, f"{spec}: variants without a patch: {missing}"


def test_shipped_builders_have_no_variant_branches():
    """The planted bugs live in the patch tables: no ``variant ==``/``v ==`` test in the builders."""
    import inspect
    import re

    from lockstep.spec.specs import kv, pp, tp

    for fn in (tp.build, kv.build, kv.kv_role, pp.build_pp):
        src = inspect.getsource(fn)
        assert not re.search(r"\b(v|variant)\s*(==|!=|in)\s", src), fn.__qualname__


# ---------------------------------------------------------------- the same graph as the branch form
SIG = ("int64", (1,))


def exchange_branches(variant):
    """The old form: the builder branches on the variant."""
    a = Role("a", "HELLO", {"n": 0})
    if variant == "no-handshake":
        a.local("skip_handshake", "HELLO", "SEND")
    else:
        a.op("handshake", "HELLO", "SEND", lambda c: barrier("w"))
    a.op("send_x", "SEND", "MORE", lambda c: send("w", 1, SIG, c.v.n))
    if variant == "late-raise":
        a.local("raise_late", "MORE", FAILED, guard=lambda c: c.v.n == 1)
    a.local("again", "MORE", "SEND", guard=lambda c: c.v.n < 2, do=lambda c: c.set(n=c.v.n + 1))
    a.local("finish", "MORE", DONE, guard=lambda c: c.v.n >= 2)
    b = Role("b", "HELLO", {"got": ()})
    if variant == "no-handshake":
        b.local("skip_handshake", "HELLO", "RECV")
    else:
        b.op("handshake", "HELLO", "RECV", lambda c: barrier("w"))
    b.op("recv_x", "RECV", "RECV", lambda c: recv("w", 0, SIG), guard=lambda c: len(c.v.got) < 3,
         after=lambda c, d: c.set(got=c.v.got + (d,)))
    b.local("finish", "RECV", DONE, guard=lambda c: len(c.v.got) >= 3)
    return a, b


PATCHES = Patches()


@PATCHES("no-handshake")
def no_handshake(draft):
    draft["a"].replace("handshake", name="skip_handshake", op=None)
    draft["b"].replace("handshake", name="skip_handshake", op=None)


@PATCHES("late-raise")
def late_raise(draft):
    with draft["a"].insert_after("send_x"):
        draft["a"].local("raise_late", "MORE", FAILED, guard=lambda c: c.v.n == 1)


def exchange_patched(variant):
    a, b = exchange_branches(None)  # the hardened roles
    PATCHES.apply(variant, Draft({"a": a, "b": b}))
    return a, b


def world(roles, backend="gloo"):
    a, b = roles
    return Protocol("exchange", groups={"w": Group("w", (0, 1))}, backend=backend,
                    actors=[ActorDef(0, "main", a), ActorDef(1, "main", b)])


def graph(model) -> list:
    """Every reachable state with its successors, in breadth-first order (unreduced)."""
    model.set_reduction(False)
    seen, q, out = set(), deque(), []
    for s in model.init_states():
        seen.add(s)
        q.append(s)
    while q:
        s = q.popleft()
        succ = list(model.successors(s))
        out.append((s, [(a, n if not isinstance(n, Violation) else n.verdict) for a, n in succ]))
        for _a, n in succ:
            if not isinstance(n, Violation) and n not in seen:
                seen.add(n)
                q.append(n)
    return out


@pytest.mark.parametrize("variant", [None, "no-handshake", "late-raise"])
@pytest.mark.parametrize("backend", ["gloo", "nccl"])
def test_a_patch_gives_the_same_graph_as_the_branch_form(variant, backend):
    old, new = exchange_branches(variant), exchange_patched(variant)
    for ro, rn in zip(old, new):
        assert names(ro) == names(rn) and ro.by_src == rn.by_src
    g_old, g_new = graph(world(old, backend)), graph(world(new, backend))
    assert g_old == g_new and len(g_old) > 5
    r_old, r_new = check(world(old, backend)), check(world(new, backend))
    assert (r_old.verdict, r_old.stats.states, r_old.stats.transitions) == (r_new.verdict, r_new.stats.states, r_new.stats.transitions)
    assert [s.get("transition") for s in r_old.counterexample] == [s.get("transition") for s in r_new.counterexample]


# ---------------------------------------------------------------- named guards
def queue_not_full(c):
    return len(c.g.q) < 1


def blocked_world(guard_kw):
    """rank 0 waits on a guard over a shared queue nobody drains; rank 1 waits for rank 0's send."""
    a = Role("producer", "PUT", {})
    a.local("put", "PUT", "SEND", do=lambda c: c.gset(q=c.g.q + (1,)), **guard_kw)
    a.op("send_x", "SEND", DONE, lambda c: send("w", 1, SIG, 1))
    b = Role("consumer", "RECV", {})
    b.op("recv_x", "RECV", DONE, lambda c: recv("w", 0, SIG))
    return Protocol("blocked", groups={"w": Group("w", (0, 1))}, shared={"q": (1,)},
                    actors=[ActorDef(0, "main", a), ActorDef(1, "main", b)])


@pytest.mark.parametrize("guard_kw, label", [
    (dict(guard=queue_not_full), "queue not full"),
    (dict(guard=lambda c: len(c.g.q) < 1, why="queue not full"), "queue not full"),
    (dict(guard=lambda c: len(c.g.q) < 1), "len(c.g.q) < 1"),  # an anonymous lambda: its source
])
def test_guard_words_in_the_counterexample_and_json(guard_kw, label):
    w = blocked_world(guard_kw)
    assert guard_text(w.actors[0].role.transition("put")) == label
    r = check(w)
    assert r.verdict == DEADLOCK
    waiting = {x["actor"]: x for x in r.waiting}
    assert waiting["rank0"]["condition"] == f"no transition enabled in PUT; guard false: put: {label}"
    assert waiting["rank0"]["false_guards"] == [{"transition": "put", "guard": label}]


def test_guard_words_in_the_wait_for_condition():
    from lockstep.diagrams.conditions import condition

    w = blocked_world(dict(guard=lambda c: len(c.g.q) < 1, why="queue not full"))
    s = next(iter(w.init_states()))
    cond = condition(w, s, 0)
    assert cond.short() == "waits until queue not full (q: 1 item)"
    assert cond.lines() == ["put: queue not full — false: len(c.g.q) < 1"]  # the words, then the false part
    w = blocked_world(dict(guard=queue_not_full))
    cond = condition(w, next(iter(w.init_states())), 0)
    assert cond.short() == "waits until queue not full (q: 1 item)" and cond.guards[0].text == "queue not full"


def test_guard_words_on_the_role_diagram():
    pytest.importorskip("graphviz")
    from lockstep.diagrams.roles import role_graph, transition_rows

    role = blocked_world(dict(guard=queue_not_full)).actors[0].role
    src = role_graph(role, "producer", explored=False).source
    assert "put\n[queue not full]" in src or "put\\n[queue not full]" in src
    rows = {r["name"]: r for r in transition_rows(role, explored=False)}
    assert rows["put"]["guard"] == "queue not full" and rows["send_x"]["guard"] == ""
    anon = blocked_world(dict(guard=lambda c: len(c.g.q) < 1)).actors[0].role
    assert "[" not in role_graph(anon, "producer", explored=False).source.split("put")[1].split("\n")[0]
    assert {r["name"]: r for r in transition_rows(anon, explored=False)}["put"]["guard"] == "len(q) < 1"


def test_shipped_specs_name_their_guards():
    from lockstep.spec.registry import load

    params = {k: p.default for k, p in load("pp0").params.items()}
    w = load("pp0").build(params, "queue-no-drain", "gloo")
    stage0 = w.actors[0].role
    assert stage0.transition("preflight_ok_enqueue").guard_label == "room in D_in, the envelope within the contract"
    assert stage0.transition("phase_a").guard_label == "chunks left", "the patch's guard has the patch's words"
