"""The grader (``python -m mmu.book.exercises.grade``) on a folder of submissions, and the
per-student seeds and roster it relies on.

One folder covers the cases of issue 11: right (under a renamed file in a sub-folder),
wrong, unanswered, a changed seed, a checker monkeypatched and ``problem`` redefined,
an always-equal object, ``solve()`` called, a check cell deleted, a cell that runs past
the time limit, a malformed file, a stray non-notebook JSON, and a roster student who
sent nothing.  The CSV is compared exactly with one written by hand below.

Hand derivations: the expected hints state the SDM's index bits (4-level: PML4E index =
linear-address bits 47:39; 5-level: PML5E index = bits 56:48; 32-bit paging: PDE index =
bits 31:22; PAE: PDPTE index = bits 31:30), and the wrong values are computed from each
problem's linear address with those bits, not taken from the solution.  "Right" answers
are the model's ``solve()`` (pinned to the SDM and the kernel in tests/test_exercises.py).
"""
from __future__ import annotations

import csv
import io
import json
import shutil

import nbformat
import pytest

from conftest import REPO
from mmu.book.exercises import grade as grader
from mmu.book.exercises import walks
from mmu.book.exercises.base import Foreign
from mmu.book.exercises.notebooks import GRADE_LINE, LABS, exercise_of, problem_source
from mmu.book.exercises.seeds import exercise_seeds, read_roster, student_base
from mmu.book.exercises.student import make_student_copies

ROSTER = ["alice", "bob", "carol", "dave", "erin", "gina"]


def _problem(student, n):
    return walks.make_problem(*exercise_seeds("walks", student)[n - 1])


def _right(student, n) -> str:
    return f"answer = {_problem(student, n).solve()!r}"


def _index_rule(p) -> tuple[str, int, str]:
    """(first step, its right value, its rule) for a walk, from the SDM's bit layout."""
    g = p.gva
    return {"4-level": ("PML4E index", (g >> 39) & 0x1FF, "bits 47:39"),
            "5-level": ("PML5E index", (g >> 48) & 0x1FF, "bits 56:48"),
            "32-bit": ("PDE index", (g >> 22) & 0x3FF, "bits 31:22"),
            "PAE": ("PDPTE index", (g >> 30) & 0x3, "bits 31:30")}[p.mode.label]


def _set_check(nb, n, code):
    cell = next(c for c in nb.cells if exercise_of(c) == (n, "check"))
    cell.source = f"{code}\n{GRADE_LINE}"


def _set_problem(nb, n, source):
    next(c for c in nb.cells if exercise_of(c) == (n, "problem")).source = source


def _insert_after_check(nb, n, code):
    i = next(i for i, c in enumerate(nb.cells) if exercise_of(c) == (n, "check"))
    nb.cells.insert(i + 1, nbformat.v4.new_code_cell(code))


@pytest.fixture(scope="module")
def submissions(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grade")
    src = tmp / "src"
    src.mkdir()
    shutil.copy(REPO / "exercises" / "walks.ipynb", src)
    make_student_copies(src, tmp / "copies", ROSTER)
    sub = tmp / "submissions"
    (sub / "inbox").mkdir(parents=True)
    (sub / "erin").mkdir()

    def copy(student):
        return nbformat.read(tmp / "copies" / student / "walks.ipynb", as_version=4)

    # alice: everything right, file renamed on download and put in a sub-folder.
    nb = copy("alice")
    for n in range(1, 5):
        _set_check(nb, n, _right("alice", n))
    nbformat.write(nb, sub / "inbox" / "walks (1).ipynb")

    # bob: 1 wrong type, 2 unanswered (stub left), 3 right, 4 wrong value.
    nb = copy("bob")
    right1 = _problem("bob", 1).solve()
    _set_check(nb, 1, f"answer = {dict(right1, **{'PML4E index': '0x7c'})!r}")
    _set_check(nb, 3, _right("bob", 3))
    name4, idx4, _ = _index_rule(_problem("bob", 4))
    _set_check(nb, 4, f"answer = {dict(_problem('bob', 4).solve(), **{name4: idx4 ^ 1})!r}")
    nbformat.write(nb, sub / "bob.ipynb")

    # carol: seed of exercise 1 changed to the lab's own (answered right for that one);
    # exercise 2 patches the checker and redefines problem; exercise 3 answers mock.ANY.
    nb = copy("carol")
    lab_seed, lab_difficulty = exercise_seeds("walks")[0]
    _set_problem(nb, 1, problem_source(lab_seed, lab_difficulty))
    _set_check(nb, 1, f"answer = {walks.make_problem(lab_seed, lab_difficulty).solve()!r}")
    _set_check(nb, 2, "from mmu.book.exercises.base import Problem, Verdict\n"
                      "Problem.check = lambda self, answer: Verdict(True, total=1)\n"
                      "problem = make_problem(seed=5, difficulty=2)\n"
                      "answer = {'gpa': 0}")
    _set_check(nb, 3, "from unittest import mock\nanswer = mock.ANY")
    nbformat.write(nb, sub / "carol-final.ipynb")

    # dave: 1 right, check cell 2 deleted, solve() in 3, a cell that never ends after 4.
    nb = copy("dave")
    _set_check(nb, 1, _right("dave", 1))
    nb.cells = [c for c in nb.cells if exercise_of(c) != (2, "check")]
    _set_check(nb, 3, "answer = problem.solve()")
    _insert_after_check(nb, 4, "import time\ntime.sleep(120)")
    nbformat.write(nb, sub / "dave.ipynb")

    # erin: a file that is not JSON; and a JSON file that is not a notebook.
    (sub / "erin" / "walks.ipynb").write_text("not a notebook")
    (sub / "stray.json").write_text(json.dumps({"cells": 3}))
    return sub


def expected_csv() -> str:
    """Written by hand from the cases above (values from the SDM rules in _index_rule)."""
    rows = [["student", "walks.1", "walks.2", "walks.3", "walks.4", "score", "out_of",
             "flags", "files"]]
    rows.append(["alice", "passed", "passed", "passed", "passed", 4, 4, "",
                 "inbox/walks (1).ipynb"])
    name4, idx4, bits4 = _index_rule(_problem("bob", 4))
    rows.append(["bob", "wrong: step 'PML4E index': 'PML4E index' must be an int (like 0x1f "
                        "or 31), not str.",
                 "not answered", "passed",
                 f"wrong: step '{name4}': {idx4 ^ 1:#x} is not right. The {name4[:-6]} "
                 f"index is {bits4} of the linear address.", 1, 4, "", "bob.ipynb"])
    lab_seed, _ = exercise_seeds("walks")[0]
    seed1, _ = exercise_seeds("walks", "carol")[0]
    given = (walks.make_problem(lab_seed, 1).gva >> 39) & 0x1FF
    name2, _, bits2 = _index_rule(_problem("carol", 2))
    name3, _, _ = _index_rule(_problem("carol", 3))
    rows.append(["carol",
                 f"wrong: step 'PML4E index': {given:#x} is not right. The PML4E index is "
                 f"bits 47:39 of the linear address.",
                 f"wrong: step '{name2}': missing: fill in '{name2}'. The {name2[:-6]} index "
                 f"is {bits2} of the linear address.",
                 f"wrong: step '{name3}': the answer must be a dict of steps, like "
                 f"problem.template(), not unittest._ANY",
                 "not answered", 0, 4,
                 f"walks: exercise 1's seed changed (seed={lab_seed}, difficulty=1; the "
                 f"student's is seed={seed1}, difficulty=1)", "carol-final.ipynb"])
    rows.append(["dave", "passed", "not answered", "void: solve() used", "void: solve() used",
                 1, 4, "; ".join([
                     "walks: exercise 2's check cell deleted",
                     "walks: solve() used in the code; exercises 3-4 not scored",
                     "walks: time limit reached (6 s a cell, 300 s in all)",
                     "walks: solve() called while grading, by exercise 3's check; "
                     "exercises 3-4 not scored"]), "dave.ipynb"])
    rows.append(["erin", *["not submitted"] * 4, 0, 4,
                 "malformed: erin/walks.ipynb: not a readable notebook (JSON): Expecting "
                 "value: line 1 column 1 (char 0); walks: no submission", "erin/walks.ipynb"])
    rows.append(["gina", *["not submitted"] * 4, 0, 4, "walks: no submission", ""])
    rows.append(["stray", *["not submitted"] * 4, 0, 4,
                 "not in the roster; malformed: stray.json: not a notebook: expected a JSON "
                 "object with a 'cells' list and a 'metadata' object; walks: no submission",
                 "stray.json"])
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue()


def test_grader_writes_the_expected_csv(submissions, tmp_path):
    roster = tmp_path / "roster.csv"
    roster.write_text("student\n" + "\n".join(ROSTER) + "\n")
    scores = tmp_path / "scores.csv"
    code = grader.main([str(submissions), "--roster", str(roster), "--csv", str(scores),
                        "--cell-timeout", "6"])
    assert code == 0
    got = scores.read_text(encoding="utf-8")
    want = expected_csv()
    assert got.splitlines() == want.splitlines()


def test_carol_really_answered_another_problem():
    """The case above only tests something if carol's answer is right for the seed she
    put in and wrong for hers (her first index differs from the lab seed's)."""
    lab_seed, _ = exercise_seeds("walks")[0]
    a = (walks.make_problem(lab_seed, 1).gva >> 39) & 0x1FF
    b = (_problem("carol", 1).gva >> 39) & 0x1FF
    assert a != b


# ---------------------------------------------------------------------------
# The pieces, without a kernel
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("value", [5, True, "kept", ..., [1, "a", ...], {"a": {1, 2}},
                                   frozenset({"x"}), (1, 2), 1 << 70, None, 1.5])
def test_plain_answers_cross_the_kernel_boundary_unchanged(value):
    assert grader.decode_answer(json.loads(grader.encode_answer(value))) == value


def test_other_objects_arrive_as_their_type_name():
    import numpy as np
    from unittest import mock
    for value, name in ((np.int64(5), "numpy.int64"), (mock.ANY, "unittest._ANY"),
                        (complex(5), "complex"), (np.array([1]), "numpy.ndarray")):
        got = grader.decode_answer(json.loads(grader.encode_answer(value)))
        assert isinstance(got, Foreign) and got.name == name
    nested = grader.decode_answer(json.loads(grader.encode_answer({"gpa": [[1]]})))
    assert nested == {"gpa": [[1]]}
    p = walks.make_problem(1, 1)
    v = p.check({**p.solve(), "gpa": Foreign("numpy.float64")})
    assert not v.ok and v.step == "gpa" and "numpy.float64" in v.hint


@pytest.mark.parametrize("source,found", [
    ("answer = problem.solve()", {"solve"}),
    ("x = getattr(problem, 'explain')()", {"explain"}),
    ("print(problem.solution_code())", {"solution_code"}),
    ("a = {s.name: s.value for s in problem.steps()}", {"steps"}),
    ("a = problem._solution", {"_solution"}),
    ("%time answer = problem.solve()", {"solve"}),           # not Python: word fallback
    ("# I did not call solve()\nanswer = 3", set()),
    ("print('solve it by hand')", set()),
    ("def solve(x):\n    return x\nsteps = [1]\nanswer = solve(steps)", set()),
    ("from mmu.book.exercises.base import Problem\nProblem._steps", {"_steps"}),
    ("!echo hi\nanswer = problem . explain()", {"explain"}),
    ("import mmu.book.exercises.grade as g\ng.CALLS.clear()", {"mmu.book.exercises.grade"}),
    ("from mmu.book.exercises import grade", {"mmu.book.exercises.grade"}),
    ("__mmu_grade.CALLS.clear()", {"mmu.book.exercises.grade"}),
    ("import importlib\nimportlib.reload(walks)", {"importlib"}),
    ("__import__('importlib').reload(m)", {"importlib"}),
])
def test_solution_accessors_are_found(source, found):
    assert grader._accessors(source) == found


def test_roster_reading(tmp_path):
    f = tmp_path / "r.csv"
    f.write_text("id,name\n# a comment\nalice,Alice A\n\nbob\n")
    assert read_roster(f) == ["alice", "bob"]
    for text, match in (("alice\nalice\n", "repeats line 1"), ("a/b\n", "not allowed"),
                        ("\n# nothing\n", "no student ids"), ("../x\n", "not allowed")):
        f.write_text(text)
        with pytest.raises(ValueError, match=match):
            read_roster(f)


def test_student_seeds_are_reproducible_distinct_and_fit_their_exercise():
    """Same id, same seeds; 12 students, 12 different problems per exercise; a student's
    seed still has the kind of problem the exercise asks for (its predicate); without a
    student, the lab's own seeds."""
    ids = [f"s{i:02d}" for i in range(12)]
    for lab, spec in LABS.items():
        own = exercise_seeds(lab)
        for n, (_, _, difficulty, want) in enumerate(spec["exercises"], 1):
            seeds = [exercise_seeds(lab, s)[n - 1][0] for s in ids]
            assert len(set(seeds)) == len(ids), (lab, n)
            for s, seed in zip(ids, seeds):
                assert seed >= student_base(s, lab, n)
                if callable(want):
                    from mmu.book.exercises.base import registry
                    assert want(registry()[lab](seed, difficulty)), (lab, n, s)
        nb = nbformat.read(REPO / "exercises" / f"{lab}.ipynb", as_version=4)
        committed = [c.source for c in nb.cells if (exercise_of(c) or (0, ""))[1] == "problem"]
        assert committed == [problem_source(*sd) for sd in own]
    assert exercise_seeds("walks", "s01") == exercise_seeds("walks", "s01")


def test_student_base_by_hand():
    """SHA-256 of "mmu-roles/walks/1/alice", first 4 bytes, mod 2**32 - 10000 (computed
    with hashlib here, independently of seeds.py's string building)."""
    import hashlib
    h = hashlib.sha256(b"mmu-roles/walks/1/alice").digest()
    assert student_base("alice", "walks", 1) == int.from_bytes(h[:4], "big") % (2**32 - 10000)


def test_chapter_00_and_the_labs_say_the_same_about_seeds():
    """Chapter 00's sentence, every lab's "How this lab works" and the teacher's guide all
    say: the lab's own copy gives everyone the same problems, a roster gives each student
    their own, derived from the student id."""
    nb = nbformat.read(REPO / "notebooks" / "00_start_here.ipynb", as_version=4)
    text = " ".join(" ".join(c.source.split()) for c in nb.cells if "**Exercises**" in c.source)
    bullet = text[text.index("**Exercises**"):]
    assert "same problems" in bullet and "roster" in bullet and "student id" in bullet
    for kind in LABS:
        lab = nbformat.read(REPO / "exercises" / f"{kind}.ipynb", as_version=4)
        how = " ".join(lab.cells[1].source.split())
        assert "same seeds" in how and "roster" in how and "student id" in how, kind
    guide = " ".join((REPO / "exercises" / "README.md").read_text().split())
    assert "everyone in the room gets the same problems" in guide
    assert 'SHA-256("mmu-roles/L/n/S")' in guide
