"""Selftest of the Unicorn/QEMU oracle against outcomes derived by hand from the SDM.

Every expected value below comes from Intel SDM Vol. 3A chapter 4 (section cited per
test), not from running anything: error-code bits P=1 W=2 U=4 RSVD=8 I/D=0x10 PK=0x20
(4.7), A/D rules (4.8), reserved bits with MAXPHYADDR = 40 (4.3-4.5), access rights
(4.6), protection keys (4.6.2), canonicality (3.3.7.1, 4.5).  A few tests pin the
places where QEMU departs from the SDM (``QUIRKS``), so that a Unicorn upgrade that
changes them is noticed.  The model under test is not used here.
"""
from __future__ import annotations

import pytest

pytest.importorskip("unicorn")

from mmu import GuestMemory, make_regs, PagingMode  # noqa: E402
from oracle.cases import A, D, P, PS, RW, US, XD, write_path  # noqa: E402
from oracle.unicorn_oracle import (QUIRKS, WINDOW, HarnessError, run_access)  # noqa: E402

# Tables for hand-built walks, top level first; data pages far away from them.
ROOT = 0x10000
TABLES = (0x11000, 0x12000, 0x13000, 0x14000)
PAGE = 0xABCDE000
UP = P | RW | US                     # a permissive non-leaf entry (no A, no D)
PF, GP = 14, 13


def build(mode: str | PagingMode, gva: int, leaf: int, *, leaf_level: int = 1,
          upper: dict[int, int] | None = None, cr3: int = ROOT, **regs_kw):
    """Memory + regs for one walk of ``gva``: non-leaf entries ``UP`` (overridable per
    level in ``upper``) pointing at TABLES, ending in ``leaf`` at ``leaf_level``."""
    regs = make_regs(mode, cr3=cr3, **regs_kw)
    mode = regs.mode
    values = []
    for i, level in enumerate(range(int(mode), leaf_level, -1)):
        flags = P if (mode == PagingMode.PAE and level == 3) else UP
        flags = (upper or {}).get(level, flags)
        values.append(TABLES[i] | flags)
    values.append(leaf)
    mem = GuestMemory()
    path = write_path(mem, mode, cr3 & ~0x1F, gva, values)
    return mem, regs, path


def entry(mem: GuestMemory, addr: int, mode=PagingMode.LEVEL4) -> int:
    return mem.read_u32(addr) if mode == PagingMode.BIT32 else mem.read_u64(addr)


def assert_pf(res, error_code, gva):
    assert (res.vector, res.error_code, res.gpa) == (PF, error_code, None)
    assert res.cr2 == gva


# -- accessed and dirty flags (SDM 4.8) ----------------------------------------------

def test_read_sets_A_only():
    gva = 0x0000_7F12_3456_789A
    mem, regs, path = build("4-level", gva, PAGE | P | RW | US)
    res = run_access(mem, regs, gva, "read", 3)
    assert res.ok and res.gpa == PAGE | 0x89A
    for _level, addr, value in path:
        assert entry(res.memory_after, addr) == value | A      # A everywhere, D nowhere


def test_write_sets_D_on_the_leaf_only():
    gva = 0x0040_1234
    mem, regs, path = build("4-level", gva, PAGE | P | RW | US)
    res = run_access(mem, regs, gva, "write", 3)
    assert res.ok and res.gpa == PAGE | 0x234
    *upper, (_, leaf_addr, leaf) = path
    assert entry(res.memory_after, leaf_addr) == leaf | A | D
    for _level, addr, value in upper:
        assert entry(res.memory_after, addr) == value | A


def test_data_write_is_not_applied_and_input_memory_untouched():
    gva = 0x0040_1234
    mem, regs, _ = build("4-level", gva, PAGE | P | RW | US | A | D,
                         upper={lvl: UP | A for lvl in (2, 3, 4)})
    before = mem.copy()
    res = run_access(mem, regs, gva, "write", 0)
    assert res.ok and res.memory_after.read_u8(PAGE | 0x234) == 0
    assert mem == before and res.memory_after == before          # A/D preset: nothing to write


# -- error codes (SDM 4.7) ----------------------------------------------------------

def test_user_write_to_read_only_page_is_0x7_and_leaf_untouched():
    gva = 0x0040_1234
    mem, regs, path = build("4-level", gva, PAGE | P | US)
    res = run_access(mem, regs, gva, "write", 3)
    assert_pf(res, 0x7, gva)
    assert entry(res.memory_after, path[-1][1]) == path[-1][2]


@pytest.mark.parametrize("mode", ["4-level", "32-bit"])
def test_smep_supervisor_fetch_from_user_page_is_0x11(mode):
    # I/D is reported whenever CR4.SMEP=1 (4.7), also in 32-bit paging.
    gva = 0x0040_1234
    mem, regs, _ = build(mode, gva, PAGE | P | RW | US, smep=True, nx=False)
    assert_pf(run_access(mem, regs, gva, "fetch", 0), 0x11, gva)


# One fault each: (mode, leaf, build options, access, cpl, error code, SDM rule).
SINGLE_FAULTS = [
    ("4-level", PAGE | P | RW | US, dict(upper={2: P | RW}), "read", 3, 0x5,
     "4.6.1: U/S=0 in the PDE makes the 4 KiB page supervisor-mode"),
    ("PAE", PAGE | P | RW | US | XD, dict(nx=True), "fetch", 3, 0x15,
     "4.6.1: XD=1 with EFER.NXE=1 forbids fetches; I/D reported with PAE and NXE (4.7)"),
    ("32-bit", PAGE | P | RW, dict(nx=True), "fetch", 3, 0x5,
     "4.7: I/D is reserved (0) in 32-bit paging unless CR4.SMEP=1, even with NXE=1"),
    ("4-level", PAGE | P | RW | US | XD, dict(nx=False), "read", 0, 0x9,
     "4.5.4: XD (bit 63) is reserved when EFER.NXE=0"),
    ("4-level", PAGE | P | RW | US, dict(upper={4: UP | PS}), "read", 0, 0x9,
     "4.5.4: PS (bit 7) is reserved in a PML4E"),
    ("PAE", PAGE | 1 << 52 | P | RW | US, {}, "read", 0, 0x9,
     "4.4.2: PAE entries reserve bits 62:MAXPHYADDR"),
]


@pytest.mark.parametrize("mode,leaf,opts,access,cpl,error_code,rule", SINGLE_FAULTS)
def test_single_fault(mode, leaf, opts, access, cpl, error_code, rule):
    gva = 0x4040_1234
    mem, regs, path = build(mode, gva, leaf, **opts)
    res = run_access(mem, regs, gva, access, cpl)
    assert_pf(res, error_code, gva)
    assert entry(res.memory_after, path[-1][1], regs.mode) == path[-1][2], "leaf gained A/D"


def test_read_from_xd_page_is_allowed():
    gva = 0x0040_1234
    mem, regs, _ = build("4-level", gva, PAGE | P | RW | US | XD, nx=True)
    assert run_access(mem, regs, gva, "read", 3).gpa == PAGE | 0x234


@pytest.mark.parametrize("wp,expect", [(True, 0x3), (False, None)])
def test_cr0_wp_supervisor_write_to_read_only_page(wp, expect):
    gva = 0x0040_1234
    mem, regs, path = build("4-level", gva, PAGE | P | US, wp=wp)
    res = run_access(mem, regs, gva, "write", 0)
    if expect is None:                           # WP=0: allowed, and D is set (4.8)
        assert res.ok and entry(res.memory_after, path[-1][1]) == path[-1][2] | A | D
    else:
        assert_pf(res, expect, gva)


@pytest.mark.parametrize("access,ac,cpl,expect", [
    ("read", False, 0, 0x1),        # SMAP: supervisor data read of a user page
    ("write", False, 0, 0x3),
    ("read", True, 0, None),        # RFLAGS.AC=1 lifts SMAP for explicit accesses
    ("fetch", False, 0, None),      # SMAP does not concern fetches (SMEP is off)
    ("read", False, 3, None),       # user accesses are not supervisor accesses
])
def test_smap(access, ac, cpl, expect):
    gva = 0x0040_1234
    mem, regs, _ = build("4-level", gva, PAGE | P | RW | US, smap=True, ac=ac)
    res = run_access(mem, regs, gva, access, cpl)
    if expect is None:
        assert res.ok and res.gpa == PAGE | 0x234
    else:
        assert_pf(res, expect, gva)


# -- protection keys (SDM 4.6.2; PK flag 4.7) ---------------------------------------

KEY1 = 1 << 59
AD1, WD1 = 1 << 2, 1 << 3          # PKRU bits of key 1


@pytest.mark.parametrize("leaf,pkru,access,cpl,wp,expect", [
    (P | RW | US | KEY1, AD1, "read", 3, True, 0x25),
    (P | US | KEY1, WD1, "write", 3, True, 0x27),       # read-only too: PK still reported
    (P | RW | US | KEY1, WD1, "write", 3, True, 0x27),
    (P | RW | US | KEY1, WD1, "read", 3, True, None),
    (P | RW | US | KEY1, WD1, "write", 0, True, 0x23),  # supervisor write, WP=1
    (P | RW | US | KEY1, WD1, "write", 0, False, None),  # supervisor write, WP=0: WD ignored
    (P | RW | US | KEY1, AD1, "fetch", 3, True, None),  # keys never restrict fetches
    (P | RW | KEY1, AD1, "read", 0, True, None),        # supervisor page: keys do not apply
    (P | RW | US | KEY1, AD1 >> 2, "read", 3, True, None),  # key 0 denied, page has key 1
])
def test_protection_keys(leaf, pkru, access, cpl, wp, expect):
    gva = 0x0040_1234
    mem, regs, _ = build("4-level", gva, PAGE | leaf, pke=True, pkru=pkru, wp=wp)
    res = run_access(mem, regs, gva, access, cpl)
    if expect is None:
        assert res.ok
    else:
        assert_pf(res, expect, gva)


def test_protection_keys_not_reported_for_not_present_fault():
    gva = 0x0040_1234
    mem, regs, _ = build("4-level", gva, (PAGE | RW | US | KEY1) & ~P, pke=True, pkru=AD1)
    assert_pf(run_access(mem, regs, gva, "read", 3), 0x4, gva)


# -- page sizes and reserved bits (SDM 4.3-4.5; MAXPHYADDR = 40) ---------------------

def test_32bit_pse36_4mib_page():
    # PDE bits 31:22 -> PA 31:22, bits 20:13 -> PA 39:32 (4.3, table 4-4).
    gva = 0x0034_5678
    pde = 0x12C0_0000 | 0xAB << 13 | PS | P | RW | US
    mem, regs, path = build("32-bit", gva, pde, leaf_level=2, pse=True)
    res = run_access(mem, regs, gva, "read", 3)
    assert res.ok and res.gpa == 0xAB_12C0_0000 | 0x34_5678
    assert entry(res.memory_after, path[-1][1], PagingMode.BIT32) == pde | A


def test_32bit_pse36_bit21_reserved():
    gva = 0x0034_5678
    pde = 0x12C0_0000 | 1 << 21 | PS | P | RW | US
    mem, regs, _ = build("32-bit", gva, pde, leaf_level=2, pse=True)
    assert_pf(run_access(mem, regs, gva, "read", 0), 0x9, gva)


def test_32bit_ps_ignored_without_cr4_pse():
    gva = 0x0040_1234
    mem, regs, _ = build("32-bit", gva, PAGE | P | RW | US, upper={2: UP | PS}, pse=False)
    assert run_access(mem, regs, gva, "read", 3).gpa == PAGE | 0x234


def test_4level_1gib_page():
    gva = 0x0000_0012_3456_789A                 # PDPTE index 0x48, offset 0x3456789A
    base = 0x80_4000_0000                        # bit 39 and bit 30: below 2**40
    mem, regs, path = build("4-level", gva, base | PS | P | RW | US, leaf_level=3)
    res = run_access(mem, regs, gva, "write", 3)
    assert res.ok and res.gpa == base | 0x3456_789A
    assert entry(res.memory_after, path[-1][1]) == path[-1][2] | A | D


@pytest.mark.parametrize("bit", [13, 29])
def test_1gib_page_low_address_bits_reserved(bit):
    gva = 0x0000_0012_3456_789A
    mem, regs, _ = build("4-level", gva, 0x80_4000_0000 | 1 << bit | PS | P | RW | US,
                         leaf_level=3)
    assert_pf(run_access(mem, regs, gva, "read", 0), 0x9, gva)


def test_2mib_page_pat_bit_allowed_bit13_reserved():
    gva = 0x0040_1234
    leaf = 0x1_2340_0000 | PS | P | RW | US
    mem, regs, _ = build("4-level", gva, leaf | 1 << 12, leaf_level=2)
    assert run_access(mem, regs, gva, "read", 3).gpa == 0x1_2340_0000 | 0x1234
    mem, regs, _ = build("4-level", gva, leaf | 1 << 13, leaf_level=2)
    assert_pf(run_access(mem, regs, gva, "read", 3), 0xD, gva)


@pytest.mark.parametrize("bit,ok", [(39, True), (40, False), (45, False), (51, False)])
def test_address_bits_above_maxphyaddr_reserved(bit, ok):
    gva = 0x0040_1234
    mem, regs, _ = build("4-level", gva, 1 << bit | P | RW | US)
    res = run_access(mem, regs, gva, "write", 3)
    if ok:
        assert res.gpa == 1 << bit | 0x234
    else:
        assert_pf(res, 0xF, gva)                # P|W|U|RSVD


def test_pae_pdpte_not_present_is_pf_0():
    gva = 0x4040_1234
    mem, regs, _ = build("PAE", gva, PAGE | P | RW | US, upper={3: 0})
    assert_pf(run_access(mem, regs, gva, "read", 0), 0x0, gva)


def test_pae_2mib_and_4k_pages():
    gva = 0x4040_1234
    mem, regs, _ = build("PAE", gva, 0x3_0000_0000 | PS | P | RW | US, leaf_level=2)
    assert run_access(mem, regs, gva, "read", 3).gpa == 0x3_0000_0000 | 0x1234
    mem, regs, _ = build("PAE", gva, PAGE | P | RW | US)
    assert run_access(mem, regs, gva, "read", 3).gpa == PAGE | 0x234


# -- 5-level paging and canonicality (SDM 4.5, 3.3.7.1) ------------------------------

def test_5level_4k_page_and_57bit_canonical():
    gva = 0x0000_8000_0000_1234                  # not 48-bit canonical, but 57-bit canonical
    mem, regs, path = build("5-level", gva, PAGE | P | RW | US)
    res = run_access(mem, regs, gva, "read", 3)
    assert res.ok and res.gpa == PAGE | 0x234 and len(path) == 5


@pytest.mark.parametrize("mode,gva", [("4-level", 0x0000_8000_0000_1234),
                                      ("5-level", 0x0100_0000_0000_1234)])
@pytest.mark.parametrize("access", ["read", "fetch"])
def test_non_canonical_is_gp0_without_a_walk(mode, gva, access):
    mem, regs, _ = build(mode, gva, PAGE | P | RW | US)
    res = run_access(mem, regs, gva, access, 0)
    assert (res.vector, res.error_code, res.gpa) == (GP, 0, None)
    assert res.memory_after == mem and res.walk_reads == ()


# -- documented departures of QEMU from the SDM (QUIRKS) ----------------------------

def test_quirk_upper_level_A_set_on_fault():
    assert "upper_level_A_set_on_fault" in QUIRKS
    gva = 0x0040_1234
    mem, regs, path = build("4-level", gva, PAGE | RW | US)    # PTE not present
    res = run_access(mem, regs, gva, "read", 3)
    assert_pf(res, 0x4, gva)
    assert [entry(res.memory_after, a) for _, a, _ in path[:-1]] == [v | A for _, _, v in path[:-1]]


def test_quirk_1G_leaf_A_set_on_fault():
    assert "1G_leaf_A_set_on_fault" in QUIRKS
    gva = 0x0000_0012_3456_789A
    mem, regs, path = build("4-level", gva, 0x80_4000_0000 | PS | P | US, leaf_level=3)
    res = run_access(mem, regs, gva, "write", 3)
    assert_pf(res, 0x7, gva)
    assert entry(res.memory_after, path[-1][1]) == path[-1][2] | A   # SDM: no A


def test_2mib_leaf_not_A_on_fault():
    gva = 0x0040_1234
    mem, regs, path = build("4-level", gva, 0x1_2340_0000 | PS | P | US, leaf_level=2)
    res = run_access(mem, regs, gva, "write", 3)
    assert_pf(res, 0x7, gva)
    assert entry(res.memory_after, path[-1][1]) == path[-1][2]


def test_quirk_PAE_PDPTE_checked_at_access():
    assert "PAE_PDPTE_checked_at_access" in QUIRKS
    gva = 0x4040_1234
    # RW (bit 1) is reserved in a PAE PDPTE (SDM: #GP at MOV CR3); QEMU ignores it.
    mem, regs, _ = build("PAE", gva, PAGE | P | RW | US, upper={3: P | RW})
    assert run_access(mem, regs, gva, "read", 0).ok
    # Bit 45 is reserved (>= MAXPHYADDR): QEMU gives #PF with RSVD at access time.
    mem, regs, _ = build("PAE", gva, PAGE | P | RW | US, upper={3: P | 1 << 45})
    assert_pf(run_access(mem, regs, gva, "read", 0), 0x9, gva)


# -- harness limits and argument checks ---------------------------------------------

def test_walk_through_the_stub_entry_is_refused():
    # PML4[0] points back at the PML4 (recursive); the PDPT index 511 then reads
    # PML4[511], the entry the oracle borrowed for its code.
    gva = 0x0000_007F_C000_0000
    regs = make_regs("4-level", cr3=ROOT)
    mem = GuestMemory()
    mem.write_u64(ROOT, ROOT | UP)
    with pytest.raises(HarnessError, match="stub entry"):
        run_access(mem, regs, gva, "read", 0)


def test_access_into_the_window_is_refused():
    gva = 0x0040_1234
    mem, regs, _ = build("4-level", gva, WINDOW | P | RW | US)
    with pytest.raises(HarnessError, match="window"):
        run_access(mem, regs, gva, "read", 0)


@pytest.mark.parametrize("kw,exc", [
    (dict(cpl=1), ValueError), (dict(access="exec"), ValueError), (dict(access=1), TypeError),
    (dict(gva=-1), ValueError), (dict(gva=1 << 64), ValueError), (dict(gva=1.0), TypeError),
])
def test_bad_arguments(kw, exc):
    mem, regs, _ = build("4-level", 0x1000, PAGE | P)
    args = dict(mem=mem, regs=regs, gva=0x1000, access="read", cpl=0) | kw
    with pytest.raises(exc):
        run_access(**args)


def test_paging_off_refused():
    with pytest.raises(ValueError, match="paging"):
        run_access(GuestMemory(), make_regs("none"), 0x1000, "read", 0)
