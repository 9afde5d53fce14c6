"""mmu.x86.pagetable: the entries the builders write, checked bit by bit by hand, and
their refusals.  The walk tests at the end only confirm the builders and the walker
agree on a few hand-computed addresses."""
from __future__ import annotations

import pytest

from mmu import GuestMemory, PagingMode
from mmu.x86.pagetable import EptBuilder, PageTableBuilder
from mmu.x86.walker import EptMisconfig, EptViolation, ept_walk, walk

P, W, U, A, D, PS, G = 1, 2, 4, 0x20, 0x40, 0x80, 0x100
XD = 1 << 63
TB = 0x1000_0000


def test_4level_entries_bit_by_bit():
    mem = GuestMemory()
    b = PageTableBuilder(mem, "4-level")
    assert b.cr3 == TB and b.tables == [TB] and b.mode == PagingMode.LEVEL4
    # gva 0x80_4020_3000: PML4 idx 1, PDPT idx 1, PD idx 1, PT idx 3.
    b.map(0x80_4020_3000, 0x9000, 0x1000, user=True, nx=True, pkey=3, accessed=True,
          dirty=True, global_=True)
    assert b.tables == [TB, TB + 0x1000, TB + 0x2000, TB + 0x3000]
    assert mem.read_u64(TB + 8) == (TB + 0x1000) | P | W | U
    assert mem.read_u64(TB + 0x1008) == (TB + 0x2000) | P | W | U
    assert mem.read_u64(TB + 0x2008) == (TB + 0x3000) | P | W | U
    assert mem.read_u64(TB + 0x3018) == 0x9000 | P | W | U | A | D | G | XD | (3 << 59)


def test_large_pages_and_table_reuse():
    mem = GuestMemory()
    b = PageTableBuilder(mem, PagingMode.LEVEL4)
    b.map(0x4000_0000, 0x8000_0000, 1 << 30, page_size=1 << 30, writable=False)
    # PML4 idx 0, PDPT idx 1: a 1 GiB leaf.
    assert mem.read_u64(TB + 0x1008) == 0x8000_0000 | P | PS
    b.map(0x20_0000, 0x60_0000, 2 << 21, page_size=1 << 21)
    # Same PML4E and PDPT; PDPT idx 0 -> new PD with entries 1 and 2.
    assert len(b.tables) == 3
    assert mem.read_u64(TB + 0x2008) == 0x60_0000 | P | W | PS
    assert mem.read_u64(TB + 0x2010) == 0x80_0000 | P | W | PS


def test_pae_writes_four_pdptes():
    mem = GuestMemory()
    b = PageTableBuilder(mem, "PAE")
    assert b.tables == [TB + i * 0x1000 for i in range(5)]
    for i in range(4):
        assert mem.read_u64(TB + 8 * i) == (TB + 0x1000 * (i + 1)) | P   # P only
    b.map(0xC000_0000, 0x5000, 0x1000, user=True, nx=True)
    # PDPTE 3 -> PD at TB+0x4000, idx 0 -> new PT, idx 0.
    assert mem.read_u64(TB + 0x4000) == (TB + 0x5000) | P | W | U
    assert mem.read_u64(TB + 0x5000) == 0x5000 | P | W | U | XD
    assert b.regs().cr3 == TB and b.regs().mode == PagingMode.PAE


def test_32bit_entries_and_pse36():
    mem = GuestMemory()
    b = PageTableBuilder(mem, "32-bit", maxphyaddr=40)
    b.map(0x40_3000, 0x9000, 0x1000, user=True)
    # PD idx 1 (4-byte entries: at +4), PT idx 3 (at +0xC).
    assert mem.read_u32(TB + 4) == (TB + 0x1000) | P | W | U
    assert mem.read_u32(TB + 0x100C) == 0x9000 | P | W | U
    b.map(0x80_0000, 0x12_0040_0000, 1 << 22, page_size=1 << 22, writable=False)
    # PA bits 39:32 (0x12) go to PDE bits 20:13.
    assert mem.read_u32(TB + 8) == 0x40_0000 | (0x12 << 13) | P | PS
    assert walk(mem, b.regs(), 0x80_1234, "read", maxphyaddr=40).gpa == 0x12_0040_1234


@pytest.mark.parametrize("mode,gva,size,page_size", [
    ("32-bit", 0x40_0000, 1 << 22, 1 << 22), ("PAE", 0x4000_0000, 1 << 21, 1 << 21),
    ("4-level", 0xFFFF_8000_0000_0000, 1 << 30, 1 << 30), ("5-level", 0xFF00_0000_0000_0000, 0x3000, 4096),
])
def test_builder_mappings_translate(mode, gva, size, page_size):
    mem = GuestMemory()
    b = PageTableBuilder(mem, mode)
    b.map(gva, 0x4000_0000 if page_size > 4096 else 0x7000, size, page_size=page_size)
    base = 0x4000_0000 if page_size > 4096 else 0x7000
    for off in (0, size - 1, size // 2 + 5):
        r = walk(mem, b.regs(), gva + off, "write")
        assert r.gpa == base + off, (mode, off)


@pytest.mark.parametrize("kwargs,match", [
    (dict(gva=0x1001, gpa=0, size=0x1000), "gva=0x1001 is not aligned"),
    (dict(gva=0, gpa=0x800, size=0x1000), "gpa=0x800 is not aligned"),
    (dict(gva=0, gpa=0, size=0x1800), "not a multiple"),
    (dict(gva=0, gpa=0, size=0), "size"),
    (dict(gva=0, gpa=0, size=0x1000, page_size=1 << 22), "page_size"),
    (dict(gva=0, gpa=0, size=0x1000, page_size=8192), "page_size"),
    (dict(gva=1 << 47, gpa=0, size=0x1000), "canonical"),
    (dict(gva=(1 << 47) - 0x1000, gpa=0, size=0x2000), "gva range"),
    (dict(gva=0, gpa=(1 << 40) - 0x1000, size=0x2000), "gpa range"),
    (dict(gva=0, gpa=0, size=0x1000, pkey=16), "pkey"),
    (dict(gva=0, gpa=0, size=1 << 40), "at most"),
])
def test_map_refuses_bad_arguments(kwargs, match):
    b = PageTableBuilder(GuestMemory(), "4-level", maxphyaddr=40)
    with pytest.raises(ValueError, match=match):
        b.map(**kwargs)


def test_mode_specific_refusals():
    with pytest.raises(ValueError, match="XD"):
        PageTableBuilder(GuestMemory(), "32-bit").map(0, 0, 0x1000, nx=True)
    with pytest.raises(ValueError, match="protection keys"):
        PageTableBuilder(GuestMemory(), "PAE").map(0, 0, 0x1000, pkey=1)
    with pytest.raises(ValueError, match="gva range"):
        PageTableBuilder(GuestMemory(), "PAE").map(0xFFFF_F000, 0, 0x2000)
    with pytest.raises(ValueError, match="gpa range"):   # 4 KiB 32-bit PTEs hold 32-bit PAs
        PageTableBuilder(GuestMemory(), "32-bit").map(0, 1 << 32, 0x1000)
    with pytest.raises(ValueError, match="none"):
        PageTableBuilder(GuestMemory(), "none")
    with pytest.raises(ValueError, match="mode"):
        PageTableBuilder(GuestMemory(), "6-level")
    with pytest.raises(TypeError):
        PageTableBuilder({}, "4-level")
    with pytest.raises(ValueError, match="aligned"):
        PageTableBuilder(GuestMemory(), "4-level", table_base=0x1234)
    with pytest.raises(ValueError, match="table_base"):
        PageTableBuilder(GuestMemory(), "PAE", table_base=1 << 32)
    with pytest.raises(TypeError, match="writable"):
        PageTableBuilder(GuestMemory(), "4-level").map(0, 0, 0x1000, writable=1)


def test_conflicting_page_sizes_are_refused():
    b = PageTableBuilder(GuestMemory(), "4-level")
    b.map(0, 0, 1 << 21, page_size=1 << 21)
    with pytest.raises(ValueError, match="already mapped"):
        b.map(0x1000, 0, 0x1000)
    b.map(1 << 21, 0, 0x1000)
    with pytest.raises(ValueError, match="page table already covers"):
        b.map(1 << 21, 0, 1 << 21, page_size=1 << 21)
    b.map(0, 1 << 21, 1 << 21, page_size=1 << 21)      # same size: overwritten
    assert walk(b.mem, b.regs(), 0x10, "read").gpa == (1 << 21) | 0x10


def test_out_of_table_frames():
    b = PageTableBuilder(GuestMemory(), "4-level", maxphyaddr=32, table_base=(1 << 32) - 0x2000)
    with pytest.raises(ValueError, match="out of table frames"):
        b.map(0, 0, 0x1000)


def test_ept_builder_entries_and_eptp():
    mem = GuestMemory()
    e = EptBuilder(mem)
    base = 0x2000_0000
    # WB (6) | (4-1) << 3 | A/D enable bit 6
    assert e.eptp == base | 6 | 0x18 | 0x40
    assert EptBuilder(GuestMemory(), levels=5, ad=False).eptp == base | 6 | 0x20
    e.map(0x80_4020_3000, 0x9000, 0x1000, w=False)
    assert mem.read_u64(base + 8) == (base + 0x1000) | 7
    assert mem.read_u64(base + 0x3018) == 0x9000 | 1 | 4 | (6 << 3)
    e.map(0x4000_0000, 0xC000_0000, 1 << 30, page_size=1 << 30, x=False)
    # PML4 idx 0 is new: its PDPT is the fifth frame; PDPT idx 1 holds the leaf.
    assert mem.read_u64(base + 0x4008) == 0xC000_0000 | 3 | 0x80 | (6 << 3)
    assert ept_walk(mem, e.eptp, 0x4000_0123, "write").gpa == 0xC000_0123
    assert ept_walk(mem, e.eptp, 0x80_4020_3456, "read").gpa == 0x9456


def test_ept_builder_refusals():
    e = EptBuilder(GuestMemory())
    with pytest.raises(ValueError, match="misconfiguration"):
        e.map(0, 0, 0x1000, r=False, w=True)
    with pytest.raises(ValueError, match="not-present"):
        e.map(0, 0, 0x1000, r=False, w=False, x=False)
    with pytest.raises(ValueError, match="page_size"):
        e.map(0, 0, 0x1000, page_size=1 << 22)
    with pytest.raises(ValueError, match="gpa range"):
        e.map((1 << 48) - 0x1000, 0, 0x2000)
    with pytest.raises(ValueError, match="levels"):
        EptBuilder(GuestMemory(), levels=3)


# ---------------------------------------------------------------------------
# Issue 14: a refused map changes nothing; page_size follows the int rule; EPT execute-only
# ---------------------------------------------------------------------------

def _snapshot(mem: GuestMemory, b) -> tuple:
    """Everything a refused call must leave alone: memory (bytes, which frames exist, the
    write counter) and the builder's allocator (frames handed out, the next one)."""
    return mem.copy(), sorted(mem.frame_numbers()), mem.writes, list(b.tables), b._next


def test_b1_refused_2m_map_keeps_nothing_it_mapped_before_the_conflict():
    mem = GuestMemory()
    b = PageTableBuilder(mem, "4-level")
    # A 4 KiB page at 4 MiB gives PDE index 2 (4 MiB / 2 MiB) a page table.
    b.map(0x40_0000, 0x4000_0000, 0x1000)
    before = _snapshot(mem, b)
    # Three 2 MiB leaves at PDE 0, 1, 2: 0 and 1 are free, 2 holds that table.
    with pytest.raises(ValueError, match=r"^gva=0x400000 \(page_size=0x200000\): a page table "
                                         r"already covers"):
        b.map(0, 0, 6 << 20, page_size=2 << 20)
    assert _snapshot(mem, b) == before
    # PDE 0 and PDE 1 (at TB + 0x2000, the PD) are still not present: 0 and 2 MiB unmapped.
    assert mem.read_u64(TB + 0x2000) == 0 and mem.read_u64(TB + 0x2008) == 0
    regs = b.regs()
    assert not walk(mem, regs, 0, "read").ok and not walk(mem, regs, 2 << 20, "read").ok


def test_b1_refused_map_for_lack_of_table_frames_changes_nothing():
    mem = GuestMemory()
    # PAE: the PDPT and its 4 PDs take 5 frames from table_base; one frame is left.
    base = (1 << 32) - 6 * 0x1000
    b = PageTableBuilder(mem, "PAE", table_base=base)
    assert len(b.tables) == 5
    before = _snapshot(mem, b)
    # gva 0x1FF000..0x201000 spans PDE 0 and PDE 1 of the first PD: two page tables needed.
    with pytest.raises(ValueError, match="out of table frames"):
        b.map(0x1F_F000, 0x9000, 0x2000)
    assert _snapshot(mem, b) == before
    b.map(0x1F_F000, 0x9000, 0x1000)       # one table fits in the one frame left
    assert len(b.tables) == 6


def test_b1_refused_ept_map_changes_nothing():
    mem = GuestMemory()
    e = EptBuilder(mem)
    e.map(0x40_0000, 0x8000, 0x1000)                 # an EPT page table under PDE 2
    before = _snapshot(mem, e)
    with pytest.raises(ValueError, match="already covers"):
        e.map(0, 0, 6 << 20, page_size=2 << 20)
    assert _snapshot(mem, e) == before


def test_b2_page_size_follows_the_int_rule():
    np = pytest.importorskip("numpy")
    mem = GuestMemory()
    b = PageTableBuilder(mem, "4-level")
    high = 0xFFFF_8000_0000_0000                 # the first canonical high-half address
    b.map(high, 0x7000, 0x1000, page_size=np.int64(4096))
    b.map(high + (2 << 20), 0x20_0000, np.uint64(2 << 20), page_size=np.uint64(2 << 20))
    regs = b.regs()
    assert walk(mem, regs, high + 0x12, "read").gpa == 0x7012
    assert walk(mem, regs, high + (2 << 20) + 0x345, "read").gpa == 0x20_0345
    for bad in (4096.0, "4096", None):
        with pytest.raises(TypeError, match="page_size"):
            b.map(0, 0, 0x1000, page_size=bad)
    with pytest.raises(TypeError, match="page_size"):
        b.map(0, 0, 0x1000, page_size=True)
    with pytest.raises(ValueError, match="page_size=0x3 "):
        b.map(0, 0, 0x1000, page_size=3)
    e = EptBuilder(GuestMemory())
    e.map(0, 0x5000, 0x1000, page_size=np.int32(4096))
    with pytest.raises(TypeError, match="page_size"):
        e.map(0, 0x5000, 0x1000, page_size=4096.0)


def test_b3_execute_only_ept_needs_the_execonly_capability():
    mem = GuestMemory()
    e = EptBuilder(mem)
    assert e.execonly is False
    before = _snapshot(mem, e)
    with pytest.raises(ValueError, match="execute-only"):
        e.map(0, 0x5000, 0x1000, r=False, w=False, x=True)
    assert _snapshot(mem, e) == before
    # With the capability, builder and walker agree: a fetch goes through, a read is a
    # violation (XWR=100: no R), not a misconfiguration (SDM 29.3.3.1, 29.3.3.2).
    mem = GuestMemory()
    e = EptBuilder(mem, execonly=True)
    e.map(0, 0x5000, 0x1000, r=False, w=False, x=True)
    assert ept_walk(mem, e.eptp, 0x10, "fetch", execonly=e.execonly).gpa == 0x5010
    read = ept_walk(mem, e.eptp, 0x10, "read", execonly=e.execonly)
    assert isinstance(read.fault, EptViolation)
    # The same tables walked by a CPU without the capability are misconfigured.
    assert isinstance(ept_walk(mem, e.eptp, 0x10, "fetch").fault, EptMisconfig)
    with pytest.raises(TypeError, match="execonly"):
        EptBuilder(GuestMemory(), execonly=1)
