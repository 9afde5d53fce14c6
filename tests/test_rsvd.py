"""Guest reserved-bit masks (mmu.kvm.permissions, ``__reset_rsvds_bits_mask``) against the
fact sheet §7.5 and the SDM's entry formats (Vol. 3A tables 4-4..4-20), by hand, and
against the guest walkers' RSVD faults on seeded random entries.

Where KVM and the SDM disagree (the 4 MiB PDE of 32-bit paging, PSE-36) the KVM rule
is pinned on its own and left out of the walker comparison.
"""
from __future__ import annotations

import random

import pytest

from mmu.kvm.permissions import (GuestRsvdMasks, ept_rsvd_masks, guest_rsvd_masks, is_rsvd_gpte,
                             rsvd_bits, rsvd_bits_set, rsvds_bits_mask)
from mmu.x86.regs import make_regs

roles = pytest.importorskip("mmu.kvm.roles")


def bits(*spans) -> int:
    """OR of bit ranges written by hand: bits((13, 20), 63) = bits 13..20 and bit 63."""
    out = 0
    for s in spans:
        lo, hi = s if isinstance(s, tuple) else (s, s)
        for b in range(lo, hi + 1):
            out |= 1 << b
    return out


def masks_for(mode, maxphyaddr=52, nx=True, pse=True, gbpages=True, amd=False) -> GuestRsvdMasks:
    return guest_rsvd_masks(roles.cpu_role(make_regs(mode, nx=nx, pse=pse)), maxphyaddr,
                            gbpages, amd)


def test_rsvd_bits_helper():
    assert rsvd_bits(13, 20) == 0x1FE000
    assert rsvd_bits(52, 51) == 0
    assert rsvd_bits(63, 63) == 1 << 63


# ---------------------------------------------------------------------------
# By hand, per mode
# ---------------------------------------------------------------------------

def test_32bit_paging():
    m = masks_for("32-bit")
    # Only the 4 MiB PDE has reserved bits: 21:17 (KVM assumes PSE-36).
    assert m.rsvd_bits_mask == ((0, 0, 0, 0, 0), (0, bits((17, 21)), 0, 0, 0))
    # Without CR4.PSE bit 7 of a PDE is ignored: no reserved bits at all.
    assert masks_for("32-bit", pse=False).rsvd_bits_mask == ((0,) * 5, (0,) * 5)
    # 4-byte entries have no high bits: MAXPHYADDR and NX change nothing.
    assert masks_for("32-bit", maxphyaddr=36, nx=False) == m


def test_pae_paging():
    h36 = bits((36, 62))                    # PAE: MAXPHYADDR..62, no pkey/ignored bits
    m = masks_for("PAE", maxphyaddr=36)
    m0, m1 = m.rsvd_bits_mask
    assert m0[2] == bits(63, (36, 62), (5, 8), (1, 2))            # PDPTE
    assert m1[2] == m0[2]                 # bit 7 is reserved, not a page-size bit, here
    assert m0[1] == h36 and m0[0] == h36                          # PDE, PTE
    assert m1[1] == h36 | bits((13, 20))                          # 2 MiB PDE
    assert m1[0] == h36                                           # PTE with PAT (bit 7)
    mn = masks_for("PAE", maxphyaddr=36, nx=False)
    assert mn.rsvd_bits_mask[0][0] == h36 | bits(63)
    assert mn.rsvd_bits_mask[0][2] == m0[2]                       # PDPTE: bit 63 anyway


def test_4level_paging():
    m0, m1 = masks_for("4-level", maxphyaddr=52).rsvd_bits_mask
    assert m0[3] == m1[3] == bits(7)                              # PML4E: PS reserved
    assert m0[2] == 0                                             # PDPTE -> PD
    assert m1[2] == bits((13, 29))                                # 1 GiB page
    assert m0[1] == 0 and m1[1] == bits((13, 20))                 # PDE, 2 MiB page
    assert m0[0] == m1[0] == 0                                    # PTE
    h40 = bits((40, 51))
    m0, m1 = masks_for("4-level", maxphyaddr=40).rsvd_bits_mask
    assert m0[0] == h40 and m0[1] == h40 and m0[2] == h40
    assert m1[2] == h40 | bits((13, 29))
    # Bits 62:52 (pkey, ignored) are never reserved in IA-32e paging.
    assert not any(m & bits((52, 62)) for row in (m0, m1) for m in row)


def test_4level_nx_gbpages_amd():
    m0, m1 = masks_for("4-level", nx=False).rsvd_bits_mask
    assert all(m0[i] & bits(63) and m1[i] & bits(63) for i in range(4))
    m0, m1 = masks_for("4-level", gbpages=False).rsvd_bits_mask
    assert m0[2] == bits(7) and m1[2] == bits(7, (13, 29))
    m0, m1 = masks_for("4-level", amd=True).rsvd_bits_mask
    assert m0[3] == bits(7, 8)                                    # AMD: bit 8 of a PML4E
    assert m0[2] == 0                                             # ...but not of a PDPTE


def test_5level_paging():
    m0, m1 = masks_for("5-level", maxphyaddr=46).rsvd_bits_mask
    assert m0[4] == m1[4] == bits((46, 51), 7)
    assert m0[4] == m0[3]
    assert m1[1] == bits((46, 51), (13, 20))


def test_paging_off_has_no_masks():
    assert masks_for("none").rsvd_bits_mask == ((0,) * 5, (0,) * 5)


def test_ept_masks():
    m = ept_rsvd_masks(52, execonly=False, huge_page_level=3)
    m0, m1 = m.rsvd_bits_mask
    assert m0 == (0, bits((3, 6)), bits((3, 6)), bits((3, 7)), bits((3, 7)))
    assert m1[1] == bits((12, 20)) and m1[2] == bits((12, 29))
    # Only 2 MiB pages: PS is reserved in a PDPTE.
    m0, m1 = ept_rsvd_masks(52, huge_page_level=2).rsvd_bits_mask
    assert m0[2] & bits(7) and m1[2] & bits(7) and not m0[1] & bits(7)
    wb = 6 << 3
    assert not is_rsvd_gpte(m, wb | 0b111, 1)
    assert is_rsvd_gpte(m, (2 << 3) | 0b111, 1)                 # memory type 2
    assert is_rsvd_gpte(m, wb | 0b010, 1)                       # write-only
    assert is_rsvd_gpte(m, wb | 0b110, 1)                       # write+exec, no read
    assert is_rsvd_gpte(m, wb | 0b100, 1)                       # exec-only, not supported
    assert not is_rsvd_gpte(ept_rsvd_masks(52, execonly=True), wb | 0b100, 1)


def test_is_rsvd_gpte_examples():
    m48 = masks_for("4-level", maxphyaddr=48)
    pte = 0x1000 | 1
    assert not is_rsvd_gpte(m48, pte, 1)
    assert is_rsvd_gpte(m48, pte | 1 << 51, 1)
    assert rsvd_bits_set(m48, pte | 1 << 51 | 1 << 49, 1) == (1 << 51 | 1 << 49)
    assert not is_rsvd_gpte(masks_for("4-level"), pte | 1 << 51, 1)
    assert is_rsvd_gpte(m48, 0x2000 | 0x81 | 1 << 13, 2)        # 2 MiB page, bit 13
    assert not is_rsvd_gpte(m48, 0x2000 | 0x01 | 1 << 13, 2)    # table pointer: address bit
    assert is_rsvd_gpte(m48, 0x81, 4)                           # PS in a PML4E
    with pytest.raises(TypeError):
        is_rsvd_gpte(object(), 1, 1)
    with pytest.raises(ValueError):
        is_rsvd_gpte(m48, 1, 6)
    with pytest.raises(ValueError):
        rsvds_bits_mask(31, 4, True, True, True, False)


# ---------------------------------------------------------------------------
# The PSE-36 difference, pinned
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("maxphyaddr", [32, 36, 40, 46, 52])
def test_pse36_kvm_rule_is_bits_17_to_21_whatever_maxphyaddr(maxphyaddr):
    """KVM reserves bits 21:17 of a 4 MiB PDE for every MAXPHYADDR.

    The SDM (Vol. 3A table 4-4) reserves bits 21:(M-19), M = min(MAXPHYADDR, 40):
    with MAXPHYADDR=40 only bit 21, so a PDE with bit 17 set (PA bit 36) is legal on
    hardware but a reserved-bit #PF under KVM's walker; with MAXPHYADDR=32 bits 13-16
    are reserved on hardware and accepted by KVM.  Only MAXPHYADDR=36 agrees.
    """
    m = masks_for("32-bit", maxphyaddr=maxphyaddr)
    pde_4m = 0x0040_0000 | 0x83
    for b in range(13, 17):
        assert not is_rsvd_gpte(m, pde_4m | 1 << b, 2), b
    for b in range(17, 22):
        assert is_rsvd_gpte(m, pde_4m | 1 << b, 2), b
    sdm_lo = 13 + min(maxphyaddr, 40) - 32            # first SDM-reserved bit
    kvm_only = [b for b in range(17, 22) if b < sdm_lo]
    sdm_only = [b for b in range(13, 17) if b >= sdm_lo]
    assert (kvm_only, sdm_only) == {32: ([], [13, 14, 15, 16]), 36: ([], []),
                                    40: ([17, 18, 19, 20], []), 46: ([17, 18, 19, 20], []),
                                    52: ([17, 18, 19, 20], [])}[maxphyaddr]


# ---------------------------------------------------------------------------
# Agreement with the walkers' RSVD faults
# ---------------------------------------------------------------------------

#: Bits a random entry draws from: flags, the large-page address/reserved bits,
#: MAXPHYADDR boundaries, pkey bits and XD.
_CANDIDATES = [1, 2, 3, 4, 5, 6, 7, 8, 12, 13, 16, 17, 20, 21, 22, 29, 30, 31, 35, 36, 39, 40,
               45, 46, 47, 48, 51, 52, 58, 59, 62, 63]


def _random_entry(rng: random.Random, eight_byte: bool) -> int:
    e = 1                                             # present: RSVD is checked on these
    for b in rng.sample(_CANDIDATES, rng.randint(0, 5)):
        if eight_byte or b < 32:
            e |= 1 << b
    return e


def _setup(mode: str, level: int, entry: int):
    """Tables for gva 0 whose entry at ``level`` is ``entry`` and every other is a valid
    supervisor table pointer.  Returns (mem, regs-maker)."""
    from mmu.x86.memory import GuestMemory
    mem = GuestMemory()
    eight = mode != "32-bit"
    write = mem.write_u64 if eight else mem.write_u32
    top = {"32-bit": 2, "PAE": 3, "4-level": 4, "5-level": 5}[mode]
    base = 0x10_0000
    tables = {lv: base + (top - lv) * 0x1000 for lv in range(top, 0, -1)}
    for lv in range(top, 0, -1):
        if lv == level:
            value = entry
        elif lv == 1:
            value = 0x20_0000 | 0x3                    # a plain 4 KiB page
        elif mode == "PAE" and lv == 3:
            value = tables[lv - 1] | 0x1               # PDPTE: P only (bits 1-2, 5-8 rsvd)
        else:
            value = tables[lv - 1] | 0x3
        write(tables[lv], value)
    return mem, tables[top]


@pytest.mark.parametrize("mode", ["32-bit", "PAE", "4-level", "5-level"])
def test_rsvd_masks_agree_with_walkers(mode):
    """For seeded random present entries at every level: the walkers fault with RSVD
    at that level (PAE PDPTE: #GP) exactly when is_rsvd_gpte says so."""
    walker = pytest.importorskip("mmu.x86.walker")
    batch = pytest.importorskip("mmu.x86.batch")
    rng = random.Random({"32-bit": 32, "PAE": 3, "4-level": 4, "5-level": 5}[mode])
    eight = mode != "32-bit"
    top = {"32-bit": 2, "PAE": 3, "4-level": 4, "5-level": 5}[mode]
    n_checked = n_rsvd = 0
    for maxphyaddr in (36, 40, 46, 52) if eight else (36,):
        for nx in (False, True):
            for gbpages in (False, True):
                regs0 = make_regs(mode, nx=nx)
                masks = guest_rsvd_masks(roles.cpu_role(regs0), maxphyaddr, gbpages)
                for level in range(top, 0, -1):
                    for _ in range(40):
                        entry = _random_entry(rng, eight)
                        mem, root = _setup(mode, level, entry)
                        regs = regs0.replace(cr3=root)
                        expect = is_rsvd_gpte(masks, entry, level)
                        r = walker.walk(mem, regs, 0, "read", 0, maxphyaddr, set_ad=False,
                                        gbpages=gbpages)
                        b = batch.walk_many(mem, regs, [0], "read", 0, maxphyaddr, set_ad=False,
                                            gbpages=gbpages).result(0)
                        if mode == "PAE" and level == 3:
                            got = r.fault is not None and r.fault.vector == 13
                            got_b = b.vector == 13
                        else:
                            got = (r.fault is not None and r.fault.level == level
                                   and bool(r.fault.error_code & 8))
                            got_b = b.vector == 14 and b.level == level and bool(b.error_code & 8)
                        ctx = (mode, maxphyaddr, nx, gbpages, level, hex(entry))
                        assert got == expect, ("walker", ctx, r.fault and r.fault.reason)
                        assert got_b == expect, ("walk_many", ctx)
                        n_checked += 1
                        n_rsvd += expect
    # Both outcomes must have been exercised, or the comparison proves little.
    assert 0 < n_rsvd < n_checked
