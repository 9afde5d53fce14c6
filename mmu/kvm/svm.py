"""AMD SVM's intercept policy (``arch/x86/kvm/svm/svm.c``).

SVM has no per-bit CR0 ownership: a CR0 write is intercepted wholly or selectively.
``svm_set_cr0`` (5.12+ form with ``hcr0``) computes the hardware CR0 from the guest's:
plus PG|WP without NPT (shadow paging needs them), minus CD|NW under
``KVM_X86_QUIRK_CD_NW_CLEARED`` (a quirk KVM enables by default; QEMU leaves it on).  If
that differs from the guest's CR0, ``INTERCEPT_CR0_READ``/``INTERCEPT_CR0_WRITE`` are
set and every CR0 access exits -- so from RESET (CD|NW set) until the guest clears CD and
NW even a TS-only write exits.  Otherwise only the selective CR0 write intercept is
left, which ignores changes to TS and MP (AMD APM 15.9).  The intercepts follow the CR0
KVM last installed, i.e. the value before the write.

CR4 writes are always intercepted (``INTERCEPT_CR4_WRITE``); CR3 writes only without NPT
(the base class's rule).
"""
from __future__ import annotations

from mmu.kvm.vendor import NestedEntryNames, NestedTdpNames, SmmNames, VendorOps
from mmu.x86.regs import CR0, EFER

__all__ = ["SvmOps"]

#: The CR0 bits ``svm_set_cr0`` clears from the hardware CR0 under
#: KVM_X86_QUIRK_CD_NW_CLEARED, a quirk KVM enables by default (QEMU leaves it on).
_SVM_CD_NW_CLEARED = int(CR0.CD | CR0.NW)


class SvmOps(VendorOps):
    """``svm_x86_ops``: whole or selective CR0 intercept, CR4 always, CR3 without NPT."""

    name, source, has_svm = "amd", "arch/x86/kvm/svm/svm.c", True
    # svm.c svm_enter_smm/svm_leave_smm (the SMRAM save area records svm_guest_flag).
    smm = SmmNames("svm_enter_smm", "nested_svm_simple_vmexit", "svm_leave_smm",
                   "enter_svm_guest_mode")
    # nested NPT: vmcb12's nCR3 is what guest_mmu shadows.
    nested = NestedTdpNames("npt", "ncr3", "nested_svm_init_mmu_context",
                            "kvm_init_shadow_npt_mmu", "nested_svm_uninit_mmu_context")
    # svm/nested.c: #UD without EFER.SVME, which the SMM state clears (smm.c enter_smm, 6.4).
    nested_entry = NestedEntryNames("VMRUN", "nested_svm_check_permissions")

    def l2_cr3_checked(self, l2_cr0: int, l2_efer: int) -> bool:
        """``__nested_vmcb_check_save`` (6.4 svm/nested.c) checks CR3 against MAXPHYADDR only
        for a long-mode L2 (EFER.LME and CR0.PG)."""
        return bool(l2_efer & EFER.LME and l2_cr0 & CR0.PG)

    def cr0_write_exits(self, old: int, new: int) -> tuple[bool, str]:
        """The full intercept while the hardware CR0 differs from ``old``, else the
        selective write intercept (TS and MP free)."""
        diff = old ^ new
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

    def cr4_write_exits(self, old: int, new: int) -> bool:
        return True                   # INTERCEPT_CR4_WRITE
