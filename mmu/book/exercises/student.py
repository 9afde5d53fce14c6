"""One source, two outputs: make student copies of the exercise notebooks.

``python -m mmu.book.exercises.student exercises/ exercises/student/`` (``make student``) reads
every ``*.ipynb`` in the source directory and writes a copy in which

* every code region between a line ``# BEGIN SOLUTION`` and a line ``# END SOLUTION`` is
  replaced by one stub line, ``<name> = ...  # your answer`` (``<name>`` = the first name
  the region assigns, usually ``answer``), indented like the markers;
* every markdown region between ``<!-- BEGIN SOLUTION -->`` and ``<!-- END SOLUTION -->``
  becomes ``*(your answer)*``;
* cells tagged ``solution`` are dropped;
* outputs, execution counts and cell metadata other than tags are removed.

Unbalanced markers are refused (ValueError naming the notebook and cell), so a missing
``END`` can never leak the rest of a notebook.  :func:`solution_lines` lists what was
removed, for the test that greps the copies for leaks.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

__all__ = ["BEGIN", "END", "STUB", "strip_solutions", "student_copy", "solution_lines",
           "make_student_copies", "main"]

BEGIN = "# BEGIN SOLUTION"
END = "# END SOLUTION"
MD_BEGIN = "<!-- BEGIN SOLUTION -->"
MD_END = "<!-- END SOLUTION -->"
STUB = "...  # your answer"
MD_STUB = "*(your answer)*"
SOLUTION_TAG = "solution"
_ASSIGN = re.compile(r"^\s*([A-Za-z_]\w*)\s*=(?!=)")


def strip_solutions(source: str, *, markdown: bool = False, where: str = "cell"
                    ) -> tuple[str, list[str]]:
    """``(student source, removed lines)`` for one cell's source."""
    begin, end = (MD_BEGIN, MD_END) if markdown else (BEGIN, END)
    out: list[str] = []
    removed: list[str] = []
    region: list[str] | None = None
    indent = ""
    for line in source.split("\n"):
        mark = line.strip()
        if mark == begin:
            if region is not None:
                raise ValueError(f"{where}: nested {begin!r}")
            region, indent = [], line[: len(line) - len(line.lstrip())]
            continue
        if mark == end:
            if region is None:
                raise ValueError(f"{where}: {end!r} without {begin!r}")
            if markdown:
                out.append(indent + MD_STUB)
            else:
                name = next((m.group(1) for m in map(_ASSIGN.match, region) if m), None)
                out.append(indent + (f"{name} = {STUB}" if name else STUB))
            removed += region
            region = None
            continue
        (out if region is None else region).append(line)
    if region is not None:
        raise ValueError(f"{where}: {begin!r} without {end!r}")
    return "\n".join(out), removed


def _cells(nb, path: str):
    for i, cell in enumerate(nb.cells):
        yield f"{path} cell {i}", cell


def student_copy(nb: nbformat.NotebookNode, path: str = "notebook") -> nbformat.NotebookNode:
    """A new notebook: solutions replaced by stubs, tagged cells dropped, outputs cleared."""
    out = nbformat.v4.new_notebook()
    out.metadata = {k: v for k, v in nb.metadata.items() if k in ("kernelspec", "language_info")}
    for where, cell in _cells(nb, path):
        tags = list(cell.get("metadata", {}).get("tags", []))
        if SOLUTION_TAG in tags:
            continue
        source, _ = strip_solutions(cell.source, markdown=cell.cell_type == "markdown",
                                    where=where)
        if cell.cell_type == "code":
            new = nbformat.v4.new_code_cell(source)
        elif cell.cell_type == "markdown":
            new = nbformat.v4.new_markdown_cell(source)
        else:
            new = nbformat.v4.new_raw_cell(source)
        if tags:
            new.metadata["tags"] = tags
        out.cells.append(new)
    return out


def solution_lines(nb: nbformat.NotebookNode, path: str = "notebook") -> list[str]:
    """Every line a student copy must not contain (regions and tagged cells)."""
    lines: list[str] = []
    for where, cell in _cells(nb, path):
        if SOLUTION_TAG in cell.get("metadata", {}).get("tags", []):
            lines += cell.source.split("\n")
            continue
        lines += strip_solutions(cell.source, markdown=cell.cell_type == "markdown",
                                 where=where)[1]
    return lines


def make_student_copies(src: str | Path, dest: str | Path) -> list[Path]:
    """Write a student copy of every ``src/*.ipynb`` into ``dest``; returns the paths."""
    src, dest = Path(src), Path(dest)
    if not src.is_dir():
        raise ValueError(f"source {str(src)!r} is not a directory")
    notebooks = sorted(src.glob("*.ipynb"))
    if not notebooks:
        raise ValueError(f"no *.ipynb in {str(src)!r}")
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        copy = student_copy(nb, str(path))
        nbformat.validate(copy)
        target = dest / path.name
        nbformat.write(copy, target)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m mmu.book.exercises.student SRC_DIR DEST_DIR", file=sys.stderr)
        return 2
    for path in make_student_copies(*argv):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
