"""Era presets against the fact sheet's version map (facts §0.3, §3, §9)."""
import pytest

from mmu.kvm.eras import ERA_NAMES, ERAS, FLAG_NAMES, era
from mmu.x86.regs import EFER

# One row per preset, typed from the fact sheet: role split in 5.19 (§0.3), EFER.LME in
# the role mask from 5.17 (d6174299365d, §3.1), kvm_mmu_new_pgd uses the stored role
# from 5.18 (§2.2), and the four 2023 CR0.WP changes plus TDP-root preservation in 6.4
# (§3.2, §3.3, §4, §9).
# is_mirror (bit 19) is 6.14: read in the 6.18.2 kvm_host.h, absent from 6.4.6 and 6.12.19.
# CET (6.18): CR4_RESERVED_BITS in 6.18.2 kvm_host.h lacks X86_CR4_CET, 6.12.19's has it.
# 6.9 (read in 6.12.19 against 6.4.6): mmu_alloc_direct_roots calls kvm_tdp_mmu_alloc_root
# (alloc), and kvm_mmu_after_set_cpuid sets root_role.invalid (cpuid).  6.6: 6.12.19's
# mmu_alloc_shadow_roots loads kvm_mmu_get_dummy_root() where 6.4.6 calls mmu_check_root.
EXPECTED = {
    #        split  lme    newpgd preserve nounload nonpg  owned  refresh mirror cet    alloc  cpuid  dummy
    "5.15": (False, False, False, False,   False,   False, False, False,  False, False, False, False, False),
    "5.18": (False, True,  True,  False,   False,   False, False, False,  False, False, False, False, False),
    "5.19": (True,  True,  True,  False,   False,   False, False, False,  False, False, False, False, False),
    "6.1":  (True,  True,  True,  False,   False,   False, False, False,  False, False, False, False, False),
    "6.4":  (True,  True,  True,  True,    True,    True,  True,  True,   False, False, False, False, False),
    "6.12": (True,  True,  True,  True,    True,    True,  True,  True,   False, False, True,  True,  True),
    "6.18": (True,  True,  True,  True,    True,    True,  True,  True,   True,  True,  True,  True,  True),
}
ORDER = ("role_split", "efer_lme_resets", "new_pgd_uses_mmu_role", "tdp_root_preserved",
         "cr0_wp_tdp_no_unload", "ignore_wp_nonpaging", "cr0_wp_guest_owned",
         "wp_refresh_in_permission_fault", "page_role_is_mirror", "cet_virtualized",
         "tdp_root_alloc_read_lock", "cpuid_invalidates_root_role", "shadow_dummy_root")


def test_flag_names_are_the_documented_ones():
    assert set(FLAG_NAMES) == set(ORDER)
    assert ERA_NAMES == ("5.15", "5.18", "5.19", "6.1", "6.4", "6.12", "6.18")


@pytest.mark.parametrize("name", list(EXPECTED))
def test_presets(name):
    e = era(name)
    assert e is ERAS[name]
    assert tuple(getattr(e, f) for f in ORDER) == EXPECTED[name]


def test_efer_role_bits():
    assert era("5.15").efer_role_bits == EFER.NXE
    assert era("5.18").efer_role_bits == EFER.NXE | EFER.LME


def test_override_expresses_stable_backport_row():
    # v6.1.y after the May-2023 backport: 6.1 + no-unload + guest-owned WP (+ refresh),
    # but not e40bcf9f3a18 (facts §3.2 "Stable-backport variant").
    e = era("6.1", cr0_wp_tdp_no_unload=True, cr0_wp_guest_owned=True,
            wp_refresh_in_permission_fault=True)
    assert e.cr0_wp_tdp_no_unload and e.cr0_wp_guest_owned and not e.ignore_wp_nonpaging
    assert e.name.startswith("6.1+")
    assert [d[0] for d in e.diff(era("6.1"))] == ["cr0_wp_tdp_no_unload", "cr0_wp_guest_owned",
                                                   "wp_refresh_in_permission_fault"]
    # Overriding with the preset's own value changes nothing.
    assert era("6.4", role_split=True) is ERAS["6.4"]
    assert era("6.4", tdp_root_preserved=False).name == "6.4-tdp_root_preserved"


def test_bad_input():
    with pytest.raises(ValueError, match="5.15"):
        era("5.10")
    with pytest.raises(ValueError, match="role_split"):
        era("6.1", no_such_flag=True)
    with pytest.raises(TypeError, match="bool"):
        era("6.1", role_split=1)
    with pytest.raises(TypeError):
        era(6.1)


def test_era_is_frozen():
    with pytest.raises(Exception):
        era("6.4").role_split = False
