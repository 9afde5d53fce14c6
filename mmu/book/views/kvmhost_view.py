"""Chapter 10 (your own KVM): a run of the host experiments, side by side with the model.

Pure render functions over a :class:`mmu.kvmhost.report.Report` (a live run or the
recorded reference run): the label (kernel, backend, date), a summary per experiment,
one table per experiment (host / model / verdict), and the difference of two records.
The same functions print the command-line report (``python -m mmu.kvmhost``).
Verdicts carry a symbol and a word: ``✔ agree``, ``✘ disagree``, ``⊘ refused``,
``– skipped``, ``± measured``.
"""
from __future__ import annotations

from mmu.book.views.common import Table, View, esc, wrap_html

__all__ = ["VERDICT", "format_value", "render_label", "render_summary", "render_experiment",
           "render_report", "render_diff", "first_difference"]

VERDICT = {"agree": "✔ agree", "disagree": "✘ disagree", "refused": "⊘ refused by host",
           "skipped": "– skipped", "measured": "± measured"}
TITLES = {"roles": "Root role words (kvm_mmu_get_page at the first entry)",
          "wp_toggles": "CR0.WP toggles: what each write does to the root",
          "cr3_round_robin": "CR3 round robin: what each switch does to the root",
          "pf_error_codes": "#PF error codes KVM injects",
          "cpl3_shadow_tree": "A CPL3 guest's shadow tree after a fetch, a write and 3 reads "
                              "(plain, under an XD PDE, under a read-only PDE)",
          "toggle_cost": "Time per CR0.WP toggle (this host only)"}
#: The same experiments named short enough for a control (the view's caption has the title).
SHORT_TITLES = {"roles": "root role words", "wp_toggles": "CR0.WP toggles",
                "cr3_round_robin": "CR3 round robin", "pf_error_codes": "#PF error codes",
                "cpl3_shadow_tree": "a CPL3 shadow tree", "toggle_cost": "CR0.WP toggle cost"}


def format_value(value) -> str:
    """One cell: role pages as ``gfn 0x100: 0x3704``, step lists as counts, dicts as
    ``k=v``, None as "—"."""
    if value is None:
        return "—"
    if isinstance(value, list) and value and _is_pages(value):
        gfns = sorted({g for g, _ in value})
        words = sorted({w for _, w in value})
        if len(words) == 1:          # e.g. the 4 direct pages of paging off: one role
            return f"{', '.join(f'{g:#x}' for g in gfns)}: {words[0]:#06x}"
        if len(gfns) == 1:           # e.g. a 32-bit root's quadrants: one gfn
            return f"{gfns[0]:#x}: {'/'.join(f'{w:#06x}' for w in words)}"
        return ", ".join(f"{gfn:#x}: {word:#06x}" for gfn, word in value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        from mmu.kvmhost.experiments import steps_summary
        return steps_summary(value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def first_difference(real, model) -> str:
    """Where two step lists part ("step 7: host found, model new"), else ""."""
    if not (isinstance(real, list) and isinstance(model, list)) or real == model:
        return ""
    for i, (a, b) in enumerate(zip(real, model)):
        if a != b:
            return f"step {i}: host {a}, model {b}"
    return f"host has {len(real)} steps, model {len(model)}"


def render_label(report) -> View:
    lab = report.label
    rows = (("kernel", lab["kernel"]), ("backend", lab["backend"]), ("date", lab["date"]),
            ("model", lab.get("model", "")), ("command", lab["command"]),
            ("tracing", "on (root)" if report.tracing else f"off: {report.trace_note}"),
            ("cleanup", "clean: no tracefs instance or mount left"
             if not any(report.cleanup.values()) else f"LEFT BEHIND: {report.cleanup}"))
    t = Table("This run", ("", "value"), rows)
    return View(t.text(), wrap_html(t.html(), "kvmhost-label"))


def render_summary(report) -> View:
    from mmu.kvmhost.experiments import STATUSES
    rows = []
    total = {s: 0 for s in STATUSES}
    for exp in report.experiments():
        counts = {s: 0 for s in STATUSES}
        for c in report.cases_of(exp):
            counts[c.status] += 1
            total[c.status] += 1
        rows.append((exp,) + tuple(str(counts[s]) for s in STATUSES))
    rows.append(("all",) + tuple(str(total[s]) for s in STATUSES))
    t = Table("Cases per experiment", ("experiment",) + tuple(VERDICT[s] for s in STATUSES),
              tuple(rows))
    return View(t.text(), wrap_html(t.html(), "kvmhost-summary"))


def _is_pages(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, list) and len(v) == 2 for v in value)


def _page_rows(cases) -> tuple[tuple[str, ...], list[tuple[str, ...]], list[str]]:
    """Long layout for page lists (the shadow tree): one row per page, the role word's
    level and access decoded (``kvm_mmu_page_role``: level bits 0-3, access 8-10)."""
    rows, classes = [], []
    for c in cases:
        real = dict(map(tuple, c.real or []))
        model = dict(map(tuple, c.model or []))
        for i, gfn in enumerate(sorted(set(real) | set(model))):
            r, m = real.get(gfn), model.get(gfn)
            word = r if r is not None else m
            same = r == m and c.status != "refused"
            rows.append(("" if i else c.name, f"{gfn:#x}", str(word & 0xF), str(word >> 8 & 7),
                         "—" if r is None else f"{r:#06x}", "—" if m is None else f"{m:#06x}",
                         VERDICT["agree"] if same else VERDICT[
                             "refused" if c.status == "refused" else "disagree"]))
            classes.append("" if same else "changed")
    return ("case", "gfn", "level", "access", "host", "model", "verdict"), rows, classes


def _measured_rows(cases) -> tuple[tuple[str, ...], list[tuple[str, ...]], list[str]]:
    """Long layout for measurements: one row per quantity, host's first, then the model's."""
    rows = []
    for c in cases:
        items = [("host", k, v) for k, v in (c.real or {}).items()]
        items += [("model", k, v) for k, v in (c.model or {}).items()]
        for i, (who, k, v) in enumerate(items):
            rows.append(("" if i else c.name, who, k, str(v)))
    return ("case", "from", "quantity", "value"), rows, [""] * len(rows)


def render_experiment(report, experiment: str, *, statuses=None, match: str = "",
                      limit: int | None = None) -> View:
    """One experiment's cases: optionally only some statuses, only names containing
    ``match``, at most ``limit`` cases.  Cases whose answers are long lists of pages
    (the shadow tree) or measurements get one row per page or quantity."""
    cases = [c for c in report.cases_of(experiment)
             if (statuses is None or c.status in statuses) and match in c.name]
    shown = cases if limit is None else cases[:limit]
    caption = TITLES.get(experiment, experiment)
    if match:
        caption += f", cases with '{match}'"
    if len(shown) < len(cases):
        caption += f" (first {len(shown)} of {len(cases)})"
    long = None
    if shown and all(c.status == "measured" for c in shown):
        long = _measured_rows(shown)
    elif shown and all(_is_pages(c.real if c.real is not None else c.model)
                       and len(c.model or []) > 4 for c in shown):
        long = _page_rows(shown)
    if long is not None:
        headers, rows, classes = long
        notes = [f"{c.name}: {c.note}" for c in shown if c.note]
        t = Table(caption, headers, tuple(rows), tuple(classes))
        text = t.text() + "".join(f"\n{n}" for n in notes)
        return View(text, wrap_html(t.html() + "".join(f"<p>{esc(n)}</p>" for n in notes),
                                    "kvmhost-cases"))
    rows = []
    for c in shown:
        note = first_difference(c.real, c.model) or c.note
        rows.append((c.name, format_value(c.real), format_value(c.model), VERDICT[c.status],
                     note))
    t = Table(caption, ("case", "host", "model", "verdict", "note"), tuple(rows),
              tuple("changed" if c.status == "disagree" else "" for c in shown))
    return View(t.text(), wrap_html(t.html(), "kvmhost-cases"))


def render_report(report, *, statuses=None) -> View:
    parts = [render_label(report), render_summary(report)]
    parts += [render_experiment(report, e, statuses=statuses) for e in report.experiments()]
    return View("\n\n".join(p.text for p in parts), "".join(p.html for p in parts))


def render_diff(a, b, diffs) -> View:
    head = Table("Two records", ("", "A", "B"),
                 (("backend", a.label["backend"], b.label["backend"]),
                  ("date", a.label["date"], b.label["date"])))
    rows = tuple((f"{d.experiment}: {d.name}", f"{format_value(d.a)} ({d.a_status})",
                  f"{format_value(d.b)} ({d.b_status})") for d in diffs)
    t = Table(f"Host answers that differ: {len(diffs)}", ("case", "A", "B"), rows)
    text = head.text() + "\n\n" + t.text()
    if not diffs:
        text += "\n(none: every role word, root decision and error code is the same)"
    return View(text, wrap_html(head.html() + t.html(), "kvmhost-diff"))
