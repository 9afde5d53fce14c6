"""Chapter 7, the CR0.WP story: what one guest CR0.WP toggle costs in each kernel era, MMU
kind and vendor, and the cost model beside the published figures.

* :func:`toggle` runs a booted 64-bit guest on a :class:`mmu.vcpu.VCpu` and toggles CR0.WP;
  the counts per toggle and the events of one toggle are the vCPU's own
  (``kvm_post_set_cr0``, ``kvm_mmu_reset_context``, ``kvm_init_mmu``, ``kvm_mmu_load`` ...).
* :func:`render_counts` tabulates them over eras x MMU kinds x vendors.
* :func:`render_vmexit` and :func:`render_ssdd` put :mod:`mmu.cost` beside Paolo Bonzini's
  ``vmexit.flat`` cycles and Mathias Krause's ``ssdd`` seconds (facts §4, §9) as a table and
  an SVG figure (hatching and markers, not only colour, tell model from published).
* :func:`refresh_demo` shows the 6.4 fix "Refresh CR0.WP prior to checking for emulated
  permission faults" on the vCPU model.

Nothing here computes a cost or a role: those come from :mod:`mmu.cost` and :mod:`mmu.vcpu`.
"""
from __future__ import annotations

import dataclasses
from collections import Counter

from ..eras import Era, era as make_era
from ..regs import CR0
from .common import Table, View, bullet_html, bullet_text, esc, figure_svg, wrap_html

__all__ = ["STORY_KERNELS", "COUNT_COLUMNS", "ToggleResult", "toggle", "render_toggle",
           "render_counts", "render_vmexit", "render_ssdd", "render_changes",
           "refresh_demo", "SSDD_FIGURE_ROWS"]

STORY_KERNELS = ("5.15", "5.18", "5.19", "6.1", "6.4")

#: (vCPU counter, column label).  "kvm_init_mmu rebuilds" excludes early returns.
COUNT_COLUMNS = (("vm_exits", "VM exits"), ("mmu_resets", "reset_context"),
                 ("mmu_unloads", "unloads"), ("inits_rebuilt", "init rebuilds"),
                 ("init_early_returns", "init early returns"),
                 ("roots_created", "roots built"), ("roots_reused", "roots found again"))


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

    @property
    def summary(self) -> str:
        """One line in words, from the counts."""
        c = self.per_toggle
        if not c.get("vm_exits"):
            return "no VM exit: CR0.WP is guest-owned (VMX with EPT, 6.4)"
        if c.get("mmu_unloads"):
            root = ("a new root built" if c.get("roots_created", 0) >= 1 else
                    "the root found again" if c.get("roots_reused") else "no root")
            return f"exit + kvm_mmu_reset_context: all roots unloaded, {root}"
        return "exit + kvm_init_mmu only: roots kept"


def toggle(kernel: "str | Era" = "6.4", mmu: str = "tdp", vendor: str = "intel", *,
           toggles: int = 8) -> ToggleResult:
    """A booted 64-bit guest (WP=1) writes CR0 ``toggles`` times, flipping only WP, after
    one warm-up pair; counters are averaged per write (steady state, one vCPU)."""
    from ..vcpu import VCpu
    if isinstance(toggles, bool) or not isinstance(toggles, int) or not 2 <= toggles <= 1000:
        raise ValueError(f"toggles={toggles!r}: allowed an even int in 2..1000")
    if toggles % 2:
        raise ValueError(f"toggles={toggles}: allowed an even number (pairs WP 1->0->1)")
    v = VCpu(kernel=kernel, mmu=mmu, vendor=vendor)
    v.boot_long_mode(cr3=0x100000)
    v.enter()
    wp_off, wp_on = v.regs.cr0 & ~int(CR0.WP), v.regs.cr0 | int(CR0.WP)
    v.set_cr0(wp_off)
    v.set_cr0(wp_on)                    # warm-up: the WP=0 root exists if it ever will
    before = Counter(v.stats)
    first, word0, word1 = None, v.root_role.word, None
    for i in range(toggles):
        res = v.set_cr0(wp_off if i % 2 == 0 else wp_on)
        v.enter()
        if first is None:
            first, word1 = tuple(str(e) for e in res.events), v.root_role.word
    d = {k: v.stats[k] - before.get(k, 0) for k in v.stats}
    d["inits_rebuilt"] = d.get("mmu_inits", 0) - d.get("init_early_returns", 0)
    per = {k: d.get(k, 0) / toggles for k, _ in COUNT_COLUMNS}
    name = kernel.name if isinstance(kernel, Era) else kernel
    return ToggleResult(name, mmu, vendor, per, first or (), (word0, word1))


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
                             r.root_role_change, r.summary))
    t = Table("Work per guest CR0.WP toggle (steady state, one vCPU; from the vCPU model)",
              ("kernel, MMU, vendor", *(label for _, label in COUNT_COLUMNS),
               "root_role on WP 1->0", "verdict"),
              tuple(rows))
    return View(t.text(), wrap_html(t.html(), "cr0wp-counts"))


# ---- the cost model beside the published figures -----------------------------------------------

def _figure(width: float, height: float):
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height))


def render_vmexit(vendor: str = "intel") -> View:
    """Paolo's vmexit.flat cycles per CR0.WP toggle, before/after, beside the model."""
    from .. import cost
    rows, data = [], []
    for kind, (pb, pa) in cost.PUBLISHED_VMEXIT.items():
        mb = cost.vmexit_cycles_per_toggle(cost.VMEXIT_CONFIGS["before"], kind, vendor)
        ma = cost.vmexit_cycles_per_toggle(cost.VMEXIT_CONFIGS["after"], kind, vendor)
        rows.append((kind, str(pb), f"{mb:.0f}", str(pa), f"{ma:.0f}", f"{pb / pa:.2f}",
                     f"{mb / ma:.2f}"))
        data.append((kind, pb, mb, pa, ma))
    t = Table("vmexit.flat CR0.WP test, cycles per toggle (published: Paolo Bonzini, "
              "[ROOTS-v2-18], units presumed cycles; model: mmu.cost)",
              ("MMU", "published before", "model before", "published after", "model after",
               "published ratio", "model ratio"), tuple(rows))
    fig = _figure(7, 3.8)
    fig.set_layout_engine("constrained")
    ax = fig.add_subplot()
    x = range(len(data))
    w = 0.2
    styles = [("published before", 1, "#4c72b0", "", "o"), ("model before", 2, "#4c72b0", "//", "s"),
              ("published after", 3, "#dd8452", "", "o"), ("model after", 4, "#dd8452", "//", "s")]
    for label, col, color, hatch, mk in styles:
        xs = [i + (col - 2.5) * w for i in x]
        ys = [d[col] for d in data]
        ax.bar(xs, ys, w, label=label, color=color, hatch=hatch, edgecolor="black")
        ax.plot(xs, ys, linestyle="none", marker=mk, color="black", markersize=4)
    ax.set_yscale("log")
    ax.set_xticks(list(x), [d[0] for d in data])
    ax.set_xlabel("MMU (TDP = TDP MMU, legacy = EPT with tdp_mmu=0, shadow = no EPT)")
    ax.set_ylabel("cycles per CR0.WP toggle (log scale)")
    ax.set_title("vmexit.flat CR0.WP: before vs after not unloading roots")
    ax.legend(fontsize=8, ncol=2)
    note = ("calibrated: TDP before/after and legacy before; held out: legacy after, both "
            "shadow figures (see mmu.cost)")
    return View(t.text() + "\n" + note,
                wrap_html(t.html() + f"<p>{esc(note)}</p>" + figure_svg(fig), "cr0wp-vmexit"))


#: Rows of Mathias's table drawn in the figure (the v4 cover and the stable backports).
SSDD_FIGURE_ROWS = ("kvm-x86/next@d8708b", "kvm-x86/next@d8708b + patches 1-3",
                    "kvm-x86/next@d8708b + patches 4-6", "v5.15.106", "v5.15.106 + patches",
                    "v6.1.23", "v6.1.23 + patches")


def render_ssdd(rows=SSDD_FIGURE_ROWS, vendor: str = "intel") -> View:
    """Mathias's ``ssdd 10 50000`` seconds beside the model, per row and MMU column."""
    from .. import cost
    table_rows, series = [], {c: ([], []) for c in cost.COLUMNS}
    for row in rows:
        pub = cost.PUBLISHED_SSDD[row]
        cells = []
        for i, kind in enumerate(cost.COLUMNS):
            m = cost.ssdd_seconds(cost.SSDD_CONFIGS[row], kind, vendor)
            p = pub[i]
            cells += ["–" if p is None else f"{p:.2f}", f"{m:.2f}"]
            series[kind][0].append(p)
            series[kind][1].append(m)
        table_rows.append((row, cost.SSDD_CONFIGS[row].name, *cells))
    head = ["published row", "modelled as"]
    for c in cost.COLUMNS:
        head += [f"{c} published", f"{c} model"]
    t = Table("ssdd 10 50000 in a grsecurity L1 guest, seconds, lower is better (published: "
              "Mathias Krause, facts §9; model: mmu.cost)", tuple(head), tuple(table_rows))
    fig = _figure(11, 4.8)
    axes = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2, 1]})
    x = list(range(len(rows)))
    w = 0.2
    colors = {"legacy": "#4c72b0", "tdp": "#55a868", "shadow": "#999999"}
    markers = {"legacy": "s", "tdp": "^", "shadow": "D"}
    short = [r.replace("kvm-x86/next@d8708b", "next@d8708b").replace(" + patches", " +p")
             for r in rows]
    for ax, kinds in ((axes[0], ("legacy", "tdp")), (axes[1], ("shadow",))):
        for j, kind in enumerate(kinds):
            pub, mod = series[kind]
            base = (j - len(kinds) / 2) * 2 * w + w / 2
            xp = [i + base for i in x]
            xm = [i + base + w for i in x]
            ax.bar(xp, [p if p is not None else 0 for p in pub], w,
                   label=f"{kind} published", color=colors[kind], edgecolor="black")
            ax.bar(xm, mod, w, label=f"{kind} model", color=colors[kind], hatch="//",
                   edgecolor="black", alpha=0.6)
            ax.plot(xm, mod, linestyle="none", marker=markers[kind], color="black",
                    markersize=4, label=f"{kind} model (marker)")
        ax.set_xticks(x, short, fontsize=8, rotation=35, ha="right")
        ax.set_ylabel("seconds (lower is better)")
        ax.set_xlabel("kernel tree (published row; +p = with the CR0.WP patches)")
        ax.legend(fontsize=7)
    axes[0].set_title("legacy and TDP MMU", fontsize=10)
    axes[1].set_title("shadow paging", fontsize=10)
    fig.suptitle("ssdd 10 50000: published (plain bars) vs model (hatched bars, markers)")
    fig.set_layout_engine("constrained")
    return View(t.text(), wrap_html(t.html() + figure_svg(fig), "cr0wp-ssdd"))


def render_changes(vendor: str = "intel") -> View:
    """Every published "+ patches" step per column: direction and ratio, model beside it."""
    from .. import cost
    rows, classes = [], []
    for ch in cost.ssdd_changes(vendor):
        same = ch.model_direction == ch.published_direction
        rows.append((f"{ch.before} -> + {ch.after.split(' + ')[-1]}", ch.column,
                     f"{ch.published_ratio:.2f}x {ch.published_direction}",
                     f"{ch.model_ratio:.2f}x {ch.model_direction}",
                     "✔ same direction" if same else "✘ different direction",
                     "–" if ch.published_direction == "no change" else f"{ch.ratio_error:.2f}"))
        classes.append("" if same else "changed")
    t = Table("Each published change (before/after time ratio) and the model's",
              ("change", "MMU", "published", "model", "agreement", "ratio error"),
              tuple(rows), tuple(classes))
    return View(t.text(), wrap_html(t.html(), "cr0wp-changes"))


def refresh_demo() -> View:
    """6.4 on Intel with EPT: the guest clears CR0.WP without a VM exit, so the MMU's
    ``cpu_role.base.cr0_wp`` is stale until something refreshes it.  Emulating a
    supervisor write right after (e.g. UMIP emulation) checks permissions with the cached
    role -- unless ``permission_fault`` first calls ``kvm_mmu_refresh_passthrough_bits``."""
    from ..vcpu import VCpu
    rows = []
    for label, e in (("6.4 (with the refresh fix)", make_era("6.4")),
                     ("6.4 without the fix (fb509f76acc8 alone)",
                      make_era("6.4", wp_refresh_in_permission_fault=False))):
        v = VCpu(kernel=e, mmu="tdp", vendor="intel")
        v.boot_long_mode(cr3=0x100000)
        v.enter()
        res = v.set_cr0(v.regs.cr0 & ~int(CR0.WP))
        cached = v.cpu_role.base.cr0_wp
        used = v.emulated_permission_check().base.cr0_wp
        rows.append((label, "exit" if res.exited else "no exit", str(cached), str(used),
                     "✔ correct (WP=0: supervisor write allowed)" if used == 0 else
                     "✘ stale: the emulated write faults as if WP were 1"))
    t = Table("Guest clears CR0.WP, then KVM emulates a supervisor write to a read-only page",
              ("kernel", "CR0 write", "cached cpu_role.cr0_wp", "cr0_wp used by the check",
               "result"), tuple(rows))
    return View(t.text(), wrap_html(t.html(), "cr0wp-refresh"))
