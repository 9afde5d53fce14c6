"""Intel VMX's intercept policy (``arch/x86/kvm/vmx/vmx.c``, ``kvm_cache_regs.h``).

VMX decides per bit.  For CR0 and CR4 the VMCS holds a guest/host mask and a read
shadow: a guest MOV to CRn VM-exits iff it changes, against the read shadow, a bit the
host owns (SDM 25.1.3).  KVM writes the complement of the guest-owned bits to
``CR0_GUEST_HOST_MASK``/``CR4_GUEST_HOST_MASK`` (``init_vmcs``, ``vmx_set_cr0``):

* CR0: ``vmx_l1_guest_owned_cr0_bits`` = ``KVM_POSSIBLE_CR0_GUEST_BITS`` -- TS, and since
  fb509f76acc8 (6.4; stable 6.1.y+) also WP when EPT is on (era flag
  ``cr0_wp_guest_owned``).  A WP-only write then does not exit and the MMU's
  ``cpu_role.base.cr0_wp`` goes stale until ``kvm_mmu_refresh_passthrough_bits``
  (:mod:`mmu.kvm.mmu_context`).  CD and NW are host-owned; ``vmx_set_cr0`` keeps the
  guest's value in ``CR0_READ_SHADOW`` while dropping them from ``GUEST_CR0``
  (``KVM_VM_CR0_ALWAYS_OFF``: VMX runs with CD=NW=0 and emulates CD through the EPT
  memory type).  The read shadow hides that, so a guest with CD=1 is not intercepted any
  more than one with CD=0: a TS-only write still does not exit;
* CR4: ``KVM_POSSIBLE_CR4_GUEST_BITS`` (``kvm_cache_regs.h``), minus PGE without EPT
  (``vmx_set_cr4``/``init_vmcs`` keep PGE host-owned for shadow paging).  No MMU role bit
  is ever guest-owned.  6.18 adds CR4.CET ("KVM: VMX: Make CR4.CET a guest owned bit",
  era flag ``cet_virtualized``), with or without EPT: ``set_cr4_guest_host_mask`` (read
  in 6.18.2) drops only the TLB-flush and PDPTR bits without EPT, and CET is neither;
* CR3: with EPT no CR3-load exiting (the base class's rule).

Not modelled: EPT without unrestricted guest (CR3 exiting while the guest's CR0.PG=0,
docs/fact-check.md row 4).
"""
from __future__ import annotations

from mmu.kvm.vendor import NestedEntryNames, NestedTdpNames, SmmNames, VendorOps
from mmu.x86.regs import CR0, CR4

__all__ = ["VmxOps", "KVM_POSSIBLE_CR4_GUEST_BITS"]

#: kvm_cache_regs.h KVM_POSSIBLE_CR4_GUEST_BITS up to 6.17 (no role bit is ever
#: guest-owned); 6.18 adds CR4.CET (read in 6.4.6, 6.12.19 and 6.18.2).
KVM_POSSIBLE_CR4_GUEST_BITS = int(CR4.PVI | CR4.DE | CR4.PCE | CR4.OSFXSR | CR4.OSXMMEXCPT
                                  | CR4.PGE | CR4.TSD | CR4.FSGSBASE)


class VmxOps(VendorOps):
    """``vmx_x86_ops``: per-bit CR0/CR4 ownership, CR3-load exiting only without EPT."""

    name = "intel"
    source = "arch/x86/kvm/vmx/vmx.c"
    # vmx.c vmx_enter_smm/vmx_leave_smm; nested.c leaves and re-enters L2 for them.
    smm = SmmNames("vmx_enter_smm", "nested_vmx_vmexit", "vmx_leave_smm",
                   "nested_vmx_enter_non_root_mode")
    # nested EPT: L1's EPTP (vmcs12->ept_pointer) is what guest_mmu shadows.
    nested = NestedTdpNames("ept", "eptp", "nested_ept_init_mmu_context",
                            "kvm_init_shadow_ept_mmu", "nested_ept_uninit_mmu_context")
    # nested.c: #UD unless nested.vmxon, which vmx_enter_smm clears for SMM (6.4).
    nested_entry = NestedEntryNames("VMLAUNCH", "nested_vmx_check_permission")

    def guest_owned_cr0_bits(self) -> int:
        """``vmx_l1_guest_owned_cr0_bits``: TS, plus WP with EPT in eras with fb509f76acc8."""
        owned = int(CR0.TS)
        if self.era.cr0_wp_guest_owned and self.tdp_enabled:
            owned |= int(CR0.WP)
        return owned

    def guest_owned_cr4_bits(self) -> int:
        """The CR4 bits a guest may change without exit: KVM_POSSIBLE_CR4_GUEST_BITS, PGE
        only with EPT, CET from 6.18 (EPT or not)."""
        owned = KVM_POSSIBLE_CR4_GUEST_BITS
        if self.era.cet_virtualized:
            owned |= int(CR4.CET)
        if not self.tdp_enabled:
            owned &= ~int(CR4.PGE)        # vmx: PGE is guest-owned only with EPT
        return owned

    def cr0_write_exits(self, old: int, new: int) -> tuple[bool, str]:
        """An exit iff a bit outside the guest-owned set changes against the read shadow."""
        owned = self.guest_owned_cr0_bits()
        if (old ^ new) & ~owned:
            return True, "a host-owned bit changed (CR0 guest/host mask)"
        return False, ("only guest-owned bits changed "
                       f"({'WP|TS' if owned & CR0.WP else 'TS'}): no exit")

    def cr4_write_exits(self, old: int, new: int) -> bool:
        return bool((old ^ new) & ~self.guest_owned_cr4_bits())
