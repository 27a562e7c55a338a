"""diagrams/ and `lockstep render`: diagrams come from the specs and traces themselves, render
deterministically, show every step, and the committed gallery is up to date."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from lockstep.cli.render import render as render_cmd
from lockstep.diagrams.build import render_spec
from lockstep.diagrams.roles import role_graph
from lockstep.diagrams.statespace import explore, roles_in_order
from lockstep.diagrams.swimlane import Swimlane, render as render_swimlane
from lockstep.model.checker import Bounds, check
from lockstep.spec.machine import Protocol
from lockstep.spec.registry import available, load, resolve

SVG = "{http://www.w3.org/2000/svg}"


def model(spec, variant=None, **raw):
    info, params = resolve(spec, variant, {k: str(v) for k, v in raw.items()})
    return info.build(params, variant, "gloo")


def statement(src: str, needle: str) -> str:
    """The graphviz statement (one edge or node, labels may span lines) that mentions needle."""
    stmts = src.split("\n\t")
    return next((st for st in stmts if needle in st and " -> " in st), None) or next(st for st in stmts if needle in st)


def step_groups(svg: str):
    root = ET.fromstring(svg)
    return [g for g in root.iter(f"{SVG}g") if g.get("class") == "step"]


# ---- role diagrams come from the role's own transitions ---------------------------------------
def test_role_diagram_is_the_transition_list():
    m = model("tp", "fm04-throw-after-header")
    g = explore(m, 5000)
    for name, (role, _labels) in roles_in_order(m).items():
        src = role_graph(role, name, g.op_kinds, g.fired).source
        for st in role.states():
            assert f'"{st}"' in src or f"label={st}" in src or st in src
        for t in role.transitions:
            assert t.name in src, (name, t.name)
    leader = roles_in_order(m)["leader"][0]
    src = role_graph(leader, "leader", g.op_kinds, g.fired).source
    commit = statement(src, "send_header")
    assert "penwidth=2.8" in commit and "broadcast world src=0" in commit  # commit bold, op kind from exploration
    fault = statement(src, "meta_pickle_fails")
    assert "dashed" in fault and "raise@pickle" in fault
    worker = roles_in_order(m)["worker"][0]
    wfull = role_graph(worker, "worker", g.op_kinds, g.fired, failures=True).source
    assert "dotted" in statement(wfull, "watchdog timeout")  # the protocol + failures view draws every exit
    wsrc = role_graph(worker, "worker", g.op_kinds, g.fired).source
    # the protocol view folds each state's exits to FAILED into one line under the state: no edge to FAILED
    # from an op error or a timeout, so the happy path is not crossed by them
    to_failed = [st for st in wsrc.split("\n\t") if "-> n_FAILED" in st]
    assert not [st for st in to_failed if "watchdog timeout" in st or "op error" in st], to_failed
    assert "on error → FAILED" in wsrc
    for t in worker.transitions:
        if t.timeout == "FAILED" or (t.op is not None and t.on_error == "FAILED" and "FAILED" not in t.dst):
            assert "on error → FAILED" in statement(wsrc, f"n_{t.src} [label=<{t.src}<BR/>"), t.name


# ---- every spec renders ------------------------------------------------------------------------
@pytest.mark.parametrize("spec", available())
def test_every_spec_renders(spec):
    r = render_spec(spec, None, max_states=3000, kv=False)
    m = model(spec)
    if isinstance(m, Protocol):
        assert b"<img" in r.files["index.html"]
        roles = roles_in_order(m)
        assert {f"roles/{n}.svg" for n in roles} <= set(r.files)
    for rel, data in r.files.items():
        assert data, rel
        if rel.endswith(".svg"):
            ET.fromstring(data)  # well-formed
    for src in re.findall(rb'<img src="([^"]+)"', r.files["index.html"]):
        assert src.decode() in r.files, src


def test_violating_variant_of_every_spec_gets_a_swimlane():
    for spec in available():
        info = load(spec)
        for v, var in info.variants.items():
            if "HOLDS" in var.expected:
                continue
            m = model(spec, v)
            res = check(m, Bounds(max_states=3000))
            if res.verdict in ("HOLDS", "BOUND_REACHED"):
                continue
            svg = render_swimlane(Swimlane(res.counterexample, verdict=res.verdict, message=res.message,
                                           waiting=res.waiting, cycle_start=res.cycle_start))
            assert len(step_groups(svg)) == len(res.counterexample), (spec, v)
            break


# ---- swimlanes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("spec,variant", [("tp", "fm04-throw-after-header"), ("tp", "fm02-local-recompute"),
                                          ("pipeline", "capacity-zero")])
def test_swimlane_shows_every_step(spec, variant):
    m = model(spec, variant)
    res = check(m, Bounds(max_states=60000))
    assert res.counterexample or res.waiting
    svg = render_swimlane(Swimlane(res.counterexample, verdict=res.verdict, message=res.message, waiting=res.waiting,
                                   lanes=list(m.ranks) if isinstance(m, Protocol) else None))
    groups = step_groups(svg)
    assert [g.get("data-step") for g in groups] == [str(s["step"]) for s in res.counterexample]
    root = ET.fromstring(svg)
    blocked = [g for g in root.iter(f"{SVG}g") if g.get("class") == "blocked"]
    assert len(blocked) == len(res.waiting)
    text = "".join(root.itertext())
    for s in res.counterexample:
        assert str(s["transition"])[:12] in text
        for k, v in (s.get("ids") or {}).items():
            assert f"{k}={v}" in text
    if variant == "fm04-throw-after-header":
        assert "⚡ raise@pickle" in text and "★ commit" in text and "BLOCKED" in text and "waits for rank 0 (idle)" in text
    if variant == "fm02-local-recompute":
        assert "✗ broadcast mismatch on world" in text


def test_swimlane_marks_a_liveness_cycle_and_a_highlight():
    steps = [{"step": i + 1, "rank": i % 2, "role": "r", "actor": f"rank{i % 2}", "transition": f"t{i}", "op": None,
              "group": None, "ids": {"call_id": i}, "changed": {}, "in_cycle": i >= 2} for i in range(4)]
    svg = render_swimlane(Swimlane(steps, verdict="LIVENESS", message="loops", cycle_start=2,
                                   highlight={"index": 1, "note": "unexplained"}))
    assert 'class="cycle"' in svg and 'class="highlight"' in svg and "↻ cycle starts" in svg
    assert "first non-conforming event: step 2" in svg
    assert len(step_groups(svg)) == 4


# ---- determinism -------------------------------------------------------------------------------
def test_render_is_byte_identical():
    a = render_spec("tp", "fm07-late-dtype-check", max_states=20000)
    b = render_spec("tp", "fm07-late-dtype-check", max_states=20000)
    assert sorted(a.files) == sorted(b.files)
    for rel in a.files:
        assert a.files[rel] == b.files[rel], rel
    for data in a.files.values():
        assert not re.search(rb"20\d\d-\d\d-\d\dT\d\d|Generated by graphviz", data)


# ---- state space: drawn whole when small, summarized otherwise ------------------------------------
def test_statespace_small_drawn_whole_large_summarized():
    small = render_spec("pipeline", "capacity-zero", max_states=5000, kv=False)
    src = small.files["statespace.gv"].decode()
    n = len(explore(model("pipeline", "capacity-zero"), 5000).states)
    assert n <= 200 and all(f"s{i} " in src or f"s{i} [" in src for i in range(n))
    big = render_spec("tp", None, max_states=20000, kv=False)
    src = big.files["statespace.gv"].decode()
    assert "cluster_leader" in src and "cluster_worker" in src and " states" in src
    assert "collapsed by control state" in big.files["index.html"].decode()


# ---- the CLI -------------------------------------------------------------------------------------
def test_cli_render_spec(tmp_path):
    out = tmp_path / "out"
    r = CliRunner().invoke(render_cmd, ["tp", "--variant", "fm04-throw-after-header", "--max-states", "20000", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "STRANDED" in r.output
    for f in ("index.html", "swimlane.svg", "roles/leader.svg", "roles/worker.svg", "statespace.svg"):
        assert (out / f).is_file(), f
    # re-rendering into our own output is fine, and a user's other files survive it
    (out / "notes.txt").write_text("mine")
    r = CliRunner().invoke(render_cmd, ["tp", "--max-states", "20000", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert (out / "notes.txt").read_text() == "mine"
    assert not (out / "swimlane.svg").exists()  # the hardened spec has no counterexample: stale file removed


@pytest.mark.parametrize("args,needle", [
    (["nosuch", "--out", "X"], "valid specs"),
    (["tp", "--variant", "nosuch", "--out", "X"], "valid variants"),
    (["tp", "-p", "bogus=1", "--out", "X"], "valid parameters"),
    (["tp", "-p", "ranks", "--out", "X"], "NAME=VALUE"),
    (["tp", "--backend", "ucc", "--out", "X"], "valid backends"),
    (["tp"], "--out"),
    ([], "exactly one of"),
    (["tp", "--gallery"], "exactly one of"),
])
def test_cli_bad_input_exits_2(tmp_path, args, needle):
    args = [str(tmp_path / "o") if a == "X" else a for a in args]
    r = CliRunner().invoke(render_cmd, args)
    assert r.exit_code == 2, r.output
    assert needle in r.output


def test_cli_refuses_to_clobber(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    r = CliRunner().invoke(render_cmd, ["tp", "--max-states", "500", "--out", str(f)])
    assert r.exit_code == 2 and "is a file" in r.output
    d = tmp_path / "theirs"
    d.mkdir()
    (d / "index.html").write_text("their page")
    r = CliRunner().invoke(render_cmd, ["tp", "--max-states", "500", "--out", str(d)])
    assert r.exit_code == 2 and "refusing to overwrite" in r.output
    assert (d / "index.html").read_text() == "their page" and sorted(p.name for p in d.iterdir()) == ["index.html"]


# ---- recorded traces -----------------------------------------------------------------------------
def _write_trace(d: Path):
    from lockstep.conformance.schema import TraceWriter

    d.mkdir()
    (d / "manifest.json").write_text(json.dumps({
        "schema": 1, "world_size": 2, "topology": "tp", "backend": "gloo", "groups": {"world": [0, 1]},
        "roles": {"0": "leader", "1": "worker"}, "config": {}, "config_digest": "x", "versions": {}}))
    w0, w1 = TraceWriter(d / "rank0.jsonl", 0), TraceWriter(d / "rank1.jsonl", 1)
    w0.emit("rank_start", role="leader", pid=1)
    w1.emit("rank_start", role="worker", pid=2)
    for w in (w0, w1):
        w.emit("comm_enter", op="all_gather", group="world", seq=0, purpose="parity")
    for w in (w0, w1):
        w.emit("comm_exit", op="all_gather", group="world", seq=0, ok=True)
    w0.emit("header_sent", action="INFER", group="world", call_id=1, chunk_index=0, cache_epoch=0)
    w0.emit("comm_enter", op="broadcast", group="world", seq=1, purpose="header")
    w1.emit("comm_enter", op="broadcast", group="world", seq=1, purpose="header")
    w0.emit("comm_exit", op="broadcast", group="world", seq=1, ok=True)
    w1.emit("comm_exit", op="broadcast", group="world", seq=1, ok=True)
    w1.emit("header_recv", action="INFER", group="world", call_id=1, chunk_index=0, cache_epoch=0)
    w0.emit("fault_injected", fault="raise@pickle", detail="meta")
    w0.emit("rank_exit", how="exception", message="pickle failed")
    w1.emit("comm_enter", op="broadcast", group="world", seq=2, purpose="meta_size")
    w0.close()
    w1.close()


def test_cli_render_trace(tmp_path):
    pytest.importorskip("lockstep.conformance.schema")
    _write_trace(tmp_path / "run")
    out = tmp_path / "out"
    r = CliRunner().invoke(render_cmd, ["--trace", str(tmp_path / "run"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    svg = (out / "swimlane.svg").read_text()
    root = ET.fromstring(svg)
    steps = step_groups(svg)
    kinds = [g.get("data-kind") for g in steps]
    assert kinds.count("collective") == 2  # two collectives, each one bar across both ranks
    assert "fault" in kinds and "error" in kinds
    blocked = [g for g in root.iter(f"{SVG}g") if g.get("class") == "blocked"]
    assert len(blocked) == 1 and "waits for rank 0 (exited (exception))" in "".join(root.itertext())
    assert "call_id=1 chunk_index=0 cache_epoch=0" in svg


def test_cli_render_trace_bad_dir(tmp_path):
    pytest.importorskip("lockstep.conformance.schema")
    (tmp_path / "run").mkdir()
    r = CliRunner().invoke(render_cmd, ["--trace", str(tmp_path / "run"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "manifest.json" in r.output


# ---- the committed gallery -------------------------------------------------------------------------
@pytest.mark.slow
def test_committed_gallery_is_up_to_date():
    from lockstep.diagrams.gallery import GALLERY_DIR, stale

    problems = stale(GALLERY_DIR)
    assert not problems, ("the committed gallery is out of date (a spec, a recorded run under diagrams/traces/ or the "
                          "renderer changed): regenerate it with `python -m lockstep render --gallery` (about a minute) "
                          "and commit diagrams/gallery/. Differences:\n  " + "\n  ".join(problems[:20]))


# ---- looked at: headless Chromium loads the pages with every image -------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _dump_dom(page: Path) -> tuple[str, str]:
    with tempfile.TemporaryDirectory() as prof:
        p = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                            "--disable-background-networking", "--disable-component-update", "--disable-sync",
                            f"--user-data-dir={prof}", "--enable-logging=stderr", "--v=0",
                            "--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri()],
                           capture_output=True, text=True, timeout=60)
    return p.stdout, p.stderr


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_index_html_loads_in_headless_chromium(tmp_path):
    out = tmp_path / "out"
    r = CliRunner().invoke(render_cmd, ["tp", "--variant", "fm04-throw-after-header", "--max-states", "20000", "--out", str(out)])
    assert r.exit_code == 0, r.output
    from lockstep.diagrams.gallery import GALLERY_DIR

    for page in (out / "index.html", GALLERY_DIR / "index.html", GALLERY_DIR / "tp" / "fm04-throw-after-header" / "index.html"):
        dom, err = _dump_dom(page)
        assert 'data-images="ok"' in dom, (page, err[-2000:])
        assert int(re.search(r'data-image-count="(\d+)"', dom).group(1)) > 0
        assert "ERR_FILE_NOT_FOUND" not in err and "Failed to load resource" not in err, err[-2000:]
    # the check can fail: a missing image is reported
    (out / "waitfor.svg").unlink()
    dom, _err = _dump_dom(out / "index.html")
    assert 'data-images="broken"' in dom and "missing images: waitfor.svg" in dom


def test_a_user_spec_page_is_about_that_spec(tmp_path):
    """Old: a user spec's page ended "from spec/specs/<file>.py.py" and carried the KV-cache lifecycle
    drawn from lockstep's own `kv` spec, which has nothing to do with it."""
    spec = Path(__file__).resolve().parents[1] / "examples" / "hello_spec.py"
    r = CliRunner().invoke(render_cmd, [str(spec), "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    html = (tmp_path / "o" / "index.html").read_text()
    assert f"from {spec}." in html and "spec/specs/" not in html
    assert "KV-cache lifecycle" not in html and not (tmp_path / "o" / "kv").exists()
