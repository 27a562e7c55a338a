"""Deadlock and stranding drawn as what they are: the wait-for graph at the end of a counterexample,
in the standalone figure and in the swimlane, with an element per edge; lanes marked as the verdict
says; long recorded runs folded with the divergence one click away; render's --out errors."""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from lockstep.cli.render import render as render_cmd
from lockstep.diagrams import waitfor as WF
from lockstep.diagrams.build import render_spec
from lockstep.diagrams.swimlane import Swimlane, render as render_swimlane
from lockstep.diagrams.trace import fold_plan
from lockstep.model.checker import Bounds, check
from lockstep.spec.registry import pick_backend, resolve

SVG = "{http://www.w3.org/2000/svg}"


def _ids(svg: bytes | str) -> set[str]:
    root = ET.fromstring(svg)
    return {el.get("id") for el in root.iter() if el.get("id")}


def _edge_ids_by_class(svg, cls: str) -> set[str]:
    root = ET.fromstring(svg)
    return {g.get("id") for g in root.iter(f"{SVG}g") if g.get("class") == cls and g.get("id")}


@pytest.mark.slow
@pytest.mark.parametrize("spec,variant,verdict,shape", [
    ("pp0", "queue-no-drain", "DEADLOCK", "cycle"),
    ("pp1", "om07-leader-throws", "STRANDED", "chain"),
])
def test_waitfor_edges_for_every_blocked_thread(spec, variant, verdict, shape):
    r = render_spec(spec, variant, max_states=100_000, kv=False, statespace=False)
    assert r.verdict == verdict, (r.verdict, r.message)
    cex = json.loads(r.files["counterexample.json"])
    waiting = cex["waiting"]
    assert waiting
    figure = r.files["waitfor.svg"]
    swim = r.files["swimlane.svg"]
    fig_ids = _ids(figure)
    swim_edges = _edge_ids_by_class(swim, "waitfor")
    for w in waiting:  # every blocked thread has its wait-for edge, by element id, in both drawings
        prefix = f"waitfor-{WF.safe(w['actor'])}-"
        assert any(i.startswith(prefix) for i in fig_ids), (w["actor"], sorted(fig_ids))
        assert any(i.startswith(prefix) for i in swim_edges), (w["actor"], sorted(swim_edges))
        assert WF.node_id(w["actor"]) in fig_ids
    info, params = resolve(spec, variant, {}, None)
    m = info.build(params, variant, pick_backend(info, variant, None))
    m.set_reduction(False)
    wf = WF.from_spec(m, waiting, cex["counterexample"], verdict)
    assert wf.shape == shape
    edges = {e.id for e in wf.edges}
    assert edges <= fig_ids and edges <= swim_edges
    html = r.files["index.html"].decode()
    assert html.index('id="waitfor"') < html.index('id="counterexample"')  # the figure is at the top of the report
    if shape == "cycle":
        # pp0: the main thread waits for room in D_in (only the comms thread drains it), the comms thread
        # waits for room in D_out (only the main thread drains it): the cycle closes through the queues
        assert wf.cycle == ["rank0", "rank0.comms"]
        assert "waitfor-rank0-rank0.comms" in edges and "waitfor-rank0.comms-rank0" in edges
        conds = {e.src: e.label for e in wf.edges if e.via == "condition"}
        assert "d_in" in conds["rank0"] and "d_out" in conds["rank0.comms"]
        assert "wait-for cycle: rank0 → rank0.comms → rank0" in html
    else:
        # om07: rank 2 waits in the mesh broadcast for the leader (rank 1), which exited
        assert wf.chains == [["rank2", "rank1"]]
        assert wf.nodes["rank1"].status == "gone: exited with an error"
        root = ET.fromstring(swim)
        status = {g.get("data-lane"): g.get("data-status") for g in root.iter(f"{SVG}g") if g.get("class") == "lane-status"}
        assert status["1"].startswith("gone") and status["0"].startswith("gone")  # leader exited, rank0 aborted
        dead = {el.get("data-lane") for el in root.iter(f"{SVG}rect") if el.get("class") == "dead"}
        assert {"0", "1"} <= dead  # both gone lanes are greyed


def test_chain_summary_names_the_waiting_ranks_once():
    """pp1 with a mesh of 8 whose leader throws inside an envelope: seven workers wait on the gone leader.
    The summary (figure, report, swimlane header) reads as one chain, not seven."""
    info, params = resolve("pp1", "om07-leader-throws", {"mesh": "8"}, None)
    m = info.build(params, "om07-leader-throws", pick_backend(info, "om07-leader-throws", None))
    res = check(m, Bounds(max_states=100_000), liveness=False)
    m.set_reduction(False)
    wf = WF.from_spec(m, res.waiting, res.counterexample, res.verdict)
    assert sorted(wf.chains) == [[f"rank{r}", "rank1"] for r in range(2, 9)]
    assert wf.summary() == "wait-for chain: ranks 2-8 → rank1 (gone: exited with an error)"


def test_condition_names_the_guard_and_the_full_queue():
    info, params = resolve("pp0", "queue-no-drain", {}, None)
    m = info.build(params, "queue-no-drain", "gloo")
    res = check(m, Bounds(max_states=100_000))
    m.set_reduction(False)
    wf = WF.from_spec(m, res.waiting, res.counterexample, res.verdict)
    cond = wf.conditions["rank0"]
    assert cond.state == "PREFLIGHT"
    # the guard's words (why=) with the values behind its false part; the false part itself in the details
    assert cond.short() == f"waits until room in D_in, the envelope within the contract (d_in: {params['depth']} item" + (
        "s" if params["depth"] != 1 else "") + f", depth={params['depth']})"
    assert "preflight_ok_enqueue: room in D_in, the envelope within the contract — false: room(c)" in cond.lines()
    assert cond.reads["d_in"] == f"{params['depth']} item" + ("s" if params["depth"] != 1 else "")
    assert cond.writers["d_in"] == ["rank0.comms"]
    put = wf.conditions["rank0.comms"]
    assert "room in D_out" in put.short() and "d_out: " in put.short() and "rank0" in put.writers["d_out"]
    assert "put_result: room in D_out, no abort — false: len(c.g.d_out) < depth" in put.lines()


def test_swimlane_without_waitfor_still_has_edge_ids():
    steps = [{"step": 1, "rank": 1, "role": "w", "actor": "rank1", "transition": "recv", "op": "recv group=world src=0",
              "group": "world", "ids": {}, "issued": True}]
    waiting = [{"rank": 1, "actor": "rank1", "state": "S", "op": "recv group=world src=0", "waits_for": [0],
                "partner_status": {"0": "gone"}}]
    svg = render_swimlane(Swimlane(steps, verdict="STRANDED", message="m", waiting=waiting, lanes=[0, 1]))
    assert "waitfor-rank1-rank0" in _edge_ids_by_class(svg, "waitfor")
    assert "rank0: gone" in "".join(ET.fromstring(svg).itertext())


def test_fold_plan_keeps_divergence_and_events():
    steps = [{"step": i + 1, "rank": i % 2, "transition": f"t{i % 3}", "ids": {}} for i in range(200)]
    steps[150]["kind"] = "error"
    folds = fold_plan(steps, highlight=120)
    assert folds
    folded = {k for a, b, _ in folds for k in range(a, b + 1)}
    assert not folded & set(range(108, 133)) and 150 not in folded and 0 not in folded and 199 not in folded
    assert all("uneventful steps" in label for *_x, label in folds)
    svg = render_swimlane(Swimlane(steps, verdict="TRACE", message="", folds=folds, highlight={"index": 120, "note": "x"}))
    root = ET.fromstring(svg)
    drawn = [g for g in root.iter(f"{SVG}g") if g.get("class") == "step"]
    assert len(drawn) == 200 - len(folded)
    assert len([g for g in root.iter(f"{SVG}g") if g.get("class") == "fold"]) == len(folds)
    assert "divergence" in _ids(svg)
    assert fold_plan(steps[:40]) == []  # short runs are drawn in full


FM04 = Path(__file__).resolve().parents[1] / "diagrams" / "traces" / "tp-fm04-throw-after-header"


@pytest.mark.skipif(not FM04.is_dir(), reason="the recorded fm04 run is not in this checkout")
def test_render_trace_long_run_divergence_one_click(tmp_path):
    r = CliRunner().invoke(render_cmd, ["--trace", str(FM04), "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert "conformance rejects this trace: the first event" in r.output
    assert "expected outcome of an unsafe run" in r.output and "--unsafe fm04-throw-after-header" in r.output
    html = (tmp_path / "o" / "index.html").read_text()
    assert 'href="#divergence"' in html and 'id="divergence"' in html  # the swimlane is inline: the anchor works
    assert 'id="errors"' in html and "class=\"fold\"" in html
    svg = (tmp_path / "o" / "swimlane.svg").read_text()
    height = float(re.search(r'height="([\d.]+)"', svg).group(1))
    assert height < 4000  # folded (unfolded: about 9,700 px)


@pytest.mark.parametrize("mode", ["spec", "gallery"])
@pytest.mark.parametrize("where", ["file", "under-file", "proc"])
def test_render_out_errors_one_line(tmp_path, where, mode):
    """Refused before any work (the gallery takes a minute to build): one line, exit 2, nothing touched."""
    f = tmp_path / "f"
    f.write_text("x")
    out = {"file": f, "under-file": f / "sub", "proc": Path("/proc/lockstep-render")}[where]
    args = ["tp", "--max-states", "50"] if mode == "spec" else ["--gallery"]
    r = CliRunner().invoke(render_cmd, args + ["--out", str(out)])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert f.read_text() == "x"


def test_render_help_states_exit_codes():
    r = CliRunner().invoke(render_cmd, ["--help"])
    assert r.exit_code == 0 and "Exit status" in r.output and "2  bad usage" in r.output


@pytest.mark.parametrize("files", [["/ABS/victim.txt"], ["../victim.txt"], "notes", [3]])
def test_render_refuses_a_manifest_that_names_files_outside_out(tmp_path, files):
    """The manifest a render leaves in --out lists what the next render may remove.  Planted: a
    manifest edited to name a file outside --out (absolute, or through ..), or not a list of paths.
    Old: the next render deleted /ABS/victim.txt, and read "notes" as the files n, o, t, e, s.  Now:
    one line, exit 2, nothing removed."""
    out = tmp_path / "out"
    assert CliRunner().invoke(render_cmd, ["tp", "--max-states", "50", "--out", str(out)]).exit_code == 0
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    (out / "n").write_text("mine too")
    m = out / ".lockstep-render.json"
    doc = json.loads(m.read_text())
    doc["files"] = ([str(victim) if f == "/ABS/victim.txt" else f for f in files] + doc["files"]
                    if isinstance(files, list) else files)
    m.write_text(json.dumps(doc))
    r = CliRunner().invoke(render_cmd, ["tp", "--max-states", "50", "--out", str(out)])
    assert r.exit_code == 2 and "is not a manifest lockstep render wrote" in r.output, r.output
    assert victim.read_text() == "mine" and (out / "n").read_text() == "mine too"


def test_render_refuses_a_file_where_it_needs_a_directory_before_writing(tmp_path):
    """Planted: a file of the user's named `roles` in --out, where the render puts a directory.  Old:
    index.html and kv/ were written, then the render failed (exit 2) and left them without a
    manifest, so every later render there was refused.  Now it is refused first; nothing written."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "roles").write_text("mine")
    r = CliRunner().invoke(render_cmd, ["tp", "--max-states", "50", "--out", str(out)])
    assert r.exit_code == 2 and "(roles)" in r.output, r.output
    assert sorted(p.name for p in out.iterdir()) == ["roles"]


def test_render_refuses_an_empty_out():
    r = CliRunner().invoke(render_cmd, ["tp", "--max-states", "50", "--out", ""])
    assert r.exit_code == 2 and "empty string" in r.output, r.output
