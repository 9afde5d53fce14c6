"""mmu.x86.memory.GuestMemory and mmu.x86.regs.paging_mode / make_regs.

Expected values are x86 facts (little-endian, SDM 4.1.1 table 4-1 for the modes,
the MOV-to-CR0 / WRMSR #GP conditions for the refused states)."""
from __future__ import annotations

import pytest

from mmu import CR0, CR4, EFER, GuestMemory, PagingMode, Regs, make_regs, paging_mode


# -- GuestMemory --------------------------------------------------------------

def test_unwritten_memory_reads_zero_and_stays_sparse():
    mem = GuestMemory()
    assert mem.read(0xF_FFFF_FFFF_F000, 16) == bytes(16)
    assert mem.read_u64((1 << 52) - 8) == 0 and mem.read_u32(0x1234) == 0
    assert len(mem) == 0 and mem.writes == 0
    mem.write_u8((1 << 52) - 1, 0xAB)
    assert len(mem) == 1 and mem.read_u8((1 << 52) - 1) == 0xAB


def test_little_endian():
    mem = GuestMemory()
    mem.write_u64(0x1000, 0x1122_3344_5566_7788)
    assert mem.read(0x1000, 8) == bytes([0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11])
    assert mem.read_u32(0x1000) == 0x5566_7788 and mem.read_u32(0x1004) == 0x1122_3344
    mem.write_u32(0x2000, 0xDEAD_BEEF)
    assert mem.read_u8(0x2000) == 0xEF


def test_cross_frame_and_unaligned_access():
    mem = GuestMemory()
    mem.write_u64(0x1FFC, 0x0102_0304_0506_0708)
    assert len(mem) == 2
    assert mem.read_u32(0x1FFC) == 0x0506_0708 and mem.read_u32(0x2000) == 0x0102_0304
    assert mem.read_u64(0x1FFC) == 0x0102_0304_0506_0708


def test_bounds_and_type_errors():
    mem = GuestMemory()
    with pytest.raises(ValueError, match="addr"):
        mem.read_u8(1 << 52)
    with pytest.raises(ValueError, match="past the end"):
        mem.read_u64((1 << 52) - 4)
    with pytest.raises(ValueError, match="addr"):
        mem.write_u8(-1, 0)
    with pytest.raises(ValueError, match="value"):
        mem.write_u32(0, 1 << 32)
    with pytest.raises(TypeError):
        mem.write(0, "text")
    with pytest.raises(TypeError):
        mem.read_u8(True)


def test_copy_and_equality_treat_zero_frames_as_missing():
    mem = GuestMemory()
    mem.write_u64(0x3000, 0)
    assert mem == GuestMemory()
    mem.write_u64(0x3000, 5)
    other = mem.copy()
    other.write_u8(0x3000, 6)
    assert mem.read_u64(0x3000) == 5 and mem != other


# -- paging_mode ----------------------------------------------------------------

PE, PG = int(CR0.PE), int(CR0.PG)
PAE, LA57 = int(CR4.PAE), int(CR4.LA57)
LME, LMA = int(EFER.LME), int(EFER.LMA)


@pytest.mark.parametrize("cr0,cr4,efer,mode", [
    (PE, 0, 0, PagingMode.NONE),
    (0, PAE, LME, PagingMode.NONE),                 # LME without PG: not yet long mode
    (PE | PG, 0, 0, PagingMode.BIT32),
    (PE | PG, LA57, 0, PagingMode.BIT32),           # LA57 only matters in long mode
    (PE | PG, PAE, 0, PagingMode.PAE),
    (PE | PG, PAE, LME | LMA, PagingMode.LEVEL4),
    (PE | PG, PAE | LA57, LME | LMA, PagingMode.LEVEL5),
])
def test_paging_mode_table_4_1(cr0, cr4, efer, mode):
    assert paging_mode(Regs(cr0=cr0, cr3=0, cr4=cr4, efer=efer)) == mode


@pytest.mark.parametrize("cr0,cr4,efer,match", [
    (PG, 0, 0, "PE"),                                   # PG without PE
    (PE | int(CR0.NW), 0, 0, "NW"),                     # NW without CD
    (PE | PG, PAE, LME, "LMA"),                         # LMA not set by the CPU
    (PE, PAE, LMA, "LMA"),                              # LMA without PG
    (PE | PG, 0, LME | LMA, "PAE"),                     # long mode without PAE
    (PE | (1 << 32), 0, 0, "63:32"),                    # reserved upper CR0 bits
])
def test_paging_mode_rejects_impossible_states(cr0, cr4, efer, match):
    with pytest.raises(ValueError, match=match):
        paging_mode(Regs(cr0=cr0, cr3=0, cr4=cr4, efer=efer))


def test_paging_mode_type_and_regs_widths():
    with pytest.raises(TypeError):
        paging_mode("4-level")
    with pytest.raises(ValueError, match="pkru"):
        Regs(cr0=PE, cr3=0, cr4=0, efer=0, pkru=1 << 32)
    with pytest.raises(TypeError, match="cr3"):
        Regs(cr0=PE, cr3=None, cr4=0, efer=0)


@pytest.mark.parametrize("name,mode", [("none", PagingMode.NONE), ("32-bit", PagingMode.BIT32),
                                       ("PAE", PagingMode.PAE), ("4-level", PagingMode.LEVEL4),
                                       ("5-level", PagingMode.LEVEL5)])
def test_make_regs_modes(name, mode):
    regs = make_regs(name, cr3=0x1000, smep=True, ac=True, pkru=4)
    assert regs.mode == mode and regs.cr3 == 0x1000 and regs.smep and regs.ac and regs.pkru == 4
    assert regs.wp and regs.nx


def test_make_regs_refuses_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        make_regs("6-level")
    with pytest.raises(TypeError):
        make_regs(4)
