"""The committed gallery tells the truth: every variant's page shows a verdict its spec documents,
every hardened page HOLDS, the first screen is the verdict table, and no page links to an empty one.
(These read the committed files; test_diagrams.py::test_committed_gallery_is_up_to_date checks that
they are what `lockstep render --gallery` makes today.)"""
from __future__ import annotations

import re
from html import unescape

import pytest

from lockstep.diagrams.gallery import GALLERY_DIR, HARDENED, _page_dir
from lockstep.spec.registry import available, load

VERDICT = re.compile(r'<p class="verdict [a-z]+">([A-Z_]+):')


def _page(spec, variant=None) -> str:
    p = GALLERY_DIR / _page_dir(spec, variant) / "index.html"
    assert p.is_file(), f"{p} is missing: regenerate with `lockstep render --gallery`"
    return p.read_text()


@pytest.mark.parametrize("spec", available())
def test_every_page_shows_its_documented_class(spec):
    info = load(spec)
    hard = _page(spec)
    assert VERDICT.search(hard).group(1) == "HOLDS", f"{spec} hardened page does not read HOLDS"
    for v, var in info.variants.items():
        html = _page(spec, v)
        found = VERDICT.search(html).group(1)
        assert found in var.expected, f"{spec}/{v}: the page reads {found}, documented {' or '.join(var.expected)}"
        if var.backend:
            assert f"<td class=\"mono\">{var.backend} (the variant&#x27;s documented backend)</td>" in html, (spec, v)


def test_first_screen_is_the_verdict_table_and_links_are_not_empty():
    index = (GALLERY_DIR / "index.html").read_text()
    table = index.index('<table class="verdicts">')
    assert table < index.index("<img") if "<img" in index else True  # the table comes before any diagram
    rows = re.findall(r'<tr(?: class="([a-z]*)")?><td>([^<]+)</td><td><a href="([^"]+)">', index)
    assert len(rows) == sum(1 + len(load(s).variants) for s in available())
    assert not [r for r in rows if r[0] == "fault"], "a page differs from its documented verdict"
    for _cls, _spec, href in rows:
        assert (GALLERY_DIR / unescape(href)).is_file(), href
    for page in GALLERY_DIR.rglob("index.html"):
        html = page.read_text()
        for href in re.findall(r'href="([^"#]+)(?:#[^"]*)?"', html):
            assert (page.parent / unescape(href)).is_file(), (page, href)
        if HARDENED in page.parts:
            assert "counterexample swimlane" not in html  # a HOLDS report links to no empty page


def test_gallery_shows_the_cycle_the_chain_and_the_divergence():
    qnd = _page("pp0", "queue-no-drain")
    assert "wait-for cycle: rank0 → rank0.comms → rank0" in qnd
    om07 = _page("pp1", "om07-leader-throws")
    assert "wait-for chain: rank2 → rank1 (gone" in om07
    index = (GALLERY_DIR / "index.html").read_text()
    m = re.search(r'href="(traces/[^"]+/index.html)#divergence"', index)
    assert m, "the gallery links no recorded run's divergence"
    trace = (GALLERY_DIR / m.group(1)).read_text()
    assert 'id="divergence"' in trace
