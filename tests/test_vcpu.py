"""VCpu register semantics: reset state, #GP checks, exit decisions, LMA, early return,
the 6.4 CR0.WP refresh, preview, and bad arguments.  Expected values come from the SDM's
MOV-to-CR/WRMSR rules and the fact sheet (§2.3, §3)."""
from collections import Counter

import pytest

from mmu.x86.regs import CR0, CR4, EFER
from mmu.kvm.vcpu import Event, VCpu, WriteResult

ERAS = ("5.15", "5.18", "5.19", "6.1", "6.4")


def test_reset_state():
    v = VCpu(kernel="6.1", mmu="shadow")
    # x86.c kvm_vcpu_reset (5.15+): CR0 = ET | CD | NW on RESET; CR3, CR4, EFER zeroed.
    # By hand: ET bit 4, NW bit 29, CD bit 30 -> 0x10 | 0x2000_0000 | 0x4000_0000.
    assert v.regs.cr0 == 0x6000_0010
    assert v.regs.cr3 == 0 and v.regs.cr4 == 0 and v.regs.efer == 0
    assert not v.root.valid and all(not p.valid for p in v.prev_roots)
    assert v.stats["mmu_inits"] == 1 and v.stats["vm_exits"] == 0
    # paging off: the CPU role is direct with level 0 (§2.3 table, "no paging" row)
    assert v.cpu_role.base.direct == 1 and v.cpu_role.base.level == 0
    # shadow root role for no paging: level 3, direct, efer_nx=1 (§2.3 shadow table)
    assert (v.root_role.level, v.root_role.direct, v.root_role.efer_nx) == (3, 1, 1)
    assert isinstance(v.events[0], Event) and "kvm_arch_vcpu_create" in v.events[0].func


@pytest.mark.parametrize("kernel", ERAS)
def test_legacy_eras_expose_mmu_role(kernel):
    v = VCpu(kernel=kernel, mmu="shadow")
    if kernel in ("5.15", "5.18"):
        assert v.mmu_role is not None and v.root_role == v.mmu_role.base
    else:
        assert v.mmu_role is None


def test_boot_long_mode_reaches_4_level():
    v = VCpu(kernel="6.4", mmu="shadow")
    results = v.boot_long_mode(cr3=0x5000, smep=True)
    assert all(isinstance(r, WriteResult) and r.ok for r in results)
    assert v.regs.efer & EFER.LMA and v.regs.cr0 & CR0.PG and v.cs_l
    assert v.cpu_role.base.level == 4 and v.cpu_role.ext.efer_lma == 1
    assert v.root.valid and v.root.pgd == 0x5000 and v.root_role.level == 4


def test_boot_5_level_and_protected():
    v = VCpu(kernel="6.4", mmu="tdp", tdp_level=5)
    v.boot_long_mode(la57=True)
    assert v.cpu_role.base.level == 5 and v.root_role.level == 5
    w = VCpu(kernel="5.19", mmu="shadow")
    w.boot_protected(pae=False)
    assert w.cpu_role.base.level == 2 and w.cpu_role.base.has_4_byte_gpte == 1
    assert w.root_role.level == 3      # PAE shadow root for a 32-bit guest (§2.3)
    with pytest.raises(ValueError, match="real mode"):
        w.boot_long_mode()


def test_lma_follows_pg_with_lme():
    v = VCpu(kernel="6.1", mmu="shadow")
    v.boot_long_mode()
    assert v.regs.efer & EFER.LMA
    # clearing PG from 64-bit code is #GP (kvm_set_cr0: is_64_bit_mode)
    r = v.set_cr0(v.regs.cr0 & ~int(CR0.PG))
    assert r.fault is not None and v.regs.efer & EFER.LMA
    v.far_jump(False)
    assert v.set_cr0(v.regs.cr0 & ~int(CR0.PG)).ok
    assert not v.regs.efer & EFER.LMA and v.regs.efer & EFER.LME
    # guest writes to LMA are ignored: the CPU owns it (set_efer keeps the current LMA)
    assert v.set_efer(v.regs.efer | int(EFER.LMA)).ok and not v.regs.efer & EFER.LMA


def test_cr0_reserved_low_bits_are_dropped_not_gp():
    v = VCpu(kernel="6.4", mmu="shadow")
    r = v.set_cr0(int(CR0.PE) | (1 << 6) | (1 << 20))
    assert r.ok and v.regs.cr0 == CR0.PE | CR0.ET       # ET is forced to 1 too


@pytest.mark.parametrize("kernel", ["5.18", "6.1", "6.4"])
def test_wp_toggle_with_paging_off(kernel):
    # Protected mode, paging off, shadow paging: the WP write exits.  6.4 returns at once
    # (e40bcf9f3a18); earlier eras reset (WP is a role bit) and kvm_init_mmu returns early
    # because with PG=0 the roles do not contain WP (§2.2, §2.3).
    v = VCpu(kernel=kernel, mmu="shadow")
    v.set_cr0(int(CR0.ET | CR0.PE))
    before = Counter(v.stats)
    assert v.set_cr0(int(CR0.ET | CR0.PE | CR0.WP)).exited
    d = Counter(v.stats)
    d.subtract(before)
    if kernel == "6.4":
        assert (d["mmu_resets"], d["mmu_inits"]) == (0, 0)
    else:
        assert (d["mmu_resets"], d["init_early_returns"]) == (1, 1)


@pytest.mark.parametrize("vendor,kind,kernel,exits", [
    ("intel", "tdp", "6.4", False),     # WP guest-owned with EPT (fb509f76acc8)
    ("intel", "legacy", "6.4", False),
    ("intel", "tdp", "6.1", True),      # mainline 6.1: only TS guest-owned
    ("intel", "shadow", "6.4", True),   # without EPT WP stays intercepted
    ("amd", "tdp", "6.4", True),        # no per-bit CR0 control on SVM
    ("amd", "shadow", "6.4", True),
])
def test_wp_exit_decision(vendor, kind, kernel, exits):
    v = VCpu(kernel=kernel, mmu=kind, vendor=vendor)
    v.boot_long_mode()
    assert v.set_cr0(v.regs.cr0 & ~int(CR0.WP)).exited is exits
    assert not v.regs.cr0 & CR0.WP


@pytest.mark.parametrize("vendor", ["intel", "amd"])
def test_ts_only_write_does_not_exit(vendor):
    v = VCpu(kernel="5.18", mmu="legacy", vendor=vendor)
    v.boot_long_mode()
    r = v.set_cr0(v.regs.cr0 | int(CR0.TS))
    assert not r.exited and v.regs.cr0 & CR0.TS


@pytest.mark.parametrize("kernel", ERAS)
@pytest.mark.parametrize("boot", ["boot_long_mode", "boot_protected"])
def test_reset_cd_nw_cleared_by_boot(kernel, boot):
    """RESET leaves CD|NW set (kvm_vcpu_reset; before 5.15 vmx_vcpu_reset/init_vmcb, same
    value); the boot helpers' first CR0 write (ET|PE|NE) turns the caches on, and that
    write exits anyway (PE is host-owned / a non-TS/MP change), so a boot costs the same
    exits as before."""
    v = VCpu(kernel=kernel, mmu="tdp", vendor="amd")
    assert v.regs.cr0 & (CR0.CD | CR0.NW) == CR0.CD | CR0.NW
    results = getattr(v, boot)()
    assert all(r.ok for r in results) and results[0].exited
    assert not v.regs.cr0 & (CR0.CD | CR0.NW)
    assert v.regs.cr0 & (CR0.PE | CR0.PG | CR0.ET) == CR0.PE | CR0.PG | CR0.ET


# svm_set_cr0 under KVM_X86_QUIRK_CD_NW_CLEARED: hardware CR0 = guest CR0 (| PG|WP without
# NPT) & ~(CD|NW); hcr0 != cr0 -> INTERCEPT_CR0_WRITE, every write exits.  VMX: CD/NW are
# host-owned against the read shadow, so only writes that change them exit.
@pytest.mark.parametrize("vendor,kind,ts_exits_with_cd", [
    ("amd", "tdp", True), ("amd", "legacy", True), ("amd", "shadow", True),
    ("intel", "tdp", False), ("intel", "legacy", False), ("intel", "shadow", False),
])
def test_cd_set_and_the_cr0_intercepts(vendor, kind, ts_exits_with_cd):
    v = VCpu(kernel="6.4", mmu=kind, vendor=vendor)
    v.boot_long_mode()
    assert not v.set_cr0(v.regs.cr0 | int(CR0.TS)).exited             # CD=0: no exit
    assert v.set_cr0(v.regs.cr0 | int(CR0.CD)).exited                 # CD host-owned
    r = v.set_cr0(v.regs.cr0 & ~int(CR0.TS))
    assert r.ok and r.exited is ts_exits_with_cd and not v.regs.cr0 & CR0.TS
    if ts_exits_with_cd:
        assert "KVM_X86_QUIRK_CD_NW_CLEARED" in str(r.events[0])
    assert v.set_cr0(v.regs.cr0 | int(CR0.NW)).exited                 # CD|NW: valid
    assert v.set_cr0(v.regs.cr0 | int(CR0.TS)).exited is ts_exits_with_cd
    assert v.set_cr0(v.regs.cr0 & ~int(CR0.CD | CR0.NW)).exited       # caches back on
    assert not v.set_cr0(v.regs.cr0 & ~int(CR0.TS)).exited            # intercept dropped


@pytest.mark.parametrize("vendor,exits", [("amd", True), ("intel", False)])
def test_ts_only_write_from_reset(vendor, exits):
    """From RESET (CD|NW set) a TS-only write exits on SVM, not on VMX."""
    v = VCpu(kernel="6.4", mmu="tdp", vendor=vendor)
    r = v.set_cr0(v.regs.cr0 | int(CR0.TS))
    assert r.ok and r.exited is exits
    assert v.regs.cr0 == 0x6000_0010 | int(CR0.TS)


def test_cr4_guest_owned_bits_do_not_exit_on_vmx():
    v = VCpu(kernel="6.4", mmu="tdp", vendor="intel")
    v.boot_long_mode(pge=False)
    assert not v.set_cr4(v.regs.cr4 | int(CR4.PGE)).exited    # PGE guest-owned with EPT
    s = VCpu(kernel="6.4", mmu="shadow", vendor="intel")
    s.boot_long_mode(pge=False)
    assert s.set_cr4(s.regs.cr4 | int(CR4.PGE)).exited         # not without EPT
    a = VCpu(kernel="6.4", mmu="tdp", vendor="amd")
    a.boot_long_mode(pge=False)
    assert a.set_cr4(a.regs.cr4 | int(CR4.PGE)).exited         # SVM intercepts CR4 writes


def test_6_4_refreshes_stale_cr0_wp_before_emulated_permission_check():
    v = VCpu(kernel="6.4", mmu="tdp", vendor="intel")
    v.boot_long_mode()
    assert not v.set_cr0(v.regs.cr0 & ~int(CR0.WP)).exited
    assert v.cpu_role.base.cr0_wp == 1          # stale: KVM never saw the write (§3.3)
    role = v.emulated_permission_check()
    assert role.base.cr0_wp == 0 and v.stats["passthrough_refreshes"] == 1
    # Without the fix the check would use the stale bit (the bug [SC-REFRESH] fixed).
    w = VCpu(kernel="6.4", mmu="tdp", vendor="intel", wp_refresh_in_permission_fault=False)
    w.boot_long_mode()
    w.set_cr0(w.regs.cr0 & ~int(CR0.WP))
    assert w.emulated_permission_check().base.cr0_wp == 1


def test_init_early_return_rule_5_19():
    # Writing CR4 with a role bit changed while paging is off: reset, but both roles are
    # unchanged (no paging -> only direct/access/smm/guest_mode) -> early return.
    v = VCpu(kernel="5.19", mmu="tdp")
    before = v.stats["init_early_returns"]
    v.set_cr4(int(CR4.SMEP))
    assert v.stats["init_early_returns"] == before + 1
    assert any(e.func == "kvm_init_mmu: early return" for e in v.events)


def test_efer_lme_resets_only_from_5_17():
    # d6174299365d: before it, an EFER.LME change did not reset the MMU (§3.1).
    for kernel, resets in (("5.15", 0), ("5.18", 1)):
        v = VCpu(kernel=kernel, mmu="shadow")
        v.set_cr0(int(CR0.ET | CR0.PE))
        before = v.stats["mmu_resets"]
        v.set_efer(int(EFER.LME))
        assert v.stats["mmu_resets"] - before == resets


def test_preview_changes_nothing():
    v = VCpu(kernel="6.1", mmu="shadow")
    v.boot_long_mode()
    state = (v.regs, v.cpu_role, v.root_role, v.root, v.prev_roots, Counter(v.stats),
             len(v.events), len(v.vm.shadow.hash))
    p = v.preview(cr0=v.regs.cr0 & ~int(CR0.WP))
    assert any(e.func == "kvm_mmu_reset_context" for e in p.events)
    assert p.stats["mmu_resets"] == 1 and p.stats["roots_created"] == 1
    assert p.cpu_role.base.cr0_wp == 0
    assert (v.regs, v.cpu_role, v.root_role, v.root, v.prev_roots, Counter(v.stats),
            len(v.events), len(v.vm.shadow.hash)) == state
    assert v.what_if(cr3=v.regs.cr3 + 0x1000).stats["prev_root_misses"] == 1
    with pytest.raises(ValueError, match="cr0"):
        v.preview(cr2=0)


def test_bad_arguments_name_allowed_values():
    with pytest.raises(ValueError, match="5.15"):
        VCpu(kernel="4.19")
    with pytest.raises(ValueError, match="tdp"):
        VCpu(mmu="ept")
    with pytest.raises(ValueError, match="intel"):
        VCpu(vendor="via")
    with pytest.raises(ValueError, match=r"\(4, 5\)"):
        VCpu(tdp_level=3)
    with pytest.raises(ValueError, match="role_split"):
        VCpu(no_such_flag=True)
    v = VCpu(mmu="shadow")
    regs, stats = v.regs, Counter(v.stats)
    for bad in ("0x11", 1.5, None, True):
        with pytest.raises(TypeError):
            v.set_cr0(bad)
    with pytest.raises(ValueError):
        v.set_cr3(-1)
    with pytest.raises(ValueError):
        v.set_efer(1 << 64)
    assert v.regs == regs and Counter(v.stats) == stats
    with pytest.raises(ValueError, match="SMM"):
        v.leave_smm()


def test_cr3_above_maxphyaddr_is_gp_under_shadow():
    v = VCpu(kernel="6.4", mmu="shadow", maxphyaddr=46)
    v.boot_long_mode()
    cr3 = v.regs.cr3
    r = v.set_cr3(1 << 46)
    assert r.fault is not None and r.fault.vector == 13 and v.regs.cr3 == cr3


def test_nested_enter_exit_uses_prev_roots():
    # L2 roots differ by role.guest_mode; on the way back L1's root is in prev_roots[0].
    v = VCpu(kernel="6.4", mmu="shadow")
    v.boot_long_mode(cr3=0x10000)
    assert v.nested_enter(l2_cr3=0x20000).ok
    assert v.root_role.guest_mode == 1 and v.guest_mode
    r = v.nested_exit()
    assert r.ok and v.root_role.guest_mode == 0
    assert any(e.func == "fast_pgd_switch: prev_roots[0] hit" for e in r.events)


def test_sibling_shares_the_vm():
    v = VCpu(kernel="6.1", mmu="legacy")
    w = v.sibling()
    assert w.vm is v.vm and w.era is v.era
    v.boot_long_mode()
    w.boot_long_mode()
    assert w.root_object.sp is v.root_object.sp        # same direct root page, shared


def test_event_cap():
    v = VCpu(kernel="6.1", mmu="shadow", max_events=5)
    v.boot_long_mode()
    assert len(v.events) == 5 and v.stats["events_dropped"] > 0


@pytest.mark.parametrize("kind", ("tdp", "shadow"))
def test_kvm_smm_changed_flips_only_the_smm_bit(kind):
    # kvm_smm_changed is a kvm_mmu_reset_context caller (§3.2); role.smm is bits 24-31 of
    # the page role (§1.1), so the cpu role's base word gains exactly 1 << 24.
    v = VCpu(kernel="6.4", mmu=kind)
    v.boot_long_mode(cr3=0x5000)
    before_base, regs = v.cpu_role.base.word, v.regs
    resets = v.stats["mmu_resets"]
    r = v.kvm_smm_changed(True)
    assert r.ok and v.regs == regs
    assert v.cpu_role.base.word == before_base | (1 << 24) and v.root_role.smm == 1
    assert v.stats["mmu_resets"] == resets + 1
    v.kvm_smm_changed(False)
    assert v.cpu_role.base.word == before_base and v.stats["mmu_resets"] == resets + 2
    with pytest.raises(TypeError):
        v.kvm_smm_changed(1)


# -- fixes for the model bugs found by tests/test_vcpu_props.py ---------------------------
def test_two_pgds_sharing_one_shadow_page_hold_two_references():
    """CR3=0x5000 and CR3=0x5008 (PWT) name the same PML4 frame, so mmu_alloc_shadow_roots
    finds the same shadow page (key: gfn 5, role) for both; each root-info slot holds its
    own ``root_count`` reference (facts §5), and an unload drops both."""
    v = VCpu(kernel="6.4", mmu="shadow")
    v.boot_long_mode(cr3=0x5000)
    sp = v.root_object.sp
    assert sp.root_count == 1
    assert v.set_cr3(0x5008).ok            # pgd differs: fast_pgd_switch misses, ...
    v.enter()
    assert v.root.pgd == 0x5008 and v.root_object.sp is sp     # ... the hash hits
    assert v.prev_roots[0].pgd == 0x5000 and v.prev_roots[0].hpa == v.root.hpa
    assert sp.root_count == 2
    assert v.set_cr3(0x5000).ok            # back: prev_roots[0] is usable
    assert v.root.pgd == 0x5000 and sp.root_count == 2
    # CR0.WP is in the shadow root role: kvm_mmu_reset_context unloads both slots, and
    # the reload finds a page with cr0_wp=0 instead.
    puts = v.stats["roots_put"]
    assert v.set_cr0(v.regs.cr0 ^ int(CR0.WP)).ok
    assert sp.root_count == 0 and v.stats["roots_put"] - puts == 2
    assert v.root.valid and v.root_object.sp is not sp


@pytest.mark.parametrize("bad", [dict(l2_cr0=1 << 40), dict(l2_cr3=-1), dict(l2_cr4="0"),
                                 dict(l2_efer=1 << 64)])
def test_nested_enter_refuses_bad_arguments_before_touching_state(bad):
    v = VCpu(kernel="6.4", mmu="shadow")
    v.boot_long_mode(cr3=0x5000)
    before = (v.step, len(v.events), Counter(v.stats), v.regs, v._saved_l1, v.guest_mode)
    with pytest.raises((ValueError, TypeError), match="l2_"):
        v.nested_enter(**bad)
    assert (v.step, len(v.events), Counter(v.stats), v.regs, v._saved_l1, v.guest_mode) == before
    assert v.nested_enter().ok and v.guest_mode        # and it still works afterwards


@pytest.mark.parametrize("kind", ["tdp", "shadow"])
def test_rsm_after_bare_kvm_smm_changed_is_refused(kind):
    """kvm_smm_changed(True) writes no SMRAM save area: RSM is refused before anything
    changes, and kvm_smm_changed(False) leaves such an SMM."""
    v = VCpu(kernel="6.4", mmu=kind)
    v.boot_long_mode(cr3=0x5000)
    assert v.kvm_smm_changed(True).ok and v.smm
    before = (v.step, len(v.events), Counter(v.stats), v.regs, v.smm, v.root)
    with pytest.raises(ValueError, match="no SMRAM save area"):
        v.leave_smm()
    assert (v.step, len(v.events), Counter(v.stats), v.regs, v.smm, v.root) == before
    assert v.kvm_smm_changed(False).ok and not v.smm


def test_bare_smm_flip_drops_an_old_save_area():
    """SMI, bare flip out, bare flip in: RSM must not restore the first SMI's registers."""
    v = VCpu(kernel="6.4", mmu="tdp")
    v.boot_long_mode(cr3=0x5000)
    assert v.enter_smm().ok
    assert v.kvm_smm_changed(False).ok and v.kvm_smm_changed(True).ok
    with pytest.raises(ValueError, match="no SMRAM save area"):
        v.leave_smm()


@pytest.mark.parametrize("vendor,hook,reenter", [
    ("intel", "vmx_enter_smm: nested_vmx_vmexit", "vmx_leave_smm"),
    ("amd", "svm_enter_smm: nested_svm_simple_vmexit", "svm_leave_smm")])
@pytest.mark.parametrize("kind", ["tdp", "legacy", "shadow"])
def test_smi_in_l2_exits_to_l1_and_rsm_returns_to_l2(vendor, hook, reenter, kind):
    """smm.c enter_smm saves L2's state, then vmx/svm_enter_smm exit to L1 (guest_mode=0)
    before kvm_smm_changed(true); RSM's vmx/svm_leave_smm re-enter L2 (6.4)."""
    v = VCpu(kernel="6.4", mmu=kind, vendor=vendor)
    v.boot_long_mode(cr3=0x5000)
    l1 = v.regs
    assert v.nested_enter(l2_cr3=0x20_0000).ok
    l2 = v.regs
    r = v.enter_smm()
    assert r.ok and v.smm and not v.guest_mode
    assert (v.cpu_role.base.smm, v.cpu_role.base.guest_mode) == (1, 0)
    assert (v.root_role.smm, v.root_role.guest_mode) == (1, 0)
    funcs = [e.func for e in r.events]
    assert funcs.index("enter_smm") < funcs.index(hook) < funcs.index("kvm_smm_changed")
    assert v.regs.cr3 == l1.cr3 and not v.regs.cr0 & CR0.PG    # SMM state built on L1's
    r = v.leave_smm()
    assert r.ok and not v.smm and v.guest_mode and v.regs == l2
    assert reenter in [e.func for e in r.events]
    assert (v.cpu_role.base.smm, v.cpu_role.base.guest_mode) == (0, 1)
    assert v.nested_exit().ok and v.regs == l1 and not v.guest_mode


def test_emulated_permission_check_with_paging_off_refreshes_nothing():
    """6.4 VMX+EPT: a WP-only toggle with PG=0 does not exit; permission_fault is never
    reached without paging, so cpu_role keeps cr0_wp=0 (the §2.3 'no paging' row)."""
    v = VCpu(kernel="6.4", mmu="tdp", vendor="intel")
    assert v.set_cr0(int(CR0.ET | CR0.PE)).exited                 # PE is host-owned
    assert not v.set_cr0(int(CR0.ET | CR0.PE | CR0.WP)).exited    # WP is the guest's
    refreshes = v.stats["passthrough_refreshes"]
    role = v.emulated_permission_check()
    assert role.base.cr0_wp == 0 and role.base.direct == 1 and role.base.level == 0
    assert v.stats["passthrough_refreshes"] == refreshes
    assert "paging off" in v.events[-1].detail
    # Turning paging on is a CR0.PG change: it exits and the role is recomputed with WP=1.
    assert v.set_cr0(v.regs.cr0 | int(CR0.PG)).exited and v.cpu_role.base.cr0_wp == 1


def test_pae_root_with_no_present_pdpte_is_not_called_a_hash_hit():
    """PAE guest, CR3 at a zeroed page: mmu_alloc_shadow_roots skips each not-present
    PDPTE (INVALID_PAE_ROOT), so the load creates and reuses nothing."""
    v = VCpu(kernel="6.4", mmu="shadow")
    v.boot_protected(pae=True, cr3=0x9000)         # guest memory is all zero there
    load = [e for e in v.events if e.func.startswith("kvm_mmu_load:")][-1]
    assert load.func == "kvm_mmu_load: no PAE root pages"
    assert "all PDPTEs not present" in load.detail and "hash" not in load.func
    assert v.root.valid and v.root_object.sp is None and v.root_object.pages() == []


def test_nested_enter_clears_cs_l_for_an_l2_outside_ia32e_mode():
    """L1 runs 64-bit code; a PAE L2 (EFER.LMA=0) cannot: CS.L is reserved outside IA-32e
    mode (SDM 3.4.5), so the model enters it with CS.L=0 and gives L1's back on exit."""
    v = VCpu(kernel="6.4", mmu="tdp")
    v.boot_long_mode(cr3=0x5000)
    assert v.cs_l
    pae = dict(l2_cr0=int(CR0.ET | CR0.PE | CR0.NE | CR0.PG), l2_cr3=0x9000,
               l2_cr4=int(CR4.PAE), l2_efer=0)
    assert v.nested_enter(**pae).ok and v.guest_mode and not v.cs_l
    # ... so L2 may turn its paging off (no "clearing PG in 64-bit mode" #GP)
    assert v.set_cr0(int(CR0.ET | CR0.PE | CR0.NE)).ok
    assert v.nested_exit().ok and v.cs_l
    assert v.nested_enter().ok and v.cs_l                 # IA-32e L2: L1's CS.L kept
    assert v.nested_exit().ok
    assert v.nested_enter(l2_cs_l=False).ok and not v.cs_l
    assert v.nested_exit().ok
    with pytest.raises(ValueError, match="l2_cs_l=True needs an L2 in IA-32e mode"):
        v.nested_enter(l2_cs_l=True, **pae)
    with pytest.raises(TypeError, match="l2_cs_l"):
        v.nested_enter(l2_cs_l=1)


@pytest.mark.parametrize("kind,vendor", [("tdp", "intel"), ("tdp", "amd"),
                                         ("legacy", "intel")])
def test_cr3_above_maxphyaddr_is_gp_without_exit_under_tdp(kind, vendor):
    """With EPT/NPT MOV to CR3 does not exit; a reserved bit (>= MAXPHYADDR; bit 63
    unless CR4.PCIDE makes it NOFLUSH) is a #GP the CPU raises itself (SDM MOV CR)."""
    v = VCpu(kernel="6.4", mmu=kind, vendor=vendor, maxphyaddr=46)
    v.boot_long_mode(cr3=0x5000)
    before = (v.regs, v.root, Counter(v.stats))
    for bad in (1 << 46, 1 << 63, (1 << 63) | 0x2000):         # PCIDE is off
        r = v.set_cr3(bad)
        assert not r.ok and r.fault.vector == 13 and r.fault.error_code == 0
        assert not r.exited and "MAXPHYADDR" in r.fault.reason
    assert (v.regs, v.root) == before[:2]
    d = Counter(v.stats)
    d.subtract(before[2])
    assert +d == Counter(gp_faults=3)                 # no exit, no MMU work
    # bit 63 is NOFLUSH with CR4.PCIDE=1: stripped, the write goes through
    assert v.set_cr4(v.regs.cr4 | int(CR4.PCIDE)).ok
    r = v.set_cr3((1 << 63) | 0x2000)
    assert r.ok and not r.exited and v.regs.cr3 == 0x2000
