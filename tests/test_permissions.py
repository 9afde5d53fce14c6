"""mmu.kvm.permissions: KVM's permission bitmap, PKRU mask and permission_fault.

Expected values are derived by hand from the SDM's access rules (Vol. 3A 4.6,
"Access Rights"; 4.6.2 "Protection Keys") and the fact sheet (§7.3, §7.4, §10.1),
never from running the code under test.

The roles used by most tests are small stand-ins that carry only the bits
update_permission_bitmask reads, so a bug in mmu.kvm.roles cannot hide one here; a
few tests at the end go through the real ``cpu_role(regs)``.
"""
from __future__ import annotations

import dataclasses
import itertools
import time

import pytest

from mmu.x86.bits import ACC_EXEC_MASK as X, ACC_USER_MASK as U, ACC_WRITE_MASK as W, PFErr
from mmu.kvm.permissions import (GuestMetadata, PFERR_IMPLICIT_ACCESS, ept_gpte_access, gpte_access,
                             gpte_pkey, permission_fault, refresh_passthrough_bits,
                             render_permissions_table, reset_guest_paging_metadata,
                             update_permission_bitmask, update_pkru_bitmask)
from mmu.x86.regs import RFLAGS

AC = int(RFLAGS.FIXED1 | RFLAGS.AC)
NO_AC = int(RFLAGS.FIXED1)

# PFEC values of the six real access kinds.
SUP_READ, SUP_WRITE, SUP_FETCH = 0, int(PFErr.WR), int(PFErr.ID)
USER_READ, USER_WRITE, USER_FETCH = int(PFErr.US), int(PFErr.US | PFErr.WR), int(PFErr.US | PFErr.ID)


@dataclasses.dataclass(frozen=True)
class _Base:
    cr0_wp: bool = True
    efer_nx: bool = True
    level: int = 4
    has_4_byte_gpte: bool = False


@dataclasses.dataclass(frozen=True)
class _Ext:
    cr4_smep: bool = False
    cr4_smap: bool = False
    cr4_pke: bool = False
    cr4_pse: bool = True


@dataclasses.dataclass(frozen=True)
class _Role:
    base: _Base
    ext: _Ext


def role(wp=True, nx=True, smep=False, smap=False, pke=False, level=4, pse=True) -> _Role:
    return _Role(_Base(cr0_wp=wp, efer_nx=nx, level=level, has_4_byte_gpte=level == 2),
                 _Ext(cr4_smep=smep, cr4_smap=smap, cr4_pke=pke, cr4_pse=pse))


def faults(table, pfec: int, acc: int, ac: bool = False) -> bool:
    """Read the table the way permission_fault indexes it (without going through it)."""
    return bool(table[(pfec >> 1) | (4 if ac else 0)] >> acc & 1)


# ---------------------------------------------------------------------------
# (a) hand-derived entries
# ---------------------------------------------------------------------------

def test_plain_table_wp_nx_matches_sdm_by_hand():
    # WP=1, NX=1, no SMEP/SMAP.  Fault sets as ACC-value bitmasks:
    # non-writable = {0,1,4,5} = 0x33, non-user = {0..3} = 0x0f, non-exec = {0,2,4,6} = 0x55.
    t = update_permission_bitmask(role())
    expected = [0x00, 0x33, 0x0F, 0x3F] * 2 + [0x55, 0x77, 0x5F, 0x7F] * 2
    assert list(t) == expected


def test_cr0_wp0_lets_supervisor_write_read_only_page():
    ro_sup = X                               # present, read-only, supervisor, executable
    assert faults(update_permission_bitmask(role(wp=True)), SUP_WRITE, ro_sup)
    assert not faults(update_permission_bitmask(role(wp=False)), SUP_WRITE, ro_sup)
    # ...but WP never helps a user write to a read-only user page.
    assert faults(update_permission_bitmask(role(wp=False)), USER_WRITE, U | X)
    # WP=0 also lets supervisor writes into read-only *user* pages (no SMAP).
    assert not faults(update_permission_bitmask(role(wp=False)), SUP_WRITE, U | X)


def test_smep_supervisor_fetch_of_user_page_faults():
    user_code = U | X
    assert not faults(update_permission_bitmask(role()), SUP_FETCH, user_code)
    t = update_permission_bitmask(role(smep=True))
    assert faults(t, SUP_FETCH, user_code)
    assert not faults(t, SUP_FETCH, X)             # kernel code still runs
    assert not faults(t, USER_FETCH, user_code)    # user code from CPL 3 too
    # SMEP is about fetches only; RFLAGS.AC does not override it.
    assert not faults(t, SUP_READ, user_code)
    assert faults(t, SUP_FETCH, user_code, ac=True)


def test_smap_and_its_ac_override():
    user_data = U | W
    t = update_permission_bitmask(role(smap=True))
    assert faults(t, SUP_READ, user_data)
    assert faults(t, SUP_WRITE, user_data)
    # RSVD slot set = "SMAP overridden" (RFLAGS.AC=1 on an explicit access).
    assert not faults(t, SUP_READ, user_data, ac=True)
    assert not faults(t, SUP_WRITE, user_data, ac=True)
    # SMAP does not apply to fetches or user accesses.
    assert not faults(t, SUP_FETCH, U | X)
    assert not faults(t, USER_READ, user_data)
    assert t[0] == 0xF0 and t[4] == 0x00           # sup read: all user pages / none


def test_no_efer_nx_means_no_fetch_faults_from_the_table():
    # Without NX the XD bit is reserved, so an ACC value without X never reaches
    # the table; the table itself must not fault on it.
    t = update_permission_bitmask(role(nx=False))
    assert not faults(t, SUP_FETCH, 0)
    assert not faults(t, USER_FETCH, U)
    assert faults(update_permission_bitmask(role(nx=True)), SUP_FETCH, 0)
    # SMEP still applies without NX.
    assert faults(update_permission_bitmask(role(nx=False, smep=True)), SUP_FETCH, U | X)


def test_ept_table_uses_user_as_readable_and_ignores_cpu_state():
    # EPT accesses: a read carries PFERR_USER (it asks for "U" = readable).
    for r in (role(), role(wp=False, smep=True, smap=True, nx=False)):
        t = update_permission_bitmask(r, ept=True)
        assert faults(t, USER_READ, 0) and not faults(t, USER_READ, U)
        assert faults(t, USER_WRITE, U) and not faults(t, USER_WRITE, U | W)
        assert faults(t, USER_FETCH, U) and not faults(t, USER_FETCH, U | X)
        assert faults(t, USER_FETCH, X)           # exec-only page, fetched: U missing
    assert update_permission_bitmask(role(), ept=True) == \
        update_permission_bitmask(role(wp=False, smep=True, smap=True, nx=False), ept=True)


def test_gpte_access_per_format():
    # P|RW|US, no XD -> exec|write|user
    assert gpte_access(0x7) == U | W | X
    assert gpte_access(0x7 | 1 << 63) == U | W
    assert gpte_access(0x1 | 1 << 63) == 0
    assert gpte_access(0x5, eight_byte=False) == U | X          # 4-byte: always executable
    assert gpte_access(0x1 | 0xF << 59) == X                    # pkey bits are not access bits
    # EPT: R -> USER, W -> WRITE, X -> EXEC
    assert ept_gpte_access(0b001) == U
    assert ept_gpte_access(0b011) == U | W
    assert ept_gpte_access(0b100) == X
    assert ept_gpte_access(0b111) == U | W | X
    assert gpte_pkey(0x1 | 0xA << 59) == 0xA
    assert gpte_pkey(0x1 | 0xA << 59, eight_byte=False) == 0


# ---------------------------------------------------------------------------
# (c) the PKRU mask by hand
# ---------------------------------------------------------------------------

def test_pkru_mask_by_hand():
    # Indexes with the RSVD slot ("user page") set and no fetch: 4, 5, 6, 7.
    # 2-bit values (WD<<1 | AD) at bit offset 2*b:
    #   b=4 sup read  -> 01 @8  = 0x0100;   b=5 sup write  -> 11 @10 = 0x0c00 (WP=1)
    #   b=6 user read -> 01 @12 = 0x1000;   b=7 user write -> 11 @14 = 0xc000
    assert update_pkru_bitmask(role(pke=True, wp=True)) == 0xDD00
    # WP=0: a supervisor write ignores WD -> b=5 is 01 @10 = 0x0400.
    assert update_pkru_bitmask(role(pke=True, wp=False)) == 0xD500
    assert update_pkru_bitmask(role(pke=False)) == 0
    # SMEP/SMAP/NX do not enter the mask.
    assert update_pkru_bitmask(role(pke=True, smep=True, smap=True, nx=False)) == 0xDD00


def test_permission_fault_protection_keys():
    r = role(pke=True)
    m = reset_guest_paging_metadata(r)
    ad1 = 1 << 2          # PKRU.AD for key 1
    wd1 = 2 << 2          # PKRU.WD for key 1
    P, PK = int(PFErr.P), int(PFErr.PK)
    f = m.permission_fault
    assert f(U | W, 1, USER_READ, rflags=NO_AC, pkru=ad1) == P | PK
    assert f(U | W, 0, USER_READ, rflags=NO_AC, pkru=ad1) == 0          # other key
    assert f(U | W, 1, SUP_READ, rflags=NO_AC, pkru=ad1) == P | PK      # sup access to user page
    assert f(W | X, 1, SUP_READ, rflags=NO_AC, pkru=ad1) == 0           # supervisor page: no PK
    assert f(U | X, 1, USER_FETCH, rflags=NO_AC, pkru=ad1) == 0         # fetches: no PK
    assert f(U | W, 1, USER_WRITE, rflags=NO_AC, pkru=wd1) == P | PK
    assert f(U | W, 1, USER_READ, rflags=NO_AC, pkru=wd1) == 0
    assert f(U | W, 1, SUP_WRITE, rflags=NO_AC, pkru=wd1) == P | PK     # WP=1
    m0 = reset_guest_paging_metadata(role(pke=True, wp=False))
    assert m0.permission_fault(U | W, 1, SUP_WRITE, rflags=NO_AC, pkru=wd1) == 0
    # PK and an ordinary violation together: both reported.
    assert f(U, 1, USER_WRITE, rflags=NO_AC, pkru=wd1) == P | PK
    # Without CR4.PKE nothing about PKRU matters.
    assert reset_guest_paging_metadata(role()).permission_fault(
        U | W, 1, USER_READ, rflags=NO_AC, pkru=0xFFFFFFFC) == 0


def test_permission_fault_smap_index_and_implicit_accesses():
    m = reset_guest_paging_metadata(role(smap=True))
    P = int(PFErr.P)
    assert m.permission_fault(U | W, 0, SUP_READ, rflags=NO_AC, pkru=0) == P
    assert m.permission_fault(U | W, 0, SUP_READ, rflags=AC, pkru=0) == 0
    # Implicit supervisor accesses (PFERR_IMPLICIT_ACCESS) cannot be overridden by AC.
    assert m.permission_fault(U | W, 0, SUP_READ, rflags=AC, pkru=0, implicit=True) == P
    # The P bit of the incoming PFEC is ignored by the index.
    assert m.permission_fault(U | W, 0, SUP_READ | 1, rflags=NO_AC, pkru=0) == P
    assert PFERR_IMPLICIT_ACCESS == 1 << 48


@pytest.mark.parametrize("kwargs, exc", [
    (dict(pfec=int(PFErr.RSVD)), ValueError),
    (dict(pfec=int(PFErr.PK)), ValueError),
    (dict(pte_access=8), ValueError),
    (dict(pte_pkey=16), ValueError),
    (dict(pkru=1 << 32), ValueError),
    (dict(pte_access=True), TypeError),
    (dict(permissions=(0,) * 15), TypeError),
])
def test_permission_fault_rejects_bad_input(kwargs, exc):
    args = dict(permissions=(0,) * 16, pkru_mask=0, pte_access=7, pte_pkey=0, pfec=0)
    args.update(kwargs)
    with pytest.raises(exc):
        permission_fault(args.pop("permissions"), args.pop("pkru_mask"), args.pop("pte_access"),
                         args.pop("pte_pkey"), args.pop("pfec"), rflags=NO_AC,
                         pkru=args.pop("pkru", 0))


def test_update_permission_bitmask_rejects_non_roles():
    with pytest.raises(TypeError):
        update_permission_bitmask(42)


# ---------------------------------------------------------------------------
# The 6.4 CR0.WP refresh (fact sheet §3.3)
# ---------------------------------------------------------------------------

def test_refresh_passthrough_bits_recomputes_stale_wp():
    from mmu.x86.regs import CR0
    stale = reset_guest_paging_metadata(role(wp=True, pke=True))
    live_cr0 = int(CR0.PE | CR0.PG)                       # guest cleared WP without an exit
    fresh = refresh_passthrough_bits(stale, live_cr0)
    assert fresh.cpu_role.base.cr0_wp is False
    # The stale table faults the supervisor write, the refreshed one does not.
    assert stale.permission_fault(X, 0, SUP_WRITE, rflags=NO_AC, pkru=0) == PFErr.P
    assert fresh.permission_fault(X, 0, SUP_WRITE, rflags=NO_AC, pkru=0) == 0
    assert fresh.pkru_mask == 0xD500                      # recomputed too
    # Same WP: nothing to do.  Shadow paging or guest_mmu: never refreshed.
    wp_cr0 = live_cr0 | CR0.WP
    assert refresh_passthrough_bits(stale, wp_cr0) is stale
    assert refresh_passthrough_bits(stale, live_cr0, tdp_enabled=False) is stale
    assert refresh_passthrough_bits(stale, live_cr0, guest_mmu=True) is stale


# ---------------------------------------------------------------------------
# The textbook table
# ---------------------------------------------------------------------------

def test_render_permissions_table():
    text = render_permissions_table(update_permission_bitmask(role(smap=True)))
    lines = text.splitlines()
    rows = [ln for ln in lines if ln[:3].strip().isdigit()]
    assert len(rows) == 16
    row0 = rows[0].split()
    assert row0[:4] == ["0", "sup", "read", "0xf0"]
    assert row0[4:] == ["ok"] * 4 + ["FAULT"] * 4
    assert "AC" in rows[4] and rows[4].split()[-8:] == ["ok"] * 8


# ---------------------------------------------------------------------------
# Integration with the real CPU role
# ---------------------------------------------------------------------------

def test_real_cpu_role_feeds_the_same_tables():
    roles = pytest.importorskip("mmu.kvm.roles")
    from mmu.x86.regs import make_regs
    for wp, nx, smep, smap, pke in itertools.product((False, True), repeat=5):
        regs = make_regs("4-level", wp=wp, nx=nx, smep=smep, smap=smap, pke=pke)
        real = roles.cpu_role(regs)
        stand_in = role(wp=wp, nx=nx, smep=smep, smap=smap, pke=pke)
        assert update_permission_bitmask(real) == update_permission_bitmask(stand_in)
        assert update_pkru_bitmask(real) == update_pkru_bitmask(stand_in)
    # KVM only sets ext.cr4_pke in long mode: a PAE guest with CR4.PKE has no PKRU mask.
    pae = roles.cpu_role(make_regs("PAE", pke=True))
    assert update_pkru_bitmask(pae) == 0


def test_real_cpu_role_refresh():
    roles = pytest.importorskip("mmu.kvm.roles")
    from mmu.x86.regs import make_regs
    regs = make_regs("4-level", wp=True)
    m = reset_guest_paging_metadata(roles.cpu_role(regs))
    fresh = refresh_passthrough_bits(m, regs.cr0 & ~(1 << 16))
    assert fresh.cpu_role == roles.cpu_role(regs.replace(cr0=regs.cr0 & ~(1 << 16)))
    assert isinstance(fresh, GuestMetadata)


# ---------------------------------------------------------------------------
# (b) access.c-style cross check: walker vs KVM's tables vs the SDM rules
# ---------------------------------------------------------------------------
#
# One 4-level page table holds every entry combination at once, so a walk of
# one address per combination replaces rebuilding memory:
#   PML4E[0] -> PDPT;  PDPTE[0] writable, PDPTE[1] read-only ("pdpte no writable"),
#   both -> the same PD.  PD[i], i = 0..7: a PDE with W = i&1, U = i&2, NX = i&4
#   -> the same PT.  PT[k], k = 0..15: a 4 KiB PTE with W = k&1, U = k&2, NX = k&4,
#   pkey = k >> 3.  PD[8 + j], j = 0..15: a 2 MiB leaf with the same encoding.
# Upper entries are P|RW|US; A (and D on leaves) are preset, walks use set_ad=False.

_PML4, _PDPT, _PD, _PT = 0x1000, 0x2000, 0x3000, 0x4000
_P, _RW, _US, _A, _D, _PS = 1, 2, 4, 0x20, 0x40, 0x80
_NX = 1 << 63


def _bits(v: int) -> int:
    """Entry bits W/U/NX of combination number v (bit 0 W, bit 1 U, bit 2 NX, bits 3+ pkey)."""
    return (_RW if v & 1 else 0) | (_US if v & 2 else 0) | (_NX if v & 4 else 0) | (v >> 3) << 59


def _build_tables():
    from mmu.x86.memory import GuestMemory
    mem = GuestMemory()
    mem.write_u64(_PML4, _PDPT | _P | _RW | _US | _A)
    mem.write_u64(_PDPT + 0 * 8, _PD | _P | _RW | _US | _A)
    mem.write_u64(_PDPT + 1 * 8, _PD | _P | _US | _A)
    cases = []        # (gva, path [(level, entry)], description)
    for i in range(8):
        mem.write_u64(_PD + i * 8, _PT | _P | _A | _bits(i))
    for k in range(16):
        mem.write_u64(_PT + k * 8, (0x10_0000 + k * 0x1000) | _P | _A | _D | _bits(k))
    for j in range(16):
        mem.write_u64(_PD + (8 + j) * 8, (0x4000_0000 + j * 0x20_0000) | _P | _A | _D | _PS
                      | _bits(j))
    for pdpt_i in (0, 1):
        top = [(4, mem.read_u64(_PML4)), (3, mem.read_u64(_PDPT + pdpt_i * 8))]
        for i in range(8):
            for k in range(16):
                gva = pdpt_i << 30 | i << 21 | k << 12
                cases.append((gva, top + [(2, mem.read_u64(_PD + i * 8)),
                                          (1, mem.read_u64(_PT + k * 8))]))
        for j in range(16):
            gva = pdpt_i << 30 | (8 + j) << 21
            cases.append((gva, top + [(2, mem.read_u64(_PD + (8 + j) * 8))]))
    return mem, cases


def _cpu_states():
    """(wp, nx, smep, smap, pke, pkru, ac): PKRU AD/WD for key 1 only with CR4.PKE (as
    access.c rejects pkru flags without cr4.pke)."""
    for wp, nx, smep, smap, ac in itertools.product((False, True), repeat=5):
        yield wp, nx, smep, smap, False, 0, ac
        for ad, wd in itertools.product((0, 1), repeat=2):
            yield wp, nx, smep, smap, True, (ad | wd << 1) << 2, ac


def _sdm_verdict(path, wp, nx, smep, smap, pke, pkru, ac, access, cpl) -> int:
    """The SDM rules (Vol. 3A 4.6, 4.7) written out as access.c's ac_test_permissions
    does, independent of mmu.kvm.permissions.  0 = no fault, else the #PF error code."""
    write, fetch, user_acc = access == "write", access == "fetch", cpl == 3
    extra = (int(PFErr.WR) if write else 0) | (int(PFErr.US) if user_acc else 0) | \
        (int(PFErr.ID) if fetch and (nx or smep) else 0)
    entries = [e for _, e in path]
    if not nx and any(e >> 63 for e in entries):
        return int(PFErr.P | PFErr.RSVD) | extra       # XD is reserved without EFER.NXE
    writable = all(e & _RW for e in entries)
    user = all(e & _US for e in entries)
    execable = not any(e >> 63 for e in entries)
    bad = (user_acc and not user) \
        or (write and not writable and (user_acc or wp)) \
        or (fetch and nx and not execable) \
        or (fetch and smep and user and not user_acc) \
        or (not fetch and smap and user and not user_acc and not ac)
    key = (entries[-1] >> 59) & 0xF
    ad, wd = (pkru >> 2 * key) & 1, (pkru >> 2 * key) & 2
    pk = pke and user and not fetch and (ad or (wd and write and (user_acc or wp)))
    if not (bad or pk):
        return 0
    return int(PFErr.P) | (int(PFErr.PK) if pk else 0) | extra


def _kvm_static(path, nx):
    """The walk's per-entry part, using only mmu.kvm.permissions: is a reserved bit set at
    some level (FNAME(is_rsvd_bits_set) with the guest masks), and the leaf's ACC value
    (AND of FNAME(gpte_access) over the levels) and pkey.  Depends on EFER.NX only."""
    from mmu.kvm.permissions import gpte_access, gpte_pkey, is_rsvd_gpte
    meta = reset_guest_paging_metadata(role(nx=nx))
    rsvd = any(is_rsvd_gpte(meta.rsvd, e, level) for level, e in path)
    acc = 7
    for _, e in path:
        acc &= gpte_access(e)
    return rsvd, acc, gpte_pkey(path[-1][1])


_WR, _USR, _ID = int(PFErr.WR), int(PFErr.US), int(PFErr.ID)
_P_RSVD = int(PFErr.P | PFErr.RSVD)


def _kvm_verdict(meta, static, nx, smep, pkru, rflags, access, cpl) -> int:
    """What FNAME(walk_addr_generic) reports: a reserved-bit fault, else permission_fault
    on the leaf's ACC value and pkey; the error path then adds W/U and -- only with
    EFER.NX or CR4.SMEP -- F."""
    rsvd, acc, pkey = static
    write, fetch, user_acc = access == "write", access == "fetch", cpl == 3
    pfec = (_WR if write else 0) | (_USR if user_acc else 0)
    extra = pfec | (_ID if fetch and (nx or smep) else 0)
    if rsvd:
        return _P_RSVD | extra
    err = meta.permission_fault(acc, pkey, pfec | (_ID if fetch else 0), rflags=rflags, pkru=pkru)
    return err | extra if err else 0


def test_access_c_style_cross_check(capsys):
    """Every combination: batch walker == KVM table-driven verdict == SDM rules."""
    batch = pytest.importorskip("mmu.x86.batch")
    import numpy as np
    from mmu.x86.regs import make_regs
    mem, cases = _build_tables()
    gvas = np.array([g for g, _ in cases], dtype=np.uint64)
    static = {nx: [_kvm_static(path, nx) for _, path in cases] for nx in (False, True)}
    checked = 0
    t0 = time.perf_counter()
    for wp, nx, smep, smap, pke, pkru, ac in _cpu_states():
        regs = make_regs("4-level", cr3=_PML4, wp=wp, nx=nx, smep=smep, smap=smap, pke=pke,
                         ac=ac, pkru=pkru)
        meta = reset_guest_paging_metadata(role(wp=wp, nx=nx, smep=smep, smap=smap, pke=pke))
        for access, cpl in itertools.product(("read", "write", "fetch"), (0, 3)):
            res = batch.walk_many(mem, regs, gvas, access, cpl, set_ad=False)
            for n, (gva, path) in enumerate(cases):
                kvm = _kvm_verdict(meta, static[nx][n], nx, smep, pkru, regs.rflags, access, cpl)
                sdm = _sdm_verdict(path, wp, nx, smep, smap, pke, pkru, ac, access, cpl)
                got = 0 if res.ok[n] else int(res.error_code[n])
                if not (kvm == sdm == got) or (not res.ok[n] and res.vector[n] != 14):
                    pytest.fail(f"gva={gva:#x} path={[hex(e) for _, e in path]} wp={wp} nx={nx} "
                                f"smep={smep} smap={smap} pke={pke} pkru={pkru:#x} ac={ac} "
                                f"{access} cpl={cpl}: walker {got:#x} (vector {res.vector[n]}), "
                                f"KVM tables {kvm:#x}, SDM rules {sdm:#x}")
                checked += 1
    with capsys.disabled():
        print(f"\n[access.c-style] {checked} combinations agree (walker, KVM tables, SDM rules) "
              f"in {time.perf_counter() - t0:.1f} s")
    assert checked == len(cases) * 32 * 5 * 6


def test_access_c_style_cross_check_scalar_walker():
    """A seeded sample through the scalar walker, including its access_bits and pkey."""
    walker = pytest.importorskip("mmu.x86.walker")
    import random
    from mmu.kvm.permissions import gpte_access, gpte_pkey
    from mmu.x86.regs import make_regs
    mem, cases = _build_tables()
    rng = random.Random(20240604)
    states = list(_cpu_states())
    for _ in range(3000):
        wp, nx, smep, smap, pke, pkru, ac = rng.choice(states)
        gva, path = rng.choice(cases)
        access, cpl = rng.choice(("read", "write", "fetch")), rng.choice((0, 3))
        regs = make_regs("4-level", cr3=_PML4, wp=wp, nx=nx, smep=smep, smap=smap, pke=pke,
                         ac=ac, pkru=pkru)
        meta = reset_guest_paging_metadata(role(wp=wp, nx=nx, smep=smep, smap=smap, pke=pke))
        r = walker.walk(mem, regs, gva, access, cpl, set_ad=False)
        kvm = _kvm_verdict(meta, _kvm_static(path, nx), nx, smep, pkru, regs.rflags, access, cpl)
        got = 0 if r.ok else r.fault.error_code
        assert got == kvm, (hex(gva), wp, nx, smep, smap, pke, hex(pkru), ac, access, cpl,
                            r.fault and r.fault.reason)
        if r.ok:
            acc = 7
            for _, e in path:
                acc &= gpte_access(e)
            assert r.access_bits == acc
            # The walker reports a key only when keys are in force (IA-32e and CR4.PKE).
            assert r.pkey == (gpte_pkey(path[-1][1]) if pke else None)


def test_permission_index_and_kvm_fetch_rule():
    from mmu.kvm.permissions import kvm_reports_fetch, permission_index
    from mmu.x86.regs import make_regs
    from mmu.kvm.roles import cpu_role
    # mmu.h: index = (pfec + (not_smap << 3)) >> 1; W|U|F = 0x16 -> 0xB, +AC -> 0xF.
    assert permission_index(0x16, rflags=0x2) == 0xB
    assert permission_index(0x16, rflags=0x2 | (1 << 18)) == 0xF
    assert permission_index(0x16, rflags=0x2 | (1 << 18), implicit=True) == 0xB
    with pytest.raises(ValueError):
        permission_index(0x8, rflags=0x2)          # RSVD is a result, not an input
    # paging_tmpl.h: F is reported iff EFER.NX or CR4.SMEP, whatever CR4.PAE says.
    assert kvm_reports_fetch(cpu_role(make_regs("32-bit", nx=True))) is True
    assert kvm_reports_fetch(cpu_role(make_regs("32-bit", nx=False))) is False
    assert kvm_reports_fetch(cpu_role(make_regs("32-bit", nx=False, smep=True))) is True
    with pytest.raises(TypeError):
        kvm_reports_fetch(object())
