"""The otter-grader export (issue 11, optional part): the delimiter cells otter's v1 format
documents (raw ``# ASSIGNMENT CONFIG`` first; per question ``# BEGIN QUESTION``, a solution
cell with ``# BEGIN SOLUTION``/``# END SOLUTION``, ``# BEGIN TESTS``, test cells,
``# END TESTS``, ``# END QUESTION``), and tests that pass the lab's solution and fail a
wrong answer.  otter itself is not installed here; the tests run the cells as otter would
(in one namespace, in order)."""
from __future__ import annotations

import nbformat
import pytest

from conftest import REPO
from mmu.book.exercises.notebooks import LABS
from mmu.book.exercises.otter import main, to_otter


@pytest.mark.parametrize("kind", ["walks", "roles", "root_reuse"])
def test_export_has_otters_blocks_and_working_tests(kind):
    nb = to_otter(nbformat.read(REPO / "exercises" / f"{kind}.ipynb", as_version=4))
    nbformat.validate(nb)
    raw = [c.source.splitlines()[0] for c in nb.cells if c.cell_type == "raw"]
    n = len(LABS[kind]["exercises"])
    assert raw == ["# ASSIGNMENT CONFIG"] + ["# BEGIN QUESTION", "# BEGIN TESTS",
                                             "# END TESTS", "# END QUESTION"] * n
    space: dict = {}
    question = 0
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            if cell.source.startswith("# BEGIN QUESTION"):
                question += 1
                assert f"name: q{question}" in cell.source
            continue
        *body, last = cell.source.splitlines()
        if nb.cells[i - 1].source == "# BEGIN TESTS" or body[:1] == ["# HIDDEN"]:
            exec("\n".join(body), space)
            assert eval(last, space) is True, (kind, question, cell.source)
            if body[:1] == ["# HIDDEN"]:                   # a wrong answer fails it
                saved = space[f"answer_{question}"]
                space[f"answer_{question}"] = 12345
                assert eval(last, space) is False
                space[f"answer_{question}"] = saved
        else:
            exec(cell.source, space)
            if "BEGIN SOLUTION" in cell.source:
                assert f"answer_{question} = " in cell.source
    assert question == n


def test_export_refuses_a_non_lab(tmp_path):
    nb = nbformat.v4.new_notebook()
    nbformat.write(nb, tmp_path / "x.ipynb")
    assert main([str(tmp_path / "x.ipynb"), str(tmp_path / "y.ipynb")]) == 1
    assert not (tmp_path / "y.ipynb").exists()
    assert main([str(REPO / "exercises" / "walks.ipynb"), str(tmp_path / "o.ipynb")]) == 0
