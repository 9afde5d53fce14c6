"""Render primitives shared by every view: tables, change markers, role field tables.

Every view in :mod:`mmu.book.views` is a pure function from model state to a :class:`View`
(text, and the same content as HTML).  The text form is what a notebook prints and what
tests assert on; the HTML form is what the widget shows.  Both carry the same words, so
no meaning is lost in either, and no meaning is carried by colour alone: a changed value
is marked with a symbol *and* a word (``▲ changed`` / ``= same``); colour in the CSS only
repeats it.

Accessibility: HTML tables have a ``<caption>`` and ``<th scope="col">`` headers, and the
first column is a ``<th scope="row">`` when it names the row (screen readers announce
"cr0_wp, bits 13, value 1, changed").
"""
from __future__ import annotations

import dataclasses
import html
import io
from typing import Any, Iterable, Sequence

#: The two change markers; text first so it survives copy-paste and screen readers.
CHANGED = "▲ changed"
SAME = "= same"

#: Inline CSS shipped with every HTML view, so a notebook needs no extra setup and the
#: look is the same in JupyterLab, Voila and a static render.  The colours only repeat
#: what the ▲/= markers and words already say.
CSS = """<style>
.mmu-view{font-family:var(--jp-code-font-family,monospace);font-size:12px}
.mmu-view table{border-collapse:collapse;margin:4px 12px 8px 0;display:inline-table;vertical-align:top}
.mmu-view caption{font-weight:bold;text-align:left;padding:2px 0}
.mmu-view th,.mmu-view td{border:1px solid #bbb;padding:1px 6px;text-align:left}
.mmu-view thead th{background:#eee}
.mmu-view tr.changed{background:#fff3c4;font-weight:bold}
.mmu-view .gp{border:2px solid #b00;padding:4px 8px;margin:4px 0}
.mmu-view .root-outcome{border:2px solid #555;padding:4px 8px;margin:4px 0;display:inline-block}
</style>"""


def esc(value: Any) -> str:
    """HTML-escape anything printable."""
    return html.escape(str(value), quote=True)


def marker(changed: bool) -> str:
    """``▲ changed`` or ``= same``."""
    return CHANGED if changed else SAME


def hexword(value: int, bits: int = 32) -> str:
    """A raw role word as the kernel would print it: zero-padded hex, ``0x0003e7c4``."""
    return f"{value:#0{bits // 4 + 2}x}"


def bit_range(offset: int, width: int) -> str:
    """``"13"`` for one bit, ``"8-10"`` for a field."""
    return str(offset) if width == 1 else f"{offset}-{offset + width - 1}"


@dataclasses.dataclass(frozen=True)
class Table:
    """A small table that renders as aligned text and as accessible HTML.

    ``row_classes`` (one CSS class or "" per row) lets the HTML mark rows, e.g.
    ``"changed"``; the text form must already say the same thing in a column.
    """

    caption: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    row_classes: tuple[str, ...] = ()
    row_headers: bool = True      # first column names the row (<th scope="row">)

    def __post_init__(self) -> None:
        for r in self.rows:
            if len(r) != len(self.headers):
                raise ValueError(f"table {self.caption!r}: row {r!r} has {len(r)} cells, "
                                 f"allowed exactly {len(self.headers)} (one per header)")
        if self.row_classes and len(self.row_classes) != len(self.rows):
            raise ValueError(f"table {self.caption!r}: {len(self.row_classes)} row classes "
                             f"for {len(self.rows)} rows")

    def text(self) -> str:
        cols = [self.headers] + [tuple(str(c) for c in r) for r in self.rows]
        widths = [max(len(r[i]) for r in cols) for i in range(len(self.headers))]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        lines = [self.caption, fmt.format(*self.headers).rstrip(),
                 "  ".join("-" * w for w in widths)]
        lines += [fmt.format(*r).rstrip() for r in cols[1:]]
        return "\n".join(lines)

    def html(self, css_class: str = "") -> str:
        cls = f' class="{esc(css_class)}"' if css_class else ""
        out = [f"<table{cls}><caption>{esc(self.caption)}</caption><thead><tr>"]
        out += [f'<th scope="col">{esc(h)}</th>' for h in self.headers]
        out.append("</tr></thead><tbody>")
        for i, row in enumerate(self.rows):
            rc = self.row_classes[i] if self.row_classes else ""
            out.append(f'<tr class="{esc(rc)}">' if rc else "<tr>")
            for j, cell in enumerate(row):
                if j == 0 and self.row_headers:
                    out.append(f'<th scope="row">{esc(cell)}</th>')
                else:
                    out.append(f"<td>{esc(cell)}</td>")
            out.append("</tr>")
        out.append("</tbody></table>")
        return "".join(out)


@dataclasses.dataclass(frozen=True)
class View:
    """What every render function returns: the same content as text and as HTML.

    ``print(view)`` prints the text; in a notebook, a bare ``view`` displays the HTML.
    """

    text: str
    html: str

    def __str__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        return self.html

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """The text/plain beside the HTML of a bare ``view`` is its text form."""
        printer.text(self.text)


def refused_block(message: str) -> tuple[str, str]:
    """(text, html) of a refusal notice: ``div.refused`` with ``role="alert"``, the one
    look every view and widget gives a change it refused (roles_view, widget_refusals)."""
    return message, f'<div class="refused" role="alert">{esc(message)}</div>'


def refusal_view(message: str, kept: View) -> View:
    """What a widget shows after refusing a change: why, above the view it kept (the
    controls went back, so ``kept`` still describes them)."""
    line = f"✘ refused, nothing changed: {message}"
    text, html_ = refused_block(line)
    return View(f"{text}\n\n{kept.text}", html_ + kept.html)


def wrap_html(body: str, css_class: str) -> str:
    """Wrap a view's HTML body in a ``div.mmu-view.<css_class>`` with the shared CSS."""
    return f'{CSS}<div class="mmu-view {esc(css_class)}">{body}</div>'


def figure_svg(fig: Any) -> str:
    """A figure as SVG text, for ``display(SVG(...))`` or a view's HTML.

    The book's figures are its own SVG (:class:`mmu.book.views.svg.SvgFigure`, drawn
    without matplotlib so that every chapter also runs in the live edition): their text
    is returned as it is.  A matplotlib ``Figure`` (no pyplot, no global state) is still
    accepted and saved as deterministic SVG (no date stamp, fixed id salt); matplotlib
    is imported only then.
    """
    from mmu.book.views.svg import SvgFigure
    if isinstance(fig, SvgFigure):
        return fig.svg
    savefig = getattr(fig, "savefig", None)
    if savefig is None:
        raise TypeError(f"fig must be an SvgFigure or a matplotlib Figure, not "
                        f"{type(fig).__name__}")
    import matplotlib
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "mmu"}):
        savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()


def role_rows(role: Any, era: Any = None) -> list[tuple[str, int, int, int]]:
    """``(field, bit offset, width, value)`` of a role object, in bit order.

    Works for anything with a ``fields()`` method returning such rows (PageRole,
    ExtendedRole, CpuRole in :mod:`mmu.kvm.roles`; MmuRole in :mod:`mmu.kvm.legacy`).
    ``era`` (a kernel era name or Era) adds the fields only some kernels have, such as
    6.14's ``is_mirror`` (:meth:`mmu.kvm.roles.PageRole.layout`).
    """
    fields = getattr(role, "fields", None)
    if fields is None:
        raise TypeError(f"role must have a fields() method (a PageRole, ExtendedRole or "
                        f"CpuRole), not {type(role).__name__}")
    rows = fields() if era is None else fields(era=era)
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def role_field_table(caption: str, new: Any, old: Any = None, *,
                     only: Iterable[str] | None = None, era: Any = None) -> Table:
    """A role's fields (name, bits, value) and, given ``old``, the old value and a
    change marker per field.  ``only`` limits the rows to some field names (the
    markers still compare the same fields); ``era`` as for :func:`role_rows`."""
    keep = set(only) if only is not None else None
    new_rows = role_rows(new, era)
    old_vals = {name: v for name, _, _, v in role_rows(old, era)} if old is not None else {}
    rows, classes = [], []
    for name, off, width, value in new_rows:
        if keep is not None and name not in keep:
            continue
        if old is None:
            rows.append((name, bit_range(off, width), str(value)))
            continue
        before = old_vals.get(name)
        changed = before != value
        rows.append((name, bit_range(off, width), "-" if before is None else str(before),
                     str(value), marker(changed)))
        classes.append("changed" if changed else "")
    headers = ("field", "bits", "value") if old is None else \
        ("field", "bits", "before", "now", "change")
    return Table(caption, headers, tuple(rows), tuple(classes))


def changed_fields(new: Any, old: Any) -> list[tuple[str, int, int]]:
    """``[(field, old, new)]`` for the fields that differ (by name, in bit order)."""
    old_vals = {name: v for name, _, _, v in role_rows(old)}
    return [(name, old_vals.get(name), v) for name, _, _, v in role_rows(new)
            if old_vals.get(name) != v]


def bullet_text(items: Sequence[str]) -> str:
    return "\n".join(f"  * {s}" for s in items)


def bullet_html(items: Sequence[str]) -> str:
    return "<ul>" + "".join(f"<li>{esc(s)}</li>" for s in items) + "</ul>"


def count_noun(n: int, noun: str) -> str:
    """``"1 shadow page"``, ``"4 shadow pages"``: a count with its noun, plural when due."""
    return f"{n} {noun}{'' if n == 1 else 's'}"
