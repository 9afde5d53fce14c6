"""mmu.kvm.roles (5.19+) against the independent expectations in tests/role_expectations.py."""
from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings, strategies as st

from mmu.x86.regs import Regs, make_regs, paging_mode
from mmu.kvm.roles import (
    CpuRole, ExtendedRole, FieldRow, PageRole, child_role, cpu_role, nested_ept_role,
    nested_mmu_role, nested_npt_roles, shadow_root_role, tdp_root_role,
)
import role_expectations as E

STATES = E.reachable_states()
SMM_GM_ALL = list(itertools.product((0, 1), repeat=2))


def regs_of(s: E.State) -> Regs:
    return Regs(cr0=s.cr0(), cr3=0, cr4=s.cr4(), efer=s.efer())


# --- the enumeration itself ----------------------------------------------------------
def test_reachable_states_are_exactly_what_paging_mode_accepts():
    accepted = []
    for s in E.all_states():
        try:
            paging_mode(regs_of(s))
        except ValueError:
            continue
        accepted.append(s)
    assert accepted == STATES
    assert len(STATES) == E.REACHABLE_COUNT == 896


# --- exhaustive word checks ----------------------------------------------------------
def test_cpu_role_every_state():
    for s in STATES:
        regs = regs_of(s)
        for smm, gm in SMM_GM_ALL:
            role = cpu_role(regs, smm=smm, guest_mode=gm)
            want = E.expected_cpu_role_u64(s, smm, gm)
            assert role.as_u64 == want, (s, smm, gm, hex(role.as_u64), hex(want))
            assert role.base.word == E.expected_cpu_base_word(s, smm, gm)
            assert role.ext.word == E.expected_cpu_ext_word(s)


def test_tdp_root_role_every_state():
    for s in STATES:
        regs = regs_of(s)
        for (smm, gm), level, ad in itertools.product(SMM_GM_ALL, (4, 5), (True, False)):
            got = tdp_root_role(cpu_role(regs, smm, gm), tdp_level=level, ad_enabled=ad).word
            assert got == E.expected_tdp_root_word(smm, gm, level, ad), (s, smm, gm, level, ad)


def test_shadow_root_role_every_state():
    for s in STATES:
        regs = regs_of(s)
        for smm, gm in SMM_GM_ALL:
            got = shadow_root_role(cpu_role(regs, smm, gm)).word
            assert got == E.expected_shadow_root_word(s, smm, gm), (s, smm, gm, hex(got))


def test_nested_npt_every_state():
    for s in STATES:
        if not s.pg:
            continue
        for level in (4, 5):
            if E.guest_level(s) > level:
                continue
            cpu, root = nested_npt_roles(regs_of(s), tdp_level=level)
            want_cpu, want_root = E.expected_npt_words(s, level)
            assert (cpu.as_u64, root.word) == (want_cpu, want_root), (s, level)


# --- the fact sheet's rows as literals (hand-computed words) --------------------------
@pytest.mark.parametrize("mode, kw, base, ext", [
    # no paging: access 7<<8 | direct 1<<7 = 0x780, ext = valid
    ("none", dict(wp=True, nx=True, smep=True), 0x780, 0x1),
    # 32-bit, WP, PSE, no NX: level 2 | 4-byte 0x10 | 0x700 | wp 0x2000
    ("32-bit", dict(wp=True, nx=False, pse=True), 0x2712, 0x5),
    # PAE, WP=0, SMEP, NX, no PSE: 3 | 0x700 | nx 0x1000 | smep_andnot_wp 0x4000; ext smep 0x20
    ("PAE", dict(wp=False, nx=True, pse=False, smep=True), 0x5703, 0x21),
    # 4-level, WP, NX, PSE, PKE: 4 | 0x700 | 0x3000; ext valid|pse|pke|lma = 0x8d
    ("4-level", dict(wp=True, nx=True, pse=True, pke=True), 0x3704, 0x8D),
    # 5-level, WP, NX, SMAP, no PSE: 5 | 0x3700; ext valid|smap|la57|lma = 0xd1
    ("5-level", dict(wp=True, nx=True, pse=False, smap=True), 0x3705, 0xD1),
    # 32-bit, WP=0, SMEP+SMAP, no NX, no PSE: 2|0x10|0x700|0x4000|0x8000; ext smap|smep
    ("32-bit", dict(wp=False, nx=False, pse=False, smep=True, smap=True), 0xC712, 0x31),
])
def test_cpu_role_table_rows(mode, kw, base, ext):
    role = cpu_role(make_regs(mode, **kw))
    assert (hex(role.base.word), hex(role.ext.word)) == (hex(base), hex(ext))
    assert role.as_u64 == base | ext << 32


def test_smm_and_guest_mode_bits():
    regs = make_regs("none")
    assert cpu_role(regs, smm=True).base.word == 0x0100_0780
    assert cpu_role(regs, guest_mode=True).base.word == 0x0002_0780
    assert cpu_role(regs, smm=True).as_u64 == 0x1_0100_0780


@pytest.mark.parametrize("level, ad, smm, gm, word", [
    (4, True, 0, 0, 0x3784),        # 4 | direct 0x80 | 0x700 | nx 0x1000 | wp 0x2000
    (5, False, 0, 0, 0x13785),      # + ad_disabled 0x10000
    (4, True, 1, 0, 0x0100_3784),
    (4, True, 0, 1, 0x0002_3784),
])
def test_tdp_root_role_literals(level, ad, smm, gm, word):
    for mode in ("none", "32-bit", "PAE", "4-level", "5-level"):
        cpu = cpu_role(make_regs(mode, wp=False, nx=False), smm=smm, guest_mode=gm)
        assert tdp_root_role(cpu, tdp_level=level, ad_enabled=ad).word == word


@pytest.mark.parametrize("mode, wp, smep, word", [
    ("none", True, False, 0x1783),      # 3 | direct | 0x700 | efer_nx forced
    ("32-bit", True, False, 0x3713),    # 3 | 4-byte | 0x700 | nx | wp
    ("PAE", False, True, 0x5703),       # 3 | 0x700 | nx | smep_andnot_wp
    ("4-level", True, False, 0x3704),
    ("5-level", True, True, 0x3705),
])
def test_shadow_root_role_literals(mode, wp, smep, word):
    cpu = cpu_role(make_regs(mode, wp=wp, smep=smep, nx=False))   # NX=0: forced to 1 anyway
    assert hex(shadow_root_role(cpu).word) == hex(word)


# --- invariants ----------------------------------------------------------------------
def test_andnot_wp_implies_not_wp():
    for s in STATES:
        for role in (cpu_role(regs_of(s)).base, shadow_root_role(cpu_role(regs_of(s)))):
            if role.smep_andnot_wp or role.smap_andnot_wp:
                assert not role.cr0_wp


def test_tdp_root_role_ignores_guest_paging_bits():
    """One TDP root per (smm, guest_mode, level, A/D), whatever CR0/CR4/EFER say."""
    for (smm, gm), level, ad in itertools.product(SMM_GM_ALL, (4, 5), (True, False)):
        words = {tdp_root_role(cpu_role(regs_of(s), smm, gm), level, ad).word for s in STATES}
        assert len(words) == 1


@pytest.mark.parametrize("ad", [True, False])
def test_at_most_six_distinct_tdp_roots(ad):
    words = {tdp_root_role(cpu_role(regs_of(s), smm, gm), level, ad).word
             for s in STATES for smm, gm in E.SMM_GUEST_MODES for level in (4, 5)}
    assert len(words) == 6      # level 4/5 x {normal, SMM, guest mode}


@pytest.mark.parametrize("level", [4, 5])
def test_six_tdp_roots_per_level_with_both_ad_settings(level):
    words = {tdp_root_role(cpu_role(regs_of(s), smm, gm), level, ad).word
             for s in STATES for smm, gm in E.SMM_GUEST_MODES for ad in (True, False)}
    assert len(words) == 6      # A/D on/off x {normal, SMM, guest mode}


def test_paging_off_role_ignores_every_other_bit():
    roles = {cpu_role(regs_of(s)).as_u64 for s in STATES if not s.pg}
    assert roles == {0x1_0000_0780}


# --- nested --------------------------------------------------------------------------
def test_nested_npt_passthrough_and_pke_mask():
    l1 = make_regs("4-level", wp=True, nx=True, smep=True, pke=True)
    cpu, root = nested_npt_roles(l1, tdp_level=5)
    # L1 WP ignored (CR0 = PG only): smep_andnot_wp = SMEP; PKE masked; guest_mode
    assert hex(cpu.base.word) == hex(4 | 0x700 | 0x1000 | 0x4000 | 0x20000)
    assert hex(cpu.ext.word) == hex(1 | 0x4 | 0x20 | 0x80)
    assert hex(root.word) == hex(5 | 0x700 | 0x1000 | 0x4000 | 0x20000 | 0x40000)
    assert root.passthrough == 1 and not root.direct
    cpu4, root4 = nested_npt_roles(l1, tdp_level=4)
    assert root4.passthrough == 0 and root4.level == 4 and cpu4 == cpu
    _, root_pae = nested_npt_roles(make_regs("PAE"), tdp_level=5)
    assert root_pae.passthrough == 0 and root_pae.level == 5


def test_nested_npt_errors():
    with pytest.raises(ValueError, match="CR0.PG"):
        nested_npt_roles(make_regs("none"))
    with pytest.raises(ValueError, match="tdp_level"):
        nested_npt_roles(make_regs("5-level"), tdp_level=4)
    with pytest.raises(ValueError, match="tdp_level"):
        nested_npt_roles(make_regs("4-level"), tdp_level=3)


@pytest.mark.parametrize("level, ad, xo",
                         list(itertools.product((4, 5), (True, False), (True, False))))
def test_nested_ept_role(level, ad, xo):
    role = nested_ept_role(level, accessed_dirty=ad, execonly=xo)
    assert role.as_u64 == E.expected_ept_role_u64(level, ad, xo)


def test_nested_ept_role_literals_and_errors():
    assert nested_ept_role().as_u64 == 0x1_0002_0704
    assert nested_ept_role(5, False, True).as_u64 == 0x3_0003_0705
    with pytest.raises(ValueError, match="nested EPT cannot be used in SMM"):
        nested_ept_role(smm=True)
    with pytest.raises(ValueError, match="level=3"):
        nested_ept_role(3)


def test_nested_mmu_role_is_cpu_role_in_guest_mode():
    for s in STATES[::7]:
        assert nested_mmu_role(regs_of(s)).as_u64 == E.expected_cpu_role_u64(s, 0, 1)


# --- child roles ---------------------------------------------------------------------
def test_child_role_clears_passthrough_and_sets_fields():
    _, root = nested_npt_roles(make_regs("4-level"), tdp_level=5)
    child = child_role(root, level=4, direct=False, access=5)
    assert child == root.replace(level=4, passthrough=0, access=5)
    assert child.word == root.word - 1 - (1 << 18) - (2 << 8)


def test_child_role_quadrant_for_4_byte_gptes():
    pae_dir = shadow_root_role(cpu_role(make_regs("32-bit"))).replace(level=2, quadrant=3)
    child = child_role(pae_dir, level=1, direct=False, access=7, quadrant=1)
    assert (child.level, child.quadrant, child.has_4_byte_gpte) == (1, 1, 1)
    with pytest.raises(ValueError, match="quadrant"):
        child_role(pae_dir, level=1, direct=False, access=7, quadrant=2)
    root64 = shadow_root_role(cpu_role(make_regs("4-level")))
    with pytest.raises(ValueError, match="quadrant"):
        child_role(root64, level=3, direct=False, access=7, quadrant=1)
    with pytest.raises(ValueError, match="level"):
        child_role(root64, level=2, direct=False, access=7)


# --- packing: round trips, diff, fields ----------------------------------------------
PAGE_LAYOUT = [("level", 0, 4), ("has_4_byte_gpte", 4, 1), ("quadrant", 5, 2), ("direct", 7, 1),
               ("access", 8, 3), ("invalid", 11, 1), ("efer_nx", 12, 1), ("cr0_wp", 13, 1),
               ("smep_andnot_wp", 14, 1), ("smap_andnot_wp", 15, 1), ("ad_disabled", 16, 1),
               ("guest_mode", 17, 1), ("passthrough", 18, 1), ("smm", 24, 8)]
EXT_LAYOUT = [("valid", 0, 1), ("execonly", 1, 1), ("cr4_pse", 2, 1), ("cr4_pke", 3, 1),
              ("cr4_smap", 4, 1), ("cr4_smep", 5, 1), ("cr4_la57", 6, 1), ("efer_lma", 7, 1)]


def test_layouts_match_fact_sheet():
    assert [(r.name, r.offset, r.width) for r in PageRole().fields()] == PAGE_LAYOUT
    assert [(r.name, r.offset, r.width) for r in ExtendedRole().fields()] == EXT_LAYOUT
    rows = CpuRole().fields()
    assert rows[0] == FieldRow("base.level", 0, 4, 0)
    assert rows[-1] == FieldRow("ext.efer_lma", 39, 1, 0)


def _fields_strategy(layout):
    return st.fixed_dictionaries({n: st.integers(0, (1 << w) - 1) for n, _, w in layout})


@settings(derandomize=True, max_examples=200)
@given(_fields_strategy(PAGE_LAYOUT))
def test_page_role_round_trip(kw):
    role = PageRole(**kw)
    want = sum(kw[n] << off for n, off, _ in PAGE_LAYOUT)
    assert role.word == want
    assert PageRole.from_word(want) == role


@settings(derandomize=True, max_examples=200)
@given(_fields_strategy(PAGE_LAYOUT), _fields_strategy(EXT_LAYOUT))
def test_cpu_role_round_trip(kb, ke):
    role = CpuRole(PageRole(**kb), ExtendedRole(**ke))
    assert CpuRole.from_u64(role.as_u64) == role
    assert role.as_u64 >> 32 == ExtendedRole(**ke).word


@settings(derandomize=True, max_examples=200)
@given(st.integers(0, (1 << 32) - 1))
def test_from_word_rejects_unused_bits(word):
    if word & 0x00F8_0000:
        with pytest.raises(ValueError, match="unused"):
            PageRole.from_word(word)
    else:
        assert PageRole.from_word(word).word == word
    if word >> 8:
        with pytest.raises(ValueError, match="unused"):
            ExtendedRole.from_word(word)


def test_diff_and_replace():
    cpu = cpu_role(make_regs("4-level", wp=False, nx=False))
    shadow, tdp = shadow_root_role(cpu), tdp_root_role(cpu)
    assert shadow.diff(tdp) == [("direct", 0, 1), ("cr0_wp", 0, 1)]
    assert cpu.base.diff(shadow) == [("efer_nx", 0, 1)]
    other = cpu_role(make_regs("4-level", wp=True, nx=False, smep=True))
    assert cpu.diff(other) == [("base.cr0_wp", 0, 1), ("ext.cr4_smep", 0, 1)]
    assert cpu.replace(ext=cpu.ext.replace(valid=0)).as_u64 == cpu.as_u64 - (1 << 32)


# --- bad input -----------------------------------------------------------------------
def test_bad_inputs():
    cpu = cpu_role(make_regs("4-level"))
    with pytest.raises(ValueError, match="tdp_level=3"):
        tdp_root_role(cpu, tdp_level=3)
    with pytest.raises(TypeError, match="tdp_level"):
        tdp_root_role(cpu, tdp_level="4")
    with pytest.raises(TypeError, match="cpu_role"):
        tdp_root_role(cpu.base)
    with pytest.raises(ValueError, match="smm=2"):
        cpu_role(make_regs("none"), smm=2)
    with pytest.raises(ValueError, match="LMA"):
        cpu_role(Regs(cr0=E.CR0_PE, cr3=0, cr4=0, efer=E.EFER_LMA))
    with pytest.raises(TypeError, match="regs"):
        cpu_role(None)
    with pytest.raises(ValueError, match=r"PageRole.access=8 .*allowed 0 <= access < 8"):
        PageRole(access=8)
    with pytest.raises(TypeError, match="level"):
        PageRole(level="4")
    with pytest.raises(ValueError, match="PageRole word"):
        PageRole.from_word(1 << 32)
    with pytest.raises(ValueError, match="as_u64"):
        CpuRole.from_u64(-1)
    with pytest.raises(TypeError, match="diff"):
        cpu.base.diff(cpu.ext)


# --- 6.14+: is_mirror (bit 19) ------------------------------------------------------------
# Source: kvm_host.h union kvm_mmu_page_role -- 6.12.19 has passthrough:1 then ":5" unused
# bits before smm; 6.18.2 has passthrough:1, is_mirror:1, ":4", smm:8 (tag [K618-ROLE]).
# So bit 19 = 0x80000 is a named field from 6.14 and an unused bit before.
MIRROR_ERA = "6.18"


def test_is_mirror_is_bit_19_only_from_6_14():
    assert ("is_mirror", 19, 1) in PageRole.layout(MIRROR_ERA)
    assert "is_mirror" not in [n for n, _, _ in PageRole.layout()]           # 5.19-6.13
    assert "is_mirror" not in [n for n, _, _ in PageRole.layout("6.12")]
    # used_mask: 0xff07ffff before (bits 0-18 and 24-31), 0xff0fffff with bit 19.
    assert PageRole.used_mask() == 0xFF07_FFFF
    assert PageRole.used_mask("6.12") == 0xFF07_FFFF
    assert PageRole.used_mask(MIRROR_ERA) == 0xFF0F_FFFF


def test_from_word_accepts_is_mirror_only_in_6_14_plus_eras():
    # A TDX mirror root on a 4-level TDP host: the ordinary TDP root role 0x3784 (level 4,
    # direct 0x80, access 7 << 8, efer_nx 0x1000, cr0_wp 0x2000) plus bit 19 = 0x83784.
    role = PageRole.from_word(0x83784, MIRROR_ERA)
    assert (role.is_mirror, role.level, role.direct, role.cr0_wp, role.efer_nx) == (1, 4, 1, 1, 1)
    assert role.word == 0x83784
    for era in (None, "6.4", "6.12"):
        with pytest.raises(ValueError, match=r"unused bits 0x80000.*is_mirror.*6\.18"):
            PageRole.from_word(0x83784, era)
    with pytest.raises(ValueError, match="unknown kernel era"):
        PageRole.from_word(0x3784, "6.13")
    # The CPU role's base is the same union.
    assert CpuRole.from_u64(0x83784 | 1 << 32, MIRROR_ERA).base.is_mirror == 1
    with pytest.raises(ValueError, match="is_mirror"):
        CpuRole.from_u64(0x83784 | 1 << 32)


def test_is_mirror_row_shown_only_where_the_kernel_has_it():
    rows = [r.name for r in PageRole().fields(era=MIRROR_ERA)]
    assert rows[-3:] == ["passthrough", "is_mirror", "smm"]
    assert "is_mirror" not in [r.name for r in PageRole().fields(era="6.12")]
    assert "base.is_mirror" in [r.name for r in CpuRole().fields(era=MIRROR_ERA)]
    # A set bit is never hidden, whatever the era says.
    assert "is_mirror" in [r.name for r in PageRole(is_mirror=1).fields()]


def test_is_mirror_is_zero_for_every_modelled_role():
    # 6.18.2 mmu.c: the root-role builders (kvm_calc_tdp_mmu_root_page_role,
    # kvm_init_shadow_mmu, kvm_calc_shadow_ept_root_page_role, ...) never set it; only
    # kvm_tdp_mmu_alloc_root(vcpu, mirror=true) does, for a TDX VM, which is not modelled.
    for s in STATES:
        cpu = cpu_role(regs_of(s))
        assert cpu.base.is_mirror == 0
        assert tdp_root_role(cpu).is_mirror == 0
        if cpu.base.level:
            assert shadow_root_role(cpu).is_mirror == 0


def test_role_words_from_numpy_integers_are_plain_ints():
    """check_int accepts any __index__ integer (numpy's too) and returns a plain int; the
    unpackers compute with that, not with the numpy value (np.uint64 & ~mask overflowed)."""
    import numpy as np
    from mmu.kvm.roles import CpuRole, PageRole
    r = PageRole.from_word(np.uint64(0x3704))
    assert r == PageRole.from_word(0x3704) and type(r.word) is int and type(r.level) is int
    assert CpuRole.from_u64(np.uint64(0x3704)) == CpuRole.from_u64(0x3704)
