"""``make student`` on a fresh clone: copies without solutions that run to the end.

* The copies are made exactly as a teacher does -- ``make student`` and ``make student
  ROSTER=...`` in a fresh ``git clone`` of this repository -- inside the clone.
* No solution text leaks: every line removed from a solution region (and every line of a
  cell tagged ``solution``) is searched for in the copy's cells.
* Each copy is clean (no outputs, counts or widget state; one H1) and runs top to bottom
  under nbclient with the same interpreter with no exception at all: every problem cell
  prints its problem, every check cell prints "not answered yet" once.
* With a roster, each student's copy carries the student's own seeds and id.
* The tool's refusals (issue 11): near-miss markers, markers of the other cell type, a
  near-miss ``solution`` tag, a destination equal to or inside the source, malformed
  notebooks -- each a ValueError naming the file (and cell), and no copy written at all.

(The solution notebooks themselves are run by nbval: exercises/ is a testpath; every
solution region is also executed against its problem below.)
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from conftest import REPO
from mmu.book.exercises.base import registry
from mmu.book.exercises.notebooks import GRADE_LINE, LABS, build_lab, exercise_of, lab_of
from mmu.book.exercises.seeds import exercise_seeds
from mmu.book.exercises.student import STUB, make_student_copies, solution_lines
from test_notebook_hygiene import notebook_problems

KINDS = tuple(LABS)     # every lab notebook, new ones included
SOURCES = {k: REPO / "exercises" / f"{k}.ipynb" for k in KINDS}
GRADE = GRADE_LINE
ROSTER = ("ada", "grace")


def _significant(line: str) -> bool:
    """Lines worth grepping for: some letters or digits, not just a bracket."""
    s = line.strip()
    return len(s) >= 6 and any(c.isalnum() for c in s)


def _make_student(tmp_path_factory, *args: str) -> Path:
    """``make student [ROSTER=...]`` in a fresh clone of HEAD; returns the clone's student/."""
    if shutil.which("git") is None or shutil.which("make") is None:
        pytest.skip("git and make are needed to test `make student` on a fresh clone")
    clone = tmp_path_factory.mktemp("student") / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    bin_dir = Path(sys.executable).parent
    run = subprocess.run(["make", "--no-print-directory", "-o", ".venv/.installed", "student",
                          f"BIN={bin_dir}", *args], cwd=clone, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    return clone / "student"


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory) -> Path:
    out = _make_student(tmp_path_factory)
    made = sorted(p.name for p in out.glob("*.ipynb"))
    committed = sorted(p.name for p in (out.parent / "exercises").glob("*.ipynb"))
    assert made == committed and made, (made, committed)
    return out


@pytest.fixture(scope="module")
def roster_dir(tmp_path_factory) -> Path:
    roster = tmp_path_factory.mktemp("roster") / "roster.csv"
    roster.write_text("student\n" + "\n".join(ROSTER) + "\n")
    return _make_student(tmp_path_factory, f"ROSTER={roster}")


def _sources(nb) -> str:
    return "\n".join(c.source for c in nb.cells)


def test_every_lab_has_a_copy(student_dir):
    assert {p.stem for p in student_dir.glob("*.ipynb")} == set(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_no_solution_text_leaks(kind, student_dir):
    source = nbformat.read(SOURCES[kind], as_version=4)
    copy = nbformat.read(student_dir / f"{kind}.ipynb", as_version=4)
    text = _sources(copy)
    lines = [ln.strip() for ln in solution_lines(source) if _significant(ln)]
    assert lines, f"{kind}: the solution notebook has no marked solutions"
    leaked = [ln for ln in lines if ln in text]
    assert not leaked, f"{kind}: solution lines in the student copy: {leaked[:5]}"
    assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text
    graded = sum(c.source.count(GRADE) for c in copy.cells if c.cell_type == "code")
    assert text.count(f"answer = {STUB}") == graded > 0


@pytest.mark.parametrize("kind", KINDS)
def test_copy_is_clean(kind, student_dir):
    nb = nbformat.read(student_dir / f"{kind}.ipynb", as_version=nbformat.NO_CONVERT)
    assert notebook_problems(nb) == []


def test_leak_check_can_fail(tmp_path):
    """A region without markers is not stripped, and the grep sees it."""
    nb = nbformat.read(SOURCES["walks"], as_version=4)
    cell = next(c for c in nb.cells if "BEGIN SOLUTION" in c.source)
    secret = solution_lines(nb)[1].strip()
    nb.cells.append(nbformat.v4.new_code_cell(secret))     # an unmarked copy of a solution
    src = tmp_path / "src"
    src.mkdir()
    nbformat.write(nb, src / "walks.ipynb")
    (out,) = make_student_copies(src, tmp_path / "out")
    assert secret in _sources(nbformat.read(out, as_version=4))
    assert cell.source.startswith("# BEGIN SOLUTION")


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    """One kernel running this interpreter, shared by the notebooks (each notebook
    redefines what it uses; starting a kernel costs more than running a lab).  The
    kernelspec "python3" is written to a tmp dir placed first on JUPYTER_PATH."""
    import os
    from jupyter_client import KernelManager
    d = tmp_path_factory.mktemp("jupyter")
    spec = d / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "tests", "language": "python"}))
    saved = {k: os.environ.get(k) for k in ("JUPYTER_PATH", "JUPYTER_PLATFORM_DIRS")}
    os.environ["JUPYTER_PATH"] = str(d)
    os.environ["JUPYTER_PLATFORM_DIRS"] = "0"
    km = KernelManager(kernel_name="python3")
    try:
        km.start_kernel(cwd=str(REPO))
        yield km
    finally:
        if km.has_kernel:
            km.shutdown_kernel(now=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run_clean(nb, kernel, kind: str, seeds) -> None:
    """Run a copy to the end: no error output anywhere; each problem cell prints its
    problem (with the expected seed), each check cell "not answered yet" once."""
    from nbclient import NotebookClient
    NotebookClient(nb, km=kernel, timeout=120, allow_errors=True).execute()
    errors = [(i, o.ename, o.evalue) for i, c in enumerate(nb.cells) if c.cell_type == "code"
              for o in c.outputs if o.output_type == "error"]
    assert errors == [], errors
    for cell in nb.cells:
        marked = exercise_of(cell)
        if marked is None:
            continue
        text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
        n, part = marked
        if part == "problem":
            assert f"(seed {seeds[n - 1][0]}, difficulty {seeds[n - 1][1]})" in text, text
        else:
            assert text.count("not answered yet") == 1 and text.count("✘") == 1, text
            assert "Traceback" not in text
            # printed once: grade() returns nothing for the cell to display again
            assert [o.output_type for o in cell.outputs] == ["stream"], cell.outputs


@pytest.mark.parametrize("kind", KINDS)
def test_student_copy_runs_to_the_end(kind, student_dir, kernel):
    nb = nbformat.read(student_dir / f"{kind}.ipynb", as_version=4)
    assert lab_of(nb) == kind and "student" not in nb.metadata["mmu"]
    _run_clean(nb, kernel, kind, exercise_seeds(kind))


def test_roster_copies_carry_each_students_seeds(roster_dir, kernel):
    """One folder per student; the problem cells hold that student's seeds (different
    from the other student's and from the lab's own); one lab per student runs clean."""
    assert sorted(p.name for p in roster_dir.iterdir()) == sorted(ROSTER)
    for student in ROSTER:
        assert {p.stem for p in (roster_dir / student).glob("*.ipynb")} == set(KINDS)
        for kind in KINDS:
            nb = nbformat.read(roster_dir / student / f"{kind}.ipynb", as_version=4)
            assert nb.metadata["mmu"] == {"lab": kind, "student": student}
            seeds = [int(c.source.split("seed=")[1].split(",")[0]) for c in nb.cells
                     if (exercise_of(c) or (0, ""))[1] == "problem"]
            assert seeds == [s for s, _ in exercise_seeds(kind, student)]
            text = _sources(nb)
            source = nbformat.read(SOURCES[kind], as_version=4)
            leaked = [ln.strip() for ln in solution_lines(source)
                      if _significant(ln) and ln.strip() in text]
            assert not leaked and "SOLUTION" not in text, (student, kind, leaked[:3])
        mine = {k: exercise_seeds(k, student) for k in KINDS}
        assert all(mine[k] != exercise_seeds(k) for k in KINDS)
    assert all(exercise_seeds(k, ROSTER[0]) != exercise_seeds(k, ROSTER[1]) for k in KINDS)
    nb = nbformat.read(roster_dir / ROSTER[1] / "walks.ipynb", as_version=4)
    _run_clean(nb, kernel, "walks", exercise_seeds("walks", ROSTER[1]))


@pytest.mark.parametrize("kind", KINDS)
def test_every_solution_region_passes_its_problem(kind):
    """The solution notebooks' answers, executed, pass the check of the problem printed
    above them (grade() no longer raises, so nbval alone would not see a wrong one)."""
    nb = nbformat.read(SOURCES[kind], as_version=4)
    seeds = exercise_seeds(kind)
    checked = 0
    for cell in nb.cells:
        if exercise_of(cell) is None or exercise_of(cell)[1] != "check":
            continue
        n = exercise_of(cell)[0]
        problem = registry()[kind](*seeds[n - 1])
        code = cell.source.replace(GRADE, "")
        space: dict = {}
        exec(compile(code, f"{kind} exercise {n}", "exec"), space)   # our own solution text
        assert problem.check(space["answer"]).ok, (kind, n, problem.check(space["answer"]))
        checked += 1
    assert checked == len(LABS[kind]["exercises"])


@pytest.mark.parametrize("kind", KINDS)
def test_committed_lab_is_what_the_generator_writes(kind):
    """The metadata the grader reads (lab, exercise cells) is in the committed notebook:
    a filter that strips it, or a hand edit, shows up here."""
    committed = nbformat.read(SOURCES[kind], as_version=4)
    built = build_lab(kind)
    assert committed.metadata.get("mmu") == built.metadata["mmu"] == {"lab": kind}
    assert [(c.cell_type, c.source, c.metadata.get("mmu")) for c in committed.cells] == \
        [(c.cell_type, c.source, c.metadata.get("mmu")) for c in built.cells]


# ---------------------------------------------------------------------------
# The student tool refuses what it cannot strip with certainty
# ---------------------------------------------------------------------------

def _write(tmp_path, cells, name="lab.ipynb", src="src") -> Path:
    d = tmp_path / src
    d.mkdir(exist_ok=True)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Lab")] + cells
    nbformat.write(nb, d / name)
    return d


def test_every_line_end_is_a_line_end(tmp_path):
    for sep in ("\r", "\r\n", "\n", "\u2028"):
        src = _write(tmp_path, [nbformat.v4.new_code_cell(
            sep.join(["# BEGIN SOLUTION", "answer = 0x5ec7e7", "# END SOLUTION",
                      "problem.grade(answer)"]))], src=f"s{ord(sep[-1])}")
        (out,) = make_student_copies(src, tmp_path / f"out{ord(sep[-1])}")
        text = out.read_text()
        assert "5ec7e7" not in text and "SOLUTION" not in text, (repr(sep), text)
        assert f"answer = {STUB}" in text


@pytest.mark.parametrize("line", ["#BEGIN SOLUTION", "# begin solution", "# BEGIN SOLUTION:",
                                  "## BEGIN SOLUTION", "x = 1  # BEGIN SOLUTION",
                                  "# BEGIN_SOLUTION", "# END SOLUTIONS", "# Begin Solution"])
def test_a_near_miss_marker_is_an_error_naming_file_and_cell(tmp_path, line):
    src = _write(tmp_path, [nbformat.v4.new_code_cell("x = 0"),
                            nbformat.v4.new_code_cell(f"{line}\nanswer = 0x5ec7e7\n"
                                                      f"# END SOLUTION")])
    with pytest.raises(ValueError, match=r"lab\.ipynb cell 2: line .* looks like a solution "
                                         r"marker"):
        make_student_copies(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("cell,match", [
    (nbformat.v4.new_markdown_cell("# BEGIN SOLUTION\nthe answer is 42\n# END SOLUTION"),
     "code cell's marker in a markdown cell"),
    (nbformat.v4.new_code_cell("<!-- BEGIN SOLUTION -->\nanswer = 42\n<!-- END SOLUTION -->"),
     "markdown cell's marker in a code cell"),
])
def test_a_marker_of_the_other_cell_type_is_an_error(tmp_path, cell, match):
    src = _write(tmp_path, [cell])
    with pytest.raises(ValueError, match=f"lab\\.ipynb cell 1: .*{match}"):
        make_student_copies(src, tmp_path / "out")


@pytest.mark.parametrize("tag", ["Solution", "SOLUTION", "solutions", " solution"])
def test_a_near_miss_tag_is_an_error(tmp_path, tag):
    cell = nbformat.v4.new_code_cell("answer = 0x5ec7e7")
    cell.metadata["tags"] = [tag]
    src = _write(tmp_path, [cell])
    with pytest.raises(ValueError, match=r"lab\.ipynb cell 1: tag .* looks like 'solution'"):
        make_student_copies(src, tmp_path / "out")
    cell.metadata["tags"] = ["solution"]                 # the exact tag drops the cell
    src = _write(tmp_path, [cell], src="ok")
    (out,) = make_student_copies(src, tmp_path / "ok-out")
    assert "5ec7e7" not in out.read_text()


def test_a_destination_equal_to_or_inside_the_source_is_refused(tmp_path):
    src = _write(tmp_path, [nbformat.v4.new_code_cell("# BEGIN SOLUTION\na = 1\n"
                                                      "# END SOLUTION")])
    before = (src / "lab.ipynb").read_bytes()
    for dest in (src, src / ".", src / "student", src / "a" / "b", tmp_path / "src" / ".."
                 / "src"):
        with pytest.raises(ValueError, match="source directory"):
            make_student_copies(src, dest)
    assert (src / "lab.ipynb").read_bytes() == before
    assert sorted(p.name for p in src.iterdir()) == ["lab.ipynb"]


MALFORMED = {
    "not-json.ipynb": "{ this is not json",
    "a-list.ipynb": "[1, 2, 3]",
    "no-cells.ipynb": json.dumps({"metadata": {}, "nbformat": 4, "nbformat_minor": 5}),
    "cells-not-list.ipynb": json.dumps({"cells": {}, "metadata": {}, "nbformat": 4,
                                        "nbformat_minor": 5}),
    "version-3.ipynb": json.dumps({"worksheets": [], "cells": [], "metadata": {},
                                   "nbformat": 3, "nbformat_minor": 0}),
    "bad-cell.ipynb": json.dumps({"cells": [{"cell_type": "code", "source": 5}],
                                  "metadata": {}, "nbformat": 4, "nbformat_minor": 4}),
    "bad-type.ipynb": json.dumps({"cells": [{"cell_type": "widget", "source": "",
                                             "metadata": {}}],
                                  "metadata": {}, "nbformat": 4, "nbformat_minor": 4}),
    "not-utf8.ipynb": b"\xff\xfe{}",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_a_malformed_notebook_is_an_error_naming_it_and_nothing_is_written(tmp_path, name):
    src = _write(tmp_path, [nbformat.v4.new_code_cell("x = 1")], name="a-good-one.ipynb")
    body = MALFORMED[name]
    (src / name).write_bytes(body if isinstance(body, bytes) else body.encode())
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        make_student_copies(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()          # not even the good notebook's copy


def test_an_edited_problem_cell_cannot_get_a_student_seed(tmp_path):
    nb = nbformat.read(SOURCES["walks"], as_version=4)
    cell = next(c for c in nb.cells if exercise_of(c) == (2, "problem"))
    cell.source = cell.source.replace("seed=", "seed=1")
    (tmp_path / "src").mkdir()
    nbformat.write(nb, tmp_path / "src" / "walks.ipynb")
    with pytest.raises(ValueError, match="cell 7: exercise 2's problem cell"):
        make_student_copies(tmp_path / "src", tmp_path / "out", ["ada"])
    make_student_copies(tmp_path / "src", tmp_path / "plain")     # without a roster: fine
    assert not (tmp_path / "out").exists()

