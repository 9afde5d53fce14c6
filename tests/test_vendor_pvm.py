"""PVM as the third vendor class (mmu.kvm.pvm): what is the vendor's, what the common MMU's.

Hand-derived from virt-pvm/linux arch/x86/kvm/pvm/pvm.c: ``hardware_setup`` calls
``kvm_configure_mmu(false, ...)`` (no EPT/NPT), ``pvm_smi_allowed`` returns 0 (no SMI),
``pvm_nested_ops`` is empty (no nested), and guest supervisor code runs deprivileged, so a
MOV to CR0 always faults into KVM.  VMX with EPT in 6.4 owns CR0.WP (fb509f76acc8): a
WP-only toggle does not exit.  Role word of a 4-level shadow root with CR0.WP=0 and
EFER.NX=1: level 4 | access 7 << 8 | efer_nx << 12 = 0x1704 (facts §1.1).
"""
from __future__ import annotations

import pytest

from mmu.kvm.eras import era
from mmu.kvm.pvm import PvmOps
from mmu.kvm.vcpu import VCpu
from mmu.kvm.vendor import ALL_VENDORS, VENDORS, x86_ops
from mmu.x86.regs import CR0

WP = int(CR0.WP)


def test_pvm_is_a_vendor_class_with_shadow_paging_only():
    assert "pvm" in ALL_VENDORS and VENDORS == ("intel", "amd")
    assert type(x86_ops("pvm", era("6.4"), False)) is PvmOps
    for mmu in ("tdp", "legacy"):
        with pytest.raises(ValueError, match="no EPT/NPT"):
            VCpu(mmu=mmu, vendor="pvm")


def _booted(vendor: str, mmu: str) -> VCpu:
    v = VCpu(kernel="6.4", mmu=mmu, vendor=vendor)
    v.boot_long_mode(cr3=0x1000, nx=True)
    v.enter()
    return v


def test_whether_a_wp_toggle_traps_is_the_vendors():
    pvm, vmx_shadow, vmx_ept = (_booted("pvm", "shadow"), _booted("intel", "shadow"),
                                _booted("intel", "tdp"))
    assert pvm.set_cr0(pvm.regs.cr0 & ~WP).exited is True
    assert vmx_shadow.set_cr0(vmx_shadow.regs.cr0 & ~WP).exited is True
    assert vmx_ept.set_cr0(vmx_ept.regs.cr0 & ~WP).exited is False       # guest-owned WP
    assert "every MOV to CR0" in PvmOps(era("6.4"), False).cr0_write_exits(0, WP)[1]


def test_roles_and_root_decisions_are_the_common_mmus():
    pvm, vmx = _booted("pvm", "shadow"), _booted("intel", "shadow")
    seq = []
    for v in (pvm, vmx):
        cr0 = v.regs.cr0
        out = []
        for value in [cr0 & ~WP, cr0] * 3 + [0x2000, 0x3000, 0x1000, 0x2000]:
            res = v.set_cr0(value) if value >= 0x10000 else v.set_cr3(value)
            v.enter()
            out.append((res.ok, v.root_role.word, v.root.hpa))
        seq.append((out, {k: v.stats[k] for k in ("roots_created", "roots_reused",
                                                  "prev_root_hits", "prev_root_misses")}))
    assert seq[0] == seq[1]
    assert seq[0][0][0][1] == 0x1704            # the WP=0 root, hand-derived above


def test_pvm_refuses_smm_and_nested_and_changes_nothing():
    v = _booted("pvm", "shadow")
    before = (v.regs, v.smm, v.guest_mode, dict(v.stats), len(v.events))
    with pytest.raises(ValueError, match="never delivers an SMI"):
        v.enter_smm()
    with pytest.raises(ValueError, match="no nested"):
        v.nested_enter()
    assert (v.regs, v.smm, v.guest_mode, dict(v.stats), len(v.events)) == before
