"""mmu.book.views.svg: the book's own figures (titles that fit, labels as text, no
colour-only meaning, refusals), checked on hand-made data."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from mmu.book.views import svg
from mmu.x86.regs import make_regs
from mmu.x86.walker import walk

NS = "{http://www.w3.org/2000/svg}"


def test_wrap_and_text_width():
    # 12 px monospace: 7.2 px per character, so 72 px hold 10 characters.
    assert svg.text_width("abcde", 12) == pytest.approx(36.0)
    assert svg.wrap("aaaa bbbb cccc", 72, 12) == ["aaaa bbbb", "cccc"]
    assert svg.wrap("", 72, 12) == []


@pytest.mark.parametrize("lo, hi, n, want", [
    (0, 16, 8, [0, 2, 4, 6, 8, 10, 12, 14, 16]),     # raw step 2 -> 2
    (0, 66, 5, [0, 20, 40, 60]),                     # raw 13.2 -> 20
    (4, 4.25, 5, [4, 4.05, 4.1, 4.15, 4.2, 4.25]),   # raw 0.05 -> 0.05
])
def test_nice_ticks(lo, hi, n, want):
    assert svg.nice_ticks(lo, hi, n) == pytest.approx(want)


def test_lanes_figure_is_accessible_svg():
    fig = svg.lanes("A title that is long enough to need two lines in a narrow figure of "
                    "three hundred pixels", "two lanes", ["yes", "no"], [[(0, 1)], []],
                    (0, 4), "x", "y", "demo", width=300)
    root = ET.fromstring(fig.svg)
    assert root.get("role") == "img"
    ids = root.get("aria-labelledby").split()
    assert [root.find(f"{NS}title").get("id"), root.find(f"{NS}desc").get("id")] == ids
    # The title wraps inside the 300 px: every text line fits (7.2 px/char at 12,
    # 8.4 at 14), none starts left of 0 or ends past the right edge.
    title_lines = [t for t in root.iter(f"{NS}text") if t.get("font-weight") == "bold"]
    assert len(title_lines) >= 2
    for t in title_lines:
        half = len(t.text) * 8.4 / 2
        assert float(t.get("x")) - half >= 0 and float(t.get("x")) + half <= 300
    # One bar in lane "yes" (hatched lane 0 has no hatch overlay; the bar is a rect).
    assert fig.labels.count("yes") == 1 and "x" in fig.labels and "y" in fig.labels


def test_hatches_get_ids_unique_to_their_figure():
    a = svg.Canvas(200, "first", "", "t")
    b = svg.Canvas(200, "second", "", "t")
    for c in (a, b):
        c.rect(0, 0, 10, 10, hatch="//")
    ida = ET.fromstring(a.figure().svg).find(f"{NS}defs/{NS}pattern").get("id")
    idb = ET.fromstring(b.figure().svg).find(f"{NS}defs/{NS}pattern").get("id")
    assert ida != idb


def test_refusals():
    c = svg.Canvas(200, "t", "", "t")
    with pytest.raises(ValueError, match="hatch"):
        c.rect(0, 0, 1, 1, hatch="~~")
    with pytest.raises(ValueError, match="span lists for 2 lanes"):
        svg.lanes("t", "", ["a", "b"], [[]], (0, 1), "x", "y", "t")
    s = svg.Series("s", (0.0,), "#fff", "", "^", True)
    with pytest.raises(ValueError, match="positive"):
        svg.bars(c, 0, 0, 100, 100, ["g"], [s], ylabel="y", xlabel="x", log=True)


def test_walk_drawing_is_as_wide_as_its_title():
    """Paging off: a walk of no steps is one box (70 + 175 + 20 = 265 px wide) but its
    title, "Page walk of GVA 0x1234 (none paging)", is 37 characters of 14 px bold
    monospace, 8.4 px each = 310.8 px, + 40 px margin: the drawing widens to 350.8 px."""
    from mmu.book.views.walk_view import walk_svg
    from mmu.x86.memory import GuestMemory
    r = walk(GuestMemory(), make_regs("none"), 0x1234, "read")
    assert r.ok and not r.trace
    root = ET.fromstring(walk_svg(r, 0x1234))
    title = root.find(f"{NS}title").text
    assert title == "Page walk of GVA 0x1234 (none paging)"
    assert float(root.get("width")) == pytest.approx(350.8)
