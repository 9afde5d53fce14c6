"""Labs 7 (legacy) and 8 (nested): answers against tests/role_expectations.py (role words
written from the fact sheet without the model) and hand-worked cases.

The generic checks (200 seeds solve, a perturbed step is named) run for these kinds in
tests/test_exercises.py, which iterates the registry.
"""
from __future__ import annotations

import pytest

from mmu.book.exercises.legacy import make_problem as legacy_problem
from mmu.book.exercises.nested import make_problem as nested_problem
from role_expectations import (State, expected_ept_role_u64, expected_legacy_ext_word,
                               expected_legacy_shadow_u64, expected_legacy_tdp_u64,
                               expected_npt_words, expected_shadow_root_word,
                               expected_tdp_root_word)

SEEDS = range(200)
LOW = 0xFFFF_FFFF


def _state(regs) -> State:
    return State(pg=regs.pg, wp=regs.wp, pse=regs.pse, pae=regs.pae, la57=regs.la57,
                 smep=regs.smep, smap=regs.smap, pke=regs.pke, lme=regs.lme, lma=regs.lma,
                 nx=regs.nx)


def _fields_differ(a: int, b: int) -> set[str]:
    """Page-role fields (facts §1.1) whose bits differ between two words."""
    layout = {"level": 0xF, "has_4_byte_gpte": 1 << 4, "quadrant": 3 << 5, "direct": 1 << 7,
              "access": 7 << 8, "invalid": 1 << 11, "efer_nx": 1 << 12, "cr0_wp": 1 << 13,
              "smep_andnot_wp": 1 << 14, "smap_andnot_wp": 1 << 15, "ad_disabled": 1 << 16,
              "guest_mode": 1 << 17, "passthrough": 1 << 18, "smm": 0xFF << 24}
    return {name for name, mask in layout.items() if (a ^ b) & mask}


def test_split_words_match_the_fact_sheet():
    for seed in SEEDS:
        p = legacy_problem(seed, 1)
        s, smm, gm = _state(p.regs), int(p.smm), int(p.guest_mode)
        if p.mmu == "tdp":
            old = expected_legacy_tdp_u64(s, smm, gm, p.tdp_level, p.ad_enabled) & LOW
            new = expected_tdp_root_word(smm, gm, p.tdp_level, p.ad_enabled)
        else:
            old = expected_legacy_shadow_u64(s, smm, gm) & LOW
            new = expected_shadow_root_word(s, smm, gm)
        answer = {"mmu_role.base": old, "root_role": new, "differ": _fields_differ(old, new)}
        assert p.check(answer).ok, (p, p.check(answer))
        v = p.check(dict(answer, root_role=new ^ (1 << 13)))
        assert not v.ok and v.step == "root_role.cr0_wp" and "bit 13" in v.hint


def test_split_tdp_by_hand():
    """4-level guest, WP=0, NX=1, TDP 4-level with A/D: 5.18 = 4|direct|access|nx = 0x1784;
    5.19 adds cr0_wp = 1: 0x3784."""
    for seed in SEEDS:
        p = legacy_problem(seed, 1)
        r = p.regs
        if (p.mmu, p.tdp_level, p.ad_enabled, p.smm, p.guest_mode) == ("tdp", 4, True, 0, 0) \
                and r.pg and r.lma and not r.la57 and not r.wp and r.nx:
            assert p.solve()["differ"] == {"cr0_wp"}
            assert p.check({"mmu_role.base": 0x1784, "root_role": 0x3784,
                            "differ": {"cr0_wp"}}).ok
            return
    pytest.fail("no seed with that state")


def test_toggle_truth_table():
    """Facts §2.2/§2.3: 5.18 copies WP and NX into every role while paging is on; 5.19's
    TDP root has neither, its shadow root has WP (and NX forced to 1)."""
    seen = set()
    for seed in SEEDS:
        p = legacy_problem(seed, 2)
        wp = p.reg == "cr0"
        want = {"5.18": bool(p.old.pg), "5.19": bool(p.old.pg and wp and p.mmu == "shadow")}
        assert p.solve() == want, p
        seen.add((p.mmu, wp, p.old.pg))
        assert p.check({"5.18": want["5.18"], "5.19": not want["5.19"]}).step == "5.19"
    assert len(seen) == 8


def test_ext_word_matches_the_fact_sheet():
    for seed in SEEDS:
        p = legacy_problem(seed, 3)
        want = expected_legacy_ext_word(_state(p.regs))
        assert p.check({"mmu_role.ext": want}).ok, p
        v = p.check({"mmu_role.ext": want ^ (1 << 3)})
        assert v.step == "mmu_role.ext.cr4_pae" and "PAE" in v.hint
        assert "unused" in p.check({"mmu_role.ext": want | 1 << 12}).hint


def test_nested_ept_words():
    for seed in SEEDS:
        p = nested_problem(seed, 1)
        u64 = expected_ept_role_u64(p.level, p.ad, p.execonly)
        assert p.check({"base": u64 & LOW, "ext": u64 >> 32}).ok, p
        v = p.check({"base": u64 & LOW ^ 1 << 16, "ext": u64 >> 32})
        assert v.step == "base.ad_disabled" and "A/D" in v.hint


def test_nested_ept_by_hand():
    """level 4, A/D off, execonly: base = 4 | 7<<8 | 1<<16 | 1<<17 = 0x30704, ext = 0b11."""
    p = next(p for p in map(lambda s: nested_problem(s, 1), SEEDS)
             if p.level == 4 and not p.ad and p.execonly)
    assert p.check({"base": 0x30704, "ext": 3}).ok


def test_nested_npt_words_and_passthrough():
    passthrough = 0
    for seed in SEEDS:
        p = nested_problem(seed, 2)
        cpu, root = expected_npt_words(_state(p.l1), p.tdp_level, int(p.smm))
        assert p.check({"cpu_role.base": cpu & LOW, "root_role": root}).ok, p
        passthrough += bool(root >> 18 & 1)
        v = p.check({"cpu_role.base": cpu & LOW, "root_role": root ^ 1 << 18})
        assert v.step == "root_role.passthrough"
    assert passthrough >= 20


def test_nested_npt_by_hand():
    """L1 4-level with NX, KVM 5-level: cpu base 4 | access | nx | guest_mode = 0x21704;
    root: level 5 and passthrough (1<<18): 0x61705."""
    for seed in SEEDS:
        p = nested_problem(seed, 2)
        r = p.l1
        if p.tdp_level == 5 and r.lma and not r.la57 and r.nx and not r.smep and \
                not r.smap and not p.smm:
            assert p.check({"cpu_role.base": 0x21704, "root_role": 0x61705}).ok
            return
    pytest.fail("no seed with that state")


def test_shared_roots_follow_the_rules():
    """Hand rules: under TDP a root_mmu root is (smm, guest_mode) only, a nested EPT root
    differs from all of them (direct=0); under shadow paging WP matters, NX does not."""
    for seed in SEEDS:
        p = nested_problem(seed, 3)

        def key(place, regs):
            if place == "L2 on nested EPT":
                return ("ept",)
            smm, gm = place == "L1 in SMM", place.startswith("L2")
            if p.mmu == "tdp":
                return (smm, gm)
            return (smm, gm, regs.wp, regs.smep and not regs.wp, regs.smap and not regs.wp)
        keys = [key(place, regs) for place, regs, _ in p.situations]
        want = [keys.index(k) + 1 for k in keys]
        assert p.check(want).ok, (p, want)
        if len(set(want)) > 1:
            wrong = list(want)
            i = next(i for i, w in enumerate(want) if w != 1)
            wrong[i] = 1
            assert p.check(wrong).step == f"situation {i + 1}"
