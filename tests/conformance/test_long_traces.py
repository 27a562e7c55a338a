"""Long traces in bounded memory: the loader shares equal values between events without changing
any of them, and the replay keeps only a window behind the furthest point it reached (a backtrack
past it is INCONCLUSIVE, never DOES NOT CONFORM)."""
import json
from pathlib import Path

import pytest

from lockstep.conformance import check, loader, mapping, mutate
from lockstep.conformance.replay import Replayer
from lockstep.tracefmt import schema as S


def _replay(run, window):
    mapped = mapping.map_run(run)
    spec_name, _, params = mapping.spec_params(run.manifest, mapped)
    model, _ = check.checkable_model(spec_name, params, check.run_backend(run), run)
    return Replayer(model, mapped, window=window).run()


@pytest.mark.multirank
def test_loaded_events_equal_the_file_and_share_values(real_run):
    """Every loaded event equals its line's JSON, value types included; equal strings and short lists
    are one object across the file."""
    path = Path(real_run("tp", 2, chunks=2))
    tr = S.load_rank_trace(path / "rank1.jsonl", 1)
    raw = [json.loads(x) for x in (path / "rank1.jsonl").read_text().splitlines()]
    assert tr.events == raw
    for e, r in zip(tr.events, raw):
        assert {k: type(v) for k, v in e.items()} == {k: type(v) for k, v in r.items()}
    enters = [e for e in tr.events if e["ev"] == S.COMM_ENTER and e.get("shape")]
    assert len(enters) > 10
    assert len({id(e["ev"]) for e in enters}) == 1 and len({id(e["op"]) for e in enters if e["op"] == "all_reduce"}) == 1
    shapes = {}
    for e in enters:
        shapes.setdefault(tuple(e["shape"]), set()).add(id(e["shape"]))
    assert all(len(ids) == 1 for ids in shapes.values())


def test_shared_lists_keep_their_element_types(tmp_path):
    """[0, 1, 0] and [0, true, 0] are equal in Python but not the same ids: sharing must not turn the
    second (bad input) into the first."""
    p = tmp_path / "rank0.jsonl"
    base = {"ev": "comm_enter", "rank": 0, "op": "barrier", "group": "world", "seq": 0, "purpose": "x", "t": 1.0}
    lines = [dict(base, i=0, ids=[0, 1, 0]), dict(base, i=1, ids=[0, True, 0]), dict(base, i=2, shape=[2, 1.0])]
    p.write_text("".join(json.dumps(x) + "\n" for x in lines))
    tr = S.load_rank_trace(p, 0)
    assert [type(x) for x in tr.events[1]["ids"]] == [int, bool, int]
    assert tr.events[0]["ids"] is not tr.events[1]["ids"]
    assert [type(x) for x in tr.events[2]["shape"]] == [int, float]
    with pytest.raises(loader.BadInput, match="field 'ids'"):
        loader._check_ids(str(p), 2, tr.events[1])


@pytest.mark.multirank
def test_window_bounds_the_visited_set_and_still_conforms(real_run):
    """A small window forgets what lies behind: the clean run still conforms, with far fewer search
    nodes kept at once than the whole search visits."""
    run = loader.load(real_run("tp", 2, chunks=2))
    full = _replay(run, window=10**9)
    small = _replay(run, window=4)
    assert full.conforms and small.conforms
    assert full.peak_kept >= full.nodes - 1
    assert small.peak_kept < full.peak_kept / 4, (small.peak_kept, full.peak_kept)


@pytest.mark.multirank
@pytest.mark.slow
def test_backtrack_past_the_window_is_inconclusive(real_run):
    """On mutants of a clean run the replay rejects: with the default window every one is DOES NOT
    CONFORM; with a window of 1, a search that had to forget alternatives it would have tried
    reports INCONCLUSIVE (window exhausted), never a false verdict, and never CONFORMS."""
    run = loader.load(real_run("pp1", 3, chunks=3, hard_cut_at=2))  # plan choices: the search branches
    horizon = 0
    ms = mutate.mutants(run, 40, seed=3)
    for m in ms:
        try:
            full = check.conform_run(m.run, check_variant=False)
        except loader.BadInput:
            continue
        if full.replay.conforms:
            continue  # caught by the c10d matching alone
        assert full.verdict == "DOES_NOT_CONFORM" and not full.replay.horizon_hit
        tiny = _replay(m.run, window=1)
        assert not tiny.conforms
        if tiny.horizon_hit:
            horizon += 1
            assert tiny.budget_hit  # ConformReport.verdict: INCONCLUSIVE
    assert horizon > 0
