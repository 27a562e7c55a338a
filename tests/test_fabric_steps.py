"""Non-blocking fabric steps outside the checker: the state-space diagram of a user spec that uses
isend/irecv/wait and batch_isend_irecv (drawn with the real ``dot``), and the conformance replay taking
the fabric's completion steps as internal steps."""
import shutil
import subprocess
import sys
import textwrap

import pytest

from lockstep.conformance import replay as replay_mod
from lockstep.conformance.mapping import Adapter, Mapped, Obs
from lockstep.conformance.replay import Replayer
from lockstep.diagrams.statespace import action_label, explore, full_graph, state_label, summary_graph
from lockstep.spec.fabric import Group, batch_isend_irecv, irecv, isend, recv, send, wait
from lockstep.spec.machine import DONE, ActorDef, Protocol, Role

SIG = ("float32", (4,))

SPEC_FILE = '''
"""Two ranks exchange with isend/irecv and wait, then once more with batch_isend_irecv."""
from lockstep.spec.fabric import Group, batch_isend_irecv, irecv, isend, recv, send, wait
from lockstep.spec.machine import DONE, ActorDef, Protocol, Role
from lockstep.spec.registry import SpecInfo

SIG = ("float32", (4,))


def build(params, variant, backend):
    roles = []
    for r in (0, 1):
        peer = 1 - r
        R = Role(f"peer{r}", "POST", {"got": None, "pair": None})
        R.op("post_recv", "POST", "POSTED", lambda c, peer=peer: irecv("rx", "world", peer, SIG))
        R.op("post_send", "POSTED", "WAIT_RX", lambda c, peer=peer, r=r: isend("tx", "world", peer, SIG, data=r))
        R.op("wait_rx", "WAIT_RX", "WAIT_TX", lambda c: wait("rx"), after=lambda c, d: c.set(got=d))
        R.op("wait_tx", "WAIT_TX", "BATCH", lambda c: wait("tx"))
        R.op("batch", "BATCH", "WAIT_B", lambda c, peer=peer, r=r: batch_isend_irecv(
            "b", [send("world", peer, SIG, data=10 + r), recv("world", peer, SIG)]))
        R.op("wait_batch", "WAIT_B", DONE, lambda c: wait("b"), after=lambda c, d: c.set(pair=d))
        roles.append(R)
    return Protocol("nb", groups={"world": Group("world", (0, 1))}, backend=backend,
                    actors=[ActorDef(0, "main", roles[0]), ActorDef(1, "main", roles[1])])


SPEC = SpecInfo(name="nb", description="isend/irecv/wait, then batch_isend_irecv", params={}, build=build, variants={})
'''


def _load_nb(tmp_path):
    import importlib.util

    f = tmp_path / "nb_spec.py"
    f.write_text(textwrap.dedent(SPEC_FILE))
    spec = importlib.util.spec_from_file_location("nb_spec_test", f)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return f, mod.build({}, None, "gloo")


def test_statespace_labels_non_blocking_steps(tmp_path):
    _, model = _load_nb(tmp_path)
    g = explore(model)
    assert not g.truncated and g.ends and not g.stuck
    labels = {action_label(model, g.states[i], a) for i, _j, a, _v in g.edges}
    assert "rank0,rank1 send/recv completes (world)" in labels      # an isend meets an irecv
    assert "rank0 wait_rx returns (wait rx)" in labels
    assert "rank1 wait_batch returns (wait b)" in labels
    assert not any(lab.split()[0] in ("P", "M", "w", "b", "r") for lab in labels)
    # states show what sits in the fabric
    text = "\n".join(state_label(model, s) for s in g.states)
    assert "rank0 posted rx: recv" in text and "posted b: send ✓" in text
    # the role diagrams learn what a post issues
    assert g.op_kinds[("peer0", "batch")] == {"post send world dst=1", "post recv world src=1"}
    # the summary attributes a wait's return to the waiting transition, not to "process exits"
    from lockstep.diagrams.statespace import collapse

    _roles, _n, _b, edges = collapse(model, g)
    assert edges[("peer0", "WAIT_RX", "WAIT_TX")] and "process exits" not in edges[("peer0", "WAIT_RX", "WAIT_TX")]
    assert set(edges[("peer0", "WAIT_B", "DONE")]) == {"wait_batch"}
    summary_graph(model, g, "nb")


@pytest.mark.slow  # the CLI render in a subprocess: ~5 s
@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz dot not installed")
def test_render_a_user_spec_with_non_blocking_ops_through_dot(tmp_path):
    f, model = _load_nb(tmp_path)
    g = explore(model)
    svg = full_graph(model, g, "nb").pipe(format="svg").decode()
    assert "<svg" in svg and "send/recv completes" in svg and "wait_batch returns" in svg
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "lockstep", "render", str(f), "-o", str(out)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    ss = (out / "statespace.svg").read_text()
    assert "send/recv completes" in ss and "returns (wait rx)" in ss
    assert "post send world dst=1" in (out / "roles" / "peer0.gv").read_text()


# ------------------------------------------------------------------------------------- replay
def _nb_observed():
    """The nb exchange with an observable local step after each wait (what a trace would record)."""
    roles = []
    for r in (0, 1):
        peer = 1 - r
        R = Role(f"peer{r}", "POST", {"got": None, "pair": None})
        R.op("post_recv", "POST", "POSTED", lambda c, peer=peer: irecv("rx", "world", peer, SIG))
        R.op("post_send", "POSTED", "WAIT_RX", lambda c, peer=peer, r=r: isend("tx", "world", peer, SIG, data=r))
        R.op("wait_rx", "WAIT_RX", "USE", lambda c: wait("rx"), after=lambda c, d: c.set(got=d))
        R.local("use_rx", "USE", "WAIT_TX", event="used")
        R.op("wait_tx", "WAIT_TX", "BATCH", lambda c: wait("tx"))
        R.op("batch", "BATCH", "WAIT_B", lambda c, peer=peer, r=r: batch_isend_irecv(
            "b", [send("world", peer, SIG, data=10 + r), recv("world", peer, SIG)]))
        R.op("wait_batch", "WAIT_B", "END", lambda c: wait("b"), after=lambda c, d: c.set(pair=d))
        R.local("finish", "END", DONE, event="finished")
        roles.append(R)
    return Protocol("nb", groups={"world": Group("world", (0, 1))},
                    actors=[ActorDef(0, "main", roles[0]), ActorDef(1, "main", roles[1])])


class _NbAdapter(Adapter):
    family = "nb"
    topologies = ("nb",)
    observed_table = {"peer0": frozenset({"use_rx", "finish"}), "peer1": frozenset({"use_rx", "finish"})}


def _trace(order0=("use_rx", "finish")):
    per = {}
    for r in (0, 1):
        names = order0 if r == 0 else ("use_rx", "finish")
        obs = [Obs(frozenset({n}), r, "main", [k], float(k + 1), label=n) for k, n in enumerate(names)]
        obs.append(Obs(frozenset(), r, "main", [len(names)], float(len(names) + 1), kind="exit", how="clean", label="exit"))
        per[(r, "main")] = obs
    return Mapped("nb", "nb", per)


def test_replay_takes_fabric_completions_as_internal_steps(monkeypatch):
    monkeypatch.setattr(replay_mod, "for_topology", lambda topology: _NbAdapter())
    res = Replayer(_nb_observed(), _trace()).run()
    assert res.conforms and res.explained == res.observables == 6
    # the end state: both exchanges went through the fabric (isend/irecv, then the batch)
    end = res.end_state
    assert [a.vars.got for a in end.actors] == [1, 0] and [a.vars.pair for a in end.actors] == [(None, 11), (None, 10)]
    # a trace the spec cannot explain: rank 0 finishes before it uses what it received
    bad = Replayer(_nb_observed(), _trace(("finish", "use_rx"))).run()
    assert not bad.conforms
    (u,) = [u for u in bad.unexplained if u.rank == 0]
    assert u.line == 1 and u.expected == ["finish"] and u.spec_state == "USE"
