"""Chapter 7, the CR0.WP story: what one guest CR0.WP toggle costs in each kernel era, MMU
kind and vendor, and the cost model beside the published figures.

* :func:`toggle` runs a booted 64-bit guest on a :class:`mmu.kvm.vcpu.VCpu` and toggles CR0.WP;
  the counts per toggle and the events of one toggle are the vCPU's own
  (``kvm_post_set_cr0``, ``kvm_mmu_reset_context``, ``kvm_init_mmu``, ``kvm_mmu_load`` ...).
* :func:`render_counts` tabulates them over eras x MMU kinds x vendors.
* :func:`render_vmexit` and :func:`render_ssdd` put :mod:`mmu.book.cost` beside Paolo Bonzini's
  ``vmexit.flat`` cycles and Mathias Krause's ``ssdd`` seconds (facts §4, §9) as a table and
  an SVG figure (hatching and markers, not only colour, tell model from published).
* :func:`refresh_demo` shows the 6.4 fix "Refresh CR0.WP prior to checking for emulated
  permission faults" on the vCPU model.

Nothing here computes a cost or a role: those come from :mod:`mmu.book.cost` and :mod:`mmu.kvm.vcpu`.
"""
from __future__ import annotations

import dataclasses
import textwrap
from collections import Counter

from mmu.kvm.eras import Era, era as make_era
from mmu.x86.regs import CR0
from mmu.book.sources import cite
from mmu.book.views import svg
from mmu.book.views.common import Table, View, bullet_html, bullet_text, esc, wrap_html
from mmu.book.views.root_cache_view import TEXT_WIDTH, wrap_notes

__all__ = ["STORY_KERNELS", "COUNT_COLUMNS", "ToggleResult", "toggle", "render_toggle",
           "WindowResult", "kernexec_window", "render_windows",
           "render_counts", "render_vmexit", "render_ssdd", "render_changes",
           "refresh_demo", "SSDD_FIGURE_ROWS", "CALIBRATED_VMEXIT", "CALIBRATED_SSDD",
           "ratio_errors", "short_row", "short_config"]

STORY_KERNELS = ("5.15", "5.18", "5.19", "6.1", "6.4", "6.12", "6.18")

#: (vCPU counter, column label).  "kvm_init_mmu rebuilds" excludes early returns.
COUNT_COLUMNS = (("vm_exits", "VM exits"), ("mmu_resets", "reset_context"),
                 ("mmu_unloads", "unloads"), ("inits_rebuilt", "init rebuilds"),
                 ("init_early_returns", "init early returns"),
                 ("roots_created", "roots built"), ("roots_reused", "roots found again"))
#: Narrow headers for the all-configurations table, and what each means (printed below it).
SHORT_COLUMNS = (("exits", "VM exits"), ("resets", "kvm_mmu_reset_context calls"),
                 ("unloads", "kvm_mmu_unload calls (all roots freed)"),
                 ("inits", "kvm_init_mmu runs that rebuilt the MMU context"),
                 ("early", "kvm_init_mmu runs that returned early (roles unchanged)"),
                 ("built", "roots built from scratch"),
                 ("found", "roots found again (per-VM hash or a live TDP root)"))


#: Verdict of one toggle configuration: (sentence, short form for table cells).
VERDICTS = {
    "no-exit": ("no VM exit: CR0.WP is guest-owned (VMX with EPT, 6.4)", "– no exit"),
    "reset-new": ("exit + kvm_mmu_reset_context: all roots unloaded, a new root built",
                  "✘ reset, rebuilt"),
    "reset-found": ("exit + kvm_mmu_reset_context: all roots unloaded, the root found again",
                    "✘ reset, found"),
    "reset": ("exit + kvm_mmu_reset_context: all roots unloaded, no root", "✘ reset"),
    "init-only": ("exit + kvm_init_mmu only: roots kept", "= init only"),
}


@dataclasses.dataclass(frozen=True)
class ToggleResult:
    kernel: str
    mmu: str
    vendor: str
    per_toggle: dict[str, float]     # counter -> mean per CR0.WP write
    events: tuple[str, ...]          # the vCPU's events for one WP 1 -> 0 write
    root_role: tuple[int, int] = (0, 0)   # root_role.word before and after WP 1 -> 0

    @property
    def root_role_change(self) -> str:
        a, b = self.root_role
        return f"{a:#x} -> {b:#x} ▲ changed" if a != b else f"{a:#x} = same"

    def _verdict(self) -> str:
        """A key of VERDICTS, from the counts."""
        c = self.per_toggle
        if not c.get("vm_exits"):
            return "no-exit"
        if c.get("mmu_unloads"):
            return ("reset-new" if c.get("roots_created", 0) >= 1 else
                    "reset-found" if c.get("roots_reused") else "reset")
        return "init-only"

    @property
    def summary(self) -> str:
        """One line in words, from the counts."""
        return VERDICTS[self._verdict()][0]

    @property
    def short_summary(self) -> str:
        """The verdict in a few words, for a table cell."""
        return VERDICTS[self._verdict()][1]

    @property
    def short_role_change(self) -> str:
        a, b = self.root_role
        return f"{a:#x}->{b:#x} ▲" if a != b else f"{a:#x} ="


def toggle(kernel: "str | Era" = "6.4", mmu: str = "tdp", vendor: str = "intel", *,
           toggles: int = 8) -> ToggleResult:
    """A booted 64-bit guest (WP=1) writes CR0 ``toggles`` times, flipping only WP, after
    one warm-up pair; counters are averaged per write (steady state, one vCPU)."""
    from mmu.kvm.vcpu import VCpu
    if isinstance(toggles, bool) or not isinstance(toggles, int) or not 2 <= toggles <= 1000:
        raise ValueError(f"toggles={toggles!r}: allowed an even int in 2..1000")
    if toggles % 2:
        raise ValueError(f"toggles={toggles}: allowed an even number (pairs WP 1->0->1)")
    v = VCpu(kernel=kernel, mmu=mmu, vendor=vendor)
    v.boot_long_mode(cr3=0x100000)
    v.enter()
    wp_off, wp_on = v.regs.cr0 & ~int(CR0.WP), v.regs.cr0 | int(CR0.WP)
    writes = [(v.set_cr0, wp_off), (v.set_cr0, wp_on)]
    per, first, words = _per_round(v, writes, toggles // 2)
    per = {k: x / 2 for k, x in per.items()}        # per write, not per WP 1->0->1 pair
    name = kernel.name if isinstance(kernel, Era) else kernel
    return ToggleResult(name, mmu, vendor, per, first, words)


def _per_round(v, writes, rounds: int) -> tuple[dict[str, float], tuple[str, ...],
                                                 tuple[int, int]]:
    """Run the guest writes ``writes`` (``(vcpu method, value)``, each followed by a guest
    entry) once as a warm-up -- the roots a round needs exist afterwards if they ever
    will -- then ``rounds`` times more.  Returns the vCPU's counters per round
    (:data:`COUNT_COLUMNS`), the events of the first write of the first counted round, and
    root_role.word before and after that write."""
    for write, value in writes:
        write(value)
        v.enter()
    before = Counter(v.stats)
    first, word0, word1 = None, v.root_role.word, None
    for _ in range(rounds):
        for write, value in writes:
            res = write(value)
            v.enter()
            if first is None:
                first, word1 = tuple(str(e) for e in res.events), v.root_role.word
    d = {k: v.stats[k] - before.get(k, 0) for k in v.stats}
    d["inits_rebuilt"] = d.get("mmu_inits", 0) - d.get("init_early_returns", 0)
    return ({k: d.get(k, 0) / rounds for k, _ in COUNT_COLUMNS}, first or (), (word0, word1))


@dataclasses.dataclass(frozen=True)
class WindowResult:
    """One KERNEXEC-style window (open: CR4.CET <- 0 if CET is on, CR0.WP <- 0; close:
    CR0.WP <- 1, CR4.CET <- 1) on one kernel, MMU kind and vendor."""

    kernel: str
    mmu: str
    vendor: str
    cet: bool                        # the guest runs with CR4.CET=1 outside the window
    writes: tuple[str, ...]          # the guest's writes of one window, in order
    per_window: dict[str, float]     # counter -> per window (steady state, one vCPU)
    events: tuple[str, ...]          # the vCPU's events of the window's first write
    faults: int                      # #GP results over the counted windows (0 expected)


def kernexec_window(kernel: "str | Era" = "6.18", mmu: str = "tdp", vendor: str = "intel", *,
                    windows: int = 4) -> WindowResult:
    """A booted 64-bit guest opens and closes ``windows`` KERNEXEC windows (after one
    warm-up), as grsecurity's ``pax_open_kernel``/``pax_close_kernel`` do on a CET-enabled
    kernel: CR4.CET must be cleared before CR0.WP can be (SDM Vol. 3A 2.5), so the window
    is CET off, WP off, (the write), WP on, CET on.  Where the kernel does not let a guest
    enable CET (every era before 6.18: CR4.CET is reserved), the guest runs without it and
    the window is WP off, WP on -- the chapter's 6.4 window."""
    from mmu.kvm.vcpu import VCpu
    from mmu.x86.regs import CR4
    if isinstance(windows, bool) or not isinstance(windows, int) or not 1 <= windows <= 500:
        raise ValueError(f"windows={windows!r}: allowed an int in 1..500")
    v = VCpu(kernel=kernel, mmu=mmu, vendor=vendor)
    v.boot_long_mode(cr3=0x100000)
    cet = v.era.cet_virtualized
    if cet:
        v.set_cr4(v.regs.cr4 | int(CR4.CET))      # the kernel turns CET on once WP is set
    v.enter()
    cr0, cr4 = v.regs.cr0, v.regs.cr4
    wp_off, wp_on = cr0 & ~int(CR0.WP), cr0 | int(CR0.WP)
    writes = [(v.set_cr0, wp_off), (v.set_cr0, wp_on)]
    names = ["CR0.WP <- 0", "CR0.WP <- 1"]
    if cet:
        writes = [(v.set_cr4, cr4 & ~int(CR4.CET)), *writes, (v.set_cr4, cr4)]
        names = ["CR4.CET <- 0", *names, "CR4.CET <- 1"]
    gp = v.stats["gp_faults"]
    per, first, _ = _per_round(v, writes, windows)
    name = kernel.name if isinstance(kernel, Era) else kernel
    return WindowResult(name, mmu, vendor, cet, tuple(names), per, first,
                        v.stats["gp_faults"] - gp)


def render_windows(kernels=("6.4", "6.18"), mmus=("tdp", "legacy", "shadow"),
                   vendors=("intel", "amd")) -> View:
    """Work per KERNEXEC window, 6.4 (WP only) beside 6.18 (CET and WP), for every MMU
    kind and vendor."""
    rows = []
    for m in mmus:
        for ven in vendors:
            for k in kernels:
                r = kernexec_window(k, m, ven)
                rows.append((f"{k} {m} {ven}", "CET+WP" if r.cet else "WP only",
                             *(_fmt(r.per_window[c]) for c, _ in COUNT_COLUMNS), str(r.faults)))
    t = Table("Work per KERNEXEC window (steady state, one vCPU; from the vCPU model)",
              ("kernel MMU vendor", "window", *(h for h, _ in SHORT_COLUMNS), "#GP"),
              tuple(rows))
    legend = ["window: WP only = CR0.WP <- 0, CR0.WP <- 1 (no CET before 6.18); CET+WP = "
              "CR4.CET <- 0, CR0.WP <- 0, CR0.WP <- 1, CR4.CET <- 1"] + \
        [f"{h} = {what}" for h, what in SHORT_COLUMNS] + \
        ["#GP = faults over the counted windows (the order above never faults)"]
    text = t.text() + "\n\ncolumns:\n" + wrap_notes(legend)
    return View(text, wrap_html(t.html() + "<p>columns:</p>" + bullet_html(legend),
                                "kernexec-windows"))


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.2f}"


def render_toggle(r: ToggleResult) -> View:
    """One configuration: counts per toggle and the events of one CR0.WP write."""
    if not isinstance(r, ToggleResult):
        raise TypeError(f"r must be a ToggleResult, not {type(r).__name__}")
    t = Table(f"Per CR0.WP write: Linux {r.kernel}, mmu={r.mmu}, {r.vendor}",
              ("counter", "per toggle"),
              tuple((label, _fmt(r.per_toggle[k])) for k, label in COUNT_COLUMNS))
    ev = list(r.events) or ["(no events: the write never reached KVM)"]
    text = "\n".join([t.text(), "", f"root_role.word on WP 1 -> 0: {r.root_role_change}",
                      f"verdict: {r.summary}", "",
                      "events of one WP 1 -> 0 write:", bullet_text(ev)])
    html = (t.html() + f"<p>root_role.word on WP 1 -> 0: {esc(r.root_role_change)}</p>"
            + f'<p class="story-verdict">verdict: {esc(r.summary)}</p>'
            + "<p>events of one WP 1 -> 0 write:</p>" + bullet_html(ev))
    return View(text, wrap_html(html, "cr0wp-toggle"))


def render_counts(kernels=STORY_KERNELS, mmus=("tdp", "legacy", "shadow"),
                  vendors=("intel", "amd")) -> View:
    """Counts per CR0.WP toggle for every era x MMU kind x vendor."""
    rows = []
    for k in kernels:
        for m in mmus:
            for ven in vendors:
                r = toggle(k, m, ven)
                rows.append((f"{k} {m} {ven}", *(_fmt(r.per_toggle[c]) for c, _ in COUNT_COLUMNS),
                             r.short_role_change, r.short_summary))
    t = Table("Work per guest CR0.WP toggle (steady state, one vCPU; from the vCPU model)",
              ("kernel MMU vendor", *(h for h, _ in SHORT_COLUMNS), "root_role WP 1->0",
               "verdict"), tuple(rows))
    legend = [f"{h} = {what}" for h, what in SHORT_COLUMNS] + [
        "root_role WP 1->0: the root role's word before -> after (▲ changed) or = same",
        "verdict: – no exit (WP guest-owned: VMX with EPT, 6.4); ✘ reset = exit + "
        "kvm_mmu_reset_context, all roots unloaded, then the root rebuilt (built) or found "
        "again (found); "
        "= init only = exit + kvm_init_mmu, roots kept (6.4 with TDP)"]
    text = t.text() + "\n\ncolumns:\n" + wrap_notes(legend)
    return View(text, wrap_html(t.html() + "<p>columns:</p>" + bullet_html(legend),
                                "cr0wp-counts"))


# ---- the cost model beside the published figures -----------------------------------------------

#: The published vmexit.flat figures :mod:`mmu.book.cost` was fitted on, as (MMU, "before"/"after")
#: -- the constants' ``status`` in ``mmu.book.cost.CONSTANTS`` names each of them; the rest are
#: held out.
CALIBRATED_VMEXIT = frozenset({("tdp", "before"), ("tdp", "after"), ("legacy", "before")})


def render_vmexit(vendor: str = "intel") -> View:
    """Paolo's vmexit.flat cycles per CR0.WP toggle, before/after, beside the model.

    The figure tells published from model by hatching and hollow vs filled markers, and
    before from after by marker shape (▲ before, ▼ after) -- colour only repeats it."""
    from mmu.book import cost
    rows, data = [], []
    for kind, (pb, pa) in cost.PUBLISHED_VMEXIT.items():
        mb = cost.vmexit_cycles_per_toggle(cost.VMEXIT_CONFIGS["before"], kind, vendor)
        ma = cost.vmexit_cycles_per_toggle(cost.VMEXIT_CONFIGS["after"], kind, vendor)
        fit = "/".join("fit" if (kind, w) in CALIBRATED_VMEXIT else "held out"
                       for w in ("before", "after"))
        rows.append((kind, str(pb), f"{mb:.0f}", str(pa), f"{ma:.0f}", f"{pb / pa:.2f}",
                     f"{mb / ma:.2f}", fit))
        data.append((kind, pb, mb, pa, ma))
    t = Table(f"vmexit.flat cycles per CR0.WP toggle, Paolo Bonzini {cite('[ROOTS-v2-18]')} "
              "vs model",
              ("MMU", "pub. before", "model", "pub. after", "model", "pub. ratio",
               "model ratio", "before/after"), tuple(rows))
    styles = [("published before", 1, "#4c72b0", "", "^", False),
              ("model before", 2, "#4c72b0", "//", "^", True),
              ("published after", 3, "#dd8452", "", "v", False),
              ("model after", 4, "#dd8452", "//", "v", True)]
    c = svg.Canvas(760, "vmexit.flat CR0.WP: before vs after not unloading roots -- "
                   "published: plain bars, hollow markers; model: hatched bars, filled markers",
                   "Cycles per CR0.WP toggle, log scale, for the TDP MMU, the legacy MMU and "
                   "shadow paging: " + "; ".join(
                       f"{d[0]} published {d[1]} before, {d[3]} after, model {d[2]:.0f} "
                       f"before, {d[4]:.0f} after" for d in data) + ".", "cr0wp-vmexit-figure")
    c.top += 10
    svg.bars(c, 100, c.top, 620, 240, [d[0] for d in data],
             [svg.Series(label, tuple(d[col] for d in data), color, hatch, shape, filled)
              for label, col, color, hatch, shape, filled in styles],
             ylabel="cycles per CR0.WP toggle (log scale)",
             xlabel="MMU (tdp = TDP MMU, legacy = EPT with tdp_mmu=0, shadow = no EPT)",
             log=True)
    fig = c.figure()
    note = ("units presumed cycles (UNVERIFIED). Fitted (calibrated): tdp before and after, "
            "legacy before; held out: legacy after, shadow before and after (mmu.book.cost).")
    return View(t.text() + "\n" + textwrap.fill(note, TEXT_WIDTH),
                wrap_html(t.html() + f"<p>{esc(note)}</p>" + fig.svg, "cr0wp-vmexit"))


#: Rows of Mathias's table drawn in the figure (the v4 cover and the stable backports).
SSDD_FIGURE_ROWS = ("kvm-x86/next@d8708b", "kvm-x86/next@d8708b + patches 1-3",
                    "kvm-x86/next@d8708b + patches 4-6", "v5.15.106", "v5.15.106 + patches",
                    "v6.1.23", "v6.1.23 + patches")


#: Published ssdd cells (row, MMU column) the model was fitted on; every other cell and
#: every change between rows is held out.  Named in ``mmu.book.cost.CONSTANTS``' statuses
#: (the 5.15.106 TDP cell through the TDP - legacy gap, ``ROOT_REBUILD['ssdd']``).
CALIBRATED_SSDD = frozenset({
    ("kvm-x86/next@d8708b", "legacy"), ("kvm-x86/next@d8708b + patches 1-3", "legacy"),
    ("kvm-x86/next@d8708b + patches 4-6", "legacy"),
    ("kvm-x86/next@d8708b + patches 4-6", "shadow"), ("v5.15.106", "tdp")})

#: Short names for the era flags in the "modelled as" column (legend printed below).
FLAG_LETTERS = (("efer_lme_resets", "L"), ("tdp_root_preserved", "T"),
                ("cr0_wp_tdp_no_unload", "N"), ("ignore_wp_nonpaging", "P"),
                ("cr0_wp_guest_owned", "G"), ("wp_refresh_in_permission_fault", "R"))
_FLAG_MEANING = {"L": "EFER.LME resets the MMU (d6174299365d)",
                 "T": "TDP roots preserved until invalidated (edbdb43fc96b)",
                 "N": "no unload on WP-only toggles with TDP (01b31714bd90)",
                 "P": "WP toggles ignored with paging off (e40bcf9f3a18)",
                 "G": "WP guest-owned on VMX with EPT (fb509f76acc8)",
                 "R": f"WP refreshed in permission_fault ({cite('[SC-REFRESH]')})"}


def short_row(row: str) -> str:
    """A published row's name, shortened for tables and tick labels."""
    return row.replace("kvm-x86/next@d8708b", "next@d8708b")


def short_config(name: str) -> str:
    """``6.1+cr0_wp_tdp_no_unload+...`` -> ``6.1 +N+P+G+R`` (letters of FLAG_LETTERS)."""
    base, *flags = name.split("+")
    letters = dict(FLAG_LETTERS)
    return base + (" +" + "+".join(letters.get(f, f) for f in flags) if flags else "")


def _fit(row: str, column: str) -> bool:
    return (row, column) in CALIBRATED_SSDD


def render_ssdd(rows=SSDD_FIGURE_ROWS, vendor: str = "intel") -> View:
    """Mathias's ``ssdd 10 50000`` seconds beside the model, per row and MMU column.

    Published cells the model was fitted on carry a ``*``.  In the figure, the MMU is told
    by marker shape (■ legacy, ▲ tdp, ◆ shadow) and published vs model by plain bars with
    hollow markers vs hatched bars with filled markers; colour only repeats it."""
    from mmu.book import cost
    table_rows, series = [], {c: ([], []) for c in cost.COLUMNS}
    used = set()
    for row in rows:
        pub = cost.PUBLISHED_SSDD[row]
        cells = []
        for i, kind in enumerate(cost.COLUMNS):
            m = cost.ssdd_seconds(cost.SSDD_CONFIGS[row], kind, vendor)
            p = pub[i]
            cells += ["–" if p is None else f"{p:.2f}" + ("*" if _fit(row, kind) else ""),
                      f"{m:.2f}"]
            series[kind][0].append(p)
            series[kind][1].append(m)
        config = short_config(cost.SSDD_CONFIGS[row].name)
        used |= set(config.split(" +")[1].split("+")) if " +" in config else set()
        table_rows.append((short_row(row), config, *cells))
    head = ["published row", "modelled as"]
    for c in cost.COLUMNS:
        head += [c, "(model)"]
    t = Table(f"ssdd 10 50000, seconds (lower is better), Mathias Krause "
              f"{cite('facts §9')}", tuple(head), tuple(table_rows))
    legend = ["each MMU column: the published seconds, then the model's; * = a figure the "
              "model was fitted on (calibrated), every other figure is held out",
              "next@d8708b = kvm-x86/next@d8708b (the v4 cover letter's base)",
              "modelled as: a kernel era of mmu.kvm.eras plus flags: " + "; ".join(
                  f"{k} = {_FLAG_MEANING[k]}" for _, k in FLAG_LETTERS if k in used)]
    colors = {"legacy": "#4c72b0", "tdp": "#55a868", "shadow": "#999999"}
    markers = {"legacy": "s", "tdp": "^", "shadow": "D"}
    short = [short_row(r).replace(" + patches", " +p") for r in rows]
    c = svg.Canvas(1000, "ssdd 10 50000: published (plain bars, hollow markers) vs model "
                   "(hatched bars, filled markers)",
                   "Seconds per run (lower is better) for each published row: "
                   + "; ".join(f"{kind} published " + ", ".join(
                       "none" if p is None else f"{p:g}" for p in series[kind][0])
                       + f"; {kind} model " + ", ".join(f"{m:.2f}" for m in series[kind][1])
                       for kind in cost.COLUMNS) + ".", "cr0wp-ssdd-figure")
    c.top += 24

    for x, w, kinds, subtitle in ((90, 560, ("legacy", "tdp"), "legacy and TDP MMU"),
                                  (740, 240, ("shadow",), "shadow paging (no EPT)")):
        svg.bars(
            c, x, c.top, w, 260, short,
            [svg.Series(f"{kind} {what}", tuple(series[kind][k]), colors[kind], hatch,
                        markers[kind], filled)
             for kind in kinds
             for k, hatch, filled, what in ((0, "", False, "published"), (1, "//", True, "model"))],
            ylabel="seconds (lower is better)", subtitle=subtitle, rotate_groups=True,
            xlabel="published row (+p = with the CR0.WP patches)")
    fig = c.figure()
    text = t.text() + "\n" + wrap_notes(legend)
    return View(text, wrap_html(t.html() + bullet_html(legend) + fig.svg, "cr0wp-ssdd"))


def render_changes(vendor: str = "intel") -> View:
    """Every published "+ patches" step per column: direction and ratio, model beside it.

    The ``fit`` column says whether the step's two published figures were used to fit
    the model (``calibrated``: no evidence), one of them (``partly``) or neither
    (``held out``: a real test)."""
    from mmu.book import cost
    rows, classes = [], []
    for ch in cost.ssdd_changes(vendor):
        same = ch.model_direction == ch.published_direction
        n_fit = _fit(ch.before, ch.column) + _fit(ch.after, ch.column)
        label = f"{short_row(ch.before)} -> + {ch.after.split(' + ')[-1]}"
        rows.append((label.replace("patches ", "p"), ch.column,
                     f"{ch.published_ratio:.2f}x {ch.published_direction}",
                     f"{ch.model_ratio:.2f}x {ch.model_direction}",
                     "✔ same" if same else "✘ opposite",
                     ("held out", "partly", "calibrated")[n_fit],
                     "–" if ch.published_direction == "no change" else f"{ch.ratio_error:.2f}"))
        classes.append("" if same else "changed")
    t = Table("Each published change (before/after time ratio) and the model's",
              ("change", "MMU", "published", "model", "direction", "fit", "ratio error"),
              tuple(rows), tuple(classes))
    note = ("p1-3 = patches 1-3 of the series; direction: ✔ same = the model goes the same way (faster, slower, or no change "
            "within 5%); fit: held out = neither figure was used to fit the model, partly = "
            "one was, calibrated = both (no evidence); ratio error = the larger of model/"
            "published and published/model ratio ('–' where nothing changed).")
    return View(t.text() + "\n" + textwrap.fill(note, TEXT_WIDTH),
                wrap_html(t.html() + f"<p>{esc(note)}</p>", "cr0wp-changes"))


def ratio_errors(vendor: str = "intel") -> dict[str, list[float]]:
    """Ratio errors of the published changes that changed something, grouped by how much
    of each change the model was fitted on ("held out", "partly", "calibrated")."""
    from mmu.book import cost
    out: dict[str, list[float]] = {"held out": [], "partly": [], "calibrated": []}
    for ch in cost.ssdd_changes(vendor):
        if ch.published_direction != "no change":
            n_fit = _fit(ch.before, ch.column) + _fit(ch.after, ch.column)
            out[("held out", "partly", "calibrated")[n_fit]].append(ch.ratio_error)
    return out


def refresh_demo() -> View:
    """6.4 on Intel with EPT: the guest clears CR0.WP without a VM exit, so the MMU's
    ``cpu_role.base.cr0_wp`` is stale until something refreshes it.  Emulating a
    supervisor write right after (e.g. UMIP emulation) checks permissions with the cached
    role -- unless ``permission_fault`` first calls ``kvm_mmu_refresh_passthrough_bits``."""
    from mmu.kvm.vcpu import VCpu
    rows = []
    for label, e in (("6.4 with the refresh fix", make_era("6.4")),
                     ("6.4 without it (fb509f76acc8 only)",
                      make_era("6.4", wp_refresh_in_permission_fault=False))):
        v = VCpu(kernel=e, mmu="tdp", vendor="intel")
        v.boot_long_mode(cr3=0x100000)
        v.enter()
        res = v.set_cr0(v.regs.cr0 & ~int(CR0.WP))
        cached = v.cpu_role.base.cr0_wp
        used = v.emulated_permission_check().base.cr0_wp
        rows.append((label, "exit" if res.exited else "no exit", str(cached), str(used),
                     "✔ correct: write allowed" if used == 0 else
                     "✘ stale: faults as if WP=1"))
    t = Table("Guest clears CR0.WP, then KVM emulates a supervisor write to a read-only page",
              ("kernel", "CR0 write", "cached cr0_wp", "cr0_wp checked", "result"),
              tuple(rows))
    return View(t.text(), wrap_html(t.html(), "cr0wp-refresh"))
