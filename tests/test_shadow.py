"""Tests for mmu.kvm.shadow: shadow pages keyed by (gfn, role), roots, the fault path, write
protection.

Expected values come from the fact sheet (§6 roots and quadrants, §7.6 the CR0.WP=0 trick),
the SDM permission rules (re-stated below as ``hw_permits``, the hardware's check of one
SPTE) and hand computation; the property tests compare the shadow tables against
``mmu.walk`` of the guest's own tables.
"""
from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmu.x86.bits import ACC_EXEC_MASK, ACC_USER_MASK, ACC_WRITE_MASK, PTE, PFErr
from mmu.x86.memory import GuestMemory
from mmu.x86.pagetable import PageTableBuilder
from mmu.x86.regs import make_regs
from mmu.kvm.roles import PageRole, cpu_role, shadow_root_role
from mmu.kvm.shadow import (HOST_RAM_BASE, Root, ShadowMMU, gpa_to_hpa, shadow_index,
                        spte_access)
from mmu.x86.walker import walk

ADDR = ((1 << 52) - 1) & ~0xFFF
KINDS = ("read", "write", "fetch")
PROPS = settings(max_examples=25, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow])


def setup(mode, *, wp=True, smep=False, smap=False, nx=True, unsync=True, mem=None):
    mem = mem or GuestMemory()
    b = PageTableBuilder(mem, mode)
    return mem, b


def boot(mem, b, *, wp=True, smep=False, smap=False, nx=True, unsync=True, mmu=None):
    regs = b.regs(wp=wp, smep=smep, smap=smap, nx=nx)
    cpu = cpu_role(regs)
    mmu = mmu or ShadowMMU(mem, unsync=unsync)
    root, created, reused = mmu.alloc_shadow_roots(cpu, shadow_root_role(cpu), regs.cr3)
    return regs, cpu, mmu, root, created, reused


def hw_permits(acc: int, kind: str, cpl: int, regs) -> bool:
    """SDM 4.6 for one leaf SPTE as the hardware checks it under shadow paging: host CR0.WP
    is always 1 (KVM forces it), CR4.SMEP/SMAP and RFLAGS.AC are the guest's."""
    user = cpl == 3
    upage = bool(acc & ACC_USER_MASK)
    if user and not upage:
        return False
    if kind == "write" and not acc & ACC_WRITE_MASK:
        return False
    if kind == "fetch" and (not acc & ACC_EXEC_MASK or (not user and upage and regs.smep)):
        return False
    if kind != "fetch" and not user and upage and regs.smap and not regs.ac:
        return False
    return True


def check_no_excess(mmu: ShadowMMU, root: Root, regs) -> int:
    """Every access a leaf SPTE lets through is one the guest's own tables allow, to the
    same frame.  Returns the number of leaves checked."""
    n = 0
    for gva, sp, idx, spte in mmu.leaf_sptes(root):
        n += 1
        acc = spte_access(spte)
        for kind in KINDS:
            for cpl in (0, 3):
                if not hw_permits(acc, kind, cpl, regs):
                    continue
                w = walk(mmu.mem, regs, gva, kind, cpl, set_ad=False)
                assert w.ok, (f"SPTE {spte:#x} at {gva:#x} lets a cpl{cpl} {kind} through, "
                              f"the guest faults: {w.fault.reason}")
                assert spte & ADDR == gpa_to_hpa(w.gpa & ~0xFFF), (hex(gva), hex(spte))
    return n


# ---------------------------------------------------------------------------
# Hash, lookup, reuse
# ---------------------------------------------------------------------------

def test_hash_key_is_gfn_and_role_word_and_reuse():
    mmu = ShadowMMU(GuestMemory())
    role = PageRole(level=2, access=7, cr0_wp=1, efer_nx=1)
    sp, created = mmu.get_shadow_page(0x1234, role)
    assert created and mmu.hash[(0x1234, role.word)] is sp
    again, created = mmu.get_shadow_page(0x1234, role)
    assert again is sp and not created
    # One bit of the word (cr0_wp, bit 13) is a different page; so is another gfn.
    other, created = mmu.get_shadow_page(0x1234, role.replace(cr0_wp=0))
    assert created and other is not sp
    assert (0x1234, role.word & ~(1 << 13)) in mmu.hash
    third, created = mmu.get_shadow_page(0x1235, role)
    assert created and third is not sp
    assert mmu.stats["sps_created"] == 3 and mmu.stats["sps_reused"] == 1


def test_invalid_pages_never_match():
    mmu = ShadowMMU(GuestMemory())
    role = PageRole(level=4, access=7, cr0_wp=1, efer_nx=1)
    sp, _ = mmu.get_shadow_page(7, role)
    sp.root_count = 1
    mmu.zap_page(sp)
    assert sp.role.invalid and sp in mmu.obsolete and (7, role.word) not in mmu.hash
    fresh, created = mmu.get_shadow_page(7, role)
    assert created and fresh is not sp
    with pytest.raises(ValueError, match="invalid=1"):
        mmu.get_shadow_page(7, role.replace(invalid=1))


def test_indirect_pages_write_protect_their_gfn():
    mmu = ShadowMMU(GuestMemory())
    upper, _ = mmu.get_shadow_page(5, PageRole(level=2, access=7, efer_nx=1, cr0_wp=1))
    last, _ = mmu.get_shadow_page(6, PageRole(level=1, access=7, efer_nx=1, cr0_wp=1))
    direct, _ = mmu.get_shadow_page(7, PageRole(level=1, direct=1, access=7))
    assert mmu.write_track == {5: 1}          # only upper-level pages are write-tracked
    assert set(mmu.gfn_sps) == {5, 6}          # direct pages shadow no guest table
    mmu.zap_page(upper)
    assert mmu.write_track == {} and set(mmu.gfn_sps) == {6}


# ---------------------------------------------------------------------------
# Roots (facts §6)
# ---------------------------------------------------------------------------

def test_32bit_guest_pae_root_has_four_quadrants_of_cr3():
    mem, b = setup("32-bit")
    regs, cpu, mmu, root, created, reused = boot(mem, b)
    assert root.sp is None and root.hpa == mmu.pae_root_hpa and root.role.level == 3
    assert (created, reused) == (4, 0)
    for i, sp in enumerate(root.pae_sps):
        assert sp.gfn == b.cr3 >> 12
        assert (sp.role.level, sp.role.quadrant, sp.role.has_4_byte_gpte) == (2, i, 1)
        assert sp.root_count == 1
    # Same CR3 again: all four found in the hash.
    root2, created, reused = mmu.alloc_shadow_roots(cpu, shadow_root_role(cpu), regs.cr3)
    assert (created, reused) == (0, 4) and root2.pae_sps == root.pae_sps
    assert all(sp.root_count == 2 for sp in root.pae_sps)


def test_32bit_guest_level1_quadrant_is_gva_bit_21():
    mem, b = setup("32-bit")
    # gva bits 31:30 = 2 (PAE-root entry 2 / level-2 quadrant 2), bit 21 = 1 (level-1 quadrant 1)
    gva = 0x8020_0000 | 0x3000
    b.map(gva, 0x55_5000, 0x1000, writable=True)
    regs, cpu, mmu, root, *_ = boot(mem, b)
    out = mmu.page_fault(root, regs, cpu, gva, "read", 0)
    assert out.ok and out.hpa == gpa_to_hpa(0x55_5000)
    t = mmu.translate(root, gva)
    (l2, i2), (l1, i1) = t.path
    assert l2 is root.pae_sps[2] and l2.role.quadrant == 2
    # Shadow level-2 index: gva bits 29:21 = 0x001; guest PDE index: bits 31:22 = 0x200.
    assert i2 == 1 and l1.role.level == 1 and l1.role.quadrant == 1
    pde = mem.read_u32(b.cr3 + 4 * 0x200)
    assert l1.gfn == pde >> 12 and i1 == 3
    # A gva with bit 21 clear in the same guest page table gets the other half.
    gva0 = 0x8000_0000 | 0x5000
    b.map(gva0, 0x66_6000, 0x1000)
    out0 = mmu.page_fault(root, regs, cpu, gva0, "read", 0)
    assert out0.sp.gfn == l1.gfn and out0.sp.role.quadrant == 0 and out0.sp is not l1


def test_pae_guest_root_follows_pdptes():
    mem, b = setup("PAE")
    mem.write_u64(b.cr3 + 8 * 3, 0)          # PDPTE 3 not present
    regs, cpu, mmu, root, created, reused = boot(mem, b)
    assert (created, reused) == (3, 0) and root.pae_sps[3] is None
    for i in range(3):
        pdpte = mem.read_u64(b.cr3 + 8 * i)
        sp = root.pae_sps[i]
        assert sp.gfn == (pdpte & ADDR) >> 12
        assert (sp.role.level, sp.role.quadrant, sp.role.has_4_byte_gpte) == (2, 0, 0)
    # Explicit pdptrs (what MOV CR3 loaded) win over memory.
    root2, created, _ = mmu.alloc_shadow_roots(cpu, shadow_root_role(cpu), regs.cr3,
                                               pdptrs=[0, 0, 0, 0x7000 | 1])
    assert root2.pae_sps[:3] == (None, None, None) and root2.pae_sps[3].gfn == 7 and created == 1


def test_64bit_guest_root_and_nonpaging_direct_roots():
    mem, b = setup("4-level")
    regs, cpu, mmu, root, created, reused = boot(mem, b)
    assert root.sp.gfn == b.cr3 >> 12 and root.sp.role == shadow_root_role(cpu)
    assert root.hpa == root.sp.hpa and (created, reused) == (1, 0)
    off = make_regs("none")
    cpu_off = cpu_role(off)
    rr = shadow_root_role(cpu_off)
    droot, created, _ = mmu.alloc_shadow_roots(cpu_off, rr, 0)
    assert created == 4
    assert [sp.gfn for sp in droot.pae_sps] == [0, 1 << 18, 2 << 18, 3 << 18]
    assert all(sp.role.direct and sp.role.level == 2 for sp in droot.pae_sps)
    out = mmu.direct_page_fault(droot, 0xC012_3456, "write")
    assert out.hpa == HOST_RAM_BASE + 0xC012_3456
    assert mmu.translate(droot, 0xC012_3456).hpa == out.hpa


def test_put_root_and_invalidate_all():
    mem, b = setup("4-level")
    regs, cpu, mmu, root, *_ = boot(mem, b)
    sp = root.sp
    mmu.put_root(root)
    assert sp.root_count == 0 and (sp.gfn, sp.role.word) in mmu.hash   # valid: kept for reuse
    root, created, reused = mmu.alloc_shadow_roots(cpu, shadow_root_role(cpu), regs.cr3)
    assert root.sp is sp and (created, reused) == (0, 1)
    mmu.invalidate_all()
    assert sp.role.invalid and sp in mmu.obsolete and mmu.hash == {}
    assert mmu.root_is_obsolete(root)
    root2, created, reused = mmu.alloc_shadow_roots(cpu, shadow_root_role(cpu), regs.cr3)
    assert (created, reused) == (1, 0) and root2.sp is not sp
    mmu.put_root(root)                       # last reference to the invalid root: freed
    assert sp not in mmu.obsolete and mmu.page_at(sp.hpa) is None
    with pytest.raises(ValueError, match="root_count"):
        mmu.put_root(root)


# ---------------------------------------------------------------------------
# Fault path
# ---------------------------------------------------------------------------

def test_fault_path_links_indirect_pages_with_guest_table_gfns():
    mem, b = setup("4-level")
    gva = 0x7F12_3456_7000
    b.map(gva, 0xABC_D000, 0x1000, writable=True, user=True)
    regs, cpu, mmu, root, *_ = boot(mem, b)
    out = mmu.page_fault(root, regs, cpu, gva, "write", 3)
    assert out.ok and out.created == 3 and out.hpa == gpa_to_hpa(0xABC_D000)
    w = walk(mem, regs, gva, "read", 3, set_ad=False)
    t = mmu.translate(root, gva)
    assert [sp.gfn for sp, _ in t.path] == [s.entry_addr >> 12 for s in w.trace]
    assert [idx for _, idx in t.path] == [s.index for s in w.trace]
    assert all(not sp.role.direct for sp, _ in t.path)
    assert t.access == 7 and t.spte & PTE.D     # written: dirty, writable, user, executable


def test_guest_fault_is_injected_not_installed():
    mem, b = setup("4-level")
    b.map(0x40_0000, 0x10_0000, 0x1000, writable=False, user=False)
    regs, cpu, mmu, root, *_ = boot(mem, b)
    out = mmu.page_fault(root, regs, cpu, 0x40_0000, "write", 3)
    assert not out.ok and out.injected.vector == 14
    assert out.injected.error_code == PFErr.P | PFErr.WR | PFErr.US
    assert mmu.translate(root, 0x40_0000) is None
    out = mmu.page_fault(root, regs, cpu, 0x80_0000, "read", 0)   # unmapped
    assert out.injected.error_code == 0 and mmu.stats["injected"] == 2


def test_read_of_clean_page_is_read_only_until_written():
    """FNAME(protect_clean_gpte): W only once the guest D bit is set."""
    mem, b = setup("4-level")
    b.map(0x40_0000, 0x10_0000, 0x1000, writable=True)
    regs, cpu, mmu, root, *_ = boot(mem, b)
    assert mmu.page_fault(root, regs, cpu, 0x40_0000, "read", 0).access == ACC_EXEC_MASK
    out = mmu.page_fault(root, regs, cpu, 0x40_0000, "write", 0)
    assert out.access == ACC_EXEC_MASK | ACC_WRITE_MASK
    assert walk(mem, regs, 0x40_0000, "read", set_ad=False).trace[-1].entry & PTE.D


def test_direct_pages_under_a_guest_2mib_page():
    mem, b = setup("4-level")
    b.map(0x4000_0000, 0x60_0000, 0x20_0000, page_size=0x20_0000, writable=True, user=True,
          dirty=True)
    regs, cpu, mmu, root, *_ = boot(mem, b)
    out = mmu.page_fault(root, regs, cpu, 0x4000_5123, "read", 3)
    sp = out.sp
    assert sp.role.direct and sp.role.level == 1 and sp.gfn == 0x600   # 0x605 rounded to 512
    assert sp.role.access == 7 and out.hpa == gpa_to_hpa(0x60_5123)
    assert mmu.page_fault(root, regs, cpu, 0x4019_F000, "read", 3).sp is sp
    # Parent of the direct page: the indirect level-2 page shadowing the guest PD.
    l2, idx = mmu.translate(root, 0x4000_5123).path[-2]
    assert not l2.role.direct and idx == 0 and l2.gfn == walk(
        mem, regs, 0x4000_5123, "read", set_ad=False).trace[-1].entry_addr >> 12


def test_direct_pages_under_a_guest_1gib_page():
    mem, b = setup("4-level")
    b.map(0x80_0000_0000, 0x4000_0000, 1 << 30, page_size=1 << 30, writable=False, nx=True)
    regs, cpu, mmu, root, *_ = boot(mem, b)
    gva = 0x80_0000_0000 + 0x1234_5678
    out = mmu.page_fault(root, regs, cpu, gva, "read", 0)
    l2, l1 = out.sp.parent_ptes.copy().pop()[0], out.sp
    # gpa 0x5234_5678, gfn 0x52345, under the 1 GiB page at gfn 0x40000: the level-2 direct
    # page covers the whole 1 GiB (gfn & ~0x3FFFF), the level-1 page 2 MiB (gfn & ~0x1FF).
    assert (l2.role.direct, l2.role.level, l2.gfn) == (1, 2, 0x40000)
    assert (l1.role.direct, l1.role.level, l1.gfn) == (1, 1, 0x52200)
    assert out.access == 0 and out.hpa == gpa_to_hpa(0x4000_0000 + 0x1234_5678)


def test_cr0_wp_0_trick():
    """facts §7.6: supervisor write to a read-only page with WP=0 -> writable, not user, and
    not executable when SMEP is on."""
    for smep in (False, True):
        mem, b = setup("4-level")
        b.map(0x40_0000, 0x10_0000, 0x1000, writable=False, user=True)
        regs, cpu, mmu, root, *_ = boot(mem, b, wp=False, smep=smep)
        out = mmu.page_fault(root, regs, cpu, 0x40_0000, "write", 0)
        assert out.ok and out.wp_trick
        expected = ACC_WRITE_MASK | (0 if smep else ACC_EXEC_MASK)
        assert out.access == expected
        # A later user read faults in hardware and is re-shadowed user-readable, read-only.
        assert not hw_permits(out.access, "read", 3, regs)
        again = mmu.page_fault(root, regs, cpu, 0x40_0000, "read", 3)
        assert again.access == ACC_USER_MASK | ACC_EXEC_MASK and not again.wp_trick
    # With WP=1 the same write is the guest's #PF.
    mem, b = setup("4-level")
    b.map(0x40_0000, 0x10_0000, 0x1000, writable=False, user=True)
    regs, cpu, mmu, root, *_ = boot(mem, b, wp=True)
    assert mmu.page_fault(root, regs, cpu, 0x40_0000, "write", 0).injected.error_code == 3


def test_cr0_wp_in_the_role_separates_pages():
    mem, b = setup("4-level")
    b.map(0x40_0000, 0x10_0000, 0x1000, writable=False, user=True)
    regs1, cpu1, mmu, root1, *_ = boot(mem, b, wp=True)
    regs0, cpu0, _, root0, created, _ = boot(mem, b, wp=False, mmu=mmu)
    assert created == 1 and root0.sp is not root1.sp and root0.sp.gfn == root1.sp.gfn
    assert root1.sp.role.word ^ root0.sp.role.word == 1 << 13
    mmu.page_fault(root0, regs0, cpu0, 0x40_0000, "write", 0)     # trick under WP=0
    mmu.page_fault(root1, regs1, cpu1, 0x40_0000, "read", 3)
    assert mmu.translate(root0, 0x40_0000).access & ACC_WRITE_MASK
    assert not mmu.translate(root1, 0x40_0000).access & ACC_WRITE_MASK
    for sp, _ in mmu.translate(root1, 0x40_0000).path:
        assert sp.role.cr0_wp == 1
    check_no_excess(mmu, root1, regs1)
    check_no_excess(mmu, root0, regs0)


def test_write_to_shadowed_table_is_emulated_and_zaps():
    mem, b = setup("4-level")
    b.map(0x40_0000, 0x10_0000, 0x1000, writable=True)
    regs, cpu, mmu, root, *_ = boot(mem, b, unsync=False)
    pt_gpa = walk(mem, regs, 0x40_0000, "read", set_ad=False).trace[-1].entry_addr
    # Map the guest's own page table at 0x50_0000, writable.
    b.map(0x50_0000, pt_gpa & ~0xFFF, 0x1000, writable=True, dirty=True)
    mmu.page_fault(root, regs, cpu, 0x40_0000, "read", 0)
    out = mmu.page_fault(root, regs, cpu, 0x50_0000, "write", 0)
    assert out.emulate and not out.access & ACC_WRITE_MASK        # write-protected
    # The emulated write re-points the PTE of 0x40_0000: its SPTE must go.
    new = 0x20_0000 | int(PTE.P | PTE.RW)
    res = mmu.guest_write(pt_gpa, new.to_bytes(8, "little"))
    assert res.trapped and res.zapped_sptes == 1
    assert mmu.translate(root, 0x40_0000) is None
    assert mmu.page_fault(root, regs, cpu, 0x40_0000, "read", 0).hpa == gpa_to_hpa(0x20_0000)


def test_unsync_last_level_table_is_synced_at_tlb_flush():
    mem, b = setup("4-level")
    b.map(0x40_0000, 0x10_0000, 0x1000, writable=True)
    regs, cpu, mmu, root, *_ = boot(mem, b, unsync=True)
    pt_gpa = walk(mem, regs, 0x40_0000, "read", set_ad=False).trace[-1].entry_addr
    b.map(0x50_0000, pt_gpa & ~0xFFF, 0x1000, writable=True, dirty=True)
    mmu.page_fault(root, regs, cpu, 0x40_0000, "read", 0)
    out = mmu.page_fault(root, regs, cpu, 0x50_0000, "write", 0)
    pt_sp = mmu.translate(root, 0x40_0000).path[-1][0]
    assert not out.emulate and out.access & ACC_WRITE_MASK and pt_sp.unsync
    res = mmu.guest_write(pt_gpa, (0x20_0000 | 3).to_bytes(8, "little"))
    assert not res.trapped and res.unsync_sps == 1
    assert mmu.sync_roots(root) == 1 and not pt_sp.unsync
    assert mmu.translate(root, 0x40_0000) is None
    # Synced again: the SPTE mapping the page table is read-only once more.
    assert not mmu.translate(root, 0x50_0000).access & ACC_WRITE_MASK


def test_32bit_guest_write_to_pde_zaps_both_sptes_of_the_quadrant():
    mem, b = setup("32-bit")
    gva = 0x8060_0000                         # PDE 0x201, quadrant 2, shadow l2 index 2..3
    b.map(gva, 0x30_0000, 0x1000)
    b.map(gva + 0x20_0000, 0x31_0000, 0x1000)
    regs, cpu, mmu, root, *_ = boot(mem, b)
    mmu.page_fault(root, regs, cpu, gva, "read", 0)
    mmu.page_fault(root, regs, cpu, gva + 0x20_0000, "read", 0)
    l2 = root.pae_sps[2]
    assert set(l2.children) == {3, 4}         # 2 MiB halves: 0x8060_0000 -> 3, 0x8080_0000 -> 4
    res = mmu.guest_write(b.cr3 + 4 * 0x201, (0).to_bytes(4, "little"))
    assert res.trapped and res.zapped_sptes == 1 and set(l2.children) == {4}
    assert [sp.spt for sp in root.pae_sps[:2] + root.pae_sps[3:]] == [{}, {}, {}]


# ---------------------------------------------------------------------------
# Property tests over random guests
# ---------------------------------------------------------------------------

def random_guest(seed: int, mode: str):
    """A guest with a handful of random mappings in a small window (so faults hit them),
    sometimes mapping one of its own page tables; returns (mem, builder, gvas)."""
    rng = random.Random(seed)
    mem = GuestMemory()
    b = PageTableBuilder(mem, mode)
    sizes = {"32-bit": (0x1000, 0x40_0000), "PAE": (0x1000, 0x20_0000),
             "4-level": (0x1000, 0x20_0000, 1 << 30)}[mode]
    gvas = []
    used = set()
    for _ in range(rng.randint(3, 8)):
        size = rng.choice(sizes)
        if mode == "4-level" and size == 1 << 30 and rng.random() < 0.7:
            size = 0x1000
        n = 4 if size == 0x1000 else 1
        base = rng.randrange(0, 0xC000_0000 if mode != "4-level" else 1 << 40, 1 << 30)
        base += rng.randrange(0, 1 << 30, max(size, 0x40_0000)) if size < (1 << 30) else 0
        if (base, size) in used:
            continue
        used.add((base, size))
        gpa = rng.randrange(0x100_0000, 0x800_0000, size) if size < 1 << 30 else 1 << 30
        try:
            b.map(base, gpa, n * size, page_size=size, writable=rng.random() < 0.6,
                  user=rng.random() < 0.6, nx=mode != "32-bit" and rng.random() < 0.3,
                  dirty=rng.random() < 0.3)
        except ValueError:                    # overlaps an earlier, differently sized mapping
            continue
        for _ in range(4):
            gvas.append(base + rng.randrange(0, n * size, 0x1000))
    if rng.random() < 0.5 and gvas:           # map one of the guest's tables writable
        table = rng.choice(b.tables)
        try:
            b.map(0x3FFF_F000, table, 0x1000, writable=True, dirty=True)
            gvas.append(0x3FFF_F000)
        except ValueError:
            pass
    gvas.append(rng.randrange(0, 1 << 32, 0x1000))      # usually unmapped
    return mem, b, gvas


def fault_everything(mmu, root, regs, cpu, gvas, rng):
    for gva in gvas * 2:
        kind = rng.choice(KINDS)
        cpl = rng.choice((0, 3))
        out = mmu.page_fault(root, regs, cpu, gva, kind, cpl)
        w = walk(mmu.mem, regs, gva, kind, cpl, set_ad=False)
        assert out.ok == w.ok or out.retry
        if out.ok and not out.emulate:
            # Progress: the access that faulted now goes through in hardware.
            assert hw_permits(out.access, kind, cpl, regs), (hex(gva), kind, cpl, out)


@PROPS
@given(seed=st.integers(0, 2**32 - 1), mode=st.sampled_from(("32-bit", "PAE", "4-level")),
       wp=st.booleans(), smep=st.booleans(), smap=st.booleans(), nx=st.booleans(),
       unsync=st.booleans())
def test_no_spte_exceeds_the_guest(seed, mode, wp, smep, smap, nx, unsync):
    """No SPTE grants more than the guest's effective rights under the current cpu_role.

    RFLAGS.AC=0 throughout: with SMAP on and AC=1 a supervisor write may take the WP=0 trick
    on a user page, whose SPTE then no longer sees SMAP -- KVM's mmu.rst says it "does not
    care" about that case, and this model follows KVM."""
    mem, b, gvas = random_guest(seed, mode)
    regs, cpu, mmu, root, *_ = boot(mem, b, wp=wp, smep=smep, smap=smap, nx=nx, unsync=unsync)
    fault_everything(mmu, root, regs, cpu, gvas, random.Random(seed))
    check_no_excess(mmu, root, regs)


@PROPS
@given(seed=st.integers(0, 2**32 - 1), mode=st.sampled_from(("32-bit", "PAE", "4-level")),
       unsync=st.booleans(), wp=st.booleans())
def test_every_guest_write_to_a_shadowed_table_is_caught(seed, mode, unsync, wp):
    """After guest_write (and, for unsync pages, the guest's TLB flush that architecture
    requires anyway), no SPTE made from the old guest entry survives: every SPTE still
    agrees with the guest tables as they are now."""
    rng = random.Random(seed)
    mem, b, gvas = random_guest(seed, mode)
    regs, cpu, mmu, root, *_ = boot(mem, b, wp=wp, unsync=unsync)
    fault_everything(mmu, root, regs, cpu, gvas, rng)
    esize = 4 if mode == "32-bit" else 8
    for _ in range(6):
        # Rewrite an entry the walk of some gva used (never the PAE PDPT: PDPTEs are
        # registers loaded at MOV CR3, not shadowed).
        gva = rng.choice(gvas)
        steps = [s for s in walk(mem, regs, gva, "read", set_ad=False).trace
                 if not (mode == "PAE" and s.level == 3)]
        if not steps:
            continue
        step = rng.choice(steps)
        new = rng.choice((0, step.entry ^ int(PTE.RW), step.entry ^ int(PTE.US),
                          step.entry ^ 0x1000_0000, step.entry ^ (1 << 63) if esize == 8 else 0))
        was_shadowed = bool(mmu.gfn_sps.get(step.entry_addr >> 12))
        res = mmu.guest_write(step.entry_addr, new.to_bytes(esize, "little"))
        assert res.trapped or res.unsync_sps or not was_shadowed
        if not unsync:
            check_no_excess(mmu, root, regs)
        mmu.sync_roots(root)
        check_no_excess(mmu, root, regs)
        fault_everything(mmu, root, regs, cpu, gvas[:3], rng)
        mmu.sync_roots(root)
        check_no_excess(mmu, root, regs)


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------

def test_bad_input_raises_clear_errors():
    mem, b = setup("4-level")
    regs, cpu, mmu, root, *_ = boot(mem, b)
    role = PageRole(level=1, access=7)
    with pytest.raises(ValueError, match="gfn"):
        mmu.get_shadow_page(-1, role)
    with pytest.raises(TypeError, match="PageRole"):
        mmu.get_shadow_page(1, role.word)
    with pytest.raises(ValueError, match="access"):
        mmu.page_fault(root, regs, cpu, 0, "exec", 0)
    with pytest.raises(ValueError, match="cpl"):
        mmu.page_fault(root, regs, cpu, 0, "read", 4)
    with pytest.raises(ValueError, match="1..8"):
        mmu.guest_write(0x1000, bytes(9))
    with pytest.raises(ValueError, match="crosses"):
        mmu.guest_write(0x1FFC, bytes(8))
    with pytest.raises(TypeError, match="Root"):
        mmu.put_root(root.sp)
    with pytest.raises(TypeError, match="GuestMemory"):
        ShadowMMU({})
    assert shadow_index((1 << 48) - 1, 4) == 511
