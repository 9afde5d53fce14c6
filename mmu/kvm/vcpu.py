"""A vCPU whose control-register writes drive KVM's MMU the way a given kernel does.

:class:`VCpu` is the composition of parts that each mirror one kernel file, so each can
be read beside its counterpart (docs/design.md has the table):

* :mod:`mmu.kvm.cr` -- ``x86.c``: ``kvm_set_cr0``/``kvm_post_set_cr0``,
  ``kvm_set_cr4``/``kvm_post_set_cr4``, ``set_efer``, ``kvm_set_cr3``;
* :mod:`mmu.kvm.mmu_context` -- ``mmu/mmu.c``, ``mmu.h``: ``kvm_init_mmu`` and its early
  return, ``kvm_mmu_reset_context``, ``kvm_mmu_load``/``unload``/``reload``,
  ``kvm_mmu_new_pgd``, the 6.4 passthrough refresh;
* :mod:`mmu.kvm.vendor` -- ``struct kvm_x86_ops``: the vendor interface, implemented by
  :mod:`mmu.kvm.vmx` (``vmx/vmx.c``) and :mod:`mmu.kvm.svm` (``svm/svm.c``): which writes
  exit, which bits are guest-owned, CD/NW and the read shadow;
* :mod:`mmu.kvm.smm` -- ``smm.c``: SMI, RSM, ``kvm_smm_changed``;
* :mod:`mmu.kvm.nested` -- ``vmx/nested.c``, ``svm/nested.c``: L2 entry/exit, guest_mmu,
  nested_mmu;
* :mod:`mmu.kvm.trace` -- ``trace.h``, ``struct kvm_vcpu_stat``: events and counters;
* :mod:`mmu.kvm.eras` -- which kernel behaviour applies (flags, and methods combining them).

This module keeps what belongs to no single kernel file: :class:`Vm` (``struct
kvm_arch``: the shadow hash and TDP roots every vCPU of a VM shares, and the VM's
:class:`~mmu.kvm.vendor.VendorOps`), the RESET state of ``kvm_vcpu_reset`` (CR0 =
ET|CD|NW), the guest's boot sequences and :meth:`VCpu.preview`.  Which version of each
kernel function runs is decided by an :class:`~mmu.kvm.eras.Era` (facts §2-§5, §3.2,
§3.3), which the parts consult through its flags and methods.

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
(``cs_l`` stands for "executing 64-bit code"); ``load_pdptrs`` always succeeds; no CPUID
(every CR4 feature exists but SMXE/PKS); SMM entry/exit does one ``kvm_mmu_reset_context`` each
(:mod:`mmu.kvm.smm`); L1's intercepts are not modelled (:mod:`mmu.kvm.nested`).
"""
from __future__ import annotations

import copy
from collections import Counter
from typing import Any

from mmu.kvm.cr import (KVM_MMU_CR0_ROLE_BITS, KVM_MMU_CR4_ROLE_BITS, RESET_CR0, CrWrites)
from mmu.kvm.eras import Era, era as make_era
from mmu.kvm.mmu_context import MmuContext
from mmu.kvm.nested import GuestMmu, Nested, NestedTdp
from mmu.kvm.root_cache import RootCache
from mmu.kvm.smm import Smm
from mmu.kvm.trace import Event, Preview, Trace, WriteResult
from mmu.kvm.vendor import ALL_VENDORS, VENDORS, VendorOps, x86_ops as make_x86_ops
from mmu.x86.bits import MAX_PHYS_BITS, PAGE_SHIFT, PAGE_SIZE, check_int
from mmu.x86.memory import GuestMemory
from mmu.x86.regs import CR0, CR4, EFER, Regs

__all__ = ["VCpu", "Vm", "Event", "WriteResult", "Preview", "GuestMmu", "MMU_KINDS", "VENDORS",
           "KVM_MMU_CR0_ROLE_BITS", "KVM_MMU_CR4_ROLE_BITS", "RESET_CR0"]

MMU_KINDS = ("tdp", "legacy", "shadow")


class Vm:
    """The per-VM MMU state shared by all vCPUs of a VM (``struct kvm_arch``): the
    shadow-page hash and the TDP MMU's roots, plus the set-up every vCPU shares: the
    era, the MMU kind, the vendor and its :class:`~mmu.kvm.vendor.VendorOps`."""

    def __init__(self, mem: GuestMemory | None = None, kernel: "str | Era" = "6.4",
                 mmu: str = "tdp", vendor: str = "intel", tdp_level: int = 4, *,
                 ram_size: int | None = None, **features: bool) -> None:
        if mem is not None and not isinstance(mem, GuestMemory):
            raise TypeError(f"mem must be a GuestMemory or None, not {type(mem).__name__}")
        if not isinstance(mmu, str) or mmu not in MMU_KINDS:
            raise ValueError(f"mmu={mmu!r}: allowed {MMU_KINDS}")
        if not isinstance(vendor, str) or vendor not in ALL_VENDORS:
            raise ValueError(f"vendor={vendor!r}: allowed {ALL_VENDORS}")
        if isinstance(tdp_level, bool) or not isinstance(tdp_level, int):
            raise TypeError(f"tdp_level must be an int, not {type(tdp_level).__name__}")
        if tdp_level not in (4, 5):
            raise ValueError(f"tdp_level={tdp_level}: allowed (4, 5)")
        if ram_size is not None:
            ram_size = check_int("ram_size", ram_size, PAGE_SIZE, (1 << MAX_PHYS_BITS) + 1)
            if ram_size % PAGE_SIZE:
                raise ValueError(f"ram_size={ram_size:#x}: allowed a multiple of {PAGE_SIZE:#x}")
        #: Guest RAM in bytes: the one memslot covers gfns below ``ram_size >> 12``; None
        #: (the default) covers every gfn below 2**52 (``kvm_vcpu_is_visible_gfn``).
        self.ram_size = ram_size
        self.era = make_era(kernel, **features)
        self.kind = mmu
        self.vendor = vendor
        self.tdp_level = tdp_level
        #: The vendor's intercept policy for this VM (``kvm_x86_ops``).
        self.x86_ops: VendorOps = make_x86_ops(vendor, self.era, mmu != "shadow")
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

    def gfn_visible(self, gfn: int) -> bool:
        """``kvm_vcpu_is_visible_gfn``: is ``gfn`` in a memslot (below ``ram_size``)?"""
        return self.ram_size is None or gfn < self.ram_size >> PAGE_SHIFT


def _check_agrees_with_vm(vm: Vm, mem, kernel, mmu, vendor, tdp_level, ram_size,
                          features: dict) -> None:
    """``VCpu(vm=...)``: every set-up argument given must be the VM's own (issue 14, V4);
    raises before anything is built."""
    given = {"mmu": (mmu, vm.kind), "vendor": (vendor, vm.vendor),
             "tdp_level": (tdp_level, vm.tdp_level), "ram_size": (ram_size, vm.ram_size)}
    for name, (value, own) in given.items():
        if value is not None and value != own:
            raise ValueError(f"{name}={value!r} conflicts with vm (its {name} is {own!r}): "
                             f"with vm= leave {name} unset or give the VM's value")
    if mem is not None and mem is not vm.mem:
        raise ValueError("mem conflicts with vm (a vCPU uses its VM's memory, vm.mem): with "
                         "vm= leave mem unset or pass vm.mem")
    if kernel is not None or features:
        want = make_era(vm.era if kernel is None else kernel, **features)
        if want.flags() != vm.era.flags():
            raise ValueError(f"kernel={want.name!r} conflicts with vm (its era is "
                             f"{vm.era.name!r}; differing flags "
                             f"{[f for f, _, _ in want.diff(vm.era)]}): with vm= leave kernel "
                             "and the era flags unset or give the VM's")


class VCpu(CrWrites, MmuContext, Smm, Nested, Trace):
    """One vCPU, reset into real mode (CR0 = :data:`RESET_CR0` = ET|CD|NW: caches and
    paging off), with an invalid root.

    ``kernel`` is an era name ("5.15", "5.18", "5.19", "6.1", "6.4", "6.12", "6.18") or an
    Era; ``**features`` override era flags (``VCpu(kernel="6.1", cr0_wp_tdp_no_unload=True)``).
    ``ram_size`` bounds the VM's memslot (:class:`Vm`).  ``vm`` attaches the vCPU to an
    existing :class:`Vm` (another vCPU's ``.vm``) so roots are shared; the set-up is then the
    VM's: ``mem``/``kernel``/``mmu``/``vendor``/``tdp_level``/``ram_size``/features left unset
    (None) take the VM's, and a value given that differs from the VM's raises ValueError
    naming it (a vCPU cannot differ from its VM).  Without ``vm``, unset arguments take the
    defaults "6.4", "tdp", "intel", 4 and no memslot bound.

    The behaviour comes from the parts (see the module docstring): register writes
    (:class:`~mmu.kvm.cr.CrWrites`), the MMU context (:class:`~mmu.kvm.mmu_context.MmuContext`),
    SMM (:class:`~mmu.kvm.smm.Smm`), nesting (:class:`~mmu.kvm.nested.Nested`) and the log
    (:class:`~mmu.kvm.trace.Trace`); the vendor's policy is ``vm.x86_ops``.
    """

    def __init__(self, mem: GuestMemory | None = None, kernel: "str | Era | None" = None,
                 mmu: str | None = None, vendor: str | None = None,
                 tdp_level: int | None = None, *, vm: Vm | None = None, maxphyaddr: int = 52,
                 max_events: int = 100_000, ram_size: int | None = None,
                 **features: bool) -> None:
        if vm is None:
            vm = Vm(mem, "6.4" if kernel is None else kernel, "tdp" if mmu is None else mmu,
                    "intel" if vendor is None else vendor, 4 if tdp_level is None else tdp_level,
                    ram_size=ram_size, **features)
        elif not isinstance(vm, Vm):
            raise TypeError(f"vm must be a Vm, not {type(vm).__name__}")
        else:
            _check_agrees_with_vm(vm, mem, kernel, mmu, vendor, tdp_level, ram_size, features)
        self.vm = vm
        self.maxphyaddr = check_int("maxphyaddr", maxphyaddr, 36, 53)
        self.max_events = check_int("max_events", max_events, 0, 1 << 40)
        self.regs = Regs(cr0=RESET_CR0, cr3=0, cr4=0, efer=0)      # kvm_vcpu_reset
        self.smm = False
        self.guest_mode = False
        #: A triple fault ended the vCPU's run (KVM_EXIT_SHUTDOWN): guest operations refuse.
        self.shut_down = False
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
        self._l2_tdp: NestedTdp | None = None
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
    def x86_ops(self) -> VendorOps:
        """The VM's vendor policy (:class:`~mmu.kvm.vendor.VendorOps`)."""
        return self.vm.x86_ops

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

    def far_jump(self, cs_l: bool) -> None:
        """Switch between 64-bit code (CS.L=1) and compatibility/legacy code (CS.L=0)."""
        if not isinstance(cs_l, bool):
            raise TypeError(f"cs_l must be a bool, not {type(cs_l).__name__}")
        if cs_l and not self.regs.efer & EFER.LMA:
            raise ValueError("cs_l=True needs long mode (EFER.LMA=1)")
        self.cs_l = cs_l

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
