"""Thin ipywidgets wrappers for chapters 6-9 (root cache, CR0.WP story, nesting, the
reviewer's walkthrough).

Same pattern as :mod:`mmu.widgets_walk`: controls wired with ``observe`` to one
``ipywidgets.HTML`` showing a pure view from :mod:`mmu.views`; ``.text`` mirrors the view,
``.result`` holds the model's answer and ``.set(**values)`` drives the widget from code,
so a notebook cell (or a test) can assert on what it shows.  No model logic here.
"""
from __future__ import annotations

from typing import Any

import ipywidgets as W

from .views.common import View
from .widgets_walk import ViewWidget, _check, _drop

__all__ = ["SeriesWalkthrough"]


class SeriesWalkthrough(ViewWidget):
    """Chapter 9: pick a patch of the series, flip between before (5.18 model) and after
    (5.19 model), and change the guest state the demo is computed for."""

    css_class = "series-walkthrough"

    def __init__(self, patch: str = "2ba676774dfc", side: str = "before", **state: Any):
        from .series import FOLLOW_UPS, PATCHES
        from .views import series_view as sv
        self._sv = sv
        st = sv.SeriesState(**state)
        options = [(f"{p.order:2d} {p.hash} {p.subject[:60]}", p.hash)
                   for p in PATCHES + FOLLOW_UPS]
        controls = {
            "patch": _drop("patch", options, sv.find_patch(patch).hash),
            "side": W.ToggleButtons(options=[("before (5.18 model)", "before"),
                                             ("after (5.19 model)", "after")], value=side,
                                    description="show"),
            "mode": _drop("guest paging", sv.MODES, st.mode),
            "wp": _check("CR0.WP", st.wp),
            "nx": _check("EFER.NX", st.nx),
            "smep": _check("CR4.SMEP", st.smep),
            "tdp": _check("TDP (EPT/NPT)", st.tdp),
            "smm": _check("SMM", st.smm),
            "tdp_level": _drop("TDP level", (4, 5), st.tdp_level),
        }
        self._base = st
        super().__init__(controls, self._run)

    def _run(self, v: dict) -> tuple[Any, View]:
        sv = self._sv
        state = self._base.replace(mode=v["mode"], wp=v["wp"], nx=v["nx"], smep=v["smep"],
                                   tdp=v["tdp"], smm=v["smm"], tdp_level=v["tdp_level"])
        d = sv.demo(v["patch"], state)
        return d, sv.render_patch(d, v["side"])
