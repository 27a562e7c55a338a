"""Flight Recorder dumps of a user's own protocol against the user's own spec (conformance/flight_user.py).

The worlds are real: 3 forked gloo ranks running the early-stopping training loop of
examples/early_stop_spec.py with plain torch.distributed calls (not lockstep's impl), each dumping its
Flight Recorder buffer as a user's job would.  With the planted bug one rank's own criterion fires
after the first epoch and it leaves the loop; the other two enter the next epoch's all_reduce and time
out.  ``lockstep conform --flight-recorder DUMPS --spec examples/early_stop_spec.py -p ranks=3`` must
name the spec's two local-decision variants and say that the hardened protocol never ends that way."""
import functools
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


def _early_stop(rank: int, bad: int | None, dump) -> None:
    """The training loop: per epoch an all_reduce of the gradients, then the rank's own early-stop
    criterion (the planted bug: it fires on rank ``bad`` alone, after epoch 0)."""
    import torch
    import torch.distributed as dist

    grads = torch.ones(4)
    for epoch in range(EPOCHS):
        dist.all_reduce(grads)
        if rank == bad and epoch == 0:
            break


def _agreed_stop(rank: int, bad: int | None, dump) -> None:
    """The hardened loop: per epoch the gradients' all_reduce, then every rank's stop flag all_reduced
    (max); nobody's criterion fires.  Dumped while it runs (in epoch 1, between its two all_reduces:
    ``mid``), at its end, and after one more broadcast that the spec never makes (``extra``)."""
    import torch
    import torch.distributed as dist

    grads = torch.ones(4)
    for epoch in range(EPOCHS):
        dist.all_reduce(grads)
        if epoch == 1:
            dump("mid")
        flag = torch.zeros(1, dtype=torch.int64)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item():
            break
    dump("end")
    dist.broadcast(grads, 0)
    dump("extra")


def _checkpoint(rank: int, bad: int | None, dump) -> None:
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


def _mesh(rank: int, bad: int | None, dump, named: bool = True) -> None:
    """examples/mesh_2d_spec.py at tp=2, dp=2, steps=2: every rank creates the four subgroups (in one
    order, as c10d requires; ``named``: with the spec's names as ``group_desc``), then per step
    all-reduces activations in its TP group and gradients in its DP group (with the planted crossed
    order on ranks 1 and 2: ``bad`` = 1), or rank 0's gradients on the default group (``bad`` = 2: no
    ``group=``)."""
    import datetime

    import torch
    import torch.distributed as dist

    def group(ranks, name):
        return dist.new_group(ranks, timeout=datetime.timedelta(seconds=2), group_desc=name if named else None)

    tp_groups = [group([0, 1], "tp0"), group([2, 3], "tp1")]
    dp_groups = [group([0, 2], "dp0"), group([1, 3], "dp1")]
    tp, dp = tp_groups[rank // 2], dp_groups[rank % 2]
    x = torch.ones(4)
    for _step in range(2):
        if bad == 1 and rank in (1, 2):
            dist.all_reduce(x, group=dp)
            dist.all_reduce(x, group=tp)
            continue
        dist.all_reduce(x, group=tp)
        dist.all_reduce(x, group=None if bad == 2 and rank == 0 else dp)


PROGRAMS = {"early_stop": _early_stop, "agreed_stop": _agreed_stop, "checkpoint": _checkpoint, "mesh": _mesh,
            "mesh_unnamed": functools.partial(_mesh, named=False)}


def _rank(rank: int, world: int, port: int, out: str, program: str, bad: int | None) -> None:
    """One rank: the program, then its Flight Recorder buffer dumped as a user's job would (into
    ``out``, or into ``out``/NAME where the program dumps by name)."""
    import datetime

    import torch
    import torch.distributed as dist

    from lockstep.tracefmt.plain import loads_plain

    def dump(name: str = "") -> None:
        obj = loads_plain(torch._C._distributed_c10d._dump_fr_trace())
        obj["rank"] = rank
        os.makedirs(os.path.join(out, name), exist_ok=True)
        with open(os.path.join(out, name, f"fr_rank_{rank}"), "wb") as f:
            pickle.dump(obj, f)

    code = 0
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=2))
        try:
            PROGRAMS[program](rank, bad, dump)
        except RuntimeError:  # a collective its partners never joined (or joined with another) timed out
            pass
        if program != "agreed_stop":
            dump()
    except BaseException:  # noqa: BLE001 - the test sees a missing dump
        code = 1
    os._exit(code)


def _world(out: Path, bad: int | None, program: str = "early_stop", world: int = WORLD, buffer: int = 2000) -> Path:
    """Fork the world, wait for it under DEADLINE, kill what is left by pid."""
    import multiprocessing as mp

    import torch.distributed  # noqa: F401 - imported once here, not in every forked rank

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out.mkdir()
    was = os.environ.get("TORCH_FR_BUFFER_SIZE")
    os.environ["TORCH_FR_BUFFER_SIZE"] = str(buffer)  # read by each rank's process group when it starts
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
    for d in [out] if program != "agreed_stop" else [out / x for x in ("mid", "end", "extra")]:
        assert sorted(os.listdir(d), key=lambda f: int(f.rsplit("_", 1)[1])) == [f"fr_rank_{r}" for r in range(world)], \
            os.listdir(d)
    return out


def conform(*args):
    return subprocess.run([sys.executable, "-m", "lockstep", "conform", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def hung(tmp_path_factory):
    return _world(tmp_path_factory.mktemp("user-fr") / "hung", bad=WORLD - 1)


def test_a_hang_of_a_users_protocol_is_an_instance_of_its_planted_bug(hung):
    """Rank 2 left after epoch 0; ranks 0 and 1 entered all_reduce #2 and waited.  The spec's shortest
    counterexample ends otherwise (two ranks stop, one waits): the variants are searched for a run
    that makes the recorded collective (all_reduce #1) and then ends like the dumps, up to the
    symmetric ranks, so both local-decision variants explain it; the hardened protocol (the decision
    all_reduced) has no such run."""
    p = conform("--flight-recorder", str(hung), "--spec", EARLY_STOP, "-p", "ranks=3")
    assert p.returncode == 1, p.stdout + p.stderr  # MISMATCH: the dumps' collectives do not all match
    assert "ranks 0,1 entered all_reduce #2 on world; rank 2 never did" in p.stdout, p.stdout
    assert ("against spec early-stop at ranks=3, epochs=3, patience=1 (world 3): 2 planted bug(s) run the recorded "
            "collectives and end this way") in p.stdout
    assert "consistent with local-decision: STRANDED" in p.stdout
    assert "consistent with local-decision-teardown: STRANDED" in p.stdout
    assert "the hardened early-stop never runs them and ends this way" in p.stdout
    j = json.loads(conform("--flight-recorder", str(hung), "--spec", EARLY_STOP, "-p", "ranks=3", "--json").stdout)
    m = j["spec_check"]
    assert j["verdict"] == "MISMATCH" and m["spec"] == "early-stop" and m["params"]["ranks"] == 3
    assert m["projection"] == [{"kind": "missing_ranks", "group": "world", "op": ["all_reduce"], "present": [0, 1],
                                "missing": [2]}]
    assert m["followed"] == {"collectives": {"world": 1}, "mid_run": False}
    assert sorted(x["variant"] for x in m["matches"]) == ["local-decision", "local-decision-teardown"]
    h = m["hardened"]
    assert h["ends_this_way"] is False and h["follows"] is False and h["complete"] is True
    assert m["symmetric_ranks"] == [0, 1, 2]


@pytest.mark.slow  # 9 forked ranks twice, then every variant searched at 9 ranks
def test_nine_rank_runs_of_a_users_protocol(tmp_path):
    """At a size users run: 9 ranks.  A hang (rank 8 stops early, ranks 0-7 wait in all_reduce #2) is
    an instance of the local-decision variants; a clean run of the hardened loop follows the hardened
    spec to its end."""
    d = _world(tmp_path / "nine", bad=8, world=9)
    j = json.loads(conform("--flight-recorder", str(d), "--spec", EARLY_STOP, "-p", "ranks=9", "--json").stdout)
    m = j["spec_check"]
    assert m["projection"] == [{"kind": "missing_ranks", "group": "world", "op": ["all_reduce"],
                                "present": list(range(8)), "missing": [8]}]
    assert sorted(x["variant"] for x in m["matches"]) == ["local-decision", "local-decision-teardown"]
    assert m["hardened"]["follows"] is False and m["hardened"]["complete"] is True
    d = _world(tmp_path / "nine-clean", bad=None, program="agreed_stop", world=9)
    p = conform("--flight-recorder", str(d / "end"), "--spec", EARLY_STOP, "-p", "ranks=9")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "the run follows the hardened early-stop: its 6 collective(s) and its end" in p.stdout, p.stdout


def test_the_spec_must_have_the_dumps_world(hung):
    """The spec's default is 2 ranks; the dumps come from 3: one line naming -p, exit 2.  An unknown
    parameter is a usage error before any dump is read; -p or --mid-run without a user spec too."""
    p = conform("--flight-recorder", str(hung), "--spec", EARLY_STOP)
    assert p.returncode == 2 and "has 2 ranks, the dumps come from a world of 3: give -p NAME=VALUE" in p.stderr, p.stderr
    p = conform("--flight-recorder", str(hung), "--spec", EARLY_STOP, "-p", "rank=3")
    assert p.returncode == 2 and "unknown parameter 'rank'" in p.stderr and "ranks" in p.stderr
    p = conform("--flight-recorder", str(hung), "-p", "ranks=3")
    assert p.returncode == 2 and "-p applies to --flight-recorder with a user spec" in p.stderr
    p = conform("--flight-recorder", str(hung), "--mid-run")
    assert p.returncode == 2 and "--mid-run applies to --flight-recorder with a user spec" in p.stderr


@pytest.fixture(scope="module")
def agreed(tmp_path_factory):
    """A clean run of the hardened loop, dumped after 2 epochs (mid), at its end, and after one more
    broadcast (extra)."""
    return _world(tmp_path_factory.mktemp("user-fr") / "agreed", bad=None, program="agreed_stop")


def test_a_clean_run_that_follows_the_hardened_spec_conforms(agreed):
    """Its 6 all_reduces (gradients and stop flag, 3 epochs) are a run of the hardened spec that ends
    where the run ended."""
    p = conform("--flight-recorder", str(agreed / "end"), "--spec", EARLY_STOP, "-p", "ranks=3")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "(world 3): the run follows the hardened early-stop: its 6 collective(s) and its end" in p.stdout, p.stdout
    assert p.stdout.rstrip().endswith("CONSISTENT")
    j = json.loads(conform("--flight-recorder", str(agreed / "end"), "--spec", EARLY_STOP, "-p", "ranks=3",
                           "--json").stdout)
    assert j["verdict"] == "CONSISTENT" and j["ok"] is True
    m = j["spec_check"]
    assert m["followed"] == {"collectives": {"world": 6}, "mid_run": False} and m["projection"] == []
    assert m["hardened"]["follows"] is True and m["hardened"]["done"] == 6 and "followed_by" not in m


def test_dumps_taken_mid_run_are_followed_as_a_prefix_only_when_said(agreed):
    """In epoch 1, after its gradient all_reduce (3 all_reduces), the run went on: as a finished run it
    does not conform (the hardened spec owes the stop flag's all_reduce there: named, with the flag
    that says otherwise); with --mid-run it does.  (After 4 it would conform as it is: the spec's ranks
    may all stop after epoch 1, and the flags' values are not recorded.)"""
    p = conform("--flight-recorder", str(agreed / "mid"), "--spec", EARLY_STOP, "-p", "ranks=3")
    assert p.returncode == 1, p.stdout + p.stderr
    assert "DOES_NOT_CONFORM: the run's collectives do not follow the hardened early-stop (below)" in p.stdout
    assert ("it runs all 3 recorded collective(s), then does not end as the run did: it still runs all_reduce on "
            "world (dumps taken before the run ended? --mid-run follows them as a prefix)") in p.stdout, p.stdout
    p = conform("--flight-recorder", str(agreed / "mid"), "--spec", EARLY_STOP, "-p", "ranks=3", "--mid-run")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "the run follows the hardened early-stop: its 3 collective(s) as a prefix (--mid-run)" in p.stdout


def test_a_collective_the_spec_never_makes_does_not_conform(agreed):
    """One broadcast after the loop: the spec's ranks have finished there.  The report names the
    recorded collective (#7 on world, broadcast) and what the spec offered instead (nothing)."""
    p = conform("--flight-recorder", str(agreed / "extra"), "--spec", EARLY_STOP, "-p", "ranks=3")
    assert p.returncode == 1, p.stdout + p.stderr
    assert ("it runs 6 recorded collective(s), then not collective #7 on world (broadcast): it offers no collective "
            "there") in p.stdout, p.stdout
    j = json.loads(conform("--flight-recorder", str(agreed / "extra"), "--spec", EARLY_STOP, "-p", "ranks=3",
                           "--json").stdout)
    assert j["verdict"] == "DOES_NOT_CONFORM" and j["ok"] is False
    assert j["spec_check"]["hardened"]["left_at"] == {"group": "world", "index": 6, "op": "broadcast", "end": False,
                                                      "offered": []}


def test_a_clean_run_of_a_planted_bug_follows_its_variant(tmp_path):
    """The local-decision loop (3 gradient all_reduces, no agreement) did not hang this time: it is no
    run of the hardened spec (which all_reduces the stop flag every epoch), and the report says which
    planted bugs it is a run of."""
    d = _world(tmp_path / "clean", bad=None)
    p = conform("--flight-recorder", str(d), "--spec", EARLY_STOP, "-p", "ranks=3")
    assert p.returncode == 1, p.stdout + p.stderr
    assert "the run does not follow the hardened early-stop (3 collective(s) and its end" in p.stdout, p.stdout
    assert "it follows local-decision instead, a planted bug: STRANDED" in p.stdout
    assert "it follows local-decision-teardown instead, a planted bug: STRANDED" in p.stdout


def test_a_wrapped_ring_buffer_is_compared_by_its_end_only(tmp_path):
    """Ring buffers of one entry: ranks 0 and 1 keep all_reduce #2 (where they hang) and lost #1.  The
    run is not followed from its start (the report says why); its end is compared as the dumps show
    it, and is still the local-decision variants'."""
    d = _world(tmp_path / "wrapped", bad=WORLD - 1, buffer=1)
    j = json.loads(conform("--flight-recorder", str(d), "--spec", EARLY_STOP, "-p", "ranks=3", "--json").stdout)
    m = j["spec_check"]
    assert "a ring buffer lost the first collectives of world" in m["followed"]["skipped"], m
    assert sorted(x["variant"] for x in m["matches"]) == ["local-decision", "local-decision-teardown"]
    assert m["hardened"] == {"ends_this_way": False, "complete": True, "states": m["hardened"]["states"]}
    p = conform("--flight-recorder", str(d), "--spec", EARLY_STOP, "-p", "ranks=3")
    assert "2 planted bug(s) can end this way (the collective projection; symmetric ranks 0-2 compared by count)" \
        in p.stdout, p.stdout
    assert "the run is not followed from its start, only its end compared" in p.stdout


MESH = str(ROOT / "examples" / "mesh_2d_spec.py")


@pytest.mark.parametrize("bad,variant,verdict", [(None, None, None), (1, "crossed-order", "DEADLOCK"),
                                                 (2, "default-group", "DEADLOCK")])
def test_a_two_dimensional_mesh_on_five_process_groups(tmp_path, bad, variant, verdict):
    """A 2x2 TP x DP mesh on four subgroups named as the spec names them (``group_desc``: gloo's dumps do
    not list a group's members, the spec's are taken for the groups it names).  A clean run follows the hardened mesh through its 8
    collectives; the crossed order (ranks 1 and 2 reduce gradients first) hangs in a cycle of four
    waits, one per group; a gradient all_reduce without ``group=`` hangs rank 0 in the world group and
    its peers in their subgroups.  Each hang is an instance of its variant alone, after the collectives
    the run made."""
    d = _world(tmp_path / "mesh", bad=bad, program="mesh", world=4)
    j = json.loads(conform("--flight-recorder", str(d), "--spec", MESH, "--json").stdout)
    m = j["spec_check"]
    if variant is None:
        assert j["verdict"] == "CONSISTENT", j
        assert m["hardened"]["follows"] is True
        assert m["followed"]["collectives"] == {"tp0": 2, "tp1": 2, "dp0": 2, "dp1": 2}
        return
    assert j["verdict"] == "MISMATCH" and [x["variant"] for x in m["matches"]] == [variant], m
    assert m["matches"][0]["verdict"] == verdict and m["hardened"]["follows"] is False
    # the dumps alone show the cycle of waits: every rank waits for one that waits in another group
    assert [(v["verdict"], v["ranks"]) for v in j["verdicts"]] == [("DEADLOCK", [0, 1, 2, 3])], j["verdicts"]
    if variant == "crossed-order":  # the cycle: each group has one rank in and one out
        assert sorted((x["group"], x["present"], x["missing"]) for x in m["projection"]) == [
            ("dp0", [2], [0]), ("dp1", [1], [3]), ("tp0", [0], [1]), ("tp1", [3], [2])]
    else:
        assert {"kind": "missing_ranks", "group": "world", "op": ["all_reduce"], "present": [0], "missing": [1, 2, 3]} \
            in m["projection"], m["projection"]


def test_unnamed_gloo_subgroups_hide_their_members(tmp_path):
    """The crossed-order hang with subgroups created without ``group_desc``: gloo's dumps name them "1"
    to "4" and list no members, and each holds the one collective its one waiting rank entered.  Alone,
    the dumps look consistent, and the report says why that proves nothing (and guesses no lockstep
    topology for a job of the user's own); against the spec the groups cannot be matched:
    INCONCLUSIVE (exit 3), naming the fix."""
    d = _world(tmp_path / "mesh", bad=1, program="mesh_unnamed", world=4)
    p = conform("--flight-recorder", str(d))
    assert p.returncode == 0 and "note: the dumps do not list the members of group(s) 1, 2, 3, 4 (gloo's never do)" \
        in p.stdout, p.stdout
    # a job of the user's own: no lockstep topology is guessed for it
    assert "no spec: the dumps carry no lockstep run and no manifest lies beside them: a job of your own; give " \
           "--spec PATH.py -p NAME=VALUE to hold it against your protocol" in p.stdout, p.stdout
    p = conform("--flight-recorder", str(d), "--spec", MESH)
    assert p.returncode == 3, p.stdout + p.stderr
    assert "no group of the spec has its ranks [0] (gloo's dumps name a group's members only by the dumps that hold its " \
           "collectives: name the run's groups as the spec does (new_group(ranks, group_desc=NAME)))" in p.stdout, p.stdout
    assert p.stdout.rstrip().endswith("INCONCLUSIVE: the dumps do not say which ranks are in a group the spec must be "
                                      "matched with")


def test_a_collective_mismatch_of_a_users_protocol_is_its_variant(tmp_path):
    """A 4-rank checkpoint save whose rank 2 write failed: rank 2 enters the cleanup barrier while the
    others all_reduce their write flags (collective #1 of the world differs in type).  Only
    cleanup-barrier-first of the checkpoint spec's three planted bugs ends in that mismatch; the
    hardened save never does."""
    d = _world(tmp_path / "ckpt", bad=2, program="checkpoint", world=4)
    p = conform("--flight-recorder", str(d), "--spec", CHECKPOINT, "-p", "ranks=4")
    assert p.returncode == 1, p.stdout + p.stderr
    assert 'first mismatch at #1: type {"0": "all_reduce", "2": "barrier"}' in p.stdout, p.stdout
    assert "1 planted bug(s) run the recorded collectives and end this way" in p.stdout
    assert "this hang is an instance of cleanup-barrier-first: COLLECTIVE_MISMATCH" in p.stdout
    assert "the hardened checkpoint-commit never runs them and ends this way" in p.stdout
