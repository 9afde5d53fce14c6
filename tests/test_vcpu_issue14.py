"""Issue 14, vCPU items (V1-V5, X1): one regression test per item, expectations worked by
hand from the kernel sources named in each test (6.4 unless said) and the SDM.

Each test failed on the model before the fix (d7a832e) and passes now; the property
that would have caught the whole class is in tests/test_vcpu_props.py.

Role words (facts §1.1 bit order): level 0-3, has_4_byte_gpte 4, quadrant 5-6, direct 7,
access 8-10, invalid 11, efer_nx 12 (0x1000), cr0_wp 13 (0x2000), smep_andnot_wp 14,
smap_andnot_wp 15, ad_disabled 16, guest_mode 17 (0x20000), passthrough 18, smm 24.
"""
from __future__ import annotations

from collections import Counter

import pytest

from mmu.kvm.eras import era
from mmu.kvm.vcpu import VCpu, Vm
from mmu.x86.memory import GuestMemory
from mmu.x86.regs import CR0, CR4, EFER


def booted(vendor: str = "intel", kernel: str = "6.4", mmu: str = "tdp", **kw) -> VCpu:
    v = VCpu(kernel=kernel, mmu=mmu, vendor=vendor, maxphyaddr=46, **kw)
    assert all(r.ok for r in v.boot_long_mode())
    return v


def state(v: VCpu) -> tuple:
    """Everything a refused or faulting call must leave alone (not the counters)."""
    return (v.regs, v.smm, v.guest_mode, v.cs_l, v.cpu_role, v.root_role, v.mmu_role,
            v.nested_mmu_role, v.root, v.prev_roots, v.guest_mmu.kind, v.guest_mmu.root,
            v._saved_l1, v._saved_smm)


def stats_delta(v: VCpu, before: Counter) -> Counter:
    d = Counter(v.stats)
    d.subtract(before)
    return +d


# -- V1 ------------------------------------------------------------------------------------
def test_v1_nested_ept_refresh_writes_nested_mmu_not_l1s_cpu_role():
    """6.4 mmu.h ``kvm_mmu_refresh_passthrough_bits`` skips only guest_mmu; the emulated
    walk of an L2 GVA runs on walk_mmu = nested_mmu (vmx/nested.c
    ``nested_ept_init_mmu_context``), so L2's CR0.WP goes into nested_mmu's role and L1's
    root_mmu cpu_role is untouched."""
    v = booted()
    # L1 after boot_long_mode: 4-level paging, WP=1, EFER.NX=1, guest_mode=0:
    # base = 0x4 | 0x700 | 0x1000 | 0x2000 = 0x3704.
    assert v.cpu_role.base.word == 0x3704
    l1_role = v.cpu_role
    assert v.nested_enter(eptp=0x505E).ok              # L2 = L1's registers
    # nested_mmu (kvm_calc_cpu_role of L2's registers, guest_mode=1): 0x3704 | 0x20000.
    assert v.nested_mmu_role.base.word == 0x2_3704
    # L2 clears CR0.WP: guest-owned with EPT in 6.4 (fb509f76acc8), no exit, roles stale.
    r = v.set_cr0(v.regs.cr0 & ~int(CR0.WP))
    assert r.ok and not r.exited
    role = v.emulated_permission_check()
    # The walker's role: nested_mmu with cr0_wp 1->0: 0x2_3704 - 0x2000 = 0x2_1704.
    assert role.base.word == 0x2_1704 and role.base.guest_mode == 1
    assert v.nested_mmu_role.base.word == 0x2_1704
    assert v.cpu_role == l1_role                        # L1's root_mmu role untouched
    assert v.stats["passthrough_refreshes"] == 1
    # Back in L1 the refresh has nothing to do: root_mmu's WP=1 is L1's live WP.
    assert v.nested_exit().ok
    assert v.emulated_permission_check() == l1_role


# -- V2 ------------------------------------------------------------------------------------
@pytest.mark.parametrize("vendor,func", [("intel", "nested_vmx_check_permission"),
                                         ("amd", "nested_svm_check_permissions")])
def test_v2_vmlaunch_vmrun_in_smm_is_ud(vendor, func):
    """VMX: 6.4 vmx.c ``vmx_enter_smm`` clears ``nested.vmxon``, so
    ``nested_vmx_check_permission`` queues #UD for VMLAUNCH.  SVM: smm.c ``enter_smm``
    loads EFER=0, so ``nested_svm_check_permissions`` (EFER.SVME=0) queues #UD for
    VMRUN.  The exit and the #UD are counted; nothing else changes."""
    v = booted(vendor)
    l1_regs = v.regs
    assert v.enter_smm().ok
    before, stats = state(v), Counter(v.stats)
    r = v.nested_enter()
    assert r.exited and not r.ok and r.fault.vector == 6
    assert state(v) == before and not v.guest_mode
    assert stats_delta(v, stats) == Counter(vm_exits=1, ud_faults=1)
    assert any(e.func == f"{func}: #UD" for e in r.events)
    # The sequence the issue found: RSM then a nested exit used to hand L1 the SMM-entry
    # registers (CR0=0x10030, EFER=0).  Now RSM returns to L1 and there is no L2 to exit.
    assert v.leave_smm().ok and v.regs == l1_regs
    with pytest.raises(ValueError, match="not running L2"):
        v.nested_exit()


def test_v2_nested_npt_in_smm_is_ud():
    """The same #UD for VMRUN with nested NPT (ncr3): guest_mmu is never set up in SMM."""
    v = booted("amd")
    assert v.enter_smm().ok
    before, stats = state(v), Counter(v.stats)
    r = v.nested_enter(ncr3=0x6000)
    assert r.fault.vector == 6 and state(v) == before and v.guest_mmu.kind is None
    assert stats_delta(v, stats) == Counter(vm_exits=1, ud_faults=1)


def test_v2_kvm_smm_changed_in_l2_is_refused():
    """smm=1 with guest_mode=1 never exists (enter_smm leaves L2 first): the bare
    ``kvm_smm_changed(True)`` in L2 is refused with nothing changed."""
    v = booted()
    assert v.nested_enter().ok
    before, stats, n = state(v), Counter(v.stats), len(v.events)
    with pytest.raises(ValueError, match="guest_mode"):
        v.kvm_smm_changed(True)
    assert state(v) == before and Counter(v.stats) == stats and len(v.events) == n


# -- V3 ------------------------------------------------------------------------------------
L1_CR0 = int(CR0.ET | CR0.PE | CR0.NE | CR0.PG | CR0.WP)        # after boot_long_mode
L1_CR4 = int(CR4.PAE | CR4.PSE | CR4.PGE)
L1_EFER = int(EFER.LME | EFER.LMA | EFER.SCE | EFER.NXE)


@pytest.mark.parametrize("vendor", ["intel", "amd"])
@pytest.mark.parametrize("bad", [
    dict(l2_cr4=L1_CR4 | 1 << 15),          # CR4 bit 15: reserved (not in CR4_RESERVED_BITS' list)
    dict(l2_cr4=L1_CR4 | int(CR4.SMXE)),    # X1's bits are reserved for L2 too
    dict(l2_cr4=L1_CR4 | int(CR4.PKS)),
    dict(l2_efer=L1_EFER | 1 << 9),         # EFER bit 9: reserved
    dict(l2_cr3=1 << 46),                   # MAXPHYADDR = 46: bit 46 is above it
    dict(l2_cr3=(1 << 63) | 0x5000),
], ids=["cr4-bit15", "cr4-smxe", "cr4-pks", "efer-bit9", "cr3-bit46", "cr3-bit63"])
def test_v3_invalid_l2_state_fails_the_entry(vendor, bad):
    """VM entry checks L2's CR4 (``nested_guest_cr4_valid`` -> ``__kvm_is_valid_cr4``;
    SVM ``__nested_vmcb_check_save``), EFER (``kvm_valid_efer``) and CR3
    (``nested_vmx_load_cr3``: ``kvm_vcpu_is_illegal_gpa``; SVM for a long-mode L2):
    a long-mode L2 with any of these bits fails the entry; L1 keeps running unchanged."""
    v = booted(vendor)
    before, stats = state(v), Counter(v.stats)
    r = v.nested_enter(**bad)
    assert r.exited and not r.ok and r.fault.vector == 13
    assert r.fault.reason.startswith("invalid L2 state")
    assert state(v) == before
    assert stats_delta(v, stats) == Counter(vm_exits=1, gp_faults=1)


def test_v3_efer_svme_and_cr3_differ_by_vendor():
    """EFER.SVME is reserved without SVM (``__kvm_valid_efer``), so L2 EFER.SVME fails
    only on Intel.  SVM checks CR3 only for EFER.LME && CR0.PG (``__nested_vmcb_check_save``),
    VMX always: a 32-bit L2 (PG|PE|WP, CR4.PSE, EFER=0) with CR3 bit 46 set fails on
    Intel and enters on AMD; CR3 just below 2^46 enters on both."""
    svme = dict(l2_efer=L1_EFER | int(EFER.SVME))
    assert not booted("intel").nested_enter(**svme).ok
    assert booted("amd").nested_enter(**svme).ok
    l2_32 = dict(l2_cr0=L1_CR0, l2_cr4=int(CR4.PSE), l2_efer=0, l2_cr3=1 << 46)
    assert not booted("intel").nested_enter(**l2_32).ok
    assert booted("amd").nested_enter(**l2_32).ok
    for vendor in ("intel", "amd"):
        assert booted(vendor).nested_enter(l2_cr3=(1 << 46) - 0x1000).ok


# -- X1 ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kernel", ["5.15", "5.18", "5.19", "6.1", "6.4"])
@pytest.mark.parametrize("mmu", ["tdp", "shadow"])
@pytest.mark.parametrize("vendor", ["intel", "amd"])
@pytest.mark.parametrize("bit", [CR4.SMXE, CR4.PKS], ids=["SMXE", "PKS"])
def test_x1_cr4_smxe_and_pks_are_gp_in_every_era(kernel, mmu, vendor, bit):
    """``CR4_RESERVED_BITS`` (kvm_host.h) lists the bits KVM lets a guest set; SMXE (bit
    14) and PKS (bit 24) are not in it in 5.15.85 or 6.4.6 (read), so
    ``__kvm_is_valid_cr4`` refuses them and ``kvm_set_cr4`` injects #GP."""
    v = booted(vendor, kernel, mmu)
    before, stats = state(v), Counter(v.stats)
    r = v.set_cr4(v.regs.cr4 | int(bit))
    assert r.exited and r.fault is not None and r.fault.vector == 13
    assert state(v) == before
    assert stats_delta(v, stats) == Counter(vm_exits=1, gp_faults=1)
    # A listed bit next to it (UMIP, bit 11) is accepted: the check is per bit.
    assert v.set_cr4(v.regs.cr4 | int(CR4.UMIP)).ok


# -- V4 ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw,name", [
    (dict(kernel="6.4"), "kernel"), (dict(mmu="tdp"), "mmu"), (dict(vendor="amd"), "vendor"),
    (dict(tdp_level=5), "tdp_level"), (dict(mem=GuestMemory()), "mem"),
    (dict(cr0_wp_guest_owned=True), "kernel"),
])
def test_v4_vcpu_with_vm_refuses_a_conflicting_setup(kw, name):
    """``VCpu(vm=vm, kernel="6.4", ...)`` used to build a 5.15 shadow vCPU silently.  A
    set-up argument that differs from the VM's is refused, naming it."""
    vm = Vm(kernel="5.15", mmu="shadow")
    with pytest.raises(ValueError, match=name):
        VCpu(vm=vm, **kw)


def test_v4_vcpu_with_vm_accepts_the_vms_own_setup():
    vm = Vm(kernel="5.15", mmu="shadow", vendor="amd")
    v = VCpu(vm=vm, kernel="5.15", mmu="shadow", vendor="amd", tdp_level=4, mem=vm.mem)
    w = VCpu(vm=vm)
    assert v.vm is w.vm is vm and v.era.name == "5.15" and v.kind == "shadow"
    d = VCpu()                               # without vm= the defaults are unchanged
    assert (d.era.name, d.kind, d.vendor, d.vm.tdp_level) == ("6.4", "tdp", "intel", 4)


# -- V5 ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kernel,kw", [
    ("5.15", dict(role_split=True)),                 # split without 5.18's new_pgd change
    ("6.1", dict(new_pgd_uses_mmu_role=False)),      # 5.19+ with the removed function
    ("6.1", dict(ignore_wp_nonpaging=True)),         # e40bcf9f3a18 without 01b31714bd90
    ("6.4", dict(cr0_wp_tdp_no_unload=False)),       # the same, from the 6.4 side
])
def test_v5_era_refuses_flags_without_their_prerequisite(kernel, kw):
    """The rule (mmu/kvm/eras.py): a flag whose change edits or relies on code another
    flag says is absent needs that flag -- role_split needs new_pgd_uses_mmu_role (the
    series removed kvm_mmu_calc_root_page_role; absent from 6.4 mmu.c), ignore_wp_nonpaging
    needs cr0_wp_tdp_no_unload (6.4 x86.c kvm_post_set_cr0: its early return sits in the
    WP-only branch 01b31714bd90 added)."""
    with pytest.raises(ValueError, match="needs"):
        era(kernel, **kw)
    with pytest.raises(ValueError, match="needs"):
        VCpu(kernel=kernel, **kw)


def test_v5_era_accepts_what_kernels_had():
    """Releases, stable backports and the posted pre-split backports stay expressible."""
    assert era("5.18", role_split=True).flags() == era("5.19").flags()
    assert era("6.1", cr0_wp_tdp_no_unload=True, ignore_wp_nonpaging=True).ignore_wp_nonpaging
    assert era("5.15", efer_lme_resets=True, cr0_wp_tdp_no_unload=True,
               cr0_wp_guest_owned=True, wp_refresh_in_permission_fault=True)
    assert era("5.18", cr0_wp_tdp_no_unload=True)     # Paolo's Feb-2022 series (cost.py)


# -- found by the property (V2's class) ------------------------------------------------------
def test_rsm_into_l2_on_nested_ept_rebuilds_root_mmu_without_smm():
    """6.4 smm.c ``emulator_leave_smm``: ``kvm_smm_changed(false)`` resets root_mmu while
    the vCPU is still L1 in the SMM state, and only then ``vmx_leave_smm`` re-enters L2.
    With nested EPT the later resets touch nested_mmu alone, so root_mmu must end with the
    role of the SMM state without smm: paging off (CR0 0x10030, CR4 0, EFER 0) ->
    nonpaging role, direct (0x80) | access 7 (0x700) = 0x780, ext.valid = 1; before the fix
    it kept the SMM role, smm=1 (0x100_0780), while L2 ran."""
    v = booted()
    assert v.nested_enter(eptp=0x505E).ok
    assert v.enter_smm().ok and v.cpu_role.base.word == 0x100_0780
    assert v.leave_smm().ok and v.guest_mode and v._mmu_is_guest
    assert v.cpu_role.base.word == 0x780 and v.cpu_role.ext.word == 0x1
    assert not v.cpu_role.base.smm and not v.root_role.smm
