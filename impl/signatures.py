"""The documented ending of every scenario, checked against a finished run (summary + traces).
``check`` returns the list of differences; empty means the run ended as documented.  A clean run
must end clean on every rank with every chunk emitted or dropped with a reason."""
from __future__ import annotations

from lockstep.tracefmt import schema as S


def _has(msg: str, *needles: str) -> bool:
    m = msg.lower()
    return all(n.lower() in m for n in needles)


def _expect(problems, cond: bool, text: str) -> None:
    if not cond:
        problems.append(text)


def _how(s, ranks, how, *needles, label=""):
    out = []
    for r in ranks:
        o = s.ranks[r]
        if o.how != how or not _has(o.message, *needles):
            out.append(f"rank {r}{label}: expected {how} mentioning {needles}, got {o.how}: {o.message[:200]}")
    return out


def _last_enter(run, r):
    ev = run.ranks[r].of(S.COMM_ENTER)
    return ev[-1] if ev else None


def check(s, run) -> list[str]:
    cfg = s.cfg
    p: list[str] = []
    if s.deadline_hit:
        p.append("the launcher deadline was hit: a rank hung")
    f, u = cfg.fault, cfg.unsafe
    allr = list(range(cfg.world))
    mesh = cfg.mesh_ranks
    others = [r for r in allr if r != 0]
    pp1_r0 = [0] if cfg.topology == "pp1" else []
    r0 = run.ranks[0]
    k = cfg.fault_at

    if u == "fm04-throw-after-header":
        p += _how(s, [0], "exception", "request failed")
        sent = [e for e in r0.of(S.HEADER_SENT) if e["action"] == "INFER" and e["chunk_index"] == k]
        _expect(p, bool(sent), f"rank0 never sent the INFER header of chunk {k}")
        _expect(p, bool(r0.of(S.REQUEST_FAILED)), "rank0 recorded no request_failed")
        p += _how(s, others, "timeout", label=" (stranded worker)")
        for r in others:
            le = _last_enter(run, r)
            _expect(p, le is not None and le["op"] == "broadcast" and le["purpose"] == "meta_size",
                    f"rank {r} was not last blocked in the meta broadcast (last op {le and le['purpose']})")
        return p
    if u == "om07-leader-throws":
        lead = mesh[0]
        p += _how(s, [lead], "exception", "request failed")
        lt = run.ranks[lead]
        sent = [e for e in lt.of(S.HEADER_SENT) if e["group"] == "mesh" and e["action"] == "INFER" and e["chunk_index"] == k]
        _expect(p, bool(sent), "the leader did not broadcast the INFER header before rejecting")
        _expect(p, bool(lt.of(S.VALIDATION_FAIL)), "the leader recorded no validation_fail")
        p += _how(s, mesh[1:], "timeout", label=" (stranded mesh worker)")
        for r in mesh[1:]:
            le = _last_enter(run, r)
            _expect(p, le is not None and le["group"] == "mesh" and le["purpose"] == "meta_size",
                    f"rank {r} was not last blocked in the mesh meta broadcast")
        p += _how(s, [0], "exception", "mesh error")
        return p
    if u == "result-throw-after-header":
        lead = 1  # the pp0 Stage-1 rank, the pp1 mesh leader
        p += _how(s, [lead], "exception", "result send failed after its header")
        p += _how(s, [0], "timeout", label=" (stranded result receiver)")
        le = _last_enter(run, 0)
        _expect(p, le is not None and le["op"] == "recv" and le.get("src") == lead and le["purpose"] == "meta_size",
                f"rank 0 was not last blocked in the rest of the result (last op {le and le['purpose']})")
        p += _how(s, mesh[1:] if cfg.topology == "pp1" else [], "timeout", label=" (mesh worker)")
        return p
    if u == "om09-no-epoch-fence":
        p += _how(s, allr, "clean")
        stale = [e for e in r0.of(S.CHUNK_EMITTED) if e.get("stale")]
        _expect(p, any(e["chunk_index"] == k - 1 for e in stale),
                f"STALE_EMIT expected: chunk {k - 1} of the old epoch emitted after the hard cut")
        return p

    if not f:
        p += _how(s, allr, "clean")
        _expect(p, not s.lost, f"chunks lost: {s.lost}")
        return p

    if f in ("om-01", "om-02", "om-03", "om-10"):
        step, field, needle = {"om-01": ("serialize_meta", "debug_hook", "not plain data"),
                               "om-02": ("validate", "latents", "unsupported dtype"),
                               "om-03": ("validate", "expected_generator_calls", "expected_generator_calls"),
                               "om-10": ("validate", "context_frames", "required")}[f]
        p += _how(s, allr, "clean")
        pf = [e for e in r0.of(S.PREFLIGHT_FAIL) if e["chunk_index"] == k]
        _expect(p, bool(pf) and pf[0]["step"] == step and field in pf[0]["field"] and _has(pf[0]["message"], needle),
                f"rank0 preflight_fail step={step} field~{field} '{needle}' expected, got {pf[:1]}")
        hdr = [e for e in r0.of(S.HEADER_SENT) if e["action"] == "INFER" and e["chunk_index"] == k]
        _expect(p, not hdr, f"the INFER header of chunk {k} went out although preflight failed")
        _expect(p, s.dropped.get(k, "").startswith("preflight_fail"), f"chunk {k} not dropped by preflight: {s.dropped}")
        _expect(p, not s.lost, f"chunks lost: {s.lost}")
        return p
    if f in ("om-04", "om-05", "c-01"):
        key = {"om-04": "tp_plan", "om-05": "input_digest", "c-01": "compile"}[f]
        p += _how(s, allr, "exception", "parity", key)
        _expect(p, not any(run.ranks[r].of(S.HEADER_SENT) for r in allr), "a header was sent despite the parity failure")
        return p
    if f in ("om-06", "om-08", "om-11", "om-12", "c-03"):
        needle = {"om-06": ("forbidden op", "FM-08"), "om-08": ("wrong group", "group_used=world"),
                  "om-11": ("input digest mismatch",), "om-12": ("fingerprint",),
                  "c-03": ("compile health",)}[f]
        p += _how(s, mesh, "exception", *needle)
        if f == "c-03":
            p += _how(s, pp1_r0, "exception")
        else:
            p += _how(s, pp1_r0, "exception", "mesh error")
        _expect(p, not any(o.how == "timeout" for o in s.ranks), "a rank waited for a timeout")
        return p
    if f == "om-07":
        lead = mesh[0]
        p += _how(s, [lead], "exception", "current_start_frame")
        p += _how(s, mesh[1:], "exception", "terminal action")
        p += _how(s, [0], "exception", "mesh error")
        lt = run.ranks[lead]
        bad = [e for e in lt.of(S.HEADER_SENT) if e["group"] == "mesh" and e["action"] == "INFER" and e["chunk_index"] == k]
        _expect(p, not bad, "the leader broadcast the INFER header of the rejected envelope")
        _expect(p, any(e["action"] == "ERROR" and e["group"] == "mesh" for e in lt.of(S.HEADER_SENT)),
                "the leader did not broadcast ERROR on mesh_pg")
        return p
    if f == "om-09":
        p += _how(s, allr, "clean")
        _expect(p, s.dropped.get(k - 1) == "stale_epoch", f"chunk {k - 1} not dropped as stale_epoch: {s.dropped}")
        _expect(p, not [e for e in r0.of(S.CHUNK_EMITTED) if e.get("stale")], "a stale chunk was emitted")
        _expect(p, not s.lost, f"chunks lost: {s.lost}")
        return p
    if f == "om-13":
        _expect(p, s.ranks[0].how == "killed", f"rank0 should be killed, got {s.ranks[0].how}")
        fi = [e for e in r0.of(S.FAULT_INJECTED) if e["fault"] == "om-13"]
        t_kill = fi[0]["t"] if fi else None
        for r in others:
            o = s.ranks[r]
            ex = run.ranks[r].exit
            _expect(p, o.how in ("exception", "timeout"), f"rank {r} ended {o.how}")
            if ex is not None and t_kill is not None:
                _expect(p, ex["t"] - t_kill < 0.5 * cfg.dist_timeout_s + 1.0,
                        f"rank {r} took {ex['t'] - t_kill:.2f}s to exit after rank0 died")
                _expect(p, "last_header" in ex, f"rank {r}'s exit does not log its last header")
        return p
    return p
