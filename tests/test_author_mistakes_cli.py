"""A spec file with a planted author mistake, checked through the CLI as a user would: the checker
refuses the declaration it would otherwise have trusted (exit 2, one line naming role and transition),
instead of printing a HOLDS that the reduction made up."""
import subprocess
import sys
import textwrap

import pytest

SPEC = textwrap.dedent('''
    from lockstep.spec.fabric import Group, broadcast
    from lockstep.spec.machine import DONE, ActorDef, Protocol, Role
    from lockstep.spec.registry import SpecInfo

    SIG = ("int64", (1,))

    def build(params, variant, backend):
        leader = Role("leader", "SEND", {"config": 7})
        leader.op("broadcast_config", "SEND", DONE, lambda c: broadcast("world", 0, SIG, data=c.v.config))
        worker = Role("worker", "RECV", {"config": None}, private=True, observed=OBSERVED)
        worker.op("receive_config", "RECV", DONE, lambda c: broadcast("world", 0, SIG), guard=GUARD,
                  after=lambda c, data: c.set(config=data))
        return Protocol("mistake", groups={"world": Group("world", (0, 1))}, backend=backend,
                        shared={"ready": True}, invariants=INVARIANTS,
                        actors=[ActorDef(0, "main", leader), ActorDef(1, "main", worker)])

    SPEC = SpecInfo(name="mistake", description="a planted author mistake", params={}, build=build, variants={})
''')

CASES = {
    # a private role whose guard reads a shared variable: the reduction would treat its steps as independent
    "private-reads-shared": ("OBSERVED = ()\nGUARD = lambda c: c.g.ready\nINVARIANTS = []",
                             "worker.receive_config", "private role reads or writes shared variables"),
    # a typo in observed: the property it should protect would read an unobserved variable
    "observed-typo": ("OBSERVED = ('confg',)\nGUARD = None\nINVARIANTS = []", "role worker", "'confg'"),
    # an invariant reading a private role's control state that the role does not declare observed
    "invariant-reads-unobserved": (
        "OBSERVED = ('config',)\nGUARD = None\n"
        "INVARIANTS = [('worker-state', 'INVARIANT', lambda w: None if w.actor(1).state else 'x')]",
        "invariant worker-state", "control state"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_planted_author_mistake_is_refused(tmp_path, case):
    head, where, what = CASES[case]
    f = tmp_path / "mistake_spec.py"
    f.write_text(head + "\n" + SPEC)
    p = subprocess.run([sys.executable, "-m", "lockstep", "check", str(f)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, (p.stdout, p.stderr)
    err = p.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert where in err and what in err, err
    assert "HOLDS" not in p.stdout


def test_the_same_file_without_the_mistake_holds(tmp_path):
    f = tmp_path / "ok_spec.py"
    f.write_text("OBSERVED = ('config',)\nGUARD = None\nINVARIANTS = []\n" + SPEC)
    p = subprocess.run([sys.executable, "-m", "lockstep", "check", str(f)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert "HOLDS" in p.stdout
