"""Permissions as KVM computes them: the permission bitmap, the PKRU mask and reserved bits.

KVM never re-derives "may this access touch this page?" from the paging rules on
every walk.  When the CPU role changes it precomputes three small tables, and the
walker (paging_tmpl.h ``FNAME(walk_addr_generic)``) only indexes them:

* ``permissions[16]`` -- ``update_permission_bitmask`` (arch/x86/kvm/mmu/mmu.c, the
  same in 5.18 and 6.4).  Byte ``b`` describes the access whose page-fault error
  code (PFEC) has bits 4:1 equal to ``b``; bit ``a`` of that byte is set when an
  access of that kind to a page whose effective ACC value is ``a`` faults.
* ``pkru_mask`` -- ``update_pkru_bitmask`` (mmu.c): two bits per PFEC index saying
  whether PKRU.AD and PKRU.WD apply to that access.
* ``rsvd_bits_mask[2][5]`` -- ``__reset_rsvds_bits_mask`` (mmu.c): for each level
  and each value of entry bit 7, the bits that must be zero.

``permission_fault`` (arch/x86/kvm/mmu.h) then turns (ACC bits, pkey, PFEC) into
0 or an error code with PFERR_PRESENT (and PFERR_PK) set.  The CPU state enters
only through the CPU role (``cpu_role.base.cr0_wp``, ``.efer_nx``,
``cpu_role.ext.cr4_smep``, ``.cr4_smap``, ``.cr4_pke``, ``.cr4_pse``) plus RFLAGS.AC
and PKRU, which change too often to be part of any role and are read live.

The 16 indexes use PFEC bit 3 (RSVD) as a free slot: an access never reaches the
permission check with RSVD set (a reserved-bit fault is reported first), so
``permission_fault`` puts "SMAP is overridden by RFLAGS.AC" there, and
``update_pkru_bitmask`` puts "the page is a user page" there.

Linux 6.4 passes CR0.WP through to VMX guests with EPT, so the cached
``cpu_role.base.cr0_wp`` may be stale; 6.4's ``permission_fault`` therefore first
calls ``kvm_mmu_refresh_passthrough_bits`` (see :func:`refresh_passthrough_bits`).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from mmu.x86.bits import (ACC_ALL, ACC_EXEC_MASK, ACC_USER_MASK, ACC_WRITE_MASK, EPT, MAX_PHYS_BITS,
                   PTE, PTE_PKEY_SHIFT, PFErr, check_int)
from mmu.x86.regs import RFLAGS

__all__ = [
    "PFERR_IMPLICIT_ACCESS", "gpte_access", "ept_gpte_access", "gpte_pkey",
    "update_permission_bitmask", "update_pkru_bitmask", "permission_index",
    "permission_fault", "kvm_reports_fetch",
    "rsvd_bits", "GuestRsvdMasks", "rsvds_bits_mask", "guest_rsvd_masks", "ept_rsvd_masks",
    "rsvd_bits_set", "is_rsvd_gpte",
    "GuestMetadata", "reset_guest_paging_metadata", "refresh_passthrough_bits",
    "render_permissions_table",
]

#: PFERR_IMPLICIT_ACCESS (kvm_host.h, bit 48): a supervisor access the CPU makes on
#: its own (descriptor tables, ...); SMAP applies to it whatever RFLAGS.AC says.
PFERR_IMPLICIT_ACCESS = 1 << 48

# Plain ints: IntFlag arithmetic costs microseconds, and these run per walk.
_PWU = int(PTE.P | PTE.RW | PTE.US)
_PFEC_P = int(PFErr.P)
_PFEC_PK = int(PFErr.PK)
_PFEC_W = int(PFErr.WR)
_PFEC_U = int(PFErr.US)
_PFEC_RSVD = int(PFErr.RSVD)
_PFEC_F = int(PFErr.ID)
#: PFEC bits a caller may pass to permission_fault.  PFERR_RSVD and PFERR_PK are
#: outputs, never inputs (the kernel WARNs on them).
_PFEC_INPUT = int(PFErr.P | PFErr.WR | PFErr.US | PFErr.ID)
_RFLAGS_AC = int(RFLAGS.AC)


# ---------------------------------------------------------------------------
# Guest entry -> ACC bits
# ---------------------------------------------------------------------------

def gpte_access(gpte: int, eight_byte: bool = True) -> int:
    """ACC_* bits granted by one present guest entry (paging_tmpl.h ``FNAME(gpte_access)``).

    ACC_EXEC_MASK sits on the P bit and ACC_WRITE/ACC_USER on RW/US, so the low
    three bits of a present entry already read "exec, write, user"; XOR-ing in
    bit 63 (XD) clears "exec" for a no-execute entry.  4-byte entries (32-bit
    paging, ``has_4_byte_gpte``) have no bit 63 and are always executable.  The
    walker ANDs this over all levels to get the page's effective ACC value.
    """
    gpte = check_int("gpte", gpte, 0, 1 << (64 if eight_byte else 32))
    access = gpte & _PWU
    if eight_byte:
        access ^= gpte >> 63
    return access


def ept_gpte_access(gpte: int) -> int:
    """ACC_* bits of an EPT entry (``FNAME(gpte_access)`` with PTTYPE_EPT).

    EPT has no user/supervisor distinction, so KVM reuses ACC_USER_MASK to mean
    "readable": W -> ACC_WRITE, X -> ACC_EXEC, R -> ACC_USER.  A read of an
    EPT mapping then faults exactly when "U" is missing.
    """
    gpte = check_int("gpte", gpte, 0, 1 << 64)
    return ((ACC_WRITE_MASK if gpte & EPT.W else 0)
            | (ACC_EXEC_MASK if gpte & EPT.X else 0)
            | (ACC_USER_MASK if gpte & EPT.R else 0))


def gpte_pkey(gpte: int, eight_byte: bool = True) -> int:
    """Protection key of a leaf (``FNAME(gpte_pkeys)``): bits 62:59, 0 for 4-byte entries."""
    gpte = check_int("gpte", gpte, 0, 1 << 64)
    return (gpte >> PTE_PKEY_SHIFT) & 0xF if eight_byte else 0


# ---------------------------------------------------------------------------
# The permission bitmap and the PKRU mask
# ---------------------------------------------------------------------------

def _byte_mask(acc_bit: int) -> int:
    """The set of ACC values (0..7) that contain ``acc_bit``, as an 8-bit mask (mmu.c BYTE_MASK)."""
    return sum(1 << a for a in range(8) if a & acc_bit)


_X = _byte_mask(ACC_EXEC_MASK)    # 0xaa
_W = _byte_mask(ACC_WRITE_MASK)   # 0xcc
_U = _byte_mask(ACC_USER_MASK)    # 0xf0


def _role_bits(cpu_role: Any) -> tuple[bool, bool, bool, bool, bool]:
    """(cr0_wp, efer_nx, cr4_smep, cr4_smap, cr4_pke) of a CPU role (is_cr0_wp() & co)."""
    try:
        base, ext = cpu_role.base, cpu_role.ext
        return (bool(base.cr0_wp), bool(base.efer_nx), bool(ext.cr4_smep),
                bool(ext.cr4_smap), bool(ext.cr4_pke))
    except AttributeError:
        raise TypeError(f"cpu_role must be an mmu.CpuRole (with .base and .ext), "
                        f"not {type(cpu_role).__name__}") from None


def update_permission_bitmask(cpu_role: Any, ept: bool = False) -> tuple[int, ...]:
    """The 16-byte permission bitmap of ``cpu_role`` (mmu.c ``update_permission_bitmask``).

    For each index ``b`` (PFEC = ``b << 1``: W = bit 1, U = bit 2, RSVD slot = bit 3,
    F = bit 4) the byte is the union of these fault sets, each a set of ACC values:

    * ``wf``: a write to a non-writable page -- unless CR0.WP=0 and the access is a
      supervisor one (WP=0 lets the kernel write through read-only mappings);
    * ``uf``: a user access to a supervisor page;
    * ``ff``: a fetch from a non-executable page -- only with EFER.NX (without NX the
      XD bit is reserved, so such an entry never gets this far);
    * ``smepf``: with CR4.SMEP, a supervisor fetch from a user page;
    * ``smapf``: with CR4.SMAP, a supervisor data access to a user page -- unless the
      RSVD slot says SMAP is overridden (RFLAGS.AC=1 on an explicit access).

    ``ept=True`` is the nested-EPT MMU (``kvm_init_shadow_ept_mmu``): only the W/F/U
    checks, with U meaning "readable" (:func:`ept_gpte_access`); EPT accesses are
    made with PFERR_USER set for reads.  Unchanged between 5.18 and 6.4.
    """
    cr0_wp, efer_nx, smep, smap, _ = _role_bits(cpu_role)
    table = []
    for b in range(16):
        pfec = b << 1
        wf = ~_W & 0xFF if pfec & _PFEC_W else 0
        uf = ~_U & 0xFF if pfec & _PFEC_U else 0
        ff = ~_X & 0xFF if pfec & _PFEC_F else 0
        smepf = smapf = 0
        if not ept:
            # kf: the pages a *supervisor* access would be refused by SMEP/SMAP.
            kf = 0 if pfec & _PFEC_U else _U
            if not efer_nx:
                ff = 0
            if not cr0_wp and not pfec & _PFEC_U:
                wf = 0
            if smep and pfec & _PFEC_F:
                smepf = kf
            if smap and not pfec & (_PFEC_RSVD | _PFEC_F):
                smapf = kf
        table.append(ff | uf | wf | smepf | smapf)
    return tuple(table)


def update_pkru_bitmask(cpu_role: Any) -> int:
    """The 32-bit PKRU mask of ``cpu_role`` (mmu.c ``update_pkru_bitmask``).

    Zero unless ``cpu_role.ext.cr4_pke`` (which KVM only sets in long mode).  For
    each index ``b`` (PFEC = ``b << 1``, with the RSVD slot meaning "the page is a
    user page") two bits are placed at bit offset ``b << 1``:

    * bit 0, "PKRU.AD applies": a non-fetch access to a user page;
    * bit 1, "PKRU.WD applies": additionally a write, and either a user access or
      CR0.WP=1 (with WP=0 supervisor writes ignore WD, as they ignore R/W).
    """
    cr0_wp, _, _, _, pke = _role_bits(cpu_role)
    if not pke:
        return 0
    mask = 0
    for b in range(16):
        pfec = b << 1
        pte_user = bool(pfec & _PFEC_RSVD)
        check_pkey = pte_user and not pfec & _PFEC_F
        check_write = check_pkey and bool(pfec & _PFEC_W) and (bool(pfec & _PFEC_U) or cr0_wp)
        mask |= (int(check_pkey) | int(check_write) << 1) << pfec
    return mask


def _check_permissions(permissions: object) -> tuple[int, ...]:
    if not isinstance(permissions, (tuple, list)) or len(permissions) != 16:
        raise TypeError("permissions must be the 16-entry tuple from update_permission_bitmask")
    if not all(type(p) is int and 0 <= p < 256 for p in permissions):   # fast path first
        for i, p in enumerate(permissions):
            check_int(f"permissions[{i}]", p, 0, 1 << 8)
    return tuple(permissions)


def _index(pfec: int, rflags: int, implicit: bool) -> int:
    not_smap = bool(rflags & _RFLAGS_AC) and not implicit
    return (pfec + (int(not_smap) << 3)) >> 1


def permission_index(pfec: int, *, rflags: int, implicit: bool = False) -> int:
    """The ``permissions[]`` byte ``permission_fault`` consults (mmu.h): index =
    (pfec + (not_smap << 3)) >> 1, where ``not_smap`` = RFLAGS.AC set on an explicit
    access; it rides in the RSVD slot of the PFEC, which is never an input."""
    pfec = check_int("pfec", pfec, 0, 1 << 32)
    if pfec & ~_PFEC_INPUT:
        raise ValueError(f"pfec={pfec:#x} has bits outside P|W|U|F ({_PFEC_INPUT:#x}); "
                         f"RSVD and PK are results, not inputs")
    return _index(pfec, check_int("rflags", rflags, 0, 1 << 64), implicit)


def kvm_reports_fetch(cpu_role: Any) -> bool:
    """Whether KVM's software walker puts PFERR_FETCH in a fetch fault's error code:
    ``FNAME(walk_addr_generic)`` (paging_tmpl.h, 5.14+, incl. 5.18 and 6.4) tests
    ``is_efer_nx(mmu) || is_cr4_smep(mmu)``.  The SDM (Vol. 3A 4.7) also asks for
    CR4.PAE with NXE, so the two differ for 32-bit paging with EFER.NXE=1, where
    kvm_calc_cpu_role still sets efer_nx (docs/fact-check.md)."""
    _, efer_nx, cr4_smep, _, _ = _role_bits(cpu_role)
    return efer_nx or cr4_smep


def permission_fault(permissions: tuple[int, ...], pkru_mask: int, pte_access: int,
                     pte_pkey: int, pfec: int, *, rflags: int, pkru: int,
                     implicit: bool = False) -> int:
    """0 if the access is allowed, else the error-code bits to report (mmu.h ``permission_fault``).

    ``pfec`` holds the access kind as PFEC bits (PFErr.WR / US / ID; P is ignored);
    ``pte_access`` is the page's effective ACC value and ``pte_pkey`` its protection key.

    * ``not_smap`` = RFLAGS.AC set and the access is explicit (``implicit`` models
      PFERR_IMPLICIT_ACCESS); it goes into the RSVD slot: index = (pfec + (not_smap << 3)) >> 1.
      CPL does not enter: for user accesses the SMAP bits of the table are zero anyway.
    * fault = bit ``pte_access`` of ``permissions[index]``.
    * If ``pkru_mask`` is non-zero, the two PKRU bits of ``pte_pkey`` (AD, WD) are ANDed
      with ``pkru_mask`` at offset (pfec without P) + (page-is-user in the RSVD slot);
      anything left is a protection-key fault and adds PFERR_PK.

    Returns 0 or PFERR_PRESENT (| PFERR_PK).  The caller (the walker's error path)
    adds W/U and -- only with EFER.NX or CR4.SMEP -- F.  6.4 refreshes CR0.WP first;
    here that is the caller's job: :func:`refresh_passthrough_bits`.
    """
    permissions = _check_permissions(permissions)
    pkru_mask = check_int("pkru_mask", pkru_mask, 0, 1 << 32)
    pte_access = check_int("pte_access", pte_access, 0, ACC_ALL + 1)
    pte_pkey = check_int("pte_pkey", pte_pkey, 0, 16)
    pfec = check_int("pfec", pfec, 0, 1 << 32)
    if pfec & ~_PFEC_INPUT:
        raise ValueError(f"pfec={pfec:#x} has bits outside P|W|U|F ({_PFEC_INPUT:#x}); "
                         f"RSVD and PK are results, not inputs")
    rflags = check_int("rflags", rflags, 0, 1 << 64)
    pkru = check_int("pkru", pkru, 0, 1 << 32)

    fault = (permissions[_index(pfec, rflags, implicit)] >> pte_access) & 1
    errcode = _PFEC_P
    if pkru_mask:
        pkru_bits = (pkru >> (pte_pkey * 2)) & 3
        offset = (pfec & ~1) + ((pte_access & ACC_USER_MASK) << 1)  # U (bit 2) -> RSVD (bit 3)
        pkru_bits &= pkru_mask >> offset
        if pkru_bits:
            errcode |= _PFEC_PK
            fault = 1
    return errcode if fault else 0


# ---------------------------------------------------------------------------
# Reserved bits
# ---------------------------------------------------------------------------

def rsvd_bits(s: int, e: int) -> int:
    """Mask of bits s..e inclusive, 0 if e < s (mmu.h ``rsvd_bits``)."""
    return 0 if e < s else ((1 << (e - s + 1)) - 1) << s


@dataclasses.dataclass(frozen=True)
class GuestRsvdMasks:
    """``struct rsvd_bits_validate`` (mmu.h): ``rsvd_bits_mask[bit7][level - 1]`` and ``bad_mt_xwr``.

    ``bit7`` is entry bit 7 (PS in a PDE/PDPTE, PAT in a 4 KiB PTE); row 1 applies
    to large-page leaves.  ``bad_mt_xwr`` is EPT-only: bit ``n`` set means an
    entry whose low six bits (memory type and XWR) equal ``n`` is a misconfiguration.
    """

    rsvd_bits_mask: tuple[tuple[int, ...], tuple[int, ...]]
    bad_mt_xwr: int = 0

    def get_rsvd_bits(self, gpte: int, level: int) -> int:
        """The mask that applies to ``gpte`` at ``level`` (mmu.h ``get_rsvd_bits``)."""
        return self.rsvd_bits_mask[(gpte >> 7) & 1][level - 1]


def _check_maxphyaddr(maxphyaddr: int) -> int:
    return check_int("maxphyaddr", maxphyaddr, 32, MAX_PHYS_BITS + 1)


def rsvds_bits_mask(maxphyaddr: int, level: int, nx: bool, gbpages: bool, pse: bool,
                    amd: bool) -> GuestRsvdMasks:
    """Reserved-bit masks for x86 paging (mmu.c ``__reset_rsvds_bits_mask``).

    ``level`` is ``cpu_role.base.level``: 2 (32-bit), 3 (PAE), 4 or 5.  H, the
    high bits, are bits maxphyaddr..51 (..62 in PAE mode, whose 8-byte entries
    have no protection-key or ignored high bits), plus bit 63 without EFER.NX.

    Where KVM and the SDM differ: **4 MiB pages in 32-bit paging.**  KVM assumes
    PSE-36 (the removed ``is_cpuid_PSE36()`` always returned 1) and reserves
    exactly bits 21:17, whatever MAXPHYADDR is: bits 16:13 carry physical-address
    bits 35:32 and nothing above that is ever formed (``pse36_gfn_delta``).  The SDM
    (Vol. 3A table 4-4) lets bits (M-20):13 carry physical-address bits (M-1):32 with
    M = min(MAXPHYADDR, 40), so only bits 21:(M-19) are reserved.  For MAXPHYADDR = 36
    the two agree; above 36 KVM faults on bits the SDM allows (e.g. bit 17 = PA bit 36),
    below 36 it accepts bits the SDM reserves.  The model keeps KVM's rule.
    """
    maxphyaddr = _check_maxphyaddr(maxphyaddr)
    level = check_int("level", level, 2, 6)
    pa_bits_rsvd = rsvd_bits(maxphyaddr, 63)     # kvm_vcpu_reserved_gpa_bits_raw
    high = pa_bits_rsvd & rsvd_bits(0, 62 if level == 3 else 51)
    if not nx:
        high |= rsvd_bits(63, 63)
    gbpages_bit = 0 if gbpages else rsvd_bits(7, 7)
    # Bit 8 of a non-leaf PML4E/PML5E: Intel ignores it, AMD reserves it.
    nonleaf_bit8 = rsvd_bits(8, 8) if amd else 0

    m0 = [0] * 5      # bit 7 clear: tables and 4 KiB pages
    m1 = [0] * 5      # bit 7 set: large pages
    if level == 2:
        # 4-byte entries: no high bits at all.  PS is ignored without CR4.PSE.
        m1[1] = rsvd_bits(17, 21) if pse else 0
    elif level == 3:
        m0[2] = rsvd_bits(63, 63) | high | rsvd_bits(5, 8) | rsvd_bits(1, 2)    # PDPTE
        # The kernel leaves [1][2] unset here: its walker never checks a PAE PDPTE
        # (load_pdptrs does, at MOV CR3, with pdptr_rsvd_bits: 63:M, 8:5, 2:1, whatever
        # bit 7 is).  Bit 7 is itself reserved, so both rows get the same mask and
        # is_rsvd_gpte answers load_pdptrs's question for any PDPTE.
        m1[2] = m0[2]
        m0[1] = high                                                           # PDE
        m0[0] = high                                                           # PTE
        m1[1] = high | rsvd_bits(13, 20)                                       # 2 MiB
        m1[0] = m0[0]
    else:
        if level == 5:
            m0[4] = high | nonleaf_bit8 | rsvd_bits(7, 7)
            m1[4] = m0[4]
        m0[3] = high | nonleaf_bit8 | rsvd_bits(7, 7)
        m0[2] = high | gbpages_bit
        m0[1] = high
        m0[0] = high
        m1[3] = m0[3]
        m1[2] = high | gbpages_bit | rsvd_bits(13, 29)                         # 1 GiB
        m1[1] = high | rsvd_bits(13, 20)                                       # 2 MiB
        m1[0] = m0[0]
    return GuestRsvdMasks((tuple(m0), tuple(m1)))


def guest_rsvd_masks(cpu_role: Any, maxphyaddr: int = 52, gbpages: bool = True,
                     amd: bool = False) -> GuestRsvdMasks:
    """Guest reserved-bit masks of ``cpu_role`` (mmu.c ``reset_guest_rsvds_bits_mask``).

    Inputs: the guest's MAXPHYADDR (``reserved_gpa_bits``), ``cpu_role.base.level``,
    ``efer_nx``, ``ext.cr4_pse``, whether the guest may use 1 GiB pages (host
    GBPAGES with TDP, guest CPUID without) and whether the guest CPUID is AMD/Hygon.
    Paging off (level 0): all masks are zero -- no entry is ever read.
    """
    try:
        level, nx, pse = cpu_role.base.level, cpu_role.base.efer_nx, cpu_role.ext.cr4_pse
    except AttributeError:
        raise TypeError(f"cpu_role must be an mmu.CpuRole, not {type(cpu_role).__name__}") from None
    if level == 0:
        _check_maxphyaddr(maxphyaddr)
        return GuestRsvdMasks(((0,) * 5, (0,) * 5))
    return rsvds_bits_mask(maxphyaddr, int(level), bool(nx), bool(gbpages), bool(pse), bool(amd))


def _repeat_byte(b: int) -> int:
    return int.from_bytes(bytes([b]) * 8, "little")


def ept_rsvd_masks(maxphyaddr: int = 52, execonly: bool = False,
                   huge_page_level: int = 3) -> GuestRsvdMasks:
    """Reserved bits of L1's EPT entries (mmu.c ``__reset_rsvds_bits_mask_ept``).

    ``huge_page_level`` is the largest leaf the (virtual) EPT supports: 3 = 1 GiB,
    2 = 2 MiB, 1 = none; bit 7 (PS) is reserved where no large page is allowed.
    ``bad_mt_xwr`` rejects memory types 2, 3, 7 and XWR = 010 (write-only), 110
    (write+exec, no read), and 100 (exec-only) unless the CPU supports exec-only.
    """
    maxphyaddr = _check_maxphyaddr(maxphyaddr)
    huge_page_level = check_int("huge_page_level", huge_page_level, 1, 4)
    high = rsvd_bits(maxphyaddr, 63) & rsvd_bits(0, 51)
    large_1g = rsvd_bits(7, 7) if huge_page_level < 3 else 0
    large_2m = rsvd_bits(7, 7) if huge_page_level < 2 else 0
    m0 = (high,
          high | rsvd_bits(3, 6) | large_2m,
          high | rsvd_bits(3, 6) | large_1g,
          high | rsvd_bits(3, 7),
          high | rsvd_bits(3, 7))
    m1 = (m0[0],
          high | rsvd_bits(12, 20) | large_2m,
          high | rsvd_bits(12, 29) | large_1g,
          m0[3], m0[4])
    bad = (0xFF << (2 * 8)) | (0xFF << (3 * 8)) | (0xFF << (7 * 8))   # memtypes 2, 3, 7
    bad |= _repeat_byte(1 << 2) | _repeat_byte(1 << 6)                # XWR 010, 110
    if not execonly:
        bad |= _repeat_byte(1 << 4)                                   # XWR 100
    return GuestRsvdMasks((m0, m1), bad)


def rsvd_bits_set(masks: GuestRsvdMasks, gpte: int, level: int) -> int:
    """The reserved bits set in ``gpte`` at ``level`` (0 if none) -- for explaining a fault.

    A ``bad_mt_xwr`` hit (EPT) has no single offending bit; it is reported as bits 5:0.
    """
    if not isinstance(masks, GuestRsvdMasks):
        raise TypeError(f"masks must be a GuestRsvdMasks, not {type(masks).__name__}")
    gpte = check_int("gpte", gpte, 0, 1 << 64)
    level = check_int("level", level, 1, 6)
    bits = gpte & masks.get_rsvd_bits(gpte, level)
    if masks.bad_mt_xwr >> (gpte & 0x3F) & 1:
        bits |= gpte & 0x3F or 0x3F
    return bits


def is_rsvd_gpte(masks: GuestRsvdMasks, gpte: int, level: int) -> bool:
    """Does ``gpte`` at ``level`` set a reserved bit? (paging_tmpl.h ``FNAME(is_rsvd_bits_set)``)."""
    return bool(rsvd_bits_set(masks, gpte, level))


# ---------------------------------------------------------------------------
# The bundle, and the 6.4 CR0.WP refresh
# ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class GuestMetadata:
    """What ``reset_guest_paging_metadata`` stores in ``struct kvm_mmu`` for one CPU role."""

    cpu_role: Any
    permissions: tuple[int, ...]
    pkru_mask: int
    rsvd: GuestRsvdMasks
    maxphyaddr: int = 52
    gbpages: bool = True
    amd: bool = False

    def permission_fault(self, pte_access: int, pte_pkey: int, pfec: int, *, rflags: int,
                         pkru: int, implicit: bool = False) -> int:
        """:func:`permission_fault` with this bundle's tables."""
        return permission_fault(self.permissions, self.pkru_mask, pte_access, pte_pkey, pfec,
                                rflags=rflags, pkru=pkru, implicit=implicit)


def reset_guest_paging_metadata(cpu_role: Any, maxphyaddr: int = 52, gbpages: bool = True,
                                amd: bool = False) -> GuestMetadata:
    """Reserved masks, permission bitmap and PKRU mask of a CPU role (mmu.c
    ``reset_guest_paging_metadata``: ``reset_guest_rsvds_bits_mask``,
    ``update_permission_bitmask(mmu, false)``, ``update_pkru_bitmask``).

    The kernel returns early with paging off and leaves the old (unused) tables
    in place; a pure function has no "old", so here the tables are still computed
    from the role and the reserved masks are zero.  Nothing consults them while
    CR0.PG=0 (``nonpaging_gva_to_gpa`` checks no permissions).
    """
    return GuestMetadata(cpu_role=cpu_role,
                         permissions=update_permission_bitmask(cpu_role, ept=False),
                         pkru_mask=update_pkru_bitmask(cpu_role),
                         rsvd=guest_rsvd_masks(cpu_role, maxphyaddr, gbpages, amd),
                         maxphyaddr=maxphyaddr, gbpages=gbpages, amd=amd)


def refresh_passthrough_bits(metadata: GuestMetadata, cr0: int, *, tdp_enabled: bool = True,
                             guest_mmu: bool = False) -> GuestMetadata:
    """Linux 6.4's on-demand CR0.WP refresh (mmu.h ``kvm_mmu_refresh_passthrough_bits``,
    mmu.c ``__kvm_mmu_refresh_passthrough_bits``), run at the top of ``permission_fault``.

    With EPT, 6.4 lets the guest flip CR0.WP without a VM exit, so the role's
    ``cr0_wp`` can be stale.  Skipped without TDP (shadow paging intercepts WP, and
    WP is part of the shadow root role) and for ``guest_mmu`` (the MMU shadowing L1's
    EPT/NPT, which ignores CR0.WP).  Otherwise, if the live CR0.WP differs from the
    cached bit, the role's ``cr0_wp`` is updated and all guest paging metadata is
    recomputed; if it matches, the same object is returned.  Before 6.4 (and on SVM,
    which cannot pass WP through) the cached value is always current.
    """
    if not isinstance(metadata, GuestMetadata):
        raise TypeError(f"metadata must be a GuestMetadata, not {type(metadata).__name__}")
    cr0 = check_int("cr0", cr0, 0, 1 << 64)
    if not tdp_enabled or guest_mmu:
        return metadata
    from mmu.x86.regs import CR0
    live_wp = bool(cr0 & CR0.WP)
    role = metadata.cpu_role
    if bool(role.base.cr0_wp) == live_wp:
        return metadata
    new_role = dataclasses.replace(role, base=dataclasses.replace(role.base, cr0_wp=live_wp))
    return reset_guest_paging_metadata(new_role, metadata.maxphyaddr, metadata.gbpages,
                                       metadata.amd)


# ---------------------------------------------------------------------------
# The textbook's view
# ---------------------------------------------------------------------------

def _acc_label(a: int) -> str:
    return ("U" if a & ACC_USER_MASK else "-") + ("W" if a & ACC_WRITE_MASK else "-") + \
        ("X" if a & ACC_EXEC_MASK else "-")


def render_permissions_table(permissions: tuple[int, ...]) -> str:
    """A plain-text table of the 16 permission bytes.

    One row per index: the index, its PFEC bits decoded (user/supervisor,
    write/read/fetch, and "AC" when the RSVD slot holds "SMAP overridden"), the
    byte in hex, then one column per ACC value 0..7 (headed U/W/X, ``-`` = bit
    absent) with ``FAULT`` or ``ok`` -- words, so nothing rests on colour.
    """
    permissions = _check_permissions(permissions)
    cols = [_acc_label(a) for a in range(8)]
    head = f"{'idx':>3}  {'PFEC bits':<19} {'byte':>4}  " + " ".join(f"{c:>5}" for c in cols)
    lines = [head, "-" * len(head)]
    for b, byte in enumerate(permissions):
        pfec = b << 1
        who = "user" if pfec & _PFEC_U else "sup"
        kind = "fetch" if pfec & _PFEC_F else ""
        if pfec & _PFEC_W:
            kind = (kind + "+write") if kind else "write"
        kind = kind or "read"
        desc = f"{who} {kind}" + (" AC" if pfec & _PFEC_RSVD else "")
        cells = " ".join(f"{'FAULT' if byte >> a & 1 else 'ok':>5}" for a in range(8))
        lines.append(f"{b:>3}  {desc:<19} {byte:#04x}  {cells}")
    lines.append("columns: ACC value as U(ser) W(rite) X(exec); AC = RSVD slot set "
                 "(SMAP overridden by RFLAGS.AC)")
    return "\n".join(lines)
