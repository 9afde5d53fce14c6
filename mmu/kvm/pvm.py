"""PVM's intercept policy (``arch/x86/kvm/pvm/pvm.c``; out of tree, github.com/virt-pvm/linux).

PVM, the "pagetable-based virtual machine", runs a guest without VMX or SVM: the guest's
supervisor mode runs in hardware ring 3 and every privileged instruction it executes
faults into the hypervisor, which emulates it (on this project's machines the backend
goes further and runs all kernel-mode guest code in KVM's instruction emulator,
``../shared/reference/real-kvm-notes.md``).  What that means for the common code:

* **every guest MOV to CR0, CR3 or CR4 reaches** ``kvm_set_cr0``/``kvm_set_cr3``/
  ``kvm_set_cr4``: no bit is guest-owned, so CR0.WP toggles always run KVM's MMU code,
  unlike VMX with EPT since 6.4 (:mod:`mmu.kvm.vmx`);
* **shadow paging only**: ``hardware_setup`` calls ``kvm_configure_mmu(false, ...)``, so
  there is no EPT/NPT and no TDP MMU; a VM with ``mmu`` other than "shadow" is refused;
* **no SMM**: ``pvm_smi_allowed`` always answers 0, so no SMI is ever delivered;
* **no nested virtualisation**: ``pvm_nested_ops`` is empty;
* ``pvm_set_cpu_caps`` clears SMEP and SMAP from the supported CPUID (the MMU still honours
  CR4.SMEP/SMAP when the guest sets them, as the host experiments show), and LA57 unless
  the host itself uses 5-level paging.

The roles, the root lookups, the shadow tree and the #PF error codes are the common MMU's
(``mmu.c``, ``paging_tmpl.h``) and do not depend on this class.  A user-mode #PF is
delivered through PVM's own event entry (``do_pvm_user_event``), which a guest that never
registered its ``MSR_PVM_VCPU_STRUCT`` cannot take: it triple-faults.
"""
from __future__ import annotations

from mmu.kvm.eras import Era
from mmu.kvm.vendor import VendorOps

__all__ = ["PvmOps"]


class PvmOps(VendorOps):
    """``pvm_x86_ops``: every CR write traps; shadow paging only; no SMM, no nested."""

    name = "pvm"
    source = "arch/x86/kvm/pvm/pvm.c (virt-pvm/linux)"
    smm = None         # pvm_smi_allowed() == 0: the common SMM path never runs
    nested = None      # pvm_nested_ops = {}: no nested VMX/SVM for the guest
    nested_entry = None

    def __init__(self, era: Era, tdp_enabled: bool) -> None:
        if tdp_enabled:
            raise ValueError("vendor='pvm' has no EPT/NPT (hardware_setup: kvm_configure_mmu("
                             "false, ...)): mmu must be 'shadow'")
        super().__init__(era, tdp_enabled)

    def cr0_write_exits(self, old: int, new: int) -> tuple[bool, str]:
        return True, ("PVM: supervisor code runs deprivileged (or emulated), so every MOV "
                      "to CR0 reaches kvm_set_cr0")

    def cr4_write_exits(self, old: int, new: int) -> bool:
        return True
