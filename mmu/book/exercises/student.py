"""One source, two outputs: make student copies of the exercise notebooks.

``python -m mmu.book.exercises.student exercises/ student/ [--roster roster.csv]``
(``make student [ROSTER=roster.csv]``) reads every ``*.ipynb`` in the source directory and
writes a copy -- one per lab, or with a roster one per student and lab, into
``DEST/<student id>/`` -- in which

* every code region between a line ``# BEGIN SOLUTION`` and a line ``# END SOLUTION`` is
  replaced by one stub line, ``<name> = ...  # your answer`` (``<name>`` = the first name
  the region assigns, usually ``answer``), indented like the markers;
* every markdown region between ``<!-- BEGIN SOLUTION -->`` and ``<!-- END SOLUTION -->``
  becomes ``*(your answer)*``;
* cells tagged ``solution`` are dropped;
* outputs, execution counts and metadata are removed, except the kernelspec, cell tags
  and the ``mmu`` entries the grader reads (the lab, the student id, which cell is which
  exercise's problem and check);
* with a roster, each exercise's problem cell gets the student's seed
  (:mod:`mmu.book.exercises.seeds`).

It strips only what it can strip with certainty, and refuses the rest: a line that looks
like a marker but is not exactly one (``#BEGIN SOLUTION``, ``# begin solution``,
``# BEGIN SOLUTION:``, a marker after code, a code marker in a markdown cell or the
reverse), a tag that looks like ``solution`` but is not exactly it, unbalanced markers,
a notebook that is not a valid notebook, and a destination that is the source directory
or inside it.  Each refusal is a ValueError naming the file (and cell), and a refused run
writes nothing: every copy is made in memory first.  Line ends are split with
``str.splitlines`` (``\\n``, ``\\r\\n``, ``\\r`` and the rest alike).  :func:`solution_lines`
lists what was removed, for the test that greps the copies for leaks.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import nbformat

__all__ = ["BEGIN", "END", "MD_BEGIN", "MD_END", "STUB", "strip_solutions", "student_copy",
           "solution_lines", "read_notebook", "make_student_copies", "main"]

BEGIN = "# BEGIN SOLUTION"
END = "# END SOLUTION"
MD_BEGIN = "<!-- BEGIN SOLUTION -->"
MD_END = "<!-- END SOLUTION -->"
STUB = "...  # your answer"
MD_STUB = "*(your answer)*"
SOLUTION_TAG = "solution"
_ASSIGN = re.compile(r"^\s*([A-Za-z_]\w*)\s*=(?!=)")
#: Anything that reads as a marker once case, spaces and punctuation are ignored.
_LOOKS_LIKE = re.compile(r"(begin|end)[\W_]*solutions?\b", re.IGNORECASE)
_KEPT_NB_METADATA = ("kernelspec", "language_info")


def strip_solutions(source: str, *, markdown: bool = False, where: str = "cell"
                    ) -> tuple[str, list[str]]:
    """``(student source, removed lines)`` for one cell's source."""
    begin, end = (MD_BEGIN, MD_END) if markdown else (BEGIN, END)
    other = (BEGIN, END) if markdown else (MD_BEGIN, MD_END)
    out: list[str] = []
    removed: list[str] = []
    region: list[str] | None = None
    indent = ""
    for line in source.splitlines():
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
        if _LOOKS_LIKE.search(line):
            kind = "a markdown cell's marker in a code cell" if mark in other and not markdown \
                else "a code cell's marker in a markdown cell" if mark in other \
                else f"not exactly {begin!r} or {end!r}"
            raise ValueError(f"{where}: line {line.strip()!r} looks like a solution marker "
                             f"but is {kind}; refusing to guess what to strip")
        (out if region is None else region).append(line)
    if region is not None:
        raise ValueError(f"{where}: {begin!r} without {end!r}")
    return "\n".join(out), removed


def _tags(cell, where: str) -> list[str]:
    tags = cell.get("metadata", {}).get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ValueError(f"{where}: metadata.tags must be a list of str")
    for t in tags:
        if t != SOLUTION_TAG and t.strip().lower().rstrip("s") == SOLUTION_TAG:
            raise ValueError(f"{where}: tag {t!r} looks like {SOLUTION_TAG!r} but is not "
                             f"exactly it; refusing to guess whether to drop the cell")
    return list(tags)


def _cells(nb, path: str):
    for i, cell in enumerate(nb.cells):
        yield f"{path} cell {i}", cell


def student_copy(nb: nbformat.NotebookNode, path: str = "notebook", *,
                 student: str | None = None) -> nbformat.NotebookNode:
    """A new notebook: solutions replaced by stubs, tagged cells dropped, outputs cleared;
    with ``student``, each exercise's problem cell holds that student's seed."""
    from mmu.book.exercises.notebooks import exercise_of, lab_of, problem_source
    from mmu.book.exercises.seeds import exercise_seeds
    lab = lab_of(nb)
    seeds = own = None
    if student is not None:
        if lab is None:
            raise ValueError(f"{path}: no lab in metadata.mmu.lab, so no per-student problems "
                             f"can be made from it")
        seeds, own = exercise_seeds(lab, student), exercise_seeds(lab)
    out = nbformat.v4.new_notebook()
    out.metadata = {k: v for k, v in nb.metadata.items() if k in _KEPT_NB_METADATA}
    if lab is not None:
        out.metadata["mmu"] = {"lab": lab, **({"student": student} if student else {})}
    for where, cell in _cells(nb, path):
        tags = _tags(cell, where)
        if SOLUTION_TAG in tags:
            continue
        source, _ = strip_solutions(cell.source, markdown=cell.cell_type == "markdown",
                                    where=where)
        marked = exercise_of(cell) if lab is not None else None
        if seeds is not None and marked is not None and marked[1] == "problem":
            n = marked[0]
            if n > len(seeds) or source != problem_source(*own[n - 1]):
                raise ValueError(f"{where}: exercise {n}'s problem cell is not the one the "
                                 f"generator wrote, so its seed cannot be replaced safely")
            source = problem_source(*seeds[n - 1])
        if cell.cell_type == "code":
            new = nbformat.v4.new_code_cell(source)
        elif cell.cell_type == "markdown":
            new = nbformat.v4.new_markdown_cell(source)
        else:
            new = nbformat.v4.new_raw_cell(source)
        if tags:
            new.metadata["tags"] = tags
        if marked is not None:
            new.metadata["mmu"] = {"exercise": marked[0], "cell": marked[1]}
        out.cells.append(new)
    if seeds is not None:
        found = sorted(n for c in out.cells if (m := exercise_of(c)) and m[1] == "problem"
                       for n in [m[0]])
        if found != list(range(1, len(seeds) + 1)):
            raise ValueError(f"{path}: expected problem cells for exercises 1-{len(seeds)}, "
                             f"found {found}")
    return out


def solution_lines(nb: nbformat.NotebookNode, path: str = "notebook") -> list[str]:
    """Every line a student copy must not contain (regions and tagged cells)."""
    lines: list[str] = []
    for where, cell in _cells(nb, path):
        if SOLUTION_TAG in _tags(cell, where):
            lines += cell.source.splitlines()
            continue
        lines += strip_solutions(cell.source, markdown=cell.cell_type == "markdown",
                                 where=where)[1]
    return lines


def read_notebook(path: str | Path) -> nbformat.NotebookNode:
    """A valid nbformat-4 notebook from ``path``, or a ValueError naming the file and what
    is wrong (not JSON, not a notebook, an invalid cell ...)."""
    path = Path(path)
    try:
        raw = path.read_bytes().decode("utf-8")
        data = json.loads(raw)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable notebook (JSON): {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list) \
            or not isinstance(data.get("metadata", {}), dict):
        raise ValueError(f"{path}: not a notebook: expected a JSON object with a 'cells' "
                         f"list and a 'metadata' object")
    if data.get("nbformat") != 4:
        raise ValueError(f"{path}: nbformat {data.get('nbformat')!r}; only version 4 is read")
    try:
        nb = nbformat.reads(raw, as_version=4)
        nbformat.validate(nb)
    except Exception as e:               # nbformat raises several types; all mean "invalid"
        msg = getattr(e, "message", None) or str(e)
        raise ValueError(f"{path}: not a valid notebook: {msg.splitlines()[0][:300]}") from None
    for i, cell in enumerate(nb.cells):
        if not isinstance(cell.get("source"), str):
            raise ValueError(f"{path} cell {i}: source is not text")
    return nb


def _refuse_overlap(src: Path, dest: Path) -> None:
    s, d = src.resolve(), dest.resolve()
    if d == s or s in d.parents:
        where = "the source directory" if d == s else "inside the source directory"
        raise ValueError(f"destination {str(dest)!r} is {where} {str(src)!r}; write the "
                         f"copies somewhere else (e.g. student/)")


def make_student_copies(src: str | Path, dest: str | Path,
                        roster: list[str] | None = None) -> list[Path]:
    """Write a student copy of every ``src/*.ipynb`` into ``dest`` (with ``roster``, into
    ``dest/<student>/``); returns the paths.  Nothing is written unless every copy can
    be made."""
    from mmu.book.exercises.seeds import check_student_id
    src, dest = Path(src), Path(dest)
    if not src.is_dir():
        raise ValueError(f"source {str(src)!r} is not a directory")
    _refuse_overlap(src, dest)
    notebooks = sorted(src.glob("*.ipynb"))
    if not notebooks:
        raise ValueError(f"no *.ipynb in {str(src)!r}")
    if roster is not None:
        if not roster:
            raise ValueError("the roster lists no students")
        for student in roster:
            check_student_id(student)
        if len(set(roster)) != len(roster):
            raise ValueError("the roster lists a student twice")
    copies: list[tuple[Path, nbformat.NotebookNode]] = []
    for path in notebooks:
        nb = read_notebook(path)
        for student in (roster or [None]):
            copy = student_copy(nb, str(path), student=student)
            nbformat.validate(copy)
            target = dest / student / path.name if student else dest / path.name
            copies.append((target, copy))
    written = []
    for target, copy in copies:                 # everything validated: now write
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(copy, target)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mmu.book.exercises.student",
        description="Write student copies (solutions stripped) of every SRC/*.ipynb.")
    parser.add_argument("src", help="directory of solution notebooks (exercises/)")
    parser.add_argument("dest", help="where the copies go (not inside SRC)")
    parser.add_argument("--roster", help="one student id a line: one copy per student, "
                                         "each with the student's own seeds")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    from mmu.book.exercises.seeds import read_roster
    try:
        roster = read_roster(args.roster) if args.roster else None
        written = make_student_copies(args.src, args.dest, roster)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
