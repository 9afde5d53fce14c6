"""The guest page walk, vectorised over many linear addresses with numpy.

``walk_many(mem, regs, gvas, access)`` gives, for every ``gvas[i]``, exactly what
:func:`mmu.walker.walk` gives for that address when the scalar walks are run one after
the other, in order, on the same memory -- including the accessed/dirty (A/D) bits
written back, so memory after the batch equals memory after the scalar loop.

The rules are the scalar walker's, which are the SDM's (Vol. 3A ch. 4) as KVM's
``FNAME(walk_addr_generic)`` (arch/x86/kvm/mmu/paging_tmpl.h, 5.19-6.4) applies them:

* 32-bit paging (4-byte entries, 4 MiB pages with CR4.PSE and PSE-36), PAE paging
  (the four PDPTEs, 2 MiB pages), 4- and 5-level paging (1 GiB pages when the guest has
  GBPAGES), and paging off (gpa = gva);
* a non-canonical address is #GP(0) before any table is read;
* a not-present entry is #PF with P=0; a reserved bit (``__reset_rsvds_bits_mask``,
  facts 7.5: bits above MAXPHYADDR, bit 63 without EFER.NXE, PS where no large page
  exists, the low bits of a large-page address) is #PF with P|RSVD;
* permissions are the AND over all levels (KVM's ``pte_access``), checked once at the
  leaf the way ``permission_fault`` does (mmu.h): U/S, R/W with CR0.WP, NX with
  EFER.NXE, SMEP, SMAP with RFLAGS.AC, then protection keys from PKRU;
* the #PF error code adds W/R, U/S and I/D (I/D only with EFER.NXE or CR4.SMEP,
  as paging_tmpl.h's error path does);
* A/D bits are written only when a walk succeeds (``FNAME(update_accessed_dirty_bits)``).

How it is vectorised: the walk goes level by level over the *lanes* (addresses) still
walking.  Each level computes every live lane's entry address, reads the entries by
grouping lanes per 4 KiB frame (one numpy view of ``mem.frame(fn)`` per frame, a missing
frame reads as zero), and applies the present/reserved/leaf tests as array operations.
Because ``access`` and ``cpl`` are the same for every lane, the permission check is an
8-entry table indexed by the lane's access bits (the kernel's ``permissions[]`` byte for
this PFEC), and the protection-key check a 2 x 16 table indexed by (user page, pkey).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from .bits import (ACC_EXEC_MASK, ACC_USER_MASK, ACC_WRITE_MASK, GP_VECTOR, MAX_PHYS_BITS,
                   PAGE_SHIFT, PF_VECTOR, PTE, PTE_PKEY_SHIFT, PFErr, check_access, check_int)
from .memory import GuestMemory
from .regs import PagingMode, Regs, paging_mode

_U64 = np.uint64
_PAGE_MASK = (1 << PAGE_SHIFT) - 1
#: Bits 51:12 -- the address field of an 8-byte entry (PT64_BASE_ADDR_MASK).
_ADDR64 = ((1 << MAX_PHYS_BITS) - 1) & ~_PAGE_MASK
#: Bits 31:12 -- the address field of a 4-byte entry (PT32_BASE_ADDR_MASK).
_ADDR32 = 0xFFFF_F000


def _rsvd_bits(lo: int, hi: int) -> int:
    """Bits lo..hi inclusive (the kernel's ``rsvd_bits``); empty when lo > hi."""
    return ((1 << (hi - lo + 1)) - 1) << lo if lo <= hi else 0


# ---------------------------------------------------------------------------
# Per-mode walk parameters
# ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Format:
    """What the walk needs to know about one paging mode (one instance of the
    kernel's PTTYPE template): entry size, where each level's index sits, which
    levels can be a leaf, and the reserved-bit masks ``rsvd[ps][level]``."""

    mode: PagingMode
    esize: int                      # 4 or 8 bytes per entry
    levels: tuple[int, ...]         # table levels walked, top first (PAE: 2, 1)
    index_bits: int                 # 10 (32-bit) or 9
    large: frozenset[int]           # levels at which PS=1 makes a leaf
    rsvd: dict[tuple[int, int], int]  # (ps, level) -> reserved mask
    addr_mask: int                  # address field of a non-leaf entry
    nx: bool                        # entries have an XD bit 63 in use
    pdpte_rsvd: int | None          # PAE: reserved bits of a PDPTE; None otherwise


def _format(regs: Regs, mode: PagingMode, maxphyaddr: int, gbpages: bool) -> _Format:
    """Mirror ``__reset_rsvds_bits_mask`` (mmu.c) for the guest (facts 7.5)."""
    nx = regs.nx
    if mode == PagingMode.BIT32:
        # 4-byte entries: no XD, no bits above 31.  With CR4.PSE a PDE with PS=1 maps
        # 4 MiB; KVM assumes PSE-36 (is_cpuid_PSE36() == 1), so PDE bits 16:13 carry
        # PA 35:32 and bits 21:17 are reserved.  Without PSE, bit 7 is ignored.
        rsvd = {(0, 2): 0, (0, 1): 0, (1, 1): 0,
                (1, 2): _rsvd_bits(17, 21) if regs.pse else 0}
        return _Format(mode, 4, (2, 1), 10, frozenset({2} if regs.pse else ()), rsvd, _ADDR32,
                       False, None)
    # PAE paging reserves every bit from MAXPHYADDR to 62 (there are no protection
    # keys); IA-32e paging only up to 51.  Bit 63 is reserved without EFER.NXE.
    high = _rsvd_bits(maxphyaddr, 62 if mode == PagingMode.PAE else 51)
    if not nx:
        high |= _rsvd_bits(63, 63)
    large_2m = _rsvd_bits(13, 20)
    if mode == PagingMode.PAE:
        rsvd = {(0, 2): high, (1, 2): high | large_2m, (0, 1): high, (1, 1): high}
        pdpte = _rsvd_bits(63, 63) | _rsvd_bits(5, 8) | _rsvd_bits(1, 2) | high
        return _Format(mode, 8, (2, 1), 9, frozenset({2}), rsvd, _ADDR64, nx, pdpte)
    gb = 0 if gbpages else _rsvd_bits(7, 7)
    top = high | _rsvd_bits(7, 7)   # PS is reserved in a PML4E/PML5E
    rsvd = {(0, 4): top, (1, 4): top, (0, 5): top, (1, 5): top,
            (0, 3): high | gb, (1, 3): high | gb | _rsvd_bits(13, 29),
            (0, 2): high, (1, 2): high | large_2m,
            (0, 1): high, (1, 1): high}
    levels = (5, 4, 3, 2, 1) if mode == PagingMode.LEVEL5 else (4, 3, 2, 1)
    return _Format(mode, 8, levels, 9, frozenset({3, 2}), rsvd, _ADDR64, nx, None)


def _page_shift(fmt: _Format, level: int) -> int:
    """log2 of the region one entry at ``level`` maps (12, 21/22, 30, 39, 48)."""
    return PAGE_SHIFT + fmt.index_bits * (level - 1)


# ---------------------------------------------------------------------------
# Permission tables: permission_fault() for one (access, cpl), all lanes at once
# ---------------------------------------------------------------------------

def _permission_table(regs: Regs, access: str, cpl: int) -> np.ndarray:
    """fault[acc] for the 8 possible ACC values of a leaf.

    The same rules ``update_permission_bitmask`` (mmu.c, facts 7.3) encodes in the
    byte ``permissions[pfec >> 1]``; with one PFEC for the whole batch only that byte
    is needed.  SMAP is skipped when RFLAGS.AC=1 at CPL<3 (``not_smap`` in mmu.h).
    """
    user = cpl == 3
    write = access == "write"
    fetch = access == "fetch"
    out = np.zeros(8, dtype=bool)
    for acc in range(8):
        x, w, u = acc & ACC_EXEC_MASK, acc & ACC_WRITE_MASK, acc & ACC_USER_MASK
        fault = False
        if user and not u:                                   # U/S
            fault = True
        if write and not w and (user or regs.wp):            # R/W, CR0.WP
            fault = True
        if fetch and regs.nx and not x:                      # XD
            fault = True
        if not user and u:
            if fetch and regs.smep:                          # SMEP
                fault = True
            if not fetch and regs.smap and not regs.ac:      # SMAP, RFLAGS.AC
                fault = True
        out[acc] = fault
    return out


def _pkey_table(regs: Regs, mode: PagingMode, access: str, cpl: int) -> np.ndarray | None:
    """pk_fault[user_page, pkey], or None when protection keys are off.

    ``update_pkru_bitmask`` (mmu.c, facts 7.4): keys apply only in IA-32e paging with
    CR4.PKE, only to data accesses to user pages; PKRU.AD blocks any data access,
    PKRU.WD blocks writes at CPL 3, and supervisor writes only when CR0.WP=1.
    """
    if not (regs.pke and mode >= PagingMode.LEVEL4) or access == "fetch":
        return None
    out = np.zeros((2, 16), dtype=bool)
    for key in range(16):
        bits = (regs.pkru >> (2 * key)) & 3
        ad, wd = bits & 1, bits & 2
        out[1, key] = bool(ad) or (access == "write" and bool(wd) and (cpl == 3 or regs.wp))
    return out


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class BatchElement:
    """One lane of a :class:`BatchResult`, with the scalar ``WalkResult``'s conventions:
    ``gpa``/``page_size`` are None on a fault, ``vector`` None on success, ``level`` is
    the leaf level on success and the level where the walk stopped on a fault (None
    for #GP and with paging off)."""

    gva: int
    ok: bool
    gpa: int | None
    vector: int | None
    error_code: int
    level: int | None
    page_size: int | None


@dataclasses.dataclass(frozen=True)
class BatchResult:
    """Per-address results of :func:`walk_many`, as read-only numpy arrays.

    ``gpa`` (uint64, 0 where the walk faulted), ``ok`` (bool), ``vector`` (uint8,
    0 = no fault, 13 = #GP, 14 = #PF), ``error_code`` (uint32, PFErr bits),
    ``level`` (uint8: leaf level if ok, level where the walk stopped if not, 0 when
    there is none), ``page_size`` (uint64, 0 where faulted or paging is off).
    """

    gva: np.ndarray
    gpa: np.ndarray
    ok: np.ndarray
    vector: np.ndarray
    error_code: np.ndarray
    level: np.ndarray
    page_size: np.ndarray

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            getattr(self, f.name).setflags(write=False)

    def __len__(self) -> int:
        return len(self.ok)

    def result(self, i: int) -> BatchElement:
        """The record for element ``i`` (negative indices count from the end)."""
        n = len(self)
        i = check_int("i", i, -n, n) % n if n else check_int("i", i, 0, 0)
        ok = bool(self.ok[i])
        level = int(self.level[i])
        return BatchElement(
            gva=int(self.gva[i]), ok=ok,
            gpa=int(self.gpa[i]) if ok else None,
            vector=None if ok else int(self.vector[i]),
            error_code=int(self.error_code[i]),
            level=level or None,
            page_size=(int(self.page_size[i]) or None) if ok else None)

    def __repr__(self) -> str:
        n = len(self)
        faults = n - int(self.ok.sum())
        return f"BatchResult({n} walks, {n - faults} ok, {faults} faulted)"


# ---------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------

def _as_gvas(gvas: object) -> np.ndarray:
    """gvas as a 1-D uint64 array; TypeError/ValueError naming what is wrong."""
    if isinstance(gvas, np.ndarray):
        if gvas.ndim != 1:
            raise ValueError(f"gvas must be 1-D, not an array of shape {gvas.shape}")
        kind = gvas.dtype.kind
        if kind == "u":
            return gvas.astype(_U64)
        if kind == "i":
            if gvas.size and gvas.min() < 0:
                bad = int(np.flatnonzero(gvas < 0)[0])
                check_int(f"gvas[{bad}]", int(gvas[bad]), 0, 1 << 64)
            return gvas.astype(_U64)
        if kind == "O":
            return _as_gvas(list(gvas))
        raise TypeError(f"gvas must be an integer array, not dtype {gvas.dtype} "
                        f"(allowed: unsigned or signed integers 0 <= gva < 2**64)")
    if isinstance(gvas, (str, bytes, bytearray)) or not isinstance(gvas, (Sequence, range)):
        raise TypeError(f"gvas must be a 1-D integer array or a sequence of ints, "
                        f"not {type(gvas).__name__}")
    vals = []
    for i, v in enumerate(gvas):
        if isinstance(v, np.integer) and not isinstance(v, np.bool_):
            v = int(v)
        if type(v) is not int or not 0 <= v < 1 << 64:
            check_int(f"gvas[{i}]", v, 0, 1 << 64)
        vals.append(v)
    return np.array(vals, dtype=_U64)


# ---------------------------------------------------------------------------
# Memory access, grouped per frame
# ---------------------------------------------------------------------------

def _groups(fn: np.ndarray):
    """Yield (frame number, lane positions) for each distinct frame in ``fn``."""
    order = np.argsort(fn, kind="stable")
    fs = fn[order]
    starts = np.flatnonzero(np.concatenate(([True], fs[1:] != fs[:-1])))
    ends = np.append(starts[1:], len(fs))
    for s, e, f in zip(starts.tolist(), ends.tolist(), fs[starts].tolist()):
        yield f, order[s:e]


def _gather(mem: GuestMemory, ea: np.ndarray, esize: int) -> np.ndarray:
    """Read the ``esize``-byte little-endian entries at addresses ``ea`` (aligned).

    Lanes are grouped by frame so each 4 KiB frame is viewed once; an unallocated
    frame reads as zeros, as :class:`GuestMemory` promises."""
    out = np.zeros(len(ea), dtype=_U64)
    if not len(ea):
        return out
    dt = "<u8" if esize == 8 else "<u4"
    slot = (ea & _U64(_PAGE_MASK)) // _U64(esize)
    fn = ea >> _U64(PAGE_SHIFT)
    if fn.min() == fn.max():                       # the common top-level case
        frame = mem.frame(int(fn[0]))
        if frame is not None:
            out[:] = np.frombuffer(frame, dtype=dt)[slot]
        return out
    for f, pos in _groups(fn):
        frame = mem.frame(f)
        if frame is not None:
            out[pos] = np.frombuffer(frame, dtype=dt)[slot[pos]]
    return out


def _write_ad(mem: GuestMemory, ea: np.ndarray, bits: np.ndarray, lane: np.ndarray,
              esize: int) -> None:
    """OR ``bits`` (A, or A|D) into the entries at ``ea``, as the scalar loop does.

    ``lane`` is the walk each write belongs to.  Every entry written was read present
    by a successful walk, so its frame exists.  The final memory is the initial memory
    OR every write, whatever the order; ``mem.writes`` grows by what the scalar loop
    counts: one write per (walk, entry) that changes the entry, i.e. per walk that is
    the first, in lane order, to want a bit the entry did not have.
    """
    if not len(ea):
        return
    dt = "<u8" if esize == 8 else "<u4"
    # Sort by (entry, lane) so each entry's writers appear in program order.
    srt = np.lexsort((lane, ea))
    ea, bits = ea[srt], bits[srt].astype(dt[1:])
    first = np.concatenate(([True], ea[1:] != ea[:-1]))
    starts = np.flatnonzero(first)
    grp = np.cumsum(first) - 1
    uea = ea[starts]
    slot = (uea & _U64(_PAGE_MASK)) // _U64(esize)
    old = np.zeros(len(uea), dtype=dt[1:])
    want = np.bitwise_or.reduceat(bits, starts)
    for f, pos in _groups(uea >> _U64(PAGE_SHIFT)):
        view = np.frombuffer(mem.frame(f), dtype=dt)
        old[pos] = view[slot[pos]]
        view[slot[pos]] = old[pos] | want[pos]
    changes = np.zeros(len(ea), dtype=bool)
    for bit in (PTE.A, PTE.D):
        wants = (bits & bits.dtype.type(bit)) != 0
        nth = np.cumsum(wants)
        nth -= np.concatenate(([0], nth[:-1]))[starts][grp]   # count within the group
        changes |= wants & (nth == 1) & ((old[grp] & old.dtype.type(bit)) == 0)
    mem.writes += int(changes.sum())


# ---------------------------------------------------------------------------
# The walk
# ---------------------------------------------------------------------------

def walk_many(mem: GuestMemory, regs: Regs, gvas, access: str, cpl: int = 0,
              maxphyaddr: int = 52, *, set_ad: bool = True, gbpages: bool = True) -> BatchResult:
    """Walk every address of ``gvas``; element i equals ``walk(mem, regs, gvas[i], ...)``
    run in order on the same memory.  Arguments are :func:`mmu.walker.walk`'s.

    >>> from mmu import GuestMemory, PageTableBuilder
    >>> mem = GuestMemory(); b = PageTableBuilder(mem, "4-level")
    >>> b.map(0x40_0000, 0x9000, 0x2000)
    >>> r = walk_many(mem, b.regs(), [0x40_0123, 0x40_1456, 0x50_0000], "read")
    >>> [hex(g) for g in r.gpa], r.ok.tolist(), r.vector.tolist()
    (['0x9123', '0xa456', '0x0'], [True, True, False], [0, 0, 14])
    """
    if not isinstance(mem, GuestMemory):
        raise TypeError(f"mem must be an mmu.GuestMemory, not {type(mem).__name__}")
    mode = paging_mode(regs)
    access = check_access(access)
    cpl = check_int("cpl", cpl, 0, 4)
    maxphyaddr = check_int("maxphyaddr", maxphyaddr, 32, MAX_PHYS_BITS + 1)
    for name, flag in (("set_ad", set_ad), ("gbpages", gbpages)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, not {type(flag).__name__}")
    g = _as_gvas(gvas)
    n = len(g)
    gpa = np.zeros(n, dtype=_U64)
    ok = np.zeros(n, dtype=bool)
    vector = np.zeros(n, dtype=np.uint8)
    error_code = np.zeros(n, dtype=np.uint32)
    level = np.zeros(n, dtype=np.uint8)
    page_size = np.zeros(n, dtype=_U64)
    out = (gpa, ok, vector, error_code, level, page_size)

    if mode == PagingMode.NONE:
        gpa[:] = g
        ok[:] = True
    else:
        fmt = _format(regs, mode, maxphyaddr, gbpages)
        sensitive = _pdpt_range(regs, fmt) if set_ad else None
        start = 0
        while start < n:
            # A/D writes never change a bit any later walk's verdict depends on, except
            # in the PDPT itself (PAE, bits 5-6 reserved there) -- see _walk_lanes.
            # When a successful walk writes into the PDPT, lanes after it are redone.
            start = _walk_lanes(mem, regs, fmt, g, start, access, cpl, set_ad, out, sensitive)
    return BatchResult(g, *out)


def _pdpt_range(regs: Regs, fmt: _Format) -> tuple[int, int] | None:
    """The 32 bytes holding the four PAE PDPTEs (CR3 bits 31:5), or None."""
    if fmt.pdpte_rsvd is None:
        return None
    base = regs.cr3 & 0xFFFF_FFE0
    return base, base + 32


def _walk_lanes(mem, regs, fmt, g, start, access, cpl, set_ad, out, sensitive) -> int:
    """Walk lanes ``start..`` on the current memory, fill ``out``, write A/D.

    Returns the first lane not finished (len(g) when all are).

    Why reading every lane's entries before any lane's A/D write is exact: the scalar
    loop lets walk i see the A/D bits set by walks j < i, and nothing else differs
    (walks write nothing but A/D).  A (bit 5) and D (bit 6) are not P, R/W, U/S, PS,
    XD, a protection key or an address bit, and no reserved mask of a table entry
    includes them -- so they cannot change any later verdict, GPA or level.  What they
    do change is whether a later walk *needs* to write, which only matters for
    ``mem.writes``; _write_ad counts that in lane order.  The one exception is a PAE
    PDPTE, where bits 5-8 are reserved: if a successful walk sets A/D inside the
    PDPT (possible only when the PDPT's frame doubles as a page table or is mapped
    through one), every later lane must see it, so we stop after that lane and let
    the caller restart the remaining lanes on the updated memory.  A bit is set at
    most once, so this restarts at most 8 times (4 PDPTEs x A, D).
    """
    gpa, ok, vector, error_code, level, page_size = out
    n = len(g)
    gv = g[start:]
    m = len(gv)
    lane = np.arange(start, n)
    write = access == "write"
    fetch = access == "fetch"
    pfec = ((PFErr.WR if write else 0) | (PFErr.US if cpl == 3 else 0)
            | (PFErr.ID if fetch and (regs.nx or regs.smep) else 0))

    def fault(idx: np.ndarray, code: int, lvl: int) -> None:
        vector[lane[idx]] = PF_VECTOR
        error_code[lane[idx]] = pfec | code
        level[lane[idx]] = lvl

    live = np.arange(m)
    if fmt.levels[0] >= 4:
        # Canonical check: bits 63:47 (or 63:56) must all equal bit 47 (or 56).
        top = _page_shift(fmt, fmt.levels[0]) + fmt.index_bits - 1
        hi = gv >> _U64(top)
        canon = (hi == 0) | (hi == _U64((1 << (64 - top)) - 1))
        bad = np.flatnonzero(~canon)
        vector[lane[bad]] = GP_VECTOR
        live = live[canon]

    acc = np.full(m, 7, dtype=np.uint8)
    # Entry addresses per level (and the leaf), for A/D; 0 = not used.
    ea_of = {}
    esize = fmt.esize
    if fmt.pdpte_rsvd is not None:
        base = np.full(len(live), regs.cr3 & 0xFFFF_FFE0, dtype=_U64)
        ea = base + ((gv[live] >> _U64(30)) & _U64(3)) * _U64(8)
        e = _gather(mem, ea, 8)
        present = (e & _U64(1)) != 0
        fault(live[~present], 0, 3)
        live, e = live[present], e[present]
        rsvd = (e & _U64(fmt.pdpte_rsvd)) != 0
        fault(live[rsvd], PFErr.P | PFErr.RSVD, 3)
        live, e = live[~rsvd], e[~rsvd]
        base = e & _U64(fmt.addr_mask)
    else:
        base = np.full(len(live), regs.cr3 & fmt.addr_mask, dtype=_U64)

    leaf_lanes, leaf_e, leaf_lvl = [], [], []
    imask = _U64((1 << fmt.index_bits) - 1)
    for lvl in fmt.levels:
        if not len(live):
            break
        shift = _U64(_page_shift(fmt, lvl))
        ea = base + ((gv[live] >> shift) & imask) * _U64(esize)
        e = _gather(mem, ea, esize)
        present = (e & _U64(PTE.P)) != 0
        fault(live[~present], 0, lvl)
        live, e, ea = live[present], e[present], ea[present]
        ps = (e & _U64(PTE.PS)) != 0
        mask = np.where(ps, _U64(fmt.rsvd[(1, lvl)]), _U64(fmt.rsvd[(0, lvl)]))
        rsvd = (e & mask) != 0
        fault(live[rsvd], PFErr.P | PFErr.RSVD, lvl)
        keep = ~rsvd
        live, e, ea, ps = live[keep], e[keep], ea[keep], ps[keep]
        ea_of[lvl] = (live, ea)
        # KVM's pte_access: AND of W and U, and of not-XD (exec), across levels.
        a = (e & _U64(ACC_WRITE_MASK | ACC_USER_MASK)).astype(np.uint8)
        if fmt.nx:
            a |= ((e >> _U64(63)) ^ _U64(1)).astype(np.uint8)
        else:
            a |= ACC_EXEC_MASK
        acc[live] &= a
        leaf = np.ones(len(live), dtype=bool) if lvl == 1 else (
            ps if lvl in fmt.large else np.zeros(len(live), dtype=bool))
        leaf_lanes.append(live[leaf])
        leaf_e.append(e[leaf])
        leaf_lvl.append(np.full(int(leaf.sum()), lvl, dtype=np.uint8))
        live = live[~leaf]
        base = e[~leaf] & _U64(fmt.addr_mask)

    if not leaf_lanes:
        return n
    ll = np.concatenate(leaf_lanes)
    le = np.concatenate(leaf_e)
    lv = np.concatenate(leaf_lvl)
    # Permission check at the leaf (permission_fault, mmu.h).
    perm = _permission_table(regs, access, cpl)[acc[ll]]
    pk = np.zeros(len(ll), dtype=bool)
    pkt = _pkey_table(regs, fmt.mode, access, cpl)
    if pkt is not None:
        user = (acc[ll] & ACC_USER_MASK) != 0
        key = ((le >> _U64(PTE_PKEY_SHIFT)) & _U64(0xF)).astype(np.intp)
        pk = pkt[user.astype(np.intp), key]
    bad = perm | pk
    fault(ll[bad], PFErr.P, 0)
    level[lane[ll[bad]]] = lv[bad]
    error_code[lane[ll[pk]]] |= np.uint32(PFErr.PK)
    good = ~bad
    gl, ge, glv = ll[good], le[good], lv[good]
    gsz_shift = np.where(glv == 1, PAGE_SHIFT, PAGE_SHIFT + fmt.index_bits * (glv.astype(np.int64) - 1))
    size = _U64(1) << gsz_shift.astype(_U64)
    off = gv[gl] & (size - _U64(1))
    if esize == 4:
        frame = ge & _U64(_ADDR32) & ~(size - _U64(1))
        # PSE-36: PDE bits 16:13 are PA bits 35:32 of a 4 MiB page (pse36_gfn_delta).
        pse36 = np.where(glv == 2, ((ge >> _U64(13)) & _U64(0xF)) << _U64(32), _U64(0))
        frame |= pse36
    else:
        frame = ge & _U64(_ADDR64) & ~(size - _U64(1))
    lanes = lane[gl]
    gpa[lanes] = frame | off
    ok[lanes] = True
    level[lanes] = glv
    page_size[lanes] = size

    if not set_ad or not len(gl):
        return n
    # A on every entry used by a successful walk, D on the leaf of a write.
    done = np.zeros(m, dtype=bool)
    done[gl] = True
    wd = np.zeros(m, dtype=bool)
    if write:
        wd[gl] = True
    leaf_level_of = np.zeros(m, dtype=np.uint8)
    leaf_level_of[gl] = glv
    eas, bits, who = [], [], []
    for lvl, (lanes_l, ea_l) in ea_of.items():
        sel = done[lanes_l]
        lanes_l, ea_l = lanes_l[sel], ea_l[sel]
        b = np.full(len(lanes_l), int(PTE.A), dtype=_U64)
        is_leaf_d = wd[lanes_l] & (leaf_level_of[lanes_l] == lvl)
        b[is_leaf_d] |= _U64(PTE.D)
        eas.append(ea_l)
        bits.append(b)
        who.append(lanes_l)
    ea_all = np.concatenate(eas)
    bits_all = np.concatenate(bits)
    who_all = np.concatenate(who)
    stop = n
    if sensitive is not None:
        lo, hi = sensitive
        hit = (ea_all >= _U64(lo & ~7)) & (ea_all < _U64(hi))
        if hit.any():
            # Does any of these writes change the PDPT?  Check in lane order.
            cur = _gather(mem, ea_all[hit], 8)
            changes = (cur & bits_all[hit]) != bits_all[hit]
            if changes.any():
                first = int(who_all[hit][changes].min())
                stop = start + first + 1
                # Lanes after `first` are recomputed by the caller; clear them.
                redo = np.arange(stop, n)
                for arr in out:
                    arr[redo] = 0
                keep = who_all <= first
                ea_all, bits_all, who_all = ea_all[keep], bits_all[keep], who_all[keep]
    _write_ad(mem, ea_all, bits_all, who_all, esize)
    return stop

