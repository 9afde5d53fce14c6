"""A vCPU whose control-register writes drive KVM's MMU the way a given kernel does.

Kernel counterparts: ``kvm_set_cr0``/``kvm_post_set_cr0``, ``kvm_set_cr4``/
``kvm_post_set_cr4``, ``kvm_set_cr3``, ``set_efer`` (``arch/x86/kvm/x86.c``);
``kvm_mmu_reset_context``, ``kvm_mmu_unload``, ``kvm_init_mmu``, ``init_kvm_tdp_mmu``,
``kvm_init_shadow_mmu``/``shadow_mmu_init_context``, ``kvm_mmu_reload``/``kvm_mmu_load``,
``kvm_mmu_new_pgd`` and ``kvm_mmu_refresh_passthrough_bits`` (``arch/x86/kvm/mmu/mmu.c``,
``mmu.h``); the VM-exit decisions of ``vmx.c`` (CR0/CR4 guest/host masks, CR3-load
exiting) and ``svm.c`` (``svm_set_cr0``: the full CR0 intercept while the hardware CR0
differs from the guest's, e.g. CD/NW set, else the selective CR0 write intercept); the
RESET state of ``kvm_vcpu_reset`` (CR0 = ET|CD|NW).  Which version
of each function runs is decided by an :class:`~mmu.kvm.eras.Era` (facts §2-§5, §3.2, §3.3).

Three MMU set-ups, as in the published benchmarks (facts §9):

* ``"tdp"``    -- EPT/NPT with the TDP MMU (``tdp_mmu=1``): roots come from
  :class:`mmu.kvm.tdp.TdpMMU`, looked up by role, freed on the last put unless the era
  preserves them (edbdb43fc96b).  With a single vCPU the last put is every unload; vCPUs
  made with :meth:`VCpu.sibling` share the VM and hold references of their own, which is
  what keeps a root alive in a multi-vCPU guest;
* ``"legacy"`` -- EPT/NPT with ``tdp_mmu=0``: direct roots are shadow pages in the
  per-VM hash of :class:`mmu.kvm.shadow.ShadowMMU` and survive an unload;
* ``"shadow"`` -- no EPT/NPT: shadow paging, every CR3 load exits.

Every decision appends an :class:`Event` naming the kernel function and bumps a counter
in :attr:`VCpu.stats`.  Guest-visible faults (#GP from a bad register write) are
results (:class:`WriteResult`), never exceptions; bad *arguments* raise.

Simplifications, said once: one guest-physical address space per VM; no CS descriptor
(``cs_l`` stands for "executing 64-bit code"); ``load_pdptrs`` always succeeds (a PAE
guest's reserved PDPTE bits are not checked here); no CPUID (every CR4 feature exists);
SMM entry/exit does one ``kvm_mmu_reset_context`` each (an SMI in L2 first exits to L1,
and its RSM re-enters L2, as ``vmx/svm_enter_smm`` and ``vmx/svm_leave_smm`` do); nested
virtualisation is the guest_mode bit of root_mmu's roles unless L1 uses EPT/NPT for L2
(``nested_enter(eptp=/ncr3=)``), which runs L2 on :class:`GuestMmu` (``guest_mmu``) as
``nested_ept_init_mmu_context``/``nested_svm_init_mmu_context`` do (vmx/nested.c,
svm/nested.c, 6.4); L1's intercepts are not modelled (see :meth:`VCpu.nested_enter`).
"""
from __future__ import annotations

import copy
import dataclasses
from collections import Counter
from typing import Any, Callable

from mmu.x86.bits import check_int
from mmu.kvm.eras import Era, era as make_era
from mmu.x86.memory import GuestMemory
from mmu.x86.regs import CR0, CR4, EFER, Regs
from mmu.kvm.root_cache import (KVM_MMU_ROOT_CURRENT, KVM_MMU_ROOTS_ALL, RootCache, RootInfo)
from mmu.x86.walker import Fault

__all__ = ["VCpu", "Vm", "Event", "WriteResult", "Preview", "GuestMmu", "MMU_KINDS", "VENDORS",
           "KVM_MMU_CR0_ROLE_BITS", "KVM_MMU_CR4_ROLE_BITS", "RESET_CR0"]

MMU_KINDS = ("tdp", "legacy", "shadow")
VENDORS = ("intel", "amd")

#: mmu.h masks (facts §3.1); EFER's depends on the era (Era.efer_role_bits).
KVM_MMU_CR0_ROLE_BITS = int(CR0.PG | CR0.WP)
KVM_MMU_CR4_ROLE_BITS = int(CR4.PSE | CR4.PAE | CR4.LA57 | CR4.SMEP | CR4.SMAP | CR4.PKE)
#: kvm_cache_regs.h KVM_POSSIBLE_CR4_GUEST_BITS (no role bit is ever guest-owned).
KVM_POSSIBLE_CR4_GUEST_BITS = int(CR4.PVI | CR4.DE | CR4.PCE | CR4.OSFXSR | CR4.OSXMMEXCPT
                                  | CR4.PGE | CR4.TSD | CR4.FSGSBASE)
#: CR0 bits KVM keeps (CR0_RESERVED_BITS is the complement in the low 32 bits).
_CR0_DEFINED = int(CR0.PE | CR0.MP | CR0.EM | CR0.TS | CR0.ET | CR0.NE | CR0.WP | CR0.AM
                   | CR0.NW | CR0.CD | CR0.PG)
_CR4_DEFINED = int(sum(CR4))
_EFER_DEFINED = int(sum(EFER))
#: CR0 after RESET: x86.c ``kvm_vcpu_reset`` (5.15+; before, ``vmx_vcpu_reset`` and
#: ``init_vmcb`` wrote the same value) sets ET, and CD|NW on RESET (kept on INIT):
#: caches off, as on bare metal, until firmware or the booting kernel clears them.
RESET_CR0 = int(CR0.ET | CR0.CD | CR0.NW)
#: The CR0 bits ``svm_set_cr0`` clears from the hardware CR0 under
#: KVM_X86_QUIRK_CD_NW_CLEARED, a quirk KVM enables by default (QEMU leaves it on).
_SVM_CD_NW_CLEARED = int(CR0.CD | CR0.NW)
X86_CR3_PCID_NOFLUSH = 1 << 63
_PCID_MASK = 0xFFF


@dataclasses.dataclass(frozen=True)

class Event:
    """One decision: ``step`` is the number of the guest operation that caused it."""

    step: int
    func: str
    detail: str = ""

    def __str__(self) -> str:
        return f"[{self.step}] {self.func}" + (f": {self.detail}" if self.detail else "")


@dataclasses.dataclass(frozen=True)
class WriteResult:
    """What a register write did: ``fault`` is a modelled #GP (vector 13) or None."""

    ok: bool
    exited: bool
    fault: "Fault | None" = None
    events: tuple[Event, ...] = ()


@dataclasses.dataclass(frozen=True)
class Preview:
    """What a sequence of writes would do (:meth:`VCpu.preview`); the vCPU is untouched."""

    results: tuple[WriteResult, ...]
    events: tuple[Event, ...]
    stats: dict[str, int]          # counters that would change, with their increments
    cpu_role: Any
    root_role: Any


@dataclasses.dataclass(frozen=True)
class _NestedTdp:
    """What one nested entry with nested TDP hands to guest_mmu: "ept" or "npt", the
    EPTP / nCR3 (``get_guest_pgd``), and the roles ``kvm_init_shadow_{ept,npt}_mmu``
    compute from it."""

    kind: str
    pointer: int
    cpu_role: Any
    root_role: Any


class _RootSlots:
    """``root`` and ``prev_roots`` of one ``struct kvm_mmu`` (a :class:`RootCache` in
    ``cache``), the root objects behind their hpas and the references the slots hold
    (``_roots``, ``_root_refs``)."""

    cache: RootCache
    _roots: dict
    _root_refs: Counter

    @property
    def root(self) -> RootInfo:
        return self.cache.root

    @property
    def prev_roots(self) -> tuple[RootInfo, ...]:
        return tuple(self.cache.prev_roots)

    @property
    def root_object(self):
        """The shadow/TDP root object behind ``root.hpa`` (None when invalid)."""
        return self._roots.get(self.cache.root.hpa) if self.cache.root.valid else None

    def _drop_ref(self, hpa: int) -> Any:
        """A root-info slot lets go of ``hpa`` (each slot took its own reference when it
        was loaded); the object is forgotten when no slot holds it any more."""
        root = self._roots[hpa]
        self._root_refs[hpa] -= 1
        if self._root_refs[hpa] <= 0:
            del self._roots[hpa], self._root_refs[hpa]
        return root


class GuestMmu(_RootSlots):
    """``vcpu->arch.guest_mmu``: the MMU that shadows L1's EPT or NPT tables while L2 runs
    with nested TDP (facts §2.3, §4).

    Its roots are ordinary shadow pages of the VM's hash (:attr:`Vm.shadow`), keyed by
    (gfn of the EPTP/nCR3, role word) -- never TDP MMU roots, whatever ``tdp_mmu`` is -- so
    a root freed from this cache stays hashed and is found again by the next
    ``mmu_alloc_shadow_roots``.  ``root``/``prev_roots`` live in a :class:`RootCache` of
    their own (``kvm_mmu_new_pgd`` on this MMU searches only these four slots).

    ``kind`` is "ept" (``kvm_init_shadow_ept_mmu``, nested VMX) or "npt"
    (``kvm_init_shadow_npt_mmu``, nested SVM), None before the first nested entry.
    """

    def __init__(self, vcpu: "VCpu") -> None:
        self._vcpu = vcpu
        self.kind: str | None = None
        #: ``get_guest_pgd``: the EPTP (vmcs12->ept_pointer) or nCR3 of the last entry.
        self.pgd: int | None = None
        self.cpu_role = None
        self.root_role = None
        self._roots: dict[int, Any] = {}
        self._root_refs: Counter[int] = Counter()
        self.cache = RootCache(self._sp_role_word, self._free_root)

    def _sp_role_word(self, hpa: int) -> "int | None":
        root = self._roots.get(hpa)
        sp = getattr(root, "sp", None)
        return None if sp is None else sp.role.word

    def _free_root(self, hpa: int) -> None:
        """``mmu_free_root_page`` on a guest_mmu root: --root_count; the page stays in the
        VM's hash (it is zapped only if it was already invalid)."""
        root = self._drop_ref(hpa)
        self._vcpu.vm.shadow.put_root(root)
        self._vcpu._event("mmu_free_root_page (guest_mmu)",
                          f"hpa={hpa:#x}: --root_count; the page stays in the hash")
        self._vcpu.stats["guest_mmu_roots_put"] += 1

    def __repr__(self) -> str:
        return f"GuestMmu(kind={self.kind}, root={self.cache.root})"


def _gp(reason: str) -> Fault:
    return Fault(vector=13, error_code=0, level=None, reason=reason, addr=0)


class Vm:
    """The per-VM MMU state shared by all vCPUs of a VM (``struct kvm_arch``): the
    shadow-page hash and the TDP MMU's roots, plus the set-up every vCPU shares."""

    def __init__(self, mem: GuestMemory | None = None, kernel: "str | Era" = "6.4",
                 mmu: str = "tdp", vendor: str = "intel", tdp_level: int = 4,
                 **features: bool) -> None:
        if mem is not None and not isinstance(mem, GuestMemory):
            raise TypeError(f"mem must be a GuestMemory or None, not {type(mem).__name__}")
        if not isinstance(mmu, str) or mmu not in MMU_KINDS:
            raise ValueError(f"mmu={mmu!r}: allowed {MMU_KINDS}")
        if not isinstance(vendor, str) or vendor not in VENDORS:
            raise ValueError(f"vendor={vendor!r}: allowed {VENDORS}")
        if isinstance(tdp_level, bool) or not isinstance(tdp_level, int):
            raise TypeError(f"tdp_level must be an int, not {type(tdp_level).__name__}")
        if tdp_level not in (4, 5):
            raise ValueError(f"tdp_level={tdp_level}: allowed (4, 5)")
        self.era = make_era(kernel, **features)
        self.kind = mmu
        self.vendor = vendor
        self.tdp_level = tdp_level
        self.mem = mem if mem is not None else GuestMemory()
        from mmu.kvm.shadow import ShadowMMU
        self.shadow = ShadowMMU(self.mem)
        self.tdp = None
        if mmu == "tdp":
            from mmu.kvm.tdp import TdpMMU
            # EPT/NPT tables live in host memory, apart from the guest's.
            self.host_mem = GuestMemory()
            self.tdp = TdpMMU(self.host_mem, vendor=vendor)

    @property
    def tdp_enabled(self) -> bool:
        """``tdp_enabled``: EPT (Intel) or NPT (AMD) in use -- "tdp" and "legacy"."""
        return self.kind != "shadow"


class VCpu(_RootSlots):
    """One vCPU, reset into real mode (CR0 = :data:`RESET_CR0` = ET|CD|NW: caches and
    paging off), with an invalid root.

    ``kernel`` is an era name ("5.15", "5.18", "5.19", "6.1", "6.4") or an Era;
    ``**features`` override era flags (``VCpu(kernel="6.1", cr0_wp_tdp_no_unload=True)``).
    ``vm`` attaches the vCPU to an existing :class:`Vm` (another vCPU's ``.vm``) so roots
    are shared; then ``mem``/``kernel``/``mmu``/``vendor``/``tdp_level``/features must be
    left at their defaults.
    """

    def __init__(self, mem: GuestMemory | None = None, kernel: "str | Era" = "6.4",
                 mmu: str = "tdp", vendor: str = "intel", tdp_level: int = 4, *,
                 vm: Vm | None = None, maxphyaddr: int = 52, max_events: int = 100_000,
                 **features: bool) -> None:
        if vm is None:
            vm = Vm(mem, kernel, mmu, vendor, tdp_level, **features)
        elif not isinstance(vm, Vm):
            raise TypeError(f"vm must be a Vm, not {type(vm).__name__}")
        self.vm = vm
        self.maxphyaddr = check_int("maxphyaddr", maxphyaddr, 36, 53)
        self.max_events = check_int("max_events", max_events, 0, 1 << 40)
        self.regs = Regs(cr0=RESET_CR0, cr3=0, cr4=0, efer=0)      # kvm_vcpu_reset
        self.smm = False
        self.guest_mode = False
        self.cs_l = False            # executing 64-bit code (CS.L); set by boot_long_mode
        self.stats: Counter[str] = Counter()
        self.events: list[Event] = []
        self.step = 0
        # hpa -> the root object behind it, and how many root-info slots (current +
        # prev_roots) hold that hpa.  Each slot took its own reference when it was loaded
        # (++sp->root_count in mmu_alloc_root, a TDP root reference), so two pgds that
        # shadow one page -- same gfn, other low CR3 bits (PCID, PWT/PCD) -- are two
        # references to one hpa, as the kernel's per-SP root_count counts them.
        self._roots: dict[int, Any] = {}
        self._root_refs: Counter[int] = Counter()
        self.cache = RootCache(self._sp_role_word, self._free_root)
        self.mmu_role = None         # <= 5.18: the single union kvm_mmu_role
        self._cpu_role = None
        self._root_role = None
        self._saved_smm: Regs | None = None
        self._saved_l1: tuple | None = None
        # Nested TDP (opt-in, nested_enter(eptp=/ncr3=)): vcpu->arch.guest_mmu, the CPU
        # role of vcpu->arch.nested_mmu, whether vcpu->arch.mmu is guest_mmu (and
        # walk_mmu nested_mmu: mmu_is_nested), and what the current L2 entry used.
        self.guest_mmu = GuestMmu(self)
        self.nested_mmu_role = None
        self._mmu_is_guest = False
        self._l2_tdp: _NestedTdp | None = None
        self.step = 0
        self._event("kvm_arch_vcpu_create", f"{self.describe()}; root invalid")
        self.kvm_init_mmu()

    # -- set-up -------------------------------------------------------------------------
    @property
    def era(self) -> Era:
        return self.vm.era

    @property
    def kind(self) -> str:
        return self.vm.kind

    @property
    def vendor(self) -> str:
        return self.vm.vendor

    @property
    def tdp_enabled(self) -> bool:
        return self.vm.tdp_enabled

    @property
    def mem(self) -> GuestMemory:
        return self.vm.mem

    def describe(self) -> str:
        return f"Linux {self.era.name}, mmu={self.kind}, {self.vendor}"

    def sibling(self) -> "VCpu":
        """Another vCPU of the same VM (shares the shadow hash and TDP roots)."""
        return VCpu(vm=self.vm, maxphyaddr=self.maxphyaddr, max_events=self.max_events)

    # -- roles, as the MMU sees them -------------------------------------------------------
    @property
    def cpu_role(self):
        """``root_mmu.cpu_role`` (5.19+).  For <= 5.18 the 5.19-style CPU role computed at
        the last non-early ``kvm_init_mmu`` (the kernel had no such field then)."""
        return self._cpu_role

    @property
    def root_role(self):
        """``root_mmu.root_role`` (5.19+); for <= 5.18 ``mmu_role.base``, the root's role."""
        return self._root_role

    # -- bookkeeping ---------------------------------------------------------------------
    def _event(self, func: str, detail: str = "") -> None:
        if len(self.events) < self.max_events:
            self.events.append(Event(self.step, func, detail))
        else:
            self.stats["events_dropped"] += 1

    def _begin(self) -> int:
        self.step += 1
        return len(self.events)

    def _result(self, mark: int, *, exited: bool, fault: Fault | None = None) -> WriteResult:
        return WriteResult(ok=fault is None, exited=exited, fault=fault,
                           events=tuple(self.events[mark:]))

    def _sp_role_word(self, hpa: int) -> "int | None":
        root = self._roots.get(hpa)
        if root is None:
            return None
        sp = getattr(root, "sp", None)
        if sp is None:
            if self.kind == "tdp":          # TDP MMU roots are pages with a role of their own
                return root.role.word
            return None                     # PAE special root: no shadow page
        return sp.role.word

    def _free_root(self, hpa: int) -> None:
        """``mmu_free_root_page`` for one root-info slot: drop the reference that slot
        held; forget the hpa only when no other slot of this vCPU still holds it."""
        root = self._drop_ref(hpa)
        if self.kind == "tdp":
            preserve = self.era.tdp_root_preserved
            freed = self.vm.tdp.put_root(root, preserve)
            gone = freed if isinstance(freed, bool) else None
            self._event("kvm_tdp_mmu_put_root",
                        f"hpa={hpa:#x}" + ("" if gone is None else
                                           (": last reference, root freed" if gone else
                                            ": root kept" + (" (preserved until invalidated)"
                                                             if preserve else ""))))
            if gone:
                self.stats["roots_freed"] += 1
        else:
            self.vm.shadow.put_root(root)
            self._event("mmu_free_root_page", f"hpa={hpa:#x}: --root_count; the page stays "
                                              f"in the hash")
        self.stats["roots_put"] += 1

    # -- kvm_init_mmu and friends ---------------------------------------------------------
    def _compute_roles(self, regs: Regs):
        """(mmu_role or None, cpu_role, root_role) the era's kvm_init_mmu would compute."""
        from mmu.kvm import roles
        cpu = roles.cpu_role(regs, smm=self.smm, guest_mode=self.guest_mode)
        if self.era.role_split:
            if self.tdp_enabled:
                root = roles.tdp_root_role(cpu, tdp_level=self.vm.tdp_level)
            else:
                root = roles.shadow_root_role(cpu)
            return None, cpu, root
        from mmu.kvm import legacy
        mmu = legacy.mmu_role(regs, tdp=self.tdp_enabled, smm=self.smm,
                              guest_mode=self.guest_mode, tdp_level=self.vm.tdp_level)
        return mmu, cpu, mmu.base

    def kvm_init_mmu(self) -> bool:
        """``kvm_init_mmu`` -> ``init_kvm_tdp_mmu`` or ``kvm_init_shadow_mmu``.

        5.19+: early return iff ``cpu_role.as_u64`` and ``root_role.word`` are both
        unchanged; <= 5.18: iff the single ``mmu_role.as_u64`` is unchanged.  Returns True
        when the MMU context was (re)built.  Roots are not touched here.
        """
        if self._mmu_is_guest:
            return self._init_kvm_nested_mmu()
        self.stats["mmu_inits"] += 1
        func = "init_kvm_tdp_mmu" if self.tdp_enabled else "shadow_mmu_init_context"
        mmu, cpu, root = self._compute_roles(self.regs)
        if self.era.role_split:
            same = (self._cpu_role is not None and self._root_role is not None
                    and cpu.as_u64 == self._cpu_role.as_u64
                    and root.word == self._root_role.word)
        else:
            same = self.mmu_role is not None and mmu.as_u64 == self.mmu_role.as_u64
        if same:
            self.stats["init_early_returns"] += 1
            self._event("kvm_init_mmu: early return",
                        f"{func}: " + ("cpu_role and root_role unchanged" if self.era.role_split
                                       else "mmu_role unchanged"))
            return False
        changes = []
        if self.era.role_split:
            if self._cpu_role is not None:
                changes += [f"cpu_role.{f} {a}->{b}" for f, a, b in self._cpu_role.diff(cpu)]
                changes += [f"root_role.{f} {a}->{b}" for f, a, b in self._root_role.diff(root)]
        elif self.mmu_role is not None:
            changes += [f"mmu_role.{f} {a}->{b}" for f, a, b in self.mmu_role.diff(mmu)]
        self.mmu_role, self._cpu_role, self._root_role = mmu, cpu, root
        self._event("kvm_init_mmu", f"{func}: " + (", ".join(changes) or "first init"))
        return True

    def kvm_mmu_unload(self) -> None:
        """``kvm_mmu_unload``: free the current and all previous roots (KVM_MMU_ROOTS_ALL)
        of ``root_mmu`` and then of ``guest_mmu`` (facts §4); the guest_mmu roots are
        reported in an event of their own, only when there were any."""
        self.stats["mmu_unloads"] += 1
        freed = self.cache.free_roots(KVM_MMU_ROOTS_ALL)
        self._event("kvm_mmu_unload", f"freed {len(freed)} root(s) (current + prev_roots)")
        gfreed = self.guest_mmu.cache.free_roots(KVM_MMU_ROOTS_ALL)
        if gfreed:
            self._event("kvm_mmu_unload", f"guest_mmu: freed {len(gfreed)} root(s) "
                                          "(current + prev_roots); the pages stay hashed")

    def kvm_mmu_reset_context(self) -> None:
        """``kvm_mmu_reset_context`` = ``kvm_mmu_unload`` + ``kvm_init_mmu`` (every era)."""
        self.stats["mmu_resets"] += 1
        self._event("kvm_mmu_reset_context", "unload all roots, then re-init")
        self.kvm_mmu_unload()
        self.kvm_init_mmu()

    def kvm_mmu_load(self) -> None:
        """``kvm_mmu_load``: allocate the root per ``root_role.direct`` and the MMU kind
        (on ``guest_mmu`` while L2 runs with nested TDP: :meth:`_guest_mmu_load`)."""
        if self._mmu_is_guest:
            self._guest_mmu_load()
            return
        self.stats["mmu_loads"] += 1
        role = self._root_role
        if self.kind == "tdp":
            root, created = self.vm.tdp.get_root(role)
            created, reused = int(bool(created)), int(not created)
            how = "kvm_tdp_mmu_get_vcpu_root_hpa"
            pgd = 0
        elif role.direct:
            root, created, reused = self.vm.shadow.alloc_direct_roots(role)
            how = "mmu_alloc_direct_roots"
            pgd = 0
        else:
            root, created, reused = self.vm.shadow.alloc_shadow_roots(
                self._cpu_role, role, self.regs.cr3)
            how = "mmu_alloc_shadow_roots"
            pgd = self.regs.cr3
        created, reused = int(created), int(reused)
        self._roots[root.hpa] = root
        self._root_refs[root.hpa] += 1
        self.cache.root = RootInfo(pgd, root.hpa)
        self.stats["roots_created"] += created
        self.stats["roots_reused"] += reused
        if self.kind == "tdp":
            outcome = "created" if created else "reused"
            what = "new root allocated" if created else "live root with this role found"
        elif created or reused:
            outcome = "created" if created else "hash hit"
            what = (f"{created} root-level page(s) created, {reused} found in the hash"
                    if created else f"{reused} root-level page(s) found in the hash")
        else:
            # A PAE guest whose four PDPTEs are all not present: mmu_alloc_shadow_roots
            # leaves every pae_root entry INVALID_PAE_ROOT; no shadow page is touched.
            outcome = "no PAE root pages"
            what = ("all PDPTEs not present: pae_root holds 4 invalid entries, no shadow "
                    "page created or reused")
        self._event(f"kvm_mmu_load: {outcome}", f"{how}: {what}; hpa={root.hpa:#x}")

    def kvm_mmu_reload(self) -> None:
        """``kvm_mmu_reload`` on guest entry: load only when the root of
        ``vcpu->arch.mmu`` (root_mmu, or guest_mmu under nested TDP) is invalid."""
        cache = self.guest_mmu.cache if self._mmu_is_guest else self.cache
        if not cache.root.valid:
            self.kvm_mmu_load()

    def enter(self) -> None:
        """Enter (or re-enter) the guest: ``vcpu_enter_guest`` -> ``kvm_mmu_reload``."""
        self.kvm_mmu_reload()

    def kvm_mmu_new_pgd(self, new_pgd: int) -> None:
        """``kvm_mmu_new_pgd``: look for a usable cached root, else leave the root invalid
        for ``kvm_mmu_reload``.  5.18+ uses the MMU's stored role; <= 5.17 recomputed it
        from the registers (``kvm_mmu_calc_root_page_role``).  Acts on
        ``vcpu->arch.mmu``: guest_mmu while L2 runs with nested TDP."""
        if self._mmu_is_guest:
            self._guest_mmu_new_pgd(new_pgd)
            return
        self.stats["new_pgd_calls"] += 1
        role = self._root_role
        if not self.era.new_pgd_uses_mmu_role:
            role = self._compute_roles(self.regs)[2]
        res = self.cache.fast_pgd_switch(new_pgd, role)
        if res.freed_special:
            self._event("fast_pgd_switch", "current root has no shadow page (PAE root): "
                                           "freed before the search")
        self._report_switch(res, new_pgd, "")

    def _report_switch(self, res, new_pgd: int, mmu: str) -> None:
        """Count and describe a ``fast_pgd_switch`` result; ``mmu`` is "" for root_mmu
        or "guest_mmu" (a stats prefix and an event tag)."""
        key = f"{mmu}_" if mmu else ""
        tag = f" ({mmu})" if mmu else ""
        if res.hit:
            self.stats[f"{key}prev_root_hits"] += 1
            where = "current root" if res.slot == "current" else f"prev_roots[{res.slot}]"
            self._event(f"fast_pgd_switch{tag}: {where} hit", f"pgd={new_pgd:#x}")
        else:
            self.stats[f"{key}prev_root_misses"] += 1
            extra = (f"; former LRU hpa={res.evicted:#x} freed" if res.evicted is not None else "")
            self._event(f"fast_pgd_switch{tag}: miss",
                        f"pgd={new_pgd:#x}: kvm_mmu_reload will find or build a root{extra}")

    def kvm_mmu_refresh_passthrough_bits(self) -> bool:
        """``kvm_mmu_refresh_passthrough_bits`` (6.4, [SC-REFRESH]): before an emulated
        permission check, re-read the guest-owned CR0.WP into ``cpu_role.base.cr0_wp``.
        Skipped without TDP.  Returns True if the cached bit was stale."""
        if not (self.era.wp_refresh_in_permission_fault and self.tdp_enabled
                and self.era.role_split and self._cpu_role is not None):
            return False
        live = int(bool(self.regs.cr0 & CR0.WP))
        if self._cpu_role.base.cr0_wp == live:
            return False
        # Only the cr0_wp bit, as __kvm_mmu_refresh_passthrough_bits does (then it
        # recomputes the permission bitmap from it).
        self._cpu_role = self._cpu_role.replace(base=self._cpu_role.base.replace(cr0_wp=live))
        self.stats["passthrough_refreshes"] += 1
        self._event("kvm_mmu_refresh_passthrough_bits",
                    f"cpu_role.base.cr0_wp {1 - live}->{live}; permission bitmap recomputed")
        return True

    def emulated_permission_check(self):
        """Model of ``permission_fault`` being reached during emulation: refresh first (per
        era) and return the CPU role whose bits the check would use.

        With paging off nothing is refreshed: ``permission_fault`` runs only on paged
        walks (``FNAME(walk_addr_generic)``; ``vcpu_mmio_gva_to_gpa`` tests
        ``!is_paging`` first), so the 6.4 refresh is never reached, and the PG=0 role
        keeps cr0_wp=0 as ``kvm_calc_cpu_role`` computes it."""
        self.step += 1
        if not self.regs.cr0 & CR0.PG:
            self._event("emulated access", "paging off: no page walk, permission_fault (and "
                                           "its CR0.WP refresh) not reached")
            return self._cpu_role
        self.kvm_mmu_refresh_passthrough_bits()
        return self._cpu_role

    # -- exits -------------------------------------------------------------------------------
    def _cr0_exits(self, old: int, new: int) -> tuple[bool, str]:
        """Does a guest MOV to CR0 (``old`` -> ``new``) exit?  (exit, reason).

        VMX: an exit iff a bit outside the guest-owned set changes against the CR0 read
        shadow (SDM 25.1.3; ``vmx_l1_guest_owned_cr0_bits``, facts §3.3).  CD and NW are
        host-owned, and ``vmx_set_cr0`` keeps the guest's value in CR0_READ_SHADOW while
        dropping them from GUEST_CR0 (KVM_VM_CR0_ALWAYS_OFF: VMX runs with CD=NW=0 and
        KVM emulates CD through the EPT memory type).  The read shadow hides that, so a
        guest with CD=1 is not intercepted any more than one with CD=0: a TS-only write
        still does not exit.

        SVM (``svm_set_cr0``, 5.12+ form with ``hcr0``; the intercepts follow the CR0
        KVM last installed, i.e. ``old``): the hardware CR0 is the guest's, plus PG|WP
        without NPT, minus CD|NW under KVM_X86_QUIRK_CD_NW_CLEARED (on by default).  If
        it differs from the guest's CR0, INTERCEPT_CR0_READ/WRITE are set and every CR0
        access exits -- so from RESET (CD|NW set) until the guest clears CD and NW even a
        TS-only write exits.  Otherwise only the selective CR0 write intercept is left,
        which ignores changes to TS and MP (AMD APM 15.9)."""
        diff = old ^ new
        if self.vendor == "intel":
            owned = int(CR0.TS)
            if self.era.cr0_wp_guest_owned and self.tdp_enabled:
                owned |= int(CR0.WP)
            if diff & ~owned:
                return True, "a host-owned bit changed (CR0 guest/host mask)"
            return False, ("only guest-owned bits changed "
                           f"({'WP|TS' if owned & CR0.WP else 'TS'}): no exit")
        forced = 0 if self.tdp_enabled else int(CR0.PG | CR0.WP)
        hcr0 = (old | forced) & ~_SVM_CD_NW_CLEARED
        if hcr0 != old:
            why = []
            if (old | forced) != old:
                why.append("PG|WP forced on without NPT")
            if old & _SVM_CD_NW_CLEARED:
                why.append(f"{'CD|NW' if old & CR0.NW else 'CD'} cleared by "
                           "KVM_X86_QUIRK_CD_NW_CLEARED")
            return True, ("INTERCEPT_CR0_WRITE: the hardware CR0 differs from the guest's ("
                          + "; ".join(why) + ")")
        if diff & ~int(CR0.TS | CR0.MP):
            return True, "selective CR0 write intercept (SVM has no per-bit CR0 control)"
        return False, "only TS/MP changed: no exit"

    def _cr4_exits(self, old: int, new: int) -> bool:
        if self.vendor == "amd":
            return True                   # INTERCEPT_CR4_WRITE
        owned = KVM_POSSIBLE_CR4_GUEST_BITS
        if not self.tdp_enabled:
            owned &= ~int(CR4.PGE)        # vmx: PGE is guest-owned only with EPT
        return bool((old ^ new) & ~owned)

    def _exit(self, why: str) -> None:
        self.stats["vm_exits"] += 1
        self._event("vm-exit", why)

    # -- register writes --------------------------------------------------------------------
    def set_cr0(self, value: int) -> WriteResult:
        """Guest MOV to CR0: exit decision, then ``kvm_set_cr0`` + ``kvm_post_set_cr0``."""
        value = check_int("cr0", value, 0, 1 << 64)
        mark = self._begin()
        old = self.regs.cr0
        exits, why = self._cr0_exits(old, value)
        if not exits:
            self.stats["cr0_writes_no_exit"] += 1
            self._event("MOV to CR0 without exit", f"{old:#x}->{value:#x}: {why}")
            self.regs = self.regs.replace(cr0=value)
            return self._result(mark, exited=False)
        self._exit(f"MOV to CR0 ({why})")
        fault = self._kvm_set_cr0(value)
        self.kvm_mmu_reload()
        return self._result(mark, exited=True, fault=fault)

    def _kvm_set_cr0(self, cr0: int) -> Fault | None:
        """``kvm_set_cr0``: the #GP checks, the write (maintaining EFER.LMA as
        ``vmx_set_cr0``/``svm_set_cr0`` do), then the era's ``kvm_post_set_cr0``."""
        old = self.regs.cr0
        cr0 |= int(CR0.ET)
        fault = None
        if cr0 >> 32:
            fault = _gp(f"cr0={cr0:#x}: bits 63:32 are reserved")
        else:
            cr0 &= _CR0_DEFINED          # CR0_RESERVED_BITS in 31:0 are silently dropped
            efer = self.regs.efer
            if cr0 & CR0.NW and not cr0 & CR0.CD:
                fault = _gp(f"cr0={cr0:#x}: NW=1 requires CD=1")
            elif cr0 & CR0.PG and not cr0 & CR0.PE:
                fault = _gp(f"cr0={cr0:#x}: PG=1 requires PE=1")
            elif efer & EFER.LME and not old & CR0.PG and cr0 & CR0.PG:
                if not self.regs.cr4 & CR4.PAE:
                    fault = _gp("enabling paging with EFER.LME=1 requires CR4.PAE=1")
                elif self.cs_l:
                    fault = _gp("enabling long-mode paging with CS.L=1")
            elif not cr0 & CR0.PG and (self.cs_l and efer & EFER.LMA or self.regs.cr4 & CR4.PCIDE):
                fault = _gp("clearing CR0.PG in 64-bit mode or with CR4.PCIDE=1")
        if fault is not None:
            return self._gp_fault("kvm_set_cr0", fault)
        efer = self.regs.efer
        if efer & EFER.LME:
            if cr0 & CR0.PG and not old & CR0.PG:
                efer |= int(EFER.LMA)         # enter_lmode
            elif old & CR0.PG and not cr0 & CR0.PG:
                efer &= ~int(EFER.LMA)        # exit_lmode
        self.regs = self.regs.replace(cr0=cr0, efer=efer)
        self._event("kvm_set_cr0", f"{old:#x}->{cr0:#x}")
        self._kvm_post_set_cr0(old, cr0)
        return None

    def _kvm_post_set_cr0(self, old: int, cr0: int) -> None:
        diff = old ^ cr0
        if diff == CR0.WP:
            if self.era.ignore_wp_nonpaging and not cr0 & CR0.PG:
                self._event("kvm_post_set_cr0", "only CR0.WP changed with paging off: "
                                                "nothing to do (e40bcf9f3a18)")
                return
            if self.era.cr0_wp_tdp_no_unload and self.tdp_enabled:
                self._event("kvm_post_set_cr0", "only CR0.WP changed with TDP: kvm_init_mmu, "
                                                "no unload (01b31714bd90)")
                self.kvm_init_mmu()
                return
        if diff & CR0.PG and not cr0 & CR0.PG:
            self._event("kvm_post_set_cr0", "CR0.PG 1->0: KVM_REQ_TLB_FLUSH_GUEST")
        if diff & KVM_MMU_CR0_ROLE_BITS:
            self._event("kvm_post_set_cr0",
                        f"KVM_MMU_CR0_ROLE_BITS changed ({_names(CR0, diff & KVM_MMU_CR0_ROLE_BITS)})")
            self.kvm_mmu_reset_context()
        else:
            self._event("kvm_post_set_cr0", "no MMU role bit changed")

    def _gp_fault(self, func: str, fault: Fault) -> Fault:
        self.stats["gp_faults"] += 1
        self._event(f"{func}: #GP", fault.reason + "; register unchanged")
        return fault

    def set_cr4(self, value: int) -> WriteResult:
        """Guest MOV to CR4: exit decision, ``kvm_set_cr4`` checks, ``kvm_post_set_cr4``."""
        value = check_int("cr4", value, 0, 1 << 64)
        mark = self._begin()
        old = self.regs.cr4
        if not self._cr4_exits(old, value):
            self._event("MOV to CR4 without exit", f"{old:#x}->{value:#x}: only guest-owned "
                                                   "bits changed")
            self.regs = self.regs.replace(cr4=value)
            return self._result(mark, exited=False)
        self._exit("MOV to CR4")
        fault = None
        lma = self.regs.efer & EFER.LMA
        if value & ~_CR4_DEFINED:
            fault = _gp(f"cr4={value:#x}: reserved bits {value & ~_CR4_DEFINED:#x} set")
        elif lma and not value & CR4.PAE:
            fault = _gp("clearing CR4.PAE in long mode")
        elif lma and (old ^ value) & CR4.LA57:
            fault = _gp("changing CR4.LA57 in long mode")
        elif value & CR4.PCIDE and not old & CR4.PCIDE and (self.regs.cr3 & _PCID_MASK or not lma):
            fault = _gp("CR4.PCIDE 0->1 requires long mode and CR3[11:0]=0")
        if fault is not None:
            self._gp_fault("kvm_set_cr4", fault)
            self.kvm_mmu_reload()
            return self._result(mark, exited=True, fault=fault)
        self.regs = self.regs.replace(cr4=value)
        self._event("kvm_set_cr4", f"{old:#x}->{value:#x}")
        diff = old ^ value
        if diff & KVM_MMU_CR4_ROLE_BITS:
            self._event("kvm_post_set_cr4",
                        f"KVM_MMU_CR4_ROLE_BITS changed ({_names(CR4, diff & KVM_MMU_CR4_ROLE_BITS)})")
            self.kvm_mmu_reset_context()
        else:
            self._event("kvm_post_set_cr4", "no MMU role bit changed")
        if not self.tdp_enabled and value & CR4.PCIDE and not old & CR4.PCIDE:
            self._event("kvm_post_set_cr4", "CR4.PCIDE 0->1 with shadow paging: kvm_mmu_unload "
                                            "(stale prev_roots)")
            self.kvm_mmu_unload()
        self.kvm_mmu_reload()
        return self._result(mark, exited=True)

    def set_efer(self, value: int) -> WriteResult:
        """Guest WRMSR(EFER): always exits; ``set_efer`` checks and the era's role mask."""
        value = check_int("efer", value, 0, 1 << 64)
        mark = self._begin()
        self._exit("WRMSR EFER")
        old = self.regs.efer
        fault = None
        if value & ~_EFER_DEFINED:
            fault = _gp(f"efer={value:#x}: reserved bits {value & ~_EFER_DEFINED:#x} set")
        elif value & EFER.SVME and self.vendor != "amd":
            fault = _gp("EFER.SVME on a CPU without SVM")
        elif self.regs.cr0 & CR0.PG and (old ^ value) & EFER.LME:
            fault = _gp("changing EFER.LME while paging is on")
        if fault is not None:
            self._gp_fault("set_efer", fault)
            self.kvm_mmu_reload()
            return self._result(mark, exited=True, fault=fault)
        value = (value & ~int(EFER.LMA)) | (old & int(EFER.LMA))   # LMA is the CPU's
        self.regs = self.regs.replace(efer=value)
        self._event("set_efer", f"{old:#x}->{value:#x}")
        bits = self.era.efer_role_bits
        if (old ^ value) & bits:
            self._event("set_efer", f"KVM_MMU_EFER_ROLE_BITS changed "
                                    f"({_names(EFER, (old ^ value) & bits)})")
            self.kvm_mmu_reset_context()
        self.kvm_mmu_reload()
        return self._result(mark, exited=True)

    def _cr3_exits(self) -> bool:
        # VMX with EPT runs without CR3-load exiting; SVM with NPT does not intercept CR3
        # writes.  Shadow paging must see every CR3 load.
        return not self.tdp_enabled

    def set_cr3(self, value: int) -> WriteResult:
        """Guest MOV to CR3: with EPT/NPT no exit and no MMU work; otherwise
        ``kvm_set_cr3`` -> ``kvm_mmu_new_pgd`` (fast PGD switch) and re-entry.

        Without an exit the CPU itself checks the value: bit 63 is stripped as NOFLUSH
        only with CR4.PCIDE=1, and any bit at or above MAXPHYADDR left is reserved, so
        the write raises #GP in the guest (a result with ``exited=False``; KVM never sees
        it).  Values above bit 31 cannot come from 32-bit code; the model checks them the
        same way as ``kvm_set_cr3`` does ("do not condition the GPA check on long mode")."""
        value = check_int("cr3", value, 0, 1 << 64)
        mark = self._begin()
        if not self._cr3_exits():
            cr3 = value & ~X86_CR3_PCID_NOFLUSH if self.regs.cr4 & CR4.PCIDE else value
            if cr3 >> self.maxphyaddr:
                fault = self._gp_fault("MOV to CR3 without exit", _gp(
                    f"cr3={cr3:#x}: bits above MAXPHYADDR={self.maxphyaddr} set (raised by "
                    f"the CPU; no VM exit, KVM is not involved)"))
                return self._result(mark, exited=False, fault=fault)
            self.stats["cr3_writes_no_exit"] += 1
            self._event("MOV to CR3 without exit", f"{value:#x}: CR3 is the guest's with "
                                                   "EPT/NPT; the MMU does nothing")
            self.regs = self.regs.replace(cr3=cr3)
            return self._result(mark, exited=False)
        self._exit("MOV to CR3")
        cr3 = value
        if self.regs.cr4 & CR4.PCIDE:
            cr3 &= ~X86_CR3_PCID_NOFLUSH
        pae_paging = bool(self.regs.cr0 & CR0.PG and self.regs.cr4 & CR4.PAE
                          and not self.regs.efer & EFER.LMA)
        if cr3 == self.regs.cr3 and not pae_paging:
            self._event("kvm_set_cr3", "same CR3: only the TLB flush logic runs")
        elif cr3 >> self.maxphyaddr:
            fault = self._gp_fault("kvm_set_cr3", _gp(
                f"cr3={cr3:#x}: bits above MAXPHYADDR={self.maxphyaddr} set"))
            self.kvm_mmu_reload()
            return self._result(mark, exited=True, fault=fault)
        else:
            if cr3 != self.regs.cr3:
                self._event("kvm_set_cr3", f"{self.regs.cr3:#x}->{cr3:#x}: kvm_mmu_new_pgd")
                self.regs = self.regs.replace(cr3=cr3)
                self.kvm_mmu_new_pgd(cr3)
            else:
                self._event("kvm_set_cr3", "same CR3 with PAE paging: PDPTRs reloaded")
        self.kvm_mmu_reload()
        return self._result(mark, exited=True)

    def far_jump(self, cs_l: bool) -> None:
        """Switch between 64-bit code (CS.L=1) and compatibility/legacy code (CS.L=0)."""
        if not isinstance(cs_l, bool):
            raise TypeError(f"cs_l must be a bool, not {type(cs_l).__name__}")
        if cs_l and not self.regs.efer & EFER.LMA:
            raise ValueError("cs_l=True needs long mode (EFER.LMA=1)")
        self.cs_l = cs_l

    # -- SMM and nesting --------------------------------------------------------------------
    _NESTED_SMM = {"intel": ("vmx_enter_smm", "nested_vmx_vmexit", "vmx_leave_smm",
                             "nested_vmx_enter_non_root_mode"),
                   "amd": ("svm_enter_smm", "nested_svm_simple_vmexit", "svm_leave_smm",
                           "enter_svm_guest_mode")}

    def enter_smm(self) -> WriteResult:
        """SMI: ``enter_smm`` (``arch/x86/kvm/smm.c``, 6.4) saves the state to SMRAM, lets
        the vendor hook make its changes, then ``kvm_smm_changed(true)`` (role.smm=1, a
        ``kvm_mmu_reset_context``) and loads the SMM state (CR0 without PE/EM/TS/PG, CR4=0,
        EFER=0).

        In L2 the state saved is L2's, and the vendor hook -- ``vmx_enter_smm`` /
        ``svm_enter_smm`` -- then performs a nested VM-exit to L1 (``nested_vmx_vmexit`` /
        ``nested_svm_simple_vmexit``: guest_mode=0, ``kvm_init_mmu``, L1's CR3), so a role
        never has smm=1 and guest_mode=1 together; the save area remembers that the SMI
        came from L2 (``vmx->nested.smm.guest_mode`` / SMRAM ``svm_guest_flag``).
        """
        if self.smm:
            raise ValueError("enter_smm: the vCPU is already in SMM (allowed only outside SMM)")
        mark = self._begin()
        self._exit("SMI (KVM_REQ_SMI processed on the way back in)")
        from_l2 = self.guest_mode
        self._saved_smm = (self.regs, self.cs_l, from_l2, self._saved_l1, self._l2_tdp)
        self._event("enter_smm", "state saved to SMRAM" + (" (L2's)" if from_l2 else ""))
        if from_l2:
            hook, vmexit = self._NESTED_SMM[self.vendor][:2]
            self._nested_vmexit(f"{hook}: {vmexit}", "SMI in L2: nested VM-exit to L1 before "
                                                     "SMM is entered")
        cr0 = self.regs.cr0 & ~int(CR0.PE | CR0.EM | CR0.TS | CR0.PG)
        self.regs = Regs(cr0=cr0, cr3=self.regs.cr3, cr4=0, efer=0)
        self.cs_l = False
        self.smm = True
        self._event("kvm_smm_changed", "smm=1; SMM state: CR0.PE/PG=0, CR4=0, EFER=0")
        self.kvm_mmu_reset_context()
        self.kvm_mmu_reload()
        return self._result(mark, exited=True)

    def leave_smm(self) -> WriteResult:
        """RSM: ``emulator_leave_smm`` (smm.c, 6.4): ``kvm_smm_changed(false)`` (role.smm=0,
        a ``kvm_mmu_reset_context``), then the vendor hook, then the registers saved by
        :meth:`enter_smm` are loaded from SMRAM.

        If the SMI came from L2, the hook -- ``vmx_leave_smm`` / ``svm_leave_smm`` --
        re-enters L2 (``nested_vmx_enter_non_root_mode`` / ``enter_svm_guest_mode``) before
        the saved (L2) registers are loaded, so RSM returns to L2 with guest_mode=1 and
        L1's state put back where a later VM-exit finds it.  Modelled with the one
        ``kvm_mmu_reset_context`` of every SMM transition, after the state is back.

        Refused (ValueError, nothing changed) after a bare ``kvm_smm_changed(True)``:
        that loads no state and writes no SMRAM save area, and this model has no SMRAM
        contents to invent; the kernel would load whatever SMRAM holds.  Leave such an
        SMM with ``kvm_smm_changed(False)``.
        """
        if not self.smm:
            raise ValueError("leave_smm: the vCPU is not in SMM (allowed only in SMM)")
        if self._saved_smm is None:
            raise ValueError("leave_smm: no SMRAM save area (SMM was entered by "
                             "kvm_smm_changed(True), which saves nothing); allowed only after "
                             "enter_smm -- use kvm_smm_changed(False) instead")
        mark = self._begin()
        self._exit("RSM")
        regs, cs_l, from_l2, saved_l1, l2_tdp = self._saved_smm
        self._saved_smm = None
        self.smm = False
        self._event("kvm_smm_changed", "smm=0")
        if from_l2:
            hook, _, leave, enter = self._NESTED_SMM[self.vendor]
            self._saved_l1 = saved_l1
            self.guest_mode = True
            self._event(leave, f"the SMI came from L2: {enter}, guest_mode=1, before the "
                               "SMRAM state is loaded")
            if l2_tdp is not None:
                # The re-entry sets up guest_mmu again; nested_mmu is re-initialised by
                # the reset below, once L2's registers are back.
                self._nested_tdp_switch(l2_tdp)
        self.regs, self.cs_l = regs, cs_l
        self._event("emulator_leave_smm", "registers restored from SMRAM"
                    + (" (L2's)" if from_l2 else ""))
        self.kvm_mmu_reset_context()
        self.kvm_mmu_reload()
        return self._result(mark, exited=True)

    def kvm_smm_changed(self, smm: bool) -> WriteResult:
        """``kvm_smm_changed``: is_smm() flips and the MMU context is reset (a
        ``kvm_mmu_reset_context`` caller, facts §3.2).  Unlike :meth:`enter_smm` this
        does not load the SMM register state (paging off) nor write an SMRAM save area,
        so a view can show the role's smm bit changing alone, as the role explorer does;
        :meth:`leave_smm` is then refused (no save area), and flipping it back drops any
        save area :meth:`enter_smm` wrote.

        The kernel calls it only from ``enter_smm`` (after the vendor hook left L2) and
        ``emulator_leave_smm``; calling ``kvm_smm_changed(True)`` in L2 here is a
        what-if with smm=1 and guest_mode=1, a pair the kernel never produces."""
        if not isinstance(smm, bool):
            raise TypeError(f"smm must be a bool, not {type(smm).__name__}")
        mark = self._begin()
        self._exit("SMI" if smm else "RSM")
        self.smm = smm
        self._saved_smm = None
        self._event("kvm_smm_changed", f"smm={int(smm)}")
        self.kvm_mmu_reset_context()
        self.kvm_mmu_reload()
        return self._result(mark, exited=True)

    def nested_enter(self, l2_cr0: int | None = None, l2_cr3: int | None = None,
                     l2_cr4: int | None = None, l2_efer: int | None = None, *,
                     l2_cs_l: bool | None = None, eptp: int | None = None,
                     ncr3: int | None = None, ept_level: int = 4, ept_ad: bool = True,
                     execonly: bool = False) -> WriteResult:
        """VMLAUNCH/VMRUN of an L2 guest, minimal: L1's registers are saved, L2's loaded,
        guest_mode=1 and ``kvm_init_mmu`` runs (nested entry calls it directly).

        ``l2_*`` default to L1's values.  L2's CS comes from the VMCS/VMCB guest state,
        not from L1, so ``l2_cs_l`` (L2 executes 64-bit code) defaults to L1's CS.L only
        for an L2 in IA-32e mode (EFER.LMA=1) and to False otherwise: outside IA-32e mode
        CS.L is reserved and no 64-bit code runs (SDM Vol. 3A 3.4.5; VM entry does not
        check it for such a guest, SDM 26.3.1.2), so the model clears it rather than
        refusing the entry.  ``l2_cs_l=True`` for an L2 without EFER.LMA is a bad argument.

        Default (no ``eptp``/``ncr3``): L1 does not use EPT/NPT for L2 (or the model
        ignores it), and nesting is the guest_mode bit in root_mmu's roles, so L2 gets
        roots of its own and L1's are freed or kept as the era dictates.

        Nested TDP (opt-in, vCPUs with EPT/NPT, 5.19+ eras): ``eptp`` (Intel, L1 enables
        EPT in vmcs12) or ``ncr3`` (AMD, L1 enables NPT in vmcb12).  Then, as
        ``nested_ept_init_mmu_context`` / ``nested_svm_init_mmu_context`` do,
        ``vcpu->arch.mmu`` becomes :attr:`guest_mmu` and ``walk_mmu`` becomes nested_mmu;
        root_mmu (L1's roles and roots) is left alone:

        * EPT: ``kvm_init_shadow_ept_mmu`` with cpu_role = ``nested_ept_role(ept_level,
          ept_ad, execonly)`` and root_role = its base, early return iff cpu_role.as_u64
          is unchanged; then always ``kvm_mmu_new_pgd(eptp)`` on guest_mmu.  ``ept_level``
          and ``ept_ad`` must agree with the EPTP's bits 5:3 and 6 when those are set;
          in SMM it is refused (ValueError, as ``nested_ept_role``);
        * NPT: ``kvm_init_shadow_npt_mmu`` with (cpu_role, root_role) =
          ``nested_npt_roles(L1's CR4/EFER, tdp_level)``, early return iff both are
          unchanged; then ``kvm_mmu_new_pgd(ncr3)``.  L1 must be in 4/5-level paging
          (the pml4_root over a 32-bit/PAE NPT is not modelled);
        * ``nested_vmx_load_cr3``/``nested_svm_load_cr3`` -> ``kvm_init_mmu``, which now
          runs ``init_kvm_nested_mmu`` (:attr:`nested_mmu_role`, from L2's registers);
        * ``kvm_mmu_reload`` loads a guest_mmu root from the VM's shadow hash.

        Not modelled: L1's own intercepts, INVEPT, EPTP switching (VMFUNC), EPT
        violations reflected to L1.
        """
        if self.guest_mode:
            raise ValueError("nested_enter: already running L2 (allowed only from L1)")
        tdp_spec = None
        if eptp is not None or ncr3 is not None:
            tdp_spec = self._nested_tdp_spec(eptp, ncr3, ept_level, ept_ad, execonly)
        # Bad arguments are refused before anything is counted or saved.
        r = self.regs
        new = Regs(cr0=check_int("l2_cr0", r.cr0 if l2_cr0 is None else l2_cr0, 0, 1 << 32),
                   cr3=check_int("l2_cr3", r.cr3 if l2_cr3 is None else l2_cr3, 0, 1 << 64),
                   cr4=check_int("l2_cr4", r.cr4 if l2_cr4 is None else l2_cr4, 0, 1 << 64),
                   efer=check_int("l2_efer", r.efer if l2_efer is None else l2_efer, 0, 1 << 64))
        l2_ia32e = bool(new.efer & EFER.LMA)
        if l2_cs_l is not None and not isinstance(l2_cs_l, bool):
            raise TypeError(f"l2_cs_l must be a bool or None, not {type(l2_cs_l).__name__}")
        if l2_cs_l and not l2_ia32e:
            raise ValueError(f"l2_cs_l=True needs an L2 in IA-32e mode (EFER.LMA=1), "
                             f"l2_efer={new.efer:#x}")
        cs_l = (self.cs_l and l2_ia32e) if l2_cs_l is None else l2_cs_l
        mark = self._begin()
        self._exit("VMLAUNCH/VMRUN")
        self._saved_l1 = (self.regs, self.cs_l)
        from mmu.x86.regs import paging_mode
        try:
            paging_mode(new)
        except ValueError as e:
            fault = self._gp_fault("nested_vmx_run", _gp(f"invalid L2 state: {e}"))
            self._saved_l1 = None
            self.kvm_mmu_reload()
            return self._result(mark, exited=True, fault=fault)
        self.regs, self.cs_l = new, cs_l
        self.guest_mode = True
        self._event("nested entry", "L2 state loaded; guest_mode=1; kvm_init_mmu"
                    + ("; CS.L=0 (L2 not in IA-32e mode)"
                       if self._saved_l1[1] and not l2_ia32e else ""))
        if tdp_spec is not None:
            self._nested_tdp_switch(tdp_spec)
            # nested_{vmx,svm}_load_cr3 with nested TDP: no kvm_mmu_new_pgd for L2's CR3
            # (it is a guest-physical pointer the hardware walks), only kvm_init_mmu.
            self.kvm_init_mmu()
        else:
            self.kvm_init_mmu()
            self.kvm_mmu_new_pgd(new.cr3)
        self.kvm_mmu_reload()
        return self._result(mark, exited=True)

    # -- nested TDP: guest_mmu and nested_mmu --------------------------------------------
    _INIT = {"ept": ("nested_ept_init_mmu_context", "kvm_init_shadow_ept_mmu"),
             "npt": ("nested_svm_init_mmu_context", "kvm_init_shadow_npt_mmu")}
    _UNINIT = {"ept": "nested_ept_uninit_mmu_context", "npt": "nested_svm_uninit_mmu_context"}

    def _nested_tdp_spec(self, eptp: int | None, ncr3: int | None, ept_level: int,
                         ept_ad: bool, execonly: bool) -> _NestedTdp:
        """Check the nested-TDP arguments and compute guest_mmu's roles; raises before
        anything is counted or changed."""
        from mmu.kvm import roles
        if eptp is not None and ncr3 is not None:
            raise ValueError("nested_enter: give eptp (Intel) or ncr3 (AMD), not both")
        if not self.tdp_enabled:
            raise ValueError("nested_enter: eptp/ncr3 need a vCPU with EPT/NPT (mmu='tdp' or "
                             "'legacy'), not mmu='shadow'")
        if not self.era.role_split:
            raise ValueError(f"nested_enter: nested TDP is modelled for the 5.19+ roles "
                             f"(role_split), not kernel {self.era.name}")
        for name, value in (("ept_ad", ept_ad), ("execonly", execonly)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, not {type(value).__name__}")
        limit = 1 << self.maxphyaddr
        if eptp is not None:
            if self.vendor != "intel":
                raise ValueError("nested_enter: eptp is Intel's (nested VMX); allowed only "
                                 "with vendor='intel' -- use ncr3 on AMD")
            eptp = check_int("eptp", eptp, 0, 1 << 64)
            if eptp & ~0xFFF >= limit:
                raise ValueError(f"eptp={eptp:#x}: address bits at or above "
                                 f"MAXPHYADDR={self.maxphyaddr}")
            # nested_ept_role checks ept_level (4 or 5) and refuses SMM.
            role = roles.nested_ept_role(ept_level, ept_ad, execonly, smm=self.smm)
            walk_bits = (eptp >> 3) & 7
            if walk_bits and walk_bits + 1 != ept_level:
                raise ValueError(f"eptp={eptp:#x} has a {walk_bits + 1}-level walk length "
                                 f"(bits 5:3) but ept_level={ept_level}")
            if eptp & 0x7F and bool(eptp & (1 << 6)) != ept_ad:
                raise ValueError(f"eptp={eptp:#x}: A/D enable (bit 6) is "
                                 f"{int(bool(eptp & (1 << 6)))} but ept_ad={ept_ad}")
            return _NestedTdp("ept", eptp, role, role.base)
        if self.vendor != "amd":
            raise ValueError("nested_enter: ncr3 is AMD's (nested SVM); allowed only with "
                             "vendor='amd' -- use eptp on Intel")
        ncr3 = check_int("ncr3", ncr3, 0, limit)
        cpu, root = roles.nested_npt_roles(self.regs, self.vm.tdp_level, smm=self.smm)
        if cpu.base.level < 4:
            raise ValueError(f"nested NPT over L1's {cpu.base.level}-level paging is not "
                             "modelled (KVM's pml4_root over pae_root): allowed only L1 in "
                             "4- or 5-level paging")
        return _NestedTdp("npt", ncr3, cpu, root)

    def _nested_tdp_switch(self, spec: _NestedTdp) -> None:
        """``nested_{ept,svm}_init_mmu_context``: vcpu->arch.mmu = guest_mmu, then
        ``kvm_init_shadow_{ept,npt}_mmu`` and ``kvm_mmu_new_pgd(EPTP/nCR3)`` on it;
        walk_mmu = nested_mmu.  root_mmu is not touched."""
        gm = self.guest_mmu
        setup, init = self._INIT[spec.kind]
        self._mmu_is_guest = True
        self._l2_tdp = spec
        self._event(setup, "vcpu->arch.mmu = guest_mmu, walk_mmu = nested_mmu; root_mmu "
                           "and its roots are left as L1 had them")
        self.stats["guest_mmu_inits"] += 1
        # EPT compares only cpu_role.as_u64 (root_role is its base); NPT goes through
        # shadow_mmu_init_context, which compares cpu_role and root_role (facts §2.3).
        same = (gm.kind == spec.kind and gm.cpu_role is not None
                and gm.cpu_role.as_u64 == spec.cpu_role.as_u64
                and gm.root_role.word == spec.root_role.word)
        if same:
            self.stats["guest_mmu_init_early_returns"] += 1
            self._event(f"{init}: early return", "guest_mmu cpu_role unchanged"
                        + (" (and root_role)" if spec.kind == "npt" else ""))
        else:
            changes = []
            if gm.cpu_role is not None:
                changes += [f"cpu_role.{f} {a}->{b}" for f, a, b in gm.cpu_role.diff(spec.cpu_role)]
                changes += [f"root_role.{f} {a}->{b}"
                            for f, a, b in gm.root_role.diff(spec.root_role)]
            gm.kind, gm.cpu_role, gm.root_role = spec.kind, spec.cpu_role, spec.root_role
            self._event(init, "guest_mmu: " + (", ".join(changes) or "first init")
                        + f"; cpu_role={spec.cpu_role.as_u64:#x} "
                          f"root_role={spec.root_role.word:#x}")
        gm.pgd = spec.pointer
        self._guest_mmu_new_pgd(spec.pointer)

    def _init_kvm_nested_mmu(self) -> bool:
        """``kvm_init_mmu`` while ``mmu_is_nested``: ``init_kvm_nested_mmu`` stores only
        nested_mmu's CPU role (L2's GVA walker; it has no roots).  True if it changed."""
        from mmu.kvm import roles
        self.stats["nested_mmu_inits"] += 1
        new = roles.nested_mmu_role(self.regs, smm=self.smm)
        if self.nested_mmu_role is not None and new.as_u64 == self.nested_mmu_role.as_u64:
            self.stats["nested_mmu_init_early_returns"] += 1
            self._event("init_kvm_nested_mmu: early return", "nested_mmu cpu_role unchanged")
            return False
        changes = ([] if self.nested_mmu_role is None else
                   [f"cpu_role.{f} {a}->{b}" for f, a, b in self.nested_mmu_role.diff(new)])
        self.nested_mmu_role = new
        self._event("init_kvm_nested_mmu", "nested_mmu (L2 GVA walker): "
                    + (", ".join(changes) or "first init") + "; root_mmu and guest_mmu untouched")
        return True

    def _guest_mmu_new_pgd(self, new_pgd: int) -> None:
        """``kvm_mmu_new_pgd`` on guest_mmu: ``fast_pgd_switch`` over guest_mmu's own
        current root and prev_roots, with guest_mmu's root_role (indirect: the PGD --
        the EPTP/nCR3 -- must match too)."""
        gm = self.guest_mmu
        self.stats["guest_mmu_new_pgd_calls"] += 1
        self._report_switch(gm.cache.fast_pgd_switch(new_pgd, gm.root_role), new_pgd,
                            "guest_mmu")

    def _guest_mmu_load(self) -> None:
        """``kvm_mmu_load`` on guest_mmu: ``mmu_alloc_shadow_roots`` for the gfn of the
        EPTP/nCR3 with guest_mmu's root role -- a shadow page of the VM's hash, found
        again there if an earlier root was only freed from the cache."""
        gm = self.guest_mmu
        self.stats["guest_mmu_loads"] += 1
        root, created, reused = self.vm.shadow.alloc_shadow_roots(gm.cpu_role, gm.root_role,
                                                                  gm.pgd)
        gm._roots[root.hpa] = root
        gm._root_refs[root.hpa] += 1
        gm.cache.root = RootInfo(gm.pgd, root.hpa)
        self.stats["guest_mmu_roots_created"] += int(created)
        self.stats["guest_mmu_roots_reused"] += int(reused)
        outcome = "created" if created else "hash hit"
        self._event(f"kvm_mmu_load (guest_mmu): {outcome}",
                    f"mmu_alloc_shadow_roots: gfn={(gm.pgd & ~0xFFF) >> 12:#x} "
                    f"role={gm.root_role.word:#x}; hpa={root.hpa:#x}")

    def nested_exit(self) -> WriteResult:
        """VM-exit from L2 to L1: L1's registers back, guest_mode=0, ``kvm_init_mmu`` and
        ``kvm_mmu_new_pgd(L1 CR3)`` (as ``nested_vmx_load_cr3``/``nested_svm_load_cr3``)."""
        if not self.guest_mode:
            raise ValueError("nested_exit: not running L2 (allowed only from L2)")
        mark = self._begin()
        self._exit("L2 exit reflected to L1")
        self._nested_vmexit("nested exit", "L1 state restored; guest_mode=0")
        self.kvm_mmu_reload()
        return self._result(mark, exited=True)

    def _nested_vmexit(self, func: str, detail: str) -> None:
        """The MMU side of a nested VM-exit: L1's registers back, guest_mode=0,
        ``kvm_init_mmu`` and ``kvm_mmu_new_pgd(L1 CR3)``."""
        self.regs, self.cs_l = self._saved_l1
        self._saved_l1 = None
        self.guest_mode = False
        self._event(func, detail)
        if self._mmu_is_guest:
            # guest_mmu keeps its roots (current + prev_roots) for the next entry.
            self._mmu_is_guest = False
            self._event(self._UNINIT[self._l2_tdp.kind],
                        "vcpu->arch.mmu = walk_mmu = root_mmu; guest_mmu keeps its roots")
        self._l2_tdp = None
        self.kvm_init_mmu()
        self.kvm_mmu_new_pgd(self.regs.cr3)

    # -- boot sequences --------------------------------------------------------------------
    def boot_protected(self, *, pae: bool = False, cr3: int = 0x1000, nx: bool = True,
                       wp: bool = True) -> list[WriteResult]:
        """Real mode -> protected mode with 32-bit or PAE paging, in the order a 32-bit
        Linux does it: CR0.PE, CR4 (PSE[, PAE]), CR3, EFER.NX (PAE only), CR0.PG|WP.

        The first CR0 write (ET|PE|NE) also clears the CD|NW left by RESET
        (:data:`RESET_CR0`): firmware turns the caches on before any kernel runs, and a
        running kernel's CR0 has neither bit.  The model folds that into one write."""
        self._check_real_mode("boot_protected")
        base = int(CR0.ET | CR0.PE | CR0.NE)
        out = [self.set_cr0(base)]
        out.append(self.set_cr4(int(CR4.PSE | (CR4.PAE if pae else 0))))
        out.append(self.set_cr3(cr3))
        if pae and nx:
            out.append(self.set_efer(int(EFER.NXE)))
        out.append(self.set_cr0(base | int(CR0.PG) | (int(CR0.WP) if wp else 0)))
        return out

    def boot_long_mode(self, *, cr3: int = 0x1000, la57: bool = False, nx: bool = True,
                       smep: bool = False, smap: bool = False, pge: bool = True
                       ) -> list[WriteResult]:
        """Real mode -> 4/5-level long mode as a 64-bit kernel's entry does: CR0.PE,
        CR4.PAE|PSE[|LA57], CR3, EFER.LME|SCE[|NX], CR0.PG|WP (LMA becomes 1), far jump to
        64-bit code, then the kernel's own CR4 features (PGE, SMEP, SMAP) in one write.
        As in :meth:`boot_protected`, the first CR0 write clears RESET's CD|NW."""
        self._check_real_mode("boot_long_mode")
        base = int(CR0.ET | CR0.PE | CR0.NE)
        out = [self.set_cr0(base)]
        out.append(self.set_cr4(int(CR4.PAE | CR4.PSE | (CR4.LA57 if la57 else 0))))
        out.append(self.set_cr3(cr3))
        out.append(self.set_efer(int(EFER.LME | EFER.SCE | (EFER.NXE if nx else 0))))
        out.append(self.set_cr0(base | int(CR0.PG | CR0.WP)))
        self.far_jump(True)
        extra = (int(CR4.PGE) if pge else 0) | (int(CR4.SMEP) if smep else 0) | \
            (int(CR4.SMAP) if smap else 0)
        if extra:
            out.append(self.set_cr4(self.regs.cr4 | extra))
        return out

    def _check_real_mode(self, who: str) -> None:
        if self.regs.cr0 & (CR0.PE | CR0.PG):
            raise ValueError(f"{who}: the vCPU must be in real mode (CR0.PE=0), "
                             f"cr0={self.regs.cr0:#x}")

    # -- what-if ---------------------------------------------------------------------------
    _WRITERS = {"cr0": "set_cr0", "cr3": "set_cr3", "cr4": "set_cr4", "efer": "set_efer"}

    def preview(self, **reg_changes: int) -> Preview:
        """What writing ``cr0=``/``cr3=``/``cr4=``/``efer=`` (in the order given) would do,
        run on a copy: events, counter increments and the roles afterwards.  The vCPU and
        its VM are left exactly as they were."""
        for name in reg_changes:
            if name not in self._WRITERS:
                raise ValueError(f"preview: unknown register {name!r}: allowed "
                                 f"{tuple(self._WRITERS)}")
        twin = copy.deepcopy(self)
        twin.events = []
        twin.max_events = max(self.max_events, 10_000)
        before = Counter(twin.stats)
        results = tuple(getattr(twin, self._WRITERS[n])(v) for n, v in reg_changes.items())
        delta = {k: twin.stats[k] - before[k] for k in twin.stats if twin.stats[k] != before[k]}
        return Preview(results, tuple(twin.events), delta, twin.cpu_role, twin.root_role)

    what_if = preview

    def __repr__(self) -> str:
        r = self.regs
        return (f"VCpu({self.describe()}; cr0={r.cr0:#x} cr3={r.cr3:#x} cr4={r.cr4:#x} "
                f"efer={r.efer:#x}{' smm' if self.smm else ''}"
                f"{' L2' if self.guest_mode else ''}; root={self.cache.root})")


def _names(flags: type, value: int) -> str:
    """``CR0.WP|CR0.PG``: the register bits in ``value``, for event text readers see."""
    return "|".join(f"{flags.__name__}.{m.name}" for m in flags if m & value) or "none"
