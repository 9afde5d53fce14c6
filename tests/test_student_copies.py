"""``make student`` on a fresh clone: copies without solutions that fail cleanly.

* The copies are made exactly as a teacher does -- ``make student`` in a fresh ``git clone``
  of this repository -- into a temporary directory (never into the working tree).
* No solution text leaks: every line removed from a solution region (and every line of a
  cell tagged ``solution``) is searched for in the copy's cells.
* Each copy is clean (no outputs, counts or widget state; one H1) and runs top to bottom
  under nbclient with the same interpreter: the only errors are the graded cells' own
  :class:`~mmu.book.exercises.base.CheckFailed` with a hint, one per exercise.

(The solution notebooks themselves are run by nbval: exercises/ is a testpath.)
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
from mmu.book.exercises.notebooks import LABS
from mmu.book.exercises.student import STUB, make_student_copies, solution_lines
from test_notebook_hygiene import notebook_problems

KINDS = tuple(LABS)     # every lab notebook, new ones included
SOURCES = {k: REPO / "exercises" / f"{k}.ipynb" for k in KINDS}
GRADE = "problem.grade(answer)"


def _significant(line: str) -> bool:
    """Lines worth grepping for: some letters or digits, not just a bracket."""
    s = line.strip()
    return len(s) >= 6 and any(c.isalnum() for c in s)


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory) -> Path:
    """``make student`` in a fresh clone of HEAD; the copies are moved to a tmp dir."""
    if shutil.which("git") is None or shutil.which("make") is None:
        pytest.skip("git and make are needed to test `make student` on a fresh clone")
    tmp = tmp_path_factory.mktemp("student")
    clone = tmp / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    bin_dir = Path(sys.executable).parent
    run = subprocess.run(["make", "--no-print-directory", "-o", ".venv/.installed", "student",
                          f"BIN={bin_dir}"], cwd=clone, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    out = clone / "exercises" / "student"
    made = sorted(p.name for p in out.glob("*.ipynb"))
    committed = sorted(p.name for p in (clone / "exercises").glob("*.ipynb"))
    assert made == committed and made, (made, committed)
    return out


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
    """One kernel running this interpreter, shared by the six notebooks (each notebook
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


@pytest.mark.parametrize("kind", KINDS)
def test_student_copy_fails_cleanly_with_hints(kind, student_dir, kernel):
    from nbclient import NotebookClient
    nb = nbformat.read(student_dir / f"{kind}.ipynb", as_version=4)
    NotebookClient(nb, km=kernel, timeout=120, allow_errors=True).execute()
    errors = [(i, o) for i, c in enumerate(nb.cells) if c.cell_type == "code"
              for o in c.outputs if o.output_type == "error"]
    graded = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and GRADE in c.source]
    assert [i for i, _ in errors] == graded, [(i, o.ename, o.evalue) for i, o in errors]
    for _, err in errors:
        assert err.ename == "CheckFailed", (err.ename, err.evalue)
        assert "hint:" in err.evalue and "not answered yet" in err.evalue
