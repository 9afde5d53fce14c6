"""How every widget refuses a change: one mechanism for all of :mod:`mmu.book.widgets`,
:mod:`mmu.book.widgets_walk` and :mod:`mmu.book.widgets_story`.

A control can hold a value the model refuses: ipywidgets lets a ``Dropdown`` be
``None`` (nothing selected), a text box holds whatever was typed, and some combinations
are states KVM never has (SMM in guest mode, see
:func:`~mmu.book.views.roles_view.never_in_kvm`).  A widget callback runs inside
traitlets' notification, where an exception only reaches the browser console and leaves
the controls and the view disagreeing.  So a callback never raises: the refused control
goes back to its old value, the model result (``.result``) stays what it was, and the
view shows why above what it showed before (:func:`~mmu.book.views.common.refusal_view`,
the ``div.refused`` the role explorer uses for its SMM + guest-mode refusal); ``.refused``
holds the reason until the next accepted change.

``set(**values)`` from code first checks every value against its control
(:func:`check_control`: an offered option, a bool for a checkbox, an int in a slider's
range, a str for a text box) and raises ValueError/TypeError naming the control before
anything changes; a set of values that passes those checks but that the model refuses is
refused like a click, as above.
"""
from __future__ import annotations

import operator
from typing import Any

import ipywidgets as W

from mmu.book.views.common import View, refusal_view
from mmu.x86.bits import check_bool, check_int

__all__ = ["check_control", "RefusingWidget"]

_Selection = W.widgets.widget_selection._Selection     # Dropdown, ToggleButtons, Select, ...


def _as_option(value: Any, options: tuple) -> Any:
    """The option equal to ``value`` under the package's int rule (bits.check_int: any
    ``__index__`` integer, never bool), or a LookupError."""
    for o in options:
        if isinstance(o, bool) or isinstance(value, bool):
            if type(o) is type(value) and o == value:
                return o
        elif isinstance(o, int):
            if hasattr(type(value), "__index__") and operator.index(value) == o:
                return o
        elif type(o) is type(value) and o == value:
            return o
    raise LookupError(value)


def check_control(name: str, control: Any, value: Any) -> Any:
    """``value`` as ``control`` would hold it, or ValueError/TypeError naming ``name``.

    Stricter than ipywidgets on purpose: a ``Dropdown`` accepts ``None`` and a slider
    clamps an out-of-range int, which from code would silently show something else."""
    if isinstance(control, _Selection):
        options = tuple(control._options_values)
        try:
            return _as_option(value, options)
        except LookupError:
            raise ValueError(f"{name}={value!r} is not one of the options: allowed "
                             f"{', '.join(repr(o) for o in options)}") from None
    if isinstance(control, (W.Checkbox, W.ToggleButton)):
        return check_bool(name, value)
    if isinstance(control, (W.IntSlider, W.BoundedIntText)):
        return check_int(name, value, control.min, control.max + 1)
    if isinstance(control, (W.Text, W.Textarea)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str, not {type(value).__name__}")
        return value
    return value


class RefusingWidget:
    """The refusal half of a widget: subclasses keep ``self._muted`` (True while the
    widget itself moves controls), ``self.html`` and ``self.view``, and define
    :meth:`_control_map`."""

    #: Why the last change was refused (None after an accepted change).
    refused: str | None = None
    _muted = False

    def _control_map(self) -> dict[str, Any]:
        raise NotImplementedError

    def _name_of(self, control: Any) -> str:
        return next(n for n, c in self._control_map().items() if c is control)

    def _check_values(self, values: dict[str, Any]) -> dict[str, Any]:
        """Every value checked against its control before any is applied (canonical values)."""
        controls = self._control_map()
        unknown = sorted(set(values) - set(controls))
        if unknown:
            raise ValueError(f"unknown control(s) {unknown}: allowed {sorted(controls)}")
        return {k: check_control(k, controls[k], v) for k, v in values.items()}

    def _put(self, values: dict[str, Any]) -> None:
        """Move controls without running the callbacks."""
        controls = self._control_map()
        self._muted = True
        try:
            for k, v in values.items():
                controls[k].value = v
        finally:
            self._muted = False

    def _accept(self, view: View) -> None:
        self.refused = None
        self._kept = view
        self.view = view
        self.html.value = view.html

    def _refuse(self, message: str, old: dict[str, Any]) -> None:
        """Put ``old`` control values back and show ``message`` above the kept view."""
        self._put(old)
        self.refused = message
        self.view = refusal_view(message, self._kept)
        self.html.value = self.view.html
