"""Seeded random page-walk cases for the differential test, and a path writer.

Each case is one linear address, one access, one CPL and one register state, with
a freshly generated chain of paging-structure entries along the address's walk
(the rest of every table is zero, i.e. not present).  Entry bits are drawn level by
level: P, R/W, U/S, PS, XD, protection keys, preset A/D, ignored bits, and now and
then a reserved bit (bits 51:40 with MAXPHYADDR = 40, 62:40 in PAE paging, the
large-page ranges 20:13 / 29:13, bit 21 of a PSE-36 PDE, XD without EFER.NXE, PS in a
PML4E/PML5E).  Present PAE PDPTEs carry no reserved bits: the SDM checks those at
MOV to CR3, QEMU at access time (``QUIRKS["PAE_PDPTE_checked_at_access"]``).

Nothing here uses the model under test: the tables are written directly with
:func:`write_path`, so the generator is independent of ``mmu.x86.pagetable``.
"""
from __future__ import annotations

import dataclasses
import random

from mmu.x86.bits import PAGE_SIZE
from mmu.x86.memory import GuestMemory
from mmu.x86.regs import CR0, CR4, EFER, RFLAGS, PagingMode, Regs

from .unicorn_oracle import ORACLE_MAXPHYADDR, WINDOW, WINDOW_SIZE

P, RW, US, PWT, PCD, A, D, PS, G = (1 << b for b in (0, 1, 2, 3, 4, 5, 6, 7, 8))
XD = 1 << 63

_NAMES = {1: "PTE", 2: "PDE", 3: "PDPTE", 4: "PML4E", 5: "PML5E"}
MODES = (PagingMode.BIT32, PagingMode.PAE, PagingMode.LEVEL4, PagingMode.LEVEL5)


def entry_size(mode: PagingMode) -> int:
    return 4 if mode == PagingMode.BIT32 else 8


def entry_index(mode: PagingMode, level: int, gva: int) -> int:
    """Index of ``gva``'s entry in the level-``level`` table (SDM 4.3, 4.4.1, 4.5)."""
    if mode == PagingMode.BIT32:
        return (gva >> (12 + 10 * (level - 1))) & 0x3FF
    if mode == PagingMode.PAE and level == 3:
        return (gva >> 30) & 3
    return (gva >> (12 + 9 * (level - 1))) & 0x1FF


def _next_table(mode: PagingMode, value: int) -> int:
    return value & (0xFFFF_F000 if mode == PagingMode.BIT32 else 0x000F_FFFF_FFFF_F000)


def write_path(mem: GuestMemory, mode: PagingMode, root: int, gva: int,
               values: list[int]) -> list[tuple[int, int, int]]:
    """Write ``values`` (top level first) along ``gva``'s walk starting at table ``root``.

    Each value's address field names the table the next value goes into.  Returns
    [(level, entry address, value)].  ``root`` is the table address (for PAE, the
    32-byte-aligned PDPT address from CR3).
    """
    out = []
    table = root
    for i, value in enumerate(values):
        level = int(mode) - i
        addr = table + entry_index(mode, level, gva) * entry_size(mode)
        if entry_size(mode) == 4:
            mem.write_u32(addr, value)
        else:
            mem.write_u64(addr, value)
        out.append((level, addr, value))
        table = _next_table(mode, value)
    return out


@dataclasses.dataclass(frozen=True)
class PathEntry:
    level: int
    addr: int
    value: int
    leaf: bool          # the entry maps a page (PTE, or PS=1 where PS means "page")

    @property
    def name(self) -> str:
        return _NAMES[self.level]


@dataclasses.dataclass(frozen=True)
class Case:
    seed: int
    index: int
    mode: PagingMode
    regs: Regs
    gva: int
    access: str
    cpl: int
    path: tuple[PathEntry, ...]
    mem: GuestMemory = dataclasses.field(compare=False, repr=False)

    def describe(self) -> str:
        r = self.regs
        flags = [n for n, on in (("WP", r.wp), ("PSE", r.pse), ("NXE", r.nx), ("SMEP", r.smep),
                                 ("SMAP", r.smap), ("PKE", r.pke), ("AC", r.ac)) if on]
        head = (f"case seed={self.seed} #{self.index}: {self.mode.label} {self.access} at "
                f"CPL{self.cpl} gva={self.gva:#x} cr3={r.cr3:#x} [{' '.join(flags)}]"
                + (f" pkru={r.pkru:#010x}" if r.pke else ""))
        return head + "".join(f"\n    {e.name}@{e.addr:#x} = {e.value:#x}{' (leaf)' if e.leaf else ''}"
                              for e in self.path)


class _Frames:
    """Distinct random 4 KiB frames below a limit, never in the oracle window."""

    def __init__(self, rng: random.Random):
        self.rng, self.used = rng, set()

    def take(self, limit: int) -> int:
        while True:
            fn = self.rng.randrange(1, limit >> 12)
            addr = fn << 12
            if fn not in self.used and not WINDOW <= addr < WINDOW + WINDOW_SIZE:
                self.used.add(fn)
                return addr


def _regs(rng: random.Random, mode: PagingMode, root: int) -> Regs:
    cr0 = CR0.PE | CR0.ET | CR0.NE | CR0.PG | (CR0.WP if rng.random() < 0.6 else 0)
    cr4 = 0
    for bit, p in ((CR4.PSE, 0.7), (CR4.SMEP, 0.35), (CR4.SMAP, 0.35), (CR4.PKE, 0.5)):
        if rng.random() < p:
            cr4 |= bit
    efer = EFER.NXE if rng.random() < 0.75 else 0
    if mode >= PagingMode.PAE:
        cr4 |= CR4.PAE
    if mode >= PagingMode.LEVEL4:
        efer |= EFER.LME | EFER.LMA
    if mode == PagingMode.LEVEL5:
        cr4 |= CR4.LA57
    rflags = RFLAGS.FIXED1 | (RFLAGS.AC if rng.random() < 0.3 else 0)
    # PKRU: mostly random AD/WD pairs, sometimes all-clear so that keys never fault.
    pkru = rng.getrandbits(32) if rng.random() < 0.7 else 0
    cr3 = root | (rng.choice((0, PWT, PCD)) if mode != PagingMode.PAE else 0)
    return Regs(cr0=int(cr0), cr3=cr3, cr4=int(cr4), efer=int(efer), rflags=int(rflags), pkru=pkru)


def _gva(rng: random.Random, mode: PagingMode) -> int:
    if mode <= PagingMode.PAE:
        return rng.getrandbits(32)
    bits = 57 if mode == PagingMode.LEVEL5 else 48
    va = rng.getrandbits(bits)
    if va >> (bits - 1):
        va |= (1 << 64) - (1 << bits)
    if rng.random() < 0.03:         # non-canonical: flip one bit above bits-1
        va ^= 1 << rng.randrange(bits, 64)
    return va


def _reserved_bit(rng: random.Random, mode: PagingMode, level: int, large: bool) -> int | None:
    """One bit the SDM reserves in this entry, or None (rarely called)."""
    if mode == PagingMode.BIT32:
        return 21 if (level == 2 and large) else None
    hi = 62 if mode == PagingMode.PAE else 51
    choices = [rng.randrange(ORACLE_MAXPHYADDR, hi + 1)]
    if large:
        choices.append(rng.randrange(13, 21 if level == 2 else 30))
    return rng.choice(choices)


def _entry(rng: random.Random, mode: PagingMode, level: int, regs: Regs, target: int,
           frames: _Frames) -> tuple[int, bool]:
    """Draw one entry at ``level``; returns (value, is_leaf).  ``target`` is the next
    table's frame (for non-leaves)."""
    four_byte = mode == PagingMode.BIT32
    if rng.random() < 0.04:                       # not present: everything else is ignored
        junk = rng.getrandbits(32 if four_byte else 64) & ~P
        return junk, False
    if mode == PagingMode.PAE and level == 3:
        # PDPTE: P, PWT, PCD, ignored 11:9, address; no reserved bits (see module doc).
        return target | P | rng.choice((0, PWT, PCD)) | (rng.getrandbits(3) << 9), False
    v = P
    if rng.random() < 0.8:
        v |= RW
    if rng.random() < 0.75:
        v |= US
    v |= rng.choice((0, PWT, PCD, PWT | PCD))
    if rng.random() < 0.5:
        v |= A
    if rng.random() < 0.5:
        v |= D
    v |= rng.getrandbits(3) << 9                  # ignored bits 11:9
    large = False
    if level == 2 and rng.random() < 0.3:
        large = True                              # ignored (4K table) when 32-bit and !CR4.PSE
    elif level == 3 and mode >= PagingMode.LEVEL4 and rng.random() < 0.25:
        large = True
    elif level >= 4 and rng.random() < 0.02:
        v |= PS                                   # PS in PML4E/PML5E is reserved
    leaf = level == 1 or (large and not (four_byte and not regs.pse))
    if large:
        v |= PS
    if rng.random() < 0.3:
        v |= G                                    # global in a leaf, ignored above (Intel)
    if level == 1 and rng.random() < 0.3:
        v |= PS                                   # bit 7 of a PTE is PAT, not PS
    if leaf:
        if four_byte and large:                   # 4 MiB page, PSE-36: PA 39:32 in bits 20:13
            v |= rng.getrandbits(10) << 22 | rng.getrandbits(8) << 13
        elif large:
            shift = 21 if level == 2 else 30
            v |= rng.getrandbits(ORACLE_MAXPHYADDR - shift) << shift
            v |= (1 << 12) if rng.random() < 0.3 else 0   # PAT of a large page
        else:
            v |= frames.take(1 << (32 if four_byte else ORACLE_MAXPHYADDR))
    else:
        v |= target
    if not four_byte:
        if mode != PagingMode.PAE:
            v |= rng.getrandbits(7) << 52         # ignored 58:52 (4/5-level)
            v |= rng.getrandbits(4) << 59         # protection key (ignored in non-leaves)
        if rng.random() < (0.2 if regs.nx else 0.03):
            v |= XD                               # reserved when EFER.NXE=0
    if rng.random() < 0.04:
        bit = _reserved_bit(rng, mode, level, large and leaf)
        if bit is not None:
            v |= 1 << bit
    return v, leaf


def generate(seed: int, index: int) -> Case:
    """Case number ``index`` of the stream ``seed`` (each case reproducible alone)."""
    rng = random.Random(seed * 1_000_003 + index)
    mode = MODES[index % 4]
    frames = _Frames(rng)
    low4g = 1 << 32
    # 32-bit and PAE CR3 hold a 32-bit address; 4/5-level any below MAXPHYADDR.
    root = frames.take(low4g if mode <= PagingMode.PAE else 1 << ORACLE_MAXPHYADDR)
    if mode == PagingMode.PAE:
        root += rng.randrange(0, PAGE_SIZE, 32)
    regs = _regs(rng, mode, root)
    gva = _gva(rng, mode)
    mem = GuestMemory()
    values = []
    for level in range(int(mode), 0, -1):
        # 32-bit PDEs point to page tables below 4 GiB; other tables anywhere.
        target = frames.take(low4g if mode == PagingMode.BIT32 else 1 << ORACLE_MAXPHYADDR)
        v, leaf = _entry(rng, mode, level, regs, target, frames)
        values.append(v)
        if leaf or not v & P:
            break
    written = write_path(mem, mode, root, gva, values)
    path = tuple(PathEntry(lvl, addr, val, i == len(written) - 1 and bool(val & P))
                 for i, (lvl, addr, val) in enumerate(written))
    access = rng.choice(("read", "write", "fetch"))
    cpl = rng.choice((0, 3))
    case = Case(seed, index, mode, regs, gva, access, cpl, path, mem)
    if _lands_in_window(case):
        return generate(seed + 7919, index)     # a different, equally random case
    return case


def _lands_in_window(case: Case) -> bool:
    """True when a successful walk would reach the oracle's window (leaf frame there)."""
    last = case.path[-1]
    if not last.leaf:
        return False
    size = {1: 12, 2: 22 if case.mode == PagingMode.BIT32 else 21, 3: 30}[last.level]
    v = last.value
    if case.mode == PagingMode.BIT32 and last.level == 2:
        base = (v & 0xFFC0_0000) | ((v >> 13) & 0xFF) << 32
    else:
        base = v & ((1 << ORACLE_MAXPHYADDR) - 1) & ~((1 << size) - 1)
    gpa = base | (case.gva & ((1 << size) - 1))
    return WINDOW <= gpa < WINDOW + WINDOW_SIZE


def cases(seed: int, count: int):
    """The first ``count`` cases of stream ``seed``."""
    for i in range(count):
        yield generate(seed, i)
