"""The exercise generators: seeded, solvable, agreeing with independent references, and
with hints that name the first wrong step.

For every kind and difficulty, 200 seeds: the problem builds, ``check(solve())`` passes,
and changing any one step of the right answer makes ``check`` name exactly that step.
The expected values below come from the SDM's bit layouts, the fact sheet's tables
(tests/role_expectations.py, written without the model) and hand simulations (an LRU list
for the root cache), never from the code under test.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest

from mmu.book.exercises import cr0_wp, permissions, roles, root_reuse, walks
from mmu.book.exercises.base import DIFFICULTIES, CheckFailed, Problem, Verdict, registry
from mmu.book.exercises.student import solution_lines, strip_solutions
from role_expectations import (State, expected_cpu_base_word, expected_shadow_root_word,
                               expected_tdp_root_word)

SEEDS = range(200)
KINDS = sorted(registry())
CASES = [(k, d) for k in KINDS for d in DIFFICULTIES]
IDS = [f"{k}-{d}" for k, d in CASES]
_SETS = {}


def problems(kind: str, difficulty: int) -> list[Problem]:
    """The 200 problems of one generator, built once per test session."""
    key = (kind, difficulty)
    if key not in _SETS:
        make = registry()[kind]
        _SETS[key] = [make(s, difficulty) for s in SEEDS]
    return _SETS[key]


# ---------------------------------------------------------------------------
# Perturbing one step of a right answer
# ---------------------------------------------------------------------------

def perturbed(value, rng: random.Random, choices=()):
    """A different value of the same shape."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value ^ (1 << rng.randrange(max(1, value.bit_length() + 1)))
    if isinstance(value, frozenset):
        pool = sorted(set(choices) | set(value)) or ["base.level"]
        return value ^ {rng.choice(pool)}
    if isinstance(value, str):
        return rng.choice([c for c in choices if c != value])
    raise TypeError(type(value))


def _choices(problem: Problem, step_name: str):
    if isinstance(problem, permissions.ErrorCodeProblem):
        return permissions.RULES
    if isinstance(problem, (root_reuse.RootReuseProblem, cr0_wp.WpCostProblem)):
        return root_reuse.OUTCOMES
    if isinstance(problem, cr0_wp.FindTheBugProblem):
        return sorted(cr0_wp.BUGGY_ROOT_ROLES)
    if isinstance(problem, roles.RoleChangeProblem):
        if step_name == "cpu_role":
            return ["base.cr0_wp", "base.level", "ext.cr4_smep", "ext.cr4_pse", "base.efer_nx"]
        return ["cr0_wp", "level", "smep_andnot_wp", "efer_nx", "direct"]
    return ()


@pytest.mark.parametrize("kind,difficulty", CASES, ids=IDS)
def test_200_seeds_solve_and_hints_name_the_perturbed_step(kind, difficulty):
    rng = random.Random(f"perturb/{kind}/{difficulty}")
    for p in problems(kind, difficulty):
        right = p.solve()
        assert p.check(right).ok, (p, p.check(right))
        assert p.text and p.explain()
        names = list(right)
        assert len(set(names)) == len(names), f"{p}: step names repeat: {names}"
        for name in names:
            wrong = dict(right)
            wrong[name] = perturbed(right[name], rng, _choices(p, name))
            v = p.check(wrong)
            assert not v.ok and v.step == name, (p, name, wrong[name], v)
            assert repr(name) in str(v) and len(v.hint) > 30, v   # names the step, teaches
        v = p.check({})
        assert not v.ok and v.step == names[0] and "missing" in v.hint


@pytest.mark.parametrize("kind,difficulty", CASES, ids=IDS)
def test_same_seed_same_problem(kind, difficulty):
    make = registry()[kind]
    a, b = make(7, difficulty), make(7, difficulty)
    assert a.text == b.text and a.solve() == b.solve()
    texts = {make(s, difficulty).text for s in range(8)}
    assert len(texts) > 1, "different seeds should give different problems"


def test_same_problem_in_another_process():
    """String seeds hash the same in every process (PYTHONHASHSEED does not enter)."""
    code = ("from mmu.book.exercises.base import registry\n"
            "print('\\n'.join(registry()[k](3, d).text for k in sorted(registry()) "
            "for d in (1, 2, 3)))")
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    here = "\n".join(registry()[k](3, d).text for k in sorted(registry()) for d in (1, 2, 3))
    assert out.strip() == here.strip()


def test_generators_leave_the_global_random_alone():
    random.seed(99)
    before = random.random()
    random.seed(99)
    for kind in KINDS:
        registry()[kind](5, 1)
    assert random.random() == before


@pytest.mark.parametrize("bad,err", [(-1, ValueError), (1 << 32, ValueError), ("1", TypeError),
                                     (True, TypeError)])
def test_bad_seed_is_refused(bad, err):
    with pytest.raises(err, match="seed"):
        walks.make_problem(bad)


@pytest.mark.parametrize("bad,err", [(0, ValueError), (4, ValueError), (1.0, TypeError)])
def test_bad_difficulty_is_refused(bad, err):
    with pytest.raises(err, match="difficulty"):
        roles.make_problem(1, bad)


def test_unanswered_and_malformed_answers_fail_cleanly():
    p = walks.make_problem(1, 1)
    v = p.check(...)
    assert not v.ok and "not answered" in v.hint
    with pytest.raises(CheckFailed, match="not answered"):
        v.require()
    assert "dict" in p.check(42).hint
    assert p.check(dict(p.solve(), extra=1)).step == "extra"
    assert isinstance(p.check(p.solve()), Verdict) and bool(p.check(p.solve()))


# ---------------------------------------------------------------------------
# walks: indexes and addresses by the SDM's bit layout
# ---------------------------------------------------------------------------

_NAMES = {5: "PML5E", 4: "PML4E", 3: "PDPTE", 2: "PDE", 1: "PTE"}


@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_walks_agree_with_the_sdm_layout(difficulty):
    from mmu.x86.walker import walk
    for p in problems("walks", difficulty):
        sol = p.solve()
        four = p.mode.label == "32-bit"
        esize, bits = (4, 10) if four else (8, 9)
        top = {"32-bit": 2, "PAE": 3, "4-level": 4, "5-level": 5}[p.mode.label]
        read = p.mem.read_u32 if four else p.mem.read_u64
        table = p.regs.cr3 & (~0xFFF if p.mode.label != "PAE" else ~0x1F)
        for level in range(top, 0, -1):
            if f"{_NAMES[level]} index" not in sol:
                break
            shift = 12 + bits * (level - 1)
            idx = (p.gva >> shift) & ((1 << bits) - 1)
            if p.mode.label == "PAE" and level == 3:
                idx = (p.gva >> 30) & 3
            assert sol[f"{_NAMES[level]} index"] == idx, (p, level)
            entry = read(table + esize * idx)
            assert sol[_NAMES[level]] == entry, (p, level)
            if not entry & 1 or (level in (2, 3) and entry & 0x80) or level == 1:
                break
            table = entry & (0xFFFFF000 if four else 0x000F_FFFF_FFFF_F000)
        w = walk(p.mem, p.regs, p.gva, p.access, p.cpl, set_ad=False)
        if "gpa" in sol:
            size = sol["page size"]
            assert size == p.page_size
            base = entry & (0xFFFFF000 if four else 0x000F_FFFF_FFFF_F000) & ~(size - 1)
            if four and size == 1 << 22:
                base = (entry & 0xFFC0_0000) | (((entry >> 13) & 0xFF) << 32)
            assert sol["gpa"] == base | (p.gva & (size - 1)) == w.gpa
        else:
            assert p.expect_fault and not entry & 1
            code = (2 if p.access == "write" else 0) | (4 if p.cpl == 3 else 0)
            assert sol["error code"] == code == w.fault.error_code
            assert sol["fault level"] == level


# ---------------------------------------------------------------------------
# permissions: the walker's verdict vs KVM's permission bitmap, and the code bits by hand
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_error_codes_agree_with_kvm_bitmap(difficulty):
    from mmu.kvm.permissions import permission_fault, update_permission_bitmask, \
        update_pkru_bitmask
    from mmu.kvm.roles import cpu_role
    for p in problems("permissions", difficulty):
        sol = p.solve()
        r = p.regs
        if sol["rule"] == "RSVD":
            assert not r.nx and any(t.entry >> 63 for t in p.result.trace)
            assert sol["error code"] & 0b1001 == 0b1001
            continue
        leaf = p.result.trace[-1]
        acc = 7
        for t in p.result.trace:
            acc &= (t.entry & 7) ^ ((t.entry >> 63) & 1)
        pfec = (2 if p.access == "write" else 0) | (4 if p.cpl == 3 else 0) | \
            (16 if p.access == "fetch" else 0)
        role = cpu_role(r)
        kvm = permission_fault(update_permission_bitmask(role), update_pkru_bitmask(role), acc,
                               (leaf.entry >> 59) & 0xF if r.pke else 0, pfec,
                               rflags=r.rflags, pkru=r.pkru)
        assert sol["fault"] == bool(kvm), p
        if not kvm:
            assert sol["error code"] == 0 and sol["rule"] == "none"
            continue
        want = 1 | (pfec & 6) | (16 if p.access == "fetch" and (r.nx or r.smep) else 0) | \
            (kvm & 32)
        assert sol["error code"] == want, p
        assert (sol["rule"] == "PK") == bool(kvm & 32)


def test_error_code_hint_names_the_bit():
    p = next(q for q in problems("permissions", 2) if q.solve()["rule"] == "XD")
    v = p.check(dict(p.solve(), **{"error code": p.solve()["error code"] ^ 0x10}))
    assert v.step == "error code" and "bit 4 (I/D)" in v.hint


# ---------------------------------------------------------------------------
# roles: words from the fact sheet's tables
# ---------------------------------------------------------------------------

def _state(regs) -> State:
    return State(pg=regs.pg, wp=regs.wp, pse=regs.pse, pae=regs.pae, la57=regs.la57,
                 smep=regs.smep, smap=regs.smap, pke=regs.pke, lme=regs.lme, lma=regs.lma,
                 nx=regs.nx)


@pytest.mark.parametrize("difficulty", (1, 2))
def test_role_words_match_the_fact_sheet(difficulty):
    for p in problems("roles", difficulty):
        s, smm, gm = _state(p.regs), int(p.smm), int(p.guest_mode)
        if difficulty == 1:
            want = expected_cpu_base_word(s, smm, gm)
        elif p.mmu == "tdp":
            want = expected_tdp_root_word(smm, gm, p.tdp_level, p.ad_enabled)
        else:
            want = expected_shadow_root_word(s, smm, gm)
        assert p.word == want, p
        assert p.check(want).ok
        for bit in range(32):                     # every single-bit error is caught
            v = p.check(want ^ (1 << bit))
            assert not v.ok
            if 19 <= bit <= 23:
                assert "unused" in v.hint
            else:
                assert str(bit) in v.hint or "bits" in v.hint, v.hint


def test_role_word_hint_names_cr0_wp_and_its_rule():
    p = next(q for q in problems("roles", 1) if q.regs.pg)
    v = p.check(p.word ^ (1 << 13))
    assert v.step == "cpu_role.base.cr0_wp" and "bit 13" in v.hint and "CR0.WP" in v.hint


def test_role_changes_by_hand():
    """A flip changes cpu_role fields exactly where the fact-sheet words differ."""
    for p in problems("roles", 3) + problems("cr0_wp", 1):
        sol = p.solve()
        old, new = _state(p.old), _state(p.new)
        base_changed = expected_cpu_base_word(old, 0, 0) != expected_cpu_base_word(new, 0, 0)
        assert base_changed == any(f.startswith("base.") for f in sol["cpu_role"])
        if p.mmu == "tdp":
            assert sol["root_role"] == frozenset()     # constant: cr0_wp=efer_nx=1
        else:
            assert bool(sol["root_role"]) == (expected_shadow_root_word(old, 0, 0)
                                              != expected_shadow_root_word(new, 0, 0))
        if isinstance(p, cr0_wp.WpChangeProblem):
            assert "base.cr0_wp" in sol["cpu_role"]
            assert ("cr0_wp" in sol["root_role"]) == (p.mmu == "shadow")


# ---------------------------------------------------------------------------
# shadow: gfns from the guest walk, quadrants from GVA bits
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_shadow_pages_by_hand(difficulty):
    for p in problems("shadow", difficulty):
        sol = p.solve()
        trace = {t.level: t for t in p.guest.trace}
        leaf = p.guest.trace[-1]
        gfn = p.guest.gpa >> 12
        for lvl in range(4 if difficulty < 3 else 2, 0, -1):
            if lvl >= leaf.level:          # shadows the guest table of this level
                assert sol[f"level {lvl} gfn"] == trace[lvl].entry_addr >> 12, (p, lvl)
            else:                           # direct page below a guest huge page
                assert sol[f"level {lvl} gfn"] == gfn & ~((1 << (9 * lvl)) - 1), (p, lvl)
            if difficulty == 2:
                assert sol[f"level {lvl} direct"] == (lvl < leaf.level)
        if difficulty == 3:
            assert sol["level 2 quadrant"] == (p.gva >> 30) & 3
            assert sol["level 1 quadrant"] == (p.gva >> 21) & 1
        assert sol["hpa"] == p.guest.gpa + (1 << 51)
        assert sol["SPTE writable"] == (p.guest_writable and
                                        (p.access == "write" or p.guest_dirty))


# ---------------------------------------------------------------------------
# root reuse: an LRU list by hand
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("difficulty", (1, 2))
def test_root_cache_by_hand(difficulty):
    """Shadow paging, CR3 switches only: the cache is an MRU list of 4 (current + 3)."""
    for p in problems("root_reuse", difficulty):
        cache, seen, want = [p.cr3s[0]], {p.cr3s[0]}, []
        for _, cr3 in p.ops:
            if cr3 in cache:
                want.append("prev_roots")
                cache.remove(cr3)
            else:
                want.append("found" if cr3 in seen else "new")
            cache = [cr3] + cache[:3]
            seen.add(cr3)
        assert list(p.solve().values()) == want, p


def test_root_reuse_mixed_traces_by_rule():
    for p in problems("root_reuse", 3):
        for (kind, _), outcome in zip(p.ops, p.solve().values()):
            if p.mmu == "tdp" and kind == "cr3":
                assert outcome == "kept"
            if p.mmu == "tdp" and kind == "wp" and p.kernel == "6.4":
                assert outcome == "kept"        # guest-owned WP on Intel with EPT
            if p.mmu == "tdp" and kind != "cr3" and p.kernel == "5.19" and kind == "smep":
                assert outcome == "new"         # unloaded, and the root freed
            if p.mmu == "tdp" and kind == "smep" and p.kernel == "6.4":
                assert outcome == "found"       # preserved TDP root (edbdb43fc96b)


def test_root_reuse_accepts_a_list():
    p = root_reuse.make_problem(4, 1)
    answer = list(p.solve().values())
    assert p.check(answer).ok
    answer[2] = "new" if answer[2] != "new" else "kept"
    assert p.check(answer).step == "step 3"
    assert "not an outcome" in p.check(["maybe"] * len(answer)).hint


# ---------------------------------------------------------------------------
# the CR0.WP story
# ---------------------------------------------------------------------------

def test_wp_cost_table():
    """facts §3.2/§3.3/§4: exit unless VMX+EPT on 6.4; unload unless 6.4 with TDP; a TDP
    root is rebuilt after an unload before 6.4; shadow: new role first, hash hit back."""
    for p in problems("cr0_wp", 2):
        sol = p.solve()
        exit_ = not (p.vendor == "intel" and p.mmu == "tdp" and p.kernel == "6.4")
        unload = exit_ and not (p.mmu == "tdp" and p.kernel == "6.4")
        if not unload:
            root = "kept"
        elif p.mmu == "tdp":
            root = "new"
        else:
            root = "new" if p.flips == 1 else "found"
        assert (sol["vm exit"], sol["unload"], sol["root"]) == (exit_, unload, root), p


def test_each_bug_differs_only_in_its_field():
    from mmu.x86.regs import make_regs
    from mmu.kvm.roles import cpu_role, shadow_root_role
    regs = [make_regs(m, wp=wp, nx=nx, smep=sm, smap=sa)
            for m in ("none", "32-bit", "PAE", "4-level") for wp in (False, True)
            for nx in (False, True) for sm in (False, True) for sa in (False, True)]
    for field, fn in cr0_wp.BUGGY_ROOT_ROLES.items():
        differing = set()
        for r in regs:
            for gm in (0, 1):
                c = cpu_role(r, guest_mode=gm)
                differing |= {f for f, _, _ in shadow_root_role(c).diff(fn(c))}
        assert differing == {field}


def test_wp_hole_only_without_cr0_wp():
    from mmu.kvm.roles import shadow_root_role
    good = cr0_wp.wp_hole(shadow_root_role)
    assert good.trick and not good.root_reused and not good.hardware_allows_write
    assert good.architectural_fault.error_code == 0b011     # P | W, supervisor
    bad = cr0_wp.wp_hole(cr0_wp.BUGGY_ROOT_ROLES["cr0_wp"])
    assert bad.hole and bad.root_reused and "HOLE" in str(bad)
    for field in ("efer_nx", "has_4_byte_gpte", "guest_mode"):
        assert not cr0_wp.wp_hole(cr0_wp.BUGGY_ROOT_ROLES[field]).hole


# ---------------------------------------------------------------------------
# the student tool's marker handling
# ---------------------------------------------------------------------------

def test_strip_solutions_replaces_regions_with_stubs():
    src = "x = 1\n    # BEGIN SOLUTION\n    answer = 0x13\n    # END SOLUTION\ncheck(answer)"
    out, removed = strip_solutions(src)
    assert out == "x = 1\n    answer = ...  # your answer\ncheck(answer)"
    assert removed == ["    answer = 0x13"]
    md, gone = strip_solutions("a\n<!-- BEGIN SOLUTION -->\nsecret\n<!-- END SOLUTION -->",
                               markdown=True)
    assert md == "a\n*(your answer)*" and gone == ["secret"]


@pytest.mark.parametrize("src", ["# BEGIN SOLUTION\nx = 1", "x = 1\n# END SOLUTION",
                                 "# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION"])
def test_unbalanced_markers_are_refused(src):
    with pytest.raises(ValueError, match="SOLUTION"):
        strip_solutions(src, where="nb cell 3")


def test_solution_lines_cover_tagged_cells():
    import nbformat
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_markdown_cell("the answer is 42")
    cell.metadata["tags"] = ["solution"]
    nb.cells = [cell, nbformat.v4.new_code_cell("# BEGIN SOLUTION\na = 1\n# END SOLUTION")]
    assert solution_lines(nb) == ["the answer is 42", "a = 1"]
