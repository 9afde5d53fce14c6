"""Exercise kind "permissions": predict whether an access faults, by which rule, and the
#PF error code.

The student sees the entries of one 4-level walk (decoded), the registers that steer the
permission check (CR0.WP, CR4.SMEP/SMAP/PKE, EFER.NXE, RFLAGS.AC, PKRU) and the access
(read/write/fetch at CPL 0 or 3).  The answer has three steps: does it fault, which rule
(SDM Vol. 3A 4.6, the same rules KVM folds into ``update_permission_bitmask`` /
``permission_fault``), and the error code, checked bit by bit (SDM 4.7).  The solution is
read off :func:`mmu.x86.walker.walk`; the tests cross-check it against KVM's bitmap path in
:mod:`mmu.kvm.permissions`.

Difficulty 1: U/S and R/W with CR0.WP=1.  2: adds execute-disable, fetches (and when the
I/D bit is reported), CR0.WP=0.  3: adds SMEP, SMAP with RFLAGS.AC, protection keys, a
right taken away at an upper level, and reserved-bit faults (XD with EFER.NXE=0).
"""
from __future__ import annotations

from typing import Any

from mmu.x86.bits import PTE, PFErr
from mmu.x86.memory import GuestMemory
from mmu.x86.pagetable import PageTableBuilder
from mmu.x86.regs import PagingMode
from mmu.x86.walker import walk
from mmu.book.exercises.base import Problem, Step, _shown, hexs

__all__ = ["KIND", "RULES", "ErrorCodeProblem", "make_problem", "rule_of"]

KIND = "permissions"

#: The answers the "rule" step accepts, in the order a student should test them.
RULES = ("none", "not present", "RSVD", "U/S", "R/W", "XD", "SMEP", "SMAP", "PK")

#: Each rule in one sentence: when it refuses an access (SDM Vol. 3A 4.6).
_RULE_TEXT = {
    "not present": "an entry on the way has P=0",
    "RSVD": "an entry has a reserved bit set (here: XD=1 while EFER.NXE=0)",
    "U/S": "a CPL-3 access to a page with U/S=0 at some level",
    "R/W": "a write to a page with R/W=0 at some level, by user code, or by the kernel when "
           "CR0.WP=1",
    "XD": "a fetch from a page with XD=1 at some level, EFER.NXE=1",
    "SMEP": "a supervisor fetch from a user page, CR4.SMEP=1",
    "SMAP": "a supervisor read or write of a user page with CR4.SMAP=1 and RFLAGS.AC=0",
    "PK": "a read or write of a user page whose key has PKRU.AD=1, or PKRU.WD=1 for a write "
          "that R/W would check (user code, or the kernel with CR0.WP=1)",
}

_RULES_WHY = (
    "Test the rules in order: U/S (a CPL-3 access to a page with U/S=0 at some level), "
    "R/W (a write to a page with R/W=0 at some level, by user code, or by the kernel when "
    "CR0.WP=1), XD (a fetch from a page with XD=1 at some level, EFER.NXE=1), SMEP (a "
    "supervisor fetch from a user page, CR4.SMEP=1), SMAP (a supervisor read or write of a "
    "user page with CR4.SMAP=1 and RFLAGS.AC=0), PK (a read/write of a user page whose key "
    "has PKRU.AD=1, or PKRU.WD=1 for a write R/W would check); a reserved bit (XD with "
    "EFER.NXE=0) is RSVD.  A user page has U/S=1 at every level.")

#: Error-code bits in order, with the rule that sets each (SDM 4.7; PFERR_* in kvm_host.h).
_BITS = (
    (0, "P", "P=1 when a present page broke a protection rule (or a reserved bit was set); "
             "P=0 when an entry was not present"),
    (1, "W/R", "W/R=1 when the faulting access was a write"),
    (2, "U/S", "U/S=1 when the access was made at CPL 3 (user mode)"),
    (3, "RSVD", "RSVD=1 when an entry had a reserved bit set"),
    (4, "I/D", "I/D=1 for an instruction fetch -- but only when EFER.NXE=1 or CR4.SMEP=1 "
               "(otherwise fetches cannot fault for a paging reason, and it stays 0)"),
    (5, "PK", "PK=1 when a protection key (PKRU) caused the fault"),
)


def rule_of(reason: str | None) -> str:
    """The rule name of a walker fault reason ("SMAP: supervisor read ..." -> "SMAP")."""
    if reason is None:
        return "none"
    if "not present" in reason:
        return "not present"
    return reason.split(":", 1)[0]


class ErrorCodeProblem(Problem):
    kind = KIND
    title = "Predict the page-fault error code"

    def __init__(self, seed: int, difficulty: int = 1) -> None:
        super().__init__(seed, difficulty)
        # Resample (deterministically) until exactly one rule or none decides the access,
        # so the "rule" step has one right answer.
        for _ in range(200):
            self._generate()
            w = self._walk()
            if w.fault is None or ";" not in w.fault.reason:
                break
        self.result = w

    def _generate(self) -> None:
        rng, d = self.rng, self.difficulty
        coin = lambda p=0.5: rng.random() < p          # noqa: E731
        self.mem = GuestMemory()
        b = PageTableBuilder(self.mem, PagingMode.LEVEL4)
        efer_nx = True if d == 1 else coin(0.75)
        leaf_nx = d >= 2 and coin(0.4) and (efer_nx or (d == 3 and coin(0.3)))
        pke = d == 3 and coin(0.4)
        self.pkey = rng.randrange(16) if pke else 0
        self.gva = rng.randrange(0, 1 << 47, 4096) | rng.randrange(4096)
        b.map(self.gva & ~0xFFF, rng.randrange(0, 1 << 36, 4096), 4096,
              writable=coin(), user=coin(), nx=leaf_nx, pkey=self.pkey)
        self.regs = b.regs(wp=True if d == 1 else coin(0.6), nx=efer_nx,
                           smep=d == 3 and coin(), smap=d == 3 and coin(),
                           ac=d == 3 and coin(0.3), pke=pke,
                           pkru=rng.randrange(1 << 32) if pke else 0)
        if d == 3 and coin(0.4):
            # Take a right away at an upper level: the page's rights are the AND.
            steps = walk(self.mem, self.regs, self.gva, "read", 0, set_ad=False).trace
            upper = rng.choice([t for t in steps if not t.leaf])
            bit = rng.choice((PTE.RW, PTE.US))
            self.mem.write_u64(upper.entry_addr, upper.entry & ~int(bit))
        kinds = ("read", "write") if d == 1 else ("read", "write", "fetch")
        self.access = rng.choice(kinds)
        self.cpl = rng.choice((0, 3))

    def _walk(self):
        return walk(self.mem, self.regs, self.gva, self.access, self.cpl, set_ad=False)

    def _statement(self) -> str:
        r = self.regs
        onoff = lambda v: "1" if v else "0"            # noqa: E731
        lines = [f"A {'user (CPL 3)' if self.cpl == 3 else 'supervisor (CPL 0)'} "
                 f"{self.access} of {self.gva:#x} in 4-level paging.",
                 f"CR0.WP={onoff(r.wp)}  CR4.SMEP={onoff(r.smep)}  CR4.SMAP={onoff(r.smap)}  "
                 f"CR4.PKE={onoff(r.pke)}  EFER.NXE={onoff(r.nx)}  RFLAGS.AC={onoff(r.ac)}"
                 + (f"  PKRU={r.pkru:#010x}" if r.pke else ""),
                 "The walk reads these entries:"]
        for t in self.result.trace:
            flags = [n for n in ("P", "RW", "US", "XD") if t.entry & PTE[n]]
            pk = f"  protection key {(t.entry >> 59) & 0xF}" if t.leaf and r.pke else ""
            lines.append(f"  {t.name:<5} {t.entry:#018x}  ({' '.join(flags)}){pk}")
        lines.append(f"Does it fault?  If so, by which rule ({', '.join(RULES[1:])}), and "
                     f"what is the #PF error code (0 if no fault)?")
        return "\n".join(lines)

    def _steps(self) -> list[Step]:
        f = self.result.fault
        rule = rule_of(f.reason if f is not None else None)
        code = f.error_code if f is not None else 0
        return [
            Step("fault", f is not None, "Does any paging rule refuse this access? " + _RULES_WHY,
                 f.reason if f is not None else "every rule allows the access"),
            Step("rule", rule, "Which rule decides? " + _RULES_WHY,
                 f.reason if f is not None else "no fault", repr),
            Step("error code", code, "Build the code bit by bit: " + "; ".join(
                f"bit {b} {n}: {why}" for b, n, why in _BITS) + ". No fault: 0.",
                f"{PFErr(code)!r}" if code else "no fault", hexs),
        ]

    def _same(self, step: Step, given: Any) -> bool:
        if step.name == "rule" and isinstance(given, str) and given.strip().upper() == "NONE":
            return step.value == "none"
        return super()._same(step, given)

    def _candidates(self) -> list[str]:
        """The rules that can concern this access at all (its kind, CPL and the control
        registers), in checking order -- not which of them fires."""
        r, user, a = self.regs, self.cpl == 3, self.access
        out = ["not present"] + (["RSVD"] if not r.nx else [])   # XD=1 is reserved only then
        out += ["U/S"] if user else []
        out += ["R/W"] if a == "write" else []
        out += ["XD"] if a == "fetch" and r.nx else []
        out += ["SMEP"] if a == "fetch" and not user and r.smep else []
        out += ["SMAP"] if a != "fetch" and not user and r.smap else []
        out += ["PK"] if a != "fetch" and r.pke else []
        return out

    def _who(self) -> str:
        return f"{'user (CPL 3)' if self.cpl == 3 else 'supervisor (CPL 0)'} {self.access}"

    def _checklist(self) -> str:
        return ("; ".join(f"{n}: {_RULE_TEXT[n]}" for n in self._candidates())
                + ".  A page's rights are the AND over all four levels (a user page has U/S=1 "
                  "at every level, a writable one R/W=1 at every level).")

    def _hint(self, step: Step, given: Any) -> str:
        if step.name == "fault":
            return (f"{_shown(step, given)} is not right.  For a {self._who()} with these "
                    f"registers only these rules can refuse the access; test each against "
                    f"the entries -- {self._checklist()}")
        if step.name == "rule" and isinstance(given, str):
            g = next((r for r in RULES if r.lower() == given.strip().lower()), None)
            if g is None:
                return f"{given!r} is not a rule name: answer one of {RULES}."
            if g != "none" and g not in self._candidates():
                return (f"{g} cannot decide a {self._who()} with these registers "
                        f"({g}: {_RULE_TEXT[g]}).  The rules that can -- {self._checklist()}")
            if g == "none":
                return (f"'none' is not right: some rule refuses this {self._who()}.  Test "
                        f"each -- {self._checklist()}")
            return (f"{g} does not refuse this access ({g}: {_RULE_TEXT[g]}).  Test the other "
                    f"rules that can concern a {self._who()} -- {self._checklist()}")
        if step.name == "error code" and isinstance(given, int) and not isinstance(given, bool):
            if step.value == 0:
                return ("there is no fault here (see the 'fault' step), so there is no "
                        "error code to build.")
            diff = given ^ step.value
            for bit, name, why in _BITS:
                if diff >> bit & 1:
                    state = "should be set" if step.value >> bit & 1 else "should be clear"
                    return f"{_shown(step, given)}: bit {bit} ({name}) {state}. {why}."
            return f"{_shown(step, given)}: only bits 0-5 can be set in this exercise."
        return super()._hint(step, given)


def make_problem(seed: int, difficulty: int = 1) -> ErrorCodeProblem:
    """An access to judge; same seed and difficulty -> same problem everywhere."""
    return ErrorCodeProblem(seed, difficulty)
