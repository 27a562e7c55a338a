"""The c10d fabric: every op kind and backend-profile feature, each with a correct and a mismatched use,
on the gloo and nccl profiles, through small protocols built with the Role API."""
from __future__ import annotations

import pytest

from lockstep.model.api import COLLECTIVE_MISMATCH, DEADLOCK, HOLDS, STRANDED, WRONG_GROUP, SpecError
from lockstep.model.checker import check
from lockstep.spec import fabric as F
from lockstep.spec.fabric import Group, Op, parse_profile
from lockstep.spec.machine import DONE, FAILED, ActorDef, Protocol, Role

BACKENDS = ("gloo", "nccl")
F32 = ("float32", (4,))


def program(name: str, steps, expect=None) -> Role:
    """A role that issues ``steps`` (ops, or callables of the rank returning an op) in order, then ends
    in DONE.  ``expect[k]``: the data step k must get back (a mismatch is flagged as INVARIANT)."""
    r = Role(name, "S0", {"got": ()})
    for k, step in enumerate(steps):
        dst = f"S{k + 1}" if k + 1 < len(steps) else DONE

        def after(c, data, k=k):
            c.set(got=c.v.got + (data,))
            if expect is not None and k in expect and data != expect[k]:
                c.violate("INVARIANT", f"{name} step {k} got {data!r}, expected {expect[k]!r}")

        r.op(f"op{k}", f"S{k}", dst, step if callable(step) else (lambda c, s=step: s), after=after)
    return r


def world(*threads, backend="gloo", groups=None, **kw) -> Protocol:
    """``threads``: (rank, thread name, role).  One group ``world`` over every rank unless given."""
    ranks = sorted({t[0] for t in threads})
    groups = groups or {"world": Group("world", tuple(ranks))}
    return Protocol("toy", groups, [ActorDef(r, th, role) for r, th, role in threads], backend=backend, **kw)


def ranks(per_rank: list, backend="gloo", expect=None, **kw) -> Protocol:
    """One thread per rank running ``per_rank[r]``; ``expect[r]``: {step: data} for rank r."""
    return world(*[(r, "main", program(f"r{r}", steps, (expect or {}).get(r))) for r, steps in enumerate(per_rank)],
                 backend=backend, **kw)


def verdict(model) -> str:
    return check(model).verdict


# --- spec mistakes: one SpecError naming the role and transition, never a verdict ---------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad, why", [
    (Op("alltoall", "world"), "unknown op kind 'alltoall'"),
    (Op("all_reduce", "world", 0, 0, F32, 1, "sum"), "all_reduce takes no root"),
    (Op("broadcast", "world", 0, 0, F32, None, "sum"), "broadcast takes no reduce op"),
    (Op("barrier", "world", -1, 3), "barrier takes no tag"),
    (F.all_reduce("world", F32, 1, reduce="mean"), "unknown reduce op 'mean'"),
    (Op("gather", "world", 0, 0, F32, None, "", (1, (1, 1))), "gather takes no splits"),
    (("broadcast", "world"), "must return a fabric op"),
])
def test_bad_op_is_a_spec_error(backend, bad, why):
    m = ranks([[bad], [F.barrier("world")]], backend)
    with pytest.raises(SpecError) as e:
        check(m)
    assert e.value.where == "r0.op0" and why in str(e.value)
    assert "\n" not in str(e.value)


def test_split_table_of_the_wrong_length_is_a_spec_error():
    m = ranks([[F.all_gather("world", ("float32",), 0, size=1, sizes=(1, 1, 1))],
               [F.all_gather("world", ("float32",), 1, size=1, sizes=(1, 1))]])
    with pytest.raises(SpecError, match="one entry per member"):
        check(m)


def test_unknown_backend_is_refused_with_the_choices():
    with pytest.raises(SpecError, match="valid backends: gloo, nccl, nccl-async, mpi"):
        ranks([[F.barrier("world")], [F.barrier("world")]], "ucc")


def test_profile_overrides_parse_and_refuse():
    p = parse_profile("nccl:eager_below=4096,finished_peer=alive")
    assert (p.p2p_match, p.eager_below, p.gone_peer, p.finished_peer) == ("peer-fifo", 4096, "never", "alive")
    assert parse_profile("mpi") == F.PROFILES["mpi"] and F.PROFILES["mpi"].p2p_tags
    for bad, msg in (("gloo:eager=1", "expected FIELD=VALUE"), ("gloo:p2p_match=any", "expects one of tag, peer-fifo"),
                     ("nccl:eager_below=big", "expects a number of bytes")):
        with pytest.raises(ValueError, match=msg):
            parse_profile(bad)


# --- collectives: data semantics (a correct use HOLDS with the right data) and mismatches ------------
SIG = ("float32", (2,))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["reduce_scatter", "all_to_all", "reduce", "scatter", "gather", "all_gather_v",
                                  "all_to_all_v"])
def test_collective_correct_use_delivers_the_right_data(backend, kind):
    n = 3
    if kind == "reduce_scatter":
        ops = [F.reduce_scatter("world", SIG, tuple(10 * r + i for i in range(n))) for r in range(n)]
        want = {r: sum(10 * s + r for s in range(n)) for r in range(n)}
    elif kind == "all_to_all":
        ops = [F.all_to_all("world", SIG, tuple((r, i) for i in range(n))) for r in range(n)]
        want = {r: tuple((s, r) for s in range(n)) for r in range(n)}
    elif kind == "reduce":
        ops = [F.reduce("world", 1, SIG, r + 2, reduce="prod") for r in range(n)]
        want = {0: None, 1: 2 * 3 * 4, 2: None}
    elif kind == "scatter":
        ops = [F.scatter("world", 2, SIG, ("a", "b", "c") if r == 2 else None) for r in range(n)]
        want = {0: "a", 1: "b", 2: "c"}
    elif kind == "gather":
        ops = [F.gather("world", 0, SIG, r * r) for r in range(n)]
        want = {0: (0, 1, 4), 1: None, 2: None}
    elif kind == "all_gather_v":
        sizes = (1, 3, 2)
        ops = [F.all_gather("world", ("float32",), f"x{r}", size=sizes[r], sizes=sizes) for r in range(n)]
        want = {r: ("x0", "x1", "x2") for r in range(n)}
    else:  # all_to_all_v: rank r sends r+i rows to rank i
        ops = [F.all_to_all("world", ("float32",), tuple(r * 10 + i for i in range(n)),
                            in_splits=tuple(r + i for i in range(n)), out_splits=tuple(s + r for s in range(n)))
               for r in range(n)]
        want = {r: tuple(s * 10 + r for s in range(n)) for r in range(n)}
    m = ranks([[o] for o in ops], backend, expect={r: {0: want[r]} for r in range(n)})
    assert verdict(m) == HOLDS


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind, a, b, why", [
    ("reduce_scatter", F.reduce_scatter("world", SIG, (1, 2), "sum"), F.reduce_scatter("world", SIG, (1, 2), "max"), "op=max"),
    ("reduce_scatter dtype", F.reduce_scatter("world", SIG, (1, 2)), F.reduce_scatter("world", ("bfloat16", (2,)), (1, 2)),
     "bfloat16"),
    ("all_to_all", F.all_to_all("world", SIG, (1, 2)), F.all_to_all("world", ("float32", (3,)), (1, 2)), "(3,)"),
    ("reduce root", F.reduce("world", 0, SIG, 1), F.reduce("world", 1, SIG, 1), "dst=1"),
    ("scatter root", F.scatter("world", 0, SIG, (1, 2)), F.scatter("world", 1, SIG, (1, 2)), "src=1"),
    ("gather root", F.gather("world", 0, SIG, 1), F.gather("world", 1, SIG, 1), "dst=1"),
    ("gather vs reduce", F.gather("world", 0, SIG, 1), F.reduce("world", 0, SIG, 1), "reduce group=world"),
    ("all_gather_v sizes", F.all_gather("world", ("float32",), 0, size=2, sizes=(2, 3)),
     F.all_gather("world", ("float32",), 1, size=4, sizes=(2, 4)), "expects 3 from member 1, which contributes 4"),
    ("all_gather even vs v", F.all_gather("world", ("float32",), 0),
     F.all_gather("world", ("float32",), 1, size=1, sizes=(1, 1)), "even form"),
    ("all_to_all_v splits", F.all_to_all("world", ("float32",), (0, 1), in_splits=(1, 2), out_splits=(1, 5)),
     F.all_to_all("world", ("float32",), (0, 1), in_splits=(3, 5), out_splits=(2, 5)),
     "member 0 expects 5 from member 1, which sends it 3"),
])
def test_collective_mismatch(backend, kind, a, b, why):
    m = ranks([[a], [b]], backend)
    r = check(m)
    assert r.verdict == COLLECTIVE_MISMATCH, (kind, r.message)
    assert why in r.message


@pytest.mark.parametrize("backend", BACKENDS)
def test_rooted_collective_with_a_root_outside_the_group(backend):
    m = ranks([[F.gather("world", 2, SIG, 0)], [F.gather("world", 2, SIG, 1)]], backend)
    r = check(m)
    assert r.verdict == WRONG_GROUP and "group-local root 2" in r.message


@pytest.mark.parametrize("backend", BACKENDS)
def test_skipped_rooted_collective_pairs_with_the_next_and_strands(backend):
    """Rank 1 skips the reduce: rank 0's reduce meets rank 1's gather (a mismatch)."""
    m = ranks([[F.reduce("world", 0, SIG, 1), F.gather("world", 0, SIG, 1)], [F.gather("world", 0, SIG, 1)]], backend)
    assert verdict(m) == COLLECTIVE_MISMATCH


# --- p2p matching: tags (gloo, mpi) vs per-peer FIFO (nccl) -----------------------------------------
def out_of_order_tags(backend):
    """Rank 0 sends tag 1 and tag 2 from two threads; rank 1 receives tag 2 first."""
    s1 = program("s1", [F.send("world", 1, ("int64", (1,)), "one", tag=1)])
    s2 = program("s2", [F.send("world", 1, ("float32", (8,)), "two", tag=2)])
    rx = program("rx", [F.recv("world", 0, ("float32", (8,)), tag=2), F.recv("world", 0, ("int64", (1,)), tag=1)],
                 expect={0: "two", 1: "one"})
    return world((0, "a", s1), (0, "b", s2), (1, "main", rx), backend=backend)


def test_tag_matching_takes_sends_out_of_order_on_gloo_and_mpi():
    assert verdict(out_of_order_tags("gloo")) == HOLDS
    assert verdict(out_of_order_tags("mpi")) == HOLDS


def test_nccl_ignores_tags_and_pairs_in_issue_order():
    r = check(out_of_order_tags("nccl"))
    assert r.verdict == COLLECTIVE_MISMATCH and "matched p2p on world differ" in r.message


def ring_exchange(n, backend):
    """Megatron-style neighbour exchange: each rank sends to the next and receives from the previous, from
    two threads (the blocking form of one batched isend/irecv pair)."""
    threads = []
    for r in range(n):
        threads.append((r, "send", program(f"send{r}", [F.send("world", (r + 1) % n, F32, r)])))
        threads.append((r, "recv", program(f"recv{r}", [F.recv("world", (r - 1) % n, F32)], expect={0: (r - 1) % n})))
    return world(*threads, backend=backend)


@pytest.mark.parametrize("backend", ("gloo", "nccl", "nccl-async", "mpi"))
def test_ring_exchange_holds_with_per_peer_queues(backend):
    # one FIFO per rank and group (the old nccl profile) deadlocks here: every rank's recv queued first
    assert verdict(ring_exchange(4, backend)) == HOLDS


def test_two_rank_exchange_on_one_peer_queue_deadlocks_on_nccl_only():
    """With two ranks, next == previous: NCCL serves the send and the recv towards one peer in issue
    order, so if both ranks issued their send first, each waits for the other's recv."""
    assert verdict(ring_exchange(2, "gloo")) == HOLDS
    r = check(ring_exchange(2, "nccl"))
    assert r.verdict == DEADLOCK, r.message


# --- eager sends -------------------------------------------------------------------------------------
def send_first(shape, backend):
    """Both ranks send, then receive (NVIDIA/nccl#479's pattern)."""
    sig = ("float32", shape)
    return ranks([[F.send("world", 1, sig, "from0"), F.recv("world", 1, sig)],
                  [F.send("world", 0, sig, "from1"), F.recv("world", 0, sig)]], backend,
                 expect={0: {1: "from1"}, 1: {1: "from0"}})


@pytest.mark.parametrize("backend", BACKENDS)
def test_send_first_deadlocks_on_rendezvous(backend):
    r = check(send_first((4,), backend))
    assert r.verdict == DEADLOCK and "send" in r.message


@pytest.mark.parametrize("backend", BACKENDS)
def test_eager_sends_below_the_threshold_complete_before_the_recv(backend):
    eager = f"{backend}:eager_below=1024"
    assert verdict(send_first((4,), eager)) == HOLDS           # 16 bytes: buffered
    assert verdict(send_first((1024,), eager)) == DEADLOCK     # 4 KiB: rendezvous again


@pytest.mark.parametrize("backend", BACKENDS)
def test_buffered_message_mismatching_its_recv(backend):
    m = ranks([[F.send("world", 1, ("float32", (4,)), 1)], [F.recv("world", 0, ("float32", (2,)))]],
              f"{backend}:eager_below=1024")
    r = check(m)
    assert r.verdict == COLLECTIVE_MISMATCH and "sig=float32,(2,)" in r.message


@pytest.mark.parametrize("backend", BACKENDS)
def test_buffered_messages_are_not_overtaken(backend):
    """A small eager send then a large rendezvous send on the same tag: the recvs get them in order."""
    tx = program("tx", [F.send("world", 1, ("float32", (4,)), "small"), F.send("world", 1, ("float32", (4,)), "big")])
    rx = program("rx", [F.recv("world", 0, ("float32", (4,))), F.recv("world", 0, ("float32", (4,)))],
                 expect={0: "small", 1: "big"})
    assert verdict(world((0, "main", tx), (1, "main", rx), backend=f"{backend}:eager_below=64")) == HOLDS


# --- a partner that finished vs a process that is gone ----------------------------------------------
def finished_partner(backend):
    """Rank 0 returns without the send rank 1 waits for."""
    idle = Role("idle", "S0", {"x": 0})
    idle.local("leave", "S0", DONE)
    rx = Role("rx", "S0", {"x": 0})
    rx.op("recv", "S0", DONE, lambda c: F.recv("world", 0, F32), on_error=FAILED)
    return world((0, "main", idle), (1, "main", rx), backend=backend)


def test_finished_peer_fails_its_partner_at_once_on_gloo():
    r = check(finished_partner("gloo"))
    assert r.verdict == HOLDS and r.stats.fail_fast_ends == 1


@pytest.mark.parametrize("backend, status", [("nccl", "gone"), ("mpi", "finished")])
def test_finished_peer_hangs_its_partner_on_nccl_and_mpi(backend, status):
    r = check(finished_partner(backend))
    assert r.verdict == STRANDED and f"waiting on rank 0 ({status})" in r.message


def test_crashed_peer_fails_its_partner_on_mpi():
    rx = Role("rx", "S0", {"x": 0})
    rx.op("recv", "S0", DONE, lambda c: F.recv("world", 0, F32), on_error=FAILED)
    tx = program("tx", [F.send("world", 1, F32, 0)])
    m = world((0, "main", tx), (1, "main", rx), backend="mpi", faults=frozenset({"crash"}), crash_ranks=(0,))
    assert verdict(m) == HOLDS


# --- op timeouts: recovers vs hangs -----------------------------------------------------------------
def timed_barrier(backend, **timeout):
    """Rank 0 may crash before the barrier; rank 1's barrier has a timeout."""
    a = program("r0", [F.barrier("world")])
    b = Role("r1", "S0", {"x": 0})
    b.op("barrier", "S0", DONE, lambda c: F.barrier("world"), timeout=FAILED, **timeout)
    return world((0, "main", a), (1, "main", b), backend=backend, faults=frozenset({"crash"}), crash_ranks=(0,))


@pytest.mark.parametrize("backend", BACKENDS)
def test_timeout_declared_recovers_is_the_designed_recovery(backend):
    assert verdict(timed_barrier(backend, timeout_kind="recovers")) == HOLDS
    assert verdict(timed_barrier(backend, timeout_s=30)) == HOLDS


@pytest.mark.parametrize("backend", ("nccl",))
@pytest.mark.parametrize("decl", [{"timeout_kind": "hangs"}, {"timeout_s": 7200}])
def test_timeout_that_hangs_is_stranded_and_named(backend, decl):
    r = check(timed_barrier(backend, **decl))
    assert r.verdict == STRANDED and "until its barrier timeout" in r.message and "declared hangs" in r.message
    if "timeout_s" in decl:
        assert "(7200 s)" in r.message


def test_timeout_that_hangs_on_gloo_still_fails_fast_on_a_gone_peer():
    """gloo reports the crashed peer at once: the barrier fails long before its 2-hour timeout."""
    assert verdict(timed_barrier("gloo", timeout_kind="hangs")) == HOLDS


def test_timeout_that_hangs_on_an_alive_partner():
    """No fault: rank 0 idles in a state it never leaves; rank 1's 2-hour barrier timeout is no rescue."""
    a = Role("r0", "S0", {"x": 0})
    a.local("stop", "S0", "IDLE")
    b = Role("r1", "S0", {"x": 0})
    b.op("barrier", "S0", DONE, lambda c: F.barrier("world"), timeout=FAILED, timeout_s=7200)
    r = check(world((0, "main", a), (1, "main", b), backend="gloo"))
    assert r.verdict == STRANDED and "(7200 s)" in r.message and "rank 0 (idle)" in r.message


def test_timeout_without_kind_or_duration_is_a_spec_error():
    with pytest.raises(SpecError) as e:
        check(timed_barrier("gloo"))
    assert e.value.where == "r1.barrier" and "timeout_kind='recovers'" in str(e.value)
    with pytest.raises(SpecError, match="expected one of recovers, hangs"):
        check(timed_barrier("gloo", timeout_kind="sometimes"))


def test_counterexample_names_the_buffered_steps():
    m = ranks([[F.send("world", 1, ("float32", (4,)), 1)], [F.recv("world", 0, ("float32", (2,)))]], "gloo:eager_below=64")
    r = check(m)
    steps = [s["transition"] for s in r.counterexample]
    assert "op0 completes (eager send, buffered)" in steps and steps[-1] == "buffered send/recv completes"
    assert "(buffered) -> recv group=world src=0 sig=float32,(2,)" in r.counterexample[-1]["op"]


# --- non-blocking ops: isend/irecv, async collectives, batch_isend_irecv, wait ------------------------
def posting(name: str, steps, expect=None, on_error=FAILED) -> Role:
    """Like ``program`` but a step may post (fabric.Post: the thread moves on) or wait on a handle."""
    r = Role(name, "S0", {"got": ()})
    for k, step in enumerate(steps):
        dst = f"S{k + 1}" if k + 1 < len(steps) else DONE

        def after(c, data, k=k):
            c.set(got=c.v.got + (data,))
            if expect is not None and k in expect and data != expect[k]:
                c.violate("INVARIANT", f"{name} step {k} got {data!r}, expected {expect[k]!r}")

        r.op(f"op{k}", f"S{k}", dst, lambda c, s=step: s, after=after, on_error=on_error)
    return r


def exchange(backend, batched: bool, sig1=F32):
    """Two ranks swap a tensor: isend to the other and irecv from it, then wait on both."""
    threads = []
    for r in (0, 1):
        peer = 1 - r
        sig = sig1 if r == 1 else F32
        if batched:
            steps = [F.batch_isend_irecv("x", [F.send("world", peer, sig, f"from{r}"), F.recv("world", peer, sig)]),
                     F.wait("x")]
            expect = {1: (None, f"from{peer}")}
        else:
            steps = [F.isend("s", "world", peer, sig, f"from{r}"), F.irecv("r", "world", peer, sig), F.wait("s"), F.wait("r")]
            expect = {3: f"from{peer}"}
        threads.append((r, "main", posting(f"r{r}", steps, expect)))
    return world(*threads, backend=backend)


@pytest.mark.parametrize("backend", ("gloo", "nccl", "nccl-async", "mpi"))
def test_batch_isend_irecv_exchange_holds(backend):
    assert verdict(exchange(backend, batched=True)) == HOLDS


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_isend_irecv_with_mismatched_shapes(backend):
    r = check(exchange(backend, batched=True, sig1=("float32", (8,))))
    assert r.verdict == COLLECTIVE_MISMATCH and "matched p2p on world differ" in r.message


def test_unbatched_isend_then_irecv_queues_behind_the_send_on_nccl():
    """gloo (and MPI) progress isend and irecv independently; NCCL serves the ops towards one peer in issue order,
    so two ranks that both isend first wait for each other's irecv — the reason batch_isend_irecv exists."""
    assert verdict(exchange("gloo", batched=False)) == HOLDS
    assert verdict(exchange("mpi", batched=False)) == HOLDS
    r = check(exchange("nccl", batched=False))
    assert r.verdict == DEADLOCK and "wait s" in r.message


@pytest.mark.parametrize("backend", BACKENDS)
def test_async_collective_completes_through_wait(backend):
    ops = [[F.post("h", F.all_reduce("world", F32, r + 1)), F.barrier("world"), F.wait("h")] for r in range(2)]
    m = world(*[(r, "main", posting(f"r{r}", s, expect={2: 3})) for r, s in enumerate(ops)], backend=backend)
    assert verdict(m) == HOLDS


@pytest.mark.parametrize("backend", BACKENDS)
def test_async_collective_mismatch(backend):
    ops = [[F.post("h", F.all_reduce("world", F32, 1)), F.wait("h")],
           [F.post("h", F.all_gather("world", F32, 1)), F.wait("h")]]
    m = world(*[(r, "main", posting(f"r{r}", s)) for r, s in enumerate(ops)], backend=backend)
    r = check(m)
    assert r.verdict == COLLECTIVE_MISMATCH and "all_gather" in r.message
    assert any(s["transition"] == "all_reduce completes" for s in r.counterexample)


@pytest.mark.parametrize("backend, want", [("gloo", HOLDS), ("nccl", STRANDED)])
def test_posted_recv_from_a_crashed_peer(backend, want):
    """gloo fails the posted irecv when its peer dies, and the wait raises; NCCL never notices."""
    rx = posting("rx", [F.irecv("r", "world", 0, F32), F.wait("r")])
    tx = program("tx", [F.send("world", 1, F32, 0)])
    m = world((0, "main", tx), (1, "main", rx), backend=backend, faults=frozenset({"crash"}), crash_ranks=(0,))
    r = check(m)
    assert r.verdict == want, r.message
    if want == STRANDED:
        assert "in wait r" in r.message and "rank 0 (gone)" in r.message


@pytest.mark.parametrize("step, why", [
    (F.wait("nope"), "no op is outstanding under that handle"),
    (F.batch_isend_irecv("b", [F.all_reduce("world", F32, 1)]), "only send and recv ops may be batched"),
    (F.Post("h", (F.barrier("world"), F.barrier("world"))), "one op per handle"),
])
def test_bad_posts_and_waits_are_spec_errors(step, why):
    m = world((0, "main", posting("r0", [step])), (1, "main", posting("r1", [F.barrier("world")])))
    with pytest.raises(SpecError, match=why):
        check(m)


def test_reusing_an_outstanding_handle_is_a_spec_error():
    m = world((0, "main", posting("r0", [F.isend("h", "world", 1, F32), F.isend("h", "world", 1, F32)])),
              (1, "main", posting("r1", [F.recv("world", 0, F32)])))
    with pytest.raises(SpecError, match="still outstanding"):
        check(m)


@pytest.mark.parametrize("backend, want", [("gloo", HOLDS), ("nccl", STRANDED)])
def test_async_collective_of_a_crashed_rank_is_void(backend, want):
    """Rank 0 posts its all_reduce and may crash before waiting: the posted op dies with it, so rank 1's
    blocking all_reduce fails at once on gloo and waits for ever on NCCL (never a deadlock)."""
    r0 = posting("r0", [F.post("h", F.all_reduce("world", F32, 1)), F.wait("h")])
    r1 = program("r1", [F.all_reduce("world", F32, 2)])
    m = world((0, "main", r0), (1, "main", r1), backend=backend, faults=frozenset({"crash"}), crash_ranks=(0,))
    r = check(m)
    assert r.verdict == want, r.message
    if want == STRANDED:
        assert "rank 0 (gone)" in r.message


def _exits_with_posted_ops():
    """Rank 0 posts a barrier and an all_reduce without waiting, then exits; rank 1 runs a barrier, then
    an all_gather."""
    r0 = Role("sender", "S0", {})
    r0.op("post_barrier", "S0", "S1", lambda c: F.post("b", F.barrier("world")))
    r0.op("post_reduce", "S1", "S2", lambda c: F.post("r", F.all_reduce("world", F32, 1)))
    r0.local("exit", "S2", DONE)
    r1 = program("peer", [F.barrier("world"), F.all_gather("world", F32, 1)])
    return world((0, "main", r0), (1, "main", r1))


def test_a_rank_exiting_with_posted_ops_is_not_reduced_alone():
    """Ops posted without blocking are void once their process is gone, so rank 0's exit disables what
    rank 1's later calls would have met.  Where rank 1's barrier meets the posted one before rank 0 exits,
    its all_gather meets the posted all_reduce: a COLLECTIVE_MISMATCH.  The reduced search used to take
    rank 0's steps alone up to its exit, after which rank 1's barrier can only fail, and said HOLDS."""
    for reduction in (False, True):
        r = check(_exits_with_posted_ops(), reduction=reduction)
        assert r.verdict == COLLECTIVE_MISMATCH and "all_gather" in r.message, (reduction, r.message)


def test_a_failed_op_leaves_its_queue_from_any_position():
    """Rank 0 posts three barriers, waits for none and stays alive; rank 1 may crash first.  The failures
    may come in any order, and a failed op leaves the queue like a completed one: the ops behind it move
    up, those ahead stay (two ops of one rank at the head of a queue would be matched as two ranks'
    calls), and it keeps position 0, as a completed op does.  So a
    post and an earlier op's failure lead to one state in either order, and the reduced search reaches
    the end states the full one does (a differential with posted-and-dropped handles found one it
    missed: the later op's queue position differed by the order alone)."""
    import protogen

    r0 = Role("r0", "S0", {})
    for k in range(3):
        r0.op(f"post{k}", f"S{k}", f"S{k + 1}", lambda c, k=k: F.post(f"h{k}", F.barrier("world")))
    r0.local("idle", "S3", "IDLE")  # alive, its posted ops outstanding or failed
    r1 = program("r1", [F.barrier("world")])

    def m():
        return world((0, "main", r0), (1, "main", r1), faults=frozenset({"crash"}), crash_ranks=(1,))

    full = protogen.end_states(m(), False)
    assert protogen.end_states(m(), True) == full
    failed = [s for s in full if s[0][1].ctl == "DEAD" and len(s[3]) == 3]
    assert failed and all(e[6] for s in failed for e in s[3])
    # every failed op ends at the position it would have had with the ops ahead of it gone
    assert {tuple(e[5] for e in s[3]) for s in failed} == {(0, 0, 0)}


@pytest.mark.parametrize("backend", BACKENDS)
def test_isend_irecv_with_mismatched_shapes(backend):
    """Unbatched isend/irecv whose shapes differ: on gloo the pair matches and mismatches; on NCCL the queue
    order deadlocks first, so the batched form is what exposes the mismatch there."""
    r = check(exchange(backend, batched=False, sig1=("float32", (8,))))
    assert r.verdict == (COLLECTIVE_MISMATCH if backend == "gloo" else DEADLOCK), r.message


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_keeps_the_order_of_sends_towards_one_peer(backend):
    """Two sends and two recvs towards the same peer in one batch pair in order (the data lands right)."""
    def side(r):
        peer = 1 - r
        ops = [F.send("world", peer, F32, f"{r}a"), F.send("world", peer, F32, f"{r}b"),
               F.recv("world", peer, F32), F.recv("world", peer, F32)]
        return posting(f"r{r}", [F.batch_isend_irecv("x", ops), F.wait("x")],
                       expect={1: (None, None, f"{peer}a", f"{peer}b")})
    assert verdict(world((0, "main", side(0)), (1, "main", side(1)), backend=backend)) == HOLDS


@pytest.mark.parametrize("backend", BACKENDS)
def test_deadlock_behind_a_timeout_that_hangs_is_stranded(backend):
    """Both ranks send first (rendezvous) with a 2-hour timeout: the cycle ends only when the timeout fires."""
    def side(r):
        role = Role(f"r{r}", "S0", {"x": 0})
        role.op("send", "S0", "S1", lambda c: F.send("world", 1 - r, F32), timeout=FAILED, timeout_s=7200)
        role.op("recv", "S1", DONE, lambda c: F.recv("world", 1 - r, F32))
        return role
    r = check(world((0, "main", side(0)), (1, "main", side(1)), backend=backend))
    assert r.verdict == STRANDED and "until its send timeout (7200 s) fires" in r.message
    assert r.detail["timeout"].startswith("until its send timeout")


def test_a_mismatch_names_each_distinct_call_once_with_its_ranks():
    """16 ranks, 15 of them calling with another dtype: the message says what differs in two entries
    (the per-rank calls stay in the detail); ranks with one call that are not consecutive read as runs."""

    def world(n, odd):
        roles = []
        for r in range(n):
            ro = Role(f"r{r}", "GO", {}, private=True)
            ro.op("reduce", "GO", DONE, lambda c, dt=("int32" if r in odd else "int64"): F.all_reduce("world", (dt, (1,)), 1))
            roles.append(ActorDef(r, "main", ro))
        return Protocol("mm", {"world": Group("world", tuple(range(n)))}, roles)

    res = check(world(16, set(range(1, 16))))
    assert res.verdict == COLLECTIVE_MISMATCH
    assert res.message.endswith("rank 0: all_reduce group=world sig=int64,(1,) op=sum; "
                                "ranks 1-15: all_reduce group=world sig=int32,(1,) op=sum")
    assert res.detail["calls"]["7"] == "all_reduce group=world sig=int32,(1,) op=sum"
    assert "ranks 0-2,4,5: all_reduce group=world sig=int64" in check(world(6, {3})).message
    assert [F.ranks_text(x) for x in ([3], [1, 2], [0, 2, 3, 4, 9])] == ["rank 3", "ranks 1,2", "ranks 0,2-4,9"]
    assert F.rank_runs(range(16)) == "0-15" and F.rank_runs([5, 1, 2, 3]) == "5,1-3"


def test_a_wide_non_blocking_ring_asks_for_gone_ranks_once_a_state_not_once_a_successor(monkeypatch):
    """64 ranks, each posting an isend to the next and an irecv from the previous one, then waiting:
    every successor holds fabric entries, and asking each one which ranks are gone (a pass over every
    actor, mostly a miss of its memo) made a state cost O(ranks²): 4,160 rank-status computations for
    257 states.  A successor by one actor's step that does not end it, from a state with no gone rank,
    has none either (``Fabric._drop_gone_posts``)."""
    from lockstep.model.checker import Bounds
    from lockstep.spec.fabric import irecv, isend, wait
    from lockstep.spec.world import Protocol as World

    n, sig = 64, ("f32", (4,))
    actors = []
    for r in range(n):
        role = Role(f"rank{r}", "SEND", {}, private=True)
        role.op("post_send", "SEND", "RECV", lambda c, r=r: isend("s", "world", (r + 1) % n, sig))
        role.op("post_recv", "RECV", "WAIT", lambda c, r=r: irecv("r", "world", (r - 1) % n, sig))
        role.op("wait_send", "WAIT", "WAIT2", lambda c: wait("s"))
        role.op("wait_recv", "WAIT2", DONE, lambda c: wait("r"))
        actors.append(ActorDef(r, "main", role))
    calls = []
    real = World._rank_status
    monkeypatch.setattr(World, "_rank_status", lambda self, key: calls.append(1) or real(self, key))
    res = check(Protocol("ring", {"world": Group("world", tuple(range(n)))}, actors), liveness=False,
                bounds=Bounds(max_states=200))
    assert res.stats.states >= 200 and len(calls) < res.stats.states


def test_a_float_reduction_does_not_depend_on_who_passed_which_value():
    """Float addition is not associative: 0.1 + 1e16 - 1e16 is 0.0, 1e16 - 1e16 + 0.1 is 0.1.  Summed in group order,
    swapping two symmetric members' contributions changed an all_reduce's result in the last bit, which
    the symmetry reduction (which keeps one arrangement of them) assumes it does not."""
    import itertools

    xs = [0.1, 0.2, 0.3, 1e16, -1e16]
    for kind in ("sum", "avg", "prod"):
        got = {F.combine("all_reduce", kind, list(p)) for p in itertools.permutations(xs)}
        assert len(got) == 1, (kind, got)
    assert len({sum(p) for p in itertools.permutations(xs)}) > 1  # the premise: group order alone differs
    assert F.combine("all_reduce", "sum", [1, 2, 3]) == 6 and F.combine("all_reduce", "max", [1, 5, 3]) == 5
