"""Property: every public entry point of the x86 layer gives a result or a TypeError /
ValueError that names the argument (issue 14; docs/design.md "Conventions").

Each entry point is called with valid arguments (a small guest built by the builders)
in which a few arguments are replaced by values from a pool of the usual mistakes:
None, bools, floats (integral or not), strings, negative, huge and numpy numbers, wrong
objects.  The call must return, or raise TypeError/ValueError whose message names one of
the replaced arguments (never OverflowError, AttributeError, KeyError, ...).  Numpy
integers are integers under the one rule (mmu.x86.bits.check_int), so they may succeed.

Budgets and the longer campaign: tests/props_profile.py.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from mmu.x86.batch import walk_many
from mmu.x86.memory import GuestMemory
from mmu.x86.pagetable import EptBuilder, PageTableBuilder
from mmu.x86.regs import Regs, make_regs
from mmu.x86.walker import ept_walk, npt_walk, walk
from props_profile import prop_settings

_POOL = st.sampled_from([
    None, True, False, np.True_, -1, 0, 1, 3, 7, 4096, 1 << 52, 1 << 63, 1 << 64, -(1 << 64),
    4096.0, 1.5, float("nan"), "0x1000", "", b"\0", np.int64(5), np.uint64(1 << 63),
    np.int8(-1), np.float64(2.0), [], [1], object(), "read", "PAE", 0x1234,
    np.array([1, 2], dtype=np.uint64)])


def _guest():
    """A 4-level guest (gva 0x400000 -> 0x9000) and EPT tables (gpa 0 -> 0x200000, 2 MiB)."""
    mem = GuestMemory()
    b = PageTableBuilder(mem, "4-level")
    b.map(0x40_0000, 0x9000, 0x1000, user=True)
    e = EptBuilder(mem)
    e.map(0, 0x20_0000, 0x20_0000, page_size=1 << 21)
    return mem, b, e


def _entry_points():
    """name -> (function((mem, b, e), **kw), function(mem, b, e) -> valid keyword arguments)."""
    return {
        "walk": (lambda _g, **kw: walk(**kw),
                 lambda mem, b, e: dict(mem=mem, regs=b.regs(), gva=0x40_0010, access="read",
                                        cpl=0, maxphyaddr=52, set_ad=True, gbpages=True)),
        "walk_many": (lambda _g, **kw: walk_many(**kw),
                      lambda mem, b, e: dict(mem=mem, regs=b.regs(), gvas=[0x40_0010, 5],
                                             access="write", cpl=3, maxphyaddr=46,
                                             set_ad=False, gbpages=True)),
        "ept_walk": (lambda _g, **kw: ept_walk(**kw),
                     lambda mem, b, e: dict(mem=mem, eptp=e.eptp, gpa=0x1234, access="fetch",
                                            levels=4, ad=True, maxphyaddr=52, execonly=False,
                                            set_ad=True)),
        "npt_walk": (lambda _g, **kw: npt_walk(**kw),
                     lambda mem, b, e: dict(mem=mem, ncr3=b.cr3, gpa=0x40_0010, access="read",
                                            levels=4, nx=True, maxphyaddr=52, set_ad=True)),
        "PageTableBuilder": (lambda _g, **kw: PageTableBuilder(**kw),
                             lambda mem, b, e: dict(mem=GuestMemory(), mode="PAE",
                                                    table_base=0x10_0000, maxphyaddr=36)),
        "PageTableBuilder.map": (lambda _g, **kw: _g[1].map(**kw),
                                 lambda mem, b, e: dict(gva=0x60_0000, gpa=0x20_0000,
                                                        size=0x20_0000, writable=True,
                                                        user=False, nx=True, pkey=2,
                                                        page_size=0x20_0000, accessed=False,
                                                        dirty=False, global_=True)),
        "PageTableBuilder.regs": (lambda _g, **kw: _g[1].regs(**kw),
                                  lambda mem, b, e: dict(wp=True, smep=False, pkru=4)),
        "EptBuilder": (lambda _g, **kw: EptBuilder(**kw),
                       lambda mem, b, e: dict(mem=GuestMemory(), levels=5, ad=False,
                                              table_base=0x1000, maxphyaddr=40,
                                              execonly=True)),
        "EptBuilder.map": (lambda _g, **kw: _g[2].map(**kw),
                           lambda mem, b, e: dict(gpa=0x4000_0000, hpa=0x8000, size=0x2000,
                                                  r=True, w=False, x=True, page_size=4096)),
        "GuestMemory.read": (lambda _g, **kw: _g[0].read(**kw),
                             lambda mem, b, e: dict(addr=0xFFF, size=16)),
        "GuestMemory.write": (lambda _g, **kw: _g[0].write(**kw),
                              lambda mem, b, e: dict(addr=0x7000_0FFE, data=b"abcd")),
        "GuestMemory.read_u64": (lambda _g, **kw: _g[0].read_u64(**kw),
                                 lambda mem, b, e: dict(addr=0x1004)),
        "GuestMemory.write_u32": (lambda _g, **kw: _g[0].write_u32(**kw),
                                  lambda mem, b, e: dict(addr=0x7000_0002, value=0xDEAD_BEEF)),
        "GuestMemory.write_u8": (lambda _g, **kw: _g[0].write_u8(**kw),
                                 lambda mem, b, e: dict(addr=0x7000_0001, value=0xFF)),
        "make_regs": (lambda _g, **kw: make_regs(**kw),
                      lambda mem, b, e: dict(mode="5-level", cr3=0x1000, wp=True, nx=False,
                                             pse=True, smep=True, smap=True, pke=True,
                                             ac=False, pkru=0xC)),
        "Regs": (lambda _g, **kw: Regs(**kw),
                 lambda mem, b, e: dict(cr0=0x8000_0011, cr3=0x1000, cr4=0x20, efer=0x500,
                                        rflags=2, pkru=0)),
    }


ENTRY_POINTS = _entry_points()


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
@prop_settings(30)
@given(st.data())
def test_entry_point_gives_result_or_names_the_argument(name, data):
    fn, valid = ENTRY_POINTS[name]
    g = _guest()
    kw = valid(*g)
    fn(g, **kw)                               # the valid call works (or the test is wrong)
    replaced = data.draw(st.lists(st.sampled_from(sorted(kw)), min_size=1, max_size=2,
                                  unique=True), label="replaced")
    for arg in replaced:
        kw[arg] = data.draw(_POOL, label=arg)
    try:
        fn(g, **kw)
    except (TypeError, ValueError) as err:
        msg = str(err)
        assert any(re.search(rf"(?<![\w.]){re.escape(a)}\b", msg) for a in replaced), (
            f"{name}: {type(err).__name__} does not name any of {replaced}: {msg}")
        event("refused, naming the argument")
    else:
        event("result")
