"""Tests for mmu.kvm.tdp: TDP roots by role, reference counting across the edbdb43fc96b change,
EPT/NPT table building, and the two-dimensional walk.

Reference counts of the 2D walk are computed by hand: a guest walk of n levels reads n guest
entries, each after an m-level EPT/NPT walk of the entry's GPA, and then translates the
final GPA: n·(m+1) + m = (n+1)(m+1) - 1.  PAE guests: AMD reads the PDPTE in every walk
(n = 3); Intel starts from the PDPTE registers (n = 2), loaded beforehand by 4 EPT walks and
4 reads, 4·(m+1) references (SDM Vol. 3A 4.4.1, Vol. 3C 29.3).
"""
from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmu.x86.bits import EPT
from mmu.x86.memory import GuestMemory
from mmu.x86.pagetable import PageTableBuilder
from mmu.x86.regs import make_regs
from mmu.kvm.roles import cpu_role, tdp_root_role
from mmu.kvm.shadow import HOST_RAM_BASE, gpa_to_hpa
from mmu.kvm.tdp import PdptrLoad, TdpMMU, TdpRoot, load_pdptrs, two_d_walk
from mmu.x86.walker import EptViolation, ept_walk, npt_walk, walk


def role(level=4, smm=False, wp=True, guest_mode=False):
    return tdp_root_role(cpu_role(make_regs("4-level", wp=wp), smm=smm, guest_mode=guest_mode),
                         tdp_level=level)


# ---------------------------------------------------------------------------
# Roots and reference counts
# ---------------------------------------------------------------------------

def test_root_reuse_by_role_word():
    tdp = TdpMMU()
    a, created = tdp.get_root(role())
    assert created and a.refcount == 1 and tdp.roots == [a]
    b, created = tdp.get_root(role())
    assert b is a and not created and a.refcount == 2
    # A guest CR0.WP change does not change the TDP root role (cr0_wp is constant 1).
    c, created = tdp.get_root(role(wp=False))
    assert c is a and not created
    # SMM does (it selects another address space), and so does the TDP level.
    d, created = tdp.get_root(role(smm=True))
    e, created2 = tdp.get_root(role(level=5))
    assert created and created2 and len({id(a), id(d), id(e)}) == 3
    assert tdp.stats["roots_created"] == 3 and tdp.stats["roots_reused"] == 2


def test_put_root_without_preserve_frees_at_zero():
    """Before edbdb43fc96b: the last vCPU reference frees the root, so a reload rebuilds."""
    tdp = TdpMMU()
    a, _ = tdp.get_root(role())
    tdp.map(a, 0x1000)
    assert tdp.put_root(a, preserve=False) and a.freed and tdp.roots == []
    b, created = tdp.get_root(role())
    assert created and b is not a and tdp.stats["roots_freed"] == 1
    assert not tdp.translate(b, 0x1000).ok        # tables rebuilt from scratch
    with pytest.raises(ValueError, match="put_root"):
        tdp.put_root(a, preserve=False)


def test_put_root_with_preserve_keeps_valid_roots():
    """6.3+: the TDP MMU's own reference keeps the root until it is invalidated."""
    tdp = TdpMMU()
    a, _ = tdp.get_root(role())
    tdp.map(a, 0x1000)
    assert not tdp.put_root(a, preserve=True) and a.refcount == 0 and a.mmu_ref
    b, created = tdp.get_root(role())
    assert b is a and not created and tdp.translate(a, 0x1000).ok
    # Invalidate while referenced: it lingers (invalid, never matched) until the last put.
    assert tdp.invalidate_all() == 1 and a.invalid and not a.freed
    c, created = tdp.get_root(role())
    assert created and c is not a
    assert tdp.sp_role_word(a.hpa) == a.role.word and a.role.invalid == 1
    assert tdp.put_root(a, preserve=True) and a.freed and tdp.roots == [c]
    assert tdp.sp_role_word(a.hpa) is None
    # An unreferenced root is freed by the invalidation itself.
    tdp.put_root(c, preserve=True)
    tdp.invalidate_all()
    assert c.freed and tdp.roots == [] and tdp.stats["roots_freed"] == 2


def test_root_looks_like_a_shadow_root():
    tdp = TdpMMU()
    a, _ = tdp.get_root(role())
    assert a.sp is a and a.pae_sps is None and a.role == role() and a.hpa == a.builder.tables[0]
    # EPTP: root | WB (6) | (4 - 1) << 3 | A/D enable (bit 6).
    assert a.pointer == a.hpa | 6 | 3 << 3 | 1 << 6


# ---------------------------------------------------------------------------
# Building tables
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("vendor", ["intel", "amd"])
def test_map_counts_pages_and_faults(vendor):
    tdp = TdpMMU(vendor=vendor)
    r, _ = tdp.get_root(role())
    # By hand: a fresh 4-level root needs PDPT, PD and PT for the first page; another page
    # in the same 2 MiB none; 1 GiB further a new PD and PT; 512 GiB further all three.
    counts = [tdp.map(r, gpa).pages_allocated
              for gpa in (0x0, 0x1234, 0x1234, 1 << 30, 1 << 39)]
    assert counts == [3, 0, 0, 2, 3]
    assert tdp.map(r, 0x1234).spurious
    assert tdp.stats["pages_allocated"] == 1 + 8 and tdp.stats["faults"] == 6
    assert r.pages == 9
    for gpa in (0x1234, (1 << 30) + 0x10, (1 << 39) + 0xFFF):
        if vendor == "intel":
            w = ept_walk(tdp.mem, r.pointer, gpa, "write")
        else:
            w = npt_walk(tdp.mem, r.pointer, gpa, "write")
        assert w.ok and w.gpa == gpa + HOST_RAM_BASE
    if vendor == "intel":
        leaf = ept_walk(tdp.mem, r.pointer, 0x1234, "fetch").trace[-1].entry
        assert leaf & (EPT.R | EPT.W | EPT.X) == EPT.R | EPT.W | EPT.X
        assert (leaf >> 3) & 7 == 6                      # WB


def test_map_refuses_invalid_roots_and_bad_gpas():
    tdp = TdpMMU()
    r, _ = tdp.get_root(role())
    with pytest.raises(ValueError, match="gpa"):
        tdp.map(r, 1 << 48)
    tdp.invalidate_all()
    with pytest.raises(ValueError, match="invalid"):
        tdp.map(r, 0)
    with pytest.raises(ValueError, match="vendor"):
        TdpMMU(vendor="arm")
    with pytest.raises(ValueError, match="level 4 or 5"):
        tdp.get_root(role().replace(level=3))
    with pytest.raises(TypeError, match="preserve"):
        tdp.put_root(r, preserve=None)


# ---------------------------------------------------------------------------
# The 2D walk
# ---------------------------------------------------------------------------

def guest_on_tdp(mode, tdp_level=4, vendor="intel", gva=0x40_2000, page_size=0x1000):
    """A guest mapping ``gva`` -> 0x7_0000 (writable, user) and a TDP root mapping every
    guest frame in use (tables and data)."""
    mem = GuestMemory()
    b = PageTableBuilder(mem, mode)
    b.map(gva & ~(page_size - 1), 0x60_0000 if page_size > 0x1000 else 0x7_0000, page_size,
          page_size=page_size, writable=True, user=True)
    tdp = TdpMMU(vendor=vendor)
    r, _ = tdp.get_root(role(level=tdp_level))
    for t in b.tables:
        tdp.map(r, t)
    tdp.prefault(r, 0x60_0000 if page_size > 0x1000 else 0x7_0000, page_size)
    return mem, b, tdp, r


@pytest.mark.parametrize("mode,tdp_level,vendor,expected", [
    ("4-level", 4, "intel", 24),     # (4+1)(4+1) - 1
    ("4-level", 4, "amd", 24),
    ("5-level", 5, "intel", 35),     # (5+1)(5+1) - 1
    ("4-level", 5, "intel", 29),     # (4+1)(5+1) - 1
    ("PAE", 4, "amd", 19),           # PDPTE, PDE, PTE read in the walk: (3+1)(4+1) - 1
    ("PAE", 4, "intel", 14),         # PDPTE from its register; PDE, PTE: (2+1)(4+1) - 1
    ("PAE", 5, "amd", 23),           # (3+1)(5+1) - 1
    ("PAE", 5, "intel", 17),         # (2+1)(5+1) - 1
    ("32-bit", 4, "amd", 14),        # (2+1)(4+1) - 1
    ("32-bit", 4, "intel", 14),      # no PDPTE registers outside PAE paging
])
def test_2d_walk_reference_counts(mode, tdp_level, vendor, expected):
    mem, b, tdp, r = guest_on_tdp(mode, tdp_level, vendor)
    regs = b.regs()
    res = two_d_walk(mem, regs, 0x40_2345, "read", 3, tdp.mem, r.pointer, vendor,
                     levels=None if vendor == "intel" else tdp_level)
    assert res.ok, res.fault
    assert len(res.refs) == expected
    n = (expected + 1) // (tdp_level + 1) - 1
    assert [x.kind for x in res.refs] == (["tdp"] * tdp_level + ["guest"]) * n + ["tdp"] * tdp_level
    # The guest references are exactly the entries mmu.walk reads, in order -- less the
    # PDPTE of an Intel PAE walk, which comes from the PDPTE register.
    registers = mode == "PAE" and vendor == "intel"
    g = walk(mem, regs, 0x40_2345, "read", 3, set_ad=False)
    assert [x.gpa for x in res.refs if x.kind == "guest"] == \
        [s.entry_addr for s in g.trace if not (registers and s.level == 3)]
    # The registers were loaded first: per PDPTE an m-level EPT walk and the read.
    assert len(res.pdptr_load_refs) == (4 * (tdp_level + 1) if registers else 0)
    assert [x.gpa for x in res.pdptr_load_refs if x.kind == "guest"] == \
        ([b.cr3 + 8 * i for i in range(4)] if registers else [])
    assert (res.pdptrs is not None) == registers
    assert all(x.hpa == x.gpa + HOST_RAM_BASE for x in res.refs if x.kind == "guest")
    assert res.gpa == g.gpa == 0x7_0345 and res.hpa == 0x7_0345 + HOST_RAM_BASE


def test_2d_walk_method_uses_the_roots_format():
    mem, b, tdp, r = guest_on_tdp("4-level", tdp_level=5, vendor="amd")
    res = tdp.two_d_walk(mem, b.regs(), 0x40_2345, "read", 0, r)
    assert res.ok and len(res.refs) == 29 and res.hpa == 0x7_0345 + HOST_RAM_BASE


def test_2d_walk_paging_off_is_one_tdp_walk():
    tdp = TdpMMU()
    r, _ = tdp.get_root(role())
    tdp.map(r, 0x9000)
    res = two_d_walk(GuestMemory(), make_regs("none"), 0x9123, "write", 0, tdp.mem, r.pointer)
    assert res.ok and len(res.refs) == 4 and res.hpa == 0x9123 + HOST_RAM_BASE


def test_2d_walk_a_guest_huge_page_has_fewer_guest_levels():
    mem, b, tdp, r = guest_on_tdp("4-level", page_size=0x20_0000, gva=0x4000_0000)
    res = two_d_walk(mem, b.regs(), 0x4001_2345, "read", 0, tdp.mem, r.pointer)
    # 3 guest levels (PML4E, PDPTE, PDE leaf): (3+1)(4+1) - 1 = 19.
    assert res.ok and len(res.refs) == 19 and res.gpa == 0x61_2345


def test_2d_walk_ept_violation_on_a_guest_table():
    mem = GuestMemory()
    b = PageTableBuilder(mem, "4-level")
    b.map(0x40_2000, 0x7_0000, 0x1000)
    tdp = TdpMMU()
    r, _ = tdp.get_root(role())
    for t in b.tables[:-1]:                   # the guest's page table (last) is not in EPT
        tdp.map(r, t)
    res = two_d_walk(mem, b.regs(), 0x40_2000, "read", 0, tdp.mem, r.pointer)
    assert not res.ok and res.tdp_fault and not res.final
    assert isinstance(res.fault, EptViolation)
    pte_gpa = walk(mem, b.regs(), 0x40_2000, "read", set_ad=False).trace[-1].entry_addr
    assert res.fault_gpa == pte_gpa
    # Table accesses are translated as writes (KVM's nested_access; SDM with EPT A/D on).
    assert res.fault.qualification & 0b111 == 0b010
    # 3 guest levels fully walked (3·5) + the EPT walk of the guest PT's gpa, which reads 4
    # EPT entries: the guest tables share one 2 MiB, so the EPT PT exists and its entry for
    # the guest PT's frame is the one found not present -> 15 + 4.
    assert len(res.refs) == 19 and res.refs[-1].entry == 0 and res.refs[-1].level == 1
    tdp.map(r, b.tables[-1])
    res = two_d_walk(mem, b.regs(), 0x40_2000, "read", 0, tdp.mem, r.pointer)
    assert res.tdp_fault and res.final and res.fault_gpa == 0x7_0000 and res.gpa == 0x7_0000


def test_2d_walk_guest_fault_is_the_guest_fault():
    mem, b, tdp, r = guest_on_tdp("4-level")
    regs = b.regs()
    res = two_d_walk(mem, regs, 0x80_0000, "read", 3, tdp.mem, r.pointer)
    g = walk(mem, regs, 0x80_0000, "read", 3)
    assert not res.ok and not res.tdp_fault and res.fault == g.fault


def test_2d_walk_sets_guest_ad_bits():
    mem, b, tdp, r = guest_on_tdp("4-level")
    res = two_d_walk(mem, b.regs(), 0x40_2000, "write", 3, tdp.mem, r.pointer)
    assert res.ok and len(res.ad_writes) == 4
    assert all(v & 0x20 for _, v in res.ad_writes) and res.ad_writes[-1][1] & 0x40


# ---------------------------------------------------------------------------
# PAE guests: Intel's PDPTE registers vs AMD's walk through NPT
# ---------------------------------------------------------------------------

def pae_with_second_pdpt(vendor):
    """A PAE guest mapping 0x40_2000 -> 0x7_0000 and, built apart at 0x1100_0000, another
    PDPT whose PDPTE 0 leads to tables mapping 0x40_2000 -> 0x9_0000; every frame in TDP."""
    mem, b, tdp, r = guest_on_tdp("PAE", vendor=vendor)
    b2 = PageTableBuilder(mem, "PAE", table_base=0x1100_0000)
    b2.map(0x40_2000, 0x9_0000, 0x1000)
    for t in b2.tables:
        tdp.map(r, t)
    tdp.map(r, 0x9_0000)
    return mem, b, b2, tdp, r


def test_load_pdptrs_reads_four_pdptes_through_ept():
    mem, b, tdp, r = guest_on_tdp("PAE")
    load = tdp.load_pdptrs(mem, b.regs(), r)
    assert isinstance(load, PdptrLoad) and load.ok and load.pdpt == b.cr3 and load.rsvd == ()
    # PageTableBuilder gives a PAE guest 4 PDs, in the frames after the PDPT, all present.
    assert load.pdptrs == tuple(b.cr3 + 0x1000 * (i + 1) | 1 for i in range(4))
    assert len(load.refs) == 4 * (4 + 1)
    assert [x.kind for x in load.refs] == (["tdp"] * 4 + ["guest"]) * 4
    guest = [x for x in load.refs if x.kind == "guest"]
    assert [(x.level, x.name, x.gpa, x.hpa) for x in guest] == \
        [(3, "PDPTE", b.cr3 + 8 * i, gpa_to_hpa(b.cr3 + 8 * i)) for i in range(4)]


def test_intel_walk_keeps_the_loaded_pdpte_until_cr3_is_reloaded():
    """SDM Vol. 3A 4.4.1: the PDPTE registers change only when they are loaded; AMD (no
    PDPTE registers under NPT) sees the new PDPTE on the next walk."""
    mem, b, b2, tdp, r = pae_with_second_pdpt("intel")
    regs = b.regs()
    load = load_pdptrs(mem, regs, tdp.mem, r.pointer)
    mem.write_u64(b.cr3, mem.read_u64(b2.cr3))          # the guest rewrites PDPTE 0
    stale = two_d_walk(mem, regs, 0x40_2345, "read", 0, tdp.mem, r.pointer, pdptrs=load)
    assert stale.ok and stale.gpa == 0x7_0345 and len(stale.refs) == 14
    assert stale.pdptr_load_refs == () and stale.pdptrs == load.pdptrs
    assert stale.guest.trace[0].entry == load.pdptrs[0] != mem.read_u64(b.cr3)
    # MOV to CR3 (same value) reloads the registers: now the new PDPTE is used.
    fresh = two_d_walk(mem, regs, 0x40_2345, "read", 0, tdp.mem, r.pointer,
                       pdptrs=load_pdptrs(mem, regs, tdp.mem, r.pointer))
    assert fresh.ok and fresh.gpa == 0x9_0345
    # Without registers given, two_d_walk loads them itself (a walk right after MOV to CR3).
    assert two_d_walk(mem, regs, 0x40_2345, "read", 0, tdp.mem, r.pointer).gpa == 0x9_0345
    # A PDPTE cleared in memory: Intel still walks through its register, AMD faults.
    mem.write_u64(b.cr3, 0)
    res = two_d_walk(mem, regs, 0x40_2345, "read", 0, tdp.mem, r.pointer, pdptrs=load)
    assert res.ok and res.gpa == 0x7_0345


def test_amd_walk_sees_a_rewritten_pdpte_at_once():
    mem, b, b2, tdp, r = pae_with_second_pdpt("amd")
    regs = b.regs()
    assert tdp.two_d_walk(mem, regs, 0x40_2345, "read", 0, r).gpa == 0x7_0345
    mem.write_u64(b.cr3, mem.read_u64(b2.cr3))
    res = tdp.two_d_walk(mem, regs, 0x40_2345, "read", 0, r)
    assert res.ok and res.gpa == 0x9_0345 and len(res.refs) == 19 and res.pdptrs is None
    mem.write_u64(b.cr3, 0)
    res = tdp.two_d_walk(mem, regs, 0x40_2345, "read", 0, r)
    assert not res.ok and not res.tdp_fault and res.fault.vector == 14
    assert res.fault.reason == "PDPTE not present"


def test_pdpte_load_is_a_read_and_the_walk_never_touches_the_pdpt():
    """SDM Vol. 3C 29.3.3.2: with EPT A/D on, guest table accesses are EPT writes, but loads
    of the PDPTE registers are reads.  A PDPT in a read-only EPT page therefore loads, and
    the walk (PD, PT) never touches it; a PD in a read-only page is an EPT violation."""
    mem = GuestMemory()
    b = PageTableBuilder(mem, "PAE")
    b.map(0x40_2000, 0x7_0000, 0x1000)
    tdp = TdpMMU()
    r, _ = tdp.get_root(role())
    r.builder.map(b.cr3, gpa_to_hpa(b.cr3), 0x1000, w=False)
    for t in b.tables[1:] + [0x7_0000]:
        tdp.map(r, t)
    res = two_d_walk(mem, b.regs(), 0x40_2345, "read", 0, tdp.mem, r.pointer)
    assert res.ok and len(res.refs) == 14 and len(res.pdptr_load_refs) == 20
    # The PDPT page is not writable in EPT: a walk that read it as a table would exit.
    v = ept_walk(tdp.mem, r.pointer, b.cr3, "write", set_ad=False)
    assert not v.ok and v.fault.qualification & 0b111 == 0b010


def test_pdpte_load_ept_violation_is_a_read_exit():
    mem, b, _, _ = guest_on_tdp("PAE")
    tdp = TdpMMU()
    r, _ = tdp.get_root(role())                # empty EPT: even the PML4E is missing
    res = two_d_walk(mem, b.regs(), 0x40_2345, "read", 0, tdp.mem, r.pointer)
    assert not res.ok and res.tdp_fault and not res.final and res.guest is None
    assert res.fault_gpa == b.cr3 and res.refs == () and len(res.pdptr_load_refs) == 1
    assert isinstance(res.fault, EptViolation) and res.fault.qualification & 0b111 == 0b001
    load = load_pdptrs(mem, b.regs(), tdp.mem, r.pointer)
    assert not load.ok and load.pdptrs is None and load.fault_gpa == b.cr3


def test_pdpte_reserved_bits_are_reported_and_walked_as_gp():
    mem, b, tdp, r = guest_on_tdp("PAE")
    mem.write_u64(b.cr3 + 8, mem.read_u64(b.cr3 + 8) | 1 << 5)   # bit 5: reserved in a PDPTE
    mem.write_u64(b.cr3 + 16, 1 << 5)                              # not present: not checked
    load = tdp.load_pdptrs(mem, b.regs(), r)
    assert load.ok and load.rsvd == (1,)
    res = two_d_walk(mem, b.regs(), 0x4000_0000, "read", 0, tdp.mem, r.pointer, pdptrs=load)
    assert not res.ok and not res.tdp_fault and res.fault.vector == 13


@pytest.mark.parametrize("vendor", ["intel", "amd"])
def test_pae_2d_walk_sets_ad_bits_in_pde_and_pte_only(vendor):
    """PAE PDPTEs have no A bit: a write sets A in the PDE, A and D in the PTE."""
    mem, b, tdp, r = guest_on_tdp("PAE", vendor=vendor)
    pdpte = mem.read_u64(b.cr3)
    res = two_d_walk(mem, b.regs(), 0x40_2000, "write", 3, tdp.mem, r.pointer, vendor)
    g = res.guest.trace
    assert res.ok and [a for a, _ in res.ad_writes] == [g[1].entry_addr, g[2].entry_addr]
    assert res.ad_writes[0][1] == g[1].entry | 0x20 and res.ad_writes[1][1] == g[2].entry | 0x60
    assert mem.read_u64(b.cr3) == pdpte


def test_pdptrs_bad_input():
    mem, b, tdp, r = guest_on_tdp("PAE")
    regs = b.regs()
    with pytest.raises(ValueError, match="exactly 4"):
        two_d_walk(mem, regs, 0, "read", 0, tdp.mem, r.pointer, pdptrs=[1, 2, 3])
    with pytest.raises(TypeError, match="pdptrs"):
        two_d_walk(mem, regs, 0, "read", 0, tdp.mem, r.pointer, pdptrs=7)
    with pytest.raises(ValueError, match="CR3 points"):
        two_d_walk(mem, make_regs("PAE", cr3=b.cr3 + 0x20), 0, "read", 0, tdp.mem, r.pointer,
                   pdptrs=tdp.load_pdptrs(mem, regs, r))
    with pytest.raises(ValueError, match="only Intel"):
        two_d_walk(mem, regs, 0, "read", 0, tdp.mem, r.pointer, "amd", pdptrs=[0] * 4)
    m4, b4, t4, r4 = guest_on_tdp("4-level")
    with pytest.raises(ValueError, match="only Intel"):
        two_d_walk(m4, b4.regs(), 0, "read", 0, t4.mem, r4.pointer, pdptrs=[0] * 4)
    with pytest.raises(ValueError, match="PAE"):
        load_pdptrs(m4, b4.regs(), t4.mem, r4.pointer)
    amd = TdpMMU(vendor="amd")
    ra, _ = amd.get_root(role())
    with pytest.raises(ValueError, match="intel"):
        amd.load_pdptrs(mem, regs, ra)


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), mode=st.sampled_from(("32-bit", "PAE", "4-level")),
       vendor=st.sampled_from(("intel", "amd")), access=st.sampled_from(("read", "write", "fetch")),
       cpl=st.sampled_from((0, 3)))
def test_2d_walk_agrees_with_walk(seed, mode, vendor, access, cpl):
    """Where every frame is mapped in EPT/NPT, the 2D walk's final gpa (or guest fault) is
    mmu.walk's and its hpa is the TDP walk of that gpa."""
    rng = random.Random(seed)
    mem = GuestMemory()
    b = PageTableBuilder(mem, mode)
    gvas = []
    for _ in range(4):
        gva = rng.randrange(0, 1 << 32, 0x1000)
        try:
            b.map(gva, rng.randrange(0, 1 << 30, 0x1000), 0x1000, writable=rng.random() < 0.5,
                  user=rng.random() < 0.5, nx=mode != "32-bit" and rng.random() < 0.3)
        except ValueError:
            continue
        gvas.append(gva + rng.randrange(0x1000))
    gvas.append(rng.randrange(0, 1 << 32))
    regs = b.regs(smep=rng.random() < 0.5)
    tdp = TdpMMU(vendor=vendor)
    r, _ = tdp.get_root(role())
    for t in b.tables:
        tdp.map(r, t)
    for gva in gvas:
        g = walk(mem.copy(), regs, gva, access, cpl)
        if g.ok:
            tdp.map(r, g.gpa)
        res = two_d_walk(mem, regs, gva, access, cpl, tdp.mem, r.pointer, vendor)
        assert res.ok == g.ok and res.gpa == g.gpa
        if g.ok:
            tw = tdp.translate(r, g.gpa, access)
            assert res.hpa == tw.gpa == g.gpa + HOST_RAM_BASE
        else:
            assert res.fault == g.fault


def test_two_d_walk_bad_input():
    mem, b, tdp, r = guest_on_tdp("4-level")
    with pytest.raises(ValueError, match="vendor"):
        two_d_walk(mem, b.regs(), 0, "read", 0, tdp.mem, r.pointer, "via")
    with pytest.raises(ValueError, match="disagrees"):
        two_d_walk(mem, b.regs(), 0, "read", 0, tdp.mem, r.pointer, "intel", levels=5)
    with pytest.raises(TypeError):
        two_d_walk({}, b.regs(), 0, "read", 0, tdp.mem, r.pointer)
    with pytest.raises(TypeError, match="TdpRoot"):
        tdp.map(object(), 0)
    assert isinstance(r, TdpRoot)
