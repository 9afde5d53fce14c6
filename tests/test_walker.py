"""mmu.x86.walker against hand-built page tables: one test per SDM rule.

Every table here is written entry by entry at addresses computed by hand, and every
expected gpa, error code and A/D value comes from the SDM (Vol. 3A ch. 4; Vol. 3C
29.3 for EPT) or the fact sheet (§7.2, §7.5), not from running the walker.

Layouts used throughout (indices worked out by hand):

* 4-level: gva 0x80_4020_3456 = PML4 idx 1, PDPT idx 1, PD idx 1, PT idx 3, offset
  0x456.  Tables at 0x1000 (PML4), 0x2000, 0x3000, 0x4000; entry addresses 0x1008,
  0x2008, 0x3008, 0x4018; data page 0x9000 -> gpa 0x9456.
* 5-level: gva 0x1_0080_4020_3456 adds PML5 idx 1 at 0x5000 (entry 0x5008) -> 0x1000.
* PAE: gva 0x4020_3456 = PDPTE 1, PD idx 1, PT idx 3; PDPT at CR3 = 0x1020 (entry
  0x1028), PD 0x3000 (0x3008), PT 0x4000 (0x4018).
* 32-bit: gva 0x40_3456 = PD idx 1, PT idx 3; PD at 0x1000 (entry 0x1004), PT at
  0x2000 (entry 0x200C).
"""
from __future__ import annotations

import pytest

from mmu import GuestMemory, PagingMode, make_regs
from mmu.x86.bits import ACC_EXEC_MASK, ACC_USER_MASK, ACC_WRITE_MASK, PTE
from mmu.x86.walker import EptMisconfig, EptViolation, ept_walk, npt_walk, walk

P, W, U, A, D, PS, G = 1, 2, 4, 0x20, 0x40, 0x80, 0x100
XD = 1 << 63
PRW, PRWU = P | W, P | W | U
GVA4 = 0x80_4020_3456
GVA5 = 0x1_0080_4020_3456
GVA_PAE = 0x4020_3456
GVA32 = 0x40_3456
# #PF error-code bits (SDM 4.7)
E_P, E_W, E_U, E_RSVD, E_ID, E_PK = 1, 2, 4, 8, 0x10, 0x20


def four_level(pml4e=PRWU, pdpte=PRWU, pde=PRWU, pte=PRWU, *, mem=None):
    """The 4-level layout above; each argument is the entry's flag bits (address added)."""
    mem = mem or GuestMemory()
    mem.write_u64(0x1008, 0x2000 | pml4e)
    mem.write_u64(0x2008, 0x3000 | pdpte)
    mem.write_u64(0x3008, 0x4000 | pde)
    mem.write_u64(0x4018, 0x9000 | pte)
    return mem


def regs4(**kw):
    return make_regs("4-level", cr3=0x1000, **kw)


def pf(r):
    assert r.fault is not None and r.fault.vector == 14, r
    return r.fault.error_code


# ---------------------------------------------------------------------------
# paging off, modes, CR3
# ---------------------------------------------------------------------------

def test_paging_off_is_identity_masked_to_32_bits():
    mem = GuestMemory()
    regs = make_regs("none")
    r = walk(mem, regs, 0x1_2345_6789, "write", cpl=3)
    assert (r.gpa, r.fault, r.trace, r.mode, r.ok) == (0x2345_6789, None, (), PagingMode.NONE, True)
    assert mem.writes == 0


def test_cr3_above_maxphyaddr_is_refused_in_long_mode_and_pae():
    mem = four_level()
    with pytest.raises(ValueError, match="MAXPHYADDR"):
        walk(mem, make_regs("4-level", cr3=1 << 40), GVA4, "read", maxphyaddr=40)
    # Legacy-mode CR3 is 32 bits (and MAXPHYADDR >= 32), so PAE only checks the width.
    with pytest.raises(ValueError, match="32 bits"):
        walk(mem, make_regs("PAE", cr3=1 << 35 | 0x20), GVA_PAE, "read", maxphyaddr=40)
    with pytest.raises(ValueError, match="32 bits"):
        walk(mem, make_regs("32-bit", cr3=1 << 32), GVA32, "read")
    # Bits 11:0 of CR3 (PCID / PWT / PCD) are not part of the address.
    assert walk(mem, make_regs("4-level", cr3=0x1000 | 0x18), GVA4, "read").gpa == 0x9456


def test_bad_arguments_raise():
    mem = four_level()
    with pytest.raises(ValueError, match="access"):
        walk(mem, regs4(), GVA4, "exec")
    with pytest.raises(TypeError):
        walk(mem, regs4(), GVA4, 2)
    with pytest.raises(ValueError, match="cpl"):
        walk(mem, regs4(), GVA4, "read", cpl=4)
    with pytest.raises(ValueError, match="maxphyaddr"):
        walk(mem, regs4(), GVA4, "read", maxphyaddr=53)
    with pytest.raises(ValueError, match="maxphyaddr"):
        walk(mem, regs4(), GVA4, "read", maxphyaddr=31)
    with pytest.raises(ValueError, match="gva"):
        walk(mem, regs4(), -1, "read")
    with pytest.raises(TypeError, match="gva"):
        walk(mem, regs4(), 1.5, "read")
    with pytest.raises(TypeError, match="GuestMemory"):
        walk({}, regs4(), GVA4, "read")
    with pytest.raises(TypeError, match="Regs"):
        walk(mem, None, GVA4, "read")


# ---------------------------------------------------------------------------
# 4-level: translation and trace
# ---------------------------------------------------------------------------

def test_4level_translation_and_trace():
    mem = four_level(pte=PRWU | XD | (5 << 59))
    r = walk(mem, regs4(pke=True), GVA4, "read", cpl=3)
    assert r.ok and r.gpa == 0x9456 and r.level == 1 and r.page_size == 4096
    assert r.mode == PagingMode.LEVEL4 and r.pkey == 5
    assert [(s.level, s.name, s.index, s.entry_addr, s.leaf) for s in r.trace] == [
        (4, "PML4E", 1, 0x1008, False), (3, "PDPTE", 1, 0x2008, False),
        (2, "PDE", 1, 0x3008, False), (1, "PTE", 3, 0x4018, True)]
    # Entries as read, before the walk set A.
    assert [s.entry for s in r.trace] == [0x2007, 0x3007, 0x4007, 0x9007 | XD | (5 << 59)]
    assert r.trace[0].flags == PTE.P | PTE.RW | PTE.US
    assert r.trace[-1].flags == PTE.P | PTE.RW | PTE.US | PTE.XD
    # XD clears ACC_EXEC at the leaf only.
    assert [s.access_bits for s in r.trace] == [7, 7, 7, ACC_WRITE_MASK | ACC_USER_MASK]
    assert r.access_bits == ACC_WRITE_MASK | ACC_USER_MASK


def test_access_bits_are_the_and_over_levels():
    # RW=0 in the PDPTE and US=0 in the PDE, everything else permissive (facts §7.2).
    mem = four_level(pdpte=P | U, pde=P | W)
    r = walk(mem, regs4(), GVA4, "read")
    assert r.ok and r.access_bits == ACC_EXEC_MASK
    assert [s.access_bits for s in r.trace] == [7, 5, 1, 1]


def test_2m_and_1g_pages():
    mem = GuestMemory()
    mem.write_u64(0x1008, 0x2000 | PRW)
    mem.write_u64(0x2008, 0x3000 | PRW)
    mem.write_u64(0x3008, 0x60_0000 | PRW | PS | (1 << 12))   # PAT bit 12 is allowed
    r = walk(mem, regs4(), GVA4, "read")
    # 2 MiB page at 0x600000, offset = gva bits 20:0 = 0x3456.
    assert (r.gpa, r.level, r.page_size, len(r.trace)) == (0x60_3456, 2, 1 << 21, 3)
    assert r.trace[-1].flags & PTE.PAT_LARGE
    mem.write_u64(0x2008, 0x8000_0000 | PRW | PS)
    r = walk(mem, regs4(), GVA4, "read")
    # 1 GiB page at 0x80000000, offset = gva bits 29:0 = 0x203456.
    assert (r.gpa, r.level, r.page_size, len(r.trace)) == (0x8020_3456, 3, 1 << 30, 2)


# ---------------------------------------------------------------------------
# Reserved bits (facts §7.5, SDM 4.5)
# ---------------------------------------------------------------------------

def test_rsvd_bit_above_maxphyaddr_in_pte():
    mem = four_level(pte=PRW | (1 << 51))
    r = walk(mem, regs4(), GVA4, "read", maxphyaddr=40)
    assert pf(r) == E_P | E_RSVD == 0x9
    assert r.fault.level == 1 and "bit 51" in r.fault.reason and "MAXPHYADDR" in r.fault.reason
    assert pf(walk(mem, regs4(), GVA4, "write", maxphyaddr=40)) == 0xB
    # With MAXPHYADDR = 52 bit 51 is an address bit.
    assert walk(mem, regs4(), GVA4, "read", maxphyaddr=52).gpa == (1 << 51) | 0x9456


def test_rsvd_xd_without_nxe():
    mem = four_level(pde=PRW | XD)
    r = walk(mem, regs4(nx=False), GVA4, "read")
    assert pf(r) == 0x9 and r.fault.level == 2 and "XD" in r.fault.reason
    assert walk(mem, regs4(nx=True), GVA4, "read").ok


def test_rsvd_ps_in_pml4e_and_pml5e():
    mem = four_level(pml4e=PRW | PS)
    r = walk(mem, regs4(), GVA4, "read")
    assert pf(r) == 0x9 and r.fault.level == 4 and "PS" in r.fault.reason
    mem5 = four_level()
    mem5.write_u64(0x5008, 0x1000 | PRW | PS)
    r = walk(mem5, make_regs("5-level", cr3=0x5000), GVA5, "read")
    assert pf(r) == 0x9 and r.fault.level == 5


def test_rsvd_bits_in_large_leaves():
    mem = GuestMemory()
    mem.write_u64(0x1008, 0x2000 | PRW)
    mem.write_u64(0x2008, 0x3000 | PRW)
    for bit in (13, 20):           # 2 MiB PDE: bits 20:13
        mem.write_u64(0x3008, 0x60_0000 | PRW | PS | (1 << bit))
        r = walk(mem, regs4(), GVA4, "read")
        assert pf(r) == 0x9 and r.fault.level == 2, bit
    for bit in (13, 29):           # 1 GiB PDPTE: bits 29:13
        mem.write_u64(0x2008, 0x8000_0000 | PRW | PS | (1 << bit))
        r = walk(mem, regs4(), GVA4, "read")
        assert pf(r) == 0x9 and r.fault.level == 3, bit
    # Bit 21 of a 2 MiB PDE is an address bit, not reserved.
    mem.write_u64(0x2008, 0x3000 | PRW)
    mem.write_u64(0x3008, 0x20_0000 | PRW | PS)
    assert walk(mem, regs4(), GVA4, "read").gpa == 0x20_3456


def test_gbpages_false_makes_ps_in_pdpte_reserved():
    mem = GuestMemory()
    mem.write_u64(0x1008, 0x2000 | PRW)
    mem.write_u64(0x2008, 0x8000_0000 | PRW | PS)
    assert walk(mem, regs4(), GVA4, "read", gbpages=True).ok
    r = walk(mem, regs4(), GVA4, "read", gbpages=False)
    assert pf(r) == 0x9 and r.fault.level == 3 and "1 GiB" in r.fault.reason


def test_fault_order_not_present_before_reserved_before_permission():
    # The PDE is not present; the PTE would be reserved; it is never read.
    mem = four_level(pde=PRW & ~P, pte=PRW | (1 << 51))
    r = walk(mem, regs4(), GVA4, "write", cpl=3, maxphyaddr=40)
    assert pf(r) == E_W | E_U == 0x6 and r.fault.level == 2 and r.fault.reason == "PDE not present"
    # The trace ends with the entry that faulted, marked with the reason.
    assert [(s.name, s.stop) for s in r.trace] == [
        ("PML4E", None), ("PDPTE", None), ("PDE", "PDE not present")]
    # Reserved bits win over a permission violation (supervisor page, user read).
    mem = four_level(pte=P | (1 << 51))
    r = walk(mem, regs4(), GVA4, "read", cpl=3, maxphyaddr=40)
    assert pf(r) == E_P | E_U | E_RSVD == 0xD


def test_not_present_error_codes():
    mem = GuestMemory()
    r = walk(mem, regs4(), GVA4, "read")
    assert pf(r) == 0 and r.fault.level == 4 and r.fault.reason == "PML4E not present"
    assert r.fault.addr == GVA4 and len(r.trace) == 1 and r.trace[0].stop == "PML4E not present"
    assert pf(walk(mem, regs4(), GVA4, "write", cpl=3)) == 0x6
    # I/D needs (SMEP) or (PAE/long mode and NXE).
    assert pf(walk(mem, regs4(nx=True), GVA4, "fetch")) == 0x10
    assert pf(walk(mem, regs4(nx=False), GVA4, "fetch")) == 0
    assert pf(walk(mem, regs4(nx=False, smep=True), GVA4, "fetch")) == 0x10


# ---------------------------------------------------------------------------
# Canonical addresses (SDM 4.5)
# ---------------------------------------------------------------------------

def test_noncanonical_is_gp_without_walk():
    mem = four_level()
    before, n = mem.copy(), mem.writes
    for gva in (1 << 47, 0xFFFF_0000_0000_0000, 0x0000_8000_0000_1000):
        r = walk(mem, regs4(), gva, "read")
        assert (r.fault.vector, r.fault.error_code, r.trace) == (13, 0, ())
        assert "canonical" in r.fault.reason
    assert mem == before and mem.writes == n
    # Upper half is canonical: not present there (PML4 idx 511 is empty).
    assert pf(walk(mem, regs4(), 0xFFFF_FFFF_FFFF_F000, "read")) == 0


def test_5level_canonical_and_translation():
    mem = four_level()
    mem.write_u64(0x5008, 0x1000 | PRWU)
    regs = make_regs("5-level", cr3=0x5000)
    r = walk(mem, regs, GVA5, "read")
    assert r.gpa == 0x9456 and [s.name for s in r.trace] == ["PML5E", "PML4E", "PDPTE", "PDE", "PTE"]
    # Bit 47 set is canonical with 57-bit addresses (PML5 idx 0 is empty -> #PF).
    assert pf(walk(mem, regs, 1 << 47, "read")) == 0
    r = walk(mem, regs, 1 << 56, "read")
    assert (r.fault.vector, r.fault.error_code) == (13, 0)
    assert walk(mem, regs, 0xFF00_0000_0000_0000, "read").fault.vector == 14


# ---------------------------------------------------------------------------
# Permissions (SDM 4.6) and error codes
# ---------------------------------------------------------------------------

def test_user_read_of_supervisor_page_0x5():
    mem = four_level(pml4e=P | W)          # U=0 only in the PML4E
    r = walk(mem, regs4(), GVA4, "read", cpl=3)
    assert pf(r) == 0x5 and r.fault.level == 1 and "PML4E" in r.fault.reason
    assert walk(mem, regs4(), GVA4, "read", cpl=2).ok      # CPL 0-2 are supervisor


def test_user_write_to_read_only_0x7_and_wp():
    mem = four_level(pde=P | U)            # R/W=0 in the PDE
    r = walk(mem, regs4(), GVA4, "write", cpl=3)
    assert pf(r) == 0x7 and "PDE" in r.fault.reason
    assert pf(walk(mem, regs4(wp=False), GVA4, "write", cpl=3)) == 0x7
    # Supervisor write: faults only with CR0.WP=1.
    assert pf(walk(mem, regs4(wp=True), GVA4, "write")) == 0x3
    r = walk(mem, regs4(wp=False), GVA4, "write")
    assert r.ok and mem.read_u64(0x4018) == 0x9000 | PRWU | A | D


def test_xd_fetch_0x15_and_nxe():
    mem = four_level(pdpte=PRWU | XD)
    r = walk(mem, regs4(), GVA4, "fetch", cpl=3)
    assert pf(r) == 0x15 and "XD" in r.fault.reason and "PDPTE" in r.fault.reason
    assert pf(walk(mem, regs4(), GVA4, "fetch")) == 0x11
    assert walk(mem, regs4(), GVA4, "read", cpl=3).ok


def test_smep_0x11():
    mem = four_level()
    r = walk(mem, regs4(smep=True), GVA4, "fetch")
    assert pf(r) == 0x11 and r.fault.reason.startswith("SMEP")
    assert walk(mem, regs4(smep=False), GVA4, "fetch").ok
    assert walk(mem, regs4(smep=True), GVA4, "fetch", cpl=3).ok
    # U=0 at one level makes it a supervisor page: no SMEP fault.
    mem = four_level(pdpte=PRW)
    assert walk(mem, regs4(smep=True), GVA4, "fetch").ok


def test_smap_and_ac():
    mem = four_level()
    assert pf(walk(mem, regs4(smap=True), GVA4, "read")) == 0x1
    assert pf(walk(mem, regs4(smap=True), GVA4, "write")) == 0x3
    r = walk(mem, regs4(smap=True), GVA4, "read")
    assert r.fault.reason.startswith("SMAP") and "AC=0" in r.fault.reason
    assert walk(mem, regs4(smap=True, ac=True), GVA4, "read").ok
    assert walk(mem, regs4(smap=True, ac=True), GVA4, "write").ok
    assert walk(mem, regs4(smap=True), GVA4, "fetch").ok          # fetches: SMEP's business
    assert walk(mem, regs4(smap=True), GVA4, "read", cpl=3).ok    # user accesses unaffected


def test_pku_error_codes_0x25_0x27():
    key = 3
    ad, wd = 1 << (2 * key), 1 << (2 * key + 1)
    mem = four_level(pte=PRWU | (key << 59))
    r = walk(mem, regs4(pke=True, pkru=ad), GVA4, "read", cpl=3)
    assert pf(r) == 0x25 and r.pkey == key and r.fault.reason.startswith("PK")
    assert pf(walk(mem, regs4(pke=True, pkru=ad), GVA4, "read")) == 0x21   # supervisor too
    assert walk(mem, regs4(pke=True, pkru=ad), GVA4, "fetch", cpl=3).ok    # not for fetches
    assert pf(walk(mem, regs4(pke=True, pkru=wd), GVA4, "write", cpl=3)) == 0x27
    assert walk(mem, regs4(pke=True, pkru=wd), GVA4, "read", cpl=3).ok
    # Supervisor writes honour WD only with CR0.WP=1.
    assert pf(walk(mem, regs4(pke=True, pkru=wd, wp=True), GVA4, "write")) == 0x23
    assert walk(mem, regs4(pke=True, pkru=wd, wp=False), GVA4, "write").ok
    # Other keys, CR4.PKE=0, supervisor pages: no PK.
    assert walk(mem, regs4(pke=True, pkru=ad << 2), GVA4, "read", cpl=3).ok
    assert walk(mem, regs4(pke=False, pkru=ad), GVA4, "read", cpl=3).pkey is None
    smem = four_level(pte=PRW | (key << 59))
    assert walk(smem, regs4(pke=True, pkru=ad), GVA4, "read").ok


def test_pk_set_together_with_read_only_violation():
    key = 1
    mem = four_level(pte=P | U | (key << 59))        # read-only user page
    r = walk(mem, regs4(pke=True, pkru=1 << 3), GVA4, "write", cpl=3)   # WD1
    assert pf(r) == 0x27 and "R/W" in r.fault.reason and "PK" in r.fault.reason


def test_pk_never_with_not_present_or_rsvd():
    mem = four_level(pte=(PRWU & ~P) | (1 << 59))
    assert pf(walk(mem, regs4(pke=True, pkru=0xFF), GVA4, "read", cpl=3)) == 0x4
    mem = four_level(pte=PRWU | (1 << 59) | (1 << 45))
    assert pf(walk(mem, regs4(pke=True, pkru=0xFF), GVA4, "read", cpl=3, maxphyaddr=40)) == 0xD


# ---------------------------------------------------------------------------
# Accessed and dirty bits
# ---------------------------------------------------------------------------

def test_read_sets_a_everywhere_write_sets_d_on_leaf():
    mem = four_level()
    assert walk(mem, regs4(), GVA4, "read").ok
    assert [mem.read_u64(a) for a in (0x1008, 0x2008, 0x3008, 0x4018)] == [
        0x2007 | A, 0x3007 | A, 0x4007 | A, 0x9007 | A]
    n = mem.writes
    assert walk(mem, regs4(), GVA4, "read").ok
    assert mem.writes == n                      # bits already set: nothing written
    assert walk(mem, regs4(), GVA4, "write").ok
    assert mem.writes == n + 1                  # only the leaf gains D
    assert [mem.read_u64(a) for a in (0x1008, 0x2008, 0x3008, 0x4018)] == [
        0x2007 | A, 0x3007 | A, 0x4007 | A, 0x9007 | A | D]


def test_d_on_large_leaf():
    mem = GuestMemory()
    mem.write_u64(0x1008, 0x2000 | PRW)
    mem.write_u64(0x2008, 0x8000_0000 | PRW | PS)
    assert walk(mem, regs4(), GVA4, "write").ok
    assert mem.read_u64(0x1008) == 0x2000 | PRW | A
    assert mem.read_u64(0x2008) == 0x8000_0000 | PRW | PS | A | D


def test_faulting_walk_sets_no_ad_and_set_ad_false_writes_nothing():
    mem = four_level(pte=P | U)
    before = mem.copy()
    assert pf(walk(mem, regs4(), GVA4, "write", cpl=3)) == 0x7
    assert mem == before
    mem = four_level()
    n = mem.writes
    assert walk(mem, regs4(), GVA4, "write", set_ad=False).ok
    assert mem.writes == n and mem == four_level()


def test_recursive_pml4_entry_terminates_and_keeps_both_updates():
    # PML4[1] -> PML4 itself, so the PML4 doubles as PDPT, PD and PT; the walk of
    # gva (1,1,1,1) reads entry 0x1008 four times and ends at 0x1000 as a 4 KiB page.
    mem = GuestMemory()
    mem.write_u64(0x1008, 0x1000 | PRW)
    gva = (1 << 39) | (1 << 30) | (1 << 21) | (1 << 12) | 0x10
    r = walk(mem, regs4(), gva, "write")
    assert r.gpa == 0x1010 and len(r.trace) == 4
    assert mem.read_u64(0x1008) == 0x1000 | PRW | A | D


# ---------------------------------------------------------------------------
# PAE
# ---------------------------------------------------------------------------

def pae(pdpte=P, pde=PRWU, pte=PRWU):
    mem = GuestMemory()
    mem.write_u64(0x1028, 0x3000 | pdpte)
    mem.write_u64(0x3008, 0x4000 | pde)
    mem.write_u64(0x4018, 0x9000 | pte)
    return mem, make_regs("PAE", cr3=0x1020)


def test_pae_translation_pdpte_grants_no_rights_and_gets_no_a():
    mem, regs = pae()
    r = walk(mem, regs, GVA_PAE, "write", cpl=3)
    assert r.gpa == 0x9456 and [s.name for s in r.trace] == ["PDPTE", "PDE", "PTE"]
    assert r.trace[0].entry_addr == 0x1028 and r.trace[0].access_bits == 7
    assert mem.read_u64(0x1028) == 0x3000 | P                     # no A in a PDPTE
    assert mem.read_u64(0x4018) == 0x9000 | PRWU | A | D


def test_pae_pdpte_not_present_is_pf():
    mem, regs = pae(pdpte=0)
    r = walk(mem, regs, GVA_PAE, "read")
    assert pf(r) == 0 and r.fault.level == 3


@pytest.mark.parametrize("bit", [1, 2, 5, 6, 7, 8, 40, 62, 63])
def test_pae_pdpte_reserved_bit_is_gp(bit):
    mem, regs = pae(pdpte=P | (1 << bit))
    r = walk(mem, regs, GVA_PAE, "read", maxphyaddr=40)
    assert (r.fault.vector, r.fault.error_code, r.fault.level) == (13, 0, 3)
    assert "MOV CR3" in r.fault.reason and "#GP" in r.fault.reason


def test_pae_pde_pte_reserved_bits():
    mem, regs = pae(pte=PRWU | (1 << 62))                 # 62:MAXPHYADDR, even at 52
    assert pf(walk(mem, regs, GVA_PAE, "read")) == 0x9
    mem, regs = pae(pte=PRWU | XD)
    assert pf(walk(mem, regs.replace(efer=0), GVA_PAE, "read")) == 0x9   # NXE=0
    r = walk(mem, regs, GVA_PAE, "fetch")                                  # NXE=1: XD
    assert pf(r) == 0x11
    mem, regs = pae(pde=PRWU | PS | (1 << 13))              # 2 MiB PDE bits 20:13
    assert pf(walk(mem, regs, GVA_PAE, "read")) == 0x9
    mem, regs = pae(pde=PRWU | PS)
    mem.write_u64(0x3008, 0x60_0000 | PRWU | PS)
    assert walk(mem, regs, GVA_PAE, "read").gpa == 0x60_3456


def test_pae_has_no_protection_keys():
    mem, regs = pae(pte=PRWU | (1 << 59))
    # Bit 59 is reserved in PAE (62:MAXPHYADDR); with a clean PTE, PKE changes nothing.
    assert pf(walk(mem, regs, GVA_PAE, "read")) == 0x9
    mem, regs = pae()
    regs = regs.replace(cr4=regs.cr4 | (1 << 22), pkru=0xFFFF_FFFF)
    r = walk(mem, regs, GVA_PAE, "read", cpl=3)
    assert r.ok and r.pkey is None


def test_gva_wraps_to_32_bits_outside_long_mode():
    mem, regs = pae()
    assert walk(mem, regs, (1 << 32) | GVA_PAE, "read").gpa == 0x9456


# ---------------------------------------------------------------------------
# 32-bit paging
# ---------------------------------------------------------------------------

def bit32(pde, pte=PRWU):
    mem = GuestMemory()
    mem.write_u32(0x1004, pde)
    mem.write_u32(0x200C, 0x9000 | pte)
    return mem


def test_32bit_4k_and_trace():
    mem = bit32(0x2000 | PRWU)
    r = walk(mem, make_regs("32-bit", cr3=0x1000), GVA32, "read")
    assert r.gpa == 0x9456 and r.level == 1
    assert [(s.name, s.index, s.entry_addr, s.entry) for s in r.trace] == [
        ("PDE", 1, 0x1004, 0x2007), ("PTE", 3, 0x200C, 0x9007)]


def test_32bit_4m_with_pse_and_ps_ignored_without():
    mem = bit32(0x0080_0000 | PRWU | PS)
    r = walk(mem, make_regs("32-bit", cr3=0x1000, pse=True), GVA32, "read")
    assert (r.gpa, r.level, r.page_size) == (0x0080_3456, 2, 1 << 22)
    # CR4.PSE=0: PS ignored, the PDE points at a page table at 0x800000 (entry 3 there).
    mem.write_u32(0x80_000C, 0x7000 | PRWU)
    r = walk(mem, make_regs("32-bit", cr3=0x1000, pse=False), GVA32, "read")
    assert (r.gpa, r.level) == (0x7456, 1)


def test_pse36_address_bits_and_reserved():
    # PDE bits 20:13 hold PA bits 39:32.  0x12 << 13 -> PA bits 36 and 33.
    mem = bit32(0x0080_0000 | (0x12 << 13) | PRWU | PS)
    regs = make_regs("32-bit", cr3=0x1000)
    assert walk(mem, regs, GVA32, "read", maxphyaddr=40).gpa == 0x12_0080_3456
    # MAXPHYADDR 36: only bits 16:13 carry address, bit 17 (PA bit 36) is reserved.
    r = walk(mem, regs, GVA32, "read", maxphyaddr=36)
    assert pf(r) == 0x9 and "bit 17" in r.fault.reason
    # Bit 21 is always reserved; bit 20 (PA 39) is fine with MAXPHYADDR >= 40.
    mem = bit32(0x0080_0000 | (1 << 21) | PRWU | PS)
    assert pf(walk(mem, regs, GVA32, "read", maxphyaddr=52)) == 0x9
    mem = bit32(0x0080_0000 | (1 << 20) | PRWU | PS)
    assert walk(mem, regs, GVA32, "read", maxphyaddr=52).gpa == (1 << 39) | 0x80_3456


def test_32bit_has_no_xd_no_id_and_no_other_reserved_bits():
    mem = bit32(0x2000 | PRWU, pte=PRWU | PS | G | 0xE00)    # PAT, G, AVL bits
    regs = make_regs("32-bit", cr3=0x1000, nx=True)
    r = walk(mem, regs, GVA32, "fetch", cpl=3)
    assert r.ok and r.access_bits == 7
    # Not-present fetch with NXE=1 but no PAE: no I/D bit; with SMEP: I/D.
    mem = bit32(0)
    assert pf(walk(mem, regs, GVA32, "fetch")) == 0
    assert pf(walk(mem, make_regs("32-bit", cr3=0x1000, smep=True), GVA32, "fetch")) == 0x10


def test_32bit_ad_writes_four_bytes():
    mem = bit32(0x2000 | PRWU)
    mem.write_u32(0x2010, 0xDEAD_B007)                   # neighbour PTE
    assert walk(mem, make_regs("32-bit", cr3=0x1000), GVA32, "write").ok
    assert mem.read_u32(0x200C) == 0x9000 | PRWU | A | D
    assert mem.read_u32(0x2010) == 0xDEAD_B007
    assert mem.read_u32(0x1004) == 0x2000 | PRWU | A


# ---------------------------------------------------------------------------
# EPT and NPT
# ---------------------------------------------------------------------------

R_, W_, X_ = 1, 2, 4
WB = 6 << 3


def ept(pte=R_ | W_ | X_ | WB, ad=True):
    """EPT 4-level for gpa 0x80_4020_3456, same indices and table frames as four_level."""
    mem = GuestMemory()
    mem.write_u64(0x1008, 0x2000 | 7)
    mem.write_u64(0x2008, 0x3000 | 7)
    mem.write_u64(0x3008, 0x4000 | 7)
    mem.write_u64(0x4018, 0x9000 | pte)
    eptp = 0x1000 | 6 | (3 << 3) | ((1 << 6) if ad else 0)
    return mem, eptp


def test_ept_translation_and_ad():
    mem, eptp = ept()
    r = ept_walk(mem, eptp, GVA4, "write")
    assert r.gpa == 0x9456 and r.mode is None and r.level == 1
    assert mem.read_u64(0x1008) == 0x2007 | 0x100                # A = bit 8
    assert mem.read_u64(0x4018) == 0x9000 | 7 | WB | 0x300        # A and D = bit 9
    mem, eptp = ept(ad=False)
    n = mem.writes
    assert ept_walk(mem, eptp, GVA4, "write").ok and mem.writes == n


def test_ept_violation_qualification():
    mem, eptp = ept(pte=R_ | X_ | WB)
    r = ept_walk(mem, eptp, GVA4, "write")
    assert isinstance(r.fault, EptViolation) and r.fault.vector is None
    # bit 1 (write) | bit 3 (readable) | bit 5 (executable) = 0x2A
    assert r.fault.qualification == 0x2A
    mem, eptp = ept(pte=0)
    r = ept_walk(mem, eptp, GVA4, "fetch")
    assert r.fault.qualification == 0x4 and r.fault.level == 1 and "not present" in r.fault.reason


def test_ept_misconfigurations():
    for pte, why in ((W_ | WB, "writable but not readable"), (W_ | X_ | WB, "writable"),
                     (X_ | WB, "execute-only"), (R_ | (2 << 3), "memory type 2"),
                     (R_ | WB | (1 << 45), "MAXPHYADDR")):
        mem, eptp = ept(pte=pte)
        r = ept_walk(mem, eptp, GVA4, "read", maxphyaddr=40)
        assert isinstance(r.fault, EptMisconfig), pte
        assert why in r.fault.reason and r.fault.vector is None
    mem, eptp = ept(pte=X_ | WB)
    assert ept_walk(mem, eptp, GVA4, "fetch", execonly=True).ok
    assert isinstance(ept_walk(mem, eptp, GVA4, "read", execonly=True).fault, EptViolation)
    # Bits 7:3 of a PML4E are reserved.
    mem, eptp = ept()
    mem.write_u64(0x1008, 0x2000 | 7 | (1 << 3))
    r = ept_walk(mem, eptp, GVA4, "read")
    assert isinstance(r.fault, EptMisconfig) and r.fault.level == 4


def test_ept_large_pages_and_eptp_checks():
    mem, eptp = ept()
    mem.write_u64(0x2008, 0x8000_0000 | 7 | 0x80 | WB)
    assert ept_walk(mem, eptp, GVA4, "read").gpa == 0x8020_3456
    mem.write_u64(0x2008, 0x8000_0000 | 7 | 0x80 | WB | (1 << 12))   # bit 12 reserved in EPT 1G
    assert isinstance(ept_walk(mem, eptp, GVA4, "read").fault, EptMisconfig)
    with pytest.raises(ValueError, match="memory type"):
        ept_walk(mem, eptp & ~7 | 1, GVA4, "read")
    with pytest.raises(ValueError, match="5:3"):
        ept_walk(mem, eptp & ~0x38 | (1 << 3), GVA4, "read")
    with pytest.raises(ValueError, match="levels"):
        ept_walk(mem, eptp, GVA4, "read", levels=5)


def test_npt_walk_is_a_user_walk():
    mem = four_level(pte=PRW)                       # supervisor leaf
    r = npt_walk(mem, 0x1000, GVA4, "read")
    assert pf(r) == 0x5
    mem = four_level(pte=PRWU)
    assert npt_walk(mem, 0x1000, GVA4, "write").gpa == 0x9456
    # No canonical check: bit 47 set is just a gPA bit (PML4 idx 256 -> not present).
    assert pf(npt_walk(mem, 0x1000, 1 << 47, "read")) == 0x4


def test_a2_npt_walk_errors_name_ncr3():
    # The caller passed ncr3; an error that says "cr3" sends them to the wrong register.
    with pytest.raises(ValueError, match=r"^ncr3=0x1000000000000000 has bits set at or above "
                                         r"MAXPHYADDR=52"):
        npt_walk(GuestMemory(), 1 << 60, 0, "read")
    with pytest.raises(TypeError, match=r"^ncr3 must be an int"):
        npt_walk(GuestMemory(), "0x1000", 0, "read")
    with pytest.raises(ValueError, match=r"^ncr3=-0x1 "):
        npt_walk(GuestMemory(), -1, 0, "read")
    for name, kw in (("nx", {"nx": 1}), ("set_ad", {"set_ad": None})):
        with pytest.raises(TypeError, match=rf"^{name} must be a bool"):
            npt_walk(GuestMemory(), 0x1000, 0, "read", **kw)
    with pytest.raises(TypeError, match="^mem must be"):
        npt_walk({}, 0x1000, 0, "read")


def test_ept_walk_flags_must_be_bool():
    for name in ("ad", "execonly", "set_ad"):
        with pytest.raises(TypeError, match=rf"^{name} must be a bool"):
            ept_walk(GuestMemory(), 0x1E, 0, "read", **{name: 1})
