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
                               cet_supported, explore, render)
from mmu.book.widget_refusals import RefusingWidget
from mmu.book.widget_state import Introduced
from mmu.book.widgets_walk import _check, _drop, text_em

__all__ = ["RoleExplorer"]

_GROUPS = (
    ("CR0", ("cr0_pg", "cr0_wp")),
    ("CR4", ("cr4_pae", "cr4_pse", "cr4_la57", "cr4_smep", "cr4_smap", "cr4_pke", "cr4_cet")),
    ("EFER", ("efer_lme", "efer_nx")),
    ("vCPU", ("smm", "guest_mode")),
    ("host", ("tdp", "tdp_mmu")),
)


class RoleExplorer(RefusingWidget, Introduced):
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
      L1 first, see :func:`~mmu.book.views.roles_view.never_in_kvm`), which the view explains;
    * a control value no state can have (a dropdown set to ``None``) is refused the way
      every widget refuses one (:mod:`mmu.book.widget_refusals`): the control goes back,
      ``explorer.refused`` says why, the state and result stay.
    """

    def __init__(self, state: ExplorerState | None = None, **changes: Any) -> None:
        state = ExplorerState() if state is None else state
        if not isinstance(state, ExplorerState):
            raise TypeError(f"state must be an ExplorerState or None, not "
                            f"{type(state).__name__}")
        state = state.replace(**changes)
        self.state = state                       # effective: where the vCPU is
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
        self._enable_cet(state.kernel)
        self.widget = W.VBox([self.controls, self.html])
        self.widget.add_class("role-explorer")
        self.result = explore(state)
        self._accept(render(self.result))

    def _control_map(self) -> dict[str, Any]:
        return {**self.checkboxes, **self.dropdowns}

    # -- reading the controls ----------------------------------------------------------
    def _requested(self) -> ExplorerState:
        values = {n: w.value for n, w in self.checkboxes.items()}
        values.update({n: w.value for n, w in self.dropdowns.items()})
        if not cet_supported(values["kernel"]):
            # The CR4.CET box is disabled for kernels that reserve the bit (before 6.18):
            # choosing such a kernel boots its guest without CET.
            values["cr4_cet"] = False
        return dataclasses.replace(self.state, **values)

    def _enable_cet(self, kernel: str) -> None:
        """The CR4.CET control is usable only where the kernel lets a guest set it."""
        box = self.checkboxes["cr4_cet"]
        box.disabled = not cet_supported(kernel)
        box.description = FLAG_LABELS["cr4_cet"] + ("" if not box.disabled else " (6.18+)")

    def _on_change(self, change: dict) -> None:
        if not self._muted:
            self._update({self._name_of(change["owner"]): change["old"]})

    def _update(self, old: dict[str, Any]) -> None:
        """Explore the requested state; a value no state can hold is refused (never raises)."""
        try:
            self._check_values({n: w.value for n, w in self._control_map().items()})
            res = explore(self._requested(), self.state)
        except (ValueError, TypeError) as e:
            self._refuse(str(e), old)
            return
        self.state = res.effective
        self._enable_cet(res.effective.kernel)
        if res.effective != res.state or \
                self.checkboxes["cr4_cet"].value != res.effective.cr4_cet:
            # The write faulted (#GP), or the state is one KVM never holds (refused): the
            # registers keep their old values, and so do the controls; the view says why.
            self._set_controls(res.effective)
        self.result = res
        self._accept(render(res))

    def _set_controls(self, state: ExplorerState) -> None:
        self._put({name: getattr(state, name) for name in self._control_map()})

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
        controls = self._control_map()
        self._check_values({k: v for k, v in values.items() if k in controls})
        kernel = values.get("kernel", self.state.kernel)
        if values.get("cr4_cet") is True and kernel in KERNELS and not cet_supported(kernel):
            raise ValueError(f"cr4_cet=True: the CR4.CET control is disabled for Linux {kernel} "
                             f"(KVM virtualizes CET from 6.18); allowed only with kernel "
                             f"{[k for k in KERNELS if cet_supported(k)]}")
        wanted = self._requested().replace(**values)    # checks every field first
        old = {n: w.value for n, w in controls.items()}
        self._set_controls(wanted)
        self._update(old)
        return self.result

    def _root(self) -> W.Widget:
        return self.widget
