"""Swimlane diagrams (hand-laid, deterministic SVG) of a run: one lane per rank, time flowing down.

The input is neutral — a list of step dicts with the keys of a checker counterexample step
(``step``, ``rank`` (a lane key, or a list of lane keys for a fabric completion), ``role``,
``actor``, ``transition``, ``op``, ``group``, ``ids``, and optionally ``issued``, ``commit``,
``fault``, ``dst``, ``completes``, ``calls``, ``in_cycle``, ``violation``) — so counterexamples and
recorded traces feed the same renderer.  Drawn:

- a local step or an issued op as a box in its lane, with the op and the IDs (call_id, chunk_index,
  cache_epoch); while an issued op waits for the fabric a line runs down its lane;
- a collective completion as a bar across the lanes of its group's members, a mismatched one red
  with every member's call; a p2p completion as an arrow from sender to receiver;
- an injected fault red (⚡), a commitment point bold (★), an op that fails or times out orange;
- the ops still blocked at the end, red, with arrows to the lanes they wait for (from
  ``waiting``: who waits on whom); for a LIVENESS lasso the repeating cycle shaded, with a loop
  arrow; an optional highlighted step (the first event conformance rejects) shaded orange.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

FONT = "DejaVu Sans Mono, Menlo, Consolas, monospace"
FS = 10             # font size of step text
CHAR_W = 6.1        # advance of one monospace character at FS (DejaVu Sans Mono: 0.602 em)
LINE_H = 13
ROW_H = 3 * LINE_H + 10
LEFT = 58           # step numbers
RIGHT = 200         # per-row notes (commit, cycle, highlight), wrapped to two lines
FOLD_H = 30         # a band of folded (uneventful) steps
NOT_VIOLATIONS = ("HOLDS", "BOUND_REACHED", "CONFORMS", "TRACE")


@dataclass
class Swimlane:
    """What the renderer needs.  ``highlight``: ``{"index": k, "note": "..."}`` with k a 0-based
    index into ``steps``; ``cycle_start``: 0-based index where a lasso's cycle begins."""

    steps: list[dict[str, Any]]
    title: str = ""
    verdict: str | None = None
    message: str = ""
    waiting: list[dict[str, Any]] = field(default_factory=list)
    cycle_start: int | None = None
    highlight: dict[str, Any] | None = None
    lanes: list | None = None
    lane_labels: dict | None = None
    lane_naming: str = "rank"  # "rank": int lanes are "rank N"; "role": "<role> N"
    waitfor: Any = None        # waitfor.WaitFor: the wait-for edges drawn at the end (else from ``waiting``)
    lane_status: dict | None = None  # lane -> its status at the end (gone | hung | idle | alive | free text)
    folds: list = field(default_factory=list)  # (first index, last index, label): stretches drawn as one band


# -- step classification ---------------------------------------------------------------------------
KINDS = ("note", "mismatch", "p2p", "collective", "fault", "error", "issue", "local")


def kind_of(step: dict) -> str:
    """How a step is drawn; a step may say so itself with ``kind`` (traces do)."""
    if step.get("kind") in KINDS:
        return step["kind"]
    rank = step.get("rank")
    tr = str(step.get("transition") or "")
    if tr == "(stuck)" or (rank is None and step.get("role") is None):
        return "note"
    if isinstance(rank, (list, tuple)):
        if step.get("calls"):
            return "mismatch"
        op = str(step.get("op") or "")
        if tr.startswith("send/recv") or " -> " in op:
            return "p2p"
        return "collective"
    if step.get("fault"):
        return "fault"
    if " fails" in tr or " times out" in tr:
        return "error"
    if step.get("issued"):
        return "issue"
    return "local"


def ids_text(ids: dict | None) -> str:
    return " ".join(f"{k}={v}" for k, v in (ids or {}).items())


def _lane_keys(sw: Swimlane) -> list:
    if sw.lanes is not None:
        return list(sw.lanes)
    seen: list = []

    def see(r):
        if r is not None and r not in seen:
            seen.append(r)

    for s in sw.steps:
        r = s.get("rank")
        for x in (r if isinstance(r, (list, tuple)) else [r]):
            see(x)
    for w in sw.waiting:
        see(w.get("rank"))
        for t in _targets(w):
            see(t)
    ints = sorted(x for x in seen if isinstance(x, int))
    if not ints:
        return seen
    first_int = min(seen.index(x) for x in ints)
    before = [x for x in seen[:first_int] if not isinstance(x, int)]
    after = [x for x in seen if not isinstance(x, int) and x not in before]
    return before + ints + after


def _targets(w: dict) -> list:
    if "waits_for" in w:
        return list(w.get("waits_for") or [])
    if w.get("partner") is not None:
        return [w["partner"]]
    return []


def _what(w: dict) -> str:
    return str(w.get("op") or w.get("waits_on") or w.get("condition") or w.get("state") or "?")


def _status(w: dict, t) -> str:
    st = (w.get("partner_status") or {}).get(str(t))
    if st:
        return st
    if "partner_finished" in w:
        return "finished" if w["partner_finished"] else "blocked too"
    return ""


class _Canvas:
    def __init__(self):
        self.parts: list[str] = []

    def add(self, s: str):
        self.parts.append(s)

    def text(self, x, y, s, *, size=FS, anchor="start", weight=None, fill="#222", cls=None, maxw=None, italic=False):
        s = str(s)
        if maxw is not None:
            s = fit(s, maxw, size)
        attrs = [f'x="{_n(x)}"', f'y="{_n(y)}"'] + ([f'font-size="{size}"'] if size != FS else [])
        if anchor != "start":
            attrs.append(f'text-anchor="{anchor}"')
        if weight:
            attrs.append(f'font-weight="{weight}"')
        if italic:
            attrs.append('font-style="italic"')
        if fill != "#222":
            attrs.append(f'fill="{fill}"')
        if cls:
            attrs.append(f'class="{cls}"')
        self.add(f"<text {' '.join(attrs)}>{escape(s)}</text>")

    def rect(self, x, y, w, h, *, fill="none", stroke="#444", sw=1, rx=4, dash=None, cls=None):
        extra = f' stroke-dasharray="{dash}"' if dash else ""
        extra += f' class="{cls}"' if cls else ""
        self.add(f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(w)}" height="{_n(h)}" rx="{rx}" fill="{fill}" stroke="{stroke}" '
                 f'stroke-width="{_n(sw)}"{extra}/>')

    def line(self, x1, y1, x2, y2, *, stroke="#444", sw=1, dash=None, marker=None):
        extra = f' stroke-dasharray="{dash}"' if dash else ""
        extra += f' marker-end="url(#{marker})"' if marker else ""
        self.add(f'<line x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" y2="{_n(y2)}" stroke="{stroke}" stroke-width="{_n(sw)}"{extra}/>')


def _n(v) -> str:
    """Coordinates as integers or one decimal: stable text for byte-identical output."""
    r = round(float(v), 1)
    return str(int(r)) if r == int(r) else f"{r:.1f}"


def fit(s: str, width: float, size: int = FS) -> str:
    n = max(4, int(width / (CHAR_W * size / FS)))
    return s if len(s) <= n else s[: n - 1] + "…"


def wrap(s: str, width: float, size: int = FS, max_lines: int = 4) -> list[str]:
    n = max(8, int(width / (CHAR_W * size / FS)))
    words, lines, cur = s.split(" "), [], ""
    for w in words:
        if len(cur) + len(w) + (1 if cur else 0) <= n:
            cur = f"{cur} {w}" if cur else w
        else:
            if cur:
                lines.append(cur)
            cur = w
            while len(cur) > n:
                lines.append(cur[:n])
                cur = cur[n:]
    if cur:
        lines.append(cur)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = fit(lines[-1] + " …", width, size) if len(lines[-1]) < n else lines[-1][: n - 1] + "…"
    return lines


def _rows(sw: Swimlane, top: float) -> tuple[list, list, float]:
    """Row positions: ``ys[i]`` the top of step i's row (None when folded), ``bands`` the folded
    stretches as (y, first, last, label), and the y below the last row."""
    n = len(sw.steps)
    fold_at = {a: (b, label) for a, b, label in sw.folds if 0 <= a <= b < n}
    ys: list = [None] * n
    band_of: list = [None] * n
    bands = []
    y, i = top, 0
    while i < n:
        if i in fold_at:
            b, label = fold_at[i]
            bands.append((y, i, b, label))
            for k in range(i, b + 1):
                band_of[k] = y
            y += FOLD_H
            i = b + 1
            continue
        ys[i] = y
        y += ROW_H
        i += 1
    return ys, band_of, bands, y


def render(sw: Swimlane) -> str:
    """The swimlane as an SVG document (str).  Same input, byte-identical output."""
    lanes = _lane_keys(sw)
    col = {k: i for i, k in enumerate(lanes)}
    lane_w = 330 if len(lanes) <= 3 else 260 if len(lanes) <= 5 else 200
    inner = max(1, len(lanes)) * lane_w
    width = LEFT + inner + RIGHT
    cx = lambda k: LEFT + col[k] * lane_w + lane_w / 2  # noqa: E731
    lx = lambda k: LEFT + col[k] * lane_w  # noqa: E731

    roles_of: dict = {k: [] for k in lanes}
    for s in sw.steps:
        r = s.get("rank")
        if not isinstance(r, (list, tuple)) and r in col and s.get("role") not in (None, "fabric") and s["role"] not in roles_of[r]:
            roles_of[r].append(s["role"])
    for w in sw.waiting:
        r = w.get("rank")
        if not isinstance(r, (list, tuple)) and r in col and w.get("role") and w["role"] not in roles_of[r]:
            roles_of[r].append(w["role"])

    def lane_name(k) -> str:
        if sw.lane_labels and k in sw.lane_labels:
            return str(sw.lane_labels[k])
        if isinstance(k, int):
            if sw.lane_naming == "role" and len(roles_of.get(k, [])) == 1:
                return f"{roles_of[k][0]} {k}"
            return f"rank {k}"
        return str(k)

    c = _Canvas()
    # ---- banner -------------------------------------------------------------------------------
    y = 20
    c.text(10, y, sw.title or "swimlane", size=13, weight="bold", maxw=width - 20)
    y += 18
    if sw.verdict:
        color = {"HOLDS": "#0a7a2f", "CONFORMS": "#0a7a2f", "TRACE": "#1d3557", "BOUND_REACHED": "#b35900"}.get(sw.verdict,
                                                                                                          "#b00020")
        for i, ln in enumerate(wrap(f"{sw.verdict}: {sw.message}", width - 20, 11, 3)):
            c.text(10, y, ln, size=11, weight="bold" if i == 0 else None, fill=color)
            y += 14
    wf = sw.waitfor
    if wf is not None and wf.summary():
        for ln in wrap(wf.summary(), width - 20, 11, 2):
            c.text(10, y, ln, size=11, weight="bold", fill="#6a3d9a")
            y += 14
    if sw.highlight is not None:
        k = sw.highlight.get("index")
        note = f"first non-conforming event: step {_stepno(sw.steps, k)} — {sw.highlight.get('note', '')}"
        c.add('<a href="#divergence">')
        for ln in wrap(note, width - 20, 11, 3):
            c.text(10, y, ln, size=11, weight="bold", fill="#b35900")
            y += 14
        c.add("</a>")
    for ln in wrap("box: local step · blue box ⇢ op issued (dashed line on the lane: waiting for the fabric) · green bar: "
                   "a collective completes across its group · arrow: send → recv · ⚡ injected fault · ★ commitment point · "
                   "orange: an op fails or times out · grey lane: the process is gone · red: blocked or mismatched · "
                   "purple: waits on a condition · grey band: uneventful steps folded (every step is in the table)",
                   width - 20, 9, 4):
        c.text(10, y, ln, size=9, fill="#555")
        y += 12
    # ---- lane headers -------------------------------------------------------------------------
    head_top = y + 6
    for k in lanes:
        c.rect(lx(k) + 4, head_top, lane_w - 8, 34, fill="#eef2f7", stroke="#8a9bb0")
        c.text(cx(k), head_top + 14, lane_name(k), size=12, anchor="middle", weight="bold", maxw=lane_w - 14)
        if roles_of.get(k):
            c.text(cx(k), head_top + 28, ", ".join(roles_of[k]), size=10, anchor="middle", fill="#445", maxw=lane_w - 14)
    top = head_top + 42
    n_steps = len(sw.steps)
    ys, band_of, bands, y_steps_end = _rows(sw, top)
    lane_status = {k: v for k, v in (sw.lane_status or {}).items() if k in col}
    status_h = 26 if lane_status else 0
    y_end = y_steps_end + status_h
    wait_rows = []  # (waiting entry, row top, row height)
    yw = y_end + 24
    for w in sw.waiting:
        h = ROW_H
        if w.get("condition"):
            cond = wf.conditions.get(str(w.get("actor"))) if wf is not None else None
            text = cond.short() if cond is not None else str(w.get("condition"))
            h += LINE_H * (len(wrap(text, lane_w - 72, FS, 3)) - 1)
        wait_rows.append((w, yw, h))
        yw += h + 6
    n_wait = len(sw.waiting)
    final = bool(sw.verdict) and sw.verdict not in NOT_VIOLATIONS and not n_wait and sw.cycle_start is None \
        and not any(st.get("in_cycle") for st in sw.steps) and n_steps > 0
    final_lines = wrap(f"✗ {sw.verdict} after step {sw.steps[-1].get('step', n_steps)}: {sw.message}", inner, 11, 3) if final else []
    bottom = (yw if n_wait else y_end) + (len(final_lines) * 14 + 16 if final else 0)
    height = bottom + 16

    # ---- backgrounds: cycle band, highlight band, folds, lane guides ---------------------------------
    cycle_start = sw.cycle_start
    if cycle_start is None:
        flagged = [i for i, s in enumerate(sw.steps) if s.get("in_cycle")]
        cycle_start = flagged[0] if flagged else None

    def y_of(i):
        return ys[i] if ys[i] is not None else band_of[i]

    bg: list[str] = []
    if cycle_start is not None and 0 <= cycle_start < n_steps:
        y0 = y_of(cycle_start)
        bg.append(f'<rect x="{LEFT - 50}" y="{_n(y0)}" width="{_n(inner + 50)}" height="{_n(y_steps_end - y0)}" '
                  f'fill="#f1e9fb" stroke="#8e5cc9" stroke-dasharray="5,3" class="cycle"/>')
    hl = sw.highlight.get("index") if sw.highlight is not None else None
    if isinstance(hl, int) and 0 <= hl < n_steps:
        bg.append(f'<rect x="0" y="{_n(y_of(hl))}" width="{_n(width)}" height="{ROW_H}" fill="#ffe2c2" stroke="#e07b00" '
                  f'stroke-width="2" class="highlight" id="divergence"/>')
    c.parts.extend(bg)
    for k in lanes:
        c.line(cx(k), top, cx(k), bottom, stroke="#c9d2dd", sw=1)
    insert_at = len(c.parts)  # waiting lines go here: above the guides, below the boxes
    # ---- steps --------------------------------------------------------------------------------
    pending: dict[str, tuple[Any, float, int, str]] = {}  # actor -> (lane, y_start, slot, op)
    slot_of: dict[str, int] = {}
    pending_lane: dict[str, Any] = {}
    dead: dict = {}  # lane -> (y where it died, label)
    last_y: dict = {}  # lane -> bottom of its last drawn step
    wait_lines: list[str] = []

    def actor_key(s) -> str:
        return str(s.get("actor") or s.get("rank"))

    def slot(a: str, lane) -> int:
        if a not in slot_of:
            slot_of[a] = sum(1 for x in slot_of if pending_lane.get(x) == lane)
            pending_lane[a] = lane
        return slot_of[a]

    def end_pending(a: str, y_stop: float, color="#5b7fb0"):
        if a in pending:
            lane, y0, sl, _op = pending.pop(a)
            if y_stop <= y0:
                return
            x = cx(lane) + 7 * sl
            wait_lines.append(f'<line x1="{_n(x)}" y1="{_n(y0)}" x2="{_n(x)}" y2="{_n(y_stop)}" stroke="{color}" '
                              f'stroke-width="2" stroke-dasharray="4,3" class="waiting"/>')

    for y0_, i0, i1, label in bands:
        c.add(f'<g class="fold" data-first="{_stepno(sw.steps, i0)}" data-last="{_stepno(sw.steps, i1)}">')
        c.add(f"<title>{escape(label)}</title>")
        c.rect(LEFT - 50, y0_ + 3, inner + 50, FOLD_H - 6, fill="#eceff3", stroke="#9aa5b4", dash="3,2", rx=3)
        c.text(LEFT - 44, y0_ + 19, f"steps {_stepno(sw.steps, i0)} to {_stepno(sw.steps, i1)} folded: {label}", size=10,
               fill="#445", maxw=inner + 40)
        c.add("</g>")

    for i, s in enumerate(sw.steps):
        hidden = ys[i] is None
        y0 = y_of(i)
        cv = _Canvas() if hidden else c
        k = kind_of(s)
        no = s.get("step", i + 1)
        cv.add(f'<g class="step" id="step-{escape(str(no))}" data-step="{escape(str(no))}" data-kind="{k}">')
        cv.add(f"<title>{escape(_full(s))}</title>")
        cv.text(LEFT - 8, y0 + 18, f"#{no}", size=10, anchor="end", fill="#667")
        rank = s.get("rank")
        ids = ids_text(s.get("ids"))
        if k in ("collective", "mismatch"):
            members = [r for r in rank if r in col]
            if members:
                x0 = min(lx(r) for r in members) + 14
                x1 = max(lx(r) for r in members) + lane_w - 14
                red = k == "mismatch"
                cv.rect(x0, y0 + 4, x1 - x0, ROW_H - 8, fill="#fde3e3" if red else "#e4f0e4",
                        stroke="#b00020" if red else "#3d7a3d", sw=2 if red else 1.2, rx=3)
                for r in members:
                    for a in [a for a, p in pending.items() if p[0] == r and (not s.get("completes") or a in s["completes"])]:
                        end_pending(a, y0 + 4)
                    cv.add(f'<circle cx="{_n(cx(r))}" cy="{_n(y0 + 4)}" r="3.5" fill="{"#b00020" if red else "#3d7a3d"}"/>')
                    last_y[r] = y0 + ROW_H
                w = x1 - x0 - 12
                if red:
                    tr = str(s.get("transition") or "")
                    head = f"✗ {tr} on {s.get('group')}" if tr.endswith(" mismatch") else f"✗ mismatch on {s.get('group')}: {tr}"
                    cv.text(x0 + 6, y0 + 16, head, weight="bold", fill="#b00020", maxw=w)
                    calls = s.get("calls") or {}
                    for r in members:
                        call = calls.get(str(r), "")
                        for j, ln in enumerate(wrap(f"rank {r}: {call}", lane_w - 44, FS, 2)):
                            cv.text(lx(r) + 20, y0 + 16 + LINE_H * (j + 1), ln, fill="#7a0016")
                else:
                    cv.text(x0 + 6, y0 + 16, f"{s.get('transition')} · {s.get('group')}", weight="bold", fill="#1f4d1f", maxw=w)
                    cv.text(x0 + 6, y0 + 16 + LINE_H, s.get("op") or "", maxw=w)
                    cv.text(x0 + 6, y0 + 16 + 2 * LINE_H, ids, fill="#555", maxw=w)
        elif k == "p2p":
            src, dst = rank[0], rank[1]
            if src in col and dst in col:
                op = str(s.get("op") or "")
                for r, want in ((src, "send"), (dst, "recv")):
                    for a in [a for a, p in pending.items() if p[0] == r and p[3].startswith(want)]:
                        end_pending(a, y0 + ROW_H / 2)
                    last_y[r] = y0 + ROW_H
                x_from, x_to = cx(src), cx(dst)
                ya = y0 + 19
                cv.line(x_from, ya, x_to + (-6 if x_to > x_from else 6), ya, stroke="#2b5c9e", sw=2, marker="arrow")
                xm, w = min(x_from, x_to) + 6, max(abs(x_to - x_from) - 12, lane_w - 20)
                cv.text(xm, y0 + 13, f"{s.get('transition')} · {s.get('group')}", weight="bold", fill="#2b5c9e", maxw=w)
                cv.text(xm, y0 + 32, op, maxw=w)
                cv.text(xm, y0 + 44, ids, fill="#555", maxw=w)
        elif k == "note":
            cv.text(LEFT + 8, y0 + 18, f"{s.get('transition')} {s.get('verdict') or ''}".strip(), weight="bold", fill="#b00020",
                    maxw=inner - 16)
        elif not isinstance(rank, (list, tuple)) and rank in col:
            a = actor_key(s)
            x0, w = lx(rank) + 24, lane_w - 32
            fill, stroke, swd, head = "#ffffff", "#556", 1, ""
            if k == "issue":
                fill, stroke = "#e3edfb", "#2b5c9e"
            if k == "fault":
                fill, stroke, swd, head = "#fde3e3", "#b00020", 2, f"⚡ {s.get('fault')}: "
            if k == "error":
                fill, stroke = "#fff0d9", "#c26a00"
                end_pending(a, y0 + 4, "#c26a00")
            elif s.get("completes") and k != "issue":
                end_pending(a, y0 + 4)
            if s.get("commit"):
                swd, head = 3, "★ commit: " + head
            if s.get("violation"):
                stroke, swd = "#b00020", 2.5
            cv.rect(x0, y0 + 4, w, ROW_H - 8, fill=fill, stroke=stroke, sw=swd)
            last_y[rank] = y0 + ROW_H
            thread = ""
            actor = s.get("actor")
            if actor and "." in str(actor):
                thread = f"[{str(actor).split('.', 1)[1]}] "
            cv.text(x0 + 6, y0 + 16, head + thread + str(s.get("transition") or ""), weight="bold",
                    fill="#b00020" if k == "fault" else "#222", maxw=w - 10)
            op = s.get("op")
            dst = s.get("dst")
            if k == "issue":
                line2 = f"⇢ {op}"
            elif k == "error":
                line2 = f"✗ {op} → {dst}" if dst else f"✗ {op}"
            elif s.get("violation"):
                line2 = f"✗ {s['violation']}"
            elif op:
                line2 = str(op)
            elif dst and dst != s.get("src"):
                line2 = f"→ {dst}"
            else:
                line2 = ""
            cv.text(x0 + 6, y0 + 16 + LINE_H, line2, fill="#b00020" if s.get("violation") else "#1b3f73" if k == "issue" else "#222",
                    maxw=w - 10)
            cv.text(x0 + 6, y0 + 16 + 2 * LINE_H, ids, fill="#555", maxw=w - 10)
            if k == "issue":
                pending[a] = (rank, y0 + ROW_H - 4, slot(a, rank), str(op or ""))
            if str(s.get("transition", "")).startswith("injected ") and s.get("fault") in ("crash", "hang"):
                for b in [b for b, p in pending.items() if p[0] == rank]:
                    end_pending(b, y0 + 4, "#b00020")
                dead[rank] = (y0 + ROW_H, "process dead (crash)" if s["fault"] == "crash" else "process hung")
            elif (s.get("exits") or s.get("dst") in ("FAILED", "DEAD")) and rank not in dead:
                for b in [b for b, p in pending.items() if p[0] == rank]:
                    end_pending(b, y0 + 4, "#b00020")
                dead[rank] = (y0 + ROW_H, f"process exited ({s.get('dst')})" if s.get("dst") else "process exited")
        # notes column
        notes = []
        if s.get("commit"):
            notes.append("★ commitment point")
        if s.get("fault"):
            notes.append(f"⚡ injected fault {s['fault']}")
        if cycle_start is not None and i == cycle_start:
            notes.append("↻ cycle starts")
        if hl == i:
            notes.append("◀ first non-conforming")
        lines = [ln for nt in notes for ln in wrap(nt, RIGHT - 12, 10, 2)]
        for j, ln in enumerate(lines[:3]):
            cv.text(LEFT + inner + 8, y0 + 16 + j * LINE_H, ln, size=10, fill="#444")
        cv.add("</g>")

    # lanes that are gone / hung at the end but whose end no step shows (e.g. a process that exited
    # through its thread's FAILED state): grey from their last step
    for r, st in lane_status.items():
        if st.startswith(("gone", "hung")) and r not in dead:
            dead[r] = (last_y.get(r, top), "process gone" if st.startswith("gone") else "process hung")
    # lanes that died: grey them out below the fault
    for r in sorted(dead, key=lambda x: col[x]):
        yd, what = dead[r]
        c.add(f'<rect x="{_n(lx(r) + 2)}" y="{_n(yd)}" width="{_n(lane_w - 4)}" height="{_n(bottom - yd)}" '
              f'fill="#888" fill-opacity="0.12" class="dead" data-lane="{escape(str(r))}"/>')
        if yd + 22 <= y_steps_end:
            c.text(cx(r), yd + 14, what, anchor="middle", fill="#666", italic=True, maxw=lane_w - 20)
    # ---- status of every lane at the end ----------------------------------------------------------
    if lane_status:
        for k in lanes:
            st = lane_status.get(k)
            if not st:
                continue
            gone = st.startswith(("gone", "hung", "idle", "exited", "no exit"))
            txt = {"gone": "gone: exited or crashed", "hung": "hung: wedged", "idle": "idle: issues nothing more"}.get(st, st)
            c.add(f'<g class="lane-status" data-lane="{escape(str(k))}" data-status="{escape(st)}">')
            c.rect(lx(k) + 24, y_steps_end + 4, lane_w - 32, status_h - 8, fill="#e6e6e6" if gone else "#f4f7fb",
                   stroke="#777" if gone else "#aab", rx=9)
            c.text(cx(k), y_steps_end + 17, f"end: {txt}", anchor="middle", fill="#333" if gone else "#556",
                   weight="bold" if gone else None, maxw=lane_w - 44)
            c.add("</g>")

    # ---- blocked at the end: who waits on whom --------------------------------------------------------
    if n_wait:
        c.add(f'<line x1="{LEFT - 50}" y1="{_n(y_end + 4)}" x2="{_n(LEFT + inner)}" y2="{_n(y_end + 4)}" stroke="#b00020" '
              'stroke-width="1" stroke-dasharray="2,2"/>')
        head = ("waiting where the cycle starts — who waits on whom" if cycle_start is not None
                else "blocked at the end — who waits on whom")
        if wf is not None and wf.cycle:
            head += " (a cycle: DEADLOCK)"
        elif wf is not None and wf.chains:
            head += " (a chain to a rank that will never answer)"
        c.text(LEFT - 50, y_end + 18, head, size=11, weight="bold", fill="#b00020", maxw=inner + 40)
        box_of: dict[str, tuple[Any, float, float]] = {}  # actor -> (lane, y top, height)
        for w, y0, h in wait_rows:
            r = w.get("rank")
            if r in col:
                box_of[str(w.get("actor") or r)] = (r, y0, h)
        bw_of = lambda r: lane_w - 32 - (30 if any(b[0] == r for b in box_of.values()) else 0)  # noqa: E731
        arrows: list[str] = []
        for w, y0, h in wait_rows:
            r = w.get("rank")
            c.add(f'<g class="blocked" data-rank="{escape(str(r))}" data-actor="{escape(str(w.get("actor") or r))}">')
            if r not in col:
                c.add("</g>")
                continue
            a = str(w.get("actor") or r)
            if a not in pending:
                cand = [b for b, p in pending.items() if p[0] == r]
                a = cand[0] if cand else a
            end_pending(a, y0 + 4, "#b00020")
            x0, bw = lx(r) + 24, bw_of(r)
            cond = wf.conditions.get(str(w.get("actor"))) if wf is not None else None
            is_cond = bool(w.get("condition"))
            c.rect(x0, y0 + 4, bw, h - 8, fill="#f3ecfb" if is_cond else "#fde3e3", stroke="#6a3d9a" if is_cond else "#b00020",
                   sw=2.5)
            who = w.get("actor") or lane_name(r)
            c.add(f"<title>{escape(_wait_text(w, cond))}</title>")
            c.text(x0 + 6, y0 + 16, f"{'WAITING' if is_cond else 'BLOCKED'}: {who} in {w.get('state') or w.get('at') or ''}",
                   weight="bold", fill="#6a3d9a" if is_cond else "#b00020", maxw=bw - 10)
            if is_cond:
                what = cond.short() if cond is not None else str(w.get("condition"))
                for j, ln in enumerate(wrap(what, bw - 10, FS, 3)):
                    c.text(x0 + 6, y0 + 16 + LINE_H * (j + 1), ln)
                line3_y = y0 + 16 + (len(wrap(what, bw - 10, FS, 3)) + 1) * LINE_H
            else:
                c.text(x0 + 6, y0 + 16 + LINE_H, "⇢ " + _what(w), maxw=bw - 10)
                line3_y = y0 + 16 + 2 * LINE_H
            if wf is not None:
                outs = wf.edges_from(str(w.get("actor")))
                desc = ", ".join(f"{e.dst} ({_brief(wf.nodes[e.dst].status)})" if e.dst in wf.nodes else e.dst for e in outs)
            else:
                outs = []
                desc = ", ".join(f"{lane_name(t)}" + (f" ({_status(w, t)})" if _status(w, t) else "") for t in _targets(w))
            if desc:
                line3 = "waits for " + desc
            elif w.get("reason"):
                line3 = str(w["reason"])
            elif wf is not None and is_cond:
                line3 = "no other thread writes what it reads"
            else:
                line3 = ""
            c.text(x0 + 6, line3_y, line3, fill="#7a0016", maxw=bw - 10)
            c.add("</g>")
            # the wait-for edges out of this thread
            ym = y0 + h / 2
            if wf is not None:
                targets = [(e.id, wf.nodes[e.dst].rank if e.dst in wf.nodes else None, e.dst, e.via, e.detail or e.label,
                            wf.nodes[e.dst].status if e.dst in wf.nodes else "") for e in outs]
            else:
                targets = [(f"waitfor-{_safe(a)}-rank{_safe(t)}", t, f"rank{t}", "op", _what(w), _status(w, t))
                           for t in _targets(w)]
            for eid, t, dst_actor, via, detail, st in targets:
                color = "#6a3d9a" if via == "condition" else "#b00020"
                marker = "arrow-purple" if via == "condition" else "arrow-red"
                arrows.append(f'<g class="waitfor" id="{escape(eid)}" data-via="{via}"><title>{escape(detail)}</title>')
                tb = box_of.get(dst_actor)
                if t not in col:
                    arrows.append("</g>")
                    continue
                if tb is not None and tb[0] == r:  # another thread of the same rank: an arc on the right
                    ty = tb[1] + tb[2] / 2
                    xr = x0 + bw
                    bend = xr + (18 if ty > ym else 30)
                    arrows.append(f'<path d="M {_n(xr)} {_n(ym - 6)} C {_n(bend)} {_n(ym - 6)} {_n(bend)} {_n(ty + 6)} '
                                  f'{_n(xr + 3)} {_n(ty + 6)}" fill="none" stroke="{color}" stroke-width="2" '
                                  f'stroke-dasharray="5,3" marker-end="url(#{marker})"/>')
                elif tb is not None:  # a blocked thread on another lane: to its box
                    ty = tb[1] + tb[2] / 2
                    right = cx(t) > cx(r)
                    xa = x0 + bw if right else x0
                    xb = lx(t) + 24 if right else lx(t) + 24 + bw_of(t)
                    arrows.append(f'<line x1="{_n(xa)}" y1="{_n(ym)}" x2="{_n(xb + (-3 if right else 3))}" y2="{_n(ty)}" '
                                  f'stroke="{color}" stroke-width="2" stroke-dasharray="5,3" marker-end="url(#{marker})"/>')
                else:  # a rank that is not blocked: to its lane's axis, with its status
                    right = cx(t) > cx(r)
                    xa = x0 + bw if right else x0
                    xb = cx(t)
                    arrows.append(f'<line x1="{_n(xa)}" y1="{_n(ym)}" x2="{_n(xb + (-7 if right else 7))}" y2="{_n(ym)}" '
                                  f'stroke="{color}" stroke-width="2" stroke-dasharray="5,3" marker-end="url(#{marker})"/>')
                    arrows.append(f'<circle cx="{_n(xb)}" cy="{_n(ym)}" r="6" fill="#e6e6e6" stroke="#555" stroke-width="1.5"/>')
                    word = st or "?"
                    arrows.append(f'<text x="{_n(xb)}" y="{_n(ym + 18)}" text-anchor="middle" font-size="10" font-weight="bold" '
                                  f'fill="#444">{escape(fit(f"{dst_actor}: {word}", lane_w - 20, 10))}</text>')
                arrows.append("</g>")
        c.parts.extend(arrows)
    if final:
        c.add(f'<g class="verdict-row"><line x1="{LEFT - 50}" y1="{_n(y_end + 4)}" x2="{_n(LEFT + inner)}" y2="{_n(y_end + 4)}" '
              'stroke="#b00020" stroke-width="1" stroke-dasharray="2,2"/>')
        for j, ln in enumerate(final_lines):
            c.text(LEFT - 50, y_end + 20 + 14 * j, ln, size=11, weight="bold" if j == 0 else None, fill="#b00020")
        c.add("</g>")
    # ops still pending (never completed, not reported blocked): end at the last step
    for a in sorted(pending):
        end_pending(a, y_steps_end, "#b00020")

    # cycle loop arrow in the left margin
    if cycle_start is not None and 0 <= cycle_start < n_steps:
        ya, yb = y_of(cycle_start) + 8, y_steps_end - 8
        xa = LEFT - 44
        c.add(f'<path d="M {_n(xa + 10)} {_n(yb)} L {_n(xa)} {_n(yb)} L {_n(xa)} {_n(ya)} L {_n(xa + 8)} {_n(ya)}" fill="none" '
              f'stroke="#8e5cc9" stroke-width="2" marker-end="url(#arrow-cycle)"/>')
        c.text(xa + 4, (ya + yb) / 2, "↻", size=14, fill="#8e5cc9")

    def mk(name, color):
        return (f'<marker id="{name}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto">'
                f'<path d="M0,0 L10,5 L0,10 z" fill="{color}"/></marker>')
    defs = ("<defs>" + mk("arrow", "#2b5c9e") + mk("arrow-red", "#b00020") + mk("arrow-cycle", "#8e5cc9")
            + mk("arrow-purple", "#6a3d9a") + "</defs>")
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{_n(width)}" height="{_n(height)}" '
            f'viewBox="0 0 {_n(width)} {_n(height)}" font-family="{FONT}" font-size="{FS}" fill="#222" class="swimlane">\n'
            f'<title>{escape(sw.title or "swimlane")}</title>\n{defs}\n'
            f'<rect x="0" y="0" width="{_n(width)}" height="{_n(height)}" fill="#ffffff"/>\n')
    return head + "\n".join(c.parts[:insert_at] + wait_lines + c.parts[insert_at:]) + "\n</svg>\n"


def _brief(status: str) -> str:
    """'waiting on a condition' -> 'waiting', 'gone (exited or crashed)' -> 'gone'."""
    return {"waiting on a condition": "waiting", "blocked in op": "blocked"}.get(status, status.split(" (")[0].split(":")[0])


def _safe(s) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(s))


def _wait_text(w: dict, cond) -> str:
    bits = [f"{w.get('actor') or w.get('rank')} in {w.get('state')}"]
    if w.get("op"):
        bits.append(f"blocked in {w['op']}")
    if cond is not None:
        bits += cond.lines()
    elif w.get("condition"):
        bits.append(str(w["condition"]))
    if w.get("waits_for"):
        bits.append("waits for " + ", ".join(f"rank {t} ({_status(w, t)})" for t in w["waits_for"]))
    return " · ".join(bits)


def _stepno(steps, k):
    if isinstance(k, int) and 0 <= k < len(steps):
        return steps[k].get("step", k + 1)
    return "?"


def _full(s: dict) -> str:
    """One line with everything a step says (the SVG tooltip and the report's table)."""
    bits = [f"step {s.get('step')}"]
    r = s.get("rank")
    bits.append(f"rank {','.join(map(str, r))}" if isinstance(r, (list, tuple)) else f"rank {r}")
    for key in ("actor", "role", "transition", "op", "group"):
        if s.get(key) not in (None, ""):
            bits.append(f"{key}={s[key]}")
    if s.get("ids"):
        bits.append(ids_text(s["ids"]))
    for key in ("fault", "commit", "dst", "changed", "calls", "completes", "violation", "shared", "choice"):
        if s.get(key) not in (None, {}, "", False):
            bits.append(f"{key}={s[key]}")
    return " · ".join(bits)


full_text = _full
