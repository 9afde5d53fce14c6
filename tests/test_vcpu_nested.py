"""guest_mmu for nested TDP (VCpu.nested_enter(eptp=/ncr3=)).

Expected words are worked by hand from the fact sheet (facts §1.1 bit positions, §2.3 the
nested EPT/NPT roles, §4 kvm_mmu_unload, §5 fast_pgd_switch), never read back from the code:

page role bits: level 0-3, has_4_byte_gpte 4, direct 7, access 8-10 (ACC_ALL = 0x700),
efer_nx 12 (0x1000), cr0_wp 13 (0x2000), ad_disabled 16 (0x10000), guest_mode 17
(0x20000), passthrough 18 (0x40000), smm 24.  ext: valid 0, execonly 1, cr4_pse 2,
cr4_pke 3, cr4_smap 4, cr4_smep 5, cr4_la57 6, efer_lma 7 (0x80).
"""
from collections import Counter

import pytest

from mmu.x86.regs import EFER
from mmu.kvm.vcpu import VCpu

# EPTP = address | memory type WB (6) | (walk length - 1) << 3 | A/D enable (bit 6).
EPTP_A = 0x5000 | 6 | (3 << 3) | (1 << 6)      # 0x505e, 4-level, A/D on
EPTP_B = 0x6000 | 6 | (3 << 3) | (1 << 6)      # 0x605e


def l1(**kw):
    v = VCpu(**kw)
    v.boot_long_mode()          # 4-level, CR0.WP, EFER.NX, CR4.PAE|PSE|PGE
    return v


def test_nested_ept_role_words():
    v = l1()
    l1_root, l1_cpu = v.root, v.cpu_role
    v.nested_enter(eptp=EPTP_A)
    gm = v.guest_mmu
    # level 4 | access 0x700 | guest_mode 0x20000; ext = valid.
    assert gm.root_role.word == 0x2_0704
    assert gm.cpu_role.base.word == gm.root_role.word
    assert gm.cpu_role.ext.word == 0x1
    assert gm.cpu_role.as_u64 == 0x1_0002_0704
    # root_mmu is not vcpu->arch.mmu while L2 runs: L1's role and root stay.
    assert v.cpu_role == l1_cpu and v.cpu_role.base.guest_mode == 0 and v.root == l1_root
    # nested_mmu: L2 = L1's registers, guest_mode=1: level 4 | 0x700 | efer_nx 0x1000 |
    # cr0_wp 0x2000 | guest_mode 0x20000; ext valid | pse 0x4 | lma 0x80.
    assert v.nested_mmu_role.base.word == 0x2_3704
    assert v.nested_mmu_role.ext.word == 0x85
    # The root is a shadow page at gfn(EPTP) with the root role, in the VM's hash.
    assert gm.root.pgd == EPTP_A and gm.root_object.sp.gfn == 0x5
    assert (0x5, 0x2_0704) in v.vm.shadow.hash
    assert v.stats["guest_mmu_roots_created"] == 1


@pytest.mark.parametrize("level, ad, execonly, base, ext", [
    (4, False, False, 0x3_0704, 0x1),      # + ad_disabled 0x10000
    (5, True, True, 0x2_0705, 0x3),        # level 5; ext execonly
])
def test_nested_ept_role_variants(level, ad, execonly, base, ext):
    v = l1()
    eptp = 0x7000 | 6 | ((level - 1) << 3) | ((1 << 6) if ad else 0)
    v.nested_enter(eptp=eptp, ept_level=level, ept_ad=ad, execonly=execonly)
    assert v.guest_mmu.root_role.word == base
    assert v.guest_mmu.cpu_role.ext.word == ext


def test_nested_npt_passthrough_roles():
    v = l1(vendor="amd", tdp_level=5)
    v.nested_enter(ncr3=0x8000)
    gm = v.guest_mmu
    # CPU role from L1's CR4/EFER with CR0 = PG only: level 4 | 0x700 | efer_nx 0x1000 |
    # guest_mode 0x20000 (cr0_wp 0); ext valid | pse 0x4 | lma 0x80.
    assert gm.cpu_role.base.word == 0x2_1704 and gm.cpu_role.ext.word == 0x85
    # Root role: level 5 with passthrough (0x40000) over L1's 4-level NPT.
    assert gm.root_role.word == 0x6_1705
    assert (0x8, 0x6_1705) in v.vm.shadow.hash
    assert v.stats["guest_mmu_roots_created"] == 1


def test_nested_npt_4_level_no_passthrough():
    v = l1(vendor="amd")
    v.nested_enter(ncr3=0x8000)
    assert v.guest_mmu.root_role.word == 0x2_1704


def test_round_robin_eptps_hit_prev_roots():
    v = l1()
    order = [EPTP_A, EPTP_B] * 3
    slots = []
    for eptp in order:
        r = v.nested_enter(eptp=eptp)
        slots += [e.func for e in r.events if e.func.startswith("fast_pgd_switch (guest_mmu)")]
        assert v.guest_mmu.root.pgd == eptp
        v.nested_exit()
    # A, B miss and build; every later entry finds the other EPTP's root in prev_roots[0]
    # (the old current becomes MRU, facts §5).
    assert slots == ["fast_pgd_switch (guest_mmu): miss"] * 2 + \
        ["fast_pgd_switch (guest_mmu): prev_roots[0] hit"] * 4
    assert v.stats["guest_mmu_prev_root_hits"] == 4
    assert v.stats["guest_mmu_prev_root_misses"] == 2
    assert v.stats["guest_mmu_roots_created"] == 2 and v.stats["guest_mmu_loads"] == 2
    # The role never changed: one first init, five early returns.
    assert v.stats["guest_mmu_inits"] == 6 and v.stats["guest_mmu_init_early_returns"] == 5


def test_same_eptp_early_return_and_current_root():
    v = l1()
    v.nested_enter(eptp=EPTP_A)
    hpa = v.guest_mmu.root.hpa
    v.nested_exit()
    assert v.guest_mmu.root.hpa == hpa          # guest_mmu keeps its root across the exit
    r = v.nested_enter(eptp=EPTP_A)
    funcs = [e.func for e in r.events]
    assert "kvm_init_shadow_ept_mmu: early return" in funcs
    assert "fast_pgd_switch (guest_mmu): current root hit" in funcs
    assert not any(f.startswith("kvm_mmu_load") for f in funcs)
    assert v.guest_mmu.root.hpa == hpa and v.stats["guest_mmu_loads"] == 1


def test_reset_context_in_l1_unloads_guest_mmu_roots():
    v = l1()
    for eptp in (EPTP_A, EPTP_B):
        v.nested_enter(eptp=eptp)
        v.nested_exit()
    assert v.guest_mmu.root.valid and v.guest_mmu.prev_roots[0].valid
    r = v.set_efer(v.regs.efer & ~int(EFER.NXE))    # an EFER role bit: kvm_mmu_reset_context
    assert any("guest_mmu: freed 2 root(s)" in e.detail for e in r.events)
    assert not v.guest_mmu.root.valid
    assert not any(p.valid for p in v.guest_mmu.prev_roots)
    assert v.stats["guest_mmu_roots_put"] == 2
    # The pages stay hashed: the next entry finds the root there (EPT role is unchanged).
    r = v.nested_enter(eptp=EPTP_A)
    funcs = [e.func for e in r.events]
    assert "kvm_init_shadow_ept_mmu: early return" in funcs
    assert "kvm_mmu_load (guest_mmu): hash hit" in funcs
    assert v.stats["guest_mmu_roots_created"] == 2 and v.stats["guest_mmu_roots_reused"] == 1


def test_npt_role_follows_l1_efer_nx():
    v = l1(vendor="amd")
    v.nested_enter(ncr3=0x8000)
    v.nested_exit()
    v.set_efer(v.regs.efer & ~int(EFER.NXE))
    r = v.nested_enter(ncr3=0x8000)
    # efer_nx is L1's, not forced (facts §2.3): 0x21704 - 0x1000.
    assert v.guest_mmu.root_role.word == 0x2_0704
    assert any("efer_nx 1->0" in e.detail for e in r.events)
    assert v.stats["guest_mmu_roots_created"] == 2


def test_reset_in_l2_reloads_guest_mmu_root_from_hash():
    v = l1()
    v.nested_enter(eptp=EPTP_A)
    hpa = v.guest_mmu.root.hpa
    v.kvm_mmu_reset_context()
    assert not v.guest_mmu.root.valid and v.root.valid is False
    v.enter()
    assert v.guest_mmu.root.hpa == hpa and not v.root.valid   # only vcpu->arch.mmu loads
    v.nested_exit()
    v.enter()
    assert v.root.valid


def test_smm_never_with_nested_ept():
    """VMLAUNCH in SMM is a #UD (6.4 vmx_enter_smm clears nested.vmxon; issue 14 V2): the
    exit and the fault are counted, nothing else changes, guest_mmu is never set up."""
    v = l1()
    v.kvm_smm_changed(True)
    before = (Counter(v.stats), v.regs, v.cpu_role, v.root)
    r = v.nested_enter(eptp=EPTP_A)
    assert r.exited and r.fault.vector == 6 and not v.guest_mode
    d = Counter(v.stats)
    d.subtract(before[0])
    assert +d == Counter(vm_exits=1, ud_faults=1)
    assert (v.regs, v.cpu_role, v.root) == before[1:] and v.guest_mmu.kind is None


def test_smi_in_l2_keeps_nested_ept():
    v = l1()
    v.nested_enter(eptp=EPTP_A)
    v.enter_smm()
    assert not v.guest_mode and v.root.valid      # root_mmu again, in SMM
    v.leave_smm()
    assert v.guest_mode and v.guest_mmu.root.pgd == EPTP_A
    assert v.stats["guest_mmu_roots_created"] == 1
    v.nested_exit()
    assert not v.guest_mode


def test_legacy_mmu_supports_nested_ept():
    v = l1(mmu="legacy")
    v.nested_enter(eptp=EPTP_A)
    assert v.guest_mmu.root_role.word == 0x2_0704 and v.guest_mmu.root.valid


@pytest.mark.parametrize("kw, args, match", [
    ({"vendor": "amd"}, {"eptp": EPTP_A}, "vendor='intel'"),
    ({}, {"ncr3": 0x8000}, "vendor='amd'"),
    ({}, {"eptp": EPTP_A, "ncr3": 0x8000}, "not both"),
    ({"mmu": "shadow"}, {"eptp": EPTP_A}, "shadow"),
    ({"kernel": "5.18"}, {"eptp": EPTP_A}, "5.19"),
    ({}, {"eptp": EPTP_A, "ept_level": 5}, "walk length"),
    ({}, {"eptp": EPTP_A, "ept_ad": False}, "A/D"),
    ({}, {"eptp": 0x5000, "ept_level": 3}, "level"),
    ({}, {"eptp": 1 << 52}, "MAXPHYADDR"),
])
def test_bad_arguments_change_nothing(kw, args, match):
    v = l1(**kw)
    before = (Counter(v.stats), len(v.events), v.regs, v.root)
    with pytest.raises(ValueError, match=match):
        v.nested_enter(**args)
    assert (Counter(v.stats), len(v.events), v.regs, v.root) == before


def test_npt_needs_l1_long_mode_paging():
    v = VCpu(vendor="amd")
    v.boot_protected(pae=True)
    with pytest.raises(ValueError, match="not modelled"):
        v.nested_enter(ncr3=0x8000)
    w = VCpu(vendor="amd")          # paging off: NPT needs CR0.PG
    with pytest.raises(ValueError, match="PG"):
        w.nested_enter(ncr3=0x8000)
    with pytest.raises(TypeError):
        l1().nested_enter(eptp=EPTP_A, ept_ad=1)


def test_default_path_has_no_guest_mmu():
    v = l1()
    v.nested_enter()
    assert v.cpu_role.base.guest_mode == 1 and not v.guest_mmu.root.valid
    assert not any(k.startswith(("guest_mmu", "nested_mmu")) for k in v.stats)
