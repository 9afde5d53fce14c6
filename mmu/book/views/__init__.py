"""Pure render functions: model state in, text and HTML out (no widgets, no I/O).

Each view returns a :class:`~mmu.book.views.common.View` with ``.text`` and ``.html``; the
thin ipywidgets layer in :mod:`mmu.book.widgets` only calls them.  Shared primitives (tables,
change markers, role field tables) are in :mod:`mmu.book.views.common`; conventions are in
docs/notebooks.md.
"""
from mmu.book.views.common import CHANGED, SAME, Table, View, marker, role_field_table

__all__ = ["CHANGED", "SAME", "Table", "View", "marker", "role_field_table"]
