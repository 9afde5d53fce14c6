"""Register writes and their checks, as ``arch/x86/kvm/x86.c`` does them.

Kernel counterparts (x86.c; 6.4 read for the details, era differences below):

* :meth:`CrWrites.set_cr0` -- the guest's MOV to CR0: the vendor decides whether it exits
  (:meth:`mmu.kvm.vendor.VendorOps.cr0_write_exits`), then ``kvm_set_cr0`` (its #GP
  checks, inline in 6.4; EFER.LMA maintained as
  ``vmx_set_cr0``/``svm_set_cr0`` do on paging changes) and ``kvm_post_set_cr0``.
  6.18 adds a #GP for clearing CR0.WP while CR4.CET=1 (era flag ``cet_virtualized``).
  ``kvm_post_set_cr0`` differs by era (asked of :meth:`mmu.kvm.eras.Era.post_set_cr0_wp_only`):
  6.4 returns early on a WP-only toggle with paging off (e40bcf9f3a18) and, with TDP,
  calls only ``kvm_init_mmu`` (01b31714bd90, backported to 6.1.y); every era resets the
  MMU context when a ``KVM_MMU_CR0_ROLE_BITS`` bit (PG, WP) changes;
* :meth:`CrWrites.set_cr4` -- ``kvm_set_cr4`` (``kvm_is_valid_cr4``: the era's
  ``CR4_RESERVED_BITS``, :attr:`mmu.kvm.eras.Era.cr4_valid_bits`, so CR4.SMXE and CR4.PKS
  always and CR4.CET before 6.18 #GP; the long-mode checks; 6.18's #GP for CR4.CET=1 while
  CR0.WP=0) and ``kvm_post_set_cr4``: a ``KVM_MMU_CR4_ROLE_BITS`` change resets the context;
  CR4.PCIDE 0->1 with shadow paging unloads (stale prev_roots);
* :meth:`CrWrites.set_efer` -- ``set_efer`` (``__kvm_valid_efer``; LMA is the CPU's): a
  change of the era's ``KVM_MMU_EFER_ROLE_BITS`` (NX; LME too since d6174299365d, 5.17,
  :attr:`mmu.kvm.eras.Era.efer_role_bits`) resets the context;
* :meth:`CrWrites.set_cr3` -- ``kvm_set_cr3``: with EPT/NPT the write does not exit
  (the CPU checks it); otherwise the MAXPHYADDR check and ``kvm_mmu_new_pgd``
  (:mod:`mmu.kvm.mmu_context`).

A write that does not exit is checked by the CPU alone: for CR0 and CR4 that matters only
for the CET rule (SDM Vol. 3A 2.5: CR0.WP cannot be cleared while CR4.CET=1, CR4.CET cannot
be set while CR0.WP=0), which on 6.18's VMX can meet a guest-owned WP or CET.

Every write ends with ``kvm_mmu_reload`` (the next ``vcpu_enter_guest``).  The role masks
are ``mmu.h``'s (facts §3.1).  Simplifications: ``load_pdptrs`` always succeeds (a PAE
guest's reserved PDPTE bits are not checked here); no CPUID (every CR4 feature exists but SMXE and PKS, never offered by KVM,
EFER.SVME only on a vendor whose :attr:`~mmu.kvm.vendor.VendorOps.has_svm`).
"""
from __future__ import annotations

from mmu.kvm.trace import WriteResult, bit_names, gp
from mmu.x86.bits import check_int
from mmu.x86.regs import CR0, CR4, EFER
from mmu.x86.walker import Fault

__all__ = ["CrWrites", "KVM_MMU_CR0_ROLE_BITS", "KVM_MMU_CR4_ROLE_BITS", "RESET_CR0",
           "X86_CR3_PCID_NOFLUSH"]

#: mmu.h masks (facts §3.1); EFER's depends on the era (Era.efer_role_bits).
KVM_MMU_CR0_ROLE_BITS = int(CR0.PG | CR0.WP)
KVM_MMU_CR4_ROLE_BITS = int(CR4.PSE | CR4.PAE | CR4.LA57 | CR4.SMEP | CR4.SMAP | CR4.PKE)
#: CR0 bits KVM keeps (CR0_RESERVED_BITS is the complement in the low 32 bits).
_CR0_DEFINED = int(CR0.PE | CR0.MP | CR0.EM | CR0.TS | CR0.ET | CR0.NE | CR0.WP | CR0.AM
                   | CR0.NW | CR0.CD | CR0.PG)
_EFER_DEFINED = int(sum(EFER))
#: CR0 after RESET: x86.c ``kvm_vcpu_reset`` (5.15+; before, ``vmx_vcpu_reset`` and
#: ``init_vmcb`` wrote the same value) sets ET, and CD|NW on RESET (kept on INIT):
#: caches off, as on bare metal, until firmware or the booting kernel clears them.
RESET_CR0 = int(CR0.ET | CR0.CD | CR0.NW)
X86_CR3_PCID_NOFLUSH = 1 << 63
_PCID_MASK = 0xFFF


def _cet_fault(cr0: int, cr4: int) -> "str | None":
    """The CET/WP rule (SDM Vol. 3A 2.5, CR4.CET): CR4.CET=1 requires CR0.WP=1.  Why a
    write that would leave ``cr0``/``cr4`` breaks it, or None.  6.18's ``kvm_set_cr0`` and
    ``kvm_set_cr4`` make the same two checks (read in 6.18.2 x86.c; not in 6.12.19)."""
    if cr4 & CR4.CET and not cr0 & CR0.WP:
        return ("CR4.CET=1 requires CR0.WP=1: clear CR4.CET before CR0.WP, set CR0.WP "
                "before CR4.CET")
    return None


class CrWrites:
    """The guest's control-register writes (mixed into :class:`mmu.kvm.vcpu.VCpu`).

    Uses the vCPU's registers, its vendor (``x86_ops``), era, log (:mod:`mmu.kvm.trace`)
    and MMU context (``kvm_init_mmu``, ``kvm_mmu_reset_context``, ``kvm_mmu_unload``,
    ``kvm_mmu_new_pgd``, ``kvm_mmu_reload``: :mod:`mmu.kvm.mmu_context`)."""

    def set_cr0(self, value: int) -> WriteResult:
        """Guest MOV to CR0: exit decision, then ``kvm_set_cr0`` + ``kvm_post_set_cr0``."""
        value = check_int("cr0", value, 0, 1 << 64)
        mark = self._begin()
        old = self.regs.cr0
        exits, why = self.x86_ops.cr0_write_exits(old, value)
        if not exits:
            cpu = _cet_fault(value, self.regs.cr4)
            if cpu is not None:
                return self._cpu_gp(mark, "CR0", cpu)
            self.stats["cr0_writes_no_exit"] += 1
            return self._without_exit(mark, "cr0", value, f"{old:#x}->{value:#x}: {why}")
        self._exit(f"MOV to CR0 ({why})")
        fault = self._kvm_set_cr0(value)
        self.kvm_mmu_reload()
        return self._result(mark, exited=True, fault=fault)

    def _cpu_gp(self, mark: int, reg: str, reason: str) -> WriteResult:
        """A MOV to ``reg`` that does not exit but breaks an architectural rule: the CPU
        raises #GP in the guest; KVM never runs and the register keeps its value."""
        fault = self._gp_fault(f"MOV to {reg} without exit", gp(
            f"{reason} (raised by the CPU; no VM exit, KVM is not involved)"))
        return self._result(mark, exited=False, fault=fault)

    def _without_exit(self, mark: int, reg: str, value: int, detail: str) -> WriteResult:
        """A MOV to ``reg`` the vendor lets through: the CPU writes the register and KVM
        never runs, so nothing in the MMU changes (its roles may now be stale)."""
        self._event(f"MOV to {reg.upper()} without exit", detail)
        self.regs = self.regs.replace(**{reg: value})
        return self._result(mark, exited=False)

    def _kvm_set_cr0(self, cr0: int) -> Fault | None:
        """``kvm_set_cr0``: the #GP checks, the write (maintaining EFER.LMA as
        ``vmx_set_cr0``/``svm_set_cr0`` do), then the era's ``kvm_post_set_cr0``."""
        old = self.regs.cr0
        cr0 |= int(CR0.ET)
        fault = None
        if cr0 >> 32:
            fault = gp(f"cr0={cr0:#x}: bits 63:32 are reserved")
        else:
            cr0 &= _CR0_DEFINED          # CR0_RESERVED_BITS in 31:0 are silently dropped
            efer = self.regs.efer
            if cr0 & CR0.NW and not cr0 & CR0.CD:
                fault = gp(f"cr0={cr0:#x}: NW=1 requires CD=1")
            elif cr0 & CR0.PG and not cr0 & CR0.PE:
                fault = gp(f"cr0={cr0:#x}: PG=1 requires PE=1")
            elif efer & EFER.LME and not old & CR0.PG and cr0 & CR0.PG:
                if not self.regs.cr4 & CR4.PAE:
                    fault = gp("enabling paging with EFER.LME=1 requires CR4.PAE=1")
                elif self.cs_l:
                    fault = gp("enabling long-mode paging with CS.L=1")
            elif not cr0 & CR0.PG and (self.cs_l and efer & EFER.LMA or self.regs.cr4 & CR4.PCIDE):
                fault = gp("clearing CR0.PG in 64-bit mode or with CR4.PCIDE=1")
            elif self.era.cet_virtualized:
                reason = _cet_fault(cr0, self.regs.cr4)      # 6.18 kvm_set_cr0
                fault = gp(reason) if reason else None
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
        """``kvm_post_set_cr0``: the era's WP-only shortcut, the guest TLB flush when
        paging goes off, then a reset on a role bit (PG, WP)."""
        diff = old ^ cr0
        if diff == CR0.WP:
            shortcut = self.era.post_set_cr0_wp_only(paging=bool(cr0 & CR0.PG),
                                                     tdp=self.tdp_enabled)
            if shortcut == "ignore":
                self._event("kvm_post_set_cr0", "only CR0.WP changed with paging off: "
                                                "nothing to do (e40bcf9f3a18)")
                return
            if shortcut == "init_mmu":
                self._event("kvm_post_set_cr0", "only CR0.WP changed with TDP: kvm_init_mmu, "
                                                "no unload (01b31714bd90)")
                self.kvm_init_mmu()
                return
        if diff & CR0.PG and not cr0 & CR0.PG:
            self._event("kvm_post_set_cr0", "CR0.PG 1->0: KVM_REQ_TLB_FLUSH_GUEST")
        self._reset_on_role_bits("kvm_post_set_cr0", CR0, KVM_MMU_CR0_ROLE_BITS, diff)

    def _reset_on_role_bits(self, func: str, reg: type, mask: int, diff: int) -> None:
        """``kvm_post_set_cr0``/``kvm_post_set_cr4``: a change in the register's
        ``KVM_MMU_CRn_ROLE_BITS`` (mmu.h) resets the MMU context; any other change leaves
        the MMU alone."""
        if diff & mask:
            self._event(func, f"KVM_MMU_{reg.__name__}_ROLE_BITS changed "
                              f"({bit_names(reg, diff & mask)})")
            self.kvm_mmu_reset_context()
        else:
            self._event(func, "no MMU role bit changed")

    def set_cr4(self, value: int) -> WriteResult:
        """Guest MOV to CR4: exit decision, ``kvm_set_cr4`` checks, ``kvm_post_set_cr4``."""
        value = check_int("cr4", value, 0, 1 << 64)
        mark = self._begin()
        old = self.regs.cr4
        if not self.x86_ops.cr4_write_exits(old, value):
            cpu = _cet_fault(self.regs.cr0, value)
            if cpu is not None:
                return self._cpu_gp(mark, "CR4", cpu)
            return self._without_exit(mark, "cr4", value, f"{old:#x}->{value:#x}: only "
                                                          "guest-owned bits changed")
        self._exit("MOV to CR4")
        fault = None
        lma = self.regs.efer & EFER.LMA
        reason = self._cr4_invalid(value)
        if reason:
            fault = gp(reason)
        elif lma and not value & CR4.PAE:
            fault = gp("clearing CR4.PAE in long mode")
        elif lma and (old ^ value) & CR4.LA57:
            fault = gp("changing CR4.LA57 in long mode")
        elif value & CR4.PCIDE and not old & CR4.PCIDE and (self.regs.cr3 & _PCID_MASK or not lma):
            fault = gp("CR4.PCIDE 0->1 requires long mode and CR3[11:0]=0")
        elif self.era.cet_virtualized and _cet_fault(self.regs.cr0, value):
            fault = gp(_cet_fault(self.regs.cr0, value))     # 6.18 kvm_set_cr4
        if fault is not None:
            self._gp_fault("kvm_set_cr4", fault)
            self.kvm_mmu_reload()
            return self._result(mark, exited=True, fault=fault)
        self.regs = self.regs.replace(cr4=value)
        self._event("kvm_set_cr4", f"{old:#x}->{value:#x}")
        self._kvm_post_set_cr4(old, value)
        self.kvm_mmu_reload()
        return self._result(mark, exited=True)

    def _cr4_invalid(self, cr4: int) -> "str | None":
        """``__kvm_is_valid_cr4`` (x86.c): the reserved-bit part of the CR4 check, shared
        by a guest's MOV to CR4 and the L2 state a nested entry loads (VMX
        ``nested_guest_cr4_valid``, SVM ``__nested_vmcb_check_save`` call the same
        function) with the era's ``CR4_RESERVED_BITS`` (:attr:`mmu.kvm.eras.Era.cr4_valid_bits`).
        The reason it is invalid, or None."""
        valid = self.era.cr4_valid_bits
        if cr4 & ~valid:
            named = cr4 & ~valid & int(sum(CR4))     # SMXE, PKS, or CET before 6.18
            return (f"cr4={cr4:#x}: reserved bits {cr4 & ~valid:#x} set"
                    + (f" ({bit_names(CR4, named)})" if named else ""))
        return None

    def _efer_invalid(self, efer: int) -> "str | None":
        """``kvm_valid_efer`` (x86.c ``__kvm_valid_efer``): reserved bits, EFER.SVME without
        SVM; shared by WRMSR(EFER) and a nested entry's L2 EFER.  The reason, or None."""
        if efer & ~_EFER_DEFINED:
            return f"efer={efer:#x}: reserved bits {efer & ~_EFER_DEFINED:#x} set"
        if efer & EFER.SVME and not self.x86_ops.has_svm:
            return "EFER.SVME on a CPU without SVM"
        return None

    def _kvm_post_set_cr4(self, old: int, cr4: int) -> None:
        """``kvm_post_set_cr4``: reset on a role bit; CR4.PCIDE 0->1 with shadow paging
        also unloads (the prev_roots were cached without PCIDs)."""
        self._reset_on_role_bits("kvm_post_set_cr4", CR4, KVM_MMU_CR4_ROLE_BITS, old ^ cr4)
        if not self.tdp_enabled and cr4 & CR4.PCIDE and not old & CR4.PCIDE:
            self._event("kvm_post_set_cr4", "CR4.PCIDE 0->1 with shadow paging: kvm_mmu_unload "
                                            "(stale prev_roots)")
            self.kvm_mmu_unload()

    def set_efer(self, value: int) -> WriteResult:
        """Guest WRMSR(EFER): always exits; ``set_efer`` checks and the era's role mask."""
        value = check_int("efer", value, 0, 1 << 64)
        mark = self._begin()
        self._exit("WRMSR EFER")
        old = self.regs.efer
        fault = None
        reason = self._efer_invalid(value)
        if reason:
            fault = gp(reason)
        elif self.regs.cr0 & CR0.PG and (old ^ value) & EFER.LME:
            fault = gp("changing EFER.LME while paging is on")
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
                                    f"({bit_names(EFER, (old ^ value) & bits)})")
            self.kvm_mmu_reset_context()
        self.kvm_mmu_reload()
        return self._result(mark, exited=True)

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
        if not self.x86_ops.cr3_write_exits():
            cr3 = value & ~X86_CR3_PCID_NOFLUSH if self.regs.cr4 & CR4.PCIDE else value
            if cr3 >> self.maxphyaddr:
                fault = self._gp_fault("MOV to CR3 without exit", gp(
                    f"cr3={cr3:#x}: bits above MAXPHYADDR={self.maxphyaddr} set (raised by "
                    f"the CPU; no VM exit, KVM is not involved)"))
                return self._result(mark, exited=False, fault=fault)
            self.stats["cr3_writes_no_exit"] += 1
            return self._without_exit(mark, "cr3", cr3, f"{value:#x}: CR3 is the guest's "
                                                        "with EPT/NPT; the MMU does nothing")
        self._exit("MOV to CR3")
        cr3 = value
        if self.regs.cr4 & CR4.PCIDE:
            cr3 &= ~X86_CR3_PCID_NOFLUSH
        pae_paging = bool(self.regs.cr0 & CR0.PG and self.regs.cr4 & CR4.PAE
                          and not self.regs.efer & EFER.LMA)
        if cr3 == self.regs.cr3 and not pae_paging:
            self._event("kvm_set_cr3", "same CR3: only the TLB flush logic runs")
        elif cr3 >> self.maxphyaddr:
            fault = self._gp_fault("kvm_set_cr3", gp(
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
