"""The book's experiments, run on the host and in the model, compared case by case.

Each experiment is a function ``(host, model, backend) -> list[Case]``.  A case holds the
host's answer (``real``), the model's (``model``) and a ``status``:

* ``agree`` / ``disagree`` -- both answered and the answers are (not) equal;
* ``refused`` -- the host refused the state (``note`` says how: an errno from
  KVM_SET_SREGS, a register bit it cleared, a triple fault); the model's answer is shown;
* ``skipped`` -- this host cannot show it (e.g. role words need root to trace);
* ``measured`` -- a number from this host next to the model's, not compared (timing).

What is compared is what the kernel's tracepoints and statistics show: root pages as
(gfn, role word) from ``kvm_mmu_get_page``; per guest write "new" / "found" / "no lookup"
(a prev_roots hit or no root change); #PF error codes from the guest's own IDT stubs
(CPL0) or ``kvm_inj_exception`` (CPL3); the shadow tree as (gfn, role word) pairs.
"""
from __future__ import annotations

import dataclasses
import itertools
import statistics

from mmu.kvmhost import guest as g
from mmu.kvmhost.backend import Backend
from mmu.kvmhost.model_side import Model
from mmu.kvmhost.runner import PORT_MARK, Boot, Host
from mmu.x86.regs import CR0, make_regs
from mmu.x86.walker import walk

__all__ = ["Case", "EXPERIMENTS", "MODES", "PF_CASES", "verdict", "steps_summary",
           "run_experiments",
           "roles", "wp_toggles", "cr3_round_robin", "pf_error_codes", "cpl3_shadow_tree",
           "toggle_cost"]

MODES = ("none", "32-bit", "PAE", "4-level", "5-level")
STATUSES = ("agree", "disagree", "refused", "skipped", "measured")
TEST_VA = 0x4000_0000          # the page a #PF case touches
USER_CODE_VA = 0x6000_0000     # a CPL3 guest's code, then its data in other 2 MiB regions
USER_STACK_VA = 0x6000_8000


@dataclasses.dataclass(frozen=True)
class Case:
    experiment: str
    name: str
    real: object
    model: object
    status: str
    note: str = ""

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def verdict(real, model) -> str:
    """"agree" when the host's and the model's answers are equal, else "disagree"."""
    return "agree" if real == model else "disagree"


def _case(exp: str, name: str, boot_or_real, model, note: str = "") -> Case:
    if isinstance(boot_or_real, Boot) and not boot_or_real.accepted:
        return Case(exp, name, None, model, "refused", boot_or_real.refusal)
    return Case(exp, name, boot_or_real, model, verdict(boot_or_real, model), note)


_TDP_MMU_ROOTS = ("the TDP MMU's roots are not kvm_mmu_get_page events (tdp_mmu.c allocates "
                  "them without that tracepoint)")
_SHADOW_ONLY = ("only with shadow paging does KVM build pages for the guest's tables and "
                "inject its #PFs (with EPT/NPT the CPU walks them and delivers the fault)")


def _unobservable(host: Host, backend: Backend, *, roots: bool = False,
                  shadow: bool = False) -> str:
    """Why this host cannot show a case ("" when it can): no tracing; roots that no
    tracepoint reports (TDP MMU); shadow-paging facts on a host with EPT/NPT."""
    if not host.tracing:
        return f"this comes from tracing: {host.trace_note}"
    if roots and backend.mmu_kind == "tdp":
        return _TDP_MMU_ROOTS
    if shadow and backend.mmu_kind != "shadow":
        return _SHADOW_ONLY
    return ""


def _root_level(events) -> int:
    return max((e["role"] & 0xF for e in events), default=0)


def _roots(boot: Boot) -> list[list[int]]:
    evs = boot.named("kvm_mmu_get_page")
    top = _root_level(evs)
    return sorted([e["gfn"], e["role"]] for e in evs if e["role"] & 0xF == top)


# -- 1. root role words over every paging mode and role-bit state ----------------------------
def roles(host: Host, model: Model, backend: Backend) -> list[Case]:
    out = []
    for mode in MODES:
        for wp, nx, smep, smap, pke in itertools.product((True, False), repeat=5):
            name = f"{mode} WP={wp:d} NX={nx:d} SMEP={smep:d} SMAP={smap:d} PKE={pke:d}"
            img = g.GuestImage(mode)
            regs = make_regs(mode, cr3=img.cr3(), wp=wp, nx=nx, pse=False, smep=smep,
                             smap=smap, pke=pke)
            want = model.root_pages(img.mem, regs)
            why = _unobservable(host, backend, roots=True)
            if why:
                out.append(Case("roles", name, None, want, "skipped", why))
                continue
            boot = host.boot(img, regs, g.Asm().done())
            out.append(_case("roles", name, _roots(boot) if boot.accepted else boot, want))
    return out


# -- 2/3. guest writes: what each does to the root ------------------------------------------
def _write_steps(boot: Boot, root_level: int) -> list[str]:
    steps = []
    for evs in boot.steps():
        top = [e for e in evs if e.name == "kvm_mmu_get_page" and e["role"] & 0xF == root_level]
        steps.append("+".join("new" if e["created"] else "found" for e in top) or "no lookup")
    return steps


def _trapped(boot: Boot, cr_rips: list[int]) -> list[str]:
    """Per step: did the MOV to CRn reach KVM?  VMX/SVM: a ``kvm_cr`` write event (the
    exit handler); PVM: ``kvm_emulate_insn`` at the MOV's address (the emulator ran it)."""
    rips = set(cr_rips)
    out = []
    for evs in boot.steps():
        hit = any((e.name == "kvm_cr" and e["rw"] == 1)
                  or (e.name == "kvm_emulate_insn" and e["rip"] in rips) for e in evs)
        out.append("reaches KVM" if hit else "stays in the guest")
    return out


def _model_steps(steps: list[str]) -> list[str]:
    # the host cannot tell a prev_roots hit from no root change: both make no lookup
    return ["no lookup" if s in ("cached", "none") else s for s in steps]


def steps_summary(steps: list[str]) -> str:
    """Counts of each outcome, in order of first appearance: "1 new, 39 found"."""
    counts: dict[str, int] = {}
    for s in steps:
        counts[s] = counts.get(s, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in counts.items()) or "no steps"


def _write_guest(ops: list[tuple[str, int]]) -> g.Asm:
    """For step i: OUT mark i; MOV CRn; OUT (an exit, so the root is reloaded before the
    next mark); a load and a store to a data page, as a kernel between toggles would."""
    a = g.Asm()
    for i, (reg, value) in enumerate(ops):
        a.out(PORT_MARK, i).mov_imm("rax", value).mov_to_cr(0 if reg == "cr0" else 3, "rax")
        a.out(g.PORT_SYNC, 0).mov_imm("rdx", g.DATA_GPA).load("rcx", "rdx")
        a.store("rdx", "rcx")
    return a.out(PORT_MARK, len(ops)).done()


def _writes_case(host: Host, model: Model, backend: Backend, exp: str, name: str,
                 img: g.GuestImage, regs, ops) -> list[Case]:
    want, exited, mstats = model.writes(img.mem, regs, ops)
    want = _model_steps(want)
    want_trap = ["reaches KVM" if x else "stays in the guest" for x in exited]
    code = _write_guest(ops)
    boot = host.boot(img, regs, code)
    cases = []
    trap_name = f"{name}: reaches kvm_set_cr*? (vendor)"
    why_roots, why = _unobservable(host, backend, roots=True), _unobservable(host, backend)
    if not boot.accepted:
        cases.append(Case(exp, name, None, want, "refused", boot.refusal))
    elif why_roots:
        cases.append(Case(exp, name, None, want, "skipped", why_roots))
    else:
        real = _write_steps(boot, regs.mode.value)[:len(ops)]
        cases.append(Case(exp, name, real, want, verdict(real, want)))
    if why:
        cases.append(Case(exp, trap_name, None, want_trap, "skipped", why))
    elif boot.accepted:
        trap = _trapped(boot, [g.CODE_GPA + off for off in code.cr_writes])[:len(ops)]
        cases.append(Case(exp, trap_name, trap, want_trap, verdict(trap, want_trap),
                          "seen as kvm_emulate_insn (PVM) or kvm_cr (VMX/SVM)"))
    # The VM's statistics need no root: shadow pages allocated and zapped over the run.
    # On PVM kernel code is emulated, so no page below the root is built and the counts
    # are the roots' alone; on VMX/SVM the guest's own fetches and accesses add pages.
    stat_name = f"{name}: VM stats (no root needed)"
    if backend.vendor != "pvm":
        cases.append(Case(exp, stat_name, None, mstats, "skipped",
                          "only on PVM are these the roots' alone (VMX/SVM run the guest's "
                          "accesses natively and build pages below the root)"))
    elif boot.accepted:
        real = {"created": boot.vm_stats.get("mmu_cache_miss", 0),
                "zapped": boot.vm_stats.get("mmu_shadow_zapped", 0)}
        cases.append(Case(exp, stat_name, real, mstats, verdict(real, mstats)))
    return cases


def wp_toggles(host: Host, model: Model, backend: Backend, n: int = 40) -> list[Case]:
    img = g.GuestImage()
    regs = g.long_mode_regs(img.cr3())
    ops = [("cr0", regs.cr0 & ~int(CR0.WP) if i % 2 == 0 else regs.cr0) for i in range(n)]
    return _writes_case(host, model, backend, "wp_toggles", f"{n} CR0.WP toggles", img, regs, ops)


def cr3_round_robin(host: Host, model: Model, backend: Backend, switches: int = 40
                    ) -> list[Case]:
    out = []
    for n in (3, 4, 5):
        img = g.GuestImage(spaces=n)
        regs = g.long_mode_regs(img.cr3(0))
        ops = [("cr3", img.cr3((i + 1) % n)) for i in range(switches)]
        out += _writes_case(host, model, backend, "cr3_round_robin",
                            f"{switches} switches over {n} address spaces", img, regs, ops)
    return out


# -- 4. #PF error codes for a table of accesses ----------------------------------------------
@dataclasses.dataclass(frozen=True)
class PfCase:
    """One access: the page at TEST_VA is mapped with ``page`` flags (None: not present)."""

    name: str
    access: str
    page: dict | None
    cpl: int = 0
    wp: bool = True
    nx: bool = True
    smep: bool = False
    smap: bool = False
    ac: bool = False


_RO, _USER, _XD = {"writable": False}, {"user": True}, {"nx": True}
PF_CASES = (
    PfCase("fetch, not present, NX=1", "fetch", None),
    PfCase("fetch, not present, NX=0", "fetch", None, nx=False),
    PfCase("fetch, not present, NX=0, SMEP=1", "fetch", None, nx=False, smep=True),
    PfCase("fetch from an XD page", "fetch", _XD),
    PfCase("read, not present", "read", None),
    PfCase("write, not present", "write", None),
    PfCase("supervisor write to a read-only page, WP=1", "write", _RO),
    PfCase("supervisor write to a read-only page, WP=0", "write", _RO, wp=False),
    PfCase("supervisor fetch of a user page, SMEP=1", "fetch", _USER, smep=True),
    PfCase("supervisor fetch of a user page, SMEP=0", "fetch", _USER),
    PfCase("supervisor read of a user page, SMAP=1, AC=0", "read", _USER, smap=True),
    PfCase("supervisor read of a user page, SMAP=1, AC=1", "read", _USER, smap=True, ac=True),
    PfCase("supervisor write to a read-only user page, WP=0, SMAP=0", "write",
           {"writable": False, "user": True}, wp=False),
    PfCase("user write to a read-only user page, WP=1", "write",
           {"writable": False, "user": True}, cpl=3),
    PfCase("user write to a read-only user page, WP=0", "write",
           {"writable": False, "user": True}, cpl=3, wp=False),
    PfCase("user read of a supervisor page", "read", {}, cpl=3),
)


def _user_image(img: g.GuestImage) -> None:
    """A CPL3 guest's code and stack, mapped user (the code bytes are at CODE_GPA)."""
    img.map(USER_CODE_VA, g.CODE_GPA, 0x1000, user=True)
    img.map(USER_STACK_VA - 0x1000, g.STACK_TOP - 0x1000, 0x1000, user=True, nx=True)


def _pf_real(boot: Boot, cpl: int) -> str:
    from mmu.kvmhost.model_side import fault_label
    if cpl == 0:                                    # the guest's IDT stub reported it
        vec = boot.out(g.PORT_VECTOR)
        return fault_label(vec, boot.out(g.PORT_ERROR) if vec is not None else None)
    inj = boot.named("kvm_inj_exception")           # CPL3: PVM's event entry, not our IDT
    if not inj:
        return "no fault"
    e = inj[0]
    return fault_label(e["exception"], e["error_code"] if e["has_error"] else None)


def pf_error_codes(host: Host, model: Model, backend: Backend) -> list[Case]:
    out = []
    for c in PF_CASES:
        img = g.GuestImage()
        if c.page is not None:
            img.map(TEST_VA, g.DATA_GPA, 0x1000, **c.page)
        img.fill(g.DATA_GPA)                        # RET: a successful fetch returns
        regs = g.long_mode_regs(img.cr3(), wp=c.wp, nx=c.nx, smep=c.smep, smap=c.smap)
        regs = regs.replace(rflags=regs.rflags | (1 << 18 if c.ac else 0))
        if c.cpl == 3:
            _user_image(img)
        want = model.fault(img.mem, regs, TEST_VA, c.access, c.cpl)
        why = _unobservable(host, backend, shadow=True) if c.cpl == 3 else ""
        if why:
            out.append(Case("pf_error_codes", c.name, None, want, "skipped",
                            f"a CPL3 #PF is read from kvm_inj_exception; {why}"))
            continue
        code = g.Asm().access(c.access, TEST_VA).done()
        boot = host.boot(img, regs, code, cpl=c.cpl, ac=c.ac, shutdown_ok=c.cpl == 3,
                         rip=USER_CODE_VA if c.cpl == 3 else None,
                         rsp=USER_STACK_VA if c.cpl == 3 else None)
        out.append(_case("pf_error_codes", c.name, _pf_real(boot, c.cpl) if boot.accepted
                         else boot, want))
    return out


# -- 5. a CPL3 guest's shadow tree -----------------------------------------------------------
def _set_entry_bits(img: g.GuestImage, regs, gva: int, level: int, *, set_=0, clear=0) -> None:
    """Change the guest entry at ``level`` on the walk to ``gva`` (found by the walker)."""
    w = walk(img.mem, regs, gva, "read", 0, set_ad=False)
    step = next(s for s in w.trace if s.level == level)
    img.mem.write_u64(step.entry_addr, (step.entry | set_) & ~clear)


def cpl3_shadow_tree(host: Host, model: Model, backend: Backend) -> list[Case]:
    out = []
    pages = {"plain": USER_CODE_VA + 0x20_0000, "XD PDE": USER_CODE_VA + 0x40_0000,
             "read-only PDE": USER_CODE_VA + 0x60_0000}
    for wp in (True, False):
        name = f"CPL3 guest, WP={wp:d}"
        img = g.GuestImage()
        _user_image(img)
        img.map(USER_CODE_VA + 0x1000, g.DATA_GPA, 0x1000, user=True)
        for i, va in enumerate(pages.values()):
            img.map(va, g.DATA_GPA + 0x1000 * (i + 1), 0x1000, user=True)
        regs = g.long_mode_regs(img.cr3(), wp=wp)
        _set_entry_bits(img, regs, pages["XD PDE"], 2, set_=1 << 63)
        _set_entry_bits(img, regs, pages["read-only PDE"], 2, clear=0x2)
        accesses = [("fetch", USER_CODE_VA), ("write", USER_CODE_VA + 0x1000)]
        accesses += [("read", va) for va in pages.values()]
        why = _unobservable(host, backend, shadow=True)
        if why:
            out.append(Case("cpl3_shadow_tree", name, None, [], "skipped", why))
            continue
        want = model.shadow_tree(img.mem, regs, accesses, 3)
        code = g.Asm()
        for access, va in accesses[1:]:
            code.access(access, va)
        code.done()
        boot = host.boot(img, regs, code, cpl=3, rip=USER_CODE_VA, rsp=USER_STACK_VA,
                         shutdown_ok=True)
        real = sorted([e["gfn"], e["role"]] for e in boot.named("kvm_mmu_get_page")
                      if e["created"]) if boot.accepted else boot
        ended = boot.outcome.reason if boot.accepted else "io"
        out.append(_case("cpl3_shadow_tree", name, real, want,
                         "" if ended == "io" else f"the guest's run ended: {ended}"))
    return out


# -- 6. time per CR0.WP toggle (host-specific) ------------------------------------------------
def toggle_cost(host: Host, model: Model, backend: Backend, n: int = 2000, repeats: int = 5
                ) -> list[Case]:
    """Seconds in KVM_RUN for ``n`` CR0 writes that toggle WP, minus the same number of CR0
    writes that change nothing, per write; median of ``repeats``.  Measured with tracing
    paused (the events cost time of their own)."""
    img = g.GuestImage()
    regs = g.long_mode_regs(img.cr3())
    off = regs.cr0 & ~int(CR0.WP)

    def guest(toggle: bool) -> g.Asm:
        a = g.Asm().mov_imm("rax", regs.cr0).mov_imm("rbx", off if toggle else regs.cr0)
        for i in range(n):
            a.mov_to_cr(0, "rbx" if i % 2 == 0 else "rax")
        return a.done()

    times = {True: [], False: []}
    with host.paused():
        for _ in range(repeats):
            for toggle in (True, False):
                boot = host.boot(img, regs, guest(toggle))
                if not boot.accepted:
                    return [Case("toggle_cost", "time per CR0.WP toggle", None, None,
                                 "refused", boot.refusal)]
                times[toggle].append(boot.outcome.seconds)
    t_toggle = statistics.median(times[True]) / n
    t_same = statistics.median(times[False]) / n
    from mmu.book.cost import CLOCK_HZ
    cycles = model.toggle_cycles()
    real = {"µs per WP toggle": round(t_toggle * 1e6, 3),
            "µs per same-value CR0 write": round(t_same * 1e6, 3),
            "µs toggle minus same-value write": round((t_toggle - t_same) * 1e6, 3)}
    want = {"cycles per toggle": round(cycles),
            f"µs at the model's {CLOCK_HZ / 1e9:.1f} GHz": round(cycles / CLOCK_HZ * 1e6, 3)}
    return [Case("toggle_cost", f"{n} toggles, median of {repeats}",
                 real, want, "measured",
                 "host-specific: this host's time, not the published vmexit.flat benchmark; "
                 f"the model prices a {model.kind} MMU with its calibrated constants "
                 f"(vendor {model.vendor}, {CLOCK_HZ / 1e9:.1f} GHz assumed)")]


EXPERIMENTS = {"roles": roles, "wp_toggles": wp_toggles, "cr3_round_robin": cr3_round_robin,
               "pf_error_codes": pf_error_codes, "cpl3_shadow_tree": cpl3_shadow_tree,
               "toggle_cost": toggle_cost}


def run_experiments(host: Host, model: Model, backend: Backend, names=None) -> list[Case]:
    names = list(EXPERIMENTS) if names is None else list(names)
    for n in names:
        if n not in EXPERIMENTS:
            raise ValueError(f"experiment {n!r}: allowed {tuple(EXPERIMENTS)}")
    cases: list[Case] = []
    for n in names:
        cases += EXPERIMENTS[n](host, model, backend)
    return cases
