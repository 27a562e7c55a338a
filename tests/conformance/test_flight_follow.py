"""conformance/flight_follow.py: a run's recorded collectives followed on a spec's reduced graph.

The reduced graph must follow every run of the full graph (its soundness argument is in the module's
docstring), and answer every plan as the full graph does: random runs of random protocols
(tests/followgen.py) and of the shipped specs.  Each shipped example's planted bug follows the
collectives and the end of its own counterexample; the hardened protocol, which HOLDS, never does."""
import random
import sys
from pathlib import Path

import pytest

from lockstep.model.api import SpecError

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT = str(ROOT / "examples" / "checkpoint_commit_spec.py")
sys.path.insert(0, str(ROOT / "tests"))

import followgen  # noqa: E402
import protogen  # noqa: E402


@pytest.mark.parametrize("seed,kw", [(1, {}), (3, {"threads": True, "rooted": True, "detach": True, "recover": True}),
                                     (5, {"wide": True, "ranked": True, "rich": True})])
def test_reduced_and_full_graphs_follow_random_runs_alike(seed, kw):
    rng = random.Random(seed)
    compared, bad = 0, []
    for _ in range(25):
        d = protogen.describe(protogen.random_pick(rng), **kw)
        try:
            out, n = followgen.disagreements(d, rng)
        except SpecError:
            continue  # a planted-wrong declaration, refused
        compared += n
        bad += out
    assert not bad, bad[:3]
    assert compared > 40


def _model(info, variant, raw):
    from lockstep.spec.loading import build_model
    from lockstep.spec.registry import pick_backend, resolve

    return build_model(info, resolve(info, variant, raw)[1], variant, pick_backend(info, variant, None))


@pytest.mark.parametrize("ref,raw", [("tp", {"ranks": "3"}), ("pp1", {"mesh": "2"}), ("kv", {}),
                                     ("examples/checkpoint_commit_spec.py", {"ranks": "4"}),
                                     ("examples/loss_scaler_spec.py", {})])
def test_shipped_specs_follow_random_runs_alike_reduced_and_full(ref, raw):
    """Runs rich in collectives (the shipped specs and their variants): every run of the full graph is
    followed reduced, and each plan changed by one collective gets the same answer both ways."""
    from lockstep.conformance import flight_follow, flight_user
    from lockstep.spec.loading import load_spec

    info = load_spec(ref if "/" not in ref else str(ROOT / ref))
    rng = random.Random(11)
    compared, bad, collectives = 0, [], 0
    for variant in [None, *info.variants]:
        m0 = _model(info, variant, raw)
        groups = {n: frozenset(g.ranks) for n, g in m0.groups.items()}
        sym = frozenset(m0.actors[i].rank for i in m0.symmetric) if len(m0.symmetric) > 1 else frozenset()
        for _ in range(2):
            plan, shapes, mid = followgen.walk(_model(info, variant, raw), rng)
            collectives += sum(map(len, plan.values()))
            for which, p in (("run", plan), ("changed", followgen.changed(plan, rng))):
                if p is None:
                    continue
                r, u = (flight_follow.follow(m, p, flight_user._end_check(m, groups, shapes, sym) if shapes else None,
                                             mid, reduction=red)
                        for red, m in ((True, _model(info, variant, raw)), (False, _model(info, variant, raw))))
                if which == "run" and not r["follows"]:
                    bad.append((variant, "run not followed", p, shapes, r))
                if r["complete"] and u["complete"]:
                    compared += 1
                    if r["follows"] != u["follows"]:
                        bad.append((variant, which, p, shapes, r["follows"], u["follows"]))
    assert not bad, bad[:2]
    assert compared >= 2 * (1 + len(info.variants)) and collectives > 0


def _cex_plan(res, groups) -> dict:
    """Per group, the collectives a counterexample's run makes (its fabric steps that complete one)."""
    from lockstep.spec.fabric import COLLECTIVES

    plan = {g: [] for g in groups}
    for step in res.counterexample:
        kind = (step.get("transition") or "").removesuffix(" completes")
        if step.get("role") == "fabric" and kind in COLLECTIVES and kind != "monitored_barrier":
            plan[step["group"]].append(kind)
    return plan


@pytest.mark.parametrize("example", ["hello_spec", "early_stop_spec", "loss_scaler_spec", "generate_spec",
                                     "main_first_spec", "checkpoint_commit_spec", "mesh_2d_spec"])
def test_every_variant_explains_dumps_of_its_own_counterexample(example):
    """Self-consistency over the shipped examples at 5 ranks (the mesh at 2 x 2): each variant's
    counterexample that ends in a stuck collective or a collective mismatch, written as dumps of that
    run would show it (per group the collectives it made; then per stuck group who entered the last
    one and who never did, or the kinds that met), is explained by that variant: followed from its
    start to that end, and, as where a ring buffer wrapped, by its end alone.  The hardened protocol,
    which HOLDS, does neither."""
    from lockstep.conformance import flight_user
    from lockstep.model.checker import check
    from lockstep.spec.loading import load_spec

    info = load_spec(str(ROOT / "examples" / f"{example}.py"))
    raw = {"ranks": "5"} if "ranks" in info.params else {}
    holds = check(_model(info, None, raw), liveness=False).verdict == "HOLDS"
    tried = 0
    for variant in info.variants:
        model = _model(info, variant, raw)
        res = check(model, liveness=False)
        groups = {name: frozenset(g.ranks) for name, g in model.groups.items()}
        names = {m: n for n, m in groups.items()}
        if res.verdict == "COLLECTIVE_MISMATCH" and res.detail.get("group") in groups:
            members = groups[res.detail["group"]]
            ends = {names[members]: {"members": sorted(members), "first_mismatch": {
                "kind": "type" if len({c.split()[0] for c in res.detail["calls"].values()}) > 1 else "size",
                "op": next(iter(res.detail["calls"].values())).split()[0],
                "ranks": {str(r): c.split()[0] for r, c in res.detail["calls"].items()}}}}
        else:
            shapes = flight_user._blocked_shapes(res.waiting, groups)
            if not shapes:
                continue
            ends = {names[s[1]]: {"members": sorted(s[1]), "first_mismatch": {
                "kind": "missing_ranks", "op": sorted(s[2])[0], "present": sorted(s[3]),
                "missing": sorted(s[1] - s[3])}} for s in shapes}
        world = len({a.rank for a in model.actors})
        rep = {"world": world, "ranks": list(range(world)), "groups": ends}
        seqs = {g: {"members": sorted(groups[g]), "ops": ops, "from": 1, "wrapped": False}
                for g, ops in _cex_plan(res, groups).items()}
        for m, said in ((flight_user.match(rep, info, raw, sequences=seqs), "follows"),
                        (flight_user.match(rep, info, raw), "ends_this_way")):
            assert variant in [x["variant"] for x in m["matches"]], (variant, said, seqs, res.waiting, res.detail, m)
            if holds:
                assert m["hardened"][said] is False, (variant, m)
        tried += 1
    assert tried, f"{example}: no variant ends in a collective"


def test_ranks_outside_the_symmetry_are_compared_as_they_are():
    """Without symmetric ranks the dumps' ranks must be the end's own: hello_spec's worker-skips ends
    with rank 0 in the broadcast and rank 1 never in it; dumps with rank 1 waiting for rank 0 are
    not that end."""
    from lockstep.conformance import flight_user
    from lockstep.spec.loading import load_spec

    info = load_spec(str(ROOT / "examples" / "hello_spec.py"))

    def rep(present, missing):
        return {"world": 2, "ranks": [0, 1], "groups": {"world": {"members": [0, 1], "first_mismatch": {
            "kind": "missing_ranks", "op": "broadcast", "present": present, "missing": missing}}}}

    m = flight_user.match(rep([0], [1]), info, {})
    assert [x["variant"] for x in m["matches"]] == ["worker-skips"] and m["symmetric_ranks"] == []
    assert m["hardened"]["ends_this_way"] is False
    assert flight_user.match(rep([1], [0]), info, {})["matches"] == []


def test_a_mismatch_in_signature_is_not_one_in_type():
    """The checkpoint spec's cleanup-barrier-first ends where a barrier meets an all_reduce (calls of
    different kinds).  Dumps where every rank called all_reduce, with different sizes, are another
    failure: no variant; dumps where a barrier met an all_reduce are that variant."""
    from lockstep.conformance import flight_user
    from lockstep.spec.loading import load_spec

    info = load_spec(CHECKPOINT)

    def rep(fm):
        return {"world": 4, "ranks": [0, 1, 2, 3], "groups": {"world": {"members": [0, 1, 2, 3], "first_mismatch": fm}}}

    sizes = flight_user.match(rep({"kind": "size", "op": "all_reduce", "ranks": {"0": [[1]], "2": [[2]]}}), info,
                              {"ranks": "4"})
    assert sizes["matches"] == [] and sizes["projection"][0]["differs_in"] == "signature"
    kinds = flight_user.match(rep({"kind": "type", "ranks": {"0": "all_reduce", "2": "barrier"}}), info, {"ranks": "4"})
    assert [x["variant"] for x in kinds["matches"]] == ["cleanup-barrier-first"]


def _shown_alike(d) -> bool | None:
    """Whether the reduced and the full graph of description ``d`` show the same (followgen.observations);
    None where a bound cut either search."""
    r = followgen.observations(protogen.build(d), True)
    u = followgen.observations(protogen.build(d), False)
    return None if r is None or u is None else r == u


@pytest.mark.parametrize("seed,kw,n", [(1, {}, 30), (2, {"wide": True}, 30), (4, {"threads": True, "detach": True}, 16)])
def test_a_dump_shows_the_same_of_the_reduced_and_the_full_graph(seed, kw, n):
    """Every run's collectives, with how it ended (finished, stuck with its blocked ranks, a mismatch),
    and every run's prefix: the same set on both graphs of random protocols."""
    rng = random.Random(seed)
    compared = 0
    for _ in range(n):
        d = protogen.describe(protogen.random_pick(rng), **kw)
        try:
            same = _shown_alike(d)
        except SpecError:
            continue
        assert same is not False, d
        compared += same is not None
    assert compared > n // 2


@pytest.mark.parametrize("name,seed,within", [("c0-conflicts", 7, 3), ("c0-fifo", 1, 57), ("c1-posting-order", 3, 19),
                                              ("faults-kill", 1, 4), ("c1-posts-exit", 4, 0)])
def test_a_reduction_that_loses_an_end_changes_what_a_dump_shows(name, seed, within):
    """The planted reduction bugs of tests/mutants.py that lose a stuck or ended state, or a run's
    collectives: ``observations`` differs reduced and unreduced on the spec the mutant's draw gives at
    ``within`` (the first such spec of the seed), and on none before it does it say otherwise."""
    import mutants

    m = next(x for x in mutants.MUTANTS if x.name == name)
    rng = random.Random(seed)
    for i in range(within + 1):
        d = mutants.draw(rng, i, m.draw)
        with mutants.planted(m):
            try:
                same = _shown_alike(d)
            except SpecError:
                continue
        if same is False:
            assert i == within
            return
    pytest.fail(f"mutant {name} not caught within {within + 1} specs of seed {seed}")


def test_the_follow_bench_runs():
    """bench/bench_flight_follow.py at a small size: a row followed, and refused once its last collective
    is changed."""
    import json
    import os
    import subprocess

    p = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_flight_follow.py"), "--rows", "mesh_2d:2x2:3"],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr
    rows = [json.loads(x) for x in p.stdout.splitlines()]
    assert [(r["run"], r["collectives"], r["complete"]) for r in rows] == [("conforms", 12, True), ("refused", 12, True)]


def test_nccl_names_are_the_spec_kinds():
    from lockstep.conformance.flight_follow import spec_kind

    assert [spec_kind(x) for x in ("_allgather_base", "all_gather_into_tensor_coalesced", "_reduce_scatter_base",
                                   "allreduce_coalesced", "all_reduce_barrier", "_broadcast_oop", "alltoall_base",
                                   "all_reduce")] == ["all_gather", "all_gather", "reduce_scatter", "all_reduce", "barrier",
                                                      "broadcast", "all_to_all", "all_reduce"]
    assert spec_kind(("_allgather_base", "all_gather")) == "all_gather"  # a coalesced seq of one kind


MESH_GROUPS = {"1": [0, 1], "2": [2, 3], "3": [0, 2], "4": [1, 3]}  # tp0, tp1, dp0, dp1 as the mesh spec builds them


def _nccl_mesh(tmp_path, crossed: bool) -> Path:
    """Hand-built NCCL dumps (pg_config lists every group's ranks, entries carry their state) of the 2 x 2
    mesh, its subgroups created without group_desc: a clean run of 2 steps, or the crossed order's hang
    (every rank stuck in its first collective, ``started``)."""
    import pickle

    cfg = {"0": {"name": "0", "desc": "default_pg", "ranks": "[0, 1, 2, 3]"},
           **{k: {"name": k, "desc": "undefined", "ranks": str(v)} for k, v in MESH_GROUPS.items()}}
    for r in range(4):
        tp, dp = str(1 + r // 2), str(3 + r % 2)
        order = [dp, tp] if crossed and r in (1, 2) else [tp, dp]
        seq, entries = {}, []
        for _step in range(1 if crossed else 2):
            for g in order:
                seq[g] = seq.get(g, 0) + 1
                entries.append({"record_id": len(entries), "pg_id": int(g), "process_group": [g, "undefined"],
                                "collective_seq_id": seq[g], "p2p_seq_id": 0, "op_id": len(entries), "is_p2p": False,
                                "profiling_name": "nccl:all_reduce", "input_sizes": [[4]], "output_sizes": [[4]],
                                "input_dtypes": ["Float"], "output_dtypes": ["Float"],
                                "state": "started" if crossed and len(entries) == 0 else "completed",
                                "time_created_ns": len(entries) + 1, "frames": []})
                if crossed:
                    break
            if crossed:
                break
        d = {"version": "2.4", "comm_lib_version": "2.21.5", "pg_config": cfg, "pg_status": {}, "entries": entries,
             "rank": r}
        (tmp_path / f"rank{r}.pkl").write_bytes(pickle.dumps(d))
    return tmp_path


@pytest.mark.parametrize("crossed", [False, True])
def test_nccl_dumps_of_the_mesh_name_their_groups_by_ranks(tmp_path, crossed):
    """On NCCL the dumps list each group's ranks, so unnamed subgroups ("1" to "4", desc "undefined")
    are the spec's by their members: the clean run follows the hardened mesh; the crossed order's hang
    is one DEADLOCK across the four groups and an instance of crossed-order alone."""
    from lockstep.conformance import flight
    from lockstep.spec.loading import load_spec

    user = (load_spec(str(ROOT / "examples" / "mesh_2d_spec.py")), {})
    rep = flight.check_dir(_nccl_mesh(tmp_path, crossed), user=user)
    assert {g: rep["groups"][g]["members"] for g in MESH_GROUPS} == MESH_GROUPS and rep["guessed_groups"] == []
    m = rep["spec_check"]
    if not crossed:
        assert rep["verdict"] == "CONSISTENT" and m["hardened"]["follows"] is True, m
        assert m["followed"]["collectives"] == {"tp0": 2, "tp1": 2, "dp0": 2, "dp1": 2}
        return
    assert [(v["verdict"], v["ranks"], v["groups"]) for v in rep["verdicts"]] == [
        ("DEADLOCK", [0, 1, 2, 3], ["1", "2", "3", "4"])], rep["verdicts"]
    assert [x["variant"] for x in m["matches"]] == ["crossed-order"] and m["hardened"]["follows"] is False
