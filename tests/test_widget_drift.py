"""Widgets shown to the reader keep their introduced state (mmu/book/widget_state.py).

Two depths:

* the mechanism, in-process: a widget records its controls, text and view words when it
  is first displayed; driving it afterwards is reported as drift, a second display too;
  ``with ... as w:`` closes every model the widget made; models nobody shows are reported;
* every chapter, executed headlessly (nbclient, a fresh kernel each) with one probe cell
  appended: after Run All no displayed widget has drifted and no widget model is left
  that no displayed widget owns (chapter 5's checks left ~1,400 before).

The browser test (tests/test_browser_chapters.py) checks the same in JupyterLab, from
the page's side.
"""
from __future__ import annotations

import json

import nbformat
import pytest
from nbformat.v4 import new_code_cell

from conftest import REPO

CHAPTERS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PROBE = "from mmu.book.widget_state import introduced_json\nprint(introduced_json())"


def displayed(w) -> dict:
    """What Jupyter does when a cell's last expression is ``w``."""
    return w._repr_mimebundle_()


# ---- the mechanism -----------------------------------------------------------------------

def test_driving_a_displayed_widget_is_drift_and_a_fresh_one_is_not():
    from mmu.book.widget_state import drift_report
    from mmu.book.widgets_walk import WalkExplorer
    shown = WalkExplorer(gva=0x600010, access="write", cpl=3)
    displayed(shown)
    intro = shown.introduced
    # By hand: the controls in page order, selections as their labels.
    assert intro["controls"] == [["Dropdown", "paging mode", "4-level"],
                                 ["Text", "GVA", "0x600010"], ["Dropdown", "access", "write"],
                                 ["Dropdown", "CPL", "3"]]
    assert "0x600010" in intro["text"] and "<" not in intro["view"]
    with WalkExplorer() as check:                     # a check's own widget: no drift
        check.set(gva="0x800000000000")
    assert check.closed and shown.drift() == []
    shown.set(gva="0x800000000000", cpl=0)            # what the old check cells did
    drift = shown.drift()
    assert drift[0].startswith("controls changed") and "'0x600010' -> '0x800000000000'" in drift[0]
    assert "text changed" in drift and "view changed" in drift
    assert any("WalkExplorer" in line and "text changed" in line for line in drift_report())
    shown.set(gva="0x600010", cpl=3)                  # set back: still reported
    assert shown.drift() == ["redrawn 2 times after it was shown, then set back: "
                             "a check drove the widget on display"]
    displayed(shown)
    assert shown.drift()[-1] == "displayed 2 times"
    shown.close()


def test_close_closes_every_model_and_unclosed_check_widgets_are_reported():
    from mmu.book.widget_state import live_models, models_of, stray_models
    from mmu.book.widgets import RoleExplorer
    before, stray = live_models(), stray_models()
    ex = RoleExplorer()
    made = len(list(models_of(ex._root())))
    # 15 checkboxes (CR0 2, CR4 7 with CET, EFER 2, vCPU 2, host 2), 2 dropdowns, 5 labels,
    # 6 HBoxes, 2 VBoxes, 1 HTML = 31 widgets, each with a Layout, and a style for all but
    # the 8 boxes: 31 + 31 + 23 = 85 models.
    assert made == 85 and live_models() == before + made
    assert stray_models() == stray + made          # not displayed: nobody owns them
    ex.close()
    assert live_models() == before and stray_models() == stray and ex.closed
    with pytest.raises(ValueError, match="closed"):
        displayed(ex)


def test_a_view_text_is_what_the_page_shows():
    from mmu.book.widget_state import view_text
    assert view_text('<div><b>cr0_wp</b>  1 &rarr; 0<style>x</style></div>\n<p>▲ changed</p>') \
        == "cr0_wp 1 → 0x ▲ changed"


# ---- every chapter -----------------------------------------------------------------------

def run_with_probe(path) -> dict:
    """Execute the chapter on a fresh kernel, then the probe cell; its JSON."""
    from nbclient import NotebookClient
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(new_code_cell(PROBE))
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    out = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
    return json.loads(out)


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_widgets_show_their_introduced_state_after_run_all(path):
    probe = run_with_probe(path)
    # Includes "N widget models alive that no displayed widget owns" (unclosed checks).
    assert probe["drift"] == [], "\n".join(probe["drift"])
    if path.stem != "00_start_here":                  # the only chapter without a widget
        assert probe["widgets"], "every chapter shows at least one widget"
