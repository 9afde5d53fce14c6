"""Exercise kind "root_reuse": after each guest operation, where does the vCPU's root come from?

The student follows a trace of guest register writes on a booted 64-bit guest and says,
for each step, what happened to ``root_mmu.root``:

* ``"kept"``       -- the current root is still in use (no exit, or no MMU work);
* ``"prev_roots"`` -- ``kvm_mmu_new_pgd`` -> ``fast_pgd_switch`` found a usable root in the
  root cache (current + ``prev_roots[0..2]``, facts §5);
* ``"found"``      -- the root was dropped (cache miss or ``kvm_mmu_unload``) and
  ``kvm_mmu_load`` found a root-level page with the same (gfn, role) still alive (the
  shadow MMU's per-VM hash, or a TDP root another reference kept);
* ``"new"``        -- ``kvm_mmu_load`` had to build a new root.

Everything is read off :class:`mmu.kvm.vcpu.VCpu` (its counters per step).

Difficulty 1: shadow paging, CR3 switches among at most 4 address spaces (they all fit
the cache).  2: more address spaces than the cache holds (LRU eviction -- and the shadow
pages outlive the cache).  3: a mix of CR3 switches, CR0.WP and CR4.SMEP toggles under
TDP or shadow paging on Linux 5.19 or 6.4 (facts §3.2, §3.3, §4).
"""
from __future__ import annotations

from collections import Counter
from typing import Any

from mmu.x86.regs import CR0, CR4
from mmu.book.exercises.base import CheckFailed, Problem, Step, TemplateList, is_blank

__all__ = ["KIND", "OUTCOMES", "OUTCOME_TEXT", "RootReuseProblem", "make_problem", "classify"]

KIND = "root_reuse"

OUTCOMES = ("kept", "prev_roots", "found", "new")

_CR3_SHADOW = ("Write down the 1 + 3 slots (current, prev_roots[0..2]) after every step.  "
               "Under shadow paging a MOV to CR3 exits to kvm_mmu_new_pgd: fast_pgd_switch "
               "searches the current root and prev_roots[0..2] for one with this CR3 and the "
               "current root_role (a hit swaps it in: the old current root becomes "
               "prev_roots[0], the least recently used one falls out).  On a miss "
               "kvm_mmu_load looks up the per-VM hash by (gfn of CR3, root_role): does a "
               "shadow page for that pair still exist?")
_CR3_TDP = ("With EPT/NPT, does a guest MOV to CR3 reach KVM at all?  kvm_set_cr3 runs only "
            "when CR3 loads are intercepted (facts §3.2), and a TDP root maps guest-physical "
            "addresses for every process (role.direct, so the PGD is not compared).  Ask what "
            "KVM would have to do with the root, and when.")
_WP = ("A CR0.WP-only toggle.  Does it exit at all (on Intel with EPT, 6.4 makes WP "
       "guest-owned)?  If it exits, does kvm_post_set_cr0 unload the roots with "
       "kvm_mmu_reset_context (before 6.4 always; from 6.4 with TDP it only re-runs "
       "kvm_init_mmu; shadow paging always)?  After an unload kvm_mmu_load looks for a root "
       "with the new root_role: does the TDP root role contain WP, and does a TDP root with "
       "no user survive (freed before 6.4, kept alive from 6.4)?  The shadow root role "
       "contains cr0_wp: are pages for this WP value still in the hash?")
_SMEP = ("CR4.SMEP is a role bit (KVM_MMU_CR4_ROLE_BITS): kvm_mmu_reset_context unloads every "
         "root, then kvm_mmu_load looks for one with the new root_role.  Does the root_role "
         "change (TDP: only KVM's level and format, SMM and guest mode enter it; shadow: SMEP "
         "enters only through smep_andnot_wp, i.e. with CR0.WP=0)?  Is a root with that role "
         "still alive (a TDP root with no user is freed before 6.4 and preserved from 6.4; "
         "shadow pages stay in the hash)?")

#: What each outcome means, in every statement that asks for one.
OUTCOME_TEXT = ("Outcomes: 'kept' = the current root stays in use (no exit, or no MMU work); "
                "'prev_roots' = fast_pgd_switch found a usable root in the root cache; "
                "'found' = the root was dropped and kvm_mmu_load found a root page with the "
                "same (gfn, root_role) still alive; 'new' = kvm_mmu_load built a new root.")

def classify(delta: Counter) -> str:
    """The outcome of one step from the vCPU's counter increments."""
    if delta["roots_created"]:
        return "new"
    if delta["mmu_loads"]:
        return "found"
    if delta["prev_root_hits"]:
        return "prev_roots"
    return "kept"


class RootReuseProblem(Problem):
    kind = KIND
    title = "Is the root reused?"

    def __init__(self, seed: int, difficulty: int = 1) -> None:
        super().__init__(seed, difficulty)
        rng = self.rng
        if difficulty == 3:
            self.kernel = rng.choice(("5.19", "6.4"))
            self.mmu = rng.choice(("tdp", "shadow"))
        else:
            self.kernel, self.mmu = "6.4", "shadow"
        spaces = {1: rng.randrange(2, 5), 2: rng.randrange(5, 7), 3: 2}[difficulty]
        self.cr3s = [0x1000 * (i + 1) + 0x10_0000 * rng.randrange(1, 64) for i in range(spaces)]
        nops = {1: 6, 2: 8, 3: 6}[difficulty]
        self.ops: list[tuple[str, int]] = []
        cur = self.cr3s[0]
        for _ in range(nops):
            kind = "cr3" if difficulty < 3 else rng.choice(("cr3", "cr3", "wp", "smep"))
            if kind == "cr3":
                cur = rng.choice([c for c in self.cr3s if c != cur])
                self.ops.append(("cr3", cur))
            else:
                self.ops.append((kind, 0))
        self._run()

    def _run(self) -> None:
        from mmu.kvm.vcpu import VCpu     # imported late: the vCPU model is the heaviest module
        v = VCpu(kernel=self.kernel, mmu=self.mmu, vendor="intel")
        v.boot_long_mode(cr3=self.cr3s[0])
        v.enter()
        self.boot_steps = v.step
        self.outcomes, self.labels = [], []
        for kind, value in self.ops:
            before = Counter(v.stats)
            if kind == "cr3":
                v.set_cr3(value)
                self.labels.append(f"MOV CR3 <- {value:#x}")
            elif kind == "wp":
                v.set_cr0(v.regs.cr0 ^ int(CR0.WP))
                self.labels.append(f"flip CR0.WP (now {int(v.regs.wp)})")
            else:
                v.set_cr4(v.regs.cr4 ^ int(CR4.SMEP))
                self.labels.append(f"flip CR4.SMEP (now {int(v.regs.smep)})")
            v.enter()
            self.outcomes.append(classify(Counter(v.stats) - before))
        self.vcpu = v

    def _statement(self) -> str:
        how = {"tdp": "TDP (EPT, TDP MMU)", "shadow": "shadow paging"}[self.mmu]
        lines = [f"Linux {self.kernel}, Intel, {how}.  A 64-bit guest booted with CR3="
                 f"{self.cr3s[0]:#x} (CR0.WP=1, SMEP off) and is running on that root.  Then, "
                 f"each followed by a guest entry:"]
        lines += [f"  step {i}: {label}" for i, label in enumerate(self.labels, 1)]
        lines.append(f"For each step say where the root comes from: one of {OUTCOMES}.\n"
                     + OUTCOME_TEXT)
        return "\n".join(lines)

    def _steps(self) -> list[Step]:
        steps = []
        for i, ((kind, _), label, outcome) in enumerate(zip(self.ops, self.labels,
                                                             self.outcomes), 1):
            rule = {"cr3": _CR3_TDP if self.mmu == "tdp" else _CR3_SHADOW, "wp": _WP,
                    "smep": _SMEP}[kind]
            steps.append(Step(f"step {i}", outcome, f"({label}) {rule}", label, repr))
        return steps

    def _normalise(self, answer: Any):
        if isinstance(answer, (list, tuple)):
            answer = {f"step {i}": a for i, a in enumerate(answer, 1)}
        if isinstance(answer, dict):
            # Only strs are looked up here; other types get the step's wrong-type hint.
            bad = [a for a in answer.values()
                   if not is_blank(a) and type(a) is str and a not in OUTCOMES]
            if bad:
                raise CheckFailed(f"✘ {bad[0]!r} is not an outcome; allowed {OUTCOMES}")
            return answer
        raise CheckFailed(f"✘ give a list of outcomes, one per step, each one of {OUTCOMES}")

    def solution_code(self, var: str = "answer") -> str:
        lines = [f"{var} = ["] + [f"    {s.value!r},  # {s.name}: {s.worked}" for s in self.steps()]
        return "\n".join(lines + ["]"])

    def template(self) -> TemplateList:     # type: ignore[override]
        return TemplateList([...] * len(self.ops))

    def explain(self) -> str:
        return "\n".join(f"{s.name}: {s.worked} -> {s.value}" for s in self.steps()) + \
            "\n\nKVM's events:\n" + "\n".join(str(e) for e in self.vcpu.events
                                               if e.step > self.boot_steps)


def make_problem(seed: int, difficulty: int = 1) -> RootReuseProblem:
    """A trace to follow; same seed and difficulty -> same problem everywhere."""
    return RootReuseProblem(seed, difficulty)
