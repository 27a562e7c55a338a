"""Flight Recorder dumps against the spec: which planted-bug counterexample a recorded hang is an
instance of.

The comparison is on the collective and point-to-point projection of how a run ended: per group, the
ranks that entered the first unmatched collective (and its op kind), and the ranks that never did; and
the p2p ops ranks were stuck in (a send or recv without a partner, or never completed), each with its
direction, the roles of the rank and its peer, the message (envelope or result) and where in it (its
header, or inside it), dtype and size.  Every variant of the spec is model-checked (on its documented backend) and the
collective projection of its counterexample's end -- the ranks blocked in a collective on that group,
the op kind, and the ranks they wait for; or, for a mismatch, the group and the differing op kinds -- is
compared with the dump's, as are the p2p ops its counterexample ends blocked in.  A variant whose
projection explains the dump's (its collective end matches, and every stuck p2p op of the dump is one
the variant's end is blocked in) is named; none means the recorded failure is not one the spec's
planted bugs explain.
"""
from __future__ import annotations

import re
from functools import lru_cache

from ..model.checker import check
from ..spec.contract import HEADER_SHAPE
from ..spec.registry import load, pick_backend, resolve

# the spec's header collectives carry the contract's header signature (int64[5])
HEADER_OP = f"sig=int64,{tuple(HEADER_SHAPE)}"


def infer_spec(groups: dict[str, list[int]], p2p: bool = False) -> str:
    """pp1 when a process group leaves rank 0 out (the mesh); else pp0 when the ranks exchanged p2p
    ops (envelopes and results; tp has none); else tp."""
    world = max((len(m) for m in groups.values()), default=0)
    if any(0 not in m and len(m) < world for m in groups.values()):
        return "pp1"
    return "pp0" if p2p else "tp"


def _params(spec: str, world: int) -> dict[str, str]:
    if spec == "tp":
        return {"ranks": str(world)}
    if spec == "pp1":
        return {"mesh": str(world - 1)}
    return {}


@lru_cache(maxsize=8)
def _variant_shapes(spec: str, world: int) -> tuple:
    """(variant, verdict, message, collective shape or None, p2p shapes) for every variant whose
    counterexample ends in a collective or a p2p op."""
    from ..spec.loading import build_model

    info = load(spec)
    out = []
    for variant in info.variants:
        _, params = resolve(spec, variant, _params(spec, world))
        model = build_model(info, params, variant, pick_backend(info, variant, None))
        res = check(model, liveness=False)
        shape = _shape_of(res)
        p2p = _p2p_shapes_of(res, spec)
        if shape is not None or p2p:
            out.append((variant, res.verdict, res.message, shape, p2p))
    return tuple(out)


# a spec p2p op as its counterexample prints it: "recv group=world src=1 tag=5 sig=bfloat16,latents_out"
_P2P_OP = re.compile(r"(send|isend|recv) group=(\S+) (?:src|dst)=(\d+)(?: tag=(\d+))?")
# the pp specs' message tags (TAG_HEADER, TAG_META, TAG_TENSORS, TAG_RESULT, TAG_LATENTS) -> the message
# and where in it: an envelope's header, meta and tensors; a result's header (carrying its meta) and latents
SPEC_PARTS = {1: "envelope header", 2: "envelope inside", 3: "envelope inside", 4: "result header", 5: "result inside"}


def _p2p_shapes_of(res, spec: str) -> tuple:
    """The p2p ops a counterexample ends blocked in: (group, send|recv, role, peer role, part, sig)."""
    if res.verdict not in ("STRANDED", "DEADLOCK"):
        return ()
    out = []
    for w in res.waiting or []:
        m = _P2P_OP.match(w.get("op") or "")
        if m is None or not w.get("waits_for"):
            continue
        kind = "send" if m.group(1) in ("send", "isend") else "recv"
        part = SPEC_PARTS.get(int(m.group(4))) if m.group(4) else None
        out.append((m.group(2), kind, role_of(spec, w["rank"]), role_of(spec, w["waits_for"][0]), part,
                    _sig_of(w["op"])))
    return tuple(out)


def _wire_kind(op: dict) -> str:
    """header, meta (the meta size or bytes) or tensor: from the wire ``purpose`` lockstep records
    (header, result_header, meta_size, meta, tensor:NAME[i]), else from the signature (NCCL entries:
    int64[5] a header, int64[1] a meta size, uint8 meta bytes, anything else a tensor)."""
    purpose = op.get("purpose") or ""
    if purpose:
        return "header" if purpose in ("header", "result_header") else "meta" if purpose in ("meta_size", "meta") else "tensor"
    dt, size = FR_DTYPES.get(op.get("dtype"), str(op.get("dtype")).lower()), tuple(op.get("size") or ())
    return ("header" if (dt, size) == ("int64", tuple(HEADER_SHAPE)) else
            "meta" if (dt, size) == ("int64", (1,)) or dt == "uint8" else "tensor")


def _dump_part(spec: str, op: dict) -> str:
    """Which message a stuck p2p op is in (rank 0 sends envelopes, Stage 1's leader results) and where:
    its header, or inside it (the spec frames a message as header, meta, tensors; the wire as header,
    meta size, meta bytes, one tensor per field -- "inside" is what both agree on)."""
    sender = op["rank"] if op["op"] == "send" else op["peer"]
    msg = "envelope" if role_of(spec, sender) == "stage0" else "result"
    return f"{msg} {'header' if _wire_kind(op) == 'header' else 'inside'}"


def _dump_p2p_shape(spec: str, op: dict) -> tuple:
    dt = FR_DTYPES.get(op.get("dtype"), str(op.get("dtype")).lower()) if op.get("dtype") else None
    sig = (dt, tuple(op["size"])) if dt and op.get("size") is not None else None
    return (op["group"], op["op"], role_of(spec, op["rank"]), role_of(spec, op["peer"]), _dump_part(spec, op), sig,
            _wire_kind(op))


def _same_p2p(dump: tuple, spec: tuple) -> bool:
    """The same direction on the same group, between the same roles, in the same message and the same
    place in it (header or inside), and the same dtype (and shape where the spec's is concrete) where
    both are one payload: a header, or a tensor field (the wire's meta-size and meta-bytes ops are
    framing the spec folds into its message parts, so they are not compared by dtype)."""
    if dump[:5] != spec[:5]:
        return False
    if dump[5] is not None and spec[5] is not None and dump[6] != "meta" and spec[5][2] != "meta":
        return _sig_fits(spec[5], dump[5])
    return True


# Flight Recorder dtype names -> the contract's
FR_DTYPES = {"Float": "float32", "Long": "int64", "Byte": "uint8", "BFloat16": "bfloat16", "Half": "float16", "Int": "int32",
             "Double": "float64", "Bool": "bool", "Char": "int8", "Short": "int16"}
_SIG = re.compile(r"sig=(\w+),(\(([\d, ]*)\)|[^\s]+)")


def _sig_of(op: str) -> tuple | None:
    """(dtype, shape or None when the spec's shape is symbolic, the symbolic name) of a spec op string."""
    m = _SIG.search(op)
    if m is None:
        return None
    if m.group(3) is not None:
        return (m.group(1), tuple(int(x) for x in m.group(3).split(",") if x.strip()), None)
    return (m.group(1), None, m.group(2))


def _sig_fits(spec_sig: tuple, dump_sig: tuple) -> bool:
    sd, ss, name = spec_sig
    if sd == dump_sig[0] and (ss is None or tuple(ss) == tuple(dump_sig[1])):
        return True
    # the spec's one variable-length message (pickled meta bytes) is sent by the impl as an int64[1] size
    # pre-exchange and then the uint8 bytes: a rank stuck in the size exchange is stuck in that message
    return name == "meta" and dump_sig == ("int64", (1,))


def _shape_of(res) -> tuple | None:
    if res.verdict == "COLLECTIVE_MISMATCH" and "group" in res.detail:
        calls = list(res.detail.get("calls", {}).values())
        kinds = frozenset(c.split()[0] for c in calls)
        return ("mismatch", res.detail["group"], kinds, "type" if len(kinds) > 1 else "signature")
    if res.verdict in ("STRANDED", "DEADLOCK"):
        blocked = [w for w in res.waiting if w.get("op") and w["op"].split()[0] in
                   ("broadcast", "all_reduce", "all_gather", "barrier", "monitored_barrier")]
        if not blocked:
            return None
        groups = {w["group"] for w in blocked}
        if len(groups) != 1:
            return None
        (group,) = groups
        kinds = frozenset(w["op"].split()[0] for w in blocked)
        present = frozenset(w["rank"] for w in blocked)
        missing = frozenset(r for w in blocked for r in w["waits_for"])
        at = frozenset("header" if HEADER_OP in w["op"] else "inside" for w in blocked)
        sigs = frozenset(x for x in (_sig_of(w["op"]) for w in blocked) if x is not None)
        return ("missing", group, kinds, present, missing, at, sigs)
    return None


def _dump_shapes(rep: dict) -> list[tuple]:
    out = []
    for g, info in rep["groups"].items():
        fm = info.get("first_mismatch")
        if not fm:
            continue
        if fm["kind"] == "missing_ranks":
            header = fm.get("sizes") == [list(HEADER_SHAPE)] and str(fm.get("dtypes")) in ("['Long']", "['Int64']")
            dt = fm.get("dtypes") or []
            sz = fm.get("sizes") or []
            sig = (FR_DTYPES.get(dt[0], str(dt[0]).lower()), tuple(sz[0])) if dt and sz else None
            out.append(("missing", g, frozenset({fm["op"]}), frozenset(fm["present"]), frozenset(fm["missing"]),
                        frozenset({"header" if header else "inside"}), sig))
        elif fm["kind"] == "type":
            out.append(("mismatch", g, frozenset(str(v).split(":")[-1].split()[0] for v in fm["ranks"].values()), "type"))
        else:
            out.append(("mismatch", g, frozenset({fm["op"]}), "signature"))
    return out


# the world each spec's variants are model-checked at: the smallest with every role (and two mesh
# workers, so "some workers" and "all workers" differ).  A counterexample's end is compared by role, so
# it holds for every larger world by the roles' symmetry; checking all variants at the dump's own world
# costs minutes at 9 ranks.
CHECK_WORLD = {"tp": 3, "pp1": 4, "pp0": 2}


def role_of(spec: str, rank: int) -> str:
    if spec == "tp":
        return "leader" if rank == 0 else "worker"
    if rank == 0:
        return "stage0"
    return "leader" if rank == 1 else "worker"


def roles(spec: str, ranks) -> frozenset:
    return frozenset(role_of(spec, r) for r in ranks)


def _same(dump: tuple, spec: tuple, name: str = "tp") -> bool:
    if dump[0] != spec[0] or dump[1] != spec[1]:
        return False
    if dump[0] == "mismatch":
        # a type mismatch matches a variant whose calls differ in kind; a size/dtype mismatch one whose
        # calls are the same kind with different signatures
        return dump[3] == spec[3] and (dump[2] == spec[2] if dump[3] == "type" else dump[2] <= spec[2])
    # same op kind, the same roles waiting for the same partner roles, and at the same place: a header
    # (the start of a message: the partner never began it) or inside a message (the partner stopped
    # mid-way).  Roles, not ranks: the variants are checked at a small world (see CHECK_WORLD)
    if not (dump[2] <= spec[2] and roles(name, dump[3]) == roles(name, spec[3]) and roles(name, dump[4]) == roles(name, spec[4])
            and dump[5] == spec[5]):
        return False
    # and the stuck op's dtype (and shape where the spec's is concrete) agree
    if dump[6] is not None and spec[6]:
        return any(_sig_fits(x, dump[6]) for x in spec[6])
    return True


def match(rep: dict, spec: str = "auto") -> dict:
    """Compare the dump's collective and p2p projection with every variant's counterexample: a variant
    matches when its collective end matches the dump's (if the dump has one) and every p2p op the dump
    is stuck in is one its end is blocked in (if the dump has any)."""
    groups = {g: info["members"] for g, info in rep["groups"].items()}
    if spec != "auto":
        name = spec
    elif rep.get("topology") in CHECK_WORLD:  # the run's manifest beside the dumps says which
        name = rep["topology"]
    else:
        name = infer_spec(groups, bool(rep.get("p2p")))
    world = rep.get("world", len(rep["ranks"]))
    shapes = _dump_shapes(rep)
    stuck = list(rep.get("p2p_stuck") or [])
    p2p = [_dump_p2p_shape(name, op) for op in stuck]
    matches = []
    if shapes or p2p:
        idle = all(d[0] == "missing" and d[5] == frozenset({"header"}) for d in shapes)
        for variant, verdict, message, shape, pshapes in _variant_shapes(name, min(world, CHECK_WORLD.get(name, world))):
            # a collective end must match; but ranks waiting at a message's header for a partner that left are
            # idle between messages (with a watchdog, not blocked for ever): a variant whose end places no rank in a
            # collective is not contradicted by them
            coll = (not shapes or (shape is not None and any(_same(d, shape, name) for d in shapes))
                    or (idle and shape is None and bool(p2p)))
            pp = not p2p or all(any(_same_p2p(d, x) for x in pshapes) for d in p2p)
            if coll and pp:
                matches.append({"variant": variant, "verdict": verdict, "message": message})
    projection = [_jsonable(s) for s in shapes] + [
        {"kind": "p2p", "group": op["group"], "op": op["op"], "rank": op["rank"], "peer": op["peer"],
         "roles": [d[2], d[3]], "part": d[4], "wire": d[6], "sig": [d[5][0], list(d[5][1])] if d[5] else None,
         "state": op.get("state"), "p2p_seq": op.get("p2p_seq"), "tag": op.get("tag"), "why": op.get("why")}
        for op, d in zip(stuck, p2p)]
    return {"spec": name, "world": world, "projection": projection, "matches": matches}


def _jsonable(shape: tuple) -> dict:
    if shape[0] == "missing":
        return {"kind": "missing_ranks", "group": shape[1], "op": sorted(shape[2]), "present": sorted(shape[3]),
                "missing": sorted(shape[4]), "at": sorted(shape[5]),
                "sig": ([shape[6][0], list(shape[6][1])] if shape[6] else None)}
    return {"kind": "mismatch", "group": shape[1], "ops": sorted(shape[2]) if shape[2] else None, "differs_in": shape[3]}


def render(m: dict) -> list[str]:
    if m.get("skipped"):
        return [f"  no spec: {m['skipped']}"]
    lines = [f"  against spec {m['spec']} (world {m['world']}): "
             + ("no failure to explain" if not m["projection"] else
                f"{len(m['matches'])} planted bug(s) end the same way on the collective and p2p projection")]
    if m.get("error"):
        lines.append(f"    {m['error']}")
    how = "is an instance of" if len(m["matches"]) == 1 else "is consistent with"
    for x in m["matches"]:
        lines.append(f"    this hang {how} {x['variant']}: {x['verdict']} ({x['message']})")
    if m["projection"] and not m["matches"]:
        lines.append("    no variant of the spec ends this way: a failure the spec's planted bugs do not explain")
    return lines
