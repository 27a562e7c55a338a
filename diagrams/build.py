"""Render one spec (and variant): role diagrams, state space, KV lifecycle, counterexample swimlane,
and the index page that links them.  Everything is produced in memory as {relative path: bytes};
output.write_tree puts it on disk.

Every diagram comes from the spec itself: role diagrams from the role's transition list, op labels
and reachability from exploring the model, the swimlane from the checker's counterexample.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from ..model.api import BOUND_REACHED, HOLDS
from ..model.checker import Bounds, check
from ..spec.machine import Protocol
from ..spec.registry import available, pick_backend, resolve
from . import report as R
from .dot import run_dot, source_of
from .roles import role_graph, transition_rows
from .statespace import FULL_LIMIT, explore, full_graph, generic_summary, roles_in_order, summary_graph, violation_counts
from .swimlane import Swimlane, render as render_swimlane
from . import waitfor as WF

DEFAULT_MAX_STATES = 100_000
KV_SPEC = "kv"


@dataclass
class Rendered:
    files: dict[str, bytes] = field(default_factory=dict)
    title: str = ""
    verdict: str = ""
    message: str = ""
    expected: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)
    diagrams: int = 0

    # role signature -> (its .svg, op labels per transition seen while exploring): lets the gallery's
    # variants link their hardened spec's diagram of a role the variant does not change
    role_sources: dict[tuple, tuple[str, dict]] = field(default_factory=dict)

    def add_dot(self, rel_base: str, graph, png: bool = False) -> str:
        src = source_of(graph)
        self.files[rel_base + ".gv"] = src.encode()
        self.files[rel_base + ".svg"] = run_dot(src, "svg")
        if png:
            self.files[rel_base + ".png"] = run_dot(src, "png")
        self.diagrams += 1
        return rel_base + ".svg"


def slug(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in s)


def _models(info, params, variant, backend):
    """Two instances: the checker may switch reductions on its own copy."""
    from ..spec.loading import build_model  # a build that raises is a SpecError naming the spec and line

    from ..model.features import configure

    m_explore = configure(build_model(info, params, variant, backend), reduction=False, liveness=False)
    return m_explore, build_model(info, params, variant, backend)


def swimlane_for_result(model, result, title: str, wf=None, lane_status=None) -> Swimlane:
    proto = isinstance(model, Protocol)
    return Swimlane(steps=list(result.counterexample), title=title, verdict=result.verdict, message=result.message,
                    waiting=list(result.waiting), cycle_start=result.cycle_start,
                    lanes=list(model.ranks) if proto else None, lane_naming="rank" if proto else "role",
                    waitfor=wf, lane_status=lane_status)


def end_of(model, result):
    """(wait-for graph or None, each rank's status at the end or None) of a Protocol's counterexample."""
    if not isinstance(model, Protocol) or not result.counterexample and not result.waiting:
        return None, None
    if result.cycle_start is not None:  # a lasso: nothing is stuck at its end, it goes round for ever
        return None, None
    state = WF.end_state(model, result.counterexample)
    status = None
    if state is not None:
        status = {}
        blocked = {w.get("rank") for w in result.waiting}
        for r, st in model.rank_status(state[0]).items():
            ctls = sorted({state[0][i][0] for i in model.actors_of_rank[r]})
            how = {"FAILED": "exited with an error", "DEAD": "crashed", "DONE": "finished", "HUNG": "wedged"}
            if st in ("gone", "hung"):
                worst = next((c for c in ("DEAD", "FAILED", "HUNG", "DONE") if c in ctls), "")
                status[r] = f"{st}: {how.get(worst, worst)}" + (f" ({worst})" if worst else "")
            elif st == "idle":
                status[r] = "idle: alive, issues nothing more"
            else:
                status[r] = "alive, blocked" if r in blocked else "alive"
    wf = WF.from_spec(model, result.waiting, result.counterexample, result.verdict) if result.waiting else None
    return wf, status


def render_spec(spec: str, variant: str | None = None, raw_params: dict[str, str] | None = None, backend: str | None = None,
                max_states: int = DEFAULT_MAX_STATES, *, explore_states: int | None = None, kv: bool = True,
                statespace: bool = True, png: bool = False, reuse: dict | None = None, cex_json: bool = True,
                command: str | None = None) -> Rendered:
    """Raises registry.UsageError on bad input, model.api.SpecError when the spec itself fails.

    ``max_states`` bounds the check (the counterexample), ``explore_states`` (default: the same) the
    exploration behind the state-space diagram and the roles' op labels.  ``reuse`` maps a role
    signature to an existing diagram (relative href, op labels): a role whose transitions are the
    same and that issued no op the existing diagram lacks is linked, not drawn again (the gallery's
    variants link their hardened spec's unchanged roles)."""
    explore_states = max_states if explore_states is None else explore_states
    explicit_backend = backend
    info, params = resolve(spec, variant, raw_params or {}, backend)
    backend = pick_backend(info, variant, backend)  # the same rule as `lockstep check`
    m_explore, m_check = _models(info, params, variant, backend)
    label = f"{spec}" + (f" / {variant}" if variant else " (hardened)")
    out = Rendered(title=f"lockstep render — {label}")
    proto = isinstance(m_explore, Protocol)

    g = explore(m_explore, explore_states)
    result = check(m_check, Bounds(max_states=max_states))
    out.verdict, out.message = result.verdict, result.message
    out.expected = info.variants[variant].expected if variant else info.hardened_expected

    body: list[str] = [R.h(1, out.title)]
    body.append(R.p(info.description, "small"))
    if variant:
        v = info.variants[variant]
        body.append(R.p(f"variant {variant}: {v.description} (documented verdicts: {' or '.join(v.expected)})"))
    body.append(R.verdict_line(result.verdict, result.message))
    st = result.stats
    body.append(R.p(f"checker: {st.states:,} states, {st.transitions:,} transitions, depth {st.depth}", "small"))
    violation = result.verdict not in (HOLDS, BOUND_REACHED)
    wf, lane_status = end_of(m_explore, result) if violation else (None, None)
    if wf is not None and wf.edges:
        body.append(R.h(2, "Who waits on whom at the end", "waitfor"))
        body.append(R.p(wf.summary() + ". An arrow A → B: A cannot move until B does — red: A is blocked in an op B "
                        "must match; purple, dashed: A waits on a condition (its guards) that only B's steps can make "
                        "true. The same edges end the swimlane below.", "small"))
        rel = out.add_dot("waitfor", WF.figure(wf, f"{label}: {result.verdict}"), png)
        body.append(R.image(rel, "wait-for graph at the end of the counterexample"))
        body.append(R.waitfor_table(wf))
    if violation:
        body.append(R.p_html(R.link("#counterexample", f"→ the counterexample swimlane ({len(result.counterexample)} steps)")))
    body.append(R.h(2, "Parameters", "parameters"))
    body.append(R.table(["parameter", "value"], [[k, params[k]] for k in params]
                        + [["backend", backend + _backend_note(info, variant, explicit_backend)],
                           ["state bound (check)", f"{max_states:,}"], ["state bound (diagrams)", f"{explore_states:,}"]],
                        mono_cols=(1,)))
    toc = ['<ul class="toc">']
    sections: list[str] = []

    # ---- roles ----------------------------------------------------------------------------------
    if proto:
        toc.append(f"<li>{R.link('#roles', 'role state diagrams')}</li>")
        sections.append(R.h(2, "Role state diagrams", "roles"))
        sections.append(R.p("Drawn from each role's own transition list. Op labels are the ops the transitions issued "
                            f"while exploring {len(g.states):,} states" + (" (bound reached: transitions marked "
                                                                           "'not reached' may still be reachable)"
                                                                           if g.truncated else "") + ".", "small"))
        for rname, (role, labels) in roles_in_order(m_explore).items():
            key = (role_signature(role), tuple(labels))
            kinds = {t: frozenset(k) for (rn, t), k in g.op_kinds.items() if rn == rname}
            prior = (reuse or {}).get(key)
            if prior is not None and all(k <= prior[1].get(t, frozenset()) for t, k in kinds.items()):
                rel, shared = prior[0], True
            else:
                rel = out.add_dot(f"roles/{slug(rname)}", role_graph(role, f"{label}: role {rname} ({', '.join(labels)})",
                                                                     g.op_kinds, g.fired), png)
                out.add_dot(f"roles/{slug(rname)}-failures", role_graph(role, f"{label}: role {rname} ({', '.join(labels)})",
                                                                        g.op_kinds, g.fired, failures=True), png)
                shared = False
            out.role_sources[key] = (rel, kinds)
            sections.append(R.h(3, f"role {rname} — {', '.join(labels)}", f"role-{slug(rname)}"))
            if shared:
                sections.append(R.p("unchanged by this variant: the hardened spec's diagram of this role is shown (linked, not repeated)", "small"))
            if role.doc:
                sections.append(R.p(role.doc, "small"))
            sections.append(R.p_html("protocol view below (each state's exits to FAILED on an op error, a timeout or a "
                                     "fault are one grey line under its name) · "
                                     + R.link(rel[:-4] + "-failures.svg", "protocol + failures: every exit drawn as an edge"),
                                     "small"))
            sections.append(R.image(rel, f"state diagram of role {rname}"))
            rows = transition_rows(role, g.op_kinds, g.fired)
            sections.append(R.table(["transition", "from", "to", "when", "issues", "marks", "doc"],
                                    [[r["name"], r["src"], r["dst"], r["guard"], r["op"], r["flags"], r["doc"]] for r in rows],
                                    mono_cols=(4,)))
    else:
        sections.append(R.h(2, "Role state diagrams", "roles"))
        sections.append(R.note(f"{spec} is a plain model without role machines: no role diagrams; its counterexamples "
                               "are drawn as swimlanes below."))

    # ---- KV lifecycle ---------------------------------------------------------------------------
    if kv and spec in available():  # lockstep's own specs are about the KV cache; a user's need not be
        toc.append(f"<li>{R.link('#kv', 'KV-cache lifecycle')}</li>")
        sections.extend(kv_section(out, spec, m_explore if spec == KV_SPEC else None, g if spec == KV_SPEC else None,
                                   png, prefix=""))

    # ---- state space ------------------------------------------------------------------------------
    toc.append(f"<li>{R.link('#statespace', 'reachable state space')}</li>")
    sections.append(R.h(2, "Reachable state space", "statespace"))
    stats = [["states", f"{len(g.states):,}" + (f" (stopped at the bound of {explore_states:,})" if g.truncated else "")],
             ["edges", f"{len(g.edges):,}"], ["end states", f"{len(g.ends):,}"]]
    stats += [[f"{v} edges/states", f"{n:,}"] for v, n in violation_counts(g)]
    sections.append(R.table(["", ""], stats))
    title = f"{label}: reachable states"
    if not statespace and not g.small:
        sections.append(R.note(f"The state-space diagram is drawn for the hardened spec only here; "
                               f"`{render_command(spec, variant, raw_params or {}, explicit_backend, max_states)}` draws this one."))
    elif g.small:
        rel = out.add_dot("statespace", full_graph(m_explore, g, f"{title} ({len(g.states)} states, every state drawn)"), png)
        sections.append(R.p(f"{len(g.states)} states (≤ {FULL_LIMIT}): every state and edge is drawn.", "small"))
        sections.append(R.image(rel, "reachable state graph"))
    elif proto:
        rel = out.add_dot("statespace", summary_graph(
            m_explore, g, f"{title}: {len(g.states):,} states{' (bound reached)' if g.truncated else ''}, collapsed by "
                          "control state per role"), png)
        sections.append(R.p(f"{len(g.states):,} states (> {FULL_LIMIT}): collapsed by control state per role. A node counts "
                            "the global states in which some actor of the role is in that control state; an edge counts "
                            "the steps that moved an actor between two control states, by transition.", "small"))
        sections.append(R.p_html("Shrunk to the page's width; " + R.link(rel, "open it at full size") + ".", "small"))
        sections.append(R.image(rel, "state space collapsed by control state per role", fit=True))
    else:
        sections.append(R.p(f"{len(g.states):,} states (> {FULL_LIMIT}) and no role machines to collapse by: steps by actor "
                            "and transition.", "small"))
        sections.append(R.table(["actor", "transition", "steps"], generic_summary(m_explore, g)))

    # ---- counterexample -------------------------------------------------------------------------------
    if not violation:
        why = ("the properties hold within the bounds" if result.verdict == HOLDS
               else f"no violation within the {max_states:,}-state bound")
        body.insert(len(body), R.p(f"No counterexample: {why}.", "small"))
    else:
        toc.append(f"<li>{R.link('#counterexample', 'counterexample swimlane')}</li>")
        sections.append(R.h(2, "Counterexample", "counterexample"))
        sw = swimlane_for_result(m_check, result, f"{label}: {result.verdict} counterexample "
                                                  f"({len(result.counterexample)} steps)", wf, lane_status)
        svg = render_swimlane(sw)
        out.files["swimlane.svg"] = svg.encode()
        out.diagrams += 1
        if result.cycle_start is not None:
            sections.append(R.p(f"LIVENESS lasso: steps from {result.cycle_start + 1} on repeat for ever (shaded).", "small"))
        sections.append(R.p_html("Hover a step for everything it did; " + R.link("swimlane.svg", "open the swimlane alone")
                                 + "; every step is also in the table below.", "small"))
        sections.append(R.inline_svg(svg))
        sections.append(R.steps_table(result.counterexample, result.cycle_start))
        if result.waiting:
            sections.append(R.h(3, "Who waits on whom at the end"))
            sections.append(R.waiting_table(result.waiting))
        if cex_json:
            out.files["counterexample.json"] = (json.dumps({"verdict": result.verdict, "message": result.message,
                                                            "counterexample": result.counterexample, "waiting": result.waiting,
                                                            "cycle_start": result.cycle_start}, indent=1, default=str)
                                                + "\n").encode()
    toc.append("</ul>")
    body.extend(toc)
    body.extend(sections)
    cmd = command or render_command(spec, variant, raw_params or {}, explicit_backend, max_states)
    body.append(R.p(f"Generated by `{cmd}` from " + (f"spec/specs/{spec}.py." if spec in available() else f"{spec}."), "small"))
    out.files["index.html"] = R.page(out.title, body)
    return out


def _backend_note(info, variant, explicit) -> str:
    if explicit:
        return ""
    if variant and info.variants[variant].backend:
        return " (the variant's documented backend)"
    return " (default)"


def kv_role_names(names: list[str]) -> list[str]:
    """The kv spec's lifecycle role(s): those named for the cache, else all of them."""
    return [n for n in names if "cache" in n.lower() or "kv" in n.lower()] or list(names)


def role_signature(role) -> tuple:
    """Everything a role diagram shows that comes from the transition list itself."""
    return (role.name, role.init, tuple((t.name, t.src, t.dst, t.op is not None, t.fault, t.commit, t.timeout, t.quiescent,
                                         t.on_error, t.phase) for t in role.transitions))


def render_command(spec, variant, raw_params, backend, max_states) -> str:
    parts = ["lockstep render", spec]
    if variant:
        parts += ["--variant", variant]
    for k, v in sorted(raw_params.items()):
        parts += ["-p", f"{k}={v}"]
    if backend is not None:
        parts += ["--backend", backend]
    if max_states != DEFAULT_MAX_STATES:
        parts += ["--max-states", str(max_states)]
    return " ".join(parts + ["--out", "DIR"])


def kv_section(out: Rendered, spec: str, model=None, g=None, png: bool = False, prefix: str = "") -> list[str]:
    """The KV-cache lifecycle, drawn from the ``kv`` spec's role machines — or a note saying why not."""
    sec = [R.h(2, "KV-cache lifecycle", "kv")]
    if KV_SPEC not in available():
        msg = ("The registry has no `kv` spec yet, so there is no KV-cache lifecycle diagram: it is drawn from the kv "
               "spec's role machine once that spec ships (nothing is drawn from a second description).")
        out.notes.append(msg)
        sec.append(R.note(msg))
        return sec
    if model is None:
        info, params = resolve(KV_SPEC, None, {})
        from ..model.features import configure

        model = configure(info.build(params, None, "gloo"), reduction=False, liveness=False)
        g = explore(model, 20_000)
    if not isinstance(model, Protocol):
        msg = "The `kv` spec is a plain model without role machines, so there is no lifecycle diagram to draw from it."
        out.notes.append(msg)
        sec.append(R.note(msg))
        return sec
    roles = roles_in_order(model)
    cache_roles = {n: roles[n] for n in kv_role_names(list(roles))}
    sec.append(R.p("Drawn from the role machine(s) of the `kv` spec (default parameters): "
                   + ", ".join(cache_roles) + ".", "small"))
    for rname, (role, labels) in cache_roles.items():
        rel = out.add_dot(f"{prefix}kv/{slug(rname)}", role_graph(role, f"KV-cache lifecycle: role {rname} ({', '.join(labels)})",
                                                                g.op_kinds, g.fired), png)
        sec.append(R.image(rel, f"KV-cache lifecycle ({rname})"))
    return sec


__all__ = ["Rendered", "render_spec", "kv_section", "swimlane_for_result", "DEFAULT_MAX_STATES", "slug"]
