"""The examples under examples/ through the CLI, as a user runs them: every hardened example HOLDS,
every planted bug yields its documented class, and the text counterexample explains itself (choices,
full rank lists, and no "shortest" claim under reduction)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from lockstep.cli.main import cli
from lockstep.spec.loading import load_spec

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FILES = sorted(EXAMPLES.glob("*_spec.py"))
CASES = [(f, v) for f in FILES for v in [None, *load_spec(str(f)).variants]]


def check(*args):
    r = CliRunner().invoke(cli, ["check", *map(str, args)], catch_exceptions=False)
    return r.exit_code, r.stdout, r.stderr


def test_there_are_at_least_three_incident_examples_with_cited_sources():
    incidents = [f for f in FILES if f.name != "hello_spec.py"]
    assert len(incidents) >= 3
    for f in incidents:
        info = load_spec(str(f))
        assert info.variants, f"{f.name}: an incident example plants its bug as a variant"
        assert "https://github.com/" in f.read_text(), f"{f.name}: cite the public incident"


@pytest.mark.parametrize("path, variant", CASES, ids=[f"{f.name}::{v or 'hardened'}" for f, v in CASES])
def test_example_through_the_cli(path, variant):
    info = load_spec(str(path))
    args = [path, "--json"] + (["--variant", variant] if variant else [])
    code, out, err = check(*args)
    d = json.loads(out)
    expected = info.variants[variant].expected if variant else info.hardened_expected
    assert d["verdict"] in expected, f"{path.name} {variant}: {d['verdict']}: {d['message']}"
    assert code == (0 if d["verdict"] == "HOLDS" else 1)
    if variant:
        assert d["counterexample"], "a violation comes with a counterexample"
    # the same verdict class without reductions (the reductions the examples declare are sound)
    code2, out2, _ = check(*args, "--no-reduction", "--no-liveness")
    assert json.loads(out2)["verdict"] == d["verdict"]


def test_hello_is_twelve_lines_of_protocol():
    """The guide's first example stays small: the code between the imports and SPEC."""
    src = (EXAMPLES / "hello_spec.py").read_text().splitlines()
    body = [ln for ln in src[src.index("def build(params, variant, backend):"):] if ln.strip()]
    assert len(body) <= 12, len(body)


def test_backend_decides_fail_fast_or_stranded():
    """The guide's end-state example: a rank that exits is seen at once on gloo (fail fast, HOLDS with
    fail-fast ends), never on nccl (STRANDED)."""
    f = EXAMPLES / "early_stop_spec.py"
    _, out, _ = check(f, "-v", "local-decision", "--backend", "gloo", "--json")
    d = json.loads(out)
    assert d["verdict"] == "HOLDS" and d["fail_fast_ends"] > 0
    _, out, _ = check(f, "-v", "local-decision", "--backend", "nccl", "--json")
    assert json.loads(out)["verdict"] == "STRANDED"
    _, out, _ = check(EXAMPLES / "pp_exchange_spec.py", "-v", "tag-swap", "--backend", "nccl", "--json")
    assert json.loads(out)["verdict"] == "HOLDS"  # NCCL ignores tags: the swapped tag pairs anyway


def test_text_counterexample_shows_choices_full_rank_lists_and_search_order():
    f = EXAMPLES / "early_stop_spec.py"
    code, out, _ = check(f, "-v", "local-decision", "-p", "ranks=6")
    assert code == 1
    assert "breadth-first under reduction; --no-reduction for the shortest" in out and "steps, shortest)" not in out
    header = next(ln for ln in out.splitlines() if ln.strip().startswith("#"))
    assert "choice" in header
    assert any(" 0-5 " in ln and "all_reduce completes" in ln for ln in out.splitlines())  # every rank, as a run
    assert any("validate" in ln and ("improved" in ln or "worse" in ln) for ln in out.splitlines())
    code, out, _ = check(f, "-v", "local-decision", "-p", "ranks=6", "--no-reduction", "--no-liveness")
    assert code == 1 and "steps, shortest):" in out


def test_checkpoint_commit_at_sixteen_ranks():
    """The checkpoint example's properties are monitors (no variables read) and its SPMD ranks 1-15 are
    declared symmetric: the hardened save is proved at 16 ranks in a few hundred states, and each
    planted bug is still found there (the unreduced world at 8 ranks already has 102,906 states)."""
    f = EXAMPLES / "checkpoint_commit_spec.py"
    code, out, _ = check(f, "-p", "ranks=16", "--json")
    d = json.loads(out)
    assert code == 0 and d["verdict"] == "HOLDS" and d["states"] < 1000, d["states"]
    for variant, verdict in (("publish-on-local-ok", "TORN_CHECKPOINT"), ("cleanup-barrier-first", "COLLECTIVE_MISMATCH"),
                             ("no-final-sync", "EARLY_RETURN")):
        code, out, _ = check(f, "-p", "ranks=16", "-v", variant, "--json")
        assert code == 1 and json.loads(out)["verdict"] == verdict, out[:300]


@pytest.mark.slow
def test_the_guide_runs_as_written():
    """Every `lockstep check examples/...` command in docs/writing-a-spec.md gives the exit status the
    guide says (0 holds, 1 violation)."""
    guide = (EXAMPLES.parent / "docs" / "writing-a-spec.md").read_text()
    cmds = [ln.strip()[2:] for ln in guide.splitlines() if ln.strip().startswith("$ lockstep check examples/")]
    assert len(cmds) >= 4
    for cmd in cmds:
        args, _, want = cmd.partition("#")
        p = subprocess.run([sys.executable, "-m", "lockstep", *args.split()[1:]], capture_output=True, text=True,
                           timeout=120, cwd=EXAMPLES.parent)
        assert f"exit {p.returncode}" in want, (cmd, p.stdout[-500:], p.stderr)


BATCHED = '''
from lockstep.spec.fabric import Group, recv, send
from lockstep.spec.machine import DONE, ActorDef, Protocol, Role
from lockstep.spec.registry import SpecInfo

SIG = ("fp32", "x")


def build(params, variant, backend):
    def one(kind, peer):
        r = Role(f"{kind}{peer}", "GO", {"n": 0})
        r.op(kind, "GO", DONE, lambda c: (send("w", peer, SIG) if kind == "send" else recv("w", peer, SIG)))
        return r
    actors = [ActorDef(0, "tx", one("send", 1)), ActorDef(0, "rx", one("recv", 1)),
              ActorDef(1, "tx", one("send", 0)), ActorDef(1, "rx", one("recv", 0))]
    return Protocol("batched", groups={"w": Group("w", (0, 1))}, backend=backend, actors=actors)


SPEC = SpecInfo(name="batched", description="a sender and a receiver thread on each of two ranks", params={},
                build=build, variants={})
'''


def test_a_p2p_op_blocked_behind_its_queue_says_so(tmp_path):
    """On nccl p2p ops complete in posting order per rank and group: the counterexample's last lines
    name the op each waiting op is queued behind instead of "(matching peer)"."""
    f = tmp_path / "batched_spec.py"
    f.write_text(BATCHED)
    assert check(f)[0] == 0  # gloo matches by tag, in any order
    code, out, _ = check(f, "--backend", "nccl")
    assert code == 1 and "verdict: DEADLOCK" in out and "(matching peer)" not in out
    waits = out.split("who waits on whom:")[1]
    assert "blocked behind rank 0's earlier send group=w dst=1" in waits or "blocked behind rank 0's earlier recv group=w src=1" in waits
    assert "queued behind the peer's earlier op (rank 1:" in waits or "queued behind the peer's earlier op (rank 0:" in waits


def test_generate_example_plants_its_bugs_as_patches(tmp_path):
    """examples/generate_spec.py writes the hardened loop once; each variant is a named patch, and a
    patch that names a transition the role lacks is a one-line spec error (exit 2) naming the patch."""
    info = load_spec(str(EXAMPLES / "generate_spec.py"))
    mod = sys.modules[info.build.__module__]
    assert set(info.variants) == set(mod.PATCHES)
    assert "variant ==" not in (EXAMPLES / "generate_spec.py").read_text()
    typo = tmp_path / "typo_spec.py"
    typo.write_text((EXAMPLES / "generate_spec.py").read_text().replace('.remove("allreduce_loss")', '.remove("allreduce_los")'))
    p = subprocess.run([sys.executable, "-m", "lockstep", "check", str(typo), "-v", "exit-on-eos"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines() == [
        "lockstep: spec error in patch exit-on-eos (role decoder): LookupError: no transition 'allreduce_los'; "
        "transitions: gather_params, forward, next_token, leave_generate, allreduce_loss"]
    assert check(typo)[0] == 0, "the hardened spec applies no patch"
