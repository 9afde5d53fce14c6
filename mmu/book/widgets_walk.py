"""Thin ipywidgets wrappers for chapters 1-4 (walks, permissions, shadow paging, TDP).

Each widget is controls + one ``ipywidgets.HTML`` showing a pure view from
:mod:`mmu.book.views` (docs/notebooks.md): the controls are wired with
``.observe(handler, names="value")``, the view's text is mirrored in ``.text``, the
model's answer in ``.result``, and ``.set(**values)`` changes controls from code so a
notebook cell (or a test) can drive the widget headless and assert on what it shows.
No model logic lives here.
"""
from __future__ import annotations

from typing import Any, Callable

import ipywidgets as W

from mmu.book.views.common import View
from mmu.book.widget_refusals import RefusingWidget
from mmu.book.widget_state import Introduced

__all__ = ["ViewWidget", "WalkExplorer", "PermissionLab", "ShadowExplorer", "TwoDWalkExplorer"]


class ViewWidget(RefusingWidget, Introduced):
    """Controls in a box, one HTML output; subclasses say how to compute and render.

    ``controls`` maps a name to a widget with a ``value``; ``compute(values)`` returns
    ``(result, View)`` or raises ValueError/TypeError to refuse the values, which the
    widget shows and undoes (:mod:`mmu.book.widget_refusals`).  Displaying the object
    displays the box and records its introduced state; check cells use a fresh one,
    ``with WalkExplorer(...) as w:``, which closes its widget models at the end
    (:mod:`mmu.book.widget_state`).
    """

    css_class = "mmu-widget"

    def __init__(self, controls: dict[str, Any], compute: Callable[[dict], tuple[Any, View]]):
        self.controls = controls
        self._compute = compute
        self.html = W.HTML()
        self.html.add_class(self.css_class)
        self.result: Any = None
        self.view: View | None = None
        self._muted = False
        for c in controls.values():
            c.observe(self._changed, names="value")
        self.box = W.VBox([W.HBox(list(controls.values()),
                                  layout=W.Layout(flex_flow="row wrap")), self.html])
        # The starting values must be accepted: a constructor may raise, a callback not.
        self._check_values(self.values)
        self.result, view = self._compute(self.values)
        self._accept(view)

    def _control_map(self) -> dict[str, Any]:
        return self.controls

    @property
    def values(self) -> dict[str, Any]:
        return {k: c.value for k, c in self.controls.items()}

    @property
    def text(self) -> str:
        return self.view.text if self.view is not None else ""

    def _changed(self, change: Any) -> None:
        if not self._muted:
            self._run_or_refuse({self._name_of(change["owner"]): change["old"]})

    def _run_or_refuse(self, old: dict[str, Any]) -> bool:
        """Compute for the controls' values; on a refusal put ``old`` back (never raises)."""
        values = self.values
        try:
            self._check_values(values)          # e.g. a Dropdown set to None
            result, view = self._compute(values)
        except (ValueError, TypeError) as e:
            self._refuse(str(e), old)
            return False
        self.result = result
        self._accept(view)
        return True

    def refresh(self) -> None:
        """Compute and show again for the current controls."""
        self._run_or_refuse({})

    def set(self, **values: Any) -> "ViewWidget":
        """Set several controls, then re-render once (as if the reader had clicked).

        A value no control could hold raises ValueError/TypeError naming it, before any
        control moves; values the model refuses are refused as a click would be
        (``.refused`` says why, controls and ``.result`` stay)."""
        values = self._check_values(values)
        old = {k: self.controls[k].value for k in values}
        self._put(values)
        self._run_or_refuse(old)
        return self

    def _root(self) -> W.Widget:
        return self.box


# ---- layout: every control is as wide as its longest label ---------------------------
#
# Widths are computed from the labels (never fixed per control), in em of the widget font,
# with per-character widths of DejaVu Sans -- the widest of the usual sans-serif fonts --
# rounded up, so a label fits whatever sans-serif font the reader's browser picks.
# tests/test_browser_chapters.py checks the result in the page (no clipped control).
_NARROW, _WIDE = set("fijlrtI!.,:;'|()[] "), set("mwMW%@")


def text_em(text: str) -> float:
    """Upper bound of the width of ``text`` in em (DejaVu Sans: capitals and digits
    <= 0.78 em, lower case <= 0.64 em, narrow glyphs <= 0.40 em, m/w/M/W <= 1.0 em)."""
    return sum(0.40 if c in _NARROW else 1.0 if c in _WIDE
               else 0.78 if c.isupper() or c.isdigit() else 0.64 for c in str(text))


def _em(x: float) -> str:
    return f"{x:.1f}em"


#: Room beside a dropdown's text: its padding, border and the arrow (ipywidgets 8 CSS).
_DROP_EXTRA_EM = 3.0
#: A toggle button's horizontal padding and border.
_BUTTON_EXTRA_EM = 1.6


def _check(label: str, value: bool = False) -> W.Checkbox:
    return W.Checkbox(value=value, description=label, indent=False,
                      layout=W.Layout(width="auto", margin="0 12px 0 0"))


def _labels(options) -> list[str]:
    return [str(o[0]) if isinstance(o, tuple) else str(o) for o in options]


def _drop(label: str, options, value) -> W.Dropdown:
    """A dropdown whose box fits its description and its longest option."""
    desc = text_em(label) + 0.5
    width = desc + max(text_em(t) for t in _labels(options)) + _DROP_EXTRA_EM
    return W.Dropdown(options=options, value=value, description=label,
                      style={"description_width": _em(desc)},
                      layout=W.Layout(width=_em(width), margin="2px 12px 2px 0"))


def _toggles(label: str, options, value) -> W.ToggleButtons:
    """Toggle buttons, each as wide as the longest option."""
    button = max(text_em(t) for t in _labels(options)) + _BUTTON_EXTRA_EM
    return W.ToggleButtons(options=options, value=value, description=label,
                           style={"description_width": _em(text_em(label) + 0.5),
                                  "button_width": _em(button)}, layout=W.Layout(width="auto"))


def _slider(label: str, value: int, lo: int, hi: int) -> W.IntSlider:
    """An integer slider whose description is never cut."""
    return W.IntSlider(value=value, min=lo, max=hi, description=label,
                       style={"description_width": _em(text_em(label) + 0.5)})


def _text(label: str, value: str, longest: str) -> W.Text:
    """A text box wide enough for ``longest`` (and its description)."""
    desc = text_em(label) + 0.5
    return W.Text(value=value, description=label, continuous_update=False,
                  style={"description_width": _em(desc)},
                  layout=W.Layout(width=_em(desc + text_em(longest) + 1.5)))


class WalkExplorer(ViewWidget):
    """Chapter 1: pick a paging mode, a GVA, an access and a CPL; see the walk.

    The guest is :func:`mmu.book.views.walk_view.demo_guest` for the chosen mode (built once
    per mode).  Walks use ``set_ad=False`` so looking does not change the guest.
    ``gva`` is a text box taking hex, with or without ``0x`` (:func:`parse_gva`); text
    that is not a hex number is refused like any other change (the box goes back, the
    view says why, naming what is allowed).
    """

    css_class = "walk-explorer"

    def __init__(self, mode: str = "4-level", gva: int = 0x00C0_1234, access: str = "read",
                 cpl: int = 0):
        from mmu.book.views import walk_view as wv
        self._wv = wv
        self._guests: dict[str, Any] = {}
        controls = {
            "mode": _drop("paging mode", wv.MODES, mode),
            "gva": _text("GVA", hex(gva), _LONGEST_GVA),
            "access": _drop("access", tuple(wv.ACCESS_LABELS), access),
            "cpl": _drop("CPL", (0, 1, 2, 3), cpl),
        }
        super().__init__(controls, self._run)

    def guest(self, mode: str):
        if mode not in self._guests:
            self._guests[mode] = self._wv.demo_guest(mode)
        return self._guests[mode]

    def _run(self, v: dict) -> tuple[Any, View]:
        from mmu.x86.walker import walk
        wv = self._wv
        gva, error = parse_gva(v["gva"])
        if error:
            raise ValueError(error)
        g = self.guest(v["mode"])
        r = walk(g.mem, g.regs, gva, v["access"], v["cpl"], set_ad=False)
        split = wv.gva_split(gva, v["mode"])
        view = wv.render_walk(r, gva, v["access"], v["cpl"])
        svg = wv.walk_svg(r, gva)
        return r, View(split.text + "\n\n" + view.text, split.html + view.html + svg)


class PermissionLab(ViewWidget):
    """Chapter 2: the register and page bits that decide a permission fault."""

    css_class = "perm-lab"

    _LABELS = {"cr0_wp": "CR0.WP", "cr4_smep": "CR4.SMEP", "cr4_smap": "CR4.SMAP",
               "cr4_pke": "CR4.PKE", "efer_nxe": "EFER.NXE", "rflags_ac": "RFLAGS.AC",
               "pkru_ad": "PKRU.AD[key]", "pkru_wd": "PKRU.WD[key]",
               "page_user": "page U/S=1 (user)", "page_writable": "page R/W=1",
               "page_xd": "page XD=1"}

    def __init__(self, **state: Any):
        from mmu.book.views import permissions_view as pv
        self._pv = pv
        s = pv.PermState().replace(**state)
        controls = {k: _check(label, getattr(s, k)) for k, label in self._LABELS.items()}
        controls["cpl"] = _drop("CPL", (0, 1, 2, 3), s.cpl)
        controls["access"] = _drop("access", ("read", "write", "fetch"), s.access)
        controls["pkey"] = _drop("page key", tuple(range(16)), s.pkey)
        super().__init__(controls, self._run)

    def _run(self, v: dict) -> tuple[Any, View]:
        r = self._pv.evaluate(self._pv.PermState(**v))
        return r, self._pv.render(r)


class ShadowExplorer(ViewWidget):
    """Chapter 3: the chapter guest under shadow paging after it touched four pages; choose
    the guest's paging mode and CR0.WP and see the shadow pages, their (gfn, role) keys and,
    for 32-bit and PAE guests, the PAE root."""

    css_class = "shadow-explorer"

    def __init__(self, mode: str = "4-level", cr0_wp: bool = True):
        from mmu.book.views import shadow_view as sv
        from mmu.book.views.walk_view import MODES
        self._sv = sv
        controls = {"mode": _drop("guest paging mode", MODES, mode),
                    "cr0_wp": _check("CR0.WP", cr0_wp)}
        super().__init__(controls, self._run)

    def _run(self, v: dict) -> tuple[Any, View]:
        st = self._sv.shadow_state(v["mode"], v["cr0_wp"])
        return st, self._sv.render_state(st)


class TwoDWalkExplorer(ViewWidget):
    """Chapter 4: the 2D walk of one GVA of the chapter guest as a grid of references."""

    css_class = "two-d-explorer"

    def __init__(self, mode: str = "4-level", gva: int = 0x00C0_1234, vendor: str = "intel",
                 tdp_level: int = 4):
        from mmu.book.views import tdp_view as tv
        from mmu.book.views.walk_view import MODES
        self._tv = tv
        controls = {"mode": _drop("guest paging mode", MODES, mode),
                    "gva": _text("GVA", hex(gva), _LONGEST_GVA),
                    "vendor": _drop("vendor", (("Intel EPT", "intel"), ("AMD NPT", "amd")),
                                    vendor),
                    "tdp_level": _drop("TDP levels", (4, 5), tdp_level)}
        super().__init__(controls, self._run)

    def _run(self, v: dict) -> tuple[Any, View]:
        gva, error = parse_gva(v["gva"])
        if error:
            raise ValueError(error)
        g = self._tv.two_d_grid(v["mode"], gva, "read", v["vendor"], v["tdp_level"])
        return g, self._tv.render_grid(g)


#: The longest GVA the box must show: 64 bits in hex.
_LONGEST_GVA = hex((1 << 64) - 1)


def parse_gva(text: str) -> tuple[int | None, str]:
    """A GVA typed by the reader: always hex, with or without ``0x`` (``c01234`` and
    ``0xC0_1234`` are both 0xc01234), as addresses are written everywhere in the book.
    Returns ``(gva, "")``, or ``(None, message)`` naming the text and what is allowed."""
    raw = str(text)
    digits = raw.strip().replace("_", "")
    if digits[:2].lower() == "0x":
        digits = digits[2:]
    allowed = "allowed: hex digits 0-9 a-f, with or without 0x, from 0 to 0xffffffffffffffff"
    if not digits or any(c not in "0123456789abcdefABCDEF" for c in digits):
        return None, f"GVA {raw!r} is not a hex number; {allowed}"
    gva = int(digits, 16)
    if gva >= 1 << 64:
        return None, f"GVA {raw!r} is wider than 64 bits; {allowed}"
    return gva, ""
