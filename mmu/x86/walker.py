"""The guest page walker: one loop, five entry formats.

Follows ``arch/x86/kvm/mmu/paging_tmpl.h`` ``FNAME(walk_addr_generic)``, which the
kernel compiles three times (PTTYPE 32, 64 and EPT) from one template.  Here the
template parameter is an :class:`EntryFormat` value instead of a macro: entry size,
bits of index per level, the reserved-bit masks (``__reset_rsvds_bits_mask`` in
mmu.c, facts §7.5), where PS makes a leaf, and how an entry turns into KVM's
``ACC_*`` bits (``FNAME(gpte_access)``, facts §7.2).  :func:`_walk_tables` is the
only loop; :func:`walk` (x86 paging, SDM Vol. 3A ch. 4), :func:`ept_walk`
(SDM Vol. 3C 29.3) and :func:`npt_walk` add their own permission rules and fault
objects around it.

Rules the walk follows (SDM Vol. 3A 4.3-4.7), in the order a CPU applies them:

1. paging off: the linear address is the physical address (32 bits wide outside
   long mode);
2. IA-32e paging: a non-canonical address is #GP(0) before any table is read;
3. at each level, top down: not present -> #PF with P=0; a reserved bit set ->
   #PF with P=1|RSVD (for a PAE PDPTE: #GP, because MOV to CR3 would have refused
   to load it); otherwise AND the entry's rights into the running ``access_bits``;
4. at the leaf: U/S, R/W (CR0.WP), XD (EFER.NXE), SMEP, SMAP (RFLAGS.AC) and
   protection keys (CR4.PKE, PKRU) -> #PF with P=1;
5. on success only, set A in every entry used and D in the leaf of a write
   (``FNAME(update_accessed_dirty_bits)``).

Deliberate simplifications: accesses are 1 byte (never cross a page); implicit
supervisor accesses (GDT/IDT/TSS), CR4.PKS, CET shadow stacks, PCID/TLB and
AMD's reserved bit 8 in non-leaf entries are not modelled.
"""
from __future__ import annotations

import dataclasses
import functools

from mmu.x86.bits import (ACC_ALL, ACC_EXEC_MASK, ACC_USER_MASK, ACC_WRITE_MASK, EPT,
                   EPT_MEMTYPE_MASK, EPT_MEMTYPE_SHIFT, EPT_MEMTYPE_WB, GP_VECTOR,
                   PF_VECTOR, PTE, PTE_PKEY_SHIFT, MAX_PHYS_BITS, PFErr, check_access,
                   check_bool, check_int)
from mmu.x86.memory import GuestMemory
from mmu.x86.regs import CR0, CR4, EFER, PagingMode, Regs, paging_mode

__all__ = ["walk", "ept_walk", "npt_walk", "WalkResult", "Fault", "TraceStep",
           "EptViolation", "EptMisconfig", "EntryFormat", "entry_format", "ept_format", "root_table",
           "check_walk_args",
           "LEVEL_NAMES", "MIN_PHYS_BITS"]

#: Smallest MAXPHYADDR accepted (a CPU without PAE has 32 physical address bits).
MIN_PHYS_BITS = 32

#: SDM names of the entry at each level (EPT uses the same names, prefixed "EPT").
LEVEL_NAMES = {5: "PML5E", 4: "PML4E", 3: "PDPTE", 2: "PDE", 1: "PTE"}

_ADDR_MASK_8 = ((1 << MAX_PHYS_BITS) - 1) & ~0xFFF   # bits 51:12 of an 8-byte entry
_ADDR_MASK_4 = 0xFFFF_F000                           # bits 31:12 of a 4-byte entry
_PTE_FLAGS = int(PTE.P | PTE.RW | PTE.US | PTE.PWT | PTE.PCD | PTE.A | PTE.D | PTE.PS
                 | PTE.G | PTE.PAT_LARGE | PTE.XD)
_PTE_FLAGS_SMALL = _PTE_FLAGS & ~int(PTE.PAT_LARGE)   # bit 12 is an address bit there
_EPT_FLAGS = int(EPT.R | EPT.W | EPT.X | EPT.IPAT | EPT.PS | EPT.A | EPT.D | EPT.XU)
_PS = 1 << 7
# Plain-int copies of the flags the hot path tests: IntFlag arithmetic costs a
# microsecond per operation, which is most of a walk.
_EPT_R, _EPT_W, _EPT_X = int(EPT.R), int(EPT.W), int(EPT.X)
_E_P, _E_WR, _E_US, _E_RSVD, _E_ID, _E_PK = (int(b) for b in (
    PFErr.P, PFErr.WR, PFErr.US, PFErr.RSVD, PFErr.ID, PFErr.PK))
_CR0_WP, _CR4_PSE, _CR4_SMEP, _CR4_SMAP, _CR4_PKE = (int(b) for b in (
    CR0.WP, CR4.PSE, CR4.SMEP, CR4.SMAP, CR4.PKE))
_EFER_NXE = int(EFER.NXE)


def _bits(lo: int, hi: int) -> int:
    """Mask of bits hi:lo inclusive (the kernel's ``rsvd_bits(lo, hi)``); 0 if hi < lo."""
    return ((1 << (hi + 1)) - (1 << lo)) if hi >= lo else 0


def _size_label(size: int) -> str:
    return f"{size >> 30} GiB" if size >= 1 << 30 else (
        f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB")


# ---------------------------------------------------------------------------
# Result types (contract: docs/design.md "Guest walker")
# ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, slots=True)
class TraceStep:
    """One paging-structure entry the walk read (``walker->ptes[]`` in paging_tmpl.h)."""

    level: int
    name: str
    index: int
    entry_addr: int
    entry: int            # value read, before any A/D update
    flags: PTE | EPT      # decoded flag bits of ``entry``
    access_bits: int      # ACC_* accumulated after this level
    leaf: bool
    #: Why the walk stopped at this entry ("PDE not present", a reserved bit, ...),
    #: None for an entry the walk went through.  A faulting walk's trace ends with
    #: the entry that faulted, so a drawing of the walk can show it.
    stop: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Fault:
    """A guest-visible exception from the walk: #PF (14) or #GP (13)."""

    vector: int
    error_code: int
    level: int | None
    reason: str
    addr: int             # the faulting linear address (what CR2 gets for #PF)

    @property
    def pferr(self) -> PFErr:
        """The error code as PFErr bits (meaningful for #PF)."""
        return PFErr(self.error_code)


@dataclasses.dataclass(frozen=True, slots=True)
class EptViolation:
    """An EPT violation (exit reason 48).  ``qualification`` holds exit-qualification
    bits 0-5 (SDM Vol. 3C table 28-7): bit 0/1/2 = the access was a read/write/fetch,
    bit 3/4/5 = the AND of R/W/X over the EPT entries used (0 for a not-present
    entry).  Bits 7/8 (guest linear address valid / final translation) are the
    caller's to add: only the 2D walk knows them."""

    level: int | None
    reason: str
    addr: int             # the guest-physical address
    qualification: int
    vector: None = dataclasses.field(default=None, init=False)
    error_code: int = dataclasses.field(default=0, init=False)


@dataclasses.dataclass(frozen=True, slots=True)
class EptMisconfig:
    """An EPT misconfiguration (exit reason 49): a reserved bit, W without R, X-only
    without exec-only support, or a bad memory type in a leaf (SDM 29.3.3.1)."""

    level: int | None
    reason: str
    addr: int
    qualification: None = dataclasses.field(default=None, init=False)
    vector: None = dataclasses.field(default=None, init=False)
    error_code: int = dataclasses.field(default=0, init=False)


@dataclasses.dataclass(frozen=True, slots=True)
class WalkResult:
    gpa: int | None
    fault: Fault | EptViolation | EptMisconfig | None
    trace: tuple[TraceStep, ...]
    mode: PagingMode | None   # None for an EPT walk
    level: int | None         # level of the leaf: 1 = 4 KiB, 2 = 2/4 MiB, 3 = 1 GiB
    page_size: int | None
    access_bits: int
    pkey: int | None

    @property
    def ok(self) -> bool:
        return self.fault is None


# ---------------------------------------------------------------------------
# Entry formats: the template parameter
# ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class EntryFormat:
    """What the walk loop needs to know about one paging format.

    ``rsvd[large][level]`` is KVM's ``rsvd_bits_mask[bit7][level-1]``: the bits that
    must be 0 in a present entry at ``level``, in the row for a large-page leaf
    (``large=1``) or for a table pointer / 4 KiB leaf (``large=0``).  ``large_levels``
    are the levels where PS=1 makes the entry a leaf.
    """

    name: str
    root_level: int
    entry_size: int              # 4 or 8 bytes
    index_bits: int              # 10 for 4-byte entries, else 9
    rsvd: tuple[tuple[int, ...], tuple[int, ...]]
    large_levels: frozenset[int]
    maxphyaddr: int
    ept: bool = False
    nx: bool = False             # bit 63 is XD (EFER.NXE=1 in an 8-byte format)
    pse36_bits: int = 0          # PSE-36 address bits in a 4 MiB PDE (32-bit only)
    execonly: bool = False       # EPT: X-only entries allowed
    pdpte_gp: bool = False       # PAE: reserved bits in a PDPTE are #GP, no rights there

    def shift(self, level: int) -> int:
        return 12 + self.index_bits * (level - 1)

    def index(self, addr: int, level: int) -> int:
        return (addr >> self.shift(level)) & ((1 << self.index_bits) - 1)

    def entry_access(self, entry: int) -> int:
        """ACC_* bits one present entry grants (``FNAME(gpte_access)``)."""
        if self.ept:
            return ((ACC_WRITE_MASK if entry & _EPT_W else 0) | (ACC_EXEC_MASK if entry & _EPT_X else 0)
                    | (ACC_USER_MASK if entry & _EPT_R else 0))
        # ACC_EXEC sits on the P bit (1 for a present entry); XD clears it.
        return (entry & ACC_ALL) ^ ((entry >> 63) & 1)

    def is_present(self, entry: int) -> bool:
        return bool(entry & (7 if self.ept else 1))

    def table_addr(self, entry: int) -> int:
        return entry & (_ADDR_MASK_4 if self.entry_size == 4 else _ADDR_MASK_8)

    def leaf_base(self, entry: int, level: int) -> int:
        """Physical base of the page a leaf maps (PSE-36 for a 32-bit 4 MiB PDE)."""
        if self.entry_size == 4:
            if level == 2:
                return (entry & 0xFFC0_0000) | (((entry >> 13) & 0xFF) << 32)
            return entry & _ADDR_MASK_4
        return entry & _ADDR_MASK_8 & ~((1 << self.shift(level)) - 1)

    def decode(self, entry: int, large: bool) -> PTE | EPT:
        """Flag bits of an entry; bit 12 is PAT only in a large leaf (else an address bit)."""
        if self.ept:
            return _ept_flags(entry & _EPT_FLAGS)
        return _pte_flags(entry & (_PTE_FLAGS if large else _PTE_FLAGS_SMALL))


# Flag values come from a few thousand combinations: build each IntFlag once.
_pte_flags = functools.lru_cache(maxsize=8192)(PTE)
_ept_flags = functools.lru_cache(maxsize=4096)(EPT)
#: paging_mode per Regs value (Regs is frozen and hashable); refusals are not cached.
_mode_of = functools.lru_cache(maxsize=1024)(paging_mode)


@functools.lru_cache(maxsize=256)
def entry_format(mode: PagingMode, maxphyaddr: int = 52, nx: bool = True, pse: bool = True,
                 gbpages: bool = True) -> EntryFormat:
    """The x86 format for ``mode`` (``reset_guest_rsvds_bits_mask`` for the guest's
    EFER.NXE, CR4.PSE, GBPAGES and MAXPHYADDR; facts §7.5 and SDM tables 4-4..4-20)."""
    mode = PagingMode(mode)
    if mode == PagingMode.BIT32:
        # 4-byte entries: no XD, no MAXPHYADDR bits.  A 4 MiB PDE carries PA bits
        # 39:32 in bits 20:13 (PSE-36, width min(MAXPHYADDR, 40) - 32); the rest of
        # bits 21:13 are reserved.  With CR4.PSE=0 bit 7 is ignored (no large row).
        width = min(maxphyaddr, 40) - 32
        large = _bits(13 + width, 21)
        return EntryFormat("32-bit", 2, 4, 10, ((0, 0, 0), (0, 0, large)),
                           frozenset({2} if pse else ()), maxphyaddr, pse36_bits=width)
    if mode == PagingMode.PAE:
        high = _bits(maxphyaddr, 62) | (0 if nx else 1 << 63)
        pdpte = (1 << 63) | _bits(maxphyaddr, 62) | _bits(5, 8) | _bits(1, 2)
        small = (0, high, high, pdpte)
        return EntryFormat("PAE", 3, 8, 9, (small, (0, high, high | _bits(13, 20), pdpte)),
                           frozenset({2}), maxphyaddr, nx=nx, pdpte_gp=True)
    if mode in (PagingMode.LEVEL4, PagingMode.LEVEL5):
        high = _bits(maxphyaddr, 51) | (0 if nx else 1 << 63)
        no_gb = 0 if gbpages else _PS
        top = high | _PS                       # PS is reserved in PML4E and PML5E
        small = (0, high, high, high | no_gb, top, top)
        large = (0, high, high | _bits(13, 20), high | _bits(13, 29) | no_gb, top, top)
        return EntryFormat(mode.label, int(mode), 8, 9, (small, large), frozenset({2, 3}),
                           maxphyaddr, nx=nx)
    raise ValueError(f"mode {mode!r} has no paging-structure format (paging is off)")


@functools.lru_cache(maxsize=64)
def ept_format(levels: int = 4, maxphyaddr: int = 52, execonly: bool = False) -> EntryFormat:
    """The EPT format (``reset_rsvds_bits_mask_ept`` / ``__reset_rsvds_bits_mask_ept``,
    facts §7.5; SDM Vol. 3C 29.3.2).  Bits 63:52 are ignored in EPT entries."""
    high = _bits(maxphyaddr, 51)
    top = high | _bits(3, 7)
    small = (0, high, high | _bits(3, 6), high | _bits(3, 6), top, top)
    large = (0, high, high | _bits(12, 20), high | _bits(12, 29), top, top)
    return EntryFormat(f"EPT {levels}-level", levels, 8, 9, (small, large), frozenset({2, 3}),
                       maxphyaddr, ept=True, execonly=execonly)


def _rsvd_reason(fmt: EntryFormat, bad: int, level: int, large: bool) -> str:
    """Name the highest offending reserved bit of an entry in words."""
    b = bad.bit_length() - 1
    name = LEVEL_NAMES[level]
    if fmt.ept:
        name = "EPT " + name
    if b == 63 and fmt.pdpte_gp and level == 3:
        what = "bit 63 set (always reserved in a PDPTE)"
    elif b == 63:
        what = "bit 63 (XD) set with EFER.NXE=0"
    elif fmt.maxphyaddr <= b <= (62 if fmt.pdpte_gp else 51):
        what = f"bit {b} set above MAXPHYADDR ({fmt.maxphyaddr})"
    elif b == 7 and level >= 4:
        what = "bit 7 (PS) set, but there are no pages at this level"
    elif b == 7 and level == 3:
        what = "bit 7 (PS) set without 1 GiB page support"
    elif large:
        what = f"bit {b} reserved in a {_size_label(1 << fmt.shift(level))} leaf"
    else:
        what = f"bit {b} reserved"
    return f"RSVD: {what} in {name}"


# ---------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------

# Stop kinds of _walk_tables.
_NOT_PRESENT, _RSVD, _PDPTE_GP, _MISCONFIG = "not-present", "rsvd", "pdpte-gp", "misconfig"


def _walk_tables(mem: GuestMemory, fmt: EntryFormat, root: int, addr: int):
    """Walk from the table at ``root`` towards ``addr``.

    Returns ``(trace, acc, stop)`` where ``stop`` is None at a leaf (the last trace
    step) or ``(kind, level, reason)`` for the entry where the walk stopped (also the
    last trace step, with ``TraceStep.stop`` set to the reason).  Never
    loops more than ``fmt.root_level`` times, whatever the tables contain.
    """
    read = mem.read_u32 if fmt.entry_size == 4 else mem.read_u64
    trace: list[TraceStep] = []
    acc = ACC_ALL
    table = root
    level = fmt.root_level
    while True:
        index = fmt.index(addr, level)
        entry_addr = table + index * fmt.entry_size
        entry = read(entry_addr)
        name = LEVEL_NAMES[level]
        large = level in fmt.large_levels and bool(entry & _PS)
        stop = None
        if not fmt.is_present(entry):
            what = "not present (R=W=X=0)" if fmt.ept else "not present"
            stop = (_NOT_PRESENT, level, f"{'EPT ' if fmt.ept else ''}{name} {what}")
        elif entry & fmt.rsvd[large][level]:
            reason = _rsvd_reason(fmt, entry & fmt.rsvd[large][level], level, large)
            if fmt.pdpte_gp and level == 3:
                stop = (_PDPTE_GP, level, (
                    f"PAE PDPTE {index} has a reserved bit set ({reason[6:]}): loading the "
                    f"PDPTEs at MOV CR3 would have raised #GP"))
            else:
                stop = ((_MISCONFIG if fmt.ept else _RSVD), level, reason)
        elif fmt.ept:
            bad_reason = _ept_bad_xwr_mt(fmt, entry, level, large)
            if bad_reason:
                stop = (_MISCONFIG, level, bad_reason)
        if stop is not None:
            # The faulting entry was read too: keep it in the trace, marked.
            trace.append(TraceStep(level, name, index, entry_addr, entry,
                                   fmt.decode(entry, large), acc, False, stop[2]))
            return trace, acc, stop
        if not (fmt.pdpte_gp and level == 3):      # a PAE PDPTE grants no rights
            acc &= fmt.entry_access(entry)
        leaf = large or level == 1
        trace.append(TraceStep(level, name, index, entry_addr, entry, fmt.decode(entry, large), acc, leaf))
        if leaf:
            return trace, acc, None
        table = fmt.table_addr(entry)
        level -= 1


def _ept_bad_xwr_mt(fmt: EntryFormat, entry: int, level: int, leaf: bool) -> str | None:
    """``__is_bad_mt_xwr``: XWR combinations and leaf memory types the CPU refuses."""
    xwr = entry & 7
    name = "EPT " + LEVEL_NAMES[level]
    if xwr & _EPT_W and not xwr & _EPT_R:
        return f"EPT misconfiguration: {name} is writable but not readable (XWR={xwr:03b})"
    if xwr == _EPT_X and not fmt.execonly:
        return (f"EPT misconfiguration: {name} is execute-only (XWR=100) but the CPU does not "
                f"support execute-only EPT")
    if leaf or level == 1:
        mt = (entry & EPT_MEMTYPE_MASK) >> EPT_MEMTYPE_SHIFT
        if mt in (2, 3, 7):
            return f"EPT misconfiguration: {name} has reserved memory type {mt}"
    return None


def _set_accessed_dirty(mem: GuestMemory, fmt: EntryFormat, trace, write: bool,
                        a_bit: int, d_bit: int) -> None:
    """``FNAME(update_accessed_dirty_bits)``: A in every entry, D in the leaf of a write.

    The current value is re-read so that an entry used at two levels (a recursive
    table) keeps both updates; only entries whose bits change are written, with the
    entry's own width.
    """
    read, write_entry = ((mem.read_u32, mem.write_u32) if fmt.entry_size == 4
                         else (mem.read_u64, mem.write_u64))
    for step in trace:
        if fmt.pdpte_gp and step.level == 3:      # PAE PDPTEs have no A bit
            continue
        cur = read(step.entry_addr)
        new = cur | a_bit | (d_bit if (write and step.leaf) else 0)
        if new != cur:
            write_entry(step.entry_addr, new)


# ---------------------------------------------------------------------------
# x86 paging
# ---------------------------------------------------------------------------

def _check_maxphyaddr(maxphyaddr: object) -> int:
    return check_int("maxphyaddr", maxphyaddr, MIN_PHYS_BITS, MAX_PHYS_BITS + 1)


def root_table(regs: Regs, mode: PagingMode, maxphyaddr: int, name: str = "cr3") -> int:
    """The first table's address from CR3; refuse CR3 values MOV to CR3 would #GP on.

    ``name`` is what the error calls the register (``npt_walk`` passes "ncr3")."""
    cr3 = regs.cr3
    if mode in (PagingMode.BIT32, PagingMode.PAE):
        if cr3 >> 32:
            raise ValueError(f"{name}={cr3:#x}: CR3 is 32 bits wide outside long mode "
                             f"(allowed {name} < 0x100000000)")
        # MAXPHYADDR >= 32, so a 32-bit CR3 never has bits above it.
        return cr3 & (_ADDR_MASK_4 if mode == PagingMode.BIT32 else 0xFFFF_FFE0)
    if cr3 >> maxphyaddr:
        raise ValueError(f"{name}={cr3:#x} has bits set at or above MAXPHYADDR={maxphyaddr} "
                         f"(MOV to CR3 would #GP; allowed {name} < {1 << maxphyaddr:#x})")
    return cr3 & _ADDR_MASK_8


def check_walk_args(mem: object, regs: object, access: object, cpl: object,
                    maxphyaddr: object, set_ad: object, gbpages: object
                    ) -> tuple[PagingMode, int, int]:
    """The argument checks :func:`walk` and :func:`mmu.x86.batch.walk_many` share, so the
    twins accept and refuse the same values; returns (paging mode, cpl, maxphyaddr)."""
    if not isinstance(mem, GuestMemory):
        raise TypeError(f"mem must be an mmu.GuestMemory, not {type(mem).__name__}")
    if not isinstance(regs, Regs):
        raise TypeError(f"regs must be an mmu.Regs, not {type(regs).__name__}")
    mode = _mode_of(regs)
    check_access(access)
    cpl = check_int("cpl", cpl, 0, 4)
    maxphyaddr = _check_maxphyaddr(maxphyaddr)
    check_bool("set_ad", set_ad)
    check_bool("gbpages", gbpages)
    return mode, cpl, maxphyaddr


def walk(mem: GuestMemory, regs: Regs, gva: int, access: str, cpl: int = 0,
         maxphyaddr: int = 52, *, set_ad: bool = True, gbpages: bool = True) -> WalkResult:
    """Translate ``gva`` for an ``access`` ("read"/"write"/"fetch") at ``cpl``.

    Mirrors ``FNAME(walk_addr_generic)`` (paging_tmpl.h) with the permission check of
    ``permission_fault`` (mmu.h) done the SDM's way, rule by rule, so the reason can
    name the rule.  Guest faults are results (``WalkResult.fault``), never
    exceptions; impossible register states and bad arguments raise ValueError or
    TypeError.  Outside long mode the linear address is 32 bits wide, so ``gva`` is
    taken modulo 2**32 there.
    """
    mode, cpl, maxphyaddr = check_walk_args(mem, regs, access, cpl, maxphyaddr, set_ad, gbpages)
    gva = check_int("gva", gva, 0, 1 << 64)
    if mode == PagingMode.NONE:
        return WalkResult(gva & 0xFFFF_FFFF, None, (), mode, None, None, ACC_ALL, None)
    root = root_table(regs, mode, maxphyaddr)
    long_mode = mode >= PagingMode.LEVEL4
    nx = bool(regs.efer & _EFER_NXE)
    fmt = entry_format(mode, maxphyaddr, nx and mode != PagingMode.BIT32, bool(regs.cr4 & _CR4_PSE),
                       gbpages)
    if long_mode:
        return _walk_x86(mem, regs, fmt, root, gva, access, cpl, mode, set_ad, canonical=True)
    return _walk_x86(mem, regs, fmt, root, gva & 0xFFFF_FFFF, access, cpl, mode, set_ad,
                     canonical=False)


def _walk_x86(mem, regs, fmt, root, gva, access, cpl, mode, set_ad, *, canonical) -> WalkResult:
    write, fetch, user = access == "write", access == "fetch", cpl == 3
    long_mode = mode >= PagingMode.LEVEL4
    nx = bool(regs.efer & _EFER_NXE)
    err = (_E_WR if write else 0) | (_E_US if user else 0)
    # SDM 4.7: I/D is reported only when fetches can fault for a paging reason.
    if fetch and (regs.cr4 & _CR4_SMEP or (mode >= PagingMode.PAE and nx)):
        err |= _E_ID
    if canonical:
        va_bits = 57 if mode == PagingMode.LEVEL5 else 48
        top = gva >> (va_bits - 1)
        if top not in (0, (1 << (65 - va_bits)) - 1):
            fault = Fault(GP_VECTOR, 0, None,
                          f"#GP(0): {gva:#x} is not canonical for {mode.label} paging (bits "
                          f"63:{va_bits} must all equal bit {va_bits - 1})", gva)
            return WalkResult(None, fault, (), mode, None, None, 0, None)
    trace, acc, stop = _walk_tables(mem, fmt, root, gva)
    trace = tuple(trace)
    if stop is not None:
        kind, level, reason = stop
        if kind == _PDPTE_GP:
            fault = Fault(GP_VECTOR, 0, level, reason, gva)
        elif kind == _NOT_PRESENT:
            fault = Fault(PF_VECTOR, err, level, reason, gva)
        else:
            fault = Fault(PF_VECTOR, err | _E_P | _E_RSVD, level, reason, gva)
        return WalkResult(None, fault, trace, mode, None, None, acc, None)

    leaf = trace[-1]
    page_size = 1 << fmt.shift(leaf.level)
    pkey = (leaf.entry >> PTE_PKEY_SHIFT) & 0xF if long_mode and regs.cr4 & _CR4_PKE else None
    reasons, pk = _x86_permission(regs, trace, acc, access, cpl, pkey)
    if reasons:
        code = err | _E_P | (_E_PK if pk else 0)
        fault = Fault(PF_VECTOR, code, leaf.level, "; ".join(reasons), gva)
        return WalkResult(None, fault, trace, mode, leaf.level, page_size, acc, pkey)
    if set_ad:
        _set_accessed_dirty(mem, fmt, trace, write, int(PTE.A), int(PTE.D))
    gpa = fmt.leaf_base(leaf.entry, leaf.level) | (gva & (page_size - 1))
    return WalkResult(gpa, None, trace, mode, leaf.level, page_size, acc, pkey)


def _first_without(trace, bit: int) -> str:
    """Name of the first level whose entry lacks an ACC bit (where the right was lost)."""
    prev = ACC_ALL
    for step in trace:
        if prev & bit and not step.access_bits & bit:
            return step.name
        prev = step.access_bits
    return "?"


def _x86_permission(regs: Regs, trace, acc: int, access: str, cpl: int,
                    pkey: int | None) -> tuple[list[str], bool]:
    """SDM 4.6 access rights and 4.6.2 protection keys, one reason per broken rule.

    Equivalent to KVM's ``permissions[]`` bitmap plus ``pkru_mask``
    (``update_permission_bitmask`` / ``update_pkru_bitmask``, facts §7.3-7.4).
    """
    write, fetch, user = access == "write", access == "fetch", cpl == 3
    user_page = bool(acc & ACC_USER_MASK)
    wp = bool(regs.cr0 & _CR0_WP)
    kind = "user" if user else "supervisor"
    reasons = []
    if user and not user_page:
        reasons.append(f"U/S: user-mode {access} of a supervisor page "
                       f"(U/S=0 in {_first_without(trace, ACC_USER_MASK)})")
    if write and not acc & ACC_WRITE_MASK and (user or wp):
        why = "" if user else " with CR0.WP=1"
        reasons.append(f"R/W: {kind} write to a read-only page{why} "
                       f"(R/W=0 in {_first_without(trace, ACC_WRITE_MASK)})")
    if fetch and not acc & ACC_EXEC_MASK:
        reasons.append(f"XD: {kind} fetch from an execute-disable page "
                       f"(XD=1 in {_first_without(trace, ACC_EXEC_MASK)})")
    if fetch and not user and user_page and regs.cr4 & _CR4_SMEP:
        reasons.append("SMEP: supervisor fetch from a user page (U/S=1 at every level)")
    if not fetch and not user and user_page and regs.cr4 & _CR4_SMAP and not regs.ac:
        reasons.append(f"SMAP: supervisor {access} of a user page with RFLAGS.AC=0 "
                       f"(U/S=1 at every level)")
    pk = False
    if pkey is not None and user_page and not fetch:
        ad = (regs.pkru >> (2 * pkey)) & 1
        wd = (regs.pkru >> (2 * pkey + 1)) & 1
        if ad:
            pk = True
            reasons.append(f"PK: {access} of a user page with key {pkey} (in the "
                           f"{trace[-1].name}) whose PKRU.AD{pkey}=1")
        elif write and wd and (user or wp):
            pk = True
            reasons.append(f"PK: {kind} write to a user page with key {pkey} (in the "
                           f"{trace[-1].name}) whose PKRU.WD{pkey}=1"
                           + ("" if user else " and CR0.WP=1"))
    return reasons, pk


# ---------------------------------------------------------------------------
# Two-dimensional paging: EPT (Intel) and NPT (AMD)
# ---------------------------------------------------------------------------

def ept_walk(mem: GuestMemory, eptp: int, gpa: int, access: str, *, levels: int | None = None,
             ad: bool | None = None, maxphyaddr: int = 52, execonly: bool = False,
             set_ad: bool = True) -> WalkResult:
    """Translate a guest-physical address through EPT (SDM Vol. 3C 29.3).

    ``FNAME(walk_addr_generic)`` with PTTYPE_EPT.  ``levels`` and ``ad`` default to
    what the EPTP says (bits 5:3 = walk length - 1, bit 6 = A/D enable); a
    ``levels`` that disagrees with the EPTP is refused, ``ad`` may override the EPTP
    to show what A/D enabling changes.  ``mode`` of the result is None and
    ``pkey`` is None; a fault is an :class:`EptViolation` or :class:`EptMisconfig`.
    """
    if not isinstance(mem, GuestMemory):
        raise TypeError(f"mem must be an mmu.GuestMemory, not {type(mem).__name__}")
    maxphyaddr = _check_maxphyaddr(maxphyaddr)
    eptp = check_int("eptp", eptp, 0, 1 << maxphyaddr)
    check_access(access)
    mt = eptp & 7
    if mt not in (0, EPT_MEMTYPE_WB):
        raise ValueError(f"eptp={eptp:#x}: memory type {mt} in bits 2:0 is not UC (0) or WB (6) "
                         f"(VM entry would fail)")
    eptp_levels = ((eptp >> 3) & 7) + 1
    if eptp_levels not in (4, 5):
        raise ValueError(f"eptp={eptp:#x}: bits 5:3 give a {eptp_levels}-level walk; allowed 4 or 5")
    if eptp & _bits(7, 11):
        raise ValueError(f"eptp={eptp:#x}: bits 11:7 are reserved (allowed 0)")
    if levels is None:
        levels = eptp_levels
    elif check_int("levels", levels, 4, 6) != eptp_levels:
        raise ValueError(f"levels={levels} disagrees with eptp={eptp:#x}, which says {eptp_levels}")
    if ad is None:
        ad = bool(eptp & (1 << 6))
    check_bool("ad", ad)
    check_bool("execonly", execonly)
    check_bool("set_ad", set_ad)
    gpa = check_int("gpa", gpa, 0, 1 << min(MAX_PHYS_BITS, 12 + 9 * levels))
    fmt = ept_format(levels, maxphyaddr, execonly)
    want = {"read": EPT.R, "write": EPT.W, "fetch": EPT.X}[access]
    trace, acc, stop = _walk_tables(mem, fmt, eptp & _ADDR_MASK_8, gpa)
    trace = tuple(trace)
    if stop is not None:
        kind, level, reason = stop
        if kind == _NOT_PRESENT:
            fault = EptViolation(level, f"EPT violation: {reason}", gpa, int(want))
        else:
            fault = EptMisconfig(level, reason if reason.startswith("EPT misconf") else
                                 f"EPT misconfiguration: {reason}", gpa)
        return WalkResult(None, fault, trace, None, None, None, acc, None)
    leaf = trace[-1]
    page_size = 1 << fmt.shift(leaf.level)
    need = {"read": ACC_USER_MASK, "write": ACC_WRITE_MASK, "fetch": ACC_EXEC_MASK}[access]
    if not acc & need:
        have = ((EPT.R if acc & ACC_USER_MASK else 0) | (EPT.W if acc & ACC_WRITE_MASK else 0)
                | (EPT.X if acc & ACC_EXEC_MASK else 0))
        bit = {"read": "R", "write": "W", "fetch": "X"}[access]
        fault = EptViolation(leaf.level, (
            f"EPT violation: {access} of a page without {bit} (the AND of {bit} over the EPT "
            f"entries is 0, first cleared in EPT {_first_without(trace, need)})"),
            gpa, int(want) | (int(have) << 3))
        return WalkResult(None, fault, trace, None, leaf.level, page_size, acc, None)
    if set_ad and ad:
        _set_accessed_dirty(mem, fmt, trace, access == "write", int(EPT.A), int(EPT.D))
    gpa_out = fmt.leaf_base(leaf.entry, leaf.level) | (gpa & (page_size - 1))
    return WalkResult(gpa_out, None, trace, None, leaf.level, page_size, acc, None)


def npt_walk(mem: GuestMemory, ncr3: int, gpa: int, access: str, levels: int = 4,
             nx: bool = True, *, maxphyaddr: int = 52, set_ad: bool = True) -> WalkResult:
    """Translate a guest-physical address through AMD nested page tables.

    NPT entries are ordinary 64-bit entries walked as *user* accesses (AMD APM
    vol. 2, 15.25.5), so this is the 4/5-level walk at CPL 3 with nCR3 as CR3 and
    no canonical check (a gPA is not a linear address).  ``nx`` is the host's
    EFER.NXE, which KVM always sets.
    """
    if not isinstance(mem, GuestMemory):
        raise TypeError(f"mem must be an mmu.GuestMemory, not {type(mem).__name__}")
    levels = check_int("levels", levels, 4, 6)
    maxphyaddr = _check_maxphyaddr(maxphyaddr)
    # nCR3 is not the guest's CR3: errors name the argument the caller passed.
    ncr3 = check_int("ncr3", ncr3, 0, 1 << 64)
    gpa = check_int("gpa", gpa, 0, 1 << min(MAX_PHYS_BITS, 12 + 9 * levels))
    check_access(access)
    check_bool("nx", nx)
    check_bool("set_ad", set_ad)
    mode = PagingMode(levels)
    regs = Regs(cr0=int(CR0.PE | CR0.PG | CR0.WP), cr3=ncr3,
                cr4=int(CR4.PAE | (CR4.LA57 if levels == 5 else 0)),
                efer=int(EFER.LME | EFER.LMA | (EFER.NXE if nx else 0)))
    root = root_table(regs, mode, maxphyaddr, "ncr3")
    fmt = entry_format(mode, maxphyaddr, nx, True, True)
    return _walk_x86(mem, regs, fmt, root, gpa, access, 3, mode, set_ad, canonical=False)
