"""Chapter 10's widget: browse a record of the host experiments (live, or by default the
recorded reference run).

A thin wrapper (docs/notebooks.md) around :func:`mmu.book.views.kvmhost_view.render_experiment`:
pick an experiment and which verdicts to show; ``.text`` mirrors the view, ``.set()``
drives it headless.  No model logic, no KVM access: the record is made before.
"""
from __future__ import annotations

from mmu.book.views import kvmhost_view as kv
from mmu.book.widgets_walk import ViewWidget, _drop, _text

__all__ = ["RunBrowser", "SHOW"]

#: What the "show" control offers: label -> the statuses shown.
SHOW = {"every case": None, "disagreements": ("disagree",),
        "refused by the host": ("refused",), "agreements": ("agree",)}


class RunBrowser(ViewWidget):
    css_class = "kvmhost-browser"

    def __init__(self, report=None, experiment: str = "roles", show: str = "every case",
                 match: str = "") -> None:
        if report is None:                       # the recorded reference run
            from mmu.kvmhost.report import reference
            report = reference()
        self.report = report
        exps = report.experiments()
        if experiment not in exps:
            raise ValueError(f"experiment {experiment!r}: allowed {tuple(exps)}")
        if show not in SHOW:
            raise ValueError(f"show {show!r}: allowed {tuple(SHOW)}")
        controls = {
            "experiment": _drop("experiment",
                                [(kv.SHORT_TITLES.get(e, e), e) for e in exps], experiment),
            "show": _drop("show", list(SHOW), show),
            "match": _text("name has", match, "cr0_wp=1 efer_nx=1"),
        }
        super().__init__(controls, self._render)

    def _render(self, v: dict):
        statuses = SHOW[v["show"]]
        cases = [c for c in self.report.cases_of(v["experiment"])
                 if (statuses is None or c.status in statuses) and v["match"] in c.name]
        return cases, kv.render_experiment(self.report, v["experiment"], statuses=statuses,
                                           match=v["match"])
