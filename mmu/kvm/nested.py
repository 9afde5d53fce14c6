"""Nested virtualisation: L2 entry and exit, ``guest_mmu`` and ``nested_mmu``.

Kernel counterparts (6.4): ``arch/x86/kvm/vmx/nested.c`` (``nested_vmx_enter_non_root_mode``,
``nested_vmx_load_cr3``, ``nested_vmx_vmexit``, ``nested_ept_init_mmu_context``,
``nested_ept_uninit_mmu_context``), ``arch/x86/kvm/svm/nested.c``
(``enter_svm_guest_mode``, ``nested_svm_load_cr3``, ``nested_svm_vmexit``,
``nested_svm_init_mmu_context``, ``nested_svm_uninit_mmu_context``) and the mmu.c
functions they call (``kvm_init_shadow_ept_mmu``, ``kvm_init_shadow_npt_mmu``,
``init_kvm_nested_mmu``, ``kvm_mmu_new_pgd`` and ``mmu_alloc_shadow_roots`` on guest_mmu).
The vendor's function names come from :attr:`mmu.kvm.vendor.VendorOps.nested`.

Two models of L2, chosen by :meth:`Nested.nested_enter`:

* default: L1 does not use EPT/NPT for L2, and nesting is the ``guest_mode`` bit of
  root_mmu's roles (L2 gets roots of its own; L1's are freed or kept as the era dictates);
* nested TDP (``eptp=``/``ncr3=``, vCPUs with EPT/NPT, 5.19+ eras): ``vcpu->arch.mmu``
  becomes :class:`GuestMmu` (``guest_mmu``, shadowing L1's EPT/NPT tables with shadow pages
  of the VM's hash) and ``walk_mmu`` becomes nested_mmu (:attr:`Nested.nested_mmu_role`);
  root_mmu is left as L1 had it (facts §2.3, §4).

L1's own intercepts are not modelled (see :meth:`Nested.nested_enter`).
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from typing import TYPE_CHECKING, Any

from mmu.kvm.mmu_context import RootSlots
from mmu.kvm.root_cache import RootCache, RootInfo
from mmu.kvm.trace import WriteResult, gp, ud
from mmu.x86.bits import check_int
from mmu.x86.regs import EFER, Regs

if TYPE_CHECKING:
    from mmu.kvm.vcpu import VCpu

__all__ = ["GuestMmu", "Nested"]


@dataclasses.dataclass(frozen=True)
class NestedTdp:
    """What one nested entry with nested TDP hands to guest_mmu: "ept" or "npt", the
    EPTP / nCR3 (``get_guest_pgd``), and the roles ``kvm_init_shadow_{ept,npt}_mmu``
    compute from it."""

    kind: str
    pointer: int
    cpu_role: Any
    root_role: Any


class GuestMmu(RootSlots):
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


class Nested:
    """L2 entry/exit and the nested-TDP MMUs (mixed into :class:`mmu.kvm.vcpu.VCpu`).

    ``_saved_l1`` holds L1's (registers, CS.L) while L2 runs; ``_mmu_is_guest`` says
    whether ``vcpu->arch.mmu`` is guest_mmu (``mmu_is_nested``); ``_l2_tdp`` is what the
    current L2 entry handed to guest_mmu."""

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

        Results that are guest-visible faults (issue 14): in SMM the instruction is a #UD
        (vector 6; 6.4 ``vmx_enter_smm`` leaves VMX operation, so
        ``nested_vmx_check_permission`` refuses VMLAUNCH; the SMM state has EFER.SVME=0, so
        ``nested_svm_check_permissions`` refuses VMRUN); an L2 state the VM entry refuses
        (:meth:`_l2_state_invalid`) is an "invalid L2 state" #GP.  Neither changes
        anything but the exit and fault counters.

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
          in SMM the entry is a #UD (below);
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
        if self.x86_ops.nested is None:
            raise ValueError(f"nested_enter: vendor={self.vendor!r} has no nested "
                             f"virtualisation ({self.x86_ops.source}); allowed with 'intel' "
                             "or 'amd'")
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
        if self.smm:
            # SMM has no VMX operation / EFER.SVME: 6.4 vmx_enter_smm clears
            # nested.vmxon, so nested_vmx_check_permission queues #UD; smm.c enter_smm
            # loads EFER=0, so nested_svm_check_permissions queues #UD.  Nothing changes.
            entry = self.x86_ops.nested_entry
            fault = self._gp_fault(entry.check_permission, ud(
                f"{entry.instruction} in SMM: L1 is not in VMX operation / has EFER.SVME=0"))
            self.kvm_mmu_reload()
            return self._result(mark, exited=True, fault=fault)
        reason = self._l2_state_invalid(new)
        if reason:
            fault = self._gp_fault("nested_vmx_run", gp(f"invalid L2 state: {reason}"))
            self.kvm_mmu_reload()
            return self._result(mark, exited=True, fault=fault)
        self._saved_l1 = (self.regs, self.cs_l)
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

    def _l2_state_invalid(self, l2: Regs) -> "str | None":
        """The VM-entry checks on L2's control registers and EFER (SDM Vol. 3C, "Checks on
        Guest Control Registers, Debug Registers, and MSRs"; 6.4 vmx/nested.c
        ``nested_vmx_check_guest_state`` + ``nested_vmx_load_cr3``, svm/nested.c
        ``__nested_vmcb_check_save``): a consistent paging mode (PG without PE, LMA
        without paging, ...), CR4 and EFER as ``__kvm_is_valid_cr4`` / ``kvm_valid_efer``
        accept them (the same checks as L1's own writes) and CR3 below MAXPHYADDR where
        the vendor checks it.  The reason the entry fails, or None.

        Not modelled: the VMX CR0/CR4 fixed bits (CR4.VMXE), EFER.SVME in vmcb12's EFER,
        L1's VM-entry controls (the model's L2 EFER is always loaded)."""
        from mmu.x86.regs import paging_mode
        try:
            paging_mode(l2)
        except ValueError as e:
            return str(e)
        reason = self._cr4_invalid(l2.cr4) or self._efer_invalid(l2.efer)
        if reason:
            return f"l2_{reason}"
        if self.x86_ops.l2_cr3_checked(l2.cr0, l2.efer) and l2.cr3 >> self.maxphyaddr:
            return f"l2_cr3={l2.cr3:#x}: bits at or above MAXPHYADDR={self.maxphyaddr} set"
        return None

    def _nested_tdp_spec(self, eptp: int | None, ncr3: int | None, ept_level: int,
                         ept_ad: bool, execonly: bool) -> NestedTdp:
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
            if self.x86_ops.nested.kind != "ept":
                raise ValueError("nested_enter: eptp is Intel's (nested VMX); allowed only "
                                 "with vendor='intel' -- use ncr3 on AMD")
            eptp = check_int("eptp", eptp, 0, 1 << 64)
            if eptp & ~0xFFF >= limit:
                raise ValueError(f"eptp={eptp:#x}: address bits at or above "
                                 f"MAXPHYADDR={self.maxphyaddr}")
            # nested_ept_role checks ept_level (4 or 5).  smm=False: an entry from SMM
            # is a #UD (nested_enter) before this role is used.
            role = roles.nested_ept_role(ept_level, ept_ad, execonly, smm=False)
            walk_bits = (eptp >> 3) & 7
            if walk_bits and walk_bits + 1 != ept_level:
                raise ValueError(f"eptp={eptp:#x} has a {walk_bits + 1}-level walk length "
                                 f"(bits 5:3) but ept_level={ept_level}")
            if eptp & 0x7F and bool(eptp & (1 << 6)) != ept_ad:
                raise ValueError(f"eptp={eptp:#x}: A/D enable (bit 6) is "
                                 f"{int(bool(eptp & (1 << 6)))} but ept_ad={ept_ad}")
            return NestedTdp("ept", eptp, role, role.base)
        if self.x86_ops.nested.kind != "npt":
            raise ValueError("nested_enter: ncr3 is AMD's (nested SVM); allowed only with "
                             "vendor='amd' -- use eptp on Intel")
        ncr3 = check_int("ncr3", ncr3, 0, limit)
        if self.smm:        # VMRUN in SMM is a #UD (nested_enter): no guest_mmu roles
            return NestedTdp("npt", ncr3, None, None)
        cpu, root = roles.nested_npt_roles(self.regs, self.vm.tdp_level, smm=False)
        if cpu.base.level < 4:
            raise ValueError(f"nested NPT over L1's {cpu.base.level}-level paging is not "
                             "modelled (KVM's pml4_root over pae_root): allowed only L1 in "
                             "4- or 5-level paging")
        return NestedTdp("npt", ncr3, cpu, root)

    def _nested_tdp_switch(self, spec: NestedTdp) -> None:
        """``nested_{ept,svm}_init_mmu_context``: vcpu->arch.mmu = guest_mmu, then
        ``kvm_init_shadow_{ept,npt}_mmu`` and ``kvm_mmu_new_pgd(EPTP/nCR3)`` on it;
        walk_mmu = nested_mmu.  root_mmu is not touched."""
        gm = self.guest_mmu
        setup, init = self.x86_ops.nested.init_context, self.x86_ops.nested.init_shadow_mmu
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
            self._event(self.x86_ops.nested.uninit_context,
                        "vcpu->arch.mmu = walk_mmu = root_mmu; guest_mmu keeps its roots")
        self._l2_tdp = None
        self.kvm_init_mmu()
        self.kvm_mmu_new_pgd(self.regs.cr3)
