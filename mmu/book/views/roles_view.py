"""The role explorer (chapter 5): register bits in, cpu_role / root_role / root fate out.

Pure functions: :func:`explore` takes an :class:`ExplorerState` (the guest's CR0.PG/WP,
CR4.PAE/PSE/LA57/SMEP/SMAP/PKE, EFER.LME/NX, SMM, guest mode, TDP on/off, kernel era,
vendor, MMU kind) and the previous state, and returns an :class:`ExplorerResult`:

* ``cpu_role`` and ``root_role`` as the vCPU holds them after the change (named fields
  and raw words), the fields that changed, and which of the two roles changed;
* what happens to KVM's page-table root next -- no VM exit at all, an early return from
  ``init_kvm_tdp_mmu``/``shadow_mmu_init_context``, the root kept, a ``prev_roots`` hit,
  a shadow-page hash hit, a PAE root that takes no page (no guest PDPTE present), or a
  new root -- *as the vCPU model reports it*
  (:mod:`mmu.kvm.vcpu`: ``kvm_post_set_cr0``/``kvm_post_set_cr4``/``set_efer`` →
  ``kvm_mmu_reset_context``/``kvm_init_mmu`` → ``kvm_mmu_load``); nothing is recomputed
  here;
* for a state no CPU can reach (long mode without PAE, …), the #GP the guest's register
  write would take, instead of roles;
* for SMM together with guest mode, a pair KVM never has (:func:`never_in_kvm`: an SMI in
  L2 first exits to L1), a refusal that says why, instead of roles.

:func:`render` turns a result into a :class:`~mmu.book.views.common.View` (text + HTML with
CSS classes ``role-view`` and ``root-outcome``); :mod:`mmu.book.widgets` wraps it.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

from mmu.x86.regs import CR0, CR4, EFER, Regs, paging_mode
from mmu.book.views.common import (CHANGED, SAME, Table, View, bullet_html, bullet_text, changed_fields,
                     esc, hexword, marker, refused_block, role_field_table, wrap_html)

#: Kernel eras the explorer offers (presets of :mod:`mmu.kvm.eras`): the single mmu_role
#: (5.18), the split (5.19), the CR0.WP fixes (6.4) and today's LTS lines (6.12, 6.18).
KERNELS = ("5.18", "5.19", "6.4", "6.12", "6.18")
VENDORS = ("intel", "amd")

#: Checkbox fields of the state, with the label the widget shows.
FLAG_LABELS = {
    "cr0_pg": "CR0.PG", "cr0_wp": "CR0.WP",
    "cr4_pae": "CR4.PAE", "cr4_pse": "CR4.PSE", "cr4_la57": "CR4.LA57",
    "cr4_smep": "CR4.SMEP", "cr4_smap": "CR4.SMAP", "cr4_pke": "CR4.PKE",
    "cr4_cet": "CR4.CET",
    "efer_lme": "EFER.LME", "efer_nx": "EFER.NX",
    "smm": "SMM", "guest_mode": "guest mode (L2)", "tdp": "TDP (EPT/NPT)",
    "tdp_mmu": "TDP MMU (tdp_mmu=1)",
}


@dataclasses.dataclass(frozen=True)
class ExplorerState:
    """What the explorer's controls say.  Defaults: a booted 64-bit Linux guest (4-level
    paging, WP, NX, SMEP, SMAP) on a 6.4 host with EPT."""

    cr0_pg: bool = True
    cr0_wp: bool = True
    cr4_pae: bool = True
    cr4_pse: bool = True
    cr4_la57: bool = False
    cr4_smep: bool = True
    cr4_smap: bool = True
    cr4_pke: bool = False
    cr4_cet: bool = False
    efer_lme: bool = True
    efer_nx: bool = True
    smm: bool = False
    guest_mode: bool = False
    tdp: bool = True
    tdp_mmu: bool = True
    kernel: str = "6.4"
    vendor: str = "intel"

    def __post_init__(self) -> None:
        for name in FLAG_LABELS:
            v = getattr(self, name)
            if not isinstance(v, bool):
                raise TypeError(f"{name} must be a bool, not {type(v).__name__}")
        for name, allowed in (("kernel", KERNELS), ("vendor", VENDORS)):
            v = getattr(self, name)
            if v not in allowed:
                raise ValueError(f"{name}={v!r} is not allowed: one of {allowed}")

    def replace(self, **changes: Any) -> "ExplorerState":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown explorer control(s) {sorted(unknown)}: allowed "
                             f"{[f.name for f in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **changes)

    @property
    def mmu(self) -> str:
        """The vCPU's MMU kind (:data:`mmu.kvm.vcpu.MMU_KINDS`): ``"tdp"`` (EPT/NPT with the
        TDP MMU), ``"legacy"`` (EPT/NPT with tdp_mmu=0: direct roots are shadow pages in
        the hash) or ``"shadow"`` (no EPT/NPT; ``tdp_mmu`` does not matter)."""
        if not self.tdp:
            return "shadow"
        return "tdp" if self.tdp_mmu else "legacy"

    def host(self) -> tuple[str, str, str]:
        """(kernel, MMU kind, vendor): what a VM is created with; not a guest control."""
        return (self.kernel, self.mmu, self.vendor)

    @property
    def tdp_name(self) -> str:
        return ("EPT" if self.vendor == "intel" else "NPT") if self.tdp else "shadow paging"

    def regs(self) -> Regs:
        """The guest registers.  EFER.LMA is not a control: the CPU sets it to
        LME AND PG.  CR0.PE, ET and NE are always on (a protected-mode guest)."""
        cr0 = CR0.PE | CR0.ET | CR0.NE
        cr0 |= CR0.PG if self.cr0_pg else 0
        cr0 |= CR0.WP if self.cr0_wp else 0
        cr4 = CR4(0)
        for name, bit in (("cr4_pae", CR4.PAE), ("cr4_pse", CR4.PSE), ("cr4_la57", CR4.LA57),
                          ("cr4_smep", CR4.SMEP), ("cr4_smap", CR4.SMAP), ("cr4_pke", CR4.PKE),
                          ("cr4_cet", CR4.CET)):
            if getattr(self, name):
                cr4 |= bit
        efer = EFER.SCE
        efer |= EFER.LME if self.efer_lme else 0
        efer |= EFER.NXE if self.efer_nx else 0
        efer |= EFER.LMA if (self.efer_lme and self.cr0_pg) else 0
        return Regs(cr0=int(cr0), cr3=0x1000, cr4=int(cr4), efer=int(efer))

    def changes(self, other: "ExplorerState") -> list[str]:
        """Names of the controls that differ from ``other``."""
        return [f.name for f in dataclasses.fields(self)
                if getattr(self, f.name) != getattr(other, f.name)]


def cet_supported(kernel: str) -> bool:
    """Whether a guest of Linux ``kernel`` can set CR4.CET (KVM virtualizes CET from 6.18:
    :attr:`mmu.kvm.eras.Era.cet_virtualized`); the explorer enables its CR4.CET control
    only there."""
    from mmu.kvm.eras import era
    return era(kernel).cet_virtualized


def impossible(state: ExplorerState) -> str | None:
    """Why no vCPU of ``state``'s host can be in ``state`` (the #GP a guest would take
    getting there), or None.

    The paging rules are the SDM's (MOV to CR0/CR4, WRMSR to EFER), checked by
    :func:`mmu.x86.regs.paging_mode`; only their wording is adapted to the controls.  CR4.CET
    is refused where KVM reserves it (every kernel before 6.18), and CR4.CET=1 needs
    CR0.WP=1 (SDM Vol. 3A 2.5, the architectural rule that 6.18's ``kvm_set_cr0`` and
    ``kvm_set_cr4`` also enforce).
    """
    why = None
    try:
        paging_mode(state.regs())
    except ValueError as e:
        why = str(e)
    if why is None and state.cr4_cet and not cet_supported(state.kernel):
        why = (f"CR4.CET is a reserved bit for a Linux {state.kernel} guest (KVM virtualizes "
               f"CET from 6.18)")
    elif why is None and state.cr4_cet and not state.cr0_wp:
        why = "CR4.CET=1 needs CR0.WP=1 (clear CET before WP, set WP before CET)"
    if why is not None:
        return (f"#GP: {why}.  The guest's write that would reach this state faults, so "
                f"KVM never sees it and the roles stay as they were.")
    return None


def never_in_kvm(state: ExplorerState) -> str | None:
    """Why KVM never holds ``state`` although each register value is legal, or None.

    SMM with guest mode: an SMI in L2 first performs a nested VM-exit to L1 --
    ``vmx_enter_smm`` -> ``nested_vmx_vmexit``, ``svm_enter_smm`` ->
    ``nested_svm_simple_vmexit`` -- and ``kvm_smm_changed(true)`` runs after that, so
    smm=1 comes with guest_mode=0; RSM re-enters L2 only after ``kvm_smm_changed(false)``
    (``vmx_leave_smm``/``svm_leave_smm``).  Nor does SMM code launch L2: on VMX
    ``vmx_enter_smm`` leaves VMX operation (``nested.vmxon = false``), so VMLAUNCH is
    #UD; on SVM the SMM state has EFER=0, and VMRUN is #UD without EFER.SVME
    (``nested_svm_check_permissions``).  Facts §2.3: "SMM and guest_mode not both".
    (An SMM handler that sets EFER.SVME again and runs VMRUN is outside this explorer.)
    """
    if state.smm and state.guest_mode:
        return ("SMM together with guest mode: KVM never has smm=1 and guest_mode=1.  An "
                "SMI in L2 first exits to L1 (vmx_enter_smm / svm_enter_smm do a nested "
                "VM-exit) and only then sets smm=1; RSM re-enters L2 after smm=0 "
                "(vmx_leave_smm / svm_leave_smm); and SMM code cannot launch L2 (VMX: "
                "vmx_enter_smm leaves VMX operation, VMLAUNCH is #UD; SVM: SMM clears "
                "EFER.SVME, VMRUN is #UD).  Nothing changed: untick one of the two first.")
    return None


# ---- driving the vCPU model -----------------------------------------------------------

#: Outcome keys, in the words the view prints.  The key is chosen from what the vCPU
#: did (its events and counters), never from the roles.
OUTCOMES = {
    "start": "no change yet: flip a control to see what KVM does",
    "gp": "#GP: the guest's write faults; KVM changes nothing",
    "never": "refused: KVM never has this state (see below); nothing changed",
    "new-vm": "a different host set-up: a new VM and vCPU are created",
    "no-exit": "no VM exit at all: the guest's write never reaches KVM",
    "no-mmu-work": "VM exit, but no MMU role bit changed: roots untouched",
    "early-return": "early return: kvm_init_mmu finds both roles unchanged; root kept",
    "root-kept": "roles recomputed without unloading: the current root is kept",
    "prev-root-hit": "prev_roots hit: a cached root with this role is reused",
    "hash-hit": "hash hit: a root shadow page with this role is found in the per-VM hash",
    "root-reused": "a live TDP root with this role is reused",
    "no-root-pages": ("PAE root without root pages: no guest PDPTE is present, so no "
                      "shadow page is created or reused (pae_root holds 4 invalid entries)"),
    "new-root": "new root: KVM builds a fresh page-table root",
}

_CR0_ROLE = int(CR0.PG | CR0.WP)


def _boot(state: ExplorerState):
    """A vCPU of ``state``'s host, brought from reset to ``state``'s registers the way a
    kernel boots (CR0.PE, CR4, CR3, EFER, then CR0.PG), running, with its root loaded."""
    from mmu.kvm.vcpu import VCpu
    v = VCpu(kernel=state.kernel, mmu=state.mmu, vendor=state.vendor)
    regs = state.regs()
    base = int(CR0.PE | CR0.ET | CR0.NE)
    v.set_cr0(base)
    v.set_cr4(regs.cr4 & ~int(CR4.CET))     # CET only once CR0.WP is set, as a kernel does
    v.set_cr3(regs.cr3)
    v.set_efer(regs.efer & ~int(EFER.LMA))
    v.set_cr0(regs.cr0)
    if regs.cr4 & CR4.CET:
        v.set_cr4(regs.cr4)
    if state.guest_mode:
        v.nested_enter()            # L2 with the same registers (the roles' guest_mode bit)
    if state.smm:                   # never together with guest_mode (never_in_kvm)
        _set_smm(v, True)
    v.enter()
    if v.regs.cr0 != regs.cr0 or v.regs.cr4 != regs.cr4 or v.regs.efer != regs.efer:
        raise AssertionError(f"booting the vCPU to {state} gave {v!r}")   # a model bug
    return v


@functools.lru_cache(maxsize=256)
def _booted(state: ExplorerState):
    return _boot(state)


def _set_smm(v, smm: bool) -> None:
    """Flip is_smm() alone (``VCpu.kvm_smm_changed``); the register state an SMI
    loads (paging off) is not applied, so the explorer can show the smm bit alone."""
    v.kvm_smm_changed(smm)


def _writes(old: Regs, new: Regs) -> list[tuple[str, int]]:
    """The guest's register writes from ``old`` to ``new``.

    One register changed: that single write, exactly (so an illegal single write shows
    its #GP).  Several: the order a kernel uses -- paging off first if the paging
    structure changes under it, then EFER, CR4, and CR0 last; a CR4.CET change is its own
    write, first when CET is cleared and last when it is set."""
    cet = int(CR4.CET)
    if (old.cr4 ^ new.cr4) & cet:
        # CR4.CET=1 needs CR0.WP=1: a KERNEXEC-style kernel clears CET before anything
        # else and sets it after everything else (SDM Vol. 3A 2.5).
        if old.cr4 & cet:
            return [("cr4", old.cr4 & ~cet)] + _writes(old.replace(cr4=old.cr4 & ~cet), new)
        return _writes(old, new.replace(cr4=new.cr4 & ~cet)) + [("cr4", new.cr4)]
    changed = [r for r in ("cr0", "cr4", "efer") if getattr(old, r) != getattr(new, r)]
    new_efer = new.efer & ~int(EFER.LMA)
    if len(changed) <= 1:
        return [(r, new_efer if r == "efer" else getattr(new, r)) for r in changed]
    out: list[tuple[str, int]] = []
    if old.cr0 & CR0.PG:
        out.append(("cr0", old.cr0 & ~int(CR0.PG)))
    if old.efer & ~int(EFER.LMA) != new_efer:
        out.append(("efer", new_efer))
    if old.cr4 != new.cr4:
        out.append(("cr4", new.cr4))
    if not out or out[0] != ("cr0", new.cr0):
        out.append(("cr0", new.cr0))
    return out


@dataclasses.dataclass(frozen=True)
class ExplorerResult:
    """Everything the explorer shows for one change (see the module docstring)."""

    state: ExplorerState            # what the controls ask for
    effective: ExplorerState        # where the vCPU is now (== prev after a #GP/refusal)
    prev: ExplorerState
    cpu_role: Any                   # mmu.kvm.roles.CpuRole
    root_role: Any                  # mmu.kvm.roles.PageRole (5.18: mmu_role.base)
    prev_cpu_role: Any
    prev_root_role: Any
    outcome: str                    # a key of OUTCOMES
    fault: str | None               # the #GP explanation, if any
    writes: tuple[str, ...]         # the guest operations performed
    events: tuple[str, ...]         # the vCPU's events, kernel function names first
    stats: tuple[tuple[str, int], ...]   # counters that changed, with their increments
    notes: tuple[str, ...] = ()
    refused: str | None = None      # why KVM never holds ``state`` (:func:`never_in_kvm`)
    stale: str | None = None        # why KVM's cached cpu_role lags the one shown, if it does

    @property
    def cpu_changed(self) -> list[str]:
        """``["base.cr0_wp", ...]``: cpu_role fields that changed."""
        return [n for n, _, _ in changed_fields(self.cpu_role, self.prev_cpu_role)]

    @property
    def root_changed(self) -> list[str]:
        return [n for n, _, _ in changed_fields(self.root_role, self.prev_root_role)]

    @property
    def which_changed(self) -> str:
        """``"cpu_role and root_role"``, ``"cpu_role only"``, ``"root_role only"`` or
        ``"neither"``."""
        c, r = bool(self.cpu_changed), bool(self.root_changed)
        return {(True, True): "cpu_role and root_role", (True, False): "cpu_role only",
                (False, True): "root_role only", (False, False): "neither"}[(c, r)]

    @property
    def outcome_text(self) -> str:
        return OUTCOMES[self.outcome]


#: ``kvm_mmu_load`` event names (:meth:`mmu.kvm.vcpu.VCpu.kvm_mmu_load`) -> outcome keys.
_LOAD_EVENTS = {"kvm_mmu_load: created": "new-root", "kvm_mmu_load: reused": "root-reused",
                "kvm_mmu_load: hash hit": "hash-hit",
                "kvm_mmu_load: no PAE root pages": "no-root-pages"}


def _root_sources(events) -> list[str]:
    """Where each root the vCPU took during a change came from, in order: one outcome
    key per ``kvm_mmu_load`` (created / reused / hash hit / no PAE root pages) and per
    ``fast_pgd_switch`` hit (current root or ``prev_roots[i]``)."""
    out = []
    for e in events:
        if e.func in _LOAD_EVENTS:
            out.append(_LOAD_EVENTS[e.func])
        elif e.func.startswith("fast_pgd_switch: ") and e.func.endswith(" hit"):
            out.append("prev-root-hit")
    return out


def _classify(results, delta: dict[str, int], sources: list[str]) -> str:
    """The outcome key, from what the vCPU reported: its results, its counter increments
    and, for the root, the source of the *last* root it took (:func:`_root_sources`).

    The root's source is read from the load itself, not inferred from an unload: a load
    that took no page at all is the PAE special root of a guest without present PDPTEs
    ("kvm_mmu_load: no PAE root pages"), not a hash hit."""
    if any(r.fault is not None for r in results):
        return "gp"
    if results and not any(r.exited for r in results):
        return "no-exit"
    if sources:
        return sources[-1]
    inits = delta.get("mmu_inits", 0)
    if inits and inits == delta.get("init_early_returns", 0):
        return "early-return"
    if inits:
        return "root-kept"
    return "no-mmu-work"


def explore(state: ExplorerState, prev: ExplorerState | None = None) -> ExplorerResult:
    """What KVM does when the guest goes from ``prev`` to ``state`` (pure: the vCPUs it
    drives are private copies).  ``prev=None`` (or equal to ``state``) is the start."""
    if not isinstance(state, ExplorerState):
        raise TypeError(f"state must be an ExplorerState, not {type(state).__name__}")
    if prev is None:
        prev = state
    elif not isinstance(prev, ExplorerState):
        raise TypeError(f"prev must be an ExplorerState or None, not {type(prev).__name__}")
    why = impossible(prev) or never_in_kvm(prev)
    if why is not None:
        raise ValueError(f"prev must be a state a CPU can be in: {why}")
    base = _booted(prev)
    prev_cpu, prev_root = base.cpu_role, base.root_role

    def result(effective, v, outcome, fault=None, writes=(), events=(), delta=None, notes=(),
               refused=None, stale=None):
        return ExplorerResult(
            state=state, effective=effective, prev=prev,
            cpu_role=v.cpu_role, root_role=v.root_role,
            prev_cpu_role=prev_cpu, prev_root_role=prev_root, outcome=outcome, fault=fault,
            writes=tuple(writes), events=tuple(events),
            stats=tuple(sorted((delta or {}).items())), notes=tuple(notes), refused=refused,
            stale=stale)

    fault = impossible(state)
    if fault is not None:
        return result(prev, base, "gp", fault=fault)
    never = never_in_kvm(state)
    if never is not None:
        return result(prev, base, "never", refused=never)
    if state == prev:
        return result(state, base, "start")
    if state.host() != prev.host():
        v = _booted(state)
        return result(state, v, "new-vm", writes=[f"new VM: Linux {state.kernel}, "
                                                  f"mmu={state.mmu}, {state.vendor}"],
                      notes=["roles are compared with the previous VM's"])
    import copy
    v = copy.deepcopy(base)
    v.events = []
    before = dict(v.stats)
    results, writes = [], []
    if state.guest_mode != prev.guest_mode:
        results.append(v.nested_enter() if state.guest_mode else v.nested_exit())
        writes.append("VMLAUNCH/VMRUN into L2" if state.guest_mode else "exit from L2 to L1")
    if state.smm != prev.smm:
        _set_smm(v, state.smm)
        writes.append("SMI (enter SMM)" if state.smm else "RSM (leave SMM)")
    writers = {"cr0": v.set_cr0, "cr4": v.set_cr4, "efer": v.set_efer}
    for reg, value in _writes(v.regs, state.regs()):
        r = writers[reg](value)
        results.append(r)
        writes.append(f"MOV to {reg.upper()} {value:#x}" if reg != "efer"
                      else f"WRMSR EFER {value:#x}")
        if r.fault is not None:
            break
    delta = {k: v.stats[k] - before.get(k, 0) for k in v.stats
             if v.stats[k] != before.get(k, 0)}
    sources = _root_sources(v.events)
    outcome = _classify(results, delta, sources)
    events = [str(e) for e in v.events]
    notes = []
    if outcome in sources and len(sources) > 1:
        notes.append("on the way, with the intermediate register values, KVM also took: "
                     + ", ".join(OUTCOMES[k].split(":")[0] for k in sources[:-1])
                     + "; the outcome above is the root the vCPU runs on now")
    if outcome == "gp":
        f = next(r.fault for r in results if r.fault is not None)
        return result(prev, base, "gp", fault=f"#GP: {f.reason}.  The write faults, so "
                      f"the register keeps its old value and the roles stay as they were.",
                      writes=writes, events=events, delta=delta)
    stale = None
    if outcome == "no-exit" and v.kvm_mmu_refresh_passthrough_bits():
        # The write never reached KVM: the role shown is the one KVM computes later.
        stale = "stale until kvm_mmu_refresh_passthrough_bits (no exit; KVM refreshes it when needed)"
        events.append(f"(later) {v.events[-1].func}: {v.events[-1].detail}")
    return result(state, v, outcome, writes=writes, events=events, delta=delta,
                  notes=notes, stale=stale)


# ---- rendering ---------------------------------------------------------------------------

def _summary_rows(res: ExplorerResult) -> list[tuple[str, str]]:
    cpu_word = res.cpu_role.as_u64
    rows = [
        ("host", f"Linux {res.effective.kernel}, {res.effective.vendor}, "
                 f"{res.effective.tdp_name}" + (f", mmu={res.effective.mmu}")),
        ("cpu_role.as_u64", f"{hexword(res.prev_cpu_role.as_u64, 64)} -> {hexword(cpu_word, 64)}"
                            f"  {marker(res.prev_cpu_role.as_u64 != cpu_word)}"
                            + (" (the guest's; see next row)" if res.stale else "")),
        *([("  ⚠ KVM's copy", res.stale)] if res.stale else []),
        ("root_role.word", f"{hexword(res.prev_root_role.word)} -> {hexword(res.root_role.word)}"
                           f"  {marker(res.prev_root_role.word != res.root_role.word)}"),
        ("which role changed", res.which_changed),
    ]
    if res.writes:
        rows.insert(1, ("guest did", "; ".join(res.writes)))
    return rows


def _outcome_line(res: ExplorerResult) -> str:
    return f"Root: {res.outcome_text}"


def render(res: ExplorerResult, *, show_all_fields: bool = True) -> View:
    """Text and HTML of an :class:`ExplorerResult`.

    The HTML is one ``div.mmu-view.role-view`` holding a ``div.root-outcome``
    (``data-outcome`` = the outcome key), a summary table, the two role tables with a
    ``▲ changed`` / ``= same`` column, and the kernel functions that ran."""
    if not isinstance(res, ExplorerResult):
        raise TypeError(f"res must be an ExplorerResult, not {type(res).__name__}")
    only_cpu = only_root = None
    if not show_all_fields:
        only_cpu = set(res.cpu_changed) | {"base.level", "base.cr0_wp", "base.efer_nx"}
        only_root = set(res.root_changed) | {"level", "cr0_wp", "efer_nx", "direct"}
    summary = Table("Summary", ("what", "value"), tuple(_summary_rows(res)))
    era = res.effective.kernel       # 6.14+ kernels add the is_mirror row (always 0 here)
    cpu_t = role_field_table("cpu_role (the guest's paging format)", res.cpu_role,
                             res.prev_cpu_role, only=only_cpu, era=era)
    root_label = "root_role (KVM's root page)" if res.effective.kernel != "5.18" else \
        "mmu_role.base (5.18: root page role, mixed with CPU state)"
    root_t = role_field_table(root_label, res.root_role, res.prev_root_role, only=only_root,
                              era=era)
    outcome = _outcome_line(res)
    parts_text = [outcome]
    if res.fault:
        parts_text.append(res.fault)
    if res.refused:
        parts_text.append(res.refused)
    parts_text += [summary.text(), cpu_t.text(), root_t.text()]
    if res.events:
        parts_text.append("Kernel functions, in order:\n" + bullet_text(res.events))
    if res.notes:
        parts_text.append("Notes:\n" + bullet_text(res.notes))
    text = "\n\n".join(parts_text)

    html_parts = [f'<div class="root-outcome" data-outcome="{esc(res.outcome)}" role="status">'
                  f"<b>{esc(outcome)}</b></div>"]
    if res.fault:
        html_parts.append(f'<div class="gp" role="alert">{esc(res.fault)}</div>')
    if res.refused:
        html_parts.append(refused_block(res.refused)[1])
    html_parts.append("<div>" + summary.html("summary") + "</div>")
    html_parts.append("<div>" + cpu_t.html("cpu-role") + root_t.html("root-role") + "</div>")
    if res.events:
        html_parts.append("<details><summary>Kernel functions, in order</summary>"
                          + bullet_html(res.events) + "</details>")
    if res.notes:
        html_parts.append(bullet_html(res.notes))
    return View(text=text, html=wrap_html("".join(html_parts), "role-view"))
