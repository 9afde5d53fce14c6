"""Exercise kind "shadow": which shadow pages a guest page fault builds, and the SPTE.

Under shadow paging KVM answers a guest #PF by walking the guest tables and building, from
the root down, one shadow page per level (``FNAME(fetch)`` in paging_tmpl.h), each found
or created by (gfn, role) (``kvm_mmu_get_shadow_page``).  The student predicts, per level,
which guest frame (gfn) the shadow page shadows -- and, with guest huge pages, which
pages are *direct* -- then whether the final SPTE is writable and the host address.  The
answers are read off :class:`mmu.kvm.shadow.ShadowMMU` after it handled the fault.

Difficulty 1: 4-level guest, 4 KiB page.  2: 4-level guest with a 2 MiB or 1 GiB page
(direct pages below the guest leaf, gfn rounded to what each covers).  3: 32-bit guest
(PAE root of four level-2 pages with quadrants 0-3, level-1 quadrant from GVA bit 21).
"""
from __future__ import annotations

from mmu.x86.bits import PTE
from mmu.x86.memory import GuestMemory
from mmu.x86.pagetable import PageTableBuilder
from mmu.x86.regs import PagingMode
from mmu.kvm.roles import cpu_role, shadow_root_role
from mmu.kvm.shadow import HOST_RAM_BASE, ShadowMMU
from mmu.x86.walker import walk
from mmu.book.exercises.base import Problem, Step, hexs

__all__ = ["KIND", "ShadowFaultProblem", "make_problem"]

KIND = "shadow"

_K4, _M2, _M4, _G1 = 1 << 12, 1 << 21, 1 << 22, 1 << 30


class ShadowFaultProblem(Problem):
    kind = KIND
    title = "Shadow pages built by one page fault"

    def __init__(self, seed: int, difficulty: int = 1) -> None:
        super().__init__(seed, difficulty)
        rng = self.rng
        mode = PagingMode.BIT32 if difficulty == 3 else PagingMode.LEVEL4
        size = rng.choice((_M2, _G1)) if difficulty == 2 else _K4
        self.mode, self.page_size = mode, size
        self.mem = GuestMemory()
        b = PageTableBuilder(self.mem, mode, table_base=0x1000_0000 + rng.randrange(256) * _K4)
        va_bits = 32 if mode == PagingMode.BIT32 else 47
        page = rng.randrange(0, 1 << va_bits, size)
        gpa = rng.randrange(0, 1 << (32 if mode == PagingMode.BIT32 else 38), size)
        self.guest_writable = rng.random() < 0.7
        self.guest_dirty = rng.random() < 0.5
        b.map(page, gpa, size, page_size=size, writable=self.guest_writable, user=True,
              accessed=True, dirty=self.guest_dirty)
        self.gva = page + rng.randrange(size)
        self.access = "write" if self.guest_writable and rng.random() < 0.4 else "read"
        self.regs = b.regs()
        self.cpu = cpu_role(self.regs)
        self.root_role = shadow_root_role(self.cpu)
        self.mmu = ShadowMMU(self.mem)
        self.root, _, _ = self.mmu.alloc_shadow_roots(self.cpu, self.root_role, self.regs.cr3)
        self.guest = walk(self.mem, self.regs, self.gva, self.access, 0, set_ad=False)
        self.outcome = self.mmu.page_fault(self.root, self.regs, self.cpu, self.gva,
                                           self.access, 0)

    def _statement(self) -> str:
        lines = [f"Shadow paging, {self.mode.label} guest, CR3={self.regs.cr3:#x}, CR0.WP=1.  "
                 f"The guest kernel makes a {self.access} of {self.gva:#x}; KVM has a fresh "
                 f"root and no other shadow pages, so the access faults and KVM builds the "
                 f"path.",
                 "The guest walk reads (entry address: value):"]
        for t in self.guest.trace:
            lines.append(f"  {t.name:<5} {t.entry_addr:#010x}: {t.entry:#x}")
        lines.append(f"Guest RAM at gpa G is backed by host address G + {HOST_RAM_BASE:#x}.")
        lines.append("For each shadow page on the path, top level first, give the gfn it "
                     "covers" + (", whether it is direct" if self.difficulty == 2 else "")
                     + (" and its quadrant" if self.difficulty == 3 else "")
                     + "; then whether the leaf SPTE is writable, and the host address.")
        return "\n".join(lines)

    def _steps(self) -> list[Step]:
        t = self.mmu.translate(self.root, self.gva)
        steps: list[Step] = []
        four_byte = self.mode == PagingMode.BIT32
        for sp, _ in t.path:
            lvl = sp.role.level
            direct_why = ("Above the guest's leaf level a shadow page shadows the guest table "
                          "of the same level: gfn = that table's address >> 12 (the root "
                          "shadows the table at CR3).  Below a guest huge page KVM maps the "
                          "page with direct shadow pages: gfn = the huge page's gfn rounded "
                          f"down to a multiple of 512^{lvl} (the 4 KiB frames one level-{lvl} "
                          "page maps).")
            if self.difficulty == 3:
                if lvl == 2:
                    qwhy = ("A 32-bit guest's page directory (1024 entries, 4 GiB) is shadowed "
                            "by four level-2 pages of 512 entries; quadrant = GVA bits 31:30.")
                else:
                    qwhy = ("A 32-bit guest page table (1024 entries) is shadowed by two "
                            "level-1 pages; quadrant = GVA bit 21.")
                steps.append(Step(f"level {lvl} quadrant", sp.role.quadrant, qwhy, qwhy, repr))
            steps.append(Step(f"level {lvl} gfn", sp.gfn, direct_why,
                              "direct" if sp.role.direct else "guest table", hexs))
            if self.difficulty == 2:
                steps.append(Step(f"level {lvl} direct", bool(sp.role.direct),
                                  "role.direct is 1 only below the guest's leaf (a guest huge "
                                  "page mapped with smaller shadow pages).", "", repr))
        writable = bool(t.spte & PTE.RW)
        steps.append(Step(
            "SPTE writable", writable,
            "The leaf SPTE is writable only if the guest mapping allows writes AND either this "
            "access is a write or the guest entry's D bit is already 1 "
            "(FNAME(protect_clean_gpte): KVM must see the first write to set D).",
            f"guest R/W={int(self.guest_writable)}, D={int(self.guest_dirty)}, {self.access}",
            repr))
        four = " (a 32-bit guest's linear addresses are 32 bits)" if four_byte else ""
        steps.append(Step("hpa", t.hpa, f"The guest walk gives the gpa{four}; the host address "
                          f"is gpa + {HOST_RAM_BASE:#x}.", f"gpa {self.guest.gpa:#x}", hexs))
        return steps


def make_problem(seed: int, difficulty: int = 1) -> ShadowFaultProblem:
    """A shadow-paging fault to follow; same seed and difficulty -> same problem."""
    return ShadowFaultProblem(seed, difficulty)
