"""The committed gallery: every shipped spec and variant rendered at default parameters, with an
index.  ``lockstep render --gallery`` regenerates it; tests/test_diagrams.py fails when the committed
copy differs from a fresh regeneration (the specs changed and nobody re-rendered).

Deterministic: default parameters, fixed state bounds, pages assembled in catalogue order whatever
order the worker processes finish in, no timestamps.  Graphviz layout can differ between graphviz
versions, so the manifest records the ``dot`` version; on a machine with another version the
staleness check compares the ``.gv`` sources instead of the SVGs graphviz drew from them.
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from ..spec.registry import available, load
from html import escape

from . import report as R
from .build import KV_SPEC, Rendered, kv_role_names, render_spec, slug
from .dot import dot_version
from .output import MANIFEST, manifest_bytes, write_tree

GALLERY_DIR = Path(__file__).resolve().parent / "gallery"
CHECK_STATES = 100_000   # above every shipped spec's reachable states at default parameters (hardened pp1: ~43k)
EXPLORE_STATES = 10_000  # the hardened specs' state-space summaries and their roles' op labels
VARIANT_EXPLORE_STATES = 3_000  # a variant's changed roles' op labels (its state space is not drawn)
HARDENED = "hardened"
TRACES_DIR = Path(__file__).resolve().parent / "traces"  # recorded runs (trace schema v1) drawn in the gallery


def _page_dir(spec: str, variant: str | None) -> str:
    return f"{spec}/{slug(variant) if variant else HARDENED}"


def _render_one(task) -> tuple[str, str | None, Rendered]:
    spec, variant, reuse = task
    r = render_spec(spec, variant, max_states=CHECK_STATES,
                    explore_states=EXPLORE_STATES if variant is None else VARIANT_EXPLORE_STATES, kv=False,
                    statespace=variant is None, reuse=reuse, cex_json=False,
                    command=f"lockstep render {spec}" + (f" --variant {variant}" if variant else "")
                            + f" --max-states {CHECK_STATES} --out DIR")
    return spec, variant, r


def _map(tasks, jobs: int):
    if jobs <= 1 or len(tasks) <= 1:
        return [_render_one(t) for t in tasks]
    with ProcessPoolExecutor(max_workers=jobs) as ex:
        return list(ex.map(_render_one, tasks))


def build_gallery(jobs: int | None = None) -> tuple[dict[str, bytes], dict]:
    """The whole gallery in memory: {relative path: bytes} and the manifest's extra fields."""
    jobs = jobs if jobs is not None else min(4, os.cpu_count() or 1)
    specs = available()
    infos = {s: load(s) for s in specs}
    hardened = {s: r for s, _v, r in _map([(s, None, None) for s in specs], jobs)}
    tasks = []
    for s in specs:
        reuse = {key: (f"../{HARDENED}/{rel}", kinds) for key, (rel, kinds) in hardened[s].role_sources.items()}
        tasks += [(s, v, reuse) for v in infos[s].variants]
    variants = {(s, v): r for s, v, r in _map(tasks, jobs)}

    files: dict[str, bytes] = {}
    rows, classes = [], []
    for s in specs:
        info = infos[s]
        for v in [None, *info.variants]:
            r = hardened[s] if v is None else variants[(s, v)]
            expected = info.hardened_expected if v is None else info.variants[v].expected
            if r.verdict in expected:
                status, cls = "as documented", ""
            elif r.verdict == "BOUND_REACHED":
                status, cls = "bound reached first", "hl"
            else:
                status, cls = "differs from the documented verdicts", "fault"
            page = f"{_page_dir(s, v)}/index.html"
            rows.append((s, page, v or "(hardened)", info.variants[v].description if v else info.description,
                         " or ".join(expected), r.verdict, status))
            classes.append(cls)
            for rel, data in r.files.items():
                files[f"{_page_dir(s, v)}/{rel}"] = data
    body = [R.h(1, "lockstep gallery"),
            R.p("Every shipped spec and planted-bug variant, checked and rendered from the specs themselves at default "
                f"parameters (check bound {CHECK_STATES:,} states, each variant on its documented backend). Each name opens "
                "its report: role state diagrams and, for a violation, who waits on whom at the end and the "
                "counterexample swimlane. Regenerate with `lockstep render --gallery`.", "small")]
    traces = _trace_pages(files)
    if traces:
        body.append(R.p_html("Recorded runs: " + " · ".join(t[0] for t in traces) + " (" + R.link("#traces", "what they show")
                             + ")", "small"))
    body.append(_verdict_table(rows, classes))
    if traces:
        body.append(R.h(2, "Recorded runs", "traces"))
        body.append(R.p("Runs of the real implementation (trace schema v1), replayed against the hardened spec.", "small"))
        body.append(R.table(["run", "what conformance says"], traces, raw_cols=(0,)))
    body.append(R.h(2, "KV-cache lifecycle", "kv"))
    if KV_SPEC in specs and hardened[KV_SPEC].role_sources:
        body.append(R.p("The `kv` spec's role machine(s), the lifecycle every Phase B rank applies:", "small"))
        srcs = hardened[KV_SPEC].role_sources
        names = kv_role_names([key[0][0] for key in srcs])
        for rel in sorted({rel for key, (rel, _k) in srcs.items() if key[0][0] in names}):
            body.append(R.image(f"{_page_dir(KV_SPEC, None)}/{rel}", "KV-cache lifecycle"))
    else:
        body.append(R.note("The registry has no `kv` spec with role machines yet: no KV-cache lifecycle diagram "
                           "(it is drawn from that spec's role once it ships)."))
    files["index.html"] = R.page("lockstep gallery", body)
    extra = {"dot_version": dot_version(), "check_states": CHECK_STATES, "explore_states": EXPLORE_STATES,
             "variant_explore_states": VARIANT_EXPLORE_STATES}
    return files, extra


def _trace_pages(files: dict[str, bytes]) -> list[list[str]]:
    """Render every recorded run under diagrams/traces/ into traces/<name>/; rows for the index."""
    from .trace import load, render_trace

    rows = []
    if not TRACES_DIR.is_dir():
        return rows
    for d in sorted(p for p in TRACES_DIR.iterdir() if (p / "manifest.json").is_file()):
        run = load(d)
        out, line = render_trace(run, d.name)
        for rel, data in out.items():
            files[f"traces/{d.name}/{rel}"] = data
        rows.append([R.link(f"traces/{d.name}/index.html", d.name) + " · "
                     + R.link(f"traces/{d.name}/index.html#divergence", "first divergence"), line])
    return rows


def _verdict_table(rows, classes) -> str:
    out = ['<table class="verdicts">', "<tr><th>spec</th><th>variant</th><th>documented</th><th>found</th><th></th>"
           "<th>what is planted</th></tr>"]
    for (spec, page, name, desc, expected, verdict, status), cls in zip(rows, classes):
        c = f' class="{cls}"' if cls else ""
        vcls = "ok" if verdict == "HOLDS" else "warn" if verdict == "BOUND_REACHED" else "bad"
        out.append(f"<tr{c}><td>{escape(spec)}</td><td>{R.link(page, name)}</td><td>{escape(expected)}</td>"
                   f'<td class="found {vcls}">{escape(verdict)}</td><td>{escape(status)}</td><td class="small">{escape(desc)}</td></tr>')
    out.append("</table>")
    return "\n".join(out)


def write_gallery(out: Path = GALLERY_DIR, jobs: int | None = None) -> list[Path]:
    files, extra = build_gallery(jobs)
    return write_tree(out, files, extra)


def dot_svgs(files) -> set[str]:
    """SVGs that graphviz drew (they have a .gv source beside them)."""
    return {f for f in files if f.endswith(".svg") and f[:-4] + ".gv" in files}


def stale(committed: Path = GALLERY_DIR, jobs: int | None = None) -> list[str]:
    """How the committed gallery differs from a fresh regeneration (empty: up to date)."""
    import json

    files, extra = build_gallery(jobs)
    files = dict(files)
    files[MANIFEST] = manifest_bytes(files, extra)
    problems = []
    m = committed / MANIFEST
    old_extra = json.loads(m.read_text()) if m.is_file() else {}
    same_dot = old_extra.get("dot_version") == extra["dot_version"]
    skip = set() if same_dot else dot_svgs(files) | {MANIFEST}
    on_disk = {p.relative_to(committed).as_posix() for p in committed.rglob("*") if p.is_file()} if committed.is_dir() else set()
    for rel in sorted(set(files) - on_disk):
        problems.append(f"missing: {rel}")
    for rel in sorted(on_disk - set(files)):
        problems.append(f"not generated any more: {rel}")
    for rel in sorted(set(files) & on_disk):
        if rel in skip:
            continue
        if (committed / rel).read_bytes() != files[rel]:
            problems.append(f"differs: {rel}")
    return problems
