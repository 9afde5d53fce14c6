"""Exercise kind "nested": the roles of the MMUs that run an L2 guest (facts §1, §2).

Difficulty 1: the nested EPT role (``kvm_calc_shadow_ept_root_page_role``) for an EPTP's
walk length, A/D enable and the execute-only capability: base word and ext word.
Difficulty 2: nested NPT (``kvm_init_shadow_npt_mmu``): the CPU role's base word from L1's
registers as ``nested_svm_init_mmu_context`` passes them (CR0 = PG only, CR4.PKE masked),
and the root role word -- with ``passthrough`` when KVM's NPT is 5-level and L1's 4-level.
Difficulty 3: a list of situations (L1, L1 in SMM, L2 on root_mmu, L2 on nested EPT, with
various CR0.WP/EFER.NX); which ones share a root role, i.e. which roots ``guest_mode`` and
``smm`` keep apart.

Values come from :mod:`mmu.kvm.roles`; the word machinery is
:class:`mmu.book.exercises.legacy.WordsProblem`.
"""
from __future__ import annotations

from typing import Any

from mmu.x86.regs import make_regs
from mmu.kvm.roles import (cpu_role, nested_ept_role, nested_npt_roles, shadow_root_role,
                     tdp_root_role)
from mmu.book.exercises.base import (CheckFailed, Problem, Step, TemplateList, check_difficulty,
                                     check_seed)
from mmu.book.exercises.legacy import WordsProblem
from mmu.book.exercises.roles import describe_regs, field_rules, random_regs

__all__ = ["KIND", "NestedEptProblem", "NestedNptProblem", "SharedRootsProblem",
           "make_problem"]

KIND = "nested"

_EPT_BASE = dict(field_rules("cpu"),
                 level="the EPTP's page-walk length (EPTP bits 5:3, plus 1): 4 or 5",
                 has_4_byte_gpte="0: EPT entries are 8 bytes",
                 direct="0: guest_mmu shadows L1's EPT tables",
                 efer_nx="0: the role is built from zero; no L1/L2 register enters it",
                 cr0_wp="0: the role is built from zero; no L1/L2 register enters it",
                 smep_andnot_wp="0: built from zero (EPT has no supervisor/user split)",
                 smap_andnot_wp="0: built from zero (EPT has no supervisor/user split)",
                 ad_disabled="NOT the EPTP's A/D enable (bit 6)",
                 guest_mode="1: this MMU exists only while L2 runs",
                 passthrough="0: a nested EPT root always shadows a real L1 table",
                 smm="0: KVM does not support SMM transfer monitors")
_EPT_EXT = dict(field_rules("ext"),
                execonly="1 when the host CPU supports execute-only EPT entries",
                cr4_pse="0: built from zero", cr4_pke="0: built from zero",
                cr4_smap="0: built from zero", cr4_smep="0: built from zero",
                cr4_la57="0: built from zero", efer_lma="0: built from zero")
_NPT_CPU = dict(field_rules("cpu"),
                level="L1's paging level (its NPT uses L1's own format): 4 or 5 in long "
                      "mode, 3 with PAE, else 2",
                direct="0: L1 paging is on (NPT requires it)",
                efer_nx="L1's EFER.NXE",
                cr0_wp="0: nested_svm_init_mmu_context passes CR0 = X86_CR0_PG only (WP is "
                       "ignored: NPT walks are user accesses)",
                smep_andnot_wp="CR4.SMEP AND NOT CR0.WP, and WP is 0 here",
                smap_andnot_wp="CR4.SMAP AND NOT CR0.WP, and WP is 0 here",
                guest_mode="1: this MMU exists only while L2 runs",
                passthrough="0 in a CPU role")
_NPT_ROOT = dict(_NPT_CPU,
                 level="KVM's own TDP level (kvm_mmu_get_tdp_level), not L1's",
                 passthrough="1 only when KVM's NPT is 5-level and L1's is 4-level: the extra "
                             "top level has no L1 entries behind it")


class NestedEptProblem(WordsProblem):
    """Difficulty 1: the nested EPT role for (level, A/D, execonly)."""

    kind = KIND
    title = "The nested EPT role"

    def __init__(self, seed: int, difficulty: int = 1) -> None:
        super().__init__(seed, difficulty)
        rng = self.rng
        self.level = rng.choice((4, 4, 5))
        self.ad = rng.random() < 0.6
        self.execonly = rng.random() < 0.5
        self.role = nested_ept_role(self.level, self.ad, self.execonly)
        self.words = [("base", self.role.base, _EPT_BASE), ("ext", self.role.ext, _EPT_EXT)]

    def _statement(self) -> str:
        eptp = (0x1234_5000 | (self.level - 1) << 3 | 6 | int(self.ad) << 6)
        return (f"L1 runs L2 with EPT; KVM (itself on EPT) shadows L1's EPT tables.  L1's "
                f"EPTP is {eptp:#x} (walk length {self.level}, A/D "
                f"{'enabled' if self.ad else 'disabled'}); the host CPU "
                f"{'supports' if self.execonly else 'does not support'} execute-only "
                f"entries.  Compute the guest_mmu's cpu_role (kvm_calc_shadow_ept_root_page_"
                f"role; its base is also the root role): answer {{'base': <u32>, 'ext': "
                f"<u32>}}.")


class NestedNptProblem(WordsProblem):
    """Difficulty 2: nested NPT CPU role base and root role for an L1 state."""

    kind = KIND
    title = "The nested NPT roles"

    def __init__(self, seed: int, difficulty: int = 2) -> None:
        super().__init__(seed, difficulty)
        rng = self.rng
        self.l1 = random_regs(rng, paging=True)
        self.smm = rng.random() < 0.1
        l1_level = cpu_role(self.l1).base.level
        self.tdp_level = 5 if l1_level == 5 else rng.choice((4, 5, 5))
        self.cpu, self.root = nested_npt_roles(self.l1, self.tdp_level, self.smm)
        self.words = [("cpu_role.base", self.cpu.base, _NPT_CPU),
                      ("root_role", self.root, _NPT_ROOT)]

    def _statement(self) -> str:
        return (f"AMD, KVM on {self.tdp_level}-level NPT.  L1 runs L2 with nested paging; "
                f"L1's registers: {describe_regs(self.l1)}"
                + ("; the vCPU is in SMM" if self.smm else "") + ".\nKVM shadows L1's NPT "
                f"(kvm_init_shadow_npt_mmu).  Give the guest_mmu's cpu_role.base word and its "
                f"root_role word: {{'cpu_role.base': <u32>, 'root_role': <u32>}}.")


#: Situations of difficulty 3: (label, how to compute the root role).
_PLACES = ("L1", "L1 in SMM", "L2 on root_mmu", "L2 on nested EPT")


class SharedRootsProblem(Problem):
    """Difficulty 3: which situations share a root role (and so can share roots)?"""

    kind = KIND
    title = "Which roots do guest_mode and SMM keep apart?"

    def __init__(self, seed: int, difficulty: int = 3) -> None:
        super().__init__(seed, difficulty)
        rng = self.rng
        self.mmu = rng.choice(("tdp", "shadow"))
        places = _PLACES if self.mmu == "tdp" else _PLACES[:3]
        # Two register states that differ in WP and/or NX: whether that matters is the point.
        base = dict(wp=rng.random() < 0.5, nx=rng.random() < 0.5)
        mode = rng.choice(("4-level", "PAE"))
        states = [make_regs(mode, **base)]
        flip = rng.choice(({"wp"}, {"nx"}, {"wp", "nx"}))
        states.append(make_regs(mode, **{k: (not v if k in flip else v)
                                         for k, v in base.items()}))
        self.situations = []
        for _ in range(rng.randrange(4, 6)):
            place = rng.choice(places)
            regs = rng.choice(states)
            self.situations.append((place, regs, self._root(place, regs)))

    def _root(self, place: str, regs):
        if place == "L2 on nested EPT":
            return nested_ept_role(4, True, False).base
        cpu = cpu_role(regs, smm=place == "L1 in SMM", guest_mode=place.startswith("L2"))
        return tdp_root_role(cpu, 4, True) if self.mmu == "tdp" else shadow_root_role(cpu)

    def _statement(self) -> str:
        how = ("Intel, KVM on 4-level EPT with A/D bits" if self.mmu == "tdp"
               else "KVM with shadow paging (no EPT/NPT; L1 cannot use nested EPT)")
        lines = [f"{how}.  The vCPU is in each of these situations in turn; 'L2 on "
                 f"root_mmu' means L1 runs L2 without EPT for it, 'L2 on nested EPT' means "
                 f"L1's EPTP has walk length 4 and A/D enabled, no execute-only.  The "
                 f"registers are the ones the situation's MMU sees (L2's for L2):"]
        lines += [f"  situation {i}: {place}, {describe_regs(regs)}"
                  for i, (place, regs, _) in enumerate(self.situations, 1)]
        lines.append("For each situation give the number of the first situation (itself if "
                     "none earlier) whose root role is the same -- a list of ints, e.g. "
                     "[1, 1, 3, 2].")
        return "\n".join(lines)

    def _steps(self) -> list[Step]:
        steps = []
        words = [role.word for _, _, role in self.situations]
        for i, (place, _, role) in enumerate(self.situations, 1):
            first = words.index(role.word) + 1
            rule = ("A nested EPT root role is built from zero: direct=0, guest_mode=1, the "
                    "EPTP's level and A/D" if place == "L2 on nested EPT" else
                    "root_mmu's TDP root role keeps only KVM's level and A/D format, "
                    "guest_mode and smm -- no guest register" if self.mmu == "tdp" else
                    "a shadow root role is the CPU role's base (level >= 3, efer_nx forced "
                    "to 1), so cr0_wp and smep/smap_andnot_wp, guest_mode and smm matter")
            steps.append(Step(f"situation {i}", first,
                              f"({place}) {rule}.  Compare its role with each earlier "
                              f"situation's, field by field.",
                              f"{place}: root_role {role.word:#x}", repr))
        return steps

    def _normalise(self, answer: Any):
        if isinstance(answer, (list, tuple)):
            answer = {f"situation {i}": a for i, a in enumerate(answer, 1)}
        if isinstance(answer, dict):
            return answer
        raise CheckFailed("✘ give a list of ints, one per situation: the number of the first "
                          "situation with the same root role")

    def template(self) -> TemplateList:     # type: ignore[override]
        return TemplateList([...] * len(self.situations))

    def solution_code(self, var: str = "answer") -> str:
        lines = [f"{var} = ["] + [f"    {s.value!r},  # {s.name}: {s.worked}"
                                  for s in self.steps()]
        return "\n".join(lines + ["]"])


def make_problem(seed: int, difficulty: int = 1) -> Problem:
    """1: nested EPT role words; 2: nested NPT role words; 3: which roots are shared."""
    check_seed(seed)
    check_difficulty(difficulty)        # before dispatching on it
    cls = {2: NestedNptProblem, 3: SharedRootsProblem}.get(difficulty, NestedEptProblem)
    return cls(seed, difficulty)
