"""The vendor's intercept policy: one interface, one class per vendor (``struct kvm_x86_ops``).

KVM's common code (``x86.c``, ``mmu/mmu.c``, ``smm.c``) reaches the vendor module through
``kvm_x86_ops`` (``vmx_x86_ops`` in ``arch/x86/kvm/vmx/vmx.c``, ``svm_x86_ops`` in
``arch/x86/kvm/svm/svm.c``).  :class:`VendorOps` is the part of that table this model
needs, plus the vendor's names for the functions the common parts log:

* **which guest register writes VM-exit** -- :meth:`~VendorOps.cr0_write_exits`,
  :meth:`~VendorOps.cr4_write_exits`, :meth:`~VendorOps.cr3_write_exits`.  VMX decides
  per bit (the CR0/CR4 guest/host masks and read shadows, CR3-load exiting:
  ``vmx_l1_guest_owned_cr0_bits``, ``init_vmcs``, ``vmx_set_cr0``); SVM by intercept
  (``svm_set_cr0``, ``INTERCEPT_CR0_WRITE``/``INTERCEPT_CR4_WRITE``, the selective CR0
  write intercept).  A write that does not exit changes the register without KVM ever
  running, so the MMU's roles are not recomputed (the 6.4 CR0.WP story, facts §3.3);
* **what the guest's CPUID offers** that the common checks consult -- :attr:`has_svm`
  (``__kvm_valid_efer``: EFER.SVME needs SVM);
* **the vendor's SMM hooks** -- :attr:`smm` (``enter_smm``/``leave_smm`` in
  ``kvm_x86_ops``, which leave and re-enter L2 around SMM);
* **its nested TDP** -- :attr:`nested` (EPT in ``vmx/nested.c``, NPT in
  ``svm/nested.c``: the guest_mmu set-up and tear-down functions).

Adding a vendor is one new subclass of :class:`VendorOps` in a module of its own,
implementing the abstract methods and setting the class attributes, plus one row in
:data:`VENDOR_CLASSES`; nothing in the common parts branches on the vendor's name.  PVM
(:mod:`mmu.kvm.pvm`, ``arch/x86/kvm/pvm/``) was added that way: every CR write traps, shadow
paging only, and ``smm``/``nested`` are None (the common SMM and nested entries refuse).  An instance is made per VM (``Vm.x86_ops``) with the
VM's era and whether EPT/NPT is on, as ``vmx_x86_ops``/``svm_x86_ops`` read their module
parameters (``enable_ept``, ``npt_enabled``).
"""
from __future__ import annotations

import abc
import importlib
from typing import ClassVar, NamedTuple

from mmu.kvm.eras import Era

__all__ = ["VendorOps", "SmmNames", "NestedTdpNames", "NestedEntryNames", "VENDOR_CLASSES",
           "VENDORS", "ALL_VENDORS", "x86_ops"]


class SmmNames(NamedTuple):
    """The vendor's SMM hooks and the nested transitions they perform when an SMI hits L2."""

    enter: str              # kvm_x86_ops.enter_smm (vmx_enter_smm / svm_enter_smm)
    nested_vmexit: str      # what enter_smm calls to leave L2 first
    leave: str              # kvm_x86_ops.leave_smm
    nested_reentry: str     # what leave_smm calls to go back into L2


class NestedTdpNames(NamedTuple):
    """The vendor's nested TDP: the kind of L1 table guest_mmu shadows and the functions."""

    kind: str               # "ept" or "npt": GuestMmu.kind
    pointer: str            # the nested_enter argument that carries it ("eptp" / "ncr3")
    init_context: str       # nested_{ept,svm}_init_mmu_context
    init_shadow_mmu: str    # kvm_init_shadow_{ept,npt}_mmu (mmu.c)
    uninit_context: str     # nested_{ept,svm}_uninit_mmu_context


class NestedEntryNames(NamedTuple):
    """The vendor's nested entry: the L1 instruction and the check that answers it with #UD
    when L1 cannot enter a guest (outside VMX operation / with EFER.SVME=0, as in SMM)."""

    instruction: str        # "VMLAUNCH" / "VMRUN"
    check_permission: str   # nested_vmx_check_permission / nested_svm_check_permissions


class VendorOps(abc.ABC):
    """One vendor's answers to the common code (``struct kvm_x86_ops``), for one VM.

    ``era`` and ``tdp_enabled`` are the VM's: a vendor may consult the era's flags (e.g.
    VMX's guest-owned CR0.WP, fb509f76acc8) but never a version string.  Instances hold
    no vCPU state, so every vCPU of the VM shares one.
    """

    #: The ``VCpu(vendor=...)`` name.
    name: ClassVar[str]
    #: The kernel file whose policy the class follows (for docs and tables).
    source: ClassVar[str]
    #: Whether the guest's CPUID has SVM (``__kvm_valid_efer`` refuses EFER.SVME without
    #: it); only AMD's vendor offers it.
    has_svm: ClassVar[bool] = False
    #: The SMM hooks' names (see :class:`SmmNames`); None: the vendor never delivers an SMI.
    smm: ClassVar[SmmNames | None]
    #: Nested TDP's names (see :class:`NestedTdpNames`); None: no nested virtualisation.
    nested: ClassVar[NestedTdpNames | None]
    #: The nested entry's names (see :class:`NestedEntryNames`); None with ``nested``.
    nested_entry: ClassVar[NestedEntryNames | None]

    def __init__(self, era: Era, tdp_enabled: bool) -> None:
        self.era = era
        self.tdp_enabled = tdp_enabled

    @abc.abstractmethod
    def cr0_write_exits(self, old: int, new: int) -> tuple[bool, str]:
        """Does a guest MOV to CR0 from ``old`` to ``new`` VM-exit?  Returns (exits, why);
        ``why`` is shown to the reader in the vm-exit (or no-exit) event."""

    @abc.abstractmethod
    def cr4_write_exits(self, old: int, new: int) -> bool:
        """Does a guest MOV to CR4 from ``old`` to ``new`` VM-exit?"""

    def cr3_write_exits(self) -> bool:
        """Does a guest MOV to CR3 VM-exit?  Both vendors: only without EPT/NPT (VMX runs
        with EPT without CR3-load exiting, SVM with NPT does not intercept CR3 writes);
        shadow paging must see every CR3 load."""
        return not self.tdp_enabled

    def l2_cr3_checked(self, l2_cr0: int, l2_efer: int) -> bool:
        """Does a nested entry refuse an L2 CR3 with bits at or above MAXPHYADDR?  VMX on
        every entry (6.4 vmx/nested.c ``nested_vmx_load_cr3``: ``kvm_vcpu_is_illegal_gpa``;
        SDM Vol. 3C 27.3.1.1, checks on guest control registers); SVM overrides it."""
        return True

    def __repr__(self) -> str:
        return f"{type(self).__name__}(era={self.era.name}, tdp_enabled={self.tdp_enabled})"


#: vendor name -> (module, class).  A new vendor is one more row (and its module).
VENDOR_CLASSES: dict[str, tuple[str, str]] = {
    "intel": ("mmu.kvm.vmx", "VmxOps"),
    "amd": ("mmu.kvm.svm", "SvmOps"),
    "pvm": ("mmu.kvm.pvm", "PvmOps"),
}
#: Every vendor a VM can be made with.
ALL_VENDORS: tuple[str, ...] = tuple(VENDOR_CLASSES)
#: The hardware-virtualisation vendors (VMX, SVM), on which every MMU kind exists; what
#: ranges over vendor x MMU kind (views, golden corpus, properties) uses these.  PVM runs
#: shadow paging only (:mod:`mmu.kvm.pvm`).
VENDORS: tuple[str, ...] = ("intel", "amd")


def x86_ops(vendor: str, era: Era, tdp_enabled: bool) -> VendorOps:
    """The :class:`VendorOps` of ``vendor`` for a VM of ``era``, with or without EPT/NPT."""
    if not isinstance(vendor, str) or vendor not in VENDOR_CLASSES:
        raise ValueError(f"vendor={vendor!r}: allowed {ALL_VENDORS}")
    module, cls = VENDOR_CLASSES[vendor]
    return getattr(importlib.import_module(module), cls)(era, tdp_enabled)
