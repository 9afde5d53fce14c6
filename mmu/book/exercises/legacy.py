"""Exercise kind "legacy": the 5.18 -> 5.19 role split (facts §1, §2).

Before Linux 5.19 a ``struct kvm_mmu`` had one ``mmu_role``: its ``base`` was the root
page's role *and* carried the guest's CR0.WP / EFER.NX (``kvm_calc_mmu_role_common``), and
its extended word still held ``cr0_pg`` and ``cr4_pae``.  The series split it into
``cpu_role`` (the guest's paging) and ``root_role`` (KVM's root page).

Difficulty 1: the 5.18 ``mmu_role.base.word`` and the 5.19 ``root_role.word`` for one state
(TDP or shadow), and the set of fields where they differ.
Difficulty 2: the guest toggles CR0.WP or EFER.NX -- does the root page role change on
5.18?  on 5.19?
Difficulty 3: the pre-series extended word (``kvm_calc_mmu_role_ext``, 5.18 layout with
``cr0_pg`` and ``cr4_pae``).

Values come from :mod:`mmu.kvm.legacy` (5.18) and :mod:`mmu.kvm.roles` (5.19); word answers are
unpacked and compared field by field in bit order, so a hint names the first wrong field,
its bit and the rule for it.  :class:`WordsProblem` is that machinery for any number of
role words, shared with :mod:`mmu.book.exercises.nested`.
"""
from __future__ import annotations

from typing import Any, Mapping

from mmu.kvm.legacy import LegacyExtendedRole, mmu_role
from mmu.x86.regs import CR0, CR4, EFER
from mmu.kvm.roles import PageRole, cpu_role, shadow_root_role, tdp_root_role
from mmu.book.exercises.base import (CheckFailed, Problem, Step, Template, check_difficulty,
                                     check_seed, is_blank, set_hint, type_name)
from mmu.book.exercises.roles import _show_set, describe_regs, field_rules, random_regs

__all__ = ["KIND", "WordsProblem", "SplitProblem", "ToggleProblem", "LegacyExtProblem",
           "legacy_rules", "make_problem"]

KIND = "legacy"

_TDP_518 = dict(field_rules("tdp"),
                efer_nx="5.18: the guest's EFER.NXE with paging on (kvm_calc_mmu_role_common "
                        "copies it even for TDP); 0 with paging off",
                cr0_wp="5.18: the guest's CR0.WP with paging on (kvm_calc_mmu_role_common "
                       "copies it even for TDP); 0 with paging off",
                smep_andnot_wp="0 for TDP in 5.18 (only the shadow role computes it)",
                smap_andnot_wp="0 for TDP in 5.18 (only the shadow role computes it)",
                passthrough="bit 18 is unused in 5.18 (passthrough came with 5.19): 0")
_SHADOW_518 = dict(field_rules("shadow"),
                   level="3 unless the guest is in long mode (then 4, or 5 with LA57): KVM "
                         "shadows 32-bit, PAE and unpaged guests with PAE tables",
                   efer_nx="5.18: the guest's EFER.NXE with paging on, 0 with paging off "
                           "(forcing 1 came with 5.19)",
                   passthrough="bit 18 is unused in 5.18 (passthrough came with 5.19): 0")
_EXT_518 = dict(field_rules("ext"),
                cr0_pg="CR0.PG (5.18 only: 5.19 reads it from base.direct)",
                cr4_pae="CR4.PAE with paging on (5.18 only: 5.19 reads it from "
                        "base.has_4_byte_gpte)",
                cr4_pse="CR4.PSE with paging on", execonly="0 except for nested EPT")


def _regs(rng, p_off: float):
    """Random registers with paging off with probability ``p_off`` (random_regs with
    paging=False still draws among all modes, paging off only one time in five)."""
    regs = random_regs(rng, paging=True)
    if rng.random() < p_off:
        regs = regs.replace(cr0=regs.cr0 & ~int(CR0.PG), cr4=regs.cr4 & ~int(CR4.LA57),
                            efer=regs.efer & ~int(EFER.LMA | EFER.LME))
    return regs


def legacy_rules(flavour: str) -> dict[str, str]:
    """Field rules of the 5.18 words: flavour "tdp", "shadow" or "ext"."""
    return {"tdp": _TDP_518, "shadow": _SHADOW_518, "ext": _EXT_518}[flavour]


class WordsProblem(Problem):
    """A problem whose answer is one or more role words, ``{label: int}``.

    Subclasses set ``self.words`` to ``[(label, role, rules), ...]`` (role: any
    :class:`~mmu.kvm.roles._RoleWord`).  Each word becomes one step per field, named
    ``"<label>.<field>"``; an int answer is unpacked with the role's ``from_word``.
    """

    words: list

    def _word_steps(self) -> list[Step]:
        steps = []
        for label, role, rules in self.words:
            for name, off, width in type(role).layout():
                bits = f"bit {off}" if width == 1 else f"bits {off}-{off + width - 1}"
                steps.append(Step(f"{label}.{name}", getattr(role, name),
                                  f"{label}.{name} ({bits}): {rules[name]}.", rules[name], repr))
        return steps

    def _steps(self) -> list[Step]:
        return self._word_steps()

    def template(self) -> dict:     # type: ignore[override]
        return Template({label: ... for label, _, _ in self.words})

    def _normalise(self, answer: Any) -> Mapping[str, Any]:
        if not isinstance(answer, Mapping):
            keys = ", ".join(repr(label) for label, _, _ in self.words)
            raise CheckFailed(f"✘ give a dict with one int per word ({keys}), "
                              f"not {type_name(answer)}")
        out = dict(answer)
        for label, role, _ in self.words:
            if label not in answer:
                continue
            value = out.pop(label)
            if is_blank(value):
                continue
            if type(value) is not int:
                raise CheckFailed(f"✘ {label!r} must be one int (e.g. 0x...), "
                                  f"not {type_name(value)}")
            try:
                got = type(role).from_word(value)
            except ValueError as e:
                raise CheckFailed(f"✘ {value:#x} is not a {label} word: {e}") from None
            out.update({f"{label}.{n}": getattr(got, n) for n, _, _ in type(role).layout()})
        return out

    def solution_code(self, var: str = "answer") -> str:
        lines = [f"# {s.name} = {s.value}: {s.worked}"[:200] for s in self._word_steps()]
        body = [f"    {label!r}: {role.word:#x}," for label, role, _ in self.words]
        extra = [f"    {s.name!r}: {s.render()},  # {s.worked}"[:200]
                 for s in self.steps()[len(lines):]]
        return "\n".join(lines + [f"{var} = {{"] + body + extra + ["}"])

    def explain(self) -> str:
        return super().explain() + "\n=> " + ", ".join(
            f"{label} = {role.word:#x}" for label, role, _ in self.words)


class SplitProblem(WordsProblem):
    """Difficulty 1: the 5.18 root_mmu role word vs the 5.19 root role word."""

    kind = KIND
    title = "5.18 mmu_role vs 5.19 root_role"

    def __init__(self, seed: int, difficulty: int = 1) -> None:
        super().__init__(seed, difficulty)
        rng = self.rng
        self.regs = _regs(rng, 0.15)
        self.smm = rng.random() < 0.15
        self.guest_mode = not self.smm and rng.random() < 0.15
        self.mmu = rng.choice(("tdp", "shadow"))
        self.tdp_level = rng.choice((4, 5))
        self.ad_enabled = rng.random() < 0.7
        tdp = self.mmu == "tdp"
        self.old = mmu_role(self.regs, tdp, self.smm, self.guest_mode, self.tdp_level,
                            self.ad_enabled).base
        cpu = cpu_role(self.regs, smm=self.smm, guest_mode=self.guest_mode)
        self.new = (tdp_root_role(cpu, self.tdp_level, self.ad_enabled) if tdp
                    else shadow_root_role(cpu))
        self.words = [("mmu_role.base", self.old, legacy_rules(self.mmu)),
                      ("root_role", self.new, field_rules(self.mmu))]

    def _statement(self) -> str:
        extra = [x for x, on in (("in SMM", self.smm), ("running a nested L2 guest",
                                                        self.guest_mode)) if on]
        how = (f"TDP (EPT/NPT) with a {self.tdp_level}-level TDP table, accessed/dirty bits "
               f"{'enabled' if self.ad_enabled else 'disabled'}" if self.mmu == "tdp"
               else "shadow paging (no EPT/NPT)")
        return (f"Guest registers: {describe_regs(self.regs)}"
                + (f"; the vCPU is {' and '.join(extra)}" if extra else "") + f".\n"
                f"KVM uses {how}.  Give the Linux 5.18 root_mmu role word "
                f"'mmu_role.base' (one u32), the Linux 5.19 'root_role' word, and 'differ': "
                f"the set of page-role field names (as in PageRole.layout()) where the two "
                f"words differ (set() if none).")

    def _steps(self) -> list[Step]:
        differ = frozenset(n for n, _, _ in self.old.diff(self.new))
        return self._word_steps() + [Step(
            "differ", differ, "compare the two words field by field: for each field, "
            "apply its 5.18 rule and its 5.19 rule to this state (TDP and shadow roots changed "
            "in different ways with 5.19); keep the fields where the values differ.",
            ", ".join(sorted(differ)) or "nothing", _show_set)]

    def _hint(self, step: Step, given: Any) -> str:
        if step.name != "differ":
            return super()._hint(step, given)
        return set_hint(step, given, [n for n, _, _ in PageRole.layout()],
                        "the names in PageRole.layout()")


_TOGGLES = (("cr0", CR0.WP), ("efer", EFER.NXE))


class ToggleProblem(Problem):
    """Difficulty 2: does a CR0.WP / EFER.NX toggle change the root page role?"""

    kind = KIND
    title = "Does the toggle change the root role?"

    def __init__(self, seed: int, difficulty: int = 2) -> None:
        super().__init__(seed, difficulty)
        rng = self.rng
        self.mmu = rng.choice(("tdp", "shadow"))
        self.old = _regs(rng, 0.2)
        self.reg, self.bit = rng.choice(_TOGGLES)
        self.new = self.old.replace(**{self.reg: getattr(self.old, self.reg) ^ int(self.bit)})
        tdp = self.mmu == "tdp"
        self.old_518, self.new_518 = (mmu_role(r, tdp).base for r in (self.old, self.new))
        root = tdp_root_role if tdp else shadow_root_role
        self.old_519, self.new_519 = (root(cpu_role(r)) for r in (self.old, self.new))

    def _statement(self) -> str:
        how = "TDP (EPT/NPT, 4-level)" if self.mmu == "tdp" else "shadow paging"
        return (f"KVM uses {how}.  The guest goes from\n  {describe_regs(self.old)}\nto\n  "
                f"{describe_regs(self.new)}\n(it flipped {self.reg.upper()}.{self.bit.name}).\n"
                f"Does the role of the root page change on Linux 5.18 (mmu_role.base)?  On "
                f"5.19 (root_role)?  Answer True or False for each.")

    def _steps(self) -> list[Step]:
        field = "cr0_wp" if self.bit == CR0.WP else "efer_nx"
        c518 = self.old_518 != self.new_518
        c519 = self.old_519 != self.new_519
        tdp = self.mmu == "tdp"
        return [
            Step("5.18", c518, f"In 5.18 kvm_calc_mmu_role_common copies the guest's "
                 f"{field} into the one mmu_role -- for TDP and shadow alike -- but only "
                 f"while paging is on; shadow roles also hold smep/smap_andnot_wp.  Is "
                 f"paging on, and which fields see the bit?",
                 f"rule: '{legacy_rules(self.mmu)[field]}'", repr),
            Step("5.19", c519, f"In 5.19 the root role is "
                 + ("kvm_calc_tdp_mmu_root_page_role's: cr0_wp and efer_nx are constant 1"
                    if tdp else "the CPU role's base with level >= 3 and efer_nx forced to 1; "
                    "cr0_wp and smep/smap_andnot_wp follow the guest while paging is on")
                 + ".  Does the flipped bit reach any of its fields?",
                 f"rule: '{field_rules(self.mmu)[field]}'", repr),
        ]


class LegacyExtProblem(WordsProblem):
    """Difficulty 3: the 5.18 extended role word (kvm_calc_mmu_role_ext)."""

    kind = KIND
    title = "The pre-series extended role word"

    def __init__(self, seed: int, difficulty: int = 3) -> None:
        super().__init__(seed, difficulty)
        rng = self.rng
        self.regs = _regs(rng, 0.1)
        self.ext = mmu_role(self.regs).ext
        self.words = [("mmu_role.ext", self.ext, legacy_rules("ext"))]

    def _statement(self) -> str:
        lay = ", ".join(f"{n} {o}" for n, o, _ in LegacyExtendedRole.layout())
        return (f"Guest registers: {describe_regs(self.regs)}.\nCompute the Linux 5.18 "
                f"mmu_role.ext word (kvm_calc_mmu_role_ext), layout by bit: {lay}; bits "
                f"10-31 unused.  Answer {{'mmu_role.ext': <int>}}.")


def make_problem(seed: int, difficulty: int = 1) -> Problem:
    """1: 5.18 vs 5.19 role words; 2: does a WP/NX toggle change the root role; 3: the
    5.18 extended word."""
    check_seed(seed)
    check_difficulty(difficulty)        # before dispatching on it
    cls = {2: ToggleProblem, 3: LegacyExtProblem}.get(difficulty, SplitProblem)
    return cls(seed, difficulty)
