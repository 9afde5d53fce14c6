"""System management mode, as ``arch/x86/kvm/smm.c`` enters and leaves it.

Kernel counterparts (smm.c, 6.2+; before 6.2 the same code lived in x86.c ``enter_smm``
and emulate.c ``em_rsm``, with the same MMU effect):

* :meth:`Smm.enter_smm` -- ``enter_smm``: save the state to SMRAM, the vendor's
  ``enter_smm`` hook (``vmx_enter_smm``/``svm_enter_smm``, names from
  :attr:`mmu.kvm.vendor.VendorOps.smm`) leaves L2 first if the SMI hit it, then
  ``kvm_smm_changed(true)`` and the SMM register state;
* :meth:`Smm.leave_smm` -- ``emulator_leave_smm``: ``kvm_smm_changed(false)``, the vendor's
  ``leave_smm`` hook (re-entering L2 if the SMI came from there), the saved registers;
* :meth:`Smm.kvm_smm_changed` -- ``kvm_smm_changed``: ``role.smm`` flips, one
  ``kvm_mmu_reset_context`` (facts §3.2).

Simplification, said once: each SMM transition does one ``kvm_mmu_reset_context``, after
the state it loads is in place.
"""
from __future__ import annotations

from mmu.kvm.trace import WriteResult
from mmu.x86.regs import CR0, Regs

__all__ = ["Smm"]


class Smm:
    """SMI, RSM and ``kvm_smm_changed`` (mixed into :class:`mmu.kvm.vcpu.VCpu`).  The SMRAM
    save area is ``_saved_smm``: (registers, CS.L, from L2, L1's saved state, L2's nested
    TDP) -- None when SMM was entered by a bare ``kvm_smm_changed(True)``."""

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
        if self.x86_ops.smm is None:
            raise ValueError(f"enter_smm: vendor={self.vendor!r} never delivers an SMI "
                             f"({self.x86_ops.source}); allowed with 'intel' or 'amd'")
        mark = self._begin()
        self._exit("SMI (KVM_REQ_SMI processed on the way back in)")
        from_l2 = self.guest_mode
        self._saved_smm = (self.regs, self.cs_l, from_l2, self._saved_l1, self._l2_tdp)
        self._event("enter_smm", "state saved to SMRAM" + (" (L2's)" if from_l2 else ""))
        if from_l2:
            hook, vmexit = self.x86_ops.smm.enter, self.x86_ops.smm.nested_vmexit
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
        if from_l2 and l2_tdp is not None:
            # 6.4 emulator_leave_smm: kvm_smm_changed(false) resets root_mmu while the vCPU
            # is still L1 with the SMM state, before the hook re-enters L2.  With nested TDP
            # the reset below touches only nested_mmu, so root_mmu must be rebuilt here or
            # it would keep a role with smm=1 while L2 runs (issue 14, V2's class).
            self.kvm_init_mmu()
        if from_l2:
            leave, enter = self.x86_ops.smm.leave, self.x86_ops.smm.nested_reentry
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
        ``emulator_leave_smm``, so ``kvm_smm_changed(True)`` in L2 is refused
        (ValueError, nothing changed): it would make smm=1 with guest_mode=1, a pair the
        kernel never produces (use :meth:`enter_smm`, which leaves L2 first)."""
        if not isinstance(smm, bool):
            raise TypeError(f"smm must be a bool, not {type(smm).__name__}")
        if smm and self.guest_mode:
            raise ValueError("kvm_smm_changed(True) in L2: smm=1 with guest_mode=1 never "
                             "happens (enter_smm leaves L2 first); allowed only in L1 -- "
                             "use enter_smm() for an SMI in L2")
        mark = self._begin()
        self._exit("SMI" if smm else "RSM")
        self.smm = smm
        self._saved_smm = None
        self._event("kvm_smm_changed", f"smm={int(smm)}")
        self.kvm_mmu_reset_context()
        self.kvm_mmu_reload()
        return self._result(mark, exited=True)
