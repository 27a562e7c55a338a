"""Flight Recorder dumps: load (pickle through a restricted unpickler, or the JSON form; versions 2.x),
rebuild gloo's empty ``pg_config``, and report per process group the sequence number each rank
reached and the first cross-rank mismatch (missing ranks, collective type, sizes, dtypes), with the
verdict class that shape of failure is an instance of.

A dump is untrusted input: ``pickle.load`` is never used.  ``PlainUnpickler.find_class``
(tracefmt/plain.py) refuses every global, so only plain data (dict, list, tuple, str, bytes, int,
float, bool, None, which pickle encodes without globals) can be loaded; anything else is a BadInput
naming the file, as is every field of the wrong type.

The dumps of one run only (their ``lockstep.run_id``), one per rank of the world (missing ranks are
refused unless allowed); collectives compared per group from the first seq every rank's ring buffer
still holds; coalesced entries of one seq compared as a list; on NCCL the entry ``state`` says where a
rank is blocked; p2p entries (``p2p_seq_id``; gloo records none) are counted, their state read, and
every send paired with its peer's recv (``pair_p2p``: sizes and dtypes compared, ops without a
partner reported).
"""
from __future__ import annotations

import json
import reprlib
import re
from pathlib import Path

from ..spec.fabric import rank_runs, ranks_text
from ..tracefmt.plain import PlainUnpickler, loads_plain  # noqa: F401 - loads_plain is re-exported
from .loader import BadInput

SUPPORTED_MAJOR = 2


_PlainUnpickler = PlainUnpickler  # the name tests and older code use


def load_dump(path: str | Path) -> dict:
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise BadInput(f"{p}: cannot read ({e.strerror or e})", str(p)) from None
    if raw[:1] in (b"{", b"["):
        try:
            d = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise BadInput(f"{p}: not valid JSON ({e})", str(p)) from None
    else:
        try:
            d = loads_plain(raw)
        except Exception as e:  # noqa: BLE001 - any unpickling failure is bad input
            raise BadInput(f"{p}: not a plain-data Flight Recorder pickle ({str(e)[:200]})", str(p)) from None
    if not isinstance(d, dict):
        raise BadInput(f"{p}: a Flight Recorder dump is a dict, got {type(d).__name__}", str(p))
    for f in ("version", "entries"):
        if f not in d:
            raise BadInput(f"{p}: field {f!r}: required field is missing", str(p), None, f)
    v = str(d["version"]) if isinstance(d["version"], (str, int, float)) else ""
    if not re.fullmatch(r"\d+\.\d+", v) or int(v.split(".")[0]) != SUPPORTED_MAJOR:
        raise BadInput(f"{p}: field 'version': {str(d['version'])[:40]!r} is not supported (this reader knows 2.x)", str(p), None, "version")
    if not isinstance(d["entries"], list):
        raise BadInput(f"{p}: field 'entries': expected a list, got {type(d['entries']).__name__}", str(p), None, "entries")
    for k, e in enumerate(d["entries"]):
        _check_entry(p, k, e)
    pc = d.get("pg_config")
    if pc is not None:
        if not isinstance(pc, dict) or not all(isinstance(c, dict) for c in pc.values()):
            raise BadInput(f"{p}: field 'pg_config': expected an object of objects", str(p), None, "pg_config")
        for key, c in pc.items():
            for f in ("name", "desc"):
                if f in c and not isinstance(c[f], str):
                    raise BadInput(f"{p}: pg_config[{key!r}]: field {f!r}: expected a string, got {type(c[f]).__name__}",
                                   str(p), None, f)
            if "ranks" in c and _ranks(c["ranks"]) is None and c["ranks"] not in ("[]", "", []):
                raise BadInput(f"{p}: pg_config[{key!r}]: field 'ranks': expected a list of ints, got {str(c['ranks'])[:60]!r}",
                               str(p), None, "ranks")
    meta = d.get("lockstep")
    if meta is not None:
        if not isinstance(meta, dict):
            raise BadInput(f"{p}: field 'lockstep': expected an object", str(p), None, "lockstep")
        for f, typ in (("run_id", str), ("rank", int), ("world_size", int), ("backend", str)):
            if meta.get(f) is not None and (not isinstance(meta[f], typ) or isinstance(meta[f], bool)):
                raise BadInput(f"{p}: field 'lockstep.{f}': expected {typ.__name__}, got {type(meta[f]).__name__}",
                               str(p), None, f"lockstep.{f}")
        if meta.get("p2p_entries") is not None:
            if not isinstance(meta["p2p_entries"], list):
                raise BadInput(f"{p}: field 'lockstep.p2p_entries': expected a list, got {type(meta['p2p_entries']).__name__}",
                               str(p), None, "lockstep.p2p_entries")
            for k, e in enumerate(meta["p2p_entries"]):
                _check_entry(p, k, e, "lockstep.p2p_entries")
                if e.get("is_p2p") is not True:
                    raise BadInput(f"{p}: lockstep.p2p_entries[{k}]: field 'is_p2p': expected true", str(p), k, "is_p2p")
    if "rank" in d and (not isinstance(d["rank"], int) or isinstance(d["rank"], bool) or d["rank"] < 0):
        raise BadInput(f"{p}: field 'rank': expected a rank (int >= 0), got {str(d['rank'])[:40]!r}", str(p), None, "rank")
    return d


def _int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_entry(p: Path, k: int, e, field: str = "entries") -> None:
    """Every field conform reads, with its type: one line naming file, entry and field otherwise."""
    where = f"{p}: {field}[{k}]"
    if not isinstance(e, dict):
        raise BadInput(f"{where}: expected an object, got {type(e).__name__}", str(p), k, None)
    for f in ("collective_seq_id", "profiling_name", "process_group"):
        if f not in e:
            raise BadInput(f"{where}: field {f!r}: required field is missing", str(p), k, f)

    def bad(f, want):
        raise BadInput(f"{where}: field {f!r}: expected {want}, got {type(e[f]).__name__} {_shown(e[f])}", str(p), k, f)

    for f in ("collective_seq_id", "p2p_seq_id", "record_id", "op_id"):
        if f in e and e[f] is not None and not (_int(e[f]) and 0 <= e[f] < 1 << 63):
            bad(f, "an int >= 0 (an int64)")
    if not isinstance(e["profiling_name"], str):
        bad("profiling_name", "a string")
    pg = e["process_group"]
    if not (isinstance(pg, str) or (isinstance(pg, (list, tuple)) and len(pg) == 2 and all(isinstance(x, str) for x in pg))):
        bad("process_group", "[name, desc] (two strings)")
    for f in ("input_sizes", "output_sizes"):
        if f in e and e[f] is not None:
            v = e[f]
            if not (isinstance(v, list) and all(isinstance(x, list) and all(_int(y) for y in x) for x in v)):
                bad(f, "a list of shapes (lists of ints)")
    for f in ("input_dtypes", "output_dtypes"):
        if f in e and e[f] is not None and not (isinstance(e[f], list) and all(isinstance(x, str) for x in e[f])):
            bad(f, "a list of dtype names")
    if "state" in e and e["state"] is not None and e["state"] not in STATES:
        raise BadInput(f"{where}: field 'state': {str(e['state'])[:40]!r} is not one of {', '.join(STATES)}", str(p), k, "state")
    if "is_p2p" in e and e["is_p2p"] is not None and not isinstance(e["is_p2p"], bool):
        bad("is_p2p", "true/false")
    if "tag" in e and e["tag"] is not None and not _int(e["tag"]):
        bad("tag", "an int")
    if "purpose" in e and e["purpose"] is not None and not isinstance(e["purpose"], str):
        bad("purpose", "a string")
    if "async" in e and e["async"] is not None and not isinstance(e["async"], bool):
        bad("async", "true/false")


STATES = ("scheduled", "started", "completed")


def _rank_of(path: Path, d: dict) -> int:
    m = re.search(r"(\d+)(?:\.\w+)?$", path.name)
    if "rank" in d:
        return d["rank"]
    if m:
        return int(m.group(1))
    raise BadInput(f"{path}: cannot tell which rank this dump belongs to (name it <prefix><N>, e.g. lockstep_fr_rank_0)", str(path))


def _ranks(s) -> list[int] | None:
    if isinstance(s, list):
        return [int(x) for x in s] if all(_int(x) for x in s) else None
    if isinstance(s, str) and s.strip("[] "):
        try:
            return [int(x) for x in s.strip("[]").split(",") if x.strip()]
        except ValueError:
            return None
    return None


def _manifest_beside(d: Path) -> dict | None:
    for m in (d / "manifest.json", d.parent / "manifest.json"):
        if m.exists():
            try:
                obj = json.loads(m.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise BadInput(f"{m}: not valid JSON ({e})", str(m)) from None
            if not isinstance(obj, dict):
                raise BadInput(f"{m}: expected a JSON object", str(m))
            return obj
    return None


def _shown(v) -> str:
    """A short repr of a value read from a dump, whatever it holds (an int of thousands of digits, or
    lists nested deeper than Python's stack, have no repr)."""
    try:
        return repr(reprlib.repr(v))
    except (ValueError, RecursionError):
        return "(a value too large to show)"


def _summary_beside(d: Path) -> dict:
    """The run's summary.json in the dump folder or the folder above it ({} when none is readable)."""
    for m in (d / "summary.json", d.parent / "summary.json"):
        if m.is_file():
            try:
                obj = json.loads(m.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError):
                return {}
            return obj if isinstance(obj, dict) else {}
    return {}


def load_dir(dump_dir: str | Path, allow_missing: bool = False) -> tuple[dict[int, dict], dict[str, list[int]], dict]:
    """The dumps of one run, by rank, the groups (name -> global ranks) and ``{world, missing}``.  Refused (BadInput): dumps
    of different runs (their run ids differ), two dumps of one rank, a rank outside the world, and --
    unless ``allow_missing`` -- a world with ranks that left no dump (named)."""
    d = Path(dump_dir)
    if not d.is_dir():
        raise BadInput(f"{d}: no such dump directory", str(d))
    files = sorted(p for p in d.iterdir() if p.is_file() and p.suffix in (".pkl", ".pickle", ".json", "") and p.name not in ("manifest.json", "summary.json")
                   and not p.name.startswith("."))
    if not files:
        raise BadInput(f"{d}: no Flight Recorder dumps (lockstep_fr_rank_<N>, or <name><N>.pkl/.json)", str(d))
    dumps: dict[int, dict] = {}
    where: dict[int, Path] = {}
    for p in files:
        dd = load_dump(p)
        r = _rank_of(p, dd)
        if r in dumps:
            raise BadInput(f"{p}: a second dump of rank {r} (the first is {where[r].name}): one dump per rank", str(p), None, "rank")
        dumps[r], where[r] = dd, p
    run_ids = {r: (dd.get("lockstep") or {}).get("run_id") for r, dd in dumps.items()}
    distinct = {x for x in run_ids.values() if x is not None}
    if len(distinct) > 1 or (distinct and None in run_ids.values()):
        by = {}
        for r, x in sorted(run_ids.items()):
            by.setdefault(x, []).append(r)
        raise BadInput(f"{d}: dumps from different runs (run ids " + "; ".join(f"{x}: ranks {rs}" for x, rs in by.items())
                       + "): dumps of one run only", str(d), None, "run_id")
    manifest = _manifest_beside(d)
    if manifest is not None and distinct and manifest.get("run_id") not in (None, *distinct):
        raise BadInput(f"{d}: the dumps are of run {next(iter(distinct))}, the manifest beside them of run "
                       f"{manifest.get('run_id')}", str(d), None, "run_id")
    # pg_config: desc -> ranks; gloo leaves ranks empty: rebuild from the run manifest when there is
    # one beside the dumps, else from which ranks' dumps mention the group
    groups: dict[str, list[int]] = {}
    said: list[tuple[str, list[int], Path, str]] = []  # every pg_config's group: (name, ranks, dump, key)
    for r, dd in dumps.items():
        for key, cfg in (dd.get("pg_config") or {}).items():
            # named as _entry_group names an entry's group: its desc, or its pg name where the desc is "undefined"
            # (a subgroup created without group_desc=)
            desc = cfg.get("desc") if isinstance(cfg, dict) else None
            name = (desc if desc not in (None, "", "undefined") else (cfg.get("name") or key)) if isinstance(cfg, dict) else key
            rk = _ranks(cfg.get("ranks")) if isinstance(cfg, dict) else None
            if rk:
                groups[_gname(name)] = rk
                said.append((_gname(name), rk, where[r], key))
    if manifest is not None and isinstance(manifest.get("groups"), dict):
        for g, rk in manifest["groups"].items():
            if isinstance(rk, list) and all(_int(x) for x in rk):
                groups.setdefault(g, rk)
    guessed = []  # groups whose members no pg_config or manifest lists: the ranks whose dumps hold its entries
    for r, dd in dumps.items():
        for e in dd["entries"]:
            g = _entry_group(dd, e)
            if g not in groups:
                groups[g] = sorted(rr for rr, d2 in dumps.items() if any(_entry_group(d2, x) == g for x in d2["entries"]))
                guessed.append(g)
    worlds = {w for w in ((dd.get("lockstep") or {}).get("world_size") for dd in dumps.values()) if w is not None}
    if manifest is not None and _int(manifest.get("world_size")):
        worlds.add(manifest["world_size"])
    if len(worlds) > 1:
        raise BadInput(f"{d}: the dumps disagree on the world size ({sorted(worlds)})", str(d), None, "world_size")
    # (without a world size, the largest rank a dump or a group names sets it: a rank no dump covers is
    # then a missing dump)
    world = next(iter(worlds)) if worlds else max([len(m) for m in groups.values()] + [max(dumps) + 1]
                                                  + [max(rk) + 1 for _, rk, _, _ in said])
    for g, rk, p, key in said:  # a member outside the world: a group no rank of this run can be in
        bad = [x for x in rk if not 0 <= x < world]
        if bad:
            raise BadInput(f"{p}: pg_config[{key!r}] (group {g}) names rank {bad[0]}, outside the world of {world} ranks "
                           f"(expected global ranks 0..{world - 1})", str(p), None, "pg_config")
    stray = sorted(r for r in dumps if r >= world)
    if stray:
        raise BadInput(f"{where[stray[0]]}: rank {stray[0]} is outside the world of {world} ranks", str(where[stray[0]]), None, "rank")
    missing = sorted(set(range(world)) - set(dumps))
    if missing and not allow_missing:
        raise BadInput(f"{d}: no dump of {ranks_text(missing)} (world of {world}): a missing dump hides "
                       f"what that rank did; pass --allow-missing to check the others anyway", str(d), None, "rank")
    return dumps, groups, {"world": world, "missing": missing, "guessed_groups": guessed,
                           "topology": manifest.get("topology") if manifest is not None else None}


def _entry_group(dd: dict, e: dict) -> str:
    """An entry's group name: pg_config's desc for its pg name (entries carry 'undefined' as desc for
    subgroups created without one), else the entry's own desc."""
    pg = e["process_group"]
    name, desc = (pg[0], pg[1]) if isinstance(pg, (list, tuple)) else (str(pg), str(pg))
    cfg = (dd.get("pg_config") or {}).get(str(name))
    if isinstance(cfg, dict) and cfg.get("desc") not in (None, "", "undefined"):
        return _gname(cfg["desc"])
    return _gname(desc if desc not in ("undefined", "") else str(name))


def _gname(desc: str) -> str:
    return "world" if desc in ("default_pg", "world", "0", "") else desc


def _op(e: dict) -> str:
    return e["profiling_name"].split(":", 1)[-1].split(" ")[0]


def _is_nccl(dd: dict) -> bool:
    return any(e["profiling_name"].startswith("nccl:") for e in dd["entries"])


def check_dumps(dumps: dict[int, dict], groups: dict[str, list[int]], meta: dict | None = None) -> dict:
    """Per group, each rank's collectives by ``collective_seq_id`` (coalesced ops: several entries of
    one seq, compared as a list), compared from the first seq every rank's ring buffer still holds (a
    wrapped buffer starts later: aligned as PyTorch's analyzer does, not from the lowest seq).  Then
    entry ``state`` on NCCL (an op still ``scheduled``/``started`` at dump time is where the rank is
    blocked) and p2p entries (``p2p_seq_id``)."""
    per_group = {}
    verdicts = []
    meta = meta or {}
    for g, members in sorted(groups.items()):
        seqs: dict[int, dict[int, list]] = {}
        for r in members:
            dd = dumps.get(r)
            if dd is None:
                continue
            for e in dd["entries"]:
                if e.get("is_p2p") or _entry_group(dd, e) != g:
                    continue
                seqs.setdefault(r, {}).setdefault(e["collective_seq_id"], []).append(e)
        present_members = [r for r in members if r in dumps]
        wrapped = {r for r in present_members if _wrapped(dumps[r])}
        judged = [r for r in present_members if r in seqs or r not in wrapped]
        # None: the rank's ring buffer wrapped and holds nothing of this group (how far it got is unknown)
        reached = {str(r): (max(seqs[r]) if r in seqs else (None if r in wrapped else 0)) for r in present_members}
        first = None
        top = max((max(s) for s in seqs.values() if s), default=0)
        start = max((min(s) for s in seqs.values() if s), default=1)  # every judged rank's buffer covers it
        for n in range(start, top + 1):
            calls = {r: seqs.get(r, {}).get(n) for r in judged}
            have = {r: e for r, e in calls.items() if e is not None}
            missing = [r for r, e in calls.items() if e is None]
            if missing:
                e0 = next(iter(have.values()))[0] if have else {}
                first = {"seq": n, "kind": "missing_ranks", "missing": missing, "present": sorted(have),
                         "op": _op(e0) if have else None, "sizes": e0.get("input_sizes"), "dtypes": e0.get("input_dtypes")}
                break
            ref_r = min(have)
            ref = have[ref_r]
            for r, es in have.items():
                for kind, f in (("type", _op), ("size", lambda x: x.get("input_sizes")), ("dtype", lambda x: x.get("input_dtypes"))):
                    if [f(x) for x in es] != [f(x) for x in ref]:
                        fa = [f(x) for x in ref]
                        fb = [f(x) for x in es]
                        first = {"seq": n, "kind": kind, "ranks": {str(ref_r): fa[0] if len(fa) == 1 else fa,
                                                                   str(r): fb[0] if len(fb) == 1 else fb}, "op": _op(ref[0])}
                        break
                if first:
                    break
            if first:
                break
        info = {"members": members, "reached": reached, "first_mismatch": first, "compared_from": start}
        if wrapped - set(judged):
            info["unjudged"] = sorted(wrapped - set(judged))
        per_group[g] = info
        if first is not None:
            if first["kind"] in ("type", "size", "dtype"):
                verdicts.append({"verdict": "COLLECTIVE_MISMATCH", "group": g,
                                 "message": f"collective #{first['seq']} on {g}: {first['kind']} differs {first['ranks']}"})
            else:
                gone = [r for r in first["missing"]]
                verdicts.append({"verdict": "STRANDED", "group": g,
                                 "message": f"{ranks_text(first['present'])} entered {first['op']} #{first['seq']} on {g}; "
                                            f"{ranks_text(gone)} never did (stopped at "
                                            f"{', '.join(str(reached[str(r)]) for r in gone)}): the ranks that entered wait "
                                            f"for partners that moved on, exited or wedged (STRANDED; DEADLOCK if those "
                                            f"partners are themselves blocked in an op Flight Recorder does not see, e.g. p2p)"})
    verdicts = _circular_waits(dumps, per_group, verdicts)
    pairs, p2p_verdicts = pair_p2p(dumps, groups)
    verdicts += p2p_verdicts
    pending = {}
    p2p = {}
    for r, dd in sorted(dumps.items()):
        n = p2p_entries(dd)
        if n:
            p2p[str(r)] = {"entries": len(n), "last_p2p_seq": max(e.get("p2p_seq_id") or 0 for e in n),
                           "recorded_by": "lockstep" if _p2p_from_trace(dd) else "torch"}
        # gloo records every entry as scheduled: its state says nothing; NCCL's does, and so does the state
        # of the p2p entries lockstep recorded from the rank's trace
        states_mean = (dd["entries"] if _is_nccl(dd) else []) + (n if _p2p_from_trace(dd) else [])
        for e in sorted(states_mean, key=lambda x: x.get("time_created_ns") or 0):
            if e.get("state") in ("scheduled", "started") and not e.get("async"):
                pending[str(r)] = {"group": _entry_group(dd, e), "op": _op(e), "state": e["state"], "p2p": bool(e.get("is_p2p")),
                                   "seq": e.get("p2p_seq_id") if e.get("is_p2p") else e["collective_seq_id"]}
                break
    if pending and not verdicts:
        verdicts.append({"verdict": "PENDING_OP", "group": None,
                         "message": "ranks blocked in an op at dump time (entry state): " + "; ".join(
                             f"rank {r}: {x['op']} #{x['seq']} on {x['group']} ({x['state']})" for r, x in pending.items())})
    empty = all(not dd["entries"] and not p2p_entries(dd) for dd in dumps.values())
    return {"groups": per_group, "verdicts": verdicts, "ok": not verdicts and not empty, "empty": empty,
            "pending": pending, "p2p": p2p, "p2p_pairs": pairs, "p2p_stuck": stuck_p2p(dumps, groups, pairs), "world": meta.get("world", len(dumps)), "missing_ranks": meta.get("missing", []),
            "guessed_groups": [g for g in meta.get("guessed_groups", []) if len(groups[g]) < meta.get("world", len(dumps))],
            "topology": meta.get("topology"), "run_id": next((x for x in ((dd.get("lockstep") or {}).get("run_id") for dd in dumps.values()) if x), None),
            "versions": sorted({str(d["version"]) for d in dumps.values()}), "ranks": sorted(dumps)}


def _circular_waits(dumps: dict[int, dict], per_group: dict, verdicts: list) -> list:
    """``verdicts`` with the STRANDED groups whose waits form a cycle made one DEADLOCK: a rank that
    entered a group's stuck collective (its last collective entry: it is blocked there) waits for the
    members that never did; where one of those is itself blocked so in another group, and so on back
    to the first, no rank of the cycle can move (two process groups used in different orders)."""
    import networkx as nx

    last = {}
    for r, dd in dumps.items():
        mine = [e for e in dd["entries"] if not e.get("is_p2p")]
        if mine:
            e = max(mine, key=lambda x: (x.get("record_id") or 0, x.get("time_created_ns") or 0))
            last[r] = (_entry_group(dd, e), e["collective_seq_id"])
    waits = nx.DiGraph()
    for g, info in per_group.items():
        fm = info["first_mismatch"]
        if fm and fm["kind"] == "missing_ranks":
            for p in fm["present"]:
                if last.get(p) == (g, fm["seq"]):
                    waits.add_edges_from((p, m, {"group": g, "op": fm["op"], "seq": fm["seq"]}) for m in fm["missing"])
    knots = [c for c in nx.strongly_connected_components(waits) if len(c) > 1]
    if not knots:
        return verdicts
    on = {d["group"] for a, b, d in waits.edges(data=True) if any(a in k and b in k for k in knots)}
    out = [v for v in verdicts if not (v["verdict"] == "STRANDED" and v["group"] in on)]
    for k in sorted(knots, key=min):
        hops = "; ".join(f"rank {a} in {waits.edges[a, b]['op']} #{waits.edges[a, b]['seq']} on {waits.edges[a, b]['group']} "
                         f"waits for rank {b}" for a, b in nx.find_cycle(waits.subgraph(k), source=min(k)))
        groups = sorted({d["group"] for a, b, d in waits.subgraph(k).edges(data=True)})
        out.append({"verdict": "DEADLOCK", "group": None, "groups": groups, "ranks": sorted(k),
                    "message": f"{ranks_text(sorted(k))} wait for each other across groups {', '.join(groups)} ({hops}): "
                               f"none of them can move (collectives on different groups in different orders, or one on "
                               f"the wrong group)"})
    return out


_P2P_NAME = re.compile(r"(send) (\d+)->(\d+)|(recv) (\d+)<-(\d+)")


def _p2p_ends(e: dict) -> tuple[str, int, int] | None:
    """(send|recv, src, dst) of a p2p entry, group-local ranks, from its ``profiling_name``
    (``nccl:send 1->2``: rank 1 sends to 2; ``nccl:recv 2<-1``: rank 2 receives from 1), or None."""
    m = _P2P_NAME.fullmatch(e["profiling_name"].split(":", 1)[-1].strip())
    if m is None:
        return None
    if m.group(1):
        return "send", int(m.group(2)), int(m.group(3))
    return "recv", int(m.group(6)), int(m.group(5))


def pair_p2p(dumps: dict[int, dict], groups: dict[str, list[int]]) -> tuple[dict, list]:
    """Pair every p2p send with its peer's recv: per group and ordered (src, dst) pair, the k-th send
    of src to dst with the k-th recv of dst from src (NCCL matches p2p per peer in FIFO order;
    ``p2p_seq_id`` counts a rank's p2p ops on a group over all its peers, so it is reported, not
    matched on).  A pair whose sizes or dtypes differ is a P2P_MISMATCH; an op left without a partner
    (a send nobody receives, a recv nobody sends) is STRANDED: its rank waits for a peer that moved
    on.  A pair of ranks is not judged when either's ring buffer wrapped (the first ops of the pair
    are lost, so the k-th ones no longer correspond) or either's dump is missing.

    Returns ({"group src->dst": {sends, recvs, paired, judged, first_mismatch, unmatched}}, verdicts);
    ranks are global."""
    ops: dict[tuple[str, int, int], dict[str, list[dict]]] = {}
    for r, dd in sorted(dumps.items()):
        for e in p2p_entries(dd):
            ends = _p2p_ends(e)
            g = _entry_group(dd, e)
            members = sorted(groups.get(g) or [])
            if ends is None or not members or not all(0 <= x < len(members) for x in ends[1:]):
                continue  # no peer in its name, or a group the manifest does not list: counted in "p2p" only
            kind, src, dst = ends[0], members[ends[1]], members[ends[2]]
            if (src if kind == "send" else dst) != r:
                continue  # an entry of another rank's side: not this dump's own op
            ops.setdefault((g, src, dst), {"send": [], "recv": []})[kind].append(e)
    out: dict[str, dict] = {}
    verdicts: list[dict] = []
    for (g, src, dst), sides in sorted(ops.items()):
        order = lambda x: (x.get("record_id") or 0)
        sends, recvs = sorted(sides["send"], key=order), sorted(sides["recv"], key=order)
        judged = all(x in dumps and (_p2p_from_trace(dumps[x]) or not _wrapped(dumps[x])) for x in (src, dst))
        info = {"sends": len(sends), "recvs": len(recvs), "paired": min(len(sends), len(recvs)), "judged": judged,
                "first_mismatch": None, "unmatched": None}
        out[f"{g} {src}->{dst}"] = info
        if not judged:
            continue
        for k, (a, b) in enumerate(zip(sends, recvs)):
            for what, f in (("size", "input_sizes"), ("dtype", "input_dtypes")):
                if a.get(f) != b.get(f):
                    info["first_mismatch"] = {"pair": k + 1, "differs_in": what, "send": a.get(f), "recv": b.get(f),
                                              "send_p2p_seq": a.get("p2p_seq_id"), "recv_p2p_seq": b.get("p2p_seq_id")}
                    verdicts.append({"verdict": "P2P_MISMATCH", "group": g,
                                     "message": f"send #{k + 1} of rank {src} to rank {dst} on {g} (p2p seq {a.get('p2p_seq_id')}) "
                                                f"and rank {dst}'s recv (p2p seq {b.get('p2p_seq_id')}): {what} differs "
                                                f"({a.get(f)} sent, {b.get(f)} received)"})
                    break
            if info["first_mismatch"]:
                break
        if len(sends) != len(recvs):
            extra, who, kind = (sends, src, "send") if len(sends) > len(recvs) else (recvs, dst, "recv")
            e = extra[min(len(sends), len(recvs))]
            info["unmatched"] = {"rank": who, "op": kind, "p2p_seq": e.get("p2p_seq_id"), "state": e.get("state"),
                                 "count": abs(len(sends) - len(recvs))}
            info["_entry"] = e
            peer = dst if kind == "send" else src
            verdicts.append({"verdict": "STRANDED", "group": g,
                             "message": f"rank {who}'s {kind} #{min(len(sends), len(recvs)) + 1} "
                                        f"{'to' if kind == 'send' else 'from'} rank {peer} on {g} (p2p seq {e.get('p2p_seq_id')}, "
                                        f"{e.get('state')}) has no matching {'recv' if kind == 'send' else 'send'} on rank {peer}: "
                                        f"rank {who} waits for a peer that never posted its side"})
    return out, verdicts


def p2p_entries(dd: dict) -> list[dict]:
    """A dump's p2p entries: torch's own (NCCL records them), else the ones lockstep recorded from the
    rank's trace (``lockstep.p2p_entries``: gloo's Flight Recorder records no p2p op)."""
    own = [e for e in dd["entries"] if e.get("is_p2p")]
    return own or list((dd.get("lockstep") or {}).get("p2p_entries") or [])


def _p2p_from_trace(dd: dict) -> bool:
    return not any(e.get("is_p2p") for e in dd["entries"]) and bool((dd.get("lockstep") or {}).get("p2p_entries"))


def stuck_p2p(dumps: dict[int, dict], groups: dict[str, list[int]], pairs: dict) -> list[dict]:
    """The p2p ops ranks were stuck in: ops left without a partner (``pair_p2p``'s unmatched) and ops
    whose state says they never completed (NCCL entries; lockstep's entries from the trace), one per
    rank, peer and direction, with what the variant match compares: group, direction, peer, the
    message part (``purpose`` where lockstep recorded it), size, dtype and state.  Ranks are global."""
    out: dict[tuple, dict] = {}

    def add(r: int, e: dict, why: str) -> None:
        ends = _p2p_ends(e)
        dd = dumps[r]
        g = _entry_group(dd, e)
        members = sorted(groups.get(g) or [])
        if ends is None or not all(0 <= x < len(members) for x in ends[1:]):
            return
        kind, src, dst = ends[0], members[ends[1]], members[ends[2]]
        peer = dst if kind == "send" else src
        key = (r, g, kind, peer)
        if key in out:
            return
        sizes, dtypes = e.get("input_sizes") or [], e.get("input_dtypes") or []
        out[key] = {"rank": r, "group": g, "op": kind, "peer": peer, "p2p_seq": e.get("p2p_seq_id"),
                    "state": e.get("state"), "why": why, "size": list(sizes[0]) if sizes else None,
                    "dtype": dtypes[0] if dtypes else None, "tag": e.get("tag"), "purpose": e.get("purpose")}

    for info in pairs.values():
        e = info.pop("_entry", None)
        if e is not None and info.get("unmatched"):
            add(info["unmatched"]["rank"], e, "no partner")
    for r, dd in sorted(dumps.items()):
        if not (_is_nccl(dd) or _p2p_from_trace(dd)):
            continue
        for e in sorted(p2p_entries(dd), key=lambda x: x.get("time_created_ns") or 0):
            if e.get("state") in ("scheduled", "started") and not e.get("async"):
                add(r, e, "never completed")
                break
    return sorted(out.values(), key=lambda x: (x["rank"], x["group"], x["op"], x["peer"]))


def collective_sequences(dumps: dict[int, dict], rep: dict) -> dict[str, dict]:
    """Per group with collectives: ``{"members", "ops", "from", "wrapped"}``: the op names
    (``profiling_name`` without its backend) of the collectives every member entered, in seq order from
    ``from`` (``check_dumps``' ``compared_from``) up to the group's first mismatch (the one some members
    never entered, or entered with another op); a coalesced seq is a tuple of its ops.  ``wrapped``: a
    member's ring buffer lost the group's first collectives (``from`` > 1, or it holds none of them)."""
    out = {}
    for g, info in rep["groups"].items():
        seqs: dict[int, list] = {}
        ref = None
        for r in info["members"]:
            dd = dumps.get(r)
            if dd is None:
                continue
            mine = [e for e in dd["entries"] if not e.get("is_p2p") and _entry_group(dd, e) == g]
            if mine and ref is None:
                ref = r
                for e in mine:
                    seqs.setdefault(e["collective_seq_id"], []).append(_op(e))
        if ref is None:
            continue
        fm = info["first_mismatch"]
        stop = fm["seq"] if fm else max(seqs) + 1
        start = info["compared_from"]
        ops = [x[0] if len(x) == 1 else tuple(x) for n, x in sorted(seqs.items()) if start <= n < stop]
        wrapped = start > 1 or bool(info.get("unjudged")) or any(v is None for v in info["reached"].values())
        out[g] = {"members": list(info["members"]), "ops": ops, "from": start, "wrapped": wrapped}
    return out


def _wrapped(dd: dict) -> bool:
    """The ring buffer overwrote its oldest entries (its first record id is not 0)."""
    ids = [e.get("record_id") for e in dd["entries"] if e.get("record_id") is not None]
    return bool(ids) and min(ids) > 0


def check_dir(dump_dir: str | Path, spec: str = "auto", allow_missing: bool = False, user=None,
              mid_run: bool = False) -> dict:
    """``spec``: auto or a topology (tp, pp0, pp1); ``user``: (SpecInfo, raw parameters) of a user's own
    spec instead, which must run the recorded collectives and end as the run did (``flight_user``; a
    clean run it does not follow DOES_NOT_CONFORM, one it follows only within a bound INCONCLUSIVE;
    ``mid_run``: the dumps were taken while the run went on, their collectives a prefix)."""
    from . import flight_spec, flight_user

    dumps, groups, meta = load_dir(dump_dir, allow_missing=allow_missing)
    if user is not None:  # a group the spec names: its members are the spec's (gloo's dumps do not say them)
        known = flight_user.spec_groups(*user)
        for g, rk in groups.items():
            if g in known and set(rk) <= known[g]:
                groups[g] = sorted(known[g])
                meta["guessed_groups"] = [x for x in meta["guessed_groups"] if x != g]
    rep = check_dumps(dumps, groups, meta)
    rep["schema"] = 1
    rep["dump_dir"] = str(dump_dir)
    stopped = sorted(r for r, dd in dumps.items() if (dd.get("lockstep") or {}).get("interrupted") is True)
    summary = _summary_beside(Path(dump_dir))
    if stopped or summary.get("interrupted") is True:
        rep["interrupted"] = stopped or True
    rep["verdict"] = "INCONCLUSIVE" if rep["empty"] or rep.get("interrupted") else ("CONSISTENT" if rep["ok"] else "MISMATCH")
    if user is not None:  # a user's own spec: a world it cannot be built for is the user's -p (BadInput, exit 2)
        m = rep["spec_check"] = flight_user.match(rep, *user, sequences=collective_sequences(dumps, rep), mid_run=mid_run,
                                                  gloo=not any(_is_nccl(dd) for dd in dumps.values()))
        h = m.get("hardened")
        if rep["verdict"] == "CONSISTENT" and (m.get("error") or (h is not None and not h["follows"])):
            rep["ok"] = False
            if (m.get("error") and not m.get("unknown_members")) or (h is not None and h["complete"]):
                rep["verdict"] = "DOES_NOT_CONFORM"
                rep["verdicts"].append({"verdict": "DOES_NOT_CONFORM", "group": None, "message": m.get("error") or (
                    f"the run's collectives do not follow the hardened {m['spec']} (below)")})
            else:
                rep["verdict"] = "INCONCLUSIVE"
                rep["inconclusive"] = ("the dumps do not say which ranks are in a group the spec must be matched with"
                                       if m.get("unknown_members") else
                                       "the spec's search reached its bound before it followed the run")
        return rep
    if spec == "auto" and rep.get("topology") is None and not any(dd.get("lockstep") for dd in dumps.values()):
        rep["spec_check"] = {"spec": None, "world": rep["world"], "projection": [], "matches": [],
                             "skipped": "the dumps carry no lockstep run and no manifest lies beside them: a job of "
                                        "your own; give --spec PATH.py -p NAME=VALUE to hold it against your protocol"}
        return rep
    try:
        rep["spec_check"] = flight_spec.match(rep, spec)
    except (ValueError, LookupError) as e:  # a world the spec cannot be built for (e.g. tp with 1 rank)
        rep["spec_check"] = {"spec": spec, "world": rep["world"], "projection": [], "matches": [],
                             "error": f"not checkable against the spec: {str(e).splitlines()[0][:200]}"}
    return rep


def render(rep: dict) -> str:
    lines = [f"lockstep conform --flight-recorder {rep['dump_dir']}: {ranks_text(rep['ranks'])}, versions {', '.join(rep['versions'])}"
             + (f", run {rep['run_id']}" if rep.get("run_id") else "")]
    for g, info in rep["groups"].items():
        by_seq: dict = {}  # ranks that reached the same seq together (in rank order)
        for r, s in info["reached"].items():
            by_seq.setdefault(s, []).append(int(r))
        lines.append(f"  group {g} [{rank_runs(info['members'])}]: reached seq " + ", ".join(
            f"{ranks_text(rs)}: {'? (ring buffer wrapped)' if s is None else s}" for s, rs in by_seq.items()))
        fm = info["first_mismatch"]
        if fm:
            lines.append(f"    first mismatch at #{fm['seq']}: {fm['kind']} " +
                         (f"(missing {ranks_text(fm['missing'])})" if fm["kind"] == "missing_ranks" else json.dumps(fm["ranks"])))
    for v in rep["verdicts"]:
        lines.append(f"  {v['verdict']}: {v['message']}")
    if "spec_check" in rep:
        from . import flight_spec, flight_user

        m = rep["spec_check"]
        lines.extend(flight_user.render(m) if "params" in m else flight_spec.render(m))
    for k, x in (rep.get("p2p_pairs") or {}).items():
        if not x["judged"]:
            lines.append(f"  p2p {k}: {x['sends']} sends, {x['recvs']} recvs, not paired (a ring buffer wrapped or a dump is missing)")
        elif x["first_mismatch"] or x["unmatched"]:
            lines.append(f"  p2p {k}: {x['sends']} sends, {x['recvs']} recvs, {x['paired']} paired")
    for x in rep.get("p2p_stuck") or []:
        what = f", {x['purpose']}" if x.get("purpose") else ""
        lines.append(f"  rank {x['rank']} stuck in {x['op']} {'to' if x['op'] == 'send' else 'from'} rank {x['peer']} on "
                     f"{x['group']} (p2p seq {x['p2p_seq']}, {x['state']}, {x['why']}; {x['dtype']}{x['size']}{what})")
    if rep.get("pending"):
        same: dict = {}  # ranks with the same op still pending, together
        for r, x in rep["pending"].items():
            same.setdefault((x["op"], x["seq"], x["group"], x["state"]), []).append(int(r))
        for (op, seq, g, state), rs in same.items():
            lines.append(f"  {ranks_text(rs)} at dump time: {op} #{seq} on {g} still {state}")
    if rep.get("guessed_groups"):
        lines.append(f"  note: the dumps do not list the members of group(s) {', '.join(sorted(rep['guessed_groups']))} (gloo's "
                     f"never do): taken as the ranks whose dumps hold their collectives, so a member that never entered "
                     f"one is not seen (give --spec with a spec that names the groups, created with group_desc=NAME)")
    if rep.get("missing_ranks"):
        lines.append(f"  note: no dump of {ranks_text(rep['missing_ranks'])} (--allow-missing): what they did is unknown")
    if rep.get("interrupted"):
        who = f"{ranks_text(rep['interrupted'])} dumped" if isinstance(rep["interrupted"], list) else "summary.json beside the dumps says so"
        lines.append(f"INCONCLUSIVE: the run was interrupted ({who}): what the dumps show pending is where it was "
                     "stopped, not a hang or a mismatch")
    elif rep.get("empty"):
        lines.append("INCONCLUSIVE: the dumps hold no entries (on NCCL, dumps taken with _dump_fr_trace are empty; "
                     "lockstep dumps NCCL worlds with _dump_nccl_trace)")
    elif rep["verdict"] == "INCONCLUSIVE":
        lines.append(f"INCONCLUSIVE: {rep['inconclusive']}")
    else:
        lines.append(rep["verdict"])
    return "\n".join(lines)
