"""Text rendering of a conformance report (for people; --json is for CI)."""
from __future__ import annotations

from ..spec.fabric import ranks_text


def render(rep) -> str:
    r = rep.replay
    lines = []
    head = f"lockstep conform: {rep.trace_dir}  topology={rep.topology} spec={rep.spec}"
    lines.append(head)
    p = rep.params
    lines.append("  spec params: " + ", ".join(f"{k}={v}" for k, v in sorted(p.items())))
    for n in rep.notes:
        lines.append(f"  note: {n}")
    if rep.truncated:
        lines.append(f"  note: the last line of {ranks_text(rep.truncated)} was cut off (a crashed rank); "
                     f"its trace ends at the line before")
    verdict = rep.verdict
    if rep.was_interrupted:
        who = f"{ranks_text(rep.interrupted)} exited interrupted" if rep.interrupted else "the launcher says so"
        lines.append(f"  note: the run was interrupted ({who}): its trace is a prefix of a run; the prefix is what is checked")
    if verdict == "CONFORMS":
        lines.append(f"CONFORMS  ({r.observables} observables, {r.nodes} search nodes, {r.seconds:.2f}s)")
    elif verdict == "INCONCLUSIVE" and rep.was_interrupted:
        lines.append("INCONCLUSIVE: the run was interrupted; the replay of what it recorded "
                     + (f"conforms ({r.observables} observables" if rep.conforms else
                        f"explains {r.explained}/{r.observables} observables up to the interrupt (listed below; ranks stop "
                        f"at different points, so a gap at the end is expected") + f", {r.nodes} search nodes, {r.seconds:.2f}s)")
    elif verdict == "INCONCLUSIVE" and r.horizon_hit:
        lines.append(f"INCONCLUSIVE: the replay would have to go back further than its search window keeps "
                     f"({r.nodes} search nodes, {r.seconds:.2f}s); it got as far as {r.explained}/{r.observables} "
                     f"observables explained")
    elif verdict == "INCONCLUSIVE":
        lines.append(f"INCONCLUSIVE: the search budget ended the replay after {r.nodes} search nodes ({r.seconds:.2f}s); "
                     f"it got as far as {r.explained}/{r.observables} observables explained (raise --budget/--time-limit)")
    elif verdict == "CONFORMS_TO_VARIANT":
        lines.append(f"CONFORMS TO VARIANT {rep.unsafe['variant']}: the hardened spec rejects this --unsafe run "
                     f"({r.explained}/{r.observables} observables explained) and it behaves as the variant predicts")
    else:
        lines.append(f"DOES NOT CONFORM  ({r.explained}/{r.observables} observables explained, {r.nodes} search nodes, "
                     f"{r.seconds:.2f}s)")
    for f in rep.fabric[:10]:
        lines.append(f"  c10d: rank {f['rank']} line {f['line']} field {f['field']}: {f['message']}")
    if len(rep.fabric) > 10:
        lines.append(f"  c10d: ... {len(rep.fabric) - 10} more")
    for m in getattr(rep, "monitors", []):
        lines.append(f"  {m['verdict']}: {m['message']}")
    if not r.conforms:
        if verdict == "INCONCLUSIVE":
            lines.append("  furthest point reached (not a verdict):")
        elif verdict == "CONFORMS_TO_VARIANT":
            lines.append("  where the hardened spec rejects the run (the guard the --unsafe switch removes):")
        lines.extend(_unexplained(r.unexplained))
        if r.stuck is not None:
            lines.append(f"  the spec is stuck there ({r.stuck['verdict']}): {r.stuck['message']}")
        if r.violation is not None:
            lines.append(f"  the trace reaches a spec violation ({r.violation['verdict']}) at {r.violation['actor']} line "
                         f"{r.violation['line']}: {r.violation['message']}")
    u = rep.unsafe
    if u:
        lines.append(f"unsafe switch {u['switch']} (spec variant {u['variant']}):")
        if u.get("checker"):
            c = u["checker"]
            lines.append(f"  model checker on the variant ({c.get('backend', 'gloo')}): {c['verdict']} (documented: {'/'.join(c['expected'])}) - {c['message']}")
        lines.append(f"  {u['message']}")
    return "\n".join(lines)


def _unexplained(unexplained) -> list[str]:
    """The first unexplained event of each actor; actors of one thread name whose entries say the same
    (a 16-rank mesh waiting in one broadcast behind the rank that diverged) are one entry, their
    ranks as runs."""

    same: dict = {}
    for u in unexplained:
        body = [f"line {u.line}: {u.event}", f"      explained by: {', '.join(u.expected)}"]
        pend = f", waiting in {u.waiting_op}" if u.waiting_op else ""
        body.append(f"      spec state: {u.spec_state}{pend}; ids {u.ids}")
        body.append(f"      enabled there: {', '.join(u.enabled) or '(nothing)'}")
        body += [f"      guard false: {g['transition']}: {g['guard']}" for g in u.guards]
        body += [f"      refused: {why}" for why in u.reasons[:3]]
        thread = u.actor.partition(".")[2]
        same.setdefault((thread, tuple(body)), []).append(u)
    lines = []
    for (thread, body), us in same.items():
        if len(us) == 1:
            who = f"rank {us[0].rank} ({us[0].actor})"
        else:
            who = ranks_text([u.rank for u in us]) + (f" ({thread} threads)" if thread else "")
        lines.append(f"  {who} {body[0]}")
        lines.extend(body[1:])
    return lines

