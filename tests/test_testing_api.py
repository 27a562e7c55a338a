"""lockstep.testing: the assertions a user's test suite calls, on every accepted form of spec, and the
conformance helpers on real gloo worlds (through the plugin's ``lockstep_run`` fixture)."""
import importlib
from pathlib import Path

import pytest

from lockstep import testing as T
from lockstep.model.api import SpecError
from lockstep.spec.registry import UsageError

pytest_plugins = ["pytester"]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PP = EXAMPLES / "pp_exchange_spec.py"


def test_result_is_plain_attributes():
    r = T.check(PP, "send-first")
    assert r.verdict == "DEADLOCK" and not r.holds and r.as_expected
    assert r.states > 0 and r.transitions > 0 and r.depth > 0 and r.seconds >= 0
    assert r.params == {"microbatches": 2} and r.backend == "gloo" and r.expected == ("DEADLOCK",)
    assert r.counterexample[-1]["transition"] == "send_to_peer" and r.waiting
    assert r.to_json()["verdict"] == "DEADLOCK"


def test_notes_say_where_a_holds_is_only_tested():
    """A test can insist on a proof: ``notes`` holds the lines ``lockstep check`` prints after the verdict.
    kv's FRANKEN reads every mesh rank at once: at 4 ranks the symmetry check tries every arrangement on
    every state (no note); at 8 it only tests it on most states, and the note says so."""
    assert T.assert_holds("kv", mesh=4).notes == []
    r = T.assert_holds("kv", mesh=8)
    assert len(r.notes) == 1 and r.notes[0].startswith("note: kv invariant FRANKEN read every symmetric actor at once on ")
    assert r.to_json()["notes"] == r.notes and T.check("kv", mesh=3, reduction=False).notes == []


@pytest.mark.parametrize("form", ["path", "str", "spec_info", "module", "shipped"])
def test_every_spec_form(form):
    spec = {"path": PP, "str": str(PP), "spec_info": T.load(str(PP))[0],
            "module": importlib.import_module("lockstep.spec.specs.pp0"), "shipped": "pp0"}[form]
    assert T.assert_holds(spec).holds


def test_params_are_python_values():
    r = T.assert_holds(EXAMPLES / "early_stop_spec.py", ranks=3, patience=2)
    assert r.params["ranks"] == 3 and r.params["patience"] == 2
    r = T.assert_holds("tp", hard_cuts=False, chunks=1)
    assert r.params["hard_cuts"] is False


def test_assert_violation_uses_the_documented_classes_by_default():
    r = T.assert_violation(PP, variant="tag-swap")
    assert r.verdict == "DEADLOCK"
    T.assert_violation(EXAMPLES / "early_stop_spec.py", variant="local-decision", verdicts=("STRANDED",), backend="nccl")


def test_a_failed_assertion_prints_the_counterexample_as_lockstep_check_does():
    with pytest.raises(T.ProtocolCheckFailed) as e:
        T.assert_violation(PP, variant="send-first", verdicts=("STRANDED",))
    msg = str(e.value)
    assert msg.startswith("expected STRANDED, got DEADLOCK")
    assert "counterexample (4 steps" in msg and "who waits on whom:" in msg and "send_to_peer" in msg
    assert e.value.result.verdict == "DEADLOCK"
    with pytest.raises(T.ProtocolCheckFailed) as e:
        T.assert_violation(PP)  # the hardened exchange is not a violation
    assert "got HOLDS" in str(e.value)


def test_a_broken_hardened_spec_fails_assert_holds(tmp_path):
    broken = tmp_path / "broken_spec.py"
    broken.write_text(PP.read_text().replace('send_first=(variant == "send-first")', "send_first=True"))
    with pytest.raises(T.ProtocolCheckFailed) as e:
        T.assert_holds(broken)
    assert "expected HOLDS, got DEADLOCK" in str(e.value) and "counterexample (" in str(e.value)


def test_no_reduction_gives_the_shortest_and_cross_check_compares():
    r = T.check(EXAMPLES / "early_stop_spec.py", "local-decision", reduction=False, liveness=False, ranks=4)
    assert r.shortest and "steps, shortest)" in r.text()
    r = T.check(EXAMPLES / "early_stop_spec.py", "local-decision", cross_check=True, ranks=4)
    assert r.cross_checked == r.verdict == "STRANDED"


def test_bad_input_and_spec_errors():
    with pytest.raises(UsageError, match="unknown variant 'nope'"):
        T.check(PP, "nope")
    with pytest.raises(UsageError, match="unknown parameter 'ranks'"):
        T.check(PP, ranks=3)
    with pytest.raises(UsageError, match="expected a SpecInfo"):
        T.check(42)


def test_spec_error_names_role_and_transition(tmp_path):
    f = tmp_path / "raising_spec.py"
    f.write_text(PP.read_text().replace("after=lambda c, data: c.set(mb=c.v.mb + 1)", "after=lambda c, data: c.set(nope=1)"))
    with pytest.raises(SpecError, match=r"spec error in stage\d\.recv_from_peer|spec error in stage\d\.send_to_peer"):
        T.check(f)


WORLD_TEST = '''
from lockstep.testing import assert_conforms, assert_instance_of, ProtocolCheckFailed
import pytest

def test_clean_tp_run_conforms(lockstep_run, tmp_path):
    trace = lockstep_run("tp", world=2, chunks=2)
    rep = assert_conforms(trace)
    assert rep.conforms and (trace / "manifest.json").exists()
    # a user's spec file for the same topology, through the API and through `lockstep conform --spec`
    mine = tmp_path / "my_tp.py"
    mine.write_text("from lockstep.spec.specs.tp import SPEC\\n")
    assert assert_conforms(trace, spec=str(mine)).conforms
    import subprocess, sys
    p = subprocess.run([sys.executable, "-m", "lockstep", "conform", str(trace), "--spec", str(mine)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "CONFORMS" in p.stdout, p.stdout + p.stderr

def test_unsafe_run_is_an_instance_of_its_variant(lockstep_run):
    trace = lockstep_run("tp", world=2, chunks=3, fault="om-01", unsafe="fm04-throw-after-header")
    assert_instance_of(trace, "fm04-throw-after-header")
    with pytest.raises(ProtocolCheckFailed, match="does not conform"):
        assert_conforms(trace)
'''


@pytest.mark.multirank
@pytest.mark.slow
def test_lockstep_run_fixture_on_real_gloo_worlds(pytester):
    """What a GPU team's CI job runs (here on gloo): the fixture starts a real world under a deadline,
    the assertions read the recorded traces.  A subprocess pytest, so forked ranks start from a clean
    interpreter."""
    pytester.makepyfile(test_world=WORLD_TEST)
    from importlib.metadata import entry_points

    installed = any(ep.name == "lockstep" for ep in entry_points(group="pytest11"))  # else name it with -p
    r = pytester.runpytest_subprocess(*(() if installed else ("-p", "lockstep.pytest_plugin")), "-q", timeout=300)
    r.assert_outcomes(passed=2)
