"""User spec files and modules through the CLI (issue 17 "CLI loading"): every form of spec reference
on check, list and render, the entry-point group, completion, and one line + exit 2 for every way a
spec can fail to load or raise."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from lockstep.cli.main import cli

ROOT = Path(__file__).resolve().parent.parent
HELLO = str(ROOT / "examples" / "hello_spec.py")

TWO_SPECS = '''
from lockstep.model.api import STRANDED
from lockstep.spec.fabric import Group, barrier
from lockstep.spec.machine import DONE, ActorDef, Protocol, Role
from lockstep.spec.registry import SpecInfo, Variant
{extra}

def build(params, variant, backend):
    r = Role("peer", "SYNC", {{"n": 0}})
    if not (variant == "lonely"):
        r.op("sync", "SYNC", DONE, lambda c: barrier("world"){after})
    a = Role("anchor", "SYNC", {{"n": 0}})
    a.op("sync", "SYNC", DONE, lambda c: barrier("world"))
    return Protocol("pair", groups={{"world": Group("world", (0, 1))}}, backend=backend,
                    actors=[ActorDef(0, "main", a), ActorDef(1, "main", r)])

SPEC = SpecInfo(name="pair", description="two ranks meet at a barrier", params={{}}, build=build,
                variants={{"lonely": Variant("rank 1 never arrives", (STRANDED,))}})
ALT = SpecInfo(name="pair-alt", description="the same, under another name", params={{}}, build=build, variants={{}})
'''


def spec_file(tmp_path, name="pair_spec.py", extra="", after="", body=None):
    p = tmp_path / name
    p.write_text(body if body is not None else TWO_SPECS.format(extra=extra, after=after))
    return str(p)


def run(*args):
    r = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return r.exit_code, r.stdout, r.stderr


def test_spec_file_holds_and_its_variant_is_found():
    code, out, _ = run("check", HELLO)
    assert code == 0 and "verdict: HOLDS" in out
    code, out, _ = run("check", HELLO, "--variant", "worker-skips", "--json")
    assert code == 1 and json.loads(out)["verdict"] == "STRANDED"


def test_path_with_attribute_name(tmp_path):
    f = spec_file(tmp_path)
    code, out, _ = run("check", f"{f}:ALT", "--json")
    assert code == 0 and json.loads(out)["spec"] == f"{f}:ALT"
    code, out, err = run("check", f"{f}:NOPE")
    assert code == 2 and "no NOPE in module" in err


def test_dotted_module_and_attribute(tmp_path, monkeypatch):
    pkg = tmp_path / "teamspecs"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    spec_file(pkg, "barrier_pair.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert run("check", "teamspecs.barrier_pair")[0] == 0
    assert run("check", "teamspecs.barrier_pair", "--variant", "lonely")[0] == 1
    assert run("check", "teamspecs.barrier_pair:ALT")[0] == 0
    # a shipped spec by its module path is the same spec as by its name
    code, out, _ = run("check", "lockstep.spec.specs.pp0", "--json")
    assert code == 0 and json.loads(out)["verdict"] == "HOLDS"


def test_spec_file_imports_a_module_beside_it(tmp_path):
    (tmp_path / "pair_helpers.py").write_text("def bump(c, data):\n    c.set(n=c.v.n + 1)\n")
    f = spec_file(tmp_path, extra="from pair_helpers import bump", after=", after=bump")
    code, out, err = run("check", f)
    assert code == 0, err


def test_list_and_render_take_a_spec_file(tmp_path):
    f = spec_file(tmp_path)
    code, out, _ = run("list", f, "--json")
    assert code == 0
    cat = json.loads(out)
    assert [s["spec"] for s in cat] == [f] and "lonely" in cat[0]["variants"]
    code, out, _ = run("list")
    assert code == 0 and "tp:" in out
    outdir = tmp_path / "render"
    code, out, err = run("render", f, "--variant", "lonely", "--out", str(outdir))
    assert code == 0, err
    assert (outdir / "index.html").exists()


def test_entry_point_group_registers_a_spec(tmp_path, monkeypatch):
    """An installed package registers specs under the ``lockstep.specs`` entry-point group: a real
    dist-info directory on sys.path, read by importlib.metadata."""
    spec_file(tmp_path, "acme_specs.py")
    dist = tmp_path / "acme_specs-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-specs\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[lockstep.specs]\nacme-pair = acme_specs:SPEC\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out, _ = run("list")
    assert code == 0 and "pair: two ranks meet at a barrier" in out
    assert run("check", "acme-pair")[0] == 0
    assert run("check", "acme-pair", "-v", "lonely")[0] == 1


@pytest.mark.parametrize("case, body, expect", [
    ("no SPEC", "X = 1\n", "no SPEC in module"),
    ("SPEC of the wrong type", "SPEC = {'name': 'x'}\n", "SPEC is a dict, expected a lockstep.spec.registry.SpecInfo"),
    ("syntax error", "def broken(:\n    pass\n", ":1: syntax error"),
    ("import error", "import lockstep_no_such_helper\n", "import failed: ModuleNotFoundError"),
    ("raises while loading", "x = 1\nraise RuntimeError('config server down')\n", "RuntimeError: config server down (at "),
])
def test_a_spec_file_that_cannot_load_is_one_line_exit_2(tmp_path, case, body, expect):
    f = spec_file(tmp_path, "bad_spec.py", body=body)
    for cmd in (["check", f], ["list", f], ["render", f, "--out", str(tmp_path / "r")]):
        code, out, err = run(*cmd)
        assert code == 2, (case, out, err)
        assert expect in err and str(Path(f).name) in err, err
        assert len(err.strip().splitlines()) == 1, err


def test_missing_file_and_unknown_module():
    code, _, err = run("check", "/nonexistent/dir/my_spec.py")
    assert code == 2 and err.strip() == "lockstep: /nonexistent/dir/my_spec.py: no such spec file"
    code, _, err = run("check", "no_such_pkg.proto")
    assert code == 2 and "no module named 'no_such_pkg'" in err and len(err.strip().splitlines()) == 1


def test_a_spec_that_raises_in_a_transition_names_role_and_transition(tmp_path):
    f = spec_file(tmp_path, after=", after=lambda c, data: 1 / 0")
    code, out, err = run("check", f)
    assert code == 2
    assert err.strip().startswith("lockstep: spec error in peer.sync") and "ZeroDivisionError" in err
    assert len(err.strip().splitlines()) == 1


def test_a_spec_whose_build_raises_is_a_spec_error(tmp_path):
    body = TWO_SPECS.format(extra="", after="").replace('    r = Role("peer"', '    params["missing"]\n    r = Role("peer"')
    f = spec_file(tmp_path, body=body)
    for cmd in (["check", f], ["render", f, "--out", str(tmp_path / "r")]):
        code, out, err = run(*cmd)
        assert code == 2 and "spec error in pair build at " in err and "KeyError" in err
        assert len(err.strip().splitlines()) == 1


def test_one_line_through_the_real_entry_point(tmp_path):
    f = spec_file(tmp_path, "bad_spec.py", body="X = 1\n")
    p = subprocess.run([sys.executable, "-m", "lockstep", "check", f], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and p.stdout == "" and len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_conform_spec_accepts_a_user_spec_of_a_recorded_topology(tmp_path):
    mine = spec_file(tmp_path, "my_tp.py", body="from lockstep.spec.specs.tp import SPEC\n")
    code, out, err = run("conform", str(tmp_path / "no-such-run"), "--spec", mine)
    assert code == 2 and "bad input" in err  # the spec resolved; the trace dir is what is missing
    other = spec_file(tmp_path)
    code, out, err = run("conform", str(tmp_path / "no-such-run"), "--spec", other)
    assert code == 2 and "SpecInfo.name is 'pair'" in err


def completions(args, incomplete):
    from click.shell_completion import ShellComplete

    return [c.value for c in ShellComplete(cli, {}, "lockstep", "_LOCKSTEP_COMPLETE").get_completions(args, incomplete)]


def test_shell_completion_of_specs_variants_and_params(tmp_path, monkeypatch):
    assert {"tp", "pp0", "pp1"} <= set(completions(["check"], ""))
    assert completions(["check"], "pp") == ["pp0", "pp1"]
    assert "fm04-throw-after-header" in completions(["check", "tp", "--variant"], "fm0")
    assert completions(["check", "tp", "-p"], "chu") == ["chunks="]
    assert completions(["check", "tp", "-p"], "hard_cuts=") == ["hard_cuts=true", "hard_cuts=false"]
    f = spec_file(tmp_path)
    assert completions(["check", f, "--variant"], "") == ["lonely"]
    assert completions(["check"], str(tmp_path) + "/pa") == [f]
    assert "fm04-throw-after-header" in completions(["render", "tp", "-v"], "fm04")
    assert completions(["conform", "--spec"], "pp") == ["pp0", "pp1"]
    monkeypatch.chdir(tmp_path)
    assert completions(["list"], "") [-1] == "pair_spec.py"
