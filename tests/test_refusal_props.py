"""Properties: a refused call changes nothing (issue 14, "the class, not just the instances").

* Page-table builders: random sequences of ``map`` calls, many of them bad (misaligned,
  conflicting page sizes, out of range, wrong types, numpy and float numbers, too few
  table frames).  After every call refused with TypeError/ValueError, memory (bytes,
  allocated frames, write count) and the builder's state (tables, allocator) are what
  they were; the error names an argument or the conflict.  After every accepted call
  the walker translates the first and last page of the range the way the call said.
* Widgets: every widget class of mmu/book/widgets*.py, driven by ``set(**values)`` and by
  moving single controls the way the browser can (any option or None in a dropdown, any
  text, any bool, any int a slider clamps).  No callback raises; a refused change leaves
  the controls, ``.result`` (and the explorer's ``.state``) as they were and shows the
  reason above the kept view; an accepted change shows exactly what the widget's pure
  computation gives for the controls.

Budgets and the longer campaign: tests/props_profile.py.
"""
from __future__ import annotations

import inspect
import re

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from mmu import GuestMemory, PagingMode
from mmu.book import widgets, widgets_kvmhost, widgets_story, widgets_walk
from mmu.book.widget_refusals import RefusingWidget
from mmu.x86.pagetable import PAGE_SIZES, EptBuilder, PageTableBuilder
from mmu.x86.walker import ept_walk, walk
from props_profile import prop_settings

K4, M2, M4, G1 = 1 << 12, 1 << 21, 1 << 22, 1 << 30
HIGH = 0xFFFF_8000_0000_0000

# -- page-table builders ---------------------------------------------------------------
# Few distinct addresses, so calls collide: a 4 KiB page under a 2 MiB one, and so on.
_ADDRS = st.sampled_from([0, K4, 0x1F_F000, M2, 2 * M2, M4, G1, G1 + M2, 1 << 32, HIGH,
                          HIGH + M2, 0x1234, (1 << 47), (1 << 52) - K4, -K4, 1 << 64])
# Sizes as multiples of the page size (a GiB of 4 KiB pages would cost a second a call),
# plus sizes no call takes (0, negative, unaligned, more pages than one map writes).
_MULTIPLES = st.sampled_from([1, 1, 2, 3])
_BAD_SIZES = st.sampled_from([0, -K4, K4 + 1, 1 << 40])
_PAGE_SIZES = st.sampled_from([K4, K4, M2, M4, G1, 3, 0])
_FLAGS = st.sampled_from([True, False, False])


def _weird(values):
    """Values of the right kind, numpy versions of them, and wrong kinds."""
    return st.one_of(values, values.map(lambda v: np.int64(v) if -2**63 <= v < 2**63 else v),
                     values.map(lambda v: np.uint64(v) if 0 <= v < 2**64 else v),
                     st.sampled_from([None, True, 4096.0, "0x1000", 1.5]))


def _good_call(draw, b, ept: bool):
    """A call that would be accepted on empty tables: an offered page size, aligned
    addresses in range, bool flags.  Calls still collide with earlier ones."""
    ps = draw(st.sampled_from(_offered(b)))
    idx = st.sampled_from([0, 1, 2, 3, 511, 512])
    start = draw(idx) * ps
    if not ept and b.mode >= PagingMode.LEVEL4 and draw(st.booleans()):
        start += (1 << 64) - (1 << (56 if b.mode == PagingMode.LEVEL5 else 47))
    target = draw(idx) * ps
    kw = {"page_size": ps}
    if ept:
        r = draw(st.booleans())
        kw.update(r=r, w=r and draw(st.booleans()), x=(not r) or draw(st.booleans()))
    else:
        kw.update({n: draw(st.booleans()) for n in ("writable", "user", "accessed", "dirty",
                                                     "global_")})
        kw["nx"] = b.mode != PagingMode.BIT32 and draw(st.booleans())
        kw["pkey"] = draw(st.integers(0, 15)) if b.mode >= PagingMode.LEVEL4 else 0
    return start, target, draw(_MULTIPLES) * ps, kw


def _offered(b) -> tuple[int, ...]:
    if isinstance(b, EptBuilder):
        return (K4, M2, G1)
    return PAGE_SIZES[b.mode]


@st.composite
def _map_call(draw, b, ept: bool):
    """3 calls in 4 are good ones (:func:`_good_call`); the rest have bad arguments."""
    if draw(st.integers(0, 3)):
        return _good_call(draw, b, ept)
    kw = {"page_size": draw(st.one_of(_PAGE_SIZES, _weird(_PAGE_SIZES)))}
    if ept:
        for name in ("r", "w", "x"):
            kw[name] = draw(st.one_of(_FLAGS, st.sampled_from([1, None])))
    else:
        for name in ("writable", "user", "nx", "accessed", "dirty", "global_"):
            if draw(st.booleans()):
                kw[name] = draw(st.one_of(_FLAGS, st.sampled_from([0, None])))
        if draw(st.booleans()):
            kw["pkey"] = draw(st.sampled_from([0, 3, 15, 16, -1, np.int8(2), 2.0]))
    use_weird = draw(st.booleans())
    addr = _weird(_ADDRS) if use_weird else _ADDRS
    ps = kw["page_size"]
    unit = int(ps) if isinstance(ps, (int, np.integer)) and not isinstance(ps, bool) else K4
    sizes = st.one_of(_MULTIPLES.map(lambda k: k * max(unit, 1)), _BAD_SIZES)
    return draw(addr), draw(addr), draw(_weird(sizes) if use_weird else sizes), kw


def _state(mem: GuestMemory, b) -> tuple:
    return (mem.copy(), sorted(mem.frame_numbers()), mem.writes, list(b.tables), b._next,
            b._root)


_MAP_ARGS = {"gva", "gpa", "hpa", "size", "page_size", "writable", "user", "nx", "pkey",
             "accessed", "dirty", "global_", "r", "w", "x"}


def _names_an_argument(msg: str) -> bool:
    return any(re.search(rf"\b{n}\b", msg) for n in _MAP_ARGS)


@st.composite
def _builder(draw):
    kind = draw(st.sampled_from(["32-bit", "PAE", "4-level", "5-level", "ept4", "ept5"]))
    # A table_base near the end of the allowed range now and then, to run out of frames.
    tight = draw(st.booleans())
    if kind.startswith("ept"):
        execonly, ad = draw(st.booleans()), draw(st.booleans())
        base = (1 << 40) - 8 * K4 if tight else 0x2000_0000
        return lambda mem: EptBuilder(mem, int(kind[-1]), ad, table_base=base,
                                      maxphyaddr=40, execonly=execonly), True
    base = ((1 << 32) - 9 * K4) if tight else 0x1000_0000
    return lambda mem: PageTableBuilder(mem, kind, table_base=base), False


def _check_mapped(mem, b, ept: bool, start: int, target: int, size: int, kw: dict) -> None:
    """The walker finds the first and the last byte where the accepted call put them."""
    for off in (0, size - 1):
        if ept:
            access = "read" if kw.get("r", True) else "fetch"
            r = ept_walk(mem, b.eptp, start + off, access, execonly=b.execonly, set_ad=False)
        else:
            r = walk(mem, b.regs(), start + off, "read", set_ad=False)
        assert r.ok and r.gpa == target + off, (hex(start + off), r)


@prop_settings(60)
@given(_builder(), st.lists(st.tuples(st.booleans(), st.data()), min_size=1, max_size=8))
def test_builders_refused_map_changes_nothing(make, calls):
    make_builder, ept = make
    mem = GuestMemory()
    b = make_builder(mem)
    for _, data in calls:
        start, target, size, kw = data.draw(_map_call(b, ept))
        before = _state(mem, b)
        try:
            b.map(start, target, size, **kw)
        except (TypeError, ValueError) as e:
            assert _state(mem, b) == before, (
                f"refused map({start!r}, {target!r}, {size!r}, {kw}) changed state: {e}")
            assert _names_an_argument(str(e)), str(e)
            event("map refused")
            continue
        event("map accepted")
        _check_mapped(mem, b, ept, int(start), int(target), int(size), kw)


# -- widgets ---------------------------------------------------------------------------

def _widget_classes() -> list[type]:
    found = {cls for mod in (widgets, widgets_walk, widgets_story, widgets_kvmhost)
             for _, cls in inspect.getmembers(mod, inspect.isclass)
             if issubclass(cls, RefusingWidget) and cls.__module__ == mod.__name__
             and cls is not widgets_walk.ViewWidget}
    return sorted(found, key=lambda c: c.__name__)


WIDGETS = _widget_classes()


def test_every_widget_is_covered():
    # The eleven widgets of chapters 1-10; a new widget joins the property by being one.
    assert [c.__name__ for c in WIDGETS] == [
        "Cr0WpStory", "NestedExplorer", "PatchSection", "PermissionLab", "RoleExplorer",
        "RootCacheTimeline", "RunBrowser", "SeriesWalkthrough", "ShadowExplorer",
        "TwoDWalkExplorer", "WalkExplorer"]


def _new(cls):
    """A widget in its default state; a chapter-9 section needs a patch the model can show
    (the first one with a demo)."""
    if cls is widgets_story.PatchSection:
        from mmu.book.series import PATCHES
        return cls(next(p.hash for p in PATCHES if p.demo is not None))
    return cls()


def _controls(w) -> dict:
    return w._control_map()


def _browser_values(control) -> st.SearchStrategy:
    """What the browser can put in a control (ipywidgets allows None in a selection)."""
    import ipywidgets as W
    if isinstance(control, W.widgets.widget_selection._Selection):
        return st.sampled_from([*control._options_values, None])
    if isinstance(control, (W.Checkbox, W.ToggleButton)):
        return st.booleans()
    if isinstance(control, W.IntSlider):
        return st.integers(control.min - 3, control.max + 3)   # ipywidgets clamps these
    if isinstance(control, W.Text):
        return st.one_of(st.sampled_from(["0x0", "0xc01234", "0xffff800000001000", "1" * 25,
                                          "-1", "zz", "", " 0x10 "]), st.text(max_size=6))
    raise AssertionError(f"no strategy for {type(control).__name__}")


def _code_values(control) -> st.SearchStrategy:
    """What code can pass to set(): the browser's values and wrong kinds and ranges."""
    return st.one_of(_browser_values(control),
                     st.sampled_from([None, -1, 99, 1 << 64, 2.5, "x", True, np.int64(1)]))


def _snapshot(w) -> tuple:
    return (dict((k, c.value) for k, c in _controls(w).items()), w.result,
            getattr(w, "state", None))


def _check_after(w, before, refused_expected_text: str | None = None) -> None:
    values, result, state = _snapshot(w)
    if w.refused is not None:
        assert (values, result, state) == before[:3] or (
            values == before[0] and result is before[1] and state == before[2])
        assert w.text.startswith("✘ refused, nothing changed: ") and w.refused in w.text
        assert w.text.endswith(w._kept.text)
        assert '<div class="refused" role="alert">' in w.html.value
        return
    assert "✘ refused, nothing changed" not in w.text
    if isinstance(w, widgets.RoleExplorer):
        # The controls show where the vCPU is (after a #GP or a "never" they went back).
        assert all(values[k] == getattr(w.state, k) for k in values)
    else:
        assert w.text == w._compute(values)[1].text     # shown == computed for the controls


@pytest.mark.parametrize("cls", WIDGETS, ids=lambda c: c.__name__)
@prop_settings(10)
@given(st.data())
def test_widget_callbacks_and_set_never_half_apply(cls, data):
    w = _new(cls)
    names = sorted(_controls(w))
    # Selections weigh triple: they are where None (the ipywidgets "nothing selected") lives.
    weighted = names + [n for n, c in sorted(_controls(w).items())
                        if hasattr(c, "_options_values")] * 2
    for _ in range(data.draw(st.integers(1, 6), label="steps")):
        before = _snapshot(w)
        kept_text = w.text
        if data.draw(st.booleans(), label="by set()"):
            chosen = data.draw(st.lists(st.sampled_from(names), min_size=1, max_size=3,
                                        unique=True), label="controls")
            values = {n: data.draw(_code_values(_controls(w)[n]), label=n) for n in chosen}
            try:
                w.set(**values)
            except (TypeError, ValueError) as e:
                # set() refused before moving anything: controls, result and view as before.
                assert _snapshot(w)[0] == before[0] and _snapshot(w)[1] is before[1]
                assert w.text == kept_text
                assert any(re.search(rf"\b{n}\b", str(e)) for n in values), str(e)
                event("set() raised")
                continue
        else:
            name = data.draw(st.sampled_from(weighted), label="control")
            _controls(w)[name].value = data.draw(_browser_values(_controls(w)[name]),
                                                 label=name)     # a callback must not raise
        _check_after(w, before)
        event("refused" if w.refused else "accepted")
