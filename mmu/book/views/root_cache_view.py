"""Chapter 6, the root cache: a guest trace run through the vCPU model, one row per step
with the outcome of the root lookup and the 1 + 3 root slots (``mmu->root`` and
``mmu->prev_roots[0..2]``, most recently used first) after the step.

Pure functions: :func:`root_cache_timeline` builds a guest (page tables for N processes,
64-bit or PAE), boots a :class:`mmu.kvm.vcpu.VCpu` of the chosen kernel era and MMU kind, runs a
round-robin of CR3 loads (:func:`mmu.book.workloads.context_switches`) and records what the
vCPU reports; :func:`trace_steps` does the recording for any list of guest operations (the
nested chapter uses it for SMM and VM entries); :func:`render_timeline` draws the result.

Each step's outcome is read from the vCPU's counters and events (``prev_root_hits``,
``roots_created``, ``roots_reused``, the ``fast_pgd_switch`` event naming the slot), never
recomputed here.
"""
from __future__ import annotations

import dataclasses
import re
import textwrap
from collections import Counter
from typing import Callable, Sequence

from mmu.kvm.eras import ERA_NAMES
from mmu.x86.memory import GuestMemory
from mmu.x86.pagetable import PageTableBuilder
from mmu.x86.regs import CR0
from mmu.kvm.root_cache import RootInfo
from mmu.kvm.vcpu import MMU_KINDS, VENDORS, VCpu
from mmu.book.workloads import context_switches
from mmu.book.views.common import Table, View, bullet_html, bullet_text, esc, wrap_html
from mmu.book.sources import cite

__all__ = ["GUESTS", "OUTCOMES", "Step", "Timeline", "build_guest", "trace_steps",
           "root_cache_timeline", "render_timeline", "slot_row", "render_era_comparison",
           "wp_pair_totals", "legend", "wrap_notes", "TEXT_WIDTH"]

GUESTS = ("64-bit", "PAE")

#: Outcome keys and the words the view prints (symbol + word, never colour alone).
OUTCOMES = {
    "start": "· start: the booted guest's first root",
    "no-exit": "– no VM exit: the write never reaches KVM",
    "current-hit": "✔ current root still usable",
    "prev-hit": "✔ prev_roots hit",
    "hash-hit": "✔ hash hit: the root's shadow page(s) found again in the per-VM hash",
    "tdp-reused": "✔ a live TDP root with this role reused",
    "new-root": "✘ new root built",
    "root-kept": "= exit: roles recomputed (kvm_init_mmu), root kept",
    "no-root-work": "= exit, but no root work",
    "gp": "#GP: the write faulted",
}
#: Short labels for totals and column headers.
SHORT = {"start": "· start", "no-exit": "– no exit", "current-hit": "✔ current root",
         "prev-hit": "✔ prev_roots hit", "hash-hit": "✔ hash hit",
         "tdp-reused": "✔ TDP root reused", "new-root": "✘ new root", "root-kept": "= root kept",
         "no-root-work": "= no root work", "gp": "#GP"}
#: Outcomes that follow a failed lookup or an unload, and the words put in front of them.
_AFTER = ("hash-hit", "tdp-reused", "new-root")
_PREFIX = {"miss": "✘ cache miss, ", "unload": "✘ all roots unloaded, "}
#: The same, short, for the table column (the legend under the table spells them out).
_SHORT_PREFIX = {"miss": "✘ miss, ", "unload": "✘ unloaded, "}
#: What the short words mean, printed under a table for the outcomes that occur in it.
_LEGEND = {"miss": "✘ miss = fast_pgd_switch found no usable root in current + prev_roots",
           "unload": "✘ unloaded = kvm_mmu_reset_context freed the current root and all "
                     "prev_roots (kvm_mmu_unload)"}
#: Text forms stay within a notebook's output width (as in the other chapters' views).
TEXT_WIDTH = 100

_SLOT_HIT = re.compile(r"fast_pgd_switch: (current root|prev_roots\[(\d)\]) hit")


@dataclasses.dataclass(frozen=True)
class Step:
    """One guest operation and what the MMU did."""

    index: int
    op: str                       # "MOV CR3 <- P2", "SMI", ...
    exited: bool
    outcome: str                  # a key of OUTCOMES
    slot: int | None              # prev_roots index of a hit
    slots: tuple[str, ...]        # current + 3 previous, labelled
    root_role: int                # root_role.word after the step
    events: tuple[str, ...]
    cause: str = ""               # "miss" (fast_pgd_switch found nothing), "unload", ""

    @property
    def outcome_text(self) -> str:
        text = OUTCOMES[self.outcome]
        if self.outcome == "prev-hit":
            return text.replace("prev_roots hit", f"prev_roots[{self.slot}] hit")
        return _PREFIX.get(self.cause, "") + text

    @property
    def short_text(self) -> str:
        """The outcome in a few words, for table cells (``✘ miss, ✔ hash hit``)."""
        short = SHORT[self.outcome]
        if self.outcome == "prev-hit":
            short = f"✔ prev_roots[{self.slot}] hit"
        return _SHORT_PREFIX.get(self.cause, "") + short


def legend(steps: Sequence[Step]) -> tuple[str, ...]:
    """What the short words of a table mean, for the outcomes and causes in ``steps``."""
    used = {s.outcome for s in steps}
    causes = {s.cause for s in steps if s.cause}
    return (tuple(_LEGEND[c] for c in ("miss", "unload") if c in causes)
            + tuple(OUTCOMES[k] for k in OUTCOMES if k in used and k != "start"))


def wrap_notes(notes: Sequence[str], width: int = TEXT_WIDTH) -> str:
    """Bullets wrapped to ``width`` columns (a static render does not wrap ``print``)."""
    return "\n".join(textwrap.fill(n, width, initial_indent="  * ", subsequent_indent="    ")
                     for n in notes)


@dataclasses.dataclass(frozen=True)
class Timeline:
    title: str
    steps: tuple[Step, ...]
    notes: tuple[str, ...] = ()

    def counts(self) -> Counter:
        """Outcomes of every step after the start."""
        return Counter(s.outcome for s in self.steps if s.outcome != "start")


def build_guest(guest: str, n_procs: int) -> tuple[GuestMemory, list[int]]:
    """Guest memory with one page table per process (each maps one 4 KiB page at GVA
    0x400000), and the processes' CR3 values.  PAE CR3s point at 32-byte PDPTs."""
    if guest not in GUESTS:
        raise ValueError(f"guest={guest!r}: allowed {GUESTS}")
    if isinstance(n_procs, bool) or not isinstance(n_procs, int) or not 1 <= n_procs <= 16:
        raise ValueError(f"n_procs={n_procs!r}: allowed an int in 1..16")
    mem = GuestMemory()
    cr3s = []
    for p in range(n_procs):
        b = PageTableBuilder(mem, "4-level" if guest == "64-bit" else "PAE",
                             table_base=0x1000_0000 + p * 0x10_0000)
        b.map(0x40_0000, 0x20_0000 + p * 0x1000, 0x1000)
        cr3s.append(b.cr3)
    return mem, cr3s


def slot_row(v: VCpu, names: dict[int, str], ids: dict[int, int]) -> tuple[str, ...]:
    """Labels of ``root`` and ``prev_roots[0..2]``: the process a root shadows (or
    "direct"), with a short root number ``r<n>`` (order of first appearance); "·" empty."""
    def label(r: RootInfo) -> str:
        if not r.valid:
            return "·"
        n = ids.setdefault(r.hpa, len(ids) + 1)
        who = names.get(r.pgd, "direct" if r.pgd == 0 else f"{r.pgd:#x}")
        return f"{who} r{n}"
    return tuple(label(r) for r in (v.root, *v.prev_roots))


def _classify(v: VCpu, before: Counter, events: Sequence, exited: bool, fault
              ) -> tuple[str, int | None, str]:
    """(outcome, prev_roots slot of a hit, cause) from the counters and events."""
    if fault is not None:
        return "gp", None, ""
    if not exited:
        return "no-exit", None, ""
    d = {k: v.stats[k] - before.get(k, 0) for k in v.stats}
    for e in events:
        m = _SLOT_HIT.match(e.func)
        if m:
            return ("current-hit", None, "") if m.group(2) is None else \
                ("prev-hit", int(m.group(2)), "")
    cause = "unload" if d.get("mmu_unloads", 0) else \
        "miss" if d.get("prev_root_misses", 0) else ""
    if d.get("roots_created", 0):
        return "new-root", None, cause
    if d.get("roots_reused", 0):
        return ("tdp-reused" if v.kind == "tdp" else "hash-hit"), None, cause
    if d.get("mmu_inits", 0) > d.get("init_early_returns", 0):
        return "root-kept", None, ""
    return "no-root-work", None, ""


def trace_steps(v: VCpu, ops: Sequence[tuple[str, Callable[[], object]]],
                names: dict[int, str]) -> tuple[Step, ...]:
    """Run ``ops`` (label, thunk returning a WriteResult or None) on ``v`` after recording
    its current slots as the start, re-entering the guest after each op."""
    ids: dict[int, int] = {}
    steps = [Step(0, "(booted)", False, "start", None, slot_row(v, names, ids),
                  v.root_role.word, ())]
    for i, (label, thunk) in enumerate(ops, 1):
        before = Counter(v.stats)
        mark = len(v.events)
        res = thunk()
        v.enter()
        events = v.events[mark:]
        exited = bool(getattr(res, "exited", True))
        outcome, slot, cause = _classify(v, before, events, exited,
                                         getattr(res, "fault", None))
        steps.append(Step(i, label, exited, outcome, slot, slot_row(v, names, ids),
                          v.root_role.word, tuple(str(e) for e in events), cause))
    return tuple(steps)


def root_cache_timeline(n_procs: int = 4, kernel: str = "6.4", mmu: str = "shadow",
                        guest: str = "64-bit", switches: int = 12, *, vendor: str = "intel",
                        wp_every: int = 0, seed: int = 0) -> Timeline:
    """A guest with ``n_procs`` processes switching round robin ``switches`` times.

    ``wp_every`` > 0 adds a KERNEXEC-style CR0.WP 1 -> 0 -> 1 pair after every
    ``wp_every``-th switch (chapter 7's workload in miniature): whether that empties the
    cache depends on the era, the MMU kind and the vendor."""
    if isinstance(wp_every, bool) or not isinstance(wp_every, int) or not 0 <= wp_every <= 64:
        raise ValueError(f"wp_every={wp_every!r}: allowed an int in 0..64 (0 = never)")
    if kernel not in ERA_NAMES:
        raise ValueError(f"kernel={kernel!r}: allowed {ERA_NAMES}")
    if mmu not in MMU_KINDS or vendor not in VENDORS:
        raise ValueError(f"mmu={mmu!r}, vendor={vendor!r}: allowed {MMU_KINDS}, {VENDORS}")
    mem, cr3s = build_guest(guest, n_procs)
    names = {c: f"P{p}" for p, c in enumerate(cr3s)}
    v = VCpu(mem, kernel=kernel, mmu=mmu, vendor=vendor)
    if guest == "64-bit":
        v.boot_long_mode(cr3=cr3s[0])
    else:
        v.boot_protected(pae=True, cr3=cr3s[0])
    v.enter()
    order = [(op.value - 0x100000) // 0x1000 for op in context_switches(seed, n_procs, switches)]
    ops = []
    for k, p in enumerate(order, 1):
        ops.append((f"MOV CR3 <- P{p}", (lambda c=cr3s[p]: v.set_cr3(c))))
        if wp_every and k % wp_every == 0:
            ops += [("MOV CR0: WP <- 0", lambda: v.set_cr0(v.regs.cr0 & ~int(CR0.WP))),
                    ("MOV CR0: WP <- 1", lambda: v.set_cr0(v.regs.cr0 | int(CR0.WP)))]
    steps = trace_steps(v, ops, names)
    title = (f"{guest} guest, {n_procs} processes round robin, Linux {kernel}, mmu={mmu} "
             f"({vendor})" + (f", WP pair every {wp_every} switches"
                              if wp_every else ""))
    notes = _notes(mmu, guest, n_procs)
    if wp_every:
        notes += ("A CR0.WP write that exits and reaches kvm_mmu_reset_context unloads the "
                  f"current root and all prev_roots ({cite('facts §4')}); with the TDP MMU before "
                  "6.4 the "
                  "freed root is rebuilt, with shadow pages it is found again in the hash.  "
                  "6.4 with TDP only re-runs kvm_init_mmu (01b31714bd90), and on Intel with "
                  "EPT the write does not even exit (fb509f76acc8).",)
    return Timeline(title, steps, notes)


def wp_pair_totals(kernel: str, mmu: str, vendor: str = "intel", *, n_procs: int = 4,
                   switches: int = 12, wp_every: int = 3) -> tuple[Counter, int]:
    """(outcome counts, number of steps that unloaded all roots) of a round robin with a
    CR0.WP pair after every ``wp_every``-th switch -- chapter 6's per-era checks."""
    t = root_cache_timeline(n_procs, kernel, mmu, switches=switches, vendor=vendor,
                            wp_every=wp_every)
    return t.counts(), sum(s.cause == "unload" for s in t.steps)


def _notes(mmu: str, guest: str, n: int) -> tuple[str, ...]:
    if mmu != "shadow":
        return (f"With EPT/NPT a MOV to CR3 does not exit ({cite('facts §3.2')}: kvm_set_cr3 runs only "
                "when CR3 loads are intercepted, i.e. under shadow paging); the root maps "
                "GPAs and serves every process.",)
    if guest == "PAE":
        return ("A PAE guest's shadow root is the per-vCPU pae_root page, which has no shadow "
                "page of its own: fast_pgd_switch frees it before searching, and it can never "
                "be found in prev_roots (is_root_usable needs a shadow page).  Every switch "
                "rebuilds the 4-entry root from the page directories' shadow pages, which the "
                "per-VM hash still holds.",)
    if n <= 4:
        return (f"{n} processes fit in 1 + 3 slots: after the first round every switch is a "
                f"prev_roots hit, always in the LRU slot prev_roots[{n - 2}] for round robin."
                if n > 1 else "One process: CR3 never changes, so kvm_set_cr3 has nothing to do.",)
    return (f"{n} processes do not fit in 1 + 3 slots: round robin always asks for the root "
            "that was just evicted (the worst case for LRU).  The shadow page itself "
            "survives in the per-VM hash, so kvm_mmu_load finds it again (hash hit) instead "
            "of rebuilding it.",)


def render_timeline(t: Timeline) -> View:
    """The steps as a table: op, exit, outcome, then the four slots [current | prev 0 1 2]."""
    if not isinstance(t, Timeline):
        raise TypeError(f"t must be a Timeline, not {type(t).__name__}")
    rows = tuple((str(s.index), s.op, "exit" if s.exited else "no exit", s.short_text,
                  *s.slots) for s in t.steps)
    classes = tuple("changed" if s.outcome in ("new-root", "hash-hit", "tdp-reused") else ""
                    for s in t.steps)
    table = Table(t.title, ("step", "guest op", "VM exit", "outcome", "current",
                            "prev[0]", "prev[1]", "prev[2]"), rows, classes)
    counts = t.counts()
    summary = [f"{n} x {SHORT[k]}" for k, n in sorted(counts.items())]
    misses = sum(1 for s in t.steps if s.cause == "miss")
    unloads = sum(1 for s in t.steps if s.cause == "unload")
    summary += [f"{misses} x ✘ cache miss", f"{unloads} x ✘ all roots unloaded"]
    strip = "\n".join(f"{s.index:>4}  [{s.slots[0]:^10}|{' '.join(f'{x:^8}' for x in s.slots[1:])}]"
                      f"  {s.short_text}" for s in t.steps)
    words = legend(t.steps)
    text = "\n".join([table.text(), "slots: current = mmu->root, prev[i] = prev_roots[i] "
                      "(most recently used first), after the step", "",
                      "outcomes:", wrap_notes(words), "",
                      "slots after each step  [current | prev_roots 0 1 2]:",
                      strip, "", textwrap.fill("totals: " + "; ".join(summary), TEXT_WIDTH),
                      "", wrap_notes(t.notes)])
    html = (table.html("root-timeline")
            + "<p>slots: current = mmu-&gt;root, prev[i] = prev_roots[i] (most recently used "
            "first), after the step</p><p>outcomes:</p>" + bullet_html(words)
            + f"<p>totals: {esc('; '.join(summary))}</p>" + bullet_html(t.notes))
    return View(text, wrap_html(html, "root-cache"))


def render_era_comparison(n_procs: int = 4, mmu: str = "shadow", guest: str = "64-bit",
                          switches: int = 12, *, wp_every: int = 0, vendor: str = "intel"
                          ) -> View:
    """Outcome totals of the same trace on every kernel era (rows) -- the fast PGD switch
    is the same code in 5.18 and 6.4 (facts §5); 5.15 differs only in recomputing the role
    it looks for from the registers (``kvm_mmu_calc_root_page_role``), same result here."""
    keys = [k for k in OUTCOMES if k != "start"]
    per_era, seen = {}, set()
    for kernel in ERA_NAMES:
        tl = root_cache_timeline(n_procs, kernel, mmu, guest, switches, vendor=vendor,
                                 wp_every=wp_every)
        per_era[kernel] = (tl.counts(), Counter(s.cause for s in tl.steps if s.cause))
        seen |= set(per_era[kernel][0])
    cols = [k for k in keys if k in seen]
    rows = tuple((f"Linux {kernel}", *(str(c.get(k, 0)) for k in cols), str(why["miss"]),
                  str(why["unload"])) for kernel, (c, why) in per_era.items())
    wp = f", CR0.WP pair every {wp_every} switches" if wp_every else ""
    t = Table(f"mmu={mmu} ({vendor}), {guest} guest, {n_procs} processes, {switches} CR3 "
              f"loads{wp}: outcomes per era",
              ("kernel", *(SHORT[k] for k in cols), "✘ cache misses", "✘ unloads"), rows)
    return View(t.text(), wrap_html(t.html(), "root-cache-eras"))
