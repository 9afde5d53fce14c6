"""Export a lab to otter-grader's assign format (its "v1" notebook format), without
depending on otter.

``python -m mmu.book.exercises.otter exercises/walks.ipynb out/walks.ipynb`` writes a master
notebook for ``otter assign``:

* a raw ``# ASSIGNMENT CONFIG`` cell first (``name``: the lab; exception-free OK-format
  tests, otter's default);
* each exercise's check cell becomes one question, between raw ``# BEGIN QUESTION``
  (``name: q<n>``, one point) and ``# END QUESTION`` cells.  Its solution keeps our
  ``# BEGIN SOLUTION`` / ``# END SOLUTION`` lines, which otter strips the same way, and its
  answer is renamed ``answer_<n>``: otter may run tests after later cells, and every
  exercise here calls its answer ``answer``;
* two tests per question between raw ``# BEGIN TESTS`` / ``# END TESTS`` cells: a public
  one (the answer is filled in) and a hidden one that re-creates the problem from its seed
  and checks the answer -- the output otter records is ``True``.

Otter grades the lab's own seeds only (it has no roster); per-student problems and the
tamper flags are :mod:`mmu.book.exercises.grade`'s.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

__all__ = ["to_otter", "main"]

_ANSWER = re.compile(r"^answer(\s*=)", re.MULTILINE)


def _raw(text: str):
    return nbformat.v4.new_raw_cell(text)


def to_otter(nb) -> nbformat.NotebookNode:
    """The otter master notebook of one lab notebook (with solutions)."""
    from mmu.book.exercises.notebooks import GRADE_LINE, exercise_of, lab_of
    from mmu.book.exercises.seeds import exercise_seeds
    lab = lab_of(nb)
    if lab is None:
        raise ValueError("not a lab notebook: no lab in metadata.mmu.lab")
    seeds = exercise_seeds(lab)
    out = nbformat.v4.new_notebook(metadata={k: v for k, v in nb.metadata.items()
                                             if k in ("kernelspec", "language_info")})
    out.cells.append(_raw(f"# ASSIGNMENT CONFIG\nname: {lab}\nexport_cell: false\n"
                          f"init_cell: true\ncheck_all_cell: false"))
    for cell in nb.cells:
        marked = exercise_of(cell)
        if marked is None or marked[1] != "check":
            out.cells.append(nbformat.from_dict(dict(cell, metadata={})))
            continue
        n = marked[0]
        seed, difficulty = seeds[n - 1]
        name = f"answer_{n}"
        body = _ANSWER.sub(name + r"\1", cell.source).replace(GRADE_LINE,
                                                              f"problem.grade({name})")
        if name not in body:
            raise ValueError(f"exercise {n}: its check cell assigns no `answer`")
        out.cells += [
            _raw(f"# BEGIN QUESTION\nname: q{n}\npoints: 1"),
            nbformat.v4.new_code_cell(body),
            _raw("# BEGIN TESTS"),
            nbformat.v4.new_code_cell(f"{name} is not ...  # filled in"),
            nbformat.v4.new_code_cell(
                f"# HIDDEN\nfrom mmu.book.exercises.{lab} import make_problem as _make\n"
                f"_make(seed={seed}, difficulty={difficulty}).check({name}).ok"),
            _raw("# END TESTS"),
            _raw("# END QUESTION"),
        ]
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m mmu.book.exercises.otter LAB.ipynb OUT.ipynb", file=sys.stderr)
        return 2
    from mmu.book.exercises.student import read_notebook
    src, dest = Path(argv[0]), Path(argv[1])
    try:
        nb = to_otter(read_notebook(src))
    except ValueError as e:
        print(f"error: {src}: {e}", file=sys.stderr)
        return 1
    if dest.resolve() == src.resolve():
        print("error: OUT must not be the lab notebook itself", file=sys.stderr)
        return 1
    dest.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, dest)
    print(f"wrote {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
