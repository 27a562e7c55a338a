"""Flight Recorder dumps of a user's own protocol against the user's own spec (conformance/flight_user.py).

The worlds are real: 3 forked gloo ranks running the early-stopping training loop of
examples/early_stop_spec.py with plain torch.distributed calls (not lockstep's impl), each dumping its
Flight Recorder buffer as a user's job would.  With the planted bug one rank's own criterion fires
after the first epoch and it leaves the loop; the other two enter the next epoch's all_reduce and time
out.  ``lockstep conform --flight-recorder DUMPS --spec examples/early_stop_spec.py -p ranks=3`` must
name the spec's two local-decision variants and say that the hardened protocol never ends that way."""
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.multirank  # real gloo worlds: serial (tests/conftest.py)

ROOT = Path(__file__).resolve().parents[2]
EARLY_STOP = str(ROOT / "examples" / "early_stop_spec.py")
WORLD, EPOCHS, DEADLINE = 3, 3, 40.0
CHECKPOINT = str(ROOT / "examples" / "checkpoint_commit_spec.py")


def _early_stop(rank: int, bad: int | None) -> None:
    """The training loop: per epoch an all_reduce of the gradients, then the rank's own early-stop
    criterion (the planted bug: it fires on rank ``bad`` alone, after epoch 0)."""
    import torch
    import torch.distributed as dist

    grads = torch.ones(4)
    for epoch in range(EPOCHS):
        dist.all_reduce(grads)
        if rank == bad and epoch == 0:
            break


def _checkpoint(rank: int, bad: int | None) -> None:
    """examples/checkpoint_commit_spec.py's save: agree on the write flags (all_reduce max), rank 0
    broadcasts the outcome; with the planted bug the rank whose write failed (``bad``) goes to the
    cleanup barrier first."""
    import torch
    import torch.distributed as dist

    if rank == bad:
        dist.barrier()
        return
    flag = torch.zeros(1, dtype=torch.int64)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    dist.broadcast(flag, 0)


PROGRAMS = {"early_stop": _early_stop, "checkpoint": _checkpoint}


def _rank(rank: int, world: int, port: int, out: str, program: str, bad: int | None) -> None:
    """One rank: the program, then its Flight Recorder buffer dumped as a user's job would."""
    import datetime

    import torch
    import torch.distributed as dist

    from lockstep.tracefmt.plain import loads_plain

    code = 0
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=2))
        try:
            PROGRAMS[program](rank, bad)
        except RuntimeError:  # a collective its partners never joined (or joined with another) timed out
            pass
        obj = loads_plain(torch._C._distributed_c10d._dump_fr_trace())
        obj["rank"] = rank
        with open(os.path.join(out, f"fr_rank_{rank}"), "wb") as f:
            pickle.dump(obj, f)
    except BaseException:  # noqa: BLE001 - the test sees a missing dump
        code = 1
    os._exit(code)


def _world(out: Path, bad: int | None, program: str = "early_stop", world: int = WORLD) -> Path:
    """Fork the world, wait for it under DEADLINE, kill what is left by pid."""
    import multiprocessing as mp

    import torch.distributed  # noqa: F401 - imported once here, not in every forked rank

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out.mkdir()
    was = os.environ.get("TORCH_FR_BUFFER_SIZE")
    os.environ["TORCH_FR_BUFFER_SIZE"] = "2000"  # read by each rank's process group when it starts
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_rank, args=(r, world, port, str(out), program, bad)) for r in range(world)]
    try:
        for p in procs:
            p.start()
    finally:
        if was is None:
            del os.environ["TORCH_FR_BUFFER_SIZE"]
        else:
            os.environ["TORCH_FR_BUFFER_SIZE"] = was
    end = time.monotonic() + DEADLINE
    for p in procs:
        p.join(max(0.0, end - time.monotonic()))
    left = [p.pid for p in procs if p.is_alive()]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"ranks {left} outlived the {DEADLINE} s deadline"
    assert sorted(os.listdir(out), key=lambda f: int(f.rsplit("_", 1)[1])) == [f"fr_rank_{r}" for r in range(world)], \
        os.listdir(out)
    return out


def conform(*args):
    return subprocess.run([sys.executable, "-m", "lockstep", "conform", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def hung(tmp_path_factory):
    return _world(tmp_path_factory.mktemp("user-fr") / "hung", bad=WORLD - 1)


def test_a_hang_of_a_users_protocol_is_an_instance_of_its_planted_bug(hung):
    """Rank 2 left after epoch 0; ranks 0 and 1 entered all_reduce #2 and waited.  The spec's shortest
    counterexample ends otherwise (two ranks stop, one waits): the variants are searched for an end
    like the dumps', up to the symmetric ranks, so both local-decision variants explain it; the
    hardened protocol (the decision all_reduced) has no such end."""
    p = conform("--flight-recorder", str(hung), "--spec", EARLY_STOP, "-p", "ranks=3")
    assert p.returncode == 1, p.stdout + p.stderr  # MISMATCH: the dumps' collectives do not all match
    assert "ranks 0,1 entered all_reduce #2 on world; rank 2 never did" in p.stdout, p.stdout
    assert "against spec early-stop at ranks=3, epochs=3, patience=1 (world 3): 2 planted bug(s) can end this way" in p.stdout
    assert "consistent with local-decision: STRANDED" in p.stdout
    assert "consistent with local-decision-teardown: STRANDED" in p.stdout
    assert "the hardened early-stop never ends this way" in p.stdout
    j = json.loads(conform("--flight-recorder", str(hung), "--spec", EARLY_STOP, "-p", "ranks=3", "--json").stdout)
    m = j["spec_check"]
    assert j["verdict"] == "MISMATCH" and m["spec"] == "early-stop" and m["params"]["ranks"] == 3
    assert m["projection"] == [{"kind": "missing_ranks", "group": "world", "op": ["all_reduce"], "present": [0, 1],
                                "missing": [2]}]
    assert sorted(x["variant"] for x in m["matches"]) == ["local-decision", "local-decision-teardown"]
    assert m["hardened"]["ends_this_way"] is False and m["hardened"]["complete"] is True
    assert m["symmetric_ranks"] == [0, 1, 2]


@pytest.mark.slow  # 9 forked ranks, then every variant searched at 9 ranks
def test_a_nine_rank_hang_of_a_users_protocol(tmp_path):
    """At a size users run: 9 ranks, rank 8 stops early, ranks 0-7 wait in all_reduce #2."""
    d = _world(tmp_path / "nine", bad=8, world=9)
    j = json.loads(conform("--flight-recorder", str(d), "--spec", EARLY_STOP, "-p", "ranks=9", "--json").stdout)
    m = j["spec_check"]
    assert m["projection"] == [{"kind": "missing_ranks", "group": "world", "op": ["all_reduce"],
                                "present": list(range(8)), "missing": [8]}]
    assert sorted(x["variant"] for x in m["matches"]) == ["local-decision", "local-decision-teardown"]
    assert m["hardened"] == {"ends_this_way": False, "complete": True, "states": m["hardened"]["states"]}


def test_the_spec_must_have_the_dumps_world(hung):
    """The spec's default is 2 ranks; the dumps come from 3: one line naming -p, exit 2.  An unknown
    parameter is a usage error before any dump is read; -p without a user spec too."""
    p = conform("--flight-recorder", str(hung), "--spec", EARLY_STOP)
    assert p.returncode == 2 and "has 2 ranks, the dumps come from a world of 3: give -p NAME=VALUE" in p.stderr, p.stderr
    p = conform("--flight-recorder", str(hung), "--spec", EARLY_STOP, "-p", "rank=3")
    assert p.returncode == 2 and "unknown parameter 'rank'" in p.stderr and "ranks" in p.stderr
    p = conform("--flight-recorder", str(hung), "-p", "ranks=3")
    assert p.returncode == 2 and "-p applies to --flight-recorder with a user spec" in p.stderr


def test_a_clean_run_of_a_users_protocol_has_nothing_to_explain(tmp_path):
    d = _world(tmp_path / "clean", bad=None)
    p = conform("--flight-recorder", str(d), "--spec", EARLY_STOP, "-p", "ranks=3")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "CONSISTENT" in p.stdout and "(world 3): no failure to explain" in p.stdout


def test_a_collective_mismatch_of_a_users_protocol_is_its_variant(tmp_path):
    """A 4-rank checkpoint save whose rank 2 write failed: rank 2 enters the cleanup barrier while the
    others all_reduce their write flags (collective #1 of the world differs in type).  Only
    cleanup-barrier-first of the checkpoint spec's three planted bugs ends in that mismatch; the
    hardened save never does."""
    d = _world(tmp_path / "ckpt", bad=2, program="checkpoint", world=4)
    p = conform("--flight-recorder", str(d), "--spec", CHECKPOINT, "-p", "ranks=4")
    assert p.returncode == 1, p.stdout + p.stderr
    assert 'first mismatch at #1: type {"0": "all_reduce", "2": "barrier"}' in p.stdout, p.stdout
    assert "1 planted bug(s) can end this way (the collective projection; symmetric ranks 1-3 compared by count)" in p.stdout
    assert "this hang is an instance of cleanup-barrier-first: COLLECTIVE_MISMATCH" in p.stdout
    assert "the hardened checkpoint-commit never ends this way" in p.stdout


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


@pytest.mark.parametrize("example", ["hello_spec", "early_stop_spec", "loss_scaler_spec", "generate_spec",
                                     "main_first_spec", "checkpoint_commit_spec"])
def test_every_variant_explains_dumps_of_its_own_counterexample(example):
    """Self-consistency over the shipped examples: each variant's counterexample that ends in a stuck
    collective or a collective mismatch, written as the dumps of that end would show it (per stuck
    group: who entered the collective and who never did; or the kinds that met), is explained by that
    variant, at its parameters, and the hardened protocol (which HOLDS) never ends that way."""
    from lockstep.conformance import flight_user
    from lockstep.model.checker import check
    from lockstep.spec.loading import build_model, load_spec
    from lockstep.spec.registry import pick_backend, resolve

    info = load_spec(str(ROOT / "examples" / f"{example}.py"))
    raw = {"ranks": "5"} if "ranks" in info.params else {}
    tried = 0
    for variant in info.variants:
        _, params = resolve(info, variant, raw)
        model = build_model(info, params, variant, pick_backend(info, variant, None))
        res = check(model, liveness=False)
        groups = {name: frozenset(g.ranks) for name, g in model.groups.items()}
        names = {m: n for n, m in groups.items()}
        if res.verdict == "COLLECTIVE_MISMATCH" and res.detail.get("group") in groups:
            members = groups[res.detail["group"]]
            dumps = {names[members]: {"members": sorted(members), "first_mismatch": {
                "kind": "type" if len({c.split()[0] for c in res.detail["calls"].values()}) > 1 else "size",
                "op": next(iter(res.detail["calls"].values())).split()[0],
                "ranks": {str(r): c.split()[0] for r, c in res.detail["calls"].items()}}}}
        else:
            shapes = flight_user._blocked_shapes(res.waiting, groups)
            if not shapes:
                continue
            dumps = {names[s[1]]: {"members": sorted(s[1]), "first_mismatch": {
                "kind": "missing_ranks", "op": sorted(s[2])[0], "present": sorted(s[3]),
                "missing": sorted(s[1] - s[3])}} for s in shapes}
        world = len({a.rank for a in model.actors})
        m = flight_user.match({"world": world, "ranks": list(range(world)), "groups": dumps}, info, raw)
        assert variant in [x["variant"] for x in m["matches"]], (variant, res.waiting, res.detail, m)
        hardened = check(build_model(info, resolve(info, None, raw)[1], None, pick_backend(info, None, None)),
                         liveness=False)
        if hardened.verdict == "HOLDS":
            assert m["hardened"]["ends_this_way"] is False, (variant, m)
        tried += 1
    assert tried, f"{example}: no variant ends in a collective"
