"""mmu.kvm.legacy (5.18 mmu_role, LegacyMmu, nfc_report) against tests/role_expectations.py."""
from __future__ import annotations

import itertools
from collections import Counter

import pytest

import role_expectations as E
from mmu.x86.regs import Regs, make_regs
from mmu.kvm.legacy import (
    LegacyExtendedRole, LegacyMmu, MmuRole, NfcReport, init_mmu, init_shadow_ept_mmu,
    init_shadow_npt_mmu, mmu_role, nested_mmu_role, nfc_report, reachable_role_regs,
    render_nfc_table, shadow_ept_mmu_role, shadow_npt_mmu_role,
)
from mmu.kvm.roles import PageRole

STATES = E.reachable_states()
SMM_GM_ALL = list(itertools.product((0, 1), repeat=2))


def regs_of(s: E.State) -> Regs:
    return Regs(cr0=s.cr0(), cr3=0, cr4=s.cr4(), efer=s.efer())


# --- exhaustive words ----------------------------------------------------------------
def test_tdp_mmu_role_every_state():
    for s in STATES:
        regs = regs_of(s)
        for (smm, gm), level, ad in itertools.product(SMM_GM_ALL, (4, 5), (True, False)):
            got = mmu_role(regs, tdp=True, smm=smm, guest_mode=gm, tdp_level=level,
                           ad_enabled=ad).as_u64
            assert got == E.expected_legacy_tdp_u64(s, smm, gm, level, ad), (s, smm, gm)


def test_shadow_mmu_role_every_state():
    for s in STATES:
        regs = regs_of(s)
        for smm, gm in SMM_GM_ALL:
            got = mmu_role(regs, tdp=False, smm=smm, guest_mode=gm)
            assert got.as_u64 == E.expected_legacy_shadow_u64(s, smm, gm), (s, smm, gm)
            assert got.ext.word == E.expected_legacy_ext_word(s)


def test_shadow_npt_every_state():
    for s in STATES:
        for level, smm in itertools.product((4, 5), (0, 1)):
            if s.pg and E.guest_level(s) <= level:
                got = shadow_npt_mmu_role(regs_of(s), level, smm).as_u64
                assert got == E.expected_legacy_npt_u64(s, level, smm), (s, level, smm)


@pytest.mark.parametrize("level, ad, xo", list(itertools.product((4, 5), (True, False),
                                                                 (True, False))))
def test_shadow_ept(level, ad, xo):
    role = shadow_ept_mmu_role(level, ad, xo)
    base = E.expected_ept_role_u64(level, ad, xo) & 0xFFFF_FFFF
    assert role.as_u64 == base | (1 | int(xo) << 1) << 32    # same ext bits 0-1 in 5.18
    assert shadow_ept_mmu_role(level, ad, xo, smm=True).base.smm == 1  # 5.18 copied it


# --- literal rows (hand-computed) ----------------------------------------------------
@pytest.mark.parametrize("mode, tdp, kw, base, ext", [
    # TDP, paging off: level 4 | direct 0x80 | access 0x700; WP/NX ignored; ext valid
    ("none", True, dict(wp=True, nx=True), 0x784, 0x1),
    # TDP, 4-level, WP NX PSE: + nx 0x1000 | wp 0x2000; ext valid|cr0_pg|pae|pse|lma = 0x21d
    ("4-level", True, dict(wp=True, nx=True, pse=True), 0x3784, 0x21D),
    # TDP, 32-bit, WP=0 NX=0 SMEP: no smep_andnot_wp in the TDP role; ext valid|pg|pse|smep
    ("32-bit", True, dict(wp=False, nx=False, smep=True), 0x784, 0x95),
    # shadow, 32-bit, WP=0, SMEP, NX, PSE: 3|4-byte 0x10|0x700|nx|smep_andnot_wp 0x4000
    ("32-bit", False, dict(wp=False, nx=True, smep=True), 0x5713, 0x95),
    # shadow, paging off: 3 | direct | 0x700, efer_nx NOT forced
    ("none", False, dict(wp=True, nx=True), 0x783, 0x1),
    # shadow, 5-level, WP, no NX, SMAP, PKE: 5|0x700|wp; ext valid|pg|pae|pse|pke 0x20|smap
    # 0x40|la57 0x100|lma 0x200
    ("5-level", False, dict(wp=True, nx=False, smap=True, pke=True), 0x2705, 0x37D),
])
def test_legacy_table_rows(mode, tdp, kw, base, ext):
    role = mmu_role(make_regs(mode, **kw), tdp=tdp)
    assert (hex(role.base.word), hex(role.ext.word)) == (hex(base), hex(ext))


def test_nested_mmu_role_direct_forced():
    role = nested_mmu_role(make_regs("4-level", wp=True, nx=True))
    # 4 | direct (forced) | 0x700 | nx | wp | guest_mode
    assert hex(role.base.word) == hex(4 | 0x80 | 0x700 | 0x3000 | 0x20000)


# --- layout and bit 18 ---------------------------------------------------------------
def test_legacy_ext_layout():
    names = [(r.name, r.offset) for r in LegacyExtendedRole().fields()]
    assert names == [("valid", 0), ("execonly", 1), ("cr0_pg", 2), ("cr4_pae", 3),
                     ("cr4_pse", 4), ("cr4_pke", 5), ("cr4_smap", 6), ("cr4_smep", 7),
                     ("cr4_la57", 8), ("efer_lma", 9)]
    with pytest.raises(ValueError, match="unused"):
        LegacyExtendedRole.from_word(1 << 10)


def test_bit_18_must_be_zero_in_5_18():
    with pytest.raises(ValueError, match="passthrough"):
        MmuRole(PageRole(passthrough=1))
    with pytest.raises(ValueError, match="passthrough"):
        MmuRole.from_u64(1 << 18)
    role = mmu_role(make_regs("4-level"))
    assert MmuRole.from_u64(role.as_u64) == role
    assert "base.passthrough" not in [r.name for r in role.fields()]
    assert [r.offset for r in role.fields()][-1] == 32 + 9


# --- LegacyMmu side fields -------------------------------------------------------------
@pytest.mark.parametrize("mode, root_level, shadow_level, direct", [
    ("none", 0, 3, True), ("32-bit", 2, 3, False), ("PAE", 3, 3, False),
    ("4-level", 4, 4, False), ("5-level", 5, 5, False),
])
def test_init_mmu_shadow_fields(mode, root_level, shadow_level, direct):
    mmu = init_mmu(make_regs(mode), tdp=False)
    assert (mmu.root_level, mmu.shadow_root_level, mmu.direct_map, mmu.ept_ad) == (
        root_level, shadow_level, direct, False)
    tdp = init_mmu(make_regs(mode), tdp=True, tdp_level=5)
    assert (tdp.root_level, tdp.shadow_root_level, tdp.direct_map) == (root_level, 5, True)


def test_init_nested_fields():
    assert init_shadow_ept_mmu(5, accessed_dirty=False) == LegacyMmu(
        shadow_ept_mmu_role(5, False), 5, 5, False, False)
    assert init_shadow_ept_mmu(4).ept_ad is True
    npt = init_shadow_npt_mmu(make_regs("PAE"), tdp_level=4)
    assert (npt.root_level, npt.shadow_root_level, npt.direct_map) == (3, 4, False)


def test_legacy_bad_inputs():
    with pytest.raises(ValueError, match="tdp_level=6"):
        mmu_role(make_regs("none"), tdp_level=6)
    with pytest.raises(ValueError, match="guest_mode=3"):
        mmu_role(make_regs("none"), guest_mode=3)
    with pytest.raises(ValueError, match="CR0.PG"):
        shadow_npt_mmu_role(make_regs("none"))
    with pytest.raises(TypeError, match="report"):
        render_nfc_table("nope")


# --- the no-functional-change report ------------------------------------------------
@pytest.fixture(scope="module")
def report() -> NfcReport:
    return nfc_report()


def test_enumeration_matches_sdm_rules():
    got = {(r.cr0, r.cr4, r.efer) for r in reachable_role_regs()}
    assert got == {(s.cr0(), s.cr4(), s.efer()) for s in STATES}
    assert len(got) == E.REACHABLE_COUNT


N_SMM_GM = len(E.SMM_GUEST_MODES)
N_TDP_CONFIGS = 4       # level 4/5 x A/D on/off


def _pairs(n):
    return n * (n - 1) // 2


def test_side_fields_never_change(report):
    total = E.REACHABLE_COUNT * N_SMM_GM * (N_TDP_CONFIGS + 1)
    for d in ("root_level == cpu_role.base.level", "shadow_root_level == root_role.level",
              "direct_map == root_role.direct"):
        assert (report.row(d).identical, report.row(d).differing) == (total, 0)
    for d in ("early return in init (TDP)", "early return in init (shadow)",
              "early return in init (nested MMU)"):
        assert report.row(d).differing == 0 and report.row(d).identical > 0
    assert (report.row("ept_ad == !cpu_role.base.ad_disabled (nested EPT)").differing,
            report.row("root page role word (nested EPT)").differing) == (0, 0)


def test_tdp_root_word_differs_unless_pg_wp_nx(report):
    same = sum(1 for s in STATES if s.pg and s.wp and s.nx)
    row = report.row("root page role word (TDP)")
    assert row.identical == same * N_SMM_GM * N_TDP_CONFIGS
    assert row.differing == (E.REACHABLE_COUNT - same) * N_SMM_GM * N_TDP_CONFIGS
    assert "cr0_wp" in row.example or "efer_nx" in row.example


def test_shadow_root_word_differs_unless_pg_nx(report):
    same = sum(1 for s in STATES if s.pg and s.nx)
    row = report.row("root page role word (shadow)")
    assert (row.identical, row.differing) == (same * N_SMM_GM,
                                              (E.REACHABLE_COUNT - same) * N_SMM_GM)


def _brute_force_disagreements(keys_old, keys_new):
    """Pairs (i < j) where 'same old key' and 'same new key' disagree, by visiting all."""
    n = len(keys_old)
    return sum((keys_old[i] == keys_old[j]) != (keys_new[i] == keys_new[j])
               for i in range(n) for j in range(i + 1, n))


def test_root_sharing_pair_counts(report):
    # Per (smm, guest_mode) the keys do not depend on smm/gm, so count one and scale.
    # TDP, 5.18 key: (PG&&NX, PG&&WP); 5.19: a single root.
    groups = Counter((s.pg and s.nx, s.pg and s.wp) for s in STATES)
    per = _pairs(E.REACHABLE_COUNT) - sum(_pairs(c) for c in groups.values())
    assert report.row("states share a root (TDP)").differing == per * N_SMM_GM * N_TDP_CONFIGS
    old = [E.expected_legacy_shadow_u64(s, 0, 0) & 0xFFFF_FFFF for s in STATES]
    new = [E.expected_shadow_root_word(s, 0, 0) for s in STATES]
    want = _brute_force_disagreements(old, new)
    assert want > 0
    assert report.row("states share a root (shadow)").differing == want * N_SMM_GM


def test_nested_npt_differs_only_by_passthrough(report):
    four_level = sum(1 for s in STATES if E.guest_level(s) == 4)
    row = report.row("root page role word (nested NPT)")
    assert row.differing == four_level * 2          # TDP level 5 only, smm 0/1
    assert "passthrough 0->1" in row.example


def test_render_nfc_table(report):
    text = render_nfc_table(report)
    for row in report.rows:
        assert row.decision in text
    assert text.count("CHANGED") == sum(1 for r in report.rows if r.differing)
    assert "896 register states" in text
