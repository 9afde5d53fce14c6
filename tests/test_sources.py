"""Every citation in the book leads somewhere: docs/sources.md or the upstream page.

* In the markdown of every notebook (chapters, labs, the app page), a "§" reference or a
  bracket tag such as ``[RR-v1-0]`` must sit inside a markdown link; whatever is left
  once links are taken out must hold neither (``unlinked_citations``).
* Every link into docs/sources.md (``…sources.md#anchor``) names an anchor that exists
  there, and so does every anchor docs/sources.md links to itself.
* The strings the views and exercises show readers (not docstrings or comments) hold no
  bare "§" or tag: they cite through :func:`mmu.book.sources.cite`; every tag the series
  data cites, and every commit it lists, has an anchor.

``unlinked_citations`` and ``sources_links`` are also run on hand-made bad text, so the
checks can fail.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

from conftest import REPO
from test_notebook_hygiene import committed_notebooks
from mmu.book import series
from mmu.book.sources import anchor, cite, commit_url, message_url

SOURCES = REPO / "docs" / "sources.md"
#: A markdown link, whose text may itself hold brackets: [[RR-v1-0]](url), [`x`](url).
_LINK = re.compile(r"\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(([^)\s]*)\)")
_TAG = re.compile(r"\[(?:[A-Z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)+|T\d{2,3}|TML|KUT|QUEUE|HAO)\]")
_SECTION = re.compile(r"§\s*\d")


def anchors(markdown: str) -> set[str]:
    """Explicit ``<a id>`` anchors and GitHub-style heading ids of a markdown page."""
    found = set(re.findall(r'<a id="([^"]+)"></a>', markdown))
    for line in markdown.splitlines():
        m = re.match(r"^#{1,6}\s+(.*)$", line)
        if m:
            text = re.sub(r"<[^>]+>", "", m.group(1)).strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return found


def unlinked_citations(markdown: str) -> list[str]:
    """Each "§…" or bracket tag left once every markdown link is taken out."""
    rest = _LINK.sub(" ", markdown)
    hits = [m.group(0) for m in _TAG.finditer(rest)]
    hits += [rest[m.start():m.start() + 8] for m in _SECTION.finditer(rest)]
    return hits


def sources_links(markdown: str) -> list[str]:
    """The anchors of every link into docs/sources.md."""
    return [url.split("#", 1)[1] for url in _LINK.findall(markdown)
            if re.search(r"(^|/)sources\.md#", url)]


NOTEBOOKS = committed_notebooks(REPO)


def _markdown(path: Path) -> list[tuple[int, str]]:
    nb = nbformat.read(path, as_version=4)
    return [(i, c.source) for i, c in enumerate(nb.cells) if c.cell_type == "markdown"]


@pytest.fixture(scope="module")
def sources_anchors() -> set[str]:
    return anchors(SOURCES.read_text("utf-8"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[str(p.relative_to(REPO)) for p in NOTEBOOKS])
def test_notebook_citations_are_links(path, sources_anchors):
    bare, missing = [], []
    for i, text in _markdown(path):
        bare += [f"cell {i}: {h!r}" for h in unlinked_citations(text)]
        missing += [f"cell {i}: #{a}" for a in sources_links(text) if a not in sources_anchors]
    assert bare == [], "citations without a link (link them to docs/sources.md)"
    assert missing == [], "links to anchors docs/sources.md does not have"


def test_sources_page_links_resolve(sources_anchors):
    text = SOURCES.read_text("utf-8")
    internal = [u[1:] for u in _LINK.findall(text) if u.startswith("#")]
    assert len(internal) > 50
    assert sorted(set(internal) - sources_anchors) == []
    external = [u for u in _LINK.findall(text) if u.startswith("http")]
    # Commits go to git.kernel.org, messages to lore, files to elixir (hand-picked hosts).
    assert {re.match(r"https://([^/]+)/", u).group(1) for u in external} <= {
        "git.kernel.org", "lore.kernel.org", "elixir.bootlin.com", "www.intel.com", "gitlab.com"}


def test_sources_page_lists_every_series_source(sources_anchors):
    tags = {t for p in series.PATCHES + series.FOLLOW_UPS for t in p.sources}
    tags |= {m.tag for m in series.NAMING_DEBATE} | {c.tag for c in series.NAME_CANDIDATES}
    tags |= {row[3] for row in series.POSTINGS}
    assert sorted(t for t in tags if anchor(t) not in sources_anchors) == []
    commits = {p.hash for p in series.PATCHES + series.FOLLOW_UPS}
    assert sorted(commits - sources_anchors) == []
    text = SOURCES.read_text("utf-8")
    for h in commits:
        assert commit_url(h) in text
    for m in series.NAMING_DEBATE:        # every Message-Id the book prints links to lore
        assert message_url(m.message_id) in text, m.tag


def _shown_strings(path: Path) -> list[tuple[int, str]]:
    """String constants of a module, without docstrings and the references handed to
    ``cite()`` (what a reader can be shown as it is)."""
    tree = ast.parse(path.read_text("utf-8"))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "cite":
            docstrings.update(id(a) for a in node.args)
        # A pattern handed to re.compile is never shown: its [A-Z...] is a character class.
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "compile":
            docstrings.update(id(a) for a in node.args)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docstrings]


SHOWN = sorted([*(REPO / "mmu" / "book" / "views").glob("*.py"),
                *(REPO / "mmu" / "book" / "exercises").glob("*.py"),
                REPO / "mmu" / "book" / "widgets.py", REPO / "mmu" / "book" / "widgets_story.py",
                REPO / "mmu" / "book" / "widgets_walk.py"])


@pytest.mark.parametrize("path", SHOWN, ids=[p.name for p in SHOWN])
def test_views_cite_through_sources(path):
    bad = [f"line {n}: {s[:70]!r}" for n, s in _shown_strings(path)
           if _SECTION.search(s) or _TAG.search(s)]
    assert bad == [], "cite these with mmu.book.sources.cite()"


def test_cite_points_into_the_sources_page(sources_anchors):
    assert cite("facts §3.2") == "facts §3.2 (docs/sources.md#facts-3-2)"
    assert cite("[RR-v1-0]", "01b31714bd90") == (
        "[RR-v1-0] (docs/sources.md#rr-v1-0), "
        "01b31714bd90 (https://git.kernel.org/torvalds/c/01b31714bd90)")
    for ref in ("facts §4", "facts §9", "facts §1.1", "SDM §4.7", "[SC-REFRESH]",
                "[ROOTS-v2-18]", "[LINUS-0527]"):
        assert anchor(ref) in sources_anchors, ref
    assert message_url("<a.b@c>") == "https://lore.kernel.org/r/a.b@c"
    with pytest.raises(ValueError, match="facts 4"):
        cite("facts 4")
    with pytest.raises(ValueError, match="message_id"):
        message_url("no-at-sign")


def test_the_checks_can_fail():
    text = ("As facts §5 says ([RR-v1-0]), and [facts §4](../docs/sources.md#facts-4) "
            "and [[MK-v1-0]](../docs/sources.md#mk-v1-0) and [`[T64]`](x.md#t64).")
    assert unlinked_citations(text) == ["[RR-v1-0]", "§5 says "]
    assert sources_links(text) == ["facts-4", "mk-v1-0"]
    assert "facts-4" in anchors('<a id="facts-4"></a>') and "2-commits" in anchors("## 2. Commits")
    assert _SECTION.search("x (facts §1.1)") and _TAG.search("y [SC-REFRESH] z")
