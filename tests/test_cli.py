"""The CLI contract: exit codes, --json schema, clear errors on bad input."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ONLY_RANK_2


def lockstep(*args):
    return subprocess.run([sys.executable, "-m", "lockstep", *args], capture_output=True, text=True, timeout=120)


def test_check_holds_exit_0_and_json_schema():
    p = lockstep("check", "tp", "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    for k in ("spec", "variant", "params", "verdict", "states", "transitions", "depth", "seconds", "counterexample", "waiting"):
        assert k in d
    assert d["verdict"] == "HOLDS" and d["states"] > 1000 and d["counterexample"] == []


def test_check_violation_exit_1_with_counterexample():
    p = lockstep("check", "tp", "--variant", "fm04-throw-after-header", "--json")
    assert p.returncode == 1
    d = json.loads(p.stdout)
    assert d["verdict"] == "STRANDED"
    step = d["counterexample"][0]
    assert set(step) >= {"step", "rank", "role", "transition", "op", "group", "ids"}
    assert d["waiting"] and d["waiting"][0]["waits_for"] == [0]


def test_text_output_shows_counterexample_and_waits():
    p = lockstep("check", "tp", "-v", "fm04-throw-after-header")
    assert p.returncode == 1
    assert "verdict: STRANDED" in p.stdout and "who waits on whom" in p.stdout and "[commit]" in p.stdout


def test_text_output_reads_at_scale():
    """A 9-rank pp1 whose leader throws inside an envelope: the seven stranded workers wait on one line, and
    the fabric step of the 8-rank mesh broadcast names its ranks as a run (--json keeps one entry a rank)."""
    p = lockstep("check", "pp1", "-v", "om07-leader-throws", "-p", "mesh=8")
    assert p.returncode == 1
    assert "\n  ranks 2-8 worker in MESH_META: broadcast group=mesh src=0 sig=uint8,meta  -> waits for rank 1 (gone)\n" in p.stdout
    assert re.search(r"\n +\d+ +1-8 +fabric +broadcast completes", p.stdout)
    d = json.loads(lockstep("check", "pp1", "-v", "om07-leader-throws", "-p", "mesh=8", "--json").stdout)
    assert [w["rank"] for w in d["waiting"]] == list(range(2, 9))


def test_a_large_search_of_undeclared_alike_ranks_hints_at_symmetry():
    """Actors of one role, alone on their ranks and in the same groups, not declared symmetric: after a
    large search the text output says which, and how to declare them; following it explores each
    permutation once.  Ranks set apart by a group, a second thread, or a declaration get no hint."""
    from lockstep.spec.notes import HINT_STATES, symmetry_hints
    from lockstep.model.checker import check
    from lockstep.model.result import Result, Stats
    from lockstep.spec.fabric import Group, broadcast
    from lockstep.spec.machine import DONE, ActorDef, Protocol, Role

    sig = ("int64", (1,))
    lead = Role("leader", "GO", {})
    lead.op("go", "GO", DONE, lambda c: broadcast("world", 0, sig, data=1))
    w = Role("worker", "WAIT", {}, private=True)
    w.op("recv", "WAIT", DONE, lambda c: broadcast("world", 0, sig))
    helper = Role("helper", "S", {}, private=True)
    helper.local("idle", "S", DONE)

    def world(symmetric=()):
        actors = [ActorDef(0, "main", lead), ActorDef(0, "aux", helper)] + [ActorDef(r, "main", w) for r in range(1, 7)]
        groups = {"world": Group("world", tuple(range(7))), "pair": Group("pair", (0, 6))}
        return Protocol("alike", groups, actors, symmetric=symmetric)

    big = Result("HOLDS", "", Stats(states=HINT_STATES))
    assert world().symmetry_candidates() == [(2, 3, 4, 5, 6)]  # rank 6 is in "pair" too; rank 0 has two threads
    [hint] = symmetry_hints(world(), big)
    assert hint.startswith("hint: ranks 1-5 run role worker alike and are not declared symmetric") and \
        "Protocol(symmetric=tuple(range(2, 7)))" in hint
    assert symmetry_hints(world(), Result("HOLDS", "", Stats(states=HINT_STATES - 1))) == []
    assert symmetry_hints(world(symmetric=(2, 3, 4, 5, 6)), big) == []
    assert check(world(symmetric=(2, 3, 4, 5, 6))).verdict == check(world()).verdict == "HOLDS"
    p = lockstep("check", "tp", "-p", "ranks=4")  # 31,456 states; its workers are declared symmetric
    assert p.returncode == 0 and "hint:" not in p.stdout


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _undeclared_example_hint(tmp_path, name: str, edits, params: str):
    """Check a shipped example with its declarations edited out (each ``edits`` pair must apply), at
    ``-p params``: the finished process (it must hold) and its one ``hint:`` line."""
    plain = (EXAMPLES / name).read_text()
    for old, new in edits:
        assert old in plain, old
        plain = plain.replace(old, new)
    f = tmp_path / f"plain_{name}"
    f.write_text(plain)
    p = lockstep("check", str(f), "-p", params)
    assert p.returncode == 0, p.stderr
    [hint] = [ln for ln in p.stdout.splitlines() if ln.startswith("hint:")]
    return p, hint


def test_an_spmd_role_that_branches_on_rank_zero_hints_at_the_other_ranks(tmp_path):
    """The main-first example without its ``symmetric=``: one role on every rank, branching on ``c.rank ==
    0``.  After a large search the hint names ranks 1-11 (the ranks whose steps did the same on every
    input the search met), not 0-11, which the checker would refuse; following it gives the same verdict
    from a fraction of the states."""
    p, hint = _undeclared_example_hint(tmp_path, "main_first_spec.py", [(", symmetric=tuple(range(1, n)))", ")")],
                                       "ranks=12")
    assert hint.startswith("hint: ranks 1-11 run role loader alike") and "Protocol(symmetric=tuple(range(1, 12)))" in hint
    d = json.loads(lockstep("check", str(EXAMPLES / "main_first_spec.py"), "-p", "ranks=12", "--json").stdout)
    assert d["verdict"] == "HOLDS" and d["states"] * 100 < int(re.search(r"explored ([\d,]+) states", p.stdout)[1].replace(",", ""))


def test_a_large_search_whose_property_reads_fields_behind_a_flag_hints_at_observed_when(tmp_path):
    """The loss-scaler example with its scaler and applied-step count observed everywhere: the
    property reads them only between steps (``busy`` false), and a search past the hint size says
    so, with the declaration to write; the example as shipped (declared) stays under the hint size."""
    _, hint = _undeclared_example_hint(tmp_path, "loss_scaler_spec.py", [
        ('observed=("busy", "step"),', 'observed=("busy", "step", "scaler", "applied"),'),
        ('observed_when={"scaler": lambda v: not v.busy, "applied": lambda v: not v.busy})', ')')], "ranks=8")
    assert "the properties read applied, scaler, step of role trainer only where busy is False" in hint
    assert "observed_when={'applied': lambda v: not v.busy, 'scaler': lambda v: not v.busy" in hint
    shipped = lockstep("check", str(EXAMPLES / "loss_scaler_spec.py"), "-p", "ranks=8")
    assert shipped.returncode == 0 and "hint:" not in shipped.stdout


def test_bound_reached_exit_3():
    p = lockstep("check", "tp", "--max-states", "50", "--json")
    assert p.returncode == 3
    assert json.loads(p.stdout)["verdict"] == "BOUND_REACHED"


@pytest.mark.parametrize("args, needle", [
    (("check", "nosuch"), "valid specs: tp"),
    (("check", "tp", "--variant", "nosuch"), "valid variants: fm01-plan-mismatch"),
    (("check", "tp", "-p", "nosuch=1"), "valid parameters: ranks"),
    (("check", "tp", "-p", "ranks=two"), "expected an integer"),
    (("check", "tp", "-p", "ranks"), "expected NAME=VALUE"),
    (("check", "tp", "--backend", "ucc"), "valid backends: gloo"),
    (("check", "tp", "-p", "faults=boom"), "valid faults"),
    (("check", "tp", "--max-states", "0"), "max-states"),
])
def test_bad_input_exit_2_with_valid_choices(args, needle):
    p = lockstep(*args)
    assert p.returncode == 2
    assert needle in p.stderr


def test_list_shows_specs_params_variants():
    p = lockstep("list")
    assert p.returncode == 0
    assert "tp:" in p.stdout and "ranks=2" in p.stdout and "fm04-throw-after-header" in p.stdout
    d = json.loads(lockstep("list", "--json").stdout)
    assert any(s["spec"] == "tp" for s in d)


def test_spec_error_is_not_a_verdict():
    code = (
        "import sys\n"
        "from lockstep.model.api import SpecError\n"
        "from lockstep.model.checker import check\n"
        "from lockstep.spec.fabric import Group\n"
        "from lockstep.spec.machine import ActorDef, Protocol, Role\n"
        "r = Role('buggy', 'A', {'x': 0})\n"
        "r.local('explode', 'A', 'B', do=lambda c: 1 / 0)\n"
        "w = Protocol('toy', {'world': Group('world', (0,))}, [ActorDef(0, 'main', r)])\n"
        "try:\n    check(w)\nexcept SpecError as e:\n    print(e.where); sys.exit(0)\n"
        "sys.exit(1)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0 and "buggy.explode" in p.stdout


@pytest.mark.parametrize("cmd", ["check", "run"])  # conform and render: their own tests
def test_help_states_exit_codes(cmd):
    p = lockstep(cmd, "--help")
    assert p.returncode == 0 and re.search(r"Exit (status|codes)[^0-9]*0", p.stdout), p.stdout
    assert "130 interrupted" in p.stdout


def _variants():
    from lockstep.spec.registry import available, load
    return [(name, v) for name in available() for v in load(name).variants]


@pytest.mark.parametrize("spec, variant", _variants())
def test_every_shipped_variant_prints_its_counterexample(spec, variant):
    """Every planted bug through the text report, at the spec's defaults: a violation (exit 1) with
    its counterexample and, where processes wait, a well-formed "who waits on whom".  Old: the
    pipeline spec's waits (on queues, by named processes) had no `state` field, and
    `check pipeline --variant stage-skips-send` died in the report with KeyError (exit 1 all the same)."""
    from click.testing import CliRunner

    from lockstep.cli.main import cli

    r = CliRunner().invoke(cli, ["check", spec, "--variant", variant])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert r.exit_code == 1 and "verdict: " in r.output and "counterexample" in r.output, r.output[-2000:]
    assert f"\nas documented: variant {variant} gives " in r.output, r.output[:600]
    if "who waits on whom:" in r.output:
        waits = r.output.split("who waits on whom:\n", 1)[1].splitlines()
        assert waits and all(re.match(r"  \S.* in \S+: .+", line) for line in waits), waits


def test_check_says_whether_a_variant_gave_its_documented_verdict():
    """A variant checked where its planted bug cannot show (tp's fm04 needs the pickle fault, which
    `-p faults=none` disables) HOLDS: the report says that this is not what the variant documents, in
    text and in --json (`expected`, `as_expected`), with the exit code of the verdict; a bound decides
    nothing; without --variant the hardened protocol's documented verdicts are reported."""
    import json

    from click.testing import CliRunner

    from lockstep.cli.main import cli

    run = lambda *a: CliRunner().invoke(cli, ["check", "tp", *a])  # noqa: E731
    r = run("--variant", "fm04-throw-after-header", "-p", "faults=none")
    assert r.exit_code == 0 and "verdict: HOLDS" in r.output
    assert ("not as documented: variant fm04-throw-after-header is documented to give STRANDED, and this check "
            "gave HOLDS") in r.output, r.output
    j = json.loads(run("--variant", "fm04-throw-after-header", "-p", "faults=none", "--json").output)
    assert (j["verdict"], j["expected"], j["as_expected"]) == ("HOLDS", ["STRANDED"], False)
    j = json.loads(run("--variant", "fm04-throw-after-header", "--json").output)
    assert (j["verdict"], j["expected"], j["as_expected"]) == ("STRANDED", ["STRANDED"], True)
    r = run("--variant", "fm04-throw-after-header", "--max-states", "20")
    assert r.exit_code == 3 and "this search stopped before it decided" in r.output, r.output
    j = json.loads(run("--max-states", "20", "--json").output)
    assert (j["verdict"], j["expected"], j["as_expected"]) == ("BOUND_REACHED", ["HOLDS"], None)
    r = run("-p", "chunks=1")
    assert r.exit_code == 0 and "documented" not in r.output  # the hardened protocol: no line in text
    assert json.loads(run("-p", "chunks=1", "--json").output)["as_expected"] is True


@pytest.mark.parametrize("args, needle", [
    (["tp", "--timeout", "nan"], "'nan' is not a finite number of seconds"),
    (["tp", "--workers", "100000"], "--workers 100000: this machine has"),
    (["tp", "-p", "ranks=3", "-p", "ranks=4"], "-p ranks given twice"),
    (["tp", "-p", "ranks=99999999999999999999999"], "ranks"),
])
def test_check_refuses_bounds_that_are_not_bounds(args, needle):
    """Old: `--timeout nan` passed the range check and disabled the bound; `--workers 300` forked 300
    processes for a 100-state search; a repeated -p silently took the last; `-p ranks=10^22` built
    until the machine ran out of memory (the timeout covers only the search).  Now: exit 2, one line."""
    from click.testing import CliRunner

    from lockstep.cli.main import cli

    r = CliRunner().invoke(cli, ["check", *args])
    assert r.exit_code == 2 and needle in r.output, r.output
    assert "Traceback" not in r.output


@pytest.mark.parametrize("args, needle", [
    (["tp", "-p", "rank=3"], "unknown parameter 'rank' for spec tp (did you mean 'ranks'?); valid parameters: ranks,"),
    (["tp", "--variant", "fm01"], "(did you mean 'fm01-plan-mismatch'?); valid variants:"),
    (["tpp"], "unknown spec 'tpp' (did you mean 'tp'?); valid specs: tp,"),
    (["tp", "-p", "zzz=1"], "unknown parameter 'zzz' for spec tp; valid parameters:"),
    (["pp1", "-p", "recompute=r0a"], "parameter recompute='r0a' (did you mean 'R0a'?): expected one of R1, R0a, R0"),
    (["tp", "-p", "faults=crash,tripwyre"], "unknown fault(s) tripwyre (did you mean 'tripwire'?); valid faults: all,"),
])
def test_an_unknown_name_suggests_the_nearest(args, needle):
    """A misspelt or shortened spec, variant, parameter, choice or fault name: exit 2, the nearest valid
    name (a unique prefix match, else a close one; none when nothing is close), then every valid name."""
    p = lockstep("check", *args)
    assert p.returncode == 2 and needle in p.stderr, p.stderr


def test_check_json_stays_json_when_the_spec_prints(tmp_path):
    """A spec that prints (a debugging print in an invariant): `check --json` still gives one JSON
    object on stdout, and the print goes to stderr.  Old: the print came first, and stdout was not JSON."""
    f = tmp_path / "noisy_spec.py"
    f.write_text(HELLO_NOISY)
    p = lockstep("check", str(f), "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["verdict"] == "HOLDS"
    assert "debug: checking" in p.stderr


HELLO_NOISY = """
from lockstep.spec.fabric import Group
from lockstep.spec.machine import DONE, ActorDef, Protocol, Role
from lockstep.spec.registry import SpecInfo

print("debug: loading")


def inv(world):
    print("debug: checking")
    return None


def build(params, variant, backend):
    r = Role("r", "A", {})
    r.local("go", "A", DONE)
    return Protocol("noisy", {"world": Group("world", (0, 1))}, [ActorDef(0, "main", r), ActorDef(1, "main", r)],
                    invariants=[("INV", "INVARIANT", inv)])


SPEC = SpecInfo(name="noisy", description="prints while it is checked", params={}, variants={}, build=build)
"""




@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_holds_the_symmetry_detector_could_not_prove_says_so(tmp_path, workers):
    """An invariant that reads every symmetric worker at once and singles out ranks 3-6 of 9 ("only ranks
    3-6 missed").  Where the 9 workers' states have more than 64 arrangements, the symmetry check gives
    such aggregates a swap, a rotation and the reversal, which never move the four workers that missed
    into ranks 3-6: HOLDS, where the unreduced search finds the violation.  Old: that HOLDS came without
    a word.  Now a note names the property, says on how many states it was only tested, and that only
    --cross-check proves it; --cross-check then fails (exit 2).  With --workers 2 the note comes from
    the workers."""
    f = tmp_path / "only2_spec.py"
    f.write_text(ONLY_RANK_2.replace("missed == [2]", "missed == [3, 4, 5, 6]").replace("Param(5,", "Param(9,"))
    p = lockstep("check", str(f), "--workers", workers, "--no-liveness")
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert re.search(r"note: only2 invariant only-rank-2 read every symmetric actor at once on \d+ of the 110 states, where "
                     r"the symmetry check tried a swap, a rotation and the reversal of ranks 1-9", p.stdout), p.stdout
    assert "--cross-check proves it" in p.stdout
    # --json carries the same lines (old: a pipeline reading --json never saw that this HOLDS was only tested)
    j = json.loads(lockstep("check", str(f), "--workers", workers, "--no-liveness", "--json").stdout)
    notes = [n for n in j["notes"] if n.startswith("note: only2")]
    assert j["verdict"] == "HOLDS" and len(notes) == 1 and re.match(r"note: only2 invariant only-rank-2 read every symmetric "
                                                                    r"actor at once on \d+ of the 110 states, where", notes[0])
    assert lockstep("check", str(f), "--no-reduction").returncode == 1
    x = lockstep("check", str(f), "--cross-check")
    assert x.returncode == 2 and "cross-check failed" in x.stderr, (x.stdout, x.stderr)


def test_an_aggregate_over_few_arrangements_is_proved_not_sampled(tmp_path):
    """The same kind of invariant over 5 workers singling out rank 2: the workers' states never have more
    than 30 arrangements, so the symmetry check tries every one of them on every state (one per class
    of arrangements that agree on what it read) and finds the one with rank 2 alone missing.  Old: a swap,
    a rotation and the reversal only, which never put the one worker that missed at rank 2: HOLDS with
    a note.  Now a spec error (exit 2) naming the property; the shipped kv spec at 4 mesh ranks, whose
    FRANKEN invariant reads every rank at once, is proved on every state (no note)."""
    f = tmp_path / "only2_spec.py"
    f.write_text(ONLY_RANK_2)
    p = lockstep("check", str(f), "--no-liveness")
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "spec error in only2 invariant only-rank-2: ValueError: tells the symmetric actors (ranks 1-5) apart" in p.stderr
    p = lockstep("check", "kv", "-p", "mesh=4")
    assert p.returncode == 0 and "verdict: HOLDS" in p.stdout and "note:" not in p.stdout, p.stdout
