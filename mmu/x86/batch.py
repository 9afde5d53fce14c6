"""The guest page walk, vectorised over many linear addresses with numpy.

``walk_many(mem, regs, gvas, access)`` gives, for every ``gvas[i]``, exactly what
:func:`mmu.x86.walker.walk` gives for that address when the scalar walks are run one after
the other, in order, on the same memory -- including the accessed/dirty (A/D) bits
written back, so memory after the batch equals memory after the scalar loop.

The rules are the scalar walker's, which are the SDM's (Vol. 3A ch. 4) as KVM's
``FNAME(walk_addr_generic)`` (arch/x86/kvm/mmu/paging_tmpl.h, 5.19-6.4) applies them:

* 32-bit paging (4-byte entries, 4 MiB pages with CR4.PSE and PSE-36), PAE paging
  (the four PDPTEs, 2 MiB pages), 4- and 5-level paging (1 GiB pages when the guest has
  GBPAGES), and paging off (gpa = gva mod 2**32); outside long mode the linear address
  is 32 bits wide;
* a non-canonical address is #GP(0) before any table is read;
* a not-present entry is #PF with P=0; a reserved bit (the walker's
  :func:`~mmu.x86.walker.entry_format`, i.e. ``__reset_rsvds_bits_mask``, facts 7.5) is
  #PF with P|RSVD -- except in a PAE PDPTE, which is #GP(0) (``load_pdptrs`` would
  have refused it at MOV to CR3) and which grants no rights and gets no A bit;
* permissions are the AND over all levels (KVM's ``pte_access``), checked once at the
  leaf the way ``permission_fault`` does (mmu.h): U/S, R/W with CR0.WP, XD, SMEP,
  SMAP with RFLAGS.AC, then protection keys from PKRU (IA-32e paging with CR4.PKE);
* the #PF error code adds W/R, U/S and I/D; I/D as the SDM (4.7) and ``walk`` have
  it: with CR4.SMEP, or with EFER.NXE in PAE/IA-32e paging.  (KVM's paging_tmpl.h
  tests ``is_efer_nx`` alone, so it also sets I/D for 32-bit paging with NXE=1.)
* A/D bits are written only when a walk succeeds (``FNAME(update_accessed_dirty_bits)``).

How it is vectorised: the walk goes level by level over the *lanes* (addresses) still
walking.  A level's tables are the distinct frames the previous level's entries point at
(the root table first); each live lane's entry is a key (table number, index), and the
level works on the *distinct* keys: their entries are read with one numpy view of
``mem.frame(fn)`` per table (a missing frame reads as zero), the present / reserved /
leaf tests and the entry's ACC bits are computed once per entry, and every lane picks
its entry's verdict up with one array lookup.  Because ``access`` and ``cpl`` are the
same for every lane, the permission check is an 8-entry table indexed by the lane's
access bits (the kernel's ``permissions[]`` byte for this PFEC), and the protection-key
check a 2 x 16 table indexed by (user page, pkey).  A/D bits are written back per
distinct entry when no table frame serves two levels (the usual case), and per
(lane, entry) in lane order when one does (self-maps, a PAE PDPT inside a table).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from mmu.x86.bits import (ACC_ALL, ACC_EXEC_MASK, ACC_USER_MASK, ACC_WRITE_MASK, GP_VECTOR,
                   MAX_PHYS_BITS, PAGE_SHIFT, PF_VECTOR, PTE, PTE_PKEY_SHIFT, PFErr,
                   check_int)
from mmu.x86.memory import GuestMemory
from mmu.x86.regs import PagingMode, Regs
# The walker's entry formats are the one source of the reserved-bit masks (like
# the kernel's rsvd_bits_mask, shared by everything that checks a gpte), and its
# CR3 check is what MOV to CR3 would refuse; the batch reuses both.
from mmu.x86.walker import EntryFormat, check_walk_args, entry_format, root_table

__all__ = ["walk_many", "BatchResult", "BatchElement"]

_U64 = np.uint64
_PAGE_MASK = (1 << PAGE_SHIFT) - 1
#: Bits 51:12 -- the address field of an 8-byte entry (PT64_BASE_ADDR_MASK).
_ADDR64 = ((1 << MAX_PHYS_BITS) - 1) & ~_PAGE_MASK
#: Bits 31:12 -- the address field of a 4-byte entry (PT32_BASE_ADDR_MASK).
_ADDR32 = 0xFFFF_F000



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
        if type(v) is not int or not 0 <= v < 1 << 64:
            # The rule every entry point follows (bits.check_int): any integer type,
            # numpy's included, never bool or float -- walk() takes the same values.
            v = check_int(f"gvas[{i}]", v, 0, 1 << 64)
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



def _distinct(key: np.ndarray, space: int) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct keys, each lane's position among them), keys in ``0..space-1``.

    ``np.unique(key, return_inverse=True)`` -- but when the key space is not much larger
    than the number of lanes, a mark array does it without sorting."""
    if space > 4 * len(key) + 4096:
        return np.unique(key, return_inverse=True)
    seen = np.zeros(space, dtype=bool)
    seen[key] = True
    uk = np.flatnonzero(seen)
    rank = np.empty(space, dtype=np.intp)
    rank[uk] = np.arange(len(uk))
    return uk, rank[key]


def _node_runs(uk: np.ndarray, index_bits: int, nodes: int):
    """Yield (table number, start, end): the runs of the sorted keys ``uk`` (table
    number << index_bits | slot) that fall in each table."""
    if nodes == 1:
        yield 0, 0, len(uk)
        return
    node = uk >> index_bits
    starts = np.flatnonzero(np.concatenate(([True], node[1:] != node[:-1])))
    ends = np.append(starts[1:], len(uk))
    yield from zip(node[starts].tolist(), starts.tolist(), ends.tolist())


def _read_entries(mem: GuestMemory, bases: np.ndarray, uk: np.ndarray, index_bits: int,
                  esize: int) -> np.ndarray:
    """The entries at keys ``uk`` (sorted; table number << index_bits | slot) of the
    tables at addresses ``bases``, as uint64.

    One numpy view per table frame; an unallocated frame reads as zeros, as
    :class:`GuestMemory` promises.  A table base need not be frame-aligned (the PAE
    PDPT is 32-byte aligned)."""
    out = np.zeros(len(uk), dtype=_U64)
    dt = "<u8" if esize == 8 else "<u4"
    slot = uk & ((1 << index_bits) - 1)
    for t, s, e in _node_runs(uk, index_bits, len(bases)):
        base = int(bases[t])
        frame = mem.frame(base >> PAGE_SHIFT)
        if frame is not None:
            out[s:e] = np.frombuffer(frame, dtype=dt)[(base & _PAGE_MASK) // esize + slot[s:e]]
    return out


@dataclasses.dataclass(eq=False)
class _Level:
    """What one level of a batch read, kept for the A/D write-back.

    ``bases``: the level's table addresses; ``uk``: the distinct entries used, as
    sorted keys (table number << index_bits | slot); ``e``: their values; ``leaf``:
    which of them are leaves; ``lanes``: the lanes that read this level, and ``inv``
    the position in ``uk`` of each one's entry; ``ad``: whether the level gets A/D
    (not a PAE PDPTE)."""

    level: int
    bases: np.ndarray
    lanes: np.ndarray
    inv: np.ndarray
    uk: np.ndarray
    e: np.ndarray
    leaf: np.ndarray
    ad: bool

    def entry_addrs(self, index_bits: int, esize: int) -> np.ndarray:
        """Guest-physical address of each entry of ``uk``."""
        slot = (self.uk & ((1 << index_bits) - 1)).astype(_U64)
        return self.bases[self.uk >> index_bits] + slot * _U64(esize)


def _write_ad_levels(mem: GuestMemory, levels: list[_Level], done: np.ndarray, write: bool,
                     index_bits: int, esize: int) -> None:
    """A/D write-back when no table frame serves two levels: per distinct entry.

    Every successful walk through an entry of a level wants the same bits there: A,
    plus D when the entry is a leaf (its own PS bit, or level 1) and the access a
    write.  So the first such walk in lane order writes the entry if it lacks one of
    them, and the later ones find them set: one write per entry that changes, which
    is what the scalar loop's ``mem.writes`` counts.  Nothing written is read by
    another level, so the order of the levels does not matter either.
    """
    a, ad = _U64(PTE.A), _U64(PTE.A | PTE.D)
    dt = "<u8" if esize == 8 else "<u4"
    for lv in levels:
        if not lv.ad:
            continue
        ok = done[lv.lanes]
        if ok.all():
            used = np.ones(len(lv.uk), dtype=bool)
        else:
            used = np.zeros(len(lv.uk), dtype=bool)
            used[lv.inv[ok]] = True
        want = np.where(lv.leaf, ad, a) if write else a
        ch = np.flatnonzero(used & ((lv.e & want) != want))
        mem.writes += len(ch)
        if not len(ch):
            continue
        new = lv.e[ch] | (want[ch] if write else want)
        uk = lv.uk[ch]
        slot = uk & ((1 << index_bits) - 1)
        for t, s, e in _node_runs(uk, index_bits, len(lv.bases)):
            base = int(lv.bases[t])
            view = np.frombuffer(mem.frame(base >> PAGE_SHIFT), dtype=dt)
            view[(base & _PAGE_MASK) // esize + slot[s:e]] = new[s:e]


# ---------------------------------------------------------------------------
# The walk
# ---------------------------------------------------------------------------

def walk_many(mem: GuestMemory, regs: Regs, gvas, access: str, cpl: int = 0,
              maxphyaddr: int = 52, *, set_ad: bool = True, gbpages: bool = True) -> BatchResult:
    """Walk every address of ``gvas``; element i equals ``walk(mem, regs, gvas[i], ...)``
    run in order on the same memory.  Arguments are :func:`mmu.x86.walker.walk`'s, with
    ``gvas`` a 1-D integer array or a sequence of ints (0 <= gva < 2**64).

    >>> from mmu import GuestMemory, make_regs
    >>> mem = GuestMemory()
    >>> for table, entry in ((0x1000, 0x2003), (0x2000, 0x3003), (0x3000, 0x4003),
    ...                      (0x4000, 0x9003)):
    ...     mem.write_u64(table, entry)           # PML4E, PDPTE, PDE, PTE: P|RW
    >>> r = walk_many(mem, make_regs("4-level", cr3=0x1000), [0x123, 0x1000, 1 << 63], "read")
    >>> [hex(g) for g in r.gpa], r.ok.tolist(), r.vector.tolist(), r.level.tolist()
    (['0x9123', '0x0', '0x0'], [True, False, False], [0, 14, 13], [1, 1, 0])
    """
    mode, cpl, maxphyaddr = check_walk_args(mem, regs, access, cpl, maxphyaddr, set_ad, gbpages)
    g = _as_gvas(gvas)
    n = len(g)
    out = _Out(n)
    if mode == PagingMode.NONE:
        out.gpa[:] = g & _U64(0xFFFF_FFFF)      # a 32-bit linear address is the address
        out.ok[:] = True
        return out.result(g)
    root = root_table(regs, mode, maxphyaddr)   # ValueError for a CR3 MOV would refuse
    fmt = entry_format(mode, maxphyaddr, regs.nx and mode != PagingMode.BIT32, regs.pse,
                       gbpages)
    # Outside long mode the linear address is 32 bits wide (walk() takes gva mod 2**32).
    walked = g if mode >= PagingMode.LEVEL4 else g & _U64(0xFFFF_FFFF)
    pdpt = (root, root + 32) if fmt.pdpte_gp and set_ad else None
    start = 0
    while start < n:
        start = _walk_lanes(mem, regs, mode, fmt, root, walked, start, access, cpl, set_ad,
                            out, pdpt)
    return out.result(g)


class _Out:
    """The result arrays while they are being filled."""

    def __init__(self, n: int) -> None:
        self.gpa = np.zeros(n, dtype=_U64)
        self.ok = np.zeros(n, dtype=bool)
        self.vector = np.zeros(n, dtype=np.uint8)
        self.error_code = np.zeros(n, dtype=np.uint32)
        self.level = np.zeros(n, dtype=np.uint8)
        self.page_size = np.zeros(n, dtype=_U64)

    def clear(self, lanes: slice) -> None:
        for arr in (self.gpa, self.ok, self.vector, self.error_code, self.level, self.page_size):
            arr[lanes] = 0

    def fault(self, lanes: np.ndarray, vector: int, code: int, level: int | np.ndarray) -> None:
        self.vector[lanes] = vector
        self.error_code[lanes] = code
        self.level[lanes] = level

    def result(self, g: np.ndarray) -> BatchResult:
        return BatchResult(g, self.gpa, self.ok, self.vector, self.error_code, self.level,
                           self.page_size)


# Per-entry verdicts of one level, packed with the entry's ACC bits as code << 3 | acc.
_NOT_PRESENT, _RSVD, _LEAF, _TABLE = 0, 1, 2, 3


def _walk_lanes(mem: GuestMemory, regs: Regs, mode: PagingMode, fmt: EntryFormat, root: int,
                g: np.ndarray, start: int, access: str, cpl: int, set_ad: bool, out: _Out,
                pdpt: tuple[int, int] | None) -> int:
    """Walk lanes ``start..`` on the current memory, fill ``out``, write A/D bits.

    Returns the first lane not finished (``len(g)`` when all are).

    Each level works on the *distinct* entries the live lanes use (see :class:`_Level`):
    they are read, tested for present / reserved / leaf and turned into ACC bits once,
    and each lane picks up its entry's verdict with one lookup.

    Why reading every lane's entries before any lane's A/D write gives the scalar
    loop's answers: in the loop, walk i sees the A/D bits set by walks j < i and
    nothing else differs (walks write nothing but A/D).  A (bit 5) and D (bit 6) are
    not P, R/W, U/S, PS, XD, a protection key or an address bit, and no reserved mask
    of a page-table entry covers them -- so they change no later verdict, GPA or
    level.  What they do change is whether a later walk still *needs* to write,
    which only shows in ``mem.writes``; :func:`_write_ad_levels` and
    :func:`_write_ad` count that in lane order.
    The one exception is a PAE PDPTE, where bits 5-8 are reserved (#GP in the
    walker): if a successful walk sets A or D *inside the PDPT* (possible only when
    the PDPT's frame doubles as a page table), later lanes must see it, so we keep
    the lanes up to that walk and return, and the caller restarts the rest on the
    updated memory.  Each of the 4 PDPTEs x {A, D} can change once, so there are at
    most 8 restarts.
    """
    n = len(g)
    gv = g[start:]
    m = len(gv)
    write = access == "write"
    fetch = access == "fetch"
    # SDM 4.7 (as walk() does): I/D only when a fetch can fault for a paging reason.
    pfec = int((PFErr.WR if write else 0) | (PFErr.US if cpl == 3 else 0)
               | (PFErr.ID if fetch and (regs.smep or (mode >= PagingMode.PAE and regs.nx))
                  else 0))
    live = np.arange(m)
    gl = gv                                   # the live lanes' addresses
    if mode >= PagingMode.LEVEL4:
        # Canonical: bits 63:47 (63:56 with LA57) all equal -> else #GP(0), no table read.
        va_bits = 57 if mode == PagingMode.LEVEL5 else 48
        top = gv >> _U64(va_bits - 1)
        canon = (top == 0) | (top == _U64((1 << (65 - va_bits)) - 1))
        if not canon.all():
            out.fault(start + live[~canon], GP_VECTOR, 0, 0)
            live, gl = live[canon], gv[canon]

    esize = fmt.entry_size
    imask = _U64((1 << fmt.index_bits) - 1)
    addr_mask = _U64(_ADDR32 if esize == 4 else _ADDR64)
    acc = np.full(len(live), ACC_ALL, dtype=np.uint8)    # per live lane
    bases = np.array([root], dtype=_U64)      # the tables of this level
    node = None                               # each live lane's table (None: all in bases[0])
    levels: list[_Level] = []
    leaf_lanes, leaf_e, leaf_acc, leaf_lvl = [], [], [], []
    for lvl in range(fmt.root_level, 0, -1):
        if not len(live):
            break
        idx = ((gl >> _U64(fmt.shift(lvl))) & imask).astype(np.intp)
        key = idx if node is None else (node << fmt.index_bits) | idx
        uk, inv = _distinct(key, len(bases) << fmt.index_bits)
        e = _read_entries(mem, bases, uk, fmt.index_bits, esize)
        # The present / reserved / leaf tests of walk(), once per distinct entry.
        if lvl in fmt.large_levels:
            large = (e & _U64(PTE.PS)) != 0
            mask = np.where(large, _U64(fmt.rsvd[1][lvl]), _U64(fmt.rsvd[0][lvl]))
            leaf = large
        else:
            mask = _U64(fmt.rsvd[0][lvl])
            leaf = np.full(len(e), lvl == 1)
        code = np.where(leaf, np.uint8(_LEAF), np.uint8(_TABLE))
        code[(e & mask) != 0] = _RSVD
        code[(e & _U64(PTE.P)) == 0] = _NOT_PRESENT
        pdpte = fmt.pdpte_gp and lvl == 3
        if pdpte:   # a PAE PDPTE grants no rights and has no A bit
            packed = (code << 3) | np.uint8(ACC_ALL)
        else:
            # FNAME(gpte_access): P/RW/US with XD folded onto bit 0 (ACC_EXEC).
            packed = (code << 3) | ((e & _U64(ACC_ALL)) ^ (e >> _U64(63))).astype(np.uint8)
        levels.append(_Level(lvl, bases, live, inv, uk, e, code == _LEAF, not pdpte))
        lane = packed[inv]
        acc &= lane
        lo, hi = int(code.min()), int(code.max())
        lcode = lane >> 3 if lo != hi else None           # None: every lane has `lo`
        if lo <= _RSVD:
            # A reserved bit in a PAE PDPTE is #GP(0): load_pdptrs would have refused it.
            rsvd = (GP_VECTOR, 0) if pdpte else (PF_VECTOR, pfec | PFErr.P | PFErr.RSVD)
            for c, (vector, ec) in ((_NOT_PRESENT, (PF_VECTOR, pfec)), (_RSVD, rsvd)):
                hit = (live if lo == c else live[:0]) if lcode is None else live[lcode == c]
                out.fault(start + hit, vector, ec, lvl)
        if lo <= _LEAF <= hi:
            sel = slice(None) if lcode is None else lcode == _LEAF
            leaf_lanes.append(live[sel])
            leaf_e.append(e[inv[sel]])
            leaf_acc.append(acc[sel])
            leaf_lvl.append(np.full(len(leaf_lanes[-1]), lvl, dtype=np.uint8))
        if hi < _TABLE:
            break
        if lcode is not None:
            sel = lcode == _TABLE
            live, gl, acc, inv = live[sel], gl[sel], acc[sel], inv[sel]
        # The next level's tables: the distinct frames the table entries point at.
        tu = np.flatnonzero(code == _TABLE)
        bases, child = np.unique(e[tu] & addr_mask, return_inverse=True)
        if len(bases) == 1:
            node = None
        else:
            child_of = np.zeros(len(e), dtype=np.intp)
            child_of[tu] = child
            node = child_of[inv]

    if not leaf_lanes:
        return n
    ll = np.concatenate(leaf_lanes)
    le = np.concatenate(leaf_e)
    lv = np.concatenate(leaf_lvl)
    lacc = np.concatenate(leaf_acc)
    # permission_fault (mmu.h): one table lookup per lane, then protection keys.
    bad = _permission_table(regs, access, cpl)[lacc]
    pkt = _pkey_table(regs, mode, access, cpl)
    if pkt is not None:
        user_page = (lacc & ACC_USER_MASK) != 0
        key = ((le >> _U64(PTE_PKEY_SHIFT)) & _U64(0xF)).astype(np.intp)
        pk = pkt[user_page.astype(np.intp), key]
        bad |= pk
    if bad.any():
        out.fault(start + ll[bad], PF_VECTOR, pfec | PFErr.P, lv[bad])
        if pkt is not None:
            out.error_code[start + ll[pk]] |= np.uint32(PFErr.PK)
        good = ~bad
        gl, ge, glv = ll[good], le[good], lv[good]
    else:
        gl, ge, glv = ll, le, lv
    if len(glv) and glv.min() == glv.max():     # one leaf level (the usual): a scalar
        shift = _U64(PAGE_SHIFT + fmt.index_bits * (int(glv[0]) - 1))
    else:
        shift = (PAGE_SHIFT + fmt.index_bits * (glv.astype(np.int64) - 1)).astype(_U64)
    size = _U64(1) << shift
    if esize == 4:
        # A 4 MiB PDE: bits 31:22, plus PSE-36 PA bits 39:32 from bits 20:13
        # (walker.EntryFormat.leaf_base); a 4 KiB PTE: bits 31:12.
        frame = np.where(glv == 2, (ge & _U64(0xFFC0_0000))
                         | (((ge >> _U64(13)) & _U64(0xFF)) << _U64(32)), ge & addr_mask)
    else:
        frame = ge & addr_mask & ~(size - _U64(1))
    lanes = start + gl
    out.gpa[lanes] = frame | (gv[gl] & (size - _U64(1)))
    out.ok[lanes] = True
    out.level[lanes] = glv
    out.page_size[lanes] = size
    if not set_ad or not len(gl):
        return n

    # FNAME(update_accessed_dirty_bits): A in every entry of a successful walk, D in
    # the leaf of a write.
    done = np.zeros(m, dtype=bool)
    done[gl] = True
    frames = np.concatenate([lv_.bases >> _U64(PAGE_SHIFT) for lv_ in levels])
    if len(np.unique(frames)) == len(frames):
        # No table frame serves two levels, so a distinct entry of a level is a distinct
        # entry address and no write can land in a table another level reads.
        _write_ad_levels(mem, levels, done, write, fmt.index_bits, esize)
        return n
    # A frame at two levels (a self-map, or a PDPT inside a table): per (lane, entry).
    dirty_level = np.zeros(m, dtype=np.uint8)    # leaf level of a successful write
    if write:
        dirty_level[gl] = glv
    eas, bits, who = [], [], []
    for lv_ in levels:          # in level order, top first, as the walker writes
        if not lv_.ad:
            continue
        sel = done[lv_.lanes]
        lanes_l, ea_l = lv_.lanes[sel], lv_.entry_addrs(fmt.index_bits, esize)[lv_.inv[sel]]
        b = np.full(len(lanes_l), int(PTE.A), dtype=_U64)
        b[dirty_level[lanes_l] == lv_.level] |= _U64(PTE.D)
        eas.append(ea_l)
        bits.append(b)
        who.append(lanes_l)
    ea_all, bits_all, who_all = np.concatenate(eas), np.concatenate(bits), np.concatenate(who)
    stop = n
    if pdpt is not None:
        inside = (ea_all >= _U64(pdpt[0])) & (ea_all < _U64(pdpt[1]))
        if inside.any():
            # The first walk (in lane order) whose write changes a PDPTE.
            cur = _gather(mem, ea_all[inside], 8)
            changes = (cur & bits_all[inside]) != bits_all[inside]
            if changes.any():
                first = int(who_all[inside][changes].min())
                stop = start + first + 1
                out.clear(slice(stop, n))
                keep = who_all <= first
                ea_all, bits_all, who_all = ea_all[keep], bits_all[keep], who_all[keep]
    _write_ad(mem, ea_all, bits_all, who_all, esize)
    return stop
