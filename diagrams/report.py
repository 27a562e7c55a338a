"""The HTML report: one self-contained page per render, readable offline.

No external assets: the style sheet and the one script are inline, images are local files next to
the page.  The script marks any image that failed to load (and sets ``data-images`` on ``<body>``,
which the headless-browser test reads).  No timestamps: the same render gives the same bytes.
"""
from __future__ import annotations

from html import escape  # noqa: F401 - re-exported for pages built elsewhere
from typing import Any, Iterable

from .swimlane import full_text, ids_text

CSS = """
body{font-family:"DejaVu Sans",Helvetica,Arial,sans-serif;margin:24px;color:#1d232b;max-width:1500px}
h1{font-size:22px;margin:0 0 6px} h2{font-size:18px;border-bottom:1px solid #ccd;padding-bottom:3px;margin-top:28px}
h3{font-size:15px;margin:18px 0 6px} code,.mono{font-family:"DejaVu Sans Mono",Menlo,monospace;font-size:12px}
table{border-collapse:collapse;font-size:12px;margin:6px 0 12px} td,th{border:1px solid #d5dae2;padding:3px 6px;
vertical-align:top;text-align:left} th{background:#eef2f7}
.verdict{font-weight:bold} .bad{color:#b00020} .ok{color:#0a7a2f} .warn{color:#b35900}
.note{background:#fff7e0;border:1px solid #e8c66a;padding:6px 10px;margin:8px 0;font-size:13px}
.diagram{overflow:auto;border:1px solid #e3e7ee;padding:6px;margin:6px 0 10px;background:#fff}
.diagram img{display:block;max-width:none} .diagram.fit img{max-width:100%;height:auto} .swimlane svg{display:block}
img.broken{outline:4px solid #b00020} p.broken-note{background:#b00020;color:#fff;padding:8px}
tr.cycle td{background:#f1e9fb} tr.fault td{background:#fde3e3} tr.hl td{background:#ffe2c2}
#divergence,[id^="step-"],[id^="row-"]{scroll-margin-top:160px} ul.toc{font-size:13px} .small{font-size:12px;color:#556}
.summary{border:1px solid #ccd;border-left:6px solid #8a9bb0;padding:4px 12px;margin:10px 0;font-size:13px}
.summary.bad{border-left-color:#b00020} .summary.ok{border-left-color:#0a7a2f} .summary.expected{border-left-color:#b35900}
table.verdicts td,table.verdicts th{font-size:13px} table.verdicts td:nth-child(-n+5){white-space:nowrap} tr.fault td.found{color:#b00020;font-weight:bold}
"""

SCRIPT = """
window.addEventListener('load', function () {
  var bad = [];
  Array.prototype.forEach.call(document.images, function (im) {
    if (!im.complete || im.naturalWidth === 0) { bad.push(im.getAttribute('src')); im.classList.add('broken'); }
  });
  document.body.setAttribute('data-images', bad.length ? 'broken' : 'ok');
  document.body.setAttribute('data-image-count', String(document.images.length));
  if (bad.length) {
    var p = document.createElement('p'); p.className = 'broken-note';
    p.textContent = 'missing images: ' + bad.join(', ');
    document.body.insertBefore(p, document.body.firstChild);
  }
});
"""


def page(title: str, body: Iterable[str]) -> bytes:
    html = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n<script>{SCRIPT}</script>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
    return html.encode()


def h(level: int, text: str, anchor: str | None = None) -> str:
    a = f' id="{escape(anchor)}"' if anchor else ""
    return f"<h{level}{a}>{escape(text)}</h{level}>"


def p(text: str, cls: str | None = None) -> str:
    c = f' class="{cls}"' if cls else ""
    return f"<p{c}>{escape(text)}</p>"


def p_html(html: str, cls: str | None = None) -> str:
    """A paragraph of already-escaped HTML (links built with ``link``)."""
    c = f' class="{cls}"' if cls else ""
    return f"<p{c}>{html}</p>"


def inline_svg(svg: str, cls: str = "diagram swimlane") -> str:
    """An SVG drawn into the page itself, so that its tooltips work and its ids are anchors."""
    return f'<div class="{cls}">{svg}</div>'


def waitfor_table(wf) -> str:
    """The wait-for edges in full: who, through what, and every guard of a condition."""
    rows = []
    for e in wf.edges:
        src, dst = wf.nodes.get(e.src), wf.nodes.get(e.dst)
        rows.append([f"{e.src} ({src.state})" if src else e.src, "op" if e.via == "op" else "condition", e.label,
                     f"{e.dst}: {dst.status}" + (f" in {dst.state}" if dst and dst.state else "") if dst else e.dst, e.detail])
    return table(["waiting thread", "through", "what", "waits for", "details"], rows, mono_cols=(2,))


def note(text: str) -> str:
    return f'<div class="note">{escape(text)}</div>'


def image(src: str, alt: str, fit: bool = False) -> str:
    """``fit``: shrink a very wide drawing to the page's width (the link opens it at full size)."""
    cls = "diagram fit" if fit else "diagram"
    return f'<div class="{cls}"><a href="{escape(src)}"><img src="{escape(src)}" alt="{escape(alt)}"></a></div>'


def table(headers: list[str], rows: Iterable[Iterable[Any]], row_classes: Iterable[str] | None = None,
          mono_cols: Iterable[int] = (), raw_cols: Iterable[int] = (), row_ids: Iterable[str] | None = None) -> str:
    """``raw_cols``: cells that are already HTML (links); ``row_ids``: an id per row (anchors)."""
    mono = set(mono_cols)
    raw = set(raw_cols)
    ids = list(row_ids) if row_ids is not None else None
    out = ["<table>", "<tr>" + "".join(f"<th>{escape(x)}</th>" for x in headers) + "</tr>"]
    classes = list(row_classes) if row_classes is not None else None
    for i, r in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        if ids and ids[i]:
            cls += f' id="{escape(ids[i])}"'
        cells = []
        for j, x in enumerate(r):
            text = ("" if x is None else str(x)) if j in raw else escape("" if x is None else str(x))
            cells.append(f'<td class="mono">{text}</td>' if j in mono else f"<td>{text}</td>")
        out.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def link(href: str, text: str) -> str:
    return f'<a href="{escape(href)}">{escape(text)}</a>'


def verdict_line(verdict: str, message: str) -> str:
    cls = "ok" if verdict in ("HOLDS", "CONFORMS") else "warn" if verdict == "BOUND_REACHED" else "bad"
    return f'<p class="verdict {cls}">{escape(verdict)}: {escape(message)}</p>'


def steps_table(steps: list[dict], cycle_start: int | None = None, highlight: int | None = None) -> str:
    """Every step of a counterexample or trace, in full (the swimlane truncates long text)."""
    rows, classes = [], []
    for i, s in enumerate(steps):
        r = s.get("rank")
        extra = {k: v for k, v in s.items()
                 if k not in ("step", "rank", "role", "actor", "transition", "op", "group", "ids", "src", "in_cycle")
                 and v not in (None, {}, [], "")}
        rows.append([s.get("step", i + 1), ",".join(map(str, r)) if isinstance(r, (list, tuple)) else r, s.get("actor") or s.get("role"),
                     s.get("transition"), s.get("op"), s.get("group"), ids_text(s.get("ids")),
                     " ".join(f"{k}={v}" for k, v in extra.items())])
        cls = ""
        if cycle_start is not None and i >= cycle_start:
            cls = "cycle"
        if s.get("fault"):
            cls = "fault"
        if highlight is not None and i == highlight:
            cls = "hl"
        classes.append(cls)
    return table(["step", "rank", "actor", "transition", "op", "group", "ids", "more"], rows, classes, mono_cols=(4, 6, 7),
                 row_ids=[f"row-{s.get('step', i + 1)}" for i, s in enumerate(steps)])


def waiting_table(waiting: list[dict]) -> str:
    rows = []
    for w in waiting:
        targets = w.get("waits_for", [w.get("partner")] if w.get("partner") is not None else [])
        status = w.get("partner_status") or ({"": w.get("reason")} if w.get("reason") else {})
        rows.append([w.get("rank"), w.get("actor") or w.get("role"), w.get("state") or w.get("at"),
                     w.get("op") or w.get("waits_on") or w.get("condition"), ", ".join(map(str, targets)),
                     " ".join(f"{k}: {v}" if k else str(v) for k, v in status.items())])
    return table(["rank", "actor", "state", "blocked in", "waits for", "partner status"], rows, mono_cols=(3,))


__all__ = ["page", "h", "p", "p_html", "inline_svg", "waitfor_table", "note", "image", "table", "link", "verdict_line", "steps_table", "waiting_table", "full_text"]
