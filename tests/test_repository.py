"""The repository stands alone: every document a comment, docstring or doc cites is a file in it,
and every `docs/domain.md §N.M` cited is a section of that file."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEXT = {".py", ".md", ".toml", ".txt", ".pml"}


def _files():
    for p in ROOT.rglob("*"):
        if p.is_file() and p.suffix in TEXT and not any(part.startswith(".") or part in ("gallery", "__pycache__")
                                                        for part in p.relative_to(ROOT).parts):
            yield p


def test_no_reference_to_documents_outside_the_repository():
    bad = []
    for p in _files():
        for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
            if re.search(r"(?<![\w/-])(protocols|platform|DESIGN)\.md", line):
                bad.append(f"{p.relative_to(ROOT)}:{n}: {line.strip()[:100]}")
    assert not bad, "cites a document that is not in the repository:\n" + "\n".join(bad)


def test_cited_domain_sections_exist():
    domain = (ROOT / "docs" / "domain.md").read_text()
    sections = set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", domain, re.M))
    items = {f"10.{n}" for n in re.findall(r"^(\d+)\. ", domain.split("## 10.", 1)[1], re.M)}
    missing = []
    for p in _files():
        text = p.read_text(errors="replace")
        for cite in re.findall(r"docs/domain\.md §([\d.§, /-]+)", text):
            for num in re.findall(r"\d+(?:\.\d+)?", cite):
                if num not in sections and num not in items:
                    missing.append(f"{p.relative_to(ROOT)}: §{num}")
    assert not missing, "cited sections missing from docs/domain.md:\n" + "\n".join(missing)
