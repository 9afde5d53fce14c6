"""A widget shown to the reader keeps the state it was introduced with.

The book's rule (docs/notebooks.md): what a reader sees beside a sentence is what the
sentence describes.  So

* every book widget records its **introduced state** -- its controls as displayed, its
  text form and the text of its view -- the first time it is displayed;
* check cells never drive a widget on display: they make their own and close it when done,
  ``with RoleExplorer(kernel="5.18") as ex: ...``, which also closes every ipywidgets model
  it made (controls, layouts, styles), so checks leave no widget models behind in the
  kernel or in a rendered page;
* :func:`drift_report` lists every displayed widget that no longer shows its introduced
  state, was displayed twice, or every model left alive that no displayed widget owns.
  tests/test_widget_drift.py runs it after executing each chapter; the browser test
  (tests/test_browser_chapters.py) compares the page with :func:`introduced_json`.
"""
from __future__ import annotations

import json
import weakref
from html.parser import HTMLParser
from typing import Any, Iterator

import ipywidgets as W
from ipywidgets.widgets import widget as _widget_module

__all__ = ["Introduced", "close_tree", "models_of", "control_values", "view_text",
           "shown", "drift_report", "live_models", "stray_models", "introduced_json"]

#: Widgets in the order they were first displayed (weak: a deleted widget is gone).
_SHOWN: list[weakref.ref] = []


def models_of(w: W.Widget) -> Iterator[W.Widget]:
    """Every ipywidgets model reachable from ``w``: itself, its children, layouts, styles
    (any trait holding a widget or a sequence of widgets), each once."""
    seen: set[int] = set()
    stack = [w]
    while stack:
        x = stack.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        yield x
        for name in x.keys:
            v = getattr(x, name, None)
            if isinstance(v, W.Widget):
                stack.append(v)
            elif isinstance(v, (tuple, list)):
                stack.extend(c for c in v if isinstance(c, W.Widget))


def close_tree(w: W.Widget) -> None:
    """Close ``w`` and every model it reaches (``Widget.close`` closes only itself)."""
    for m in list(models_of(w)):
        m.close()


def live_models() -> int:
    """How many widget models the kernel holds open right now."""
    return len(_widget_module._instances)


def _shown_value(w: W.ValueWidget) -> Any:
    """A control's value as the page shows it: the selected label for a selection."""
    if isinstance(w, (W.Dropdown, W.ToggleButtons, W.RadioButtons, W.Select)):
        return w.label
    return w.value


def control_values(root: W.Widget) -> list[list]:
    """The controls under ``root`` in page order: [kind, description, value as shown]."""
    out: list[list] = []

    def visit(x: W.Widget) -> None:
        if isinstance(x, W.Box):
            for c in x.children:
                visit(c)
        elif isinstance(x, W.ValueWidget) and not isinstance(x, (W.HTML, W.Label,
                                                                  W.HTMLMath)):
            out.append([type(x).__name__, x.description, _shown_value(x)])
    visit(root)
    return out


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def view_text(html: str) -> str:
    """The words of an HTML view, whitespace collapsed: what ``textContent`` of the
    rendered view gives in a browser, so the page can be compared with it."""
    p = _Text()
    p.feed(html)
    p.close()
    return " ".join("".join(p.parts).split())


class Introduced:
    """Mixin for the book's widgets: remembers the state it was introduced with.

    A subclass has ``_root()`` (the ipywidgets box displayed), ``.html`` (the view) and
    ``.text`` (its text form).  Use it as a context manager in check cells."""

    _introduced: dict | None = None
    _displays = 0
    _redraws = 0              # view changes since it was introduced
    closed = False
    #: True: the text/plain of the display is the text form (for widgets whose cell does
    #: not print it), instead of ipywidgets' "VBox(children=...)".
    plain_text_repr = False

    def _root(self) -> W.Widget:          # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def snapshot(self) -> dict:
        """Controls as shown, the text form, and the words of the view."""
        return {"controls": control_values(self._root()), "text": self.text,
                "view": view_text(self.html.value)}

    @property
    def introduced(self) -> dict | None:
        """The snapshot taken when the widget was first displayed (None: never shown)."""
        return self._introduced

    def drift(self) -> list[str]:
        """How the widget differs from its introduced state ([] if it does not)."""
        if self._introduced is None or self.closed:
            return []
        now, then = self.snapshot(), self._introduced
        out = [f"{key} changed" for key in ("controls", "text", "view") if now[key] != then[key]]
        if now["controls"] != then["controls"]:
            diff = [f"{a[1] or a[0]}: {a[2]!r} -> {b[2]!r}"
                    for a, b in zip(then["controls"], now["controls"]) if a != b]
            out[0] += " (" + "; ".join(diff) + ")"
        if self._redraws and not out:
            out.append(f"redrawn {self._redraws} times after it was shown, then set back: "
                       f"a check drove the widget on display")
        if self._displays > 1:
            out.append(f"displayed {self._displays} times")
        return out

    def _repr_mimebundle_(self, **kw: Any):
        if self.closed:
            raise ValueError(f"this {type(self).__name__} was closed: make a new one to show")
        self._displays += 1
        if self._introduced is None:
            self._introduced = self.snapshot()
            _SHOWN.append(weakref.ref(self))
            self.html.observe(self._redrawn, names="value")
        bundle = self._root()._repr_mimebundle_(**kw)
        if self.plain_text_repr:
            bundle["text/plain"] = self.text
        return bundle

    def _redrawn(self, _change: Any) -> None:
        self._redraws += 1

    def close(self) -> None:
        """Close every widget model of this widget; it cannot be shown afterwards."""
        if not self.closed:
            close_tree(self._root())
            self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def shown() -> list[Introduced]:
    """The displayed book widgets still alive and open, in display order."""
    return [w for w in (r() for r in _SHOWN) if w is not None and not w.closed]


def drift_report() -> list[str]:
    """Every displayed widget that drifted from its introduced state, and the number of
    widget models alive that no displayed widget owns (checks must close theirs)."""
    out = []
    for i, w in enumerate(shown()):
        for d in w.drift():
            out.append(f"widget {i} ({type(w).__name__}): {d}")
    stray = stray_models()
    if stray:
        out.append(f"{stray} widget models alive that no displayed widget owns "
                   f"(close check widgets: `with ... as w:` or `w.close()`)")
    return out


def stray_models() -> int:
    """Widget models alive that no displayed (open) book widget owns."""
    owned = {id(m) for w in shown() for m in models_of(w._root())}
    return sum(1 for m in list(_widget_module._instances.values()) if id(m) not in owned)


def introduced_json() -> str:
    """For the browser test: per displayed widget, in display order, its introduced
    controls and view words, and the drift report."""
    return json.dumps({"widgets": [{"class": type(w).__name__, **w.introduced}
                                   for w in shown()],
                       "drift": drift_report(), "live_models": live_models()})
