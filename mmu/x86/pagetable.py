"""Build page tables by mapping ranges, so nobody hand-assembles entries.

:class:`PageTableBuilder` writes guest paging structures for any paging mode the way
a guest kernel would: non-leaf entries grant everything (P|R/W|U/S, no XD), so the
leaf alone decides the rights; :class:`EptBuilder` does the same for EPT tables in
host memory (what KVM's ``tdp_mmu.c`` ``kvm_tdp_mmu_map`` builds, minus the
concurrency).  Both reuse the walker's :class:`~mmu.x86.walker.EntryFormat`, so an index
or an address mask cannot disagree between building and walking.

Table frames come from a bump allocator starting at ``table_base`` (each new frame
is zeroed); nothing stops a mapping from pointing at a table frame, because guests
do that too (recursive mappings).  The builder writes only paging-structure
entries, never the data pages.

A refused ``map()`` changes nothing: every argument, every conflict with an existing
mapping and the number of table frames the call needs are checked by a dry run over
the tables (:meth:`_TableBuilder._plan`) before the first entry is written, so memory,
``tables`` and the allocator are as they were when the ValueError/TypeError arrives.
"""
from __future__ import annotations

from mmu.x86.bits import EPT, EPT_MEMTYPE_SHIFT, EPT_MEMTYPE_WB, MAX_PHYS_BITS, PAGE_SIZE, PTE, \
    PTE_PKEY_SHIFT, check_bool, check_int
from mmu.x86.memory import GuestMemory
from mmu.x86.regs import PagingMode, Regs, make_regs
from mmu.x86.walker import MIN_PHYS_BITS, EntryFormat, ept_format, entry_format

__all__ = ["PageTableBuilder", "EptBuilder", "MAX_PAGES_PER_MAP", "PAGE_SIZES"]

#: One map() call writes at most this many leaves (keeps every call to seconds).
MAX_PAGES_PER_MAP = 1 << 20

_K4, _M2, _M4, _G1 = 1 << 12, 1 << 21, 1 << 22, 1 << 30
#: Page sizes each paging mode offers (SDM table 4-1).
PAGE_SIZES = {PagingMode.BIT32: (_K4, _M4), PagingMode.PAE: (_K4, _M2),
              PagingMode.LEVEL4: (_K4, _M2, _G1), PagingMode.LEVEL5: (_K4, _M2, _G1)}
_MODE_NAMES = {"32-bit": PagingMode.BIT32, "pae": PagingMode.PAE,
               "4-level": PagingMode.LEVEL4, "5-level": PagingMode.LEVEL5}


class _TableBuilder:
    """The part both builders share: frame allocation and installing one leaf."""

    def __init__(self, mem: GuestMemory, fmt: EntryFormat, table_base: int, table_limit: int,
                 nonleaf: int) -> None:
        if not isinstance(mem, GuestMemory):
            raise TypeError(f"mem must be an mmu.GuestMemory, not {type(mem).__name__}")
        table_base = check_int("table_base", table_base, 0, table_limit)
        if table_base % PAGE_SIZE:
            raise ValueError(f"table_base={table_base:#x} is not 4 KiB aligned")
        self.mem = mem
        self._fmt = fmt
        self._next = table_base
        self._limit = table_limit
        self._nonleaf = nonleaf
        #: Addresses of every table frame allocated, in allocation order.
        self.tables: list[int] = []
        self._read = mem.read_u32 if fmt.entry_size == 4 else mem.read_u64
        self._write = mem.write_u32 if fmt.entry_size == 4 else mem.write_u64
        self._root = self._alloc()

    def _alloc(self) -> int:
        frame = self._next
        if frame + PAGE_SIZE > self._limit:
            raise ValueError(f"out of table frames: the next frame {frame:#x} would pass "
                             f"{self._limit:#x}; choose a lower table_base")
        self._next += PAGE_SIZE
        self.mem.write(frame, bytes(PAGE_SIZE))
        self.tables.append(frame)
        return frame

    def _plan(self, what: str, start: int, n: int, page_size: int, level: int) -> None:
        """Dry run of ``n`` leaves of ``page_size`` from ``start`` (the argument ``what``)
        at ``level``: raise the ValueError :meth:`_install` would meet (a leaf where a
        table is, a table where a large leaf is, no table frames left) before anything is
        written.

        Tables the call itself would create are empty, so a conflict can only sit in a
        table that exists now; the walk down is done once per last-level table.
        """
        fmt = self._fmt
        parent_shift = fmt.shift(level + 1) if level < fmt.root_level else 64
        tables: dict[int, int | None] = {}      # addr >> parent_shift -> table at level, None = new
        new_tables: set[tuple[int, int]] = set()
        for i in range(n):
            addr = start + i * page_size
            key = addr >> parent_shift
            if key not in tables:
                table: int | None = self._root
                for lvl in range(fmt.root_level, level, -1):
                    if table is None:
                        new_tables.add((lvl, addr >> fmt.shift(lvl)))
                        continue
                    entry = self._read(table + fmt.index(addr, lvl) * fmt.entry_size)
                    if not fmt.is_present(entry):
                        new_tables.add((lvl, addr >> fmt.shift(lvl)))
                        table = None
                    elif lvl in fmt.large_levels and entry & PTE.PS:
                        raise ValueError(f"{what}={addr:#x} (page_size={page_size:#x}): already "
                                         f"mapped by a {1 << fmt.shift(lvl):#x}-byte page at "
                                         f"level {lvl}; cannot put a table there (nothing was "
                                         f"mapped)")
                    else:
                        table = fmt.table_addr(entry)
                tables[key] = table
            table = tables[key]
            if table is not None and level > 1:
                old = self._read(table + fmt.index(addr, level) * fmt.entry_size)
                if fmt.is_present(old) and not old & PTE.PS:
                    raise ValueError(f"{what}={addr:#x} (page_size={page_size:#x}): a page "
                                     f"table already covers this {1 << fmt.shift(level):#x}-byte "
                                     f"range at level {level} (nothing was mapped)")
        need = len(new_tables) * PAGE_SIZE
        if self._next + need > self._limit:
            raise ValueError(f"out of table frames: mapping {what}={start:#x}+{n * page_size:#x} "
                             f"needs {len(new_tables)} new table(s) from {self._next:#x} but "
                             f"frames end at {self._limit:#x}; choose a lower table_base "
                             f"(nothing was mapped)")

    def _install(self, addr: int, level: int, leaf: int) -> None:
        """Write ``leaf`` at ``level`` for ``addr``, creating tables on the way down.

        Called only after :meth:`_plan` accepted the whole range, so it cannot fail."""
        fmt = self._fmt
        table = self._root
        for lvl in range(fmt.root_level, level, -1):
            ea = table + fmt.index(addr, lvl) * fmt.entry_size
            entry = self._read(ea)
            if not fmt.is_present(entry):
                new = self._alloc()
                self._write(ea, new | self._nonleaf_bits(lvl))
                table = new
            else:
                table = fmt.table_addr(entry)
        self._write(table + fmt.index(addr, level) * fmt.entry_size, leaf)

    def _map_leaves(self, what: str, start: int, n: int, page_size: int, level: int,
                    leaf_of) -> None:
        """Check all ``n`` leaves (:meth:`_plan`), then write them: ``leaf_of(i)`` is leaf i."""
        self._plan(what, start, n, page_size, level)
        for i in range(n):
            self._install(start + i * page_size, level, leaf_of(i))

    def _nonleaf_bits(self, level: int) -> int:
        return self._nonleaf

    def _check_range(self, what: str, start: int, size: int, page_size: int, limit: int) -> None:
        if start % page_size:
            raise ValueError(f"{what}={start:#x} is not aligned to page_size={page_size:#x}")
        if start + size > limit:
            raise ValueError(f"{what} range {start:#x}+{size:#x} ends past {limit:#x} "
                             f"(allowed {what} + size <= {limit:#x})")

    def _pages(self, size: int, page_size: int) -> tuple[int, int]:
        """(number of pages, ``size`` as a plain int) for a checked ``size``."""
        size = check_int("size", size, 1, 1 << 64)
        if size % page_size:
            raise ValueError(f"size={size:#x} is not a multiple of page_size={page_size:#x}")
        n = size // page_size
        if n > MAX_PAGES_PER_MAP:
            raise ValueError(f"size={size:#x} needs {n} pages; one map() writes at most "
                             f"{MAX_PAGES_PER_MAP} (use larger pages)")
        return n, size


def _check_page_size(page_size: object, allowed: tuple[int, ...], where: str) -> int:
    page_size = check_int("page_size", page_size, 1, 1 << 64)
    if page_size not in allowed:
        raise ValueError(f"page_size={page_size:#x} is not offered by {where}; "
                         f"allowed {', '.join(hex(s) for s in allowed)}")
    return page_size


class PageTableBuilder(_TableBuilder):
    """Guest page tables for one paging mode.

    ``mode`` is a :class:`PagingMode` or one of "32-bit", "PAE", "4-level",
    "5-level".  For PAE the root is a page-directory-pointer table whose four
    PDPTEs are written at once (the CPU loads all four at MOV CR3), each pointing
    at its own page directory.
    """

    def __init__(self, mem: GuestMemory, mode: PagingMode | str, *, table_base: int = 0x1000_0000,
                 maxphyaddr: int = 52) -> None:
        if isinstance(mode, str):
            if mode.lower() not in _MODE_NAMES:
                raise ValueError(f"mode {mode!r} is not one of {tuple(_MODE_NAMES)}")
            mode = _MODE_NAMES[mode.lower()]
        elif not isinstance(mode, PagingMode):
            raise TypeError(f"mode must be a str or PagingMode, not {type(mode).__name__}")
        if mode == PagingMode.NONE:
            raise ValueError("mode 'none' has no page tables; allowed: " + ", ".join(_MODE_NAMES))
        self.maxphyaddr = check_int("maxphyaddr", maxphyaddr, MIN_PHYS_BITS, MAX_PHYS_BITS + 1)
        self.mode = mode
        # Outside long mode CR3 (and a 32-bit entry's table pointer) is 32 bits wide.
        limit = 1 << (min(32, self.maxphyaddr) if mode <= PagingMode.PAE else self.maxphyaddr)
        super().__init__(mem, entry_format(mode, self.maxphyaddr), table_base, limit,
                         int(PTE.P | PTE.RW | PTE.US))
        if mode == PagingMode.PAE:
            for i in range(4):
                self._write(self._root + 8 * i, self._alloc() | PTE.P)

    def _nonleaf_bits(self, level: int) -> int:
        # PAE PDPTEs have only P: their bits 2:1 and 8:5 are reserved.
        return int(PTE.P) if self.mode == PagingMode.PAE and level == 3 else self._nonleaf

    @property
    def cr3(self) -> int:
        """The root table's address (for PAE: the PDPT's)."""
        return self._root

    def regs(self, **kw) -> Regs:
        """``make_regs(mode, cr3=self.cr3, **kw)``."""
        return make_regs(self.mode, cr3=self.cr3, **kw)

    def map(self, gva: int, gpa: int, size: int, *, writable: bool = True, user: bool = False,
            nx: bool = False, pkey: int = 0, page_size: int = 4096, accessed: bool = False,
            dirty: bool = False, global_: bool = False) -> None:
        """Map ``[gva, gva+size)`` to ``[gpa, gpa+size)`` with ``page_size`` leaves.

        ``accessed``/``dirty``/``global_`` preset A/D/G in the leaves only.  ``nx``
        needs 8-byte entries (not 32-bit paging); ``pkey`` needs 4/5-level paging.
        An existing leaf of the same size is overwritten; a leaf where a table is
        (or a table where a large leaf is) is refused.
        """
        mode = self.mode
        allowed = PAGE_SIZES[mode]
        page_size = _check_page_size(page_size, allowed, f"{mode.label} paging")
        flags = {"writable": writable, "user": user, "nx": nx, "accessed": accessed,
                 "dirty": dirty, "global_": global_}
        for name, value in flags.items():
            check_bool(name, value)
        pkey = check_int("pkey", pkey, 0, 16)
        if nx and mode == PagingMode.BIT32:
            raise ValueError("nx=True needs 8-byte entries: 32-bit paging has no XD bit")
        if pkey and mode < PagingMode.LEVEL4:
            raise ValueError(f"pkey={pkey}: protection keys exist only in 4/5-level paging")
        n, size = self._pages(size, page_size)
        gva = check_int("gva", gva, 0, 1 << 64)
        gpa = check_int("gpa", gpa, 0, 1 << self.maxphyaddr)
        if mode >= PagingMode.LEVEL4:
            half = 1 << (56 if mode == PagingMode.LEVEL5 else 47)
            if gva >= (1 << 64) - half:
                self._check_range("gva", gva, size, page_size, 1 << 64)
            elif gva >= half:
                raise ValueError(f"gva={gva:#x} is not canonical for {mode.label} paging "
                                 f"(allowed gva < {half:#x} or gva >= {(1 << 64) - half:#x})")
            else:
                self._check_range("gva", gva, size, page_size, half)
        else:
            self._check_range("gva", gva, size, page_size, 1 << 32)
        if mode == PagingMode.BIT32:
            pa_limit = 1 << (min(self.maxphyaddr, 40) if page_size == _M4 else 32)
        else:
            pa_limit = 1 << self.maxphyaddr
        self._check_range("gpa", gpa, size, page_size, pa_limit)

        level = {_K4: 1, _M2: 2, _M4: 2, _G1: 3}[page_size]
        bits = (PTE.P | (PTE.RW if writable else 0) | (PTE.US if user else 0)
                | (PTE.A if accessed else 0) | (PTE.D if dirty else 0) | (PTE.G if global_ else 0)
                | (PTE.XD if nx else 0) | (PTE.PS if level > 1 else 0))
        bits = int(bits) | (pkey << PTE_PKEY_SHIFT)
        pse36 = mode == PagingMode.BIT32 and level == 2

        def leaf(i: int) -> int:
            pa = gpa + i * page_size
            if pse36:
                # PSE-36: PA bits 39:32 go to PDE bits 20:13.
                pa = (pa & 0xFFC0_0000) | ((pa >> 32) << 13)
            return pa | bits

        self._map_leaves("gva", gva, n, page_size, level, leaf)


class EptBuilder(_TableBuilder):
    """EPT tables in host memory (what ``kvm_tdp_mmu_map`` builds for a guest).

    Non-leaf entries are R|W|X; leaves get memory type WB.  ``eptp`` carries the
    root, WB in bits 2:0, walk length - 1 in bits 5:3 and the A/D enable in bit 6
    (SDM Vol. 3C 25.6.11).  Default ``table_base`` differs from
    :class:`PageTableBuilder`'s so both can share one memory.

    ``execonly`` is the CPU capability ``ept_walk`` takes under the same name
    (IA32_VMX_EPT_VPID_CAP bit 0, SDM Vol. 3C A.10; KVM passes it as ``execonly`` to
    ``reset_rsvds_bits_mask_ept``): with it False, as in ``ept_walk``'s default, an
    execute-only leaf (XWR=100) is a misconfiguration (SDM 29.3.3.1), so ``map`` refuses
    one; with it True ``map`` builds one.  Walk the tables with
    ``ept_walk(..., execonly=builder.execonly)`` so builder and walker agree.
    """

    def __init__(self, mem: GuestMemory, levels: int = 4, ad: bool = True, *,
                 table_base: int = 0x2000_0000, maxphyaddr: int = 52,
                 execonly: bool = False) -> None:
        self.levels = check_int("levels", levels, 4, 6)
        self.ad = check_bool("ad", ad)
        self.execonly = check_bool("execonly", execonly)
        self.maxphyaddr = check_int("maxphyaddr", maxphyaddr, MIN_PHYS_BITS, MAX_PHYS_BITS + 1)
        super().__init__(mem, ept_format(self.levels, self.maxphyaddr, self.execonly), table_base,
                         1 << self.maxphyaddr, int(EPT.R | EPT.W | EPT.X))

    @property
    def eptp(self) -> int:
        return (self._root | EPT_MEMTYPE_WB | ((self.levels - 1) << 3)
                | ((1 << 6) if self.ad else 0))

    def map(self, gpa: int, hpa: int, size: int, *, r: bool = True, w: bool = True,
            x: bool = True, page_size: int = 4096) -> None:
        """Map ``[gpa, gpa+size)`` to ``[hpa, hpa+size)`` with R/W/X as given.

        W without R is refused (the CPU would report an EPT misconfiguration); so is
        X alone unless the builder was made with ``execonly=True``, and a mapping with no
        rights at all, which is not a mapping.
        """
        for name, value in (("r", r), ("w", w), ("x", x)):
            check_bool(name, value)
        if w and not r:
            raise ValueError("w=True with r=False is an EPT misconfiguration (SDM 29.3.3.1)")
        if not (r or w or x):
            raise ValueError("r, w and x are all False: that entry would be not-present")
        if x and not (r or w) and not self.execonly:
            raise ValueError("x=True with r=False, w=False is an execute-only entry, an EPT "
                             "misconfiguration unless the CPU supports execute-only EPT "
                             "(IA32_VMX_EPT_VPID_CAP bit 0; SDM 29.3.3.1): build with "
                             "EptBuilder(..., execonly=True) and walk with "
                             "ept_walk(..., execonly=True)")
        page_size = _check_page_size(page_size, (_K4, _M2, _G1), "EPT")
        n, size = self._pages(size, page_size)
        gpa = check_int("gpa", gpa, 0, 1 << 64)
        hpa = check_int("hpa", hpa, 0, 1 << self.maxphyaddr)
        self._check_range("gpa", gpa, size, page_size, 1 << min(MAX_PHYS_BITS, 12 + 9 * self.levels))
        self._check_range("hpa", hpa, size, page_size, 1 << self.maxphyaddr)
        level = {_K4: 1, _M2: 2, _G1: 3}[page_size]
        bits = ((EPT.R if r else 0) | (EPT.W if w else 0) | (EPT.X if x else 0)
                | (EPT.PS if level > 1 else 0))
        bits = int(bits) | (EPT_MEMTYPE_WB << EPT_MEMTYPE_SHIFT)
        self._map_leaves("gpa", gpa, n, page_size, level, lambda i: (hpa + i * page_size) | bits)
