"""The vendor interface (mmu.kvm.vendor) and its VMX/SVM answers, and the era rules the
vCPU parts ask about.  Expected values are from the kernel sources, by hand:

* vmx.c ``vmx_l1_guest_owned_cr0_bits`` (6.4): KVM_POSSIBLE_CR0_GUEST_BITS = TS|WP
  (fb509f76acc8), minus WP without EPT; before 6.4 only TS.  CR0.TS is bit 3 (0x8),
  CR0.WP bit 16 (0x10000), so 6.4 with EPT owns 0x10008;
* svm.c ``svm_set_cr0``: the hardware CR0 is the guest's plus PG|WP without NPT, minus
  CD|NW (KVM_X86_QUIRK_CD_NW_CLEARED); if it differs, every CR0 write is intercepted, else
  the selective intercept lets TS/MP changes through.  CR4 writes always exit;
* x86.c ``kvm_post_set_cr0`` (6.4): WP-only toggle -> return with paging off
  (e40bcf9f3a18), kvm_init_mmu with TDP (01b31714bd90); 6.1 as released has neither.
"""
from __future__ import annotations

import pytest

from mmu.kvm.eras import era
from mmu.kvm.svm import SvmOps
from mmu.kvm.vendor import VENDORS, VendorOps, x86_ops
from mmu.kvm.vmx import VmxOps

PE, MP, TS, ET, NE, WP, NW, CD, PG = (1, 2, 8, 0x10, 0x20, 0x10000, 1 << 29, 1 << 30, 1 << 31)
RUNNING = PE | ET | NE | PG | WP          # a booted kernel's CR0: caches on, paging, WP


def test_interface_is_abstract_and_one_class_per_vendor():
    with pytest.raises(TypeError):
        VendorOps(era("6.4"), True)       # abstract: cr0_write_exits, cr4_write_exits

    class Half(VendorOps):
        def cr0_write_exits(self, old, new):
            return True, "always"
    with pytest.raises(TypeError):
        Half(era("6.4"), True)            # cr4_write_exits missing

    assert VENDORS == ("intel", "amd")
    assert type(x86_ops("intel", era("6.4"), True)) is VmxOps
    assert type(x86_ops("amd", era("6.4"), False)) is SvmOps
    with pytest.raises(ValueError, match="allowed \\('intel', 'amd'\\)"):
        x86_ops("pvm", era("6.4"), True)


@pytest.mark.parametrize("kernel,tdp,owned", [
    ("6.4", True, TS | WP), ("6.4", False, TS), ("6.1", True, TS), ("5.15", True, TS)])
def test_vmx_guest_owned_cr0(kernel, tdp, owned):
    ops = VmxOps(era(kernel), tdp)
    assert ops.guest_owned_cr0_bits() == owned
    assert ops.cr0_write_exits(RUNNING, RUNNING ^ WP)[0] == (not owned & WP)
    assert ops.cr0_write_exits(RUNNING, RUNNING ^ TS)[0] is False
    # CD is host-owned: setting it exits; but a TS write with CD=1 does not (read shadow).
    assert ops.cr0_write_exits(RUNNING, RUNNING | CD)[0] is True
    assert ops.cr0_write_exits(RUNNING | CD, RUNNING | CD | TS)[0] is False


def test_vmx_cr4_pge_is_guest_owned_only_with_ept():
    pge = 1 << 7
    assert VmxOps(era("6.4"), True).cr4_write_exits(0x20, 0x20 | pge) is False
    assert VmxOps(era("6.4"), False).cr4_write_exits(0x20, 0x20 | pge) is True
    assert VmxOps(era("6.4"), True).cr4_write_exits(0x20, 0) is True        # PAE: a role bit


def test_svm_cr0_intercepts():
    npt, shadow = SvmOps(era("6.4"), True), SvmOps(era("6.4"), False)
    assert npt.cr0_write_exits(RUNNING, RUNNING ^ TS) == (False, "only TS/MP changed: no exit")
    assert npt.cr0_write_exits(RUNNING, RUNNING ^ MP)[0] is False
    assert npt.cr0_write_exits(RUNNING, RUNNING ^ WP)[0] is True             # selective
    # From RESET (ET|CD|NW) even a TS-only write exits: hardware CR0 lacks CD|NW.
    exits, why = npt.cr0_write_exits(ET | CD | NW, ET | CD | NW | TS)
    assert exits and "CD|NW cleared" in why
    # Without NPT, a guest CR0 without WP differs from the hardware's PG|WP.
    exits, why = shadow.cr0_write_exits(PE | ET | NE | PG, PE | ET | NE | PG | TS)
    assert exits and "PG|WP forced on" in why
    assert npt.cr4_write_exits(0x20, 0x20) is True
    assert npt.cr3_write_exits() is False and shadow.cr3_write_exits() is True


@pytest.mark.parametrize("kernel,paging,tdp,want", [
    ("6.4", False, True, "ignore"), ("6.4", False, False, "ignore"),
    ("6.4", True, True, "init_mmu"), ("6.4", True, False, None),
    ("6.1", True, True, None), ("6.1", False, True, None)])
def test_era_post_set_cr0_wp_only(kernel, paging, tdp, want):
    assert era(kernel).post_set_cr0_wp_only(paging=paging, tdp=tdp) == want


def test_era_refreshes_passthrough_bits():
    assert era("6.4").refreshes_passthrough_bits(tdp=True) is True
    assert era("6.4").refreshes_passthrough_bits(tdp=False) is False
    assert era("6.1").refreshes_passthrough_bits(tdp=True) is False
    # The 6.1.y backport carries the refresh; 5.18 has no cpu_role to refresh.
    assert era("6.1", wp_refresh_in_permission_fault=True).refreshes_passthrough_bits(tdp=True)
    assert not era("5.18", wp_refresh_in_permission_fault=True).refreshes_passthrough_bits(
        tdp=True)
