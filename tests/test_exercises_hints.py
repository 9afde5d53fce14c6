"""Hints that teach: the permissions lab names the rules that can concern the access
(from its kind, CPL and control registers -- SDM Vol. 3A 4.6), never which one fires;
the root-reuse hint for a TDP CR3 load no longer states the outcome."""
from mmu.book.exercises import permissions, root_reuse
from mmu.book.exercises.permissions import RULES, make_problem

SEEDS = range(120)


def test_the_deciding_rule_is_always_among_the_candidates():
    for d in (1, 2, 3):
        for seed in SEEDS:
            p = make_problem(seed, d)
            rule = p.solve()["rule"]
            cands = p._candidates()
            assert rule == "none" or rule in cands, (seed, d, rule, cands)
            # By hand from the SDM: a supervisor access is never refused by U/S, a read
            # never by R/W, only fetches by XD/SMEP, only supervisor data accesses by SMAP.
            assert ("U/S" in cands) == (p.cpl == 3)
            assert ("R/W" in cands) == (p.access == "write")
            assert "XD" not in cands or p.access == "fetch"
            assert "SMAP" not in cands or (p.cpl == 0 and p.access != "fetch")


def test_wrong_rule_hints_name_the_step_without_the_answer():
    seen = set()
    for d in (2, 3):
        for seed in SEEDS:
            p = make_problem(seed, d)
            sol = p.solve()
            if not sol["fault"]:
                continue
            for wrong in RULES:
                if wrong == sol["rule"]:
                    continue
                v = p.check({**sol, "rule": wrong})
                assert not v.ok and v.step == "rule"
                kind = ("none" if wrong == "none" else
                        "cannot" if wrong not in p._candidates() else "does not")
                seen.add(kind)
                assert {"none": "'none' is not right", "cannot": f"{wrong} cannot decide",
                        "does not": f"{wrong} does not refuse"}[kind] in v.hint
                # the checklist names rules, it never says which one refuses
                assert f"{sol['rule']} refuses" not in v.hint
    assert seen == {"none", "cannot", "does not"}
    v = make_problem(1, 1).check({**make_problem(1, 1).solve(), "rule": "bogus"})
    assert "is not a rule name" in v.hint


def test_tdp_cr3_hint_asks_instead_of_telling():
    assert "'kept'" not in root_reuse._CR3_TDP
    assert "kvm_set_cr3" in root_reuse._CR3_TDP
    assert permissions._RULE_TEXT.keys() == set(RULES) - {"none"}
