"""Exercise kind "cr0_wp": the CR0.WP story (facts §2.3, §3.2, §3.3, §7.6, §9).

Why is ``cr0_wp`` in the shadow root role but constant in the TDP root role, what does a
guest that toggles WP cost on each kernel, and what breaks if a role computation leaves
the bit out?

Difficulty 1: the guest flips only CR0.WP -- which fields of ``cpu_role`` and
``root_role`` change (:class:`mmu.book.exercises.roles.RoleChangeProblem` narrowed to WP).
Difficulty 2: what KVM does for that write on a given kernel / MMU / vendor: VM exit?
``kvm_mmu_reset_context`` (unload every root)?  Where does the root come from afterwards?
Read off :class:`mmu.kvm.vcpu.VCpu`.
Difficulty 3: find the bug -- a shadow root-role function with one field wrong; name the
field and its bit.  :func:`wp_hole` then shows, with :class:`mmu.kvm.shadow.ShadowMMU`, the
hole a root role without ``cr0_wp`` opens: after the guest sets CR0.WP=1, a kernel write
to a read-only page that must raise #PF goes through.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Callable

from mmu.x86.bits import PTE
from mmu.x86.memory import GuestMemory
from mmu.x86.pagetable import PageTableBuilder
from mmu.x86.regs import CR0
from mmu.kvm.roles import CpuRole, PageRole, cpu_role, shadow_root_role
from mmu.kvm.shadow import ShadowMMU
from mmu.x86.walker import Fault, walk
from mmu.book.exercises.base import Problem, Step, check_difficulty, check_seed
from mmu.book.exercises.roles import RoleChangeProblem, describe_regs, random_regs
from mmu.book.exercises.root_reuse import OUTCOME_TEXT, OUTCOMES, classify

__all__ = ["KIND", "WpChangeProblem", "WpCostProblem", "FindTheBugProblem", "BUGGY_ROOT_ROLES",
           "WpHole", "wp_hole", "make_problem"]

KIND = "cr0_wp"


class WpChangeProblem(RoleChangeProblem):
    kind = KIND
    title = "CR0.WP flips: which role bits change?"
    flips = (("cr0", CR0.WP),)


_EXIT_WHY = ("VMX with EPT in 6.4 makes CR0.WP guest-owned (fb509f76acc8; the kernels here "
             "are as released, so 6.1 does not have the later 6.1.y backport): flipping "
             "only WP does not exit.  SVM has no per-bit CR0 intercept, and without EPT "
             "(shadow paging) KVM must see WP: those exit.")
_RESET_WHY = ("kvm_post_set_cr0: before 6.4 (6.1 as released) any change of a "
              "KVM_MMU_CR0_ROLE_BITS bit (PG, WP) calls kvm_mmu_reset_context, which unloads "
              "every root.  From 6.4, a WP-only change with TDP only calls kvm_init_mmu.  "
              "Shadow paging always resets: cr0_wp is in its root role.  No exit, no reset.")
_ROOT_WHY = ("After an unload, kvm_mmu_load looks for a root with the new root_role.  Does "
             "the TDP root role contain cr0_wp (it is constant 1), and does a TDP root nobody "
             "uses survive the unload (freed before 6.4, kept until invalidated from 6.4)?  The "
             "shadow root role contains cr0_wp: was a root for this WP value built before, and "
             "are its pages still in the hash?  Without an unload the current root stays.")


class WpCostProblem(Problem):
    """Difficulty 2: the guest kernel clears (or sets) CR0.WP, as grsecurity's pax_open_kernel
    does around every write to read-only kernel data."""

    kind = KIND
    title = "What does a CR0.WP toggle cost?"

    def __init__(self, seed: int, difficulty: int = 2) -> None:
        super().__init__(seed, difficulty)
        rng = self.rng
        self.kernel = rng.choice(("5.18", "5.19", "6.1", "6.4"))
        self.mmu = rng.choice(("tdp", "shadow"))
        self.vendor = rng.choice(("intel", "amd"))
        self.flips = rng.choice((1, 2))
        from mmu.kvm.vcpu import VCpu
        v = VCpu(kernel=self.kernel, mmu=self.mmu, vendor=self.vendor)
        v.boot_long_mode(cr3=0x1000)
        v.enter()
        delta = Counter()
        for _ in range(self.flips):
            before = Counter(v.stats)
            v.set_cr0(v.regs.cr0 ^ int(CR0.WP))
            v.enter()
            delta = Counter(v.stats) - before
        self.delta, self.vcpu = delta, v

    def _statement(self) -> str:
        how = {"tdp": "TDP (EPT/NPT with the TDP MMU)", "shadow": "shadow paging"}[self.mmu]
        which = "clears CR0.WP" if self.flips == 1 else "clears CR0.WP, then sets it again"
        last = "this write" if self.flips == 1 else "the second write (setting WP)"
        return (f"Linux {self.kernel} (as released), {self.vendor.upper()} host, {how}.  "
                f"A booted 64-bit "
                f"guest kernel (CR0.WP=1) {which}.  For {last}: does it cause a VM exit?  Does "
                f"KVM unload the roots (kvm_mmu_reset_context)?  Where does the root come from "
                f"at the next entry, one of {OUTCOMES}?\n{OUTCOME_TEXT}")

    def _steps(self) -> list[Step]:
        d = self.delta
        return [Step("vm exit", d["vm_exits"] > 0, _EXIT_WHY, "", repr),
                Step("unload", d["mmu_unloads"] > 0, _RESET_WHY, "", repr),
                Step("root", classify(d), _ROOT_WHY, "", repr)]


# ---------------------------------------------------------------------------
# Find the bug
# ---------------------------------------------------------------------------

def _buggy(field: str, how: Callable[[CpuRole, PageRole], PageRole]):
    def root_role(cpu: CpuRole) -> PageRole:
        return how(cpu, shadow_root_role(cpu))
    root_role.__name__ = f"shadow_root_role_without_{field}"
    root_role.__doc__ = "A broken kvm_init_shadow_mmu root role (exercise; find what is wrong)."
    return root_role


#: Broken shadow root-role functions, keyed by the field each gets wrong.
BUGGY_ROOT_ROLES: dict[str, Callable[[CpuRole], PageRole]] = {
    "cr0_wp": _buggy("cr0_wp", lambda c, r: r.replace(cr0_wp=0)),
    "smep_andnot_wp": _buggy("smep_andnot_wp", lambda c, r: r.replace(smep_andnot_wp=0)),
    "smap_andnot_wp": _buggy("smap_andnot_wp", lambda c, r: r.replace(smap_andnot_wp=0)),
    "efer_nx": _buggy("efer_nx", lambda c, r: r.replace(efer_nx=c.base.efer_nx)),
    "has_4_byte_gpte": _buggy("has_4_byte_gpte", lambda c, r: r.replace(has_4_byte_gpte=0)),
    "guest_mode": _buggy("guest_mode", lambda c, r: r.replace(guest_mode=0)),
}


class FindTheBugProblem(Problem):
    """Difficulty 3: ``problem.buggy_root_role(cpu_role)`` gets one field wrong."""

    kind = KIND
    title = "Find the bug in a shadow root-role computation"

    def __init__(self, seed: int, difficulty: int = 3) -> None:
        super().__init__(seed, difficulty)
        self.field = self.rng.choice(sorted(BUGGY_ROOT_ROLES))
        self.buggy_root_role = BUGGY_ROOT_ROLES[self.field]
        self.example = random_regs(self.rng, paging=True)

    def _statement(self) -> str:
        return ("problem.buggy_root_role(cpu_role) is meant to be kvm_init_shadow_mmu's root "
                "role (mmu.kvm.roles.shadow_root_role) but one field is wrong for some guests.  "
                "Call both on CPU roles of your choice (mmu.kvm.roles.cpu_role(regs, smm=..., "
                "guest_mode=...); try CR0.WP=0, SMEP, SMAP, NX, 32-bit paging, nested guests) "
                "and compare the words.  Which field is wrong, and at which bit of the role "
                f"word does it start?  (One register set to start from: "
                f"{describe_regs(self.example)}.)")

    def _steps(self) -> list[Step]:
        offset = {n: off for n, off, _ in PageRole.layout()}[self.field]
        return [
            Step("field", self.field,
                 "Find registers where the two words differ (PageRole.diff names the fields): "
                 "vary one input at a time -- CR0.WP, CR4.SMEP, CR4.SMAP, EFER.NXE, CR4.PAE "
                 "(32-bit paging), guest_mode -- and keep the ones that change the buggy word "
                 "differently.", f"differs for some inputs", repr),
            Step("bit", offset, "The bit is the field's offset in union kvm_mmu_page_role "
                 "(facts §1.1; PageRole.layout() lists (name, offset, width)).",
                 f"offset of {self.field}", repr),
        ]


@dataclasses.dataclass(frozen=True)
class WpHole:
    """What :func:`wp_hole` saw.

    ``trick``: the WP=0 write was handled by the CR0.WP=0 trick (writable, supervisor-only
    SPTE).  ``root_reused``: after WP 0->1 the root-level shadow page was found again (same
    gfn and role word).  ``hardware_allows_write``: the SPTEs under the new root let the
    write through without exiting to KVM.  ``architectural_fault``: what the SDM says the
    write must do with CR0.WP=1 (a #PF).  ``hole``: the last two disagree.
    """

    root_role_fn: str
    trick: bool
    root_reused: bool
    hardware_allows_write: bool
    architectural_fault: Fault | None

    @property
    def hole(self) -> bool:
        return self.hardware_allows_write and self.architectural_fault is not None

    def __str__(self) -> str:
        fault = (f"#PF, error code {self.architectural_fault.error_code:#x} "
                 f"({self.architectural_fault.reason})" if self.architectural_fault else "none")
        verdict = ("✘ HOLE: the guest kernel's write to a read-only page succeeds"
                   if self.hole else "✔ no hole: the write faults as it must")
        return (f"root role function: {self.root_role_fn}\n"
                f"  WP=0 write handled by the CR0.WP=0 trick: {'yes' if self.trick else 'no'}\n"
                f"  after WP 0->1, root-level shadow page reused: "
                f"{'yes' if self.root_reused else 'no (new role word)'}\n"
                f"  SPTEs let the write through without a fault: "
                f"{'yes' if self.hardware_allows_write else 'no'}\n"
                f"  the architecture requires: {fault}\n  {verdict}")


def wp_hole(root_role_fn: Callable[[CpuRole], PageRole] = shadow_root_role,
            gva: int = 0xFFFF_FFFF_8100_0000, gpa: int = 0x0020_0000) -> WpHole:
    """Replay, on :class:`mmu.kvm.shadow.ShadowMMU`, the scenario that makes ``cr0_wp`` part of
    the shadow root role (facts §7.6):

    1. the guest kernel runs with CR0.WP=0 and writes to a read-only page ``gva``; KVM's
       shadow fault path allows it with the WP=0 trick (a writable, supervisor-only SPTE);
    2. the guest sets CR0.WP=1; ``kvm_mmu_reset_context`` drops the root, and the next
       entry allocates a root for the new root role (``root_role_fn`` of the new CPU role);
    3. the guest kernel writes to ``gva`` again.  With CR0.WP=1 the architecture requires
       a #PF.  If the new root role equals the old one, the root-level page -- and the
       writable SPTE below it -- is reused, and the write goes through.
    """
    mem = GuestMemory()
    b = PageTableBuilder(mem, "4-level")
    b.map(gva, gpa, 4096, writable=False, user=False, accessed=True, dirty=True)
    regs0, regs1 = b.regs(wp=False), b.regs(wp=True)
    mmu = ShadowMMU(mem)
    cpu0 = cpu_role(regs0)
    root0, _, _ = mmu.alloc_shadow_roots(cpu0, root_role_fn(cpu0), regs0.cr3)
    first = mmu.page_fault(root0, regs0, cpu0, gva, "write", 0)
    mmu.put_root(root0)                             # kvm_mmu_reset_context -> unload
    cpu1 = cpu_role(regs1)
    root1, created, _ = mmu.alloc_shadow_roots(cpu1, root_role_fn(cpu1), regs1.cr3)
    t = mmu.translate(root1, gva)
    allows = t is not None and bool(t.spte & PTE.RW)
    arch = walk(mem, regs1, gva, "write", 0, set_ad=False).fault
    return WpHole(getattr(root_role_fn, "__name__", repr(root_role_fn)), first.wp_trick,
                  created == 0, allows, arch)


def make_problem(seed: int, difficulty: int = 1) -> Problem:
    """1: which role bits a WP flip changes; 2: what the flip costs; 3: find the bug."""
    check_seed(seed)
    check_difficulty(difficulty)        # before dispatching: 0, 4, None must not become 3
    if difficulty == 1:
        return WpChangeProblem(seed, 1)
    if difficulty == 2:
        return WpCostProblem(seed, 2)
    return FindTheBugProblem(seed, 3)
