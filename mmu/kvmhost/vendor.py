"""The vendor question: which guest writes reach ``kvm_set_cr*`` on each backend.

What is the *common MMU's* and what is the *vendor's* in what the experiments see:

* **common MMU** (mmu.c, paging_tmpl.h; identical whichever vendor module calls it): the
  role words (``kvm_calc_cpu_role``, ``kvm_calc_shadow_root_page_role``...), root lookups
  in the shadow-page hash (``kvm_mmu_get_shadow_page``), prev_roots (``kvm_mmu_new_pgd``),
  the shadow tree built by ``FNAME(page_fault)``, and the #PF error codes of KVM's walker;
* **vendor** (vmx.c, svm.c, PVM): whether a guest write to CR0/CR3/CR4 traps at all
  (and so reaches ``kvm_set_cr0`` & co), and who executes kernel-mode guest code.
  On VMX with EPT, CR0.WP is guest-owned since 6.4 (fb509f76acc8): a WP toggle does not
  exit.  On SVM every CR0 write that changes WP exits (selective CR0 intercept).  On
  **PVM** kernel-mode (CPL0) guest code never runs on the hardware: KVM's instruction
  emulator executes it, so *every* CR write reaches ``kvm_set_cr*``, and no ``kvm_exit``
  or ``kvm_cr`` event fires; user-mode (CPL3) code runs on the hardware, its faults build
  a real shadow tree, and its #PF is delivered through PVM's own event entry.

The model's vCPU has the three as vendor classes (:mod:`mmu.kvm.vendor`):
:class:`~mmu.kvm.vmx.VmxOps`, :class:`~mmu.kvm.svm.SvmOps` and
:class:`~mmu.kvm.pvm.PvmOps`; a host is modelled with its own vendor.  The experiments say
per case which kind of answer it is: the per-write "does it reach kvm_set_cr*" case is the
vendor's, every other compared case is the common MMU's (and would read the same under
any vendor class with the same MMU kind, see ``tests/test_vendor_pvm.py``).
"""
from __future__ import annotations

__all__ = ["model_vendor", "VENDOR_SPECIFIC", "COMMON_MMU"]

#: Experiment results that depend on the vendor module (whether a write traps at all).
VENDOR_SPECIFIC = ("which CR writes trap (exits / kvm_cr events)", "who runs CPL0 code",
                   "how a CPL3 #PF is delivered", "time per CR0.WP toggle")
#: Experiment results that are the common MMU's (mmu.c), the same for every vendor.
COMMON_MMU = ("root role words", "root lookups: new / found / prev_roots hit",
              "#PF error codes", "the CPL3 shadow tree")


def model_vendor(vendor: str | None) -> str:
    """The model vendor to run for a host vendor: the same one; "intel" when unknown."""
    from mmu.kvm.vendor import ALL_VENDORS
    return vendor if vendor in ALL_VENDORS else "intel"
