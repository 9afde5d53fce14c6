"""Exercise kind "walks": translate a linear address by hand.

The student gets CR3, an address and a dump of the page tables (every non-zero entry of
every table frame) and works the walk the way the CPU does -- and the way KVM's
``FNAME(walk_addr_generic)`` (paging_tmpl.h) does for a shadowed guest: index, entry,
next table, ..., leaf, physical address.  The solution steps are read off the model's
walk trace (:func:`mmu.x86.walker.walk`), never computed here.

Difficulty 1: 4-level paging, 4 KiB page.  2: 4- or 5-level paging with a 2 MiB or
1 GiB page.  3: 32-bit paging (4-byte entries, 10-bit indexes, 4 MiB pages with
CR4.PSE) or PAE paging (a 4-entry PDPT), and half of the time the walk ends at a
not-present entry: then the answer is the level and the #PF error code.
"""
from __future__ import annotations

from mmu.x86.bits import PFErr
from mmu.x86.memory import GuestMemory
from mmu.x86.pagetable import PageTableBuilder
from mmu.x86.regs import PagingMode
from mmu.x86.walker import LEVEL_NAMES, entry_format, walk
from mmu.book.exercises.base import Problem, Step, hexs

__all__ = ["KIND", "WalkProblem", "make_problem"]

KIND = "walks"

_K4, _M2, _M4, _G1 = 1 << 12, 1 << 21, 1 << 22, 1 << 30


def _bit_range(fmt, level: int) -> tuple[int, int]:
    lo = fmt.shift(level)
    hi = lo + fmt.index_bits - 1
    if fmt.pdpte_gp and level == 3:
        hi = 31                   # PAE: the PDPT has 4 entries, GVA bits 31:30
    return hi, lo


class WalkProblem(Problem):
    """Translate ``gva`` for ``access`` at ``cpl`` through the tables at ``regs.cr3``."""

    kind = KIND
    title = "Translate an address by hand"

    def __init__(self, seed: int, difficulty: int = 1) -> None:
        super().__init__(seed, difficulty)
        rng = self.rng
        if difficulty == 1:
            mode, size, fault = PagingMode.LEVEL4, _K4, False
        elif difficulty == 2:
            mode = rng.choice((PagingMode.LEVEL4, PagingMode.LEVEL5))
            size, fault = rng.choice((_M2, _G1)), False
        else:
            mode = rng.choice((PagingMode.BIT32, PagingMode.PAE))
            size = rng.choice((_K4, _M4 if mode == PagingMode.BIT32 else _M2))
            fault = rng.random() < 0.5
        self.mode, self.page_size, self.expect_fault = mode, size, fault
        self.mem = GuestMemory()
        b = PageTableBuilder(self.mem, mode, table_base=0x1000_0000 + rng.randrange(64) * _K4)
        va_bits = {PagingMode.BIT32: 32, PagingMode.PAE: 32, PagingMode.LEVEL4: 47,
                   PagingMode.LEVEL5: 56}[mode]
        pa_limit = 1 << (32 if mode <= PagingMode.PAE else 40)
        gva = rng.randrange(0, 1 << va_bits, size)
        targets = [gva]
        # Decoys share the upper levels with the target, so every table has several
        # entries and the index really has to be computed.
        for flip in rng.sample(range(size.bit_length() - 1, va_bits), 3):
            targets.append(gva ^ (1 << flip))
        if fault:
            # Leave the target itself unmapped: the walk stops where its path leaves the
            # decoys' paths.
            targets = targets[1:]
        for t in targets:
            gpa = rng.randrange(0, pa_limit, size)
            b.map(t, gpa, size, page_size=size, writable=True, user=True)
        self.gva = gva + rng.randrange(size)                # an offset inside the page
        self.access = rng.choice(("read", "write")) if fault else "read"
        self.cpl = rng.choice((0, 3)) if fault else 0
        self.regs = b.regs()
        self.tables = tuple(b.tables)
        self.fmt = entry_format(mode)

    # -- statement -----------------------------------------------------------------------
    def dump(self) -> str:
        """Every non-zero entry of every table frame, as ``address: value``."""
        size = self.fmt.entry_size
        read = self.mem.read_u32 if size == 4 else self.mem.read_u64
        width = 2 * size
        lines = []
        for table in self.tables:
            n = 4 if (self.mode == PagingMode.PAE and table == self.regs.cr3) else 4096 // size
            for i in range(n):
                v = read(table + i * size)
                if v:
                    lines.append(f"  {table + i * size:#010x}: {v:#0{width + 2}x}")
        return "\n".join(lines)

    def _statement(self) -> str:
        who = "user (CPL 3)" if self.cpl == 3 else "supervisor (CPL 0)"
        sizes = f"{self.fmt.entry_size}-byte entries"
        return (f"Paging mode: {self.mode.label} ({sizes}); CR3 = {self.regs.cr3:#x}.\n"
                f"Translate the linear address {self.gva:#x} for a {who} {self.access}.\n"
                f"Page-table memory (every non-zero entry):\n{self.dump()}\n"
                f"For each level give the index and the entry you read (hex); then either "
                f"the page size and the physical address, or -- if an entry is not "
                f"present -- the level where the walk stops and the #PF error code.")

    # -- solution (from the model's trace) ------------------------------------------------
    def _steps(self) -> list[Step]:
        w = walk(self.mem, self.regs, self.gva, self.access, self.cpl, set_ad=False)
        fmt = self.fmt
        steps: list[Step] = []
        table = self.regs.cr3
        levels = [t.level for t in w.trace]
        # The walker may or may not list the entry where it stopped in the trace.
        if w.fault is not None and w.fault.level is not None and w.fault.level not in levels:
            levels.append(w.fault.level)
        for level in levels:
            hi, lo = _bit_range(fmt, level)
            name = LEVEL_NAMES[level]
            idx = fmt.index(self.gva, level)
            where = "CR3" if level == fmt.root_level else f"the {LEVEL_NAMES[level + 1]}"
            steps.append(Step(
                f"{name} index", idx,
                f"The {name} index is bits {hi}:{lo} of the linear address.",
                f"bits {hi}:{lo} of {self.gva:#x}", hexs))
            step = next((t for t in w.trace if t.level == level), None)
            entry = step.entry if step is not None else 0
            addr_bits = "31:12" if fmt.entry_size == 4 else "51:12"
            steps.append(Step(
                name, entry,
                f"The {name} is the {fmt.entry_size}-byte entry at (table address from "
                f"{where}, bits {addr_bits}) + {fmt.entry_size} x index; read it from the "
                f"dump (0 if the dump has no entry there).",
                f"read at {table:#x} + {fmt.entry_size} x {idx:#x}", hexs))
            if step is not None and not step.leaf and getattr(step, "stop", None) is None:
                table = fmt.table_addr(step.entry)
        if w.fault is not None:
            lvl = w.fault.level
            steps.append(Step("fault level", lvl,
                              "The walk stops at the first entry whose P bit (bit 0) is 0; give "
                              "its level (4 = PML4E ... 1 = PTE).",
                              f"{LEVEL_NAMES[lvl]} not present", repr))
            steps.append(Step("error code", w.fault.error_code,
                              "A not-present #PF has P=0; W/R (bit 1) is set for a write, U/S "
                              "(bit 2) for an access at CPL 3.",
                              f"{PFErr(w.fault.error_code)!r}", hexs))
            return steps
        leaf = w.trace[-1]
        steps.append(Step("page size", w.page_size,
                          f"The walk ends at the first entry with PS=1 (bit 7) in a "
                          f"{'PDE or PDPTE' if fmt.entry_size == 8 else 'PDE'}, else at the "
                          f"PTE; that level's entry maps the whole page.",
                          f"leaf is the {leaf.name}", hexs))
        off_bits = w.page_size.bit_length() - 1
        pse36 = " (with PSE-36, PDE bits 20:13 give address bits 39:32)" \
            if fmt.entry_size == 4 and leaf.level == 2 else ""
        steps.append(Step("gpa", w.gpa,
                          f"Physical address = the page base from the leaf entry (its address "
                          f"bits above bit {off_bits - 1}){pse36} + the low {off_bits} bits of "
                          f"the linear address.",
                          f"base from {leaf.entry:#x} + offset "
                          f"{self.gva & (w.page_size - 1):#x}", hexs))
        return steps


def make_problem(seed: int, difficulty: int = 1) -> WalkProblem:
    """A walk to do by hand; same seed and difficulty -> same problem everywhere."""
    return WalkProblem(seed, difficulty)
