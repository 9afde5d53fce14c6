"""mmu.x86.batch.walk_many against the scalar walker, hand-computed walks, and bad input.

The differential tests build seeded random page tables (every entry bit random, so
not-present, reserved, large-page, NX, U/S, R/W and protection-key entries all occur,
as do entries pointing back at a table -- self-maps, where one walk's leaf is another
walk's PML4E) and check that element i of the batch equals the scalar ``walk`` of
gvas[i] run in order on a copy of the same memory, field by field, and that memory
(and its write count) ends up identical.  The hand cases take their expected values
from the SDM's rules worked out on paper.
"""
from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmu import GuestMemory, PagingMode, make_regs
from mmu.x86.batch import BatchResult, walk_many
from mmu.x86.walker import walk

P, RW, US, A, D, PS = 0x1, 0x2, 0x4, 0x20, 0x40, 0x80
XD = 1 << 63

# -- random tables ----------------------------------------------------------------

#: Table frames the random tables live in (and point into); few, so walks chain.
TABLE_FRAMES = [0x10_0000 + 0x1000 * k for k in range(6)]
#: Entry slots that are filled; the random addresses index only these.
SLOTS = (0, 1, 2, 3, 511)
LEVELS = {PagingMode.BIT32: 2, PagingMode.PAE: 3, PagingMode.LEVEL4: 4, PagingMode.LEVEL5: 5}


def _random_entry(rng: random.Random, esize: int, targets=TABLE_FRAMES, stray_base=0) -> int:
    """An entry pointing at one of ``targets`` (or a random frame at or above
    ``stray_base``), with random flag bits; high/reserved bits rarely, so most walks
    get somewhere."""
    stray = stray_base | rng.randrange(1 << 20) << 12
    target = rng.choice(targets) if rng.random() < 0.85 else stray
    e = target | rng.getrandbits(9)                 # P RW US PWT PCD A D PS G
    if rng.random() < 0.85:
        e |= P
    if esize == 4:
        if rng.random() < 0.2:
            e |= rng.getrandbits(9) << 13            # PSE-36 and reserved 17-21
        return e & 0xFFFF_FFFF
    if rng.random() < 0.3:
        e |= XD
    if rng.random() < 0.3:
        e |= rng.randrange(16) << 59                # protection key
    if rng.random() < 0.1:
        e |= 1 << rng.randrange(12, 52)             # maybe above MAXPHYADDR / in a large page
    if rng.random() < 0.05:
        e |= 1 << rng.randrange(52, 59)
    return e


def random_tables(seed: int, mode: PagingMode) -> tuple[GuestMemory, int]:
    """Seeded random tables; returns (memory, cr3)."""
    rng = random.Random(seed)
    mem = GuestMemory()
    esize = 4 if mode == PagingMode.BIT32 else 8
    for f in TABLE_FRAMES:
        for slot in SLOTS:
            if esize == 4:
                mem.write_u32(f + 4 * slot, _random_entry(rng, 4))
            else:
                mem.write_u64(f + 8 * slot, _random_entry(rng, 8))
    if mode == PagingMode.PAE:
        # The PDPT is 32 bytes inside a table frame, so walks through that frame may
        # set A/D bits inside the PDPT (where bits 5-8 are reserved).
        cr3 = TABLE_FRAMES[0] + 32 * rng.choice((0, 1, 127))
        for k in range(4):
            e = rng.choice(TABLE_FRAMES) | (P if rng.random() < 0.9 else 0)
            if rng.random() < 0.1:
                e |= 1 << rng.choice((1, 2, 5, 6, 7, 8, 40, 63))
            mem.write_u64(cr3 + 8 * k, e)
    else:
        cr3 = rng.choice(TABLE_FRAMES)
    return mem, cr3


def tree_tables(seed: int, mode: PagingMode) -> tuple[GuestMemory, int]:
    """Seeded random tables shaped level by level: each level's tables live in frames
    of their own (1-12 per level, so entries of a level share tables), and entries
    point only into the next level's frames or at frames no table uses.  No frame
    serves two levels -- the case the batch writes A/D back per distinct entry."""
    rng = random.Random(seed)
    mem = GuestMemory()
    top = LEVELS[mode]
    esize = 4 if mode == PagingMode.BIT32 else 8
    write = mem.write_u32 if esize == 4 else mem.write_u64
    pools = {lvl: [0x100_0000 * lvl + 0x1000 * k for k in range(rng.randint(1, 12))]
             for lvl in range(1, top)}
    pools[top] = [0x100_0000 * top]
    cr3 = pools[top][0]
    if mode == PagingMode.PAE:        # the PDPT: 4 entries, 32-byte aligned in its frame
        cr3 += 32 * rng.choice((0, 1, 127))
        for k in range(4):
            write(cr3 + 8 * k, rng.choice(pools[2]) | (P if rng.random() < 0.9 else 0))
        del pools[top]
    for lvl, frames in pools.items():
        targets = pools.get(lvl - 1, TABLE_FRAMES)      # level 1: data pages
        for f in frames:
            for slot in SLOTS:
                e = _random_entry(rng, esize, targets, 0x8000_0000)
                if lvl > 1 and rng.random() < 0.75:     # mostly tables, so walks get down
                    e &= ~PS
                write(f + esize * slot, e)
    return mem, cr3


def random_gvas(seed: int, mode: PagingMode, n: int) -> list[int]:
    """Addresses whose per-level indices hit the filled slots, plus a few odd ones."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        if mode == PagingMode.BIT32:
            gva = rng.choice(SLOTS) << 22 | rng.choice(SLOTS) << 12
        elif mode == PagingMode.PAE:
            gva = rng.randrange(4) << 30 | rng.choice(SLOTS) << 21 | rng.choice(SLOTS) << 12
        else:
            gva = 0
            for lvl in range(LEVELS[mode], 0, -1):
                gva |= rng.choice(SLOTS) << (12 + 9 * (lvl - 1))
            top = 12 + 9 * LEVELS[mode] - 1
            if gva >> top & 1:
                gva |= ((1 << 64) - 1) & ~((1 << top) - 1)   # sign-extend: canonical
            if rng.random() < 0.05:
                gva ^= 1 << rng.randrange(top + 1, 64)      # non-canonical
        gva |= rng.getrandbits(12)
        out.append(gva)
    return out


def scalar_fields(r) -> tuple:
    """(gpa, ok, vector, error_code, level, page_size) of a WalkResult, in BatchResult's
    conventions (0 for none; level = where the walk stopped when it faulted)."""
    if r.ok:
        return (r.gpa, True, 0, 0, r.level or 0, r.page_size or 0)
    f = r.fault
    return (0, False, f.vector, f.error_code, f.level or 0, 0)


def batch_fields(b: BatchResult, i: int) -> tuple:
    return (int(b.gpa[i]), bool(b.ok[i]), int(b.vector[i]), int(b.error_code[i]),
            int(b.level[i]), int(b.page_size[i]))


def check_against_scalar(mem: GuestMemory, regs, gvas, access, cpl=0, maxphyaddr=52,
                         set_ad=True, gbpages=True) -> BatchResult:
    scalar_mem = mem.copy()
    scalar_mem.writes = mem.writes
    expect = [scalar_fields(walk(scalar_mem, regs, gva, access, cpl, maxphyaddr,
                                 set_ad=set_ad, gbpages=gbpages)) for gva in gvas]
    got = walk_many(mem, regs, gvas, access, cpl, maxphyaddr, set_ad=set_ad, gbpages=gbpages)
    assert len(got) == len(gvas)
    for i, gva in enumerate(gvas):
        assert batch_fields(got, i) == expect[i], f"lane {i}, gva {gva:#x}"
    assert mem == scalar_mem
    assert mem.writes == scalar_mem.writes
    return got


# -- differential: batch == scalar loop -------------------------------------------

MODES = [PagingMode.BIT32, PagingMode.PAE, PagingMode.LEVEL4, PagingMode.LEVEL5]


def _no_per_lane_write_back(*args):
    raise AssertionError("per-lane A/D write-back used on tables without shared frames")


@pytest.mark.parametrize("tables", ["shared", "tree"])
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.label)
@pytest.mark.parametrize("seed", range(6))
def test_seeded_random_tables_match_scalar(tables, mode, seed, monkeypatch):
    """``shared``: random_tables, whose frames serve several levels (self-maps), so the
    batch writes A/D back per (lane, entry).  ``tree``: tree_tables, where no frame
    serves two levels, so the batch must write A/D back per distinct entry (the
    per-lane write-back is made to fail) and still match, write count included."""
    if tables == "tree":
        import mmu.x86.batch
        monkeypatch.setattr(mmu.x86.batch, "_write_ad", _no_per_lane_write_back)
        mem, cr3 = tree_tables(seed, mode)
    else:
        mem, cr3 = random_tables(seed, mode)
    rng = random.Random((1000 if tables == "shared" else 2000) + seed)
    regs = make_regs(mode, cr3=cr3, wp=rng.random() < 0.5, nx=rng.random() < 0.7,
                     pse=rng.random() < 0.7, smep=rng.random() < 0.5, smap=rng.random() < 0.5,
                     pke=rng.random() < 0.5, ac=rng.random() < 0.3, pkru=rng.getrandbits(32))
    gvas = random_gvas(seed, mode, 150)
    for access in ("read", "write", "fetch"):
        for cpl in (0, 3):
            check_against_scalar(mem, regs, gvas, access, cpl, maxphyaddr=rng.choice((36, 46, 52)),
                                 gbpages=rng.random() < 0.8)
            # A short batch over many tables takes the sorting branch of _distinct.
            check_against_scalar(mem, regs, gvas[:8], access, cpl)
    # After all those walks, many A/D bits are set: repeat once with set_ad=False.
    check_against_scalar(mem, regs, gvas, "write", 3, set_ad=False)


def test_distinct_both_branches():
    from mmu.x86.batch import _distinct
    rng = np.random.default_rng(7)
    for space, n in ((50, 200), (1 << 20, 30), (4096, 0)):
        key = rng.integers(0, space, n).astype(np.intp)
        uk, inv = _distinct(key, space)
        assert uk.tolist() == sorted(set(key.tolist()))
        assert (uk[inv] == key).all()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mode=st.sampled_from(MODES), seed=st.integers(0, 2**32 - 1),
       wp=st.booleans(), nx=st.booleans(), pse=st.booleans(), smep=st.booleans(),
       smap=st.booleans(), pke=st.booleans(), ac=st.booleans(),
       pkru=st.integers(0, 2**32 - 1), access=st.sampled_from(("read", "write", "fetch")),
       cpl=st.integers(0, 3), maxphyaddr=st.integers(32, 52), gbpages=st.booleans(),
       set_ad=st.booleans(), tree=st.booleans())
def test_hypothesis_matches_scalar(mode, seed, wp, nx, pse, smep, smap, pke, ac, pkru, access,
                                   cpl, maxphyaddr, gbpages, set_ad, tree):
    mem, cr3 = (tree_tables if tree else random_tables)(seed, mode)
    regs = make_regs(mode, cr3=cr3, wp=wp, nx=nx, pse=pse, smep=smep, smap=smap, pke=pke,
                     ac=ac, pkru=pkru)
    gvas = random_gvas(seed, mode, 40)
    check_against_scalar(mem, regs, gvas, access, cpl, maxphyaddr, set_ad=set_ad, gbpages=gbpages)


def test_paging_off_is_identity():
    mem = GuestMemory()
    regs = make_regs("none")
    gvas = [0, 0x1234, 0xFFFF_FFFF]
    got = check_against_scalar(mem, regs, gvas, "write", 3)
    assert got.gpa.tolist() == gvas and got.ok.all()
    assert mem.writes == 0


# -- hand-computed walks ---------------------------------------------------------

def four_level() -> GuestMemory:
    """PML4 at 0x1000 -> PDPT 0x2000 -> PD 0x3000.  PD[2] -> PT 0x4000 (4 KiB pages
    at 0x40_0000: PTE[0] -> 0x9000 supervisor RW, PTE[1] -> 0xa000 user RO, XD).
    PD[3] is a 2 MiB user page at 0x20_0000 (so gva 0x60_0000..)."""
    mem = GuestMemory()
    mem.write_u64(0x1000, 0x2000 | P | RW | US)
    mem.write_u64(0x2000, 0x3000 | P | RW | US)
    mem.write_u64(0x3000 + 8 * 2, 0x4000 | P | RW | US)
    mem.write_u64(0x4000 + 8 * 0, 0x9000 | P | RW)
    mem.write_u64(0x4000 + 8 * 1, 0xA000 | P | US | XD)
    mem.write_u64(0x3000 + 8 * 3, 0x20_0000 | P | RW | US | PS)
    return mem


def test_hand_four_level_translations_and_ad():
    mem = four_level()
    regs = make_regs("4-level", cr3=0x1000)
    w0 = mem.writes
    r = walk_many(mem, regs, [0x40_0123, 0x40_1456, 0x50_0000, 0x60_0ABC, 1 << 63], "write")
    assert r.gpa.tolist() == [0x9123, 0, 0, 0x20_0ABC, 0]
    assert r.ok.tolist() == [True, False, False, True, False]
    assert r.vector.tolist() == [0, 14, 14, 0, 13]
    # 0x40_1456: supervisor write to a read-only page with CR0.WP=1 -> P|W.
    # 0x50_0000: PT index 0x100 is empty -> not present at level 1, W.
    assert r.error_code.tolist() == [0, P | RW, RW, 0, 0]
    assert r.level.tolist() == [1, 1, 1, 2, 0]
    assert r.page_size.tolist() == [4096, 0, 0, 2 << 20, 0]
    # A on every entry of the two successful walks, D on their leaves; nothing else.
    assert mem.read_u64(0x1000) == 0x2000 | P | RW | US | A
    assert mem.read_u64(0x2000) == 0x3000 | P | RW | US | A
    assert mem.read_u64(0x3000 + 16) == 0x4000 | P | RW | US | A
    assert mem.read_u64(0x4000) == 0x9000 | P | RW | A | D
    assert mem.read_u64(0x4008) == 0xA000 | P | US | XD
    assert mem.read_u64(0x3000 + 24) == 0x20_0000 | P | RW | US | PS | A | D
    assert mem.writes - w0 == 5          # 4 entries for the first walk, the 2 MiB PDE


def test_hand_permissions():
    mem = four_level()
    regs = make_regs("4-level", cr3=0x1000, smep=True, smap=True)
    user_ro = 0x40_1000
    # SMAP: supervisor read of a user page with AC=0 -> P; with AC=1 allowed.
    assert walk_many(mem, regs, [user_ro], "read").error_code.tolist() == [P]
    assert walk_many(mem, regs.replace(rflags=regs.rflags | 1 << 18), [user_ro], "read").ok[0]
    # SMEP and XD: supervisor fetch from the user XD page -> P|I.
    assert walk_many(mem, regs, [user_ro], "fetch").error_code.tolist() == [P | 0x10]
    # User read of the supervisor page -> P|U; user write of the RO page -> P|W|U.
    assert walk_many(mem, regs, [0x40_0000], "read", 3).error_code.tolist() == [P | US]
    assert walk_many(mem, regs, [user_ro], "write", 3).error_code.tolist() == [P | RW | US]
    # CR0.WP=0: supervisor write to the user RO page is allowed (SMAP off).
    regs0 = make_regs("4-level", cr3=0x1000, wp=False)
    assert walk_many(mem, regs0, [user_ro], "write").gpa.tolist() == [0xA000]
    # EFER.NXE=0: bit 63 is reserved -> P|RSVD at level 1 (I/D not reported).
    r = walk_many(mem, make_regs("4-level", cr3=0x1000, nx=False), [user_ro], "fetch", 3)
    assert (r.error_code[0], r.level[0]) == (P | US | 0x8, 1)


def test_hand_protection_keys():
    mem = four_level()
    mem.write_u64(0x4008, 0xA000 | P | RW | US | 3 << 59)       # user page, key 3
    regs = make_regs("4-level", cr3=0x1000, pke=True, pkru=0b10 << 6)   # key 3: WD
    assert walk_many(mem, regs, [0x40_1000], "read", 3).ok[0]
    assert walk_many(mem, regs, [0x40_1000], "write", 3).error_code.tolist() == [P | RW | US | 0x20]
    assert walk_many(mem, regs, [0x40_1000], "fetch", 3).ok[0]    # keys never block fetches
    ad = regs.replace(pkru=0b01 << 6)
    assert walk_many(mem, ad, [0x40_1000], "read", 3).error_code.tolist() == [P | US | 0x20]


def test_hand_reserved_and_maxphyaddr():
    mem = four_level()
    mem.write_u64(0x4000 + 8 * 5, (1 << 40) | 0x9000 | P)      # PTE[5]: PA bit 40
    regs = make_regs("4-level", cr3=0x1000)
    r = walk_many(mem, regs, [0x40_5000], "read", maxphyaddr=40)
    assert (r.vector[0], r.error_code[0], r.level[0]) == (14, P | 0x8, 1)
    assert walk_many(mem, regs, [0x40_5000], "read", maxphyaddr=41).gpa.tolist() == [(1 << 40) | 0x9000]
    # A 2 MiB PDE with bit 13 set is reserved; PS in a PML4E is reserved.
    mem.write_u64(0x3000 + 8 * 4, 0x40_0000 | 1 << 13 | P | PS)
    assert walk_many(mem, regs, [0x80_0000], "read").error_code.tolist() == [P | 0x8]
    mem.write_u64(0x1000 + 8, 0x2000 | P | PS)
    r = walk_many(mem, regs, [1 << 39], "read")
    assert (r.error_code[0], r.level[0]) == (P | 0x8, 4)


def test_hand_32bit_pse36():
    mem = GuestMemory()
    # PDE[3] maps 4 MiB at PA 0x3_00C0_0000: bits 31:22 = 3, bits 16:13 (PA 35:32) = 3.
    mem.write_u32(0x1000 + 4 * 3, 0x00C0_0000 | 3 << 13 | P | RW | PS)
    # PDE[4] has bit 17 set: with MAXPHYADDR=36 that is reserved both for KVM (which
    # assumes PSE-36 and reserves bits 21:17) and for the SDM (bits 21:(M-19)).
    mem.write_u32(0x1000 + 4 * 4, 0x0100_0000 | 1 << 17 | P | PS)
    regs = make_regs("32-bit", cr3=0x1000)
    r = walk_many(mem, regs, [0x00C1_2345, 0x0100_0000], "read", maxphyaddr=36)
    assert r.gpa.tolist() == [0x3_00C1_2345, 0]
    assert r.page_size.tolist() == [4 << 20, 0]
    assert r.error_code.tolist() == [0, P | 0x8]
    assert mem.read_u32(0x100C) == 0x00C0_0000 | 3 << 13 | P | RW | PS | A
    # Without CR4.PSE, bit 7 is ignored: PDE[3] is a table at 0xC0_0000 (empty).
    r = walk_many(mem, make_regs("32-bit", cr3=0x1000, pse=False), [0x00C1_2345], "read", maxphyaddr=36)
    assert (r.vector[0], r.error_code[0], r.level[0]) == (14, 0, 1)


def test_hand_pae_pdpte():
    mem = GuestMemory()
    cr3 = 0x1020                                    # PDPT at 0x1020, 32-byte aligned
    mem.write_u64(cr3 + 0, 0x3000 | P)
    mem.write_u64(0x3000, 0x4000 | P | RW)
    mem.write_u64(0x4000, 0x9000 | P | RW)
    regs = make_regs("PAE", cr3=cr3)
    r = walk_many(mem, regs, [0x123, 0x4000_0000], "read")
    assert r.gpa.tolist() == [0x9123, 0]
    assert (r.error_code[1], r.level[1]) == (0, 3)     # PDPTE[1] not present
    assert mem.read_u64(cr3) == 0x3000 | P                # PDPTEs get no A bit
    assert mem.read_u64(0x3000) == 0x4000 | P | RW | A


def test_ad_in_lane_order_self_map():
    """PML4E[511] points at the PML4 itself: walking 0xFFFF_FFFF_FFFF_F000 reaches the
    PML4 as a page, and its leaf is that very PML4E, which a write dirties.  Earlier
    and later walks through PML4E[511] see it; batch and scalar loop must agree."""
    mem = four_level()
    mem.write_u64(0x1000 + 8 * 511, 0x1000 | P | RW)
    regs = make_regs("4-level", cr3=0x1000)
    self_map = (1 << 64) - 0x1000
    gvas = [0x40_0000, self_map, self_map + 8, 0x40_0000, self_map]
    check_against_scalar(mem, regs, gvas, "write")
    assert mem.read_u64(0x1000 + 8 * 511) == 0x1000 | P | RW | A | D


def test_pae_pdpt_inside_a_table_restarts():
    """The PDPT shares its frame with a page table (PD[0] points at it), so PTE[0] *is*
    PDPTE[0].  A supervisor write (CR0.WP=0) through PDPTE[2] dirties PTE[0], i.e. sets
    PDPTE[0] bits 5-6, which are reserved: walks through PDPTE[0] after it get #GP(0)
    at level 3 (MOV to CR3 would not have loaded such a PDPTE), walks before it do not."""
    mem = GuestMemory()
    mem.write_u64(0x1000 + 0, 0x2000 | P)               # PDPTE[0] -> PD 0x2000
    mem.write_u64(0x1000 + 16, 0x2000 | P)              # PDPTE[2] -> the same PD
    mem.write_u64(0x2000, 0x1000 | P | RW)              # PD[0] -> PT at 0x1000 (= PDPT)
    regs = make_regs("PAE", cr3=0x1000, wp=False)
    gvas = [0x0000_0000, 0x8000_0000, 0x8000_0000, 0x0000_0000]
    got = check_against_scalar(mem, regs, gvas, "write")
    assert got.ok.tolist() == [True, True, True, False]
    assert got.gpa.tolist() == [0x2000, 0x2000, 0x2000, 0]
    assert (got.vector[3], got.error_code[3], got.level[3]) == (13, 0, 3)
    assert mem.read_u64(0x1000) == 0x2000 | P | A | D


# -- BatchResult -----------------------------------------------------------------

def test_result_record_and_len():
    mem = four_level()
    r = walk_many(mem, make_regs("4-level", cr3=0x1000), np.array([0x40_0123, 0x50_0000],
                                                                  dtype=np.uint64), "read")
    assert len(r) == 2
    e = r.result(0)
    assert (e.ok, e.gpa, e.vector, e.level, e.page_size) == (True, 0x9123, None, 1, 4096)
    e = r.result(-1)
    assert (e.ok, e.gpa, e.vector, e.error_code, e.level) == (False, None, 14, 0, 1)
    with pytest.raises(ValueError, match="i="):
        r.result(2)
    with pytest.raises(ValueError):
        r.gpa[0] = 1                                # read-only arrays
    assert len(walk_many(mem, make_regs("4-level", cr3=0x1000), [], "read")) == 0


def test_docstring_example():
    import doctest

    import mmu.x86.batch
    assert doctest.testmod(mmu.x86.batch).failed == 0


# -- bad input -------------------------------------------------------------------

@pytest.mark.parametrize("gvas, exc, words", [
    (np.zeros((2, 2), dtype=np.uint64), ValueError, "shape"),
    (np.array([1.0, 2.0]), TypeError, "float64"),
    (np.array([True]), TypeError, "bool"),
    (np.array([5, -1], dtype=np.int64), ValueError, "gvas[1]"),
    ([0, 1 << 64], ValueError, "gvas[1]"),
    ([0, -3], ValueError, "gvas[1]"),
    ([True], TypeError, "gvas[0]"),
    ([1.5], TypeError, "gvas[0]"),
    ("0x1000", TypeError, "str"),
    (0x1000, TypeError, "int"),
])
def test_bad_gvas(gvas, exc, words):
    with pytest.raises(exc, match=None) as info:
        walk_many(GuestMemory(), make_regs("4-level", cr3=0x1000), gvas, "read")
    assert words in str(info.value)


def test_bad_arguments():
    mem, regs = GuestMemory(), make_regs("4-level", cr3=0x1000)
    with pytest.raises(TypeError, match="GuestMemory"):
        walk_many({}, regs, [0], "read")
    with pytest.raises(TypeError, match="Regs"):
        walk_many(mem, None, [0], "read")
    with pytest.raises(ValueError, match="exec"):
        walk_many(mem, regs, [0], "exec")
    with pytest.raises(ValueError, match="cpl"):
        walk_many(mem, regs, [0], "read", cpl=4)
    with pytest.raises(ValueError, match="maxphyaddr"):
        walk_many(mem, regs, [0], "read", maxphyaddr=53)
    with pytest.raises(TypeError, match="set_ad"):
        walk_many(mem, regs, [0], "read", set_ad=1)
    # A CR3 that MOV to CR3 would refuse (bits at or above MAXPHYADDR) is refused, as walk() does.
    with pytest.raises(ValueError, match="cr3"):
        walk_many(mem, make_regs("4-level", cr3=1 << 40), [0], "read", maxphyaddr=40)


# The one integer rule (mmu.x86.bits.check_int) for both twins: any integer type, numpy's
# included, is taken as its value; bool and float are refused with a TypeError naming the
# argument.  Issue 14 A1: walk refused np.int64 while walk_many took it.
@pytest.mark.parametrize("gva", [np.int64(0x80_4020_3456), np.uint64(0x80_4020_3456),
                                 np.int32(0x4020_3456), np.uint64(0xFFFF_8000_0000_1000)])
def test_a1_walk_and_walk_many_take_numpy_integers_alike(gva):
    mem = GuestMemory()
    for table, entry in ((0x1008, 0x2007), (0x2008, 0x3007), (0x3008, 0x4007),
                         (0x4018, 0x9007)):
        mem.write_u64(table, entry)          # gva 0x80_4020_3456 -> 0x9456 (indices 1,1,1,3)
    regs = make_regs("4-level", cr3=0x1000)
    one = walk(mem, regs, gva, "read", cpl=np.int8(3), maxphyaddr=np.int64(46))
    many = walk_many(mem, regs, [gva], "read", cpl=np.int8(3), maxphyaddr=np.int64(46))
    assert one.gpa == (many.gpa[0] if many.ok[0] else None)
    assert one.ok == bool(many.ok[0])
    if int(gva) == 0x80_4020_3456:
        assert one.gpa == 0x9456


@pytest.mark.parametrize("bad", [True, np.True_, 4096.0, np.float64(4096), "0x1000", None])
def test_a1_walk_and_walk_many_refuse_the_same_values(bad):
    mem, regs = GuestMemory(), make_regs("4-level", cr3=0x1000)
    with pytest.raises(TypeError, match="gva"):
        walk(mem, regs, bad, "read")
    with pytest.raises(TypeError, match=r"gvas\[0\]"):
        walk_many(mem, regs, [bad], "read")
    for name, kw in (("cpl", {"cpl": bad}), ("maxphyaddr", {"maxphyaddr": bad})):
        with pytest.raises(TypeError, match=name):
            walk(mem, regs, 0, "read", **kw)
        with pytest.raises(TypeError, match=name):
            walk_many(mem, regs, [0], "read", **kw)
