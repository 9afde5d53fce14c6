"""Thin ipywidgets wrappers around the pure views in :mod:`mmu.book.views`.

A widget here owns controls and one ``ipywidgets.HTML``; every control change calls a
pure render function and stores its result.  There is no model logic in this module:
what is shown is exactly ``render(explore(state, prev))`` (see docs/notebooks.md).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import ipywidgets as W

from mmu.book.views.roles_view import (FLAG_LABELS, KERNELS, VENDORS, ExplorerResult, ExplorerState,
                               explore, render)
from mmu.book.widget_state import Introduced
from mmu.book.widgets_walk import _check, _drop, text_em

__all__ = ["RoleExplorer"]

_GROUPS = (
    ("CR0", ("cr0_pg", "cr0_wp")),
    ("CR4", ("cr4_pae", "cr4_pse", "cr4_la57", "cr4_smep", "cr4_smap", "cr4_pke")),
    ("EFER", ("efer_lme", "efer_nx")),
    ("vCPU", ("smm", "guest_mode")),
    ("host", ("tdp", "tdp_mmu")),
)


class RoleExplorer(Introduced):
    """Checkboxes for CR0/CR4/EFER bits, SMM, guest mode and TDP, dropdowns for the kernel
    era and vendor; shows cpu_role, root_role and what happens to the root.

    * ``explorer.set(cr0_wp=False)`` changes controls from code (one transition, however
      many values), as a test cell does; ``explorer.state`` is the effective state;
    * ``explorer.result`` is the last :class:`~mmu.book.views.roles_view.ExplorerResult`,
      ``explorer.view`` its :class:`~mmu.book.views.common.View`, ``explorer.text`` the text
      form, ``explorer.html`` the ``ipywidgets.HTML`` showing it (CSS classes
      ``role-view`` and ``root-outcome`` inside);
    * displaying it records its introduced state; checks use a fresh explorer and close it,
      ``with RoleExplorer(kernel="5.18") as ex: ...`` (:mod:`mmu.book.widget_state`);
    * after a #GP the controls go back to the registers' values (the faulting write
      changed nothing) and the view explains the fault; so they do after a refusal
      (SMM ticked together with guest mode, a pair KVM never has: an SMI in L2 exits to
      L1 first, see :func:`~mmu.book.views.roles_view.never_in_kvm`), which the view explains.
    """

    def __init__(self, state: ExplorerState | None = None, **changes: Any) -> None:
        state = ExplorerState() if state is None else state
        if not isinstance(state, ExplorerState):
            raise TypeError(f"state must be an ExplorerState or None, not "
                            f"{type(state).__name__}")
        state = state.replace(**changes)
        self.state = state                       # effective: where the vCPU is
        self._updating = False
        self.checkboxes = {name: _check(FLAG_LABELS[name], getattr(state, name))
                           for name in FLAG_LABELS}
        self.dropdowns = {
            "kernel": _drop("kernel", [(f"Linux {k}", k) for k in KERNELS], state.kernel),
            "vendor": _drop("vendor", [("Intel (VMX, EPT)", "intel"), ("AMD (SVM, NPT)", "amd")],
                            state.vendor),
        }
        assert set(v for _, v in self.dropdowns["vendor"].options) == set(VENDORS)
        self.html = W.HTML()
        self.html.add_class("role-explorer-output")
        for w in (*self.checkboxes.values(), *self.dropdowns.values()):
            w.observe(self._on_change, names="value")
        title_em = max(text_em(f"{title}:") for title, _ in _GROUPS) + 0.5
        rows = [W.HBox([W.Label(f"{title}:", layout=W.Layout(width=f"{title_em:.1f}em")),
                        *[self.checkboxes[n] for n in names]])
                for title, names in _GROUPS]
        rows.append(W.HBox(list(self.dropdowns.values())))
        self.controls = W.VBox(rows)
        self.widget = W.VBox([self.controls, self.html])
        self.widget.add_class("role-explorer")
        self._show(explore(state))

    # -- reading the controls ----------------------------------------------------------
    def _requested(self) -> ExplorerState:
        values = {n: w.value for n, w in self.checkboxes.items()}
        values.update({n: w.value for n, w in self.dropdowns.items()})
        return dataclasses.replace(self.state, **values)

    def _on_change(self, _change: dict) -> None:
        if not self._updating:
            self._update()

    def _update(self) -> None:
        res = explore(self._requested(), self.state)
        self.state = res.effective
        if res.effective != res.state:
            # The write faulted (#GP), or the state is one KVM never holds (refused): the
            # registers keep their old values, and so do the controls; the view says why.
            self._set_controls(res.effective)
        self._show(res)

    def _set_controls(self, state: ExplorerState) -> None:
        self._updating = True
        try:
            for name, w in (*self.checkboxes.items(), *self.dropdowns.items()):
                w.value = getattr(state, name)
        finally:
            self._updating = False

    def _show(self, res: ExplorerResult) -> None:
        self.result = res
        self.view = render(res)
        self.html.value = self.view.html

    # -- public ------------------------------------------------------------------------
    @property
    def text(self) -> str:
        """The text form of what the widget shows (print it in the notebook)."""
        return self.view.text

    def set(self, **values: Any) -> ExplorerResult:
        """Set controls by state field name (``cr0_wp=False, kernel="5.18"``) as one
        change, exactly as if the reader had clicked them; returns the result."""
        fields = {f.name for f in dataclasses.fields(ExplorerState)}
        for name in values:
            if name not in fields:
                raise ValueError(f"unknown control {name!r}: allowed {sorted(fields)}")
        self._set_controls(self._requested().replace(**values))   # checks types first
        self._update()
        return self.result

    def _root(self) -> W.Widget:
        return self.widget
