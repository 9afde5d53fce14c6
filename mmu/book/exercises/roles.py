"""Exercise kind "roles": compute role words and say which role bits change.

Difficulty 1: ``cpu_role.base.word`` for given CR0/CR4/EFER (``kvm_calc_cpu_role``).
Difficulty 2: ``root_role.word`` under TDP (``kvm_calc_tdp_mmu_root_page_role``) or
shadow paging (``kvm_init_shadow_mmu``).  Difficulty 3: the guest writes one register;
which fields of ``cpu_role`` and of ``root_role`` change?

A word answer is unpacked with :meth:`mmu.kvm.roles.PageRole.from_word` and compared field by
field in bit order, so the hint names the first wrong field, its bit, and the rule that
sets it (facts §1.1, §2.3).  The values come from :mod:`mmu.kvm.roles`.
"""
from __future__ import annotations

from typing import Any, Mapping

from mmu.x86.regs import CR0, CR4, EFER, Regs, make_regs, paging_mode
from mmu.kvm.roles import CpuRole, PageRole, cpu_role, shadow_root_role, tdp_root_role
from mmu.book.exercises.base import (Blank, CheckFailed, Problem, Step, check_difficulty,
                                     check_seed, set_hint, type_name)

__all__ = ["KIND", "RoleWordProblem", "RoleChangeProblem", "make_problem", "field_rules",
           "describe_regs", "random_regs"]

KIND = "roles"

_CPU_RULES = {
    "level": "0 with paging off (CR0.PG=0); else 5 if EFER.LMA and CR4.LA57, 4 if EFER.LMA, "
             "3 if CR4.PAE, else 2",
    "has_4_byte_gpte": "1 only with paging on and CR4.PAE=0 (32-bit paging, 4-byte entries)",
    "quadrant": "always 0 in a CPU or root role (only child pages of 32-bit guests use it)",
    "direct": "1 only with paging off: there are no guest page tables to shadow",
    "access": "always ACC_ALL = 7 (bits 8-10 all set)",
    "invalid": "always 0 in a computed role",
    "efer_nx": "EFER.NXE with paging on; 0 with paging off",
    "cr0_wp": "CR0.WP with paging on; 0 with paging off",
    "smep_andnot_wp": "CR4.SMEP AND NOT CR0.WP, with paging on",
    "smap_andnot_wp": "CR4.SMAP AND NOT CR0.WP, with paging on",
    "ad_disabled": "0 in a CPU role (it describes KVM's own EPT/NPT format)",
    "guest_mode": "1 while a nested (L2) guest runs",
    "passthrough": "0 except on a nested-NPT root (5-level host over a 4-level L1 NPT)",
    "smm": "1 in system management mode (the field is the whole byte, bits 24-31)",
}
_EXT_RULES = {
    "valid": "always 1 in a computed role",
    "execonly": "0 except for nested EPT",
    "cr4_pse": "CR4.PSE with paging on",
    "cr4_pke": "CR4.PKE AND EFER.LMA (keys exist only in long mode), paging on",
    "cr4_smap": "CR4.SMAP with paging on",
    "cr4_smep": "CR4.SMEP with paging on",
    "cr4_la57": "CR4.LA57 AND EFER.LMA, paging on",
    "efer_lma": "EFER.LMA with paging on",
}
_TDP_RULES = dict(_CPU_RULES,
                  level="KVM's TDP level (kvm_mmu_get_tdp_level), 4 or 5 -- not the guest's",
                  has_4_byte_gpte="0: TDP pages never hold guest entries",
                  direct="1: a TDP root maps guest-physical addresses directly",
                  efer_nx="always 1 for TDP: the format of KVM's pages, not the guest's",
                  cr0_wp="always 1 for TDP: the format of KVM's pages, not the guest's",
                  smep_andnot_wp="0 for TDP (cr0_wp is 1)",
                  smap_andnot_wp="0 for TDP (cr0_wp is 1)",
                  ad_disabled="1 when the EPT/NPT format in use has no accessed/dirty bits")
_SHADOW_RULES = dict(_CPU_RULES,
                     level="the guest's level, raised to at least 3: KVM shadows 32-bit, PAE "
                           "and unpaged guests with PAE tables",
                     efer_nx="always 1 for shadow paging: KVM runs the guest with EFER.NX=1",
                     cr0_wp="as in the CPU role: CR0.WP with paging on (shadow pages differ "
                            "for WP=0, see the CR0.WP=0 trick)",
                     direct="as in the CPU role: 1 only with guest paging off")


def field_rules(flavour: str) -> dict[str, str]:
    """The rule for each field: flavour "cpu", "ext", "tdp" or "shadow"."""
    return {"cpu": _CPU_RULES, "ext": _EXT_RULES, "tdp": _TDP_RULES,
            "shadow": _SHADOW_RULES}[flavour]


def describe_regs(regs: Regs) -> str:
    """``CR0=0x80050033 (PE ... PG)`` for the role-relevant registers."""
    def names(flag, value):
        return "|".join(m.name for m in flag if value & m) or "0"
    return (f"CR0={regs.cr0:#x} ({names(CR0, regs.cr0)})  CR4={regs.cr4:#x} "
            f"({names(CR4, regs.cr4)})  EFER={regs.efer:#x} ({names(EFER, regs.efer)})")


def random_regs(rng, *, paging: bool | None = None) -> Regs:
    """A consistent register set in a random mode with random WP/NX/PSE/SMEP/SMAP/PKE."""
    modes = ("32-bit", "PAE", "4-level", "5-level") if paging else \
        ("none", "32-bit", "PAE", "4-level", "5-level")
    coin = lambda: rng.random() < 0.5                     # noqa: E731
    return make_regs(rng.choice(modes), wp=coin(), nx=coin(), pse=coin(), smep=coin(),
                     smap=coin(), pke=coin(), cr3=rng.randrange(1, 1 << 20) << 12)


def _word_steps(role: PageRole, rules: Mapping[str, str], what: str) -> list[Step]:
    steps = []
    for name, off, width in PageRole.layout():
        bits = f"bit {off}" if width == 1 else f"bits {off}-{off + width - 1}"
        steps.append(Step(f"{what}.{name}", getattr(role, name),
                          f"{what}.{name} ({bits}): {rules[name]}.",
                          f"{rules[name]}", repr))
    return steps


class RoleWordProblem(Problem):
    """Difficulty 1 (cpu_role.base.word) and 2 (root_role.word)."""

    kind = KIND
    title = "Compute a role word"

    def __init__(self, seed: int, difficulty: int = 1) -> None:
        super().__init__(seed, difficulty)
        rng = self.rng
        self.regs = random_regs(rng, paging=None if difficulty == 1 else rng.random() < 0.85)
        self.smm = rng.random() < 0.15
        self.guest_mode = not self.smm and rng.random() < 0.15
        self.mmu = rng.choice(("tdp", "shadow"))
        self.tdp_level = rng.choice((4, 5))
        self.ad_enabled = rng.random() < 0.7
        self.cpu = cpu_role(self.regs, smm=self.smm, guest_mode=self.guest_mode)
        if difficulty == 1:
            self.role, self.what, self.flavour = self.cpu.base, "cpu_role.base", "cpu"
        elif self.mmu == "tdp":
            self.role = tdp_root_role(self.cpu, self.tdp_level, self.ad_enabled)
            self.what, self.flavour = "root_role", "tdp"
        else:
            self.role, self.what, self.flavour = shadow_root_role(self.cpu), "root_role", "shadow"

    def _statement(self) -> str:
        extra = [x for x, on in (("in SMM", self.smm), ("running a nested L2 guest",
                                                        self.guest_mode)) if on]
        s = f"Guest registers: {describe_regs(self.regs)}" + \
            (f"; the vCPU is {' and '.join(extra)}" if extra else "") + ".\n"
        if self.difficulty == 1:
            return s + "Compute cpu_role.base.word (kvm_calc_cpu_role), as one 32-bit integer."
        how = (f"TDP (EPT/NPT) with a {self.tdp_level}-level TDP table, accessed/dirty bits "
               f"{'enabled' if self.ad_enabled else 'disabled'}" if self.mmu == "tdp"
               else "shadow paging (no EPT/NPT)")
        return s + f"KVM uses {how}.  Compute root_role.word, as one 32-bit integer."

    def _steps(self) -> list[Step]:
        return _word_steps(self.role, field_rules(self.flavour), self.what)

    def template(self) -> Blank:   # type: ignore[override]
        return Blank(f"one int: {self.what}.word, like 0x...")

    def _normalise(self, answer: Any) -> Mapping[str, Any]:
        if isinstance(answer, Mapping):      # field by field, as solve() gives it
            return answer
        if type(answer) is not int:
            raise CheckFailed(f"✘ give {self.what}.word as one int (e.g. 0x...), "
                              f"not {type_name(answer)}")
        try:
            role = PageRole.from_word(answer)
        except ValueError as e:
            raise CheckFailed(f"✘ {answer:#x} is not a page-role word: {e} (bits 19-23 "
                              f"are unused in 5.19+)") from None
        return {f"{self.what}.{n}": getattr(role, n) for n, _, _ in PageRole.layout()}

    def solution_code(self, var: str = "answer") -> str:
        lines = [f"# {s.name} = {s.value}: {s.worked}"[:200] for s in self.steps()]
        return "\n".join(lines + [f"{var} = {self.role.word:#x}"])

    @property
    def word(self) -> int:
        return self.role.word

    def explain(self) -> str:
        return super().explain() + f"\n=> {self.what}.word = {self.role.word:#x}"


#: Register changes for difficulty 3: (register, bit) pairs a guest might flip.
_FLIPS = (("cr0", CR0.WP), ("cr4", CR4.SMEP), ("cr4", CR4.SMAP), ("cr4", CR4.PKE),
          ("cr4", CR4.PSE), ("efer", EFER.NXE), ("cr4", CR4.PGE), ("cr0", CR0.TS),
          ("cr4", CR4.PAE), ("cr0", CR0.PG))


class RoleChangeProblem(Problem):
    """Difficulty 3: which fields change when the guest writes one register."""

    kind = KIND
    title = "Which role bits change?"
    #: The register bits this problem may flip (subclasses narrow it).
    flips: tuple = _FLIPS

    def __init__(self, seed: int, difficulty: int = 3) -> None:
        super().__init__(seed, difficulty)
        rng = self.rng
        self.mmu = rng.choice(("tdp", "shadow"))
        for _ in range(1000):
            old = random_regs(rng, paging=True)
            reg, bit = rng.choice(self.flips)
            new = old.replace(**{reg: getattr(old, reg) ^ int(bit)})
            try:
                paging_mode(new)
            except ValueError:
                continue
            break
        self.old, self.new, self.reg, self.bit = old, new, reg, bit
        self.old_cpu, self.new_cpu = cpu_role(old), cpu_role(new)
        root = (lambda c: tdp_root_role(c)) if self.mmu == "tdp" else shadow_root_role
        self.old_root, self.new_root = root(self.old_cpu), root(self.new_cpu)

    def _statement(self) -> str:
        how = "TDP (EPT/NPT, 4-level)" if self.mmu == "tdp" else "shadow paging"
        return (f"KVM uses {how}.  The guest goes from\n  {describe_regs(self.old)}\nto\n  "
                f"{describe_regs(self.new)}\n(it flipped {self.reg.upper()}.{self.bit.name}).\n"
                f"Which fields of cpu_role change (written 'base.<field>' or 'ext.<field>'), "
                f"and which of root_role (written '<field>')?  Field names as in "
                f"PageRole.layout() and CpuRole().ext.layout().  Give two sets; an empty "
                f"set() if nothing changes.")

    def _steps(self) -> list[Step]:
        cpu = frozenset(f for f, _, _ in self.old_cpu.diff(self.new_cpu))
        root = frozenset(f for f, _, _ in self.old_root.diff(self.new_root))
        flav = self.mmu
        return [
            Step("cpu_role", cpu, "cpu_role follows kvm_calc_cpu_role: go through every "
                 "field of base and ext, apply its rule to the registers before and after, "
                 "and keep the fields whose value differs.",
                 ", ".join(sorted(cpu)) or "nothing", _show_set),
            Step("root_role", root, f"root_role is the {flav} root role: "
                 + ("only SMM, guest mode and KVM's own TDP level/format enter it"
                    if flav == "tdp" else "the CPU role's base with level >= 3 and efer_nx "
                    "forced to 1") + ".", ", ".join(sorted(root)) or "nothing", _show_set),
        ]

    def _hint(self, step: Step, given: Any) -> str:
        if step.name == "cpu_role":
            known = [f"base.{n}" for n, _, _ in PageRole.layout()] + \
                [f"ext.{n}" for n, _, _ in CpuRole().ext.layout()]
            return set_hint(step, given, known, "'base.<field>' or 'ext.<field>'")
        return set_hint(step, given, [n for n, _, _ in PageRole.layout()], "'<field>'")


def _show_set(s) -> str:
    return "{" + ", ".join(repr(x) for x in sorted(s)) + "}" if s else "set()"


def make_problem(seed: int, difficulty: int = 1) -> Problem:
    """Difficulty 1-2: a role word to compute; 3: which role fields change."""
    check_seed(seed)
    check_difficulty(difficulty)        # before dispatching on it
    if difficulty == 3:
        return RoleChangeProblem(seed, difficulty)
    return RoleWordProblem(seed, difficulty)
