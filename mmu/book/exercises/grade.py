"""Grade a folder of submitted lab notebooks into one scores CSV.

``python -m mmu.book.exercises.grade SUBMISSIONS [--roster roster.csv] --csv scores.csv``
(``make grade SUBMISSIONS=dir [ROSTER=roster.csv]``).

Every file below ``SUBMISSIONS`` is a submission, whatever it is called (``walks (1).ipynb``
included); hidden files and ``.ipynb_checkpoints`` are skipped.  For each one the grader

1. reads the lab and the student id from the notebook's metadata (``metadata.mmu``, written
   by the generator and by ``make student``) -- never from the file name;
2. re-creates the student's problems itself from the seeds the id gives
   (:func:`mmu.book.exercises.seeds.exercise_seeds`; no id: the lab's own seeds);
3. reads the notebook's cells for tampering: a problem cell whose seed was changed (or
   that was edited or deleted), a check cell that was edited (its last line is no longer
   ``problem.grade(answer)``) or deleted, and any use of ``solve``, ``explain``,
   ``solution_code``, ``steps``, ``_steps`` or ``_solution`` (as an attribute, a string
   or an import from ``mmu``), or of this module or ``importlib`` (which could undo the
   sealing below);
4. runs the notebook top to bottom in a kernel of its own (a separate process with a
   fresh temporary working directory, a time limit per cell and for the whole notebook) in
   which ``solve()``, ``explain()`` and ``solution_code()`` refuse to run and record that
   they were called, and after each check cell reads out the value of ``answer`` --
   plain values only (int, str, bool, lists, sets, dicts ...; any other object arrives as
   the name of its type);
5. checks each answer against its own re-created problem, in the grader's process.  The
   notebook's printed verdicts, its ``problem`` and any checker it patched play no part.

Each exercise is ``passed``, ``wrong: <first wrong step and its hint>``, ``not answered``,
``error: <exception>`` (the check cell raised), ``void: <why>`` (a solution accessor was
used before its check ran: that exercise and every later one do not score) or ``not run``
(time limit).  The CSV has one row per student (roster order first), one column per
exercise (``<lab>.<n>``), ``score`` (exercises passed), ``out_of``, ``flags`` and
``files``.  exercises/README.md explains every flag.

The kernel is a separate process, not a security sandbox: grade untrusted notebooks as a
user (or in a container) that can do no harm.
"""
from __future__ import annotations

import argparse
import ast
import csv
import dataclasses
import json
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

__all__ = ["SEALED", "ACCESSORS", "Outcome", "LabResult", "Row", "find_submissions",
           "grade_notebook", "grade_dir", "write_csv", "encode_answer", "decode_answer",
           "seal", "report", "main"]

#: Methods that refuse to run (and are recorded) while a notebook is graded.
SEALED = ("solve", "explain", "solution_code")
#: Names whose use in a submission is flagged: each reads the solution.
ACCESSORS = SEALED + ("steps", "_steps", "_solution")
#: Modules whose use in a submission counts as meddling with the grading.
_GRADER = "mmu.book.exercises.grade"
_MEDDLING = (_GRADER, "importlib")
_MAX_ITEMS = 2000            # longer containers are not a plausible answer
_MAX_DEPTH = 6
_PROBLEM = re.compile(r"make_problem\(\s*seed\s*=\s*(\d+)\s*,\s*difficulty\s*=\s*(\d+)\s*\)")


# ---------------------------------------------------------------------------
# In the student's kernel: sealing, reading the answer out
# ---------------------------------------------------------------------------

CALLS: list[str] = []


def _sealed(name: str):
    def method(self, *args, **kwargs):
        CALLS.append(name)
        raise PermissionError(f"problem.{name}() is not available while the lab is graded")
    method.__name__ = name
    return method


def seal() -> None:
    """Make every problem class's solve/explain/solution_code refuse and record calls."""
    from mmu.book.exercises.base import Problem, registry
    registry()                                   # imports every exercise module
    todo, seen = [Problem], set()
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        todo += cls.__subclasses__()
        for name in SEALED:
            if name in vars(cls):
                setattr(cls, name, _sealed(name))


def _enc(value: Any, depth: int = 0) -> Any:
    from mmu.book.exercises.base import Blank, Template, TemplateList, type_name
    t = type(value)
    if value is ... or t is Blank:
        return {"t": "..."}
    if t is bool:
        return {"t": "bool", "v": value}
    if t is int:
        return {"t": "int", "v": str(value)}
    if t is str:
        return {"t": "str", "v": value}
    if t is float:
        return {"t": "float", "v": repr(value)}
    if value is None:
        return {"t": "None"}
    seqs = {list: "list", TemplateList: "list", tuple: "tuple", set: "set",
            frozenset: "frozenset"}
    if t in seqs or t in (dict, Template):
        if depth >= _MAX_DEPTH or len(value) > _MAX_ITEMS:
            return {"t": "other", "name": f"{type_name(value)} too deep or too long"}
        if t in seqs:
            return {"t": seqs[t], "v": [_enc(v, depth + 1) for v in value]}
        return {"t": "dict", "v": [[_enc(k, depth + 1), _enc(v, depth + 1)]
                                   for k, v in value.items()]}
    return {"t": "other", "name": type_name(value) if t.__module__ != "builtins"
            else t.__name__}


def encode_answer(value: Any) -> str:
    """``answer`` as JSON of plain values (in the student's kernel)."""
    return json.dumps(_enc(value), separators=(",", ":"))


def report(nonce: str, exercise: int, value: Any) -> str:
    """The line the grader looks for after exercise ``exercise``'s check cell."""
    calls = list(CALLS)
    CALLS.clear()
    return f"MMU-GRADE {nonce} {exercise} {json.dumps(calls)} {encode_answer(value)}"


def decode_answer(data: Any) -> Any:
    """Plain Python values from :func:`encode_answer`'s JSON (in the grader's process);
    anything else becomes a :class:`~mmu.book.exercises.base.Foreign`."""
    from mmu.book.exercises.base import Foreign
    if not isinstance(data, dict):
        return Foreign("unreadable")
    t, v = data.get("t"), data.get("v")
    try:
        if t == "...":
            return ...
        if t == "bool":
            return bool(v)
        if t == "int":
            return int(v)
        if t == "str":
            return str(v)
        if t == "float":
            return float(v)
        if t == "None":
            return None
        if t in ("list", "tuple", "set", "frozenset"):
            items = [decode_answer(x) for x in v]
            return {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}[t](items)
        if t == "dict":
            return {decode_answer(k): decode_answer(x) for k, x in v}
    except (TypeError, ValueError):             # e.g. a set member that cannot be hashed
        return Foreign("unreadable")
    return Foreign(str(data.get("name", "unknown")))


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------

@dataclasses.dataclass
class Outcome:
    """One exercise: ``status`` is passed, wrong, not answered, error, void or not run."""

    status: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.status}: {self.detail}" if self.detail else self.status


@dataclasses.dataclass
class LabResult:
    """One graded submission."""

    file: str
    lab: str | None
    student: str | None                 # from the notebook's metadata
    outcomes: dict[int, Outcome]
    flags: list[str]


@dataclasses.dataclass
class Row:
    """One student's line of the CSV."""

    student: str
    cells: dict[str, str]
    score: int
    out_of: int
    flags: list[str]
    files: list[str]


# ---------------------------------------------------------------------------
# Reading a submission
# ---------------------------------------------------------------------------

def find_submissions(root: str | Path) -> list[Path]:
    """Every regular file below ``root`` (any name), skipping hidden files and
    directories such as ``.ipynb_checkpoints``."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"submissions {str(root)!r} is not a directory")
    return sorted(p for p in root.rglob("*") if p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def _accessors(source: str) -> set[str]:
    """The solution accessors a cell's code reaches: as an attribute (``problem.solve``),
    a string (``getattr(problem, "solve")``) or an import from ``mmu``.  A student's own
    function or variable called ``solve`` or ``steps`` is not one."""
    try:
        tree = ast.parse(source)
    except SyntaxError:                # IPython magics and the like: fall back to words
        code = "\n".join(ln for ln in source.splitlines() if not ln.lstrip().startswith("#"))
        return {n for n in ACCESSORS if re.search(rf"\.\s*{n}\b|['\"]{n}['\"]", code)}
    found = set()
    for node in ast.walk(tree):
        # Reaching into the grader itself (its call record) or reloading modules to undo
        # the sealing is as good as calling solve().
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            found |= {m for m in _MEDDLING if any(x == m or x.startswith(m + ".")
                                                  for x in modules)}
            if isinstance(node, ast.ImportFrom) and node.module == "mmu.book.exercises":
                found |= {f"mmu.book.exercises.{a.name}" for a in node.names
                          if f"mmu.book.exercises.{a.name}" in _MEDDLING}
        elif isinstance(node, ast.Name) and node.id == "__mmu_grade":
            found.add(_GRADER)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and any(m in node.value for m in _MEDDLING):
            found |= {m for m in _MEDDLING if m in node.value}
        if isinstance(node, ast.Attribute) and node.attr in ACCESSORS:
            found.add(node.attr)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mmu"):
            found |= {a.name for a in node.names if a.name in ACCESSORS}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and node.value in ACCESSORS:
            found.add(node.value)
    return found


def _exercise_word(ns: list[int]) -> str:
    ns = sorted(ns)
    if len(ns) == 1:
        return f"exercise {ns[0]}"
    if ns == list(range(ns[0], ns[-1] + 1)):
        return f"exercises {ns[0]}-{ns[-1]}"
    return "exercises " + ", ".join(map(str, ns))


def _kernel_manager():
    """A kernel manager for this interpreter (so the submission sees the same ``mmu``),
    whatever kernels are installed; nbclient starts and stops it."""
    import ipykernel.kernelspec
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    class _Specs(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            return self.kernel_spec_class(resource_dir=ipykernel.kernelspec.RESOURCES,
                                          **ipykernel.kernelspec.get_kernel_dict())

    return AsyncKernelManager(kernel_name="mmu-grader", kernel_spec_manager=_Specs())


def _run(nb, cell_timeout: float, time_limit: float) -> tuple[set[int], bool]:
    """Execute ``nb`` in place in a new kernel (its own process and temporary working
    directory); returns (indexes of cells that timed out or were never run, whether the
    kernel died)."""
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError
    stopped: set[int] = set()
    died = False
    with tempfile.TemporaryDirectory(prefix="mmu-grade-") as cwd:
        client = NotebookClient(nb, km=_kernel_manager(), timeout=int(cell_timeout),
                                allow_errors=True, interrupt_on_timeout=True,
                                record_timing=False, shutdown_kernel="immediate")
        start = time.monotonic()
        # The kernel's own stderr (start-up warnings) is not part of any grade.
        with client.setup_kernel(cwd=cwd, stderr=subprocess.DEVNULL, cleanup_kc=True):
            for i, cell in enumerate(nb.cells):
                if cell.cell_type != "code":
                    continue
                left = time_limit - (time.monotonic() - start)
                if left < 1 or died:
                    stopped.add(i)
                    continue
                # Cell 0 is the grader's own preamble (it imports every exercise module):
                # a slow machine must not make it look like the student's time.
                limit = max(cell_timeout, 120) if i == 0 else cell_timeout
                client.timeout = max(1, int(min(limit, left)))
                t0 = time.monotonic()
                try:
                    client.execute_cell(cell, i)
                except DeadKernelError:
                    died = True
                    stopped.add(i)
                    continue
                if time.monotonic() - t0 >= client.timeout:
                    stopped.add(i)
    return stopped, died


def grade_notebook(path: Path, root: Path, *, cell_timeout: float = 60,
                   time_limit: float = 300) -> LabResult:
    """Grade one submitted file (see the module docstring)."""
    import nbformat
    from mmu.book.exercises.base import registry
    from mmu.book.exercises.notebooks import GRADE_LINE, exercise_of, lab_of
    from mmu.book.exercises.seeds import check_student_id, exercise_seeds
    from mmu.book.exercises.student import read_notebook

    rel = str(path.relative_to(root))
    try:
        nb = read_notebook(path)
    except ValueError as e:
        return LabResult(rel, None, None, {}, [f"malformed: {str(e).replace(str(path), rel)}"])
    lab = lab_of(nb)
    if lab is None:
        return LabResult(rel, None, None, {}, [f"{rel}: no lab in the notebook's metadata "
                                               f"(not a lab notebook, or metadata removed)"])
    student = nb.metadata.get("mmu", {}).get("student")
    flags: list[str] = []
    if student is not None:
        try:
            check_student_id(student)
        except (TypeError, ValueError) as e:
            flags.append(f"{lab}: bad student id in metadata ({e}); graded with the lab's "
                         f"own seeds")
            student = None
    seeds = exercise_seeds(lab, student)
    count = len(seeds)

    # -- what the cells say ----------------------------------------------------------------
    problem_cells: dict[int, list[int]] = {}
    check_cells: dict[int, list[int]] = {}
    for i, cell in enumerate(nb.cells):
        marked = exercise_of(cell) if cell.cell_type == "code" else None
        if marked and marked[0] <= count:
            (problem_cells if marked[1] == "problem" else check_cells) \
                .setdefault(marked[0], []).append(i)
    check_at: dict[int, int] = {}
    for n in range(1, count + 1):
        seed, difficulty = seeds[n - 1]
        cells = problem_cells.get(n, [])
        if not cells:
            flags.append(f"{lab}: exercise {n}'s problem cell deleted")
        else:
            m = _PROBLEM.search(nb.cells[cells[0]].source)
            if m is None:
                flags.append(f"{lab}: exercise {n}'s problem cell modified (no make_problem "
                             f"call with a seed)")
            elif (int(m.group(1)), int(m.group(2))) != (seed, difficulty):
                flags.append(f"{lab}: exercise {n}'s seed changed (seed={m.group(1)}, "
                             f"difficulty={m.group(2)}; the student's is seed={seed}, "
                             f"difficulty={difficulty})")
        cells = check_cells.get(n, [])
        if not cells:
            flags.append(f"{lab}: exercise {n}'s check cell deleted")
            continue
        if len(cells) > 1:
            flags.append(f"{lab}: exercise {n} has {len(cells)} check cells; the last is "
                         f"graded")
        check_at[n] = cells[-1]
        lines = [ln.strip() for ln in nb.cells[cells[-1]].source.splitlines() if ln.strip()]
        if not lines or lines[-1] != GRADE_LINE:
            flags.append(f"{lab}: exercise {n}'s check cell modified (its last line is not "
                         f"{GRADE_LINE!r})")

    void_from: dict[int, str] = {}           # cell index -> why everything after is void
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            names = _accessors(cell.source)
            if names:
                void_from[i] = ", ".join(f"{n}()" if n in SEALED else n for n in sorted(names))

    def voided(at: int) -> list[int]:
        return [n for n, c in sorted(check_at.items()) if c >= at]

    for i, what in void_from.items():
        hit = voided(i)
        flags.append(f"{lab}: {what} used in the code" + (
            f"; {_exercise_word(hit)} not scored" if hit else " after the last check"))

    # -- run it ------------------------------------------------------------------------
    nonce = secrets.token_hex(8)
    run = nbformat.v4.new_notebook(metadata=nb.metadata)
    preamble = nbformat.v4.new_code_cell("import mmu.book.exercises.grade as __mmu_grade\n"
                                         "__mmu_grade.seal()")
    run.cells.append(preamble)
    own: dict[int, int] = {}                  # submission cell index -> index in run
    reports: dict[int, int] = {}              # exercise -> index of its report cell
    by_cell = {c: n for n, c in check_at.items()}
    for i, cell in enumerate(nb.cells):
        copy = nbformat.from_dict(dict(cell))
        if copy.cell_type == "code":
            copy.outputs, copy.execution_count = [], None
        own[i] = len(run.cells)
        run.cells.append(copy)
        if i in by_cell:
            n = by_cell[i]
            reports[n] = len(run.cells)
            run.cells.append(nbformat.v4.new_code_cell(
                f"print(__import__('mmu.book.exercises.grade', fromlist=['report'])"
                f".report({nonce!r}, {n}, globals().get('answer', ...)))"))
    stopped, died = _run(run, cell_timeout, time_limit)
    if died:
        flags.append(f"{lab}: the kernel died")
    if stopped - {0}:
        flags.append(f"{lab}: time limit reached ({cell_timeout:g} s a cell, "
                     f"{time_limit:g} s in all)")

    # -- grade each exercise in this process ---------------------------------------------
    make = registry()[lab]
    outcomes: dict[int, Outcome] = {}
    called_at: int | None = None
    for n in range(1, count + 1):
        if n not in check_at:
            outcomes[n] = Outcome("not answered")
            continue
        cell_run = run.cells[own[check_at[n]]]
        report_cell = run.cells[reports[n]]
        line = _report_line(report_cell, nonce, n)
        calls = line[0] if line else []
        if calls and called_at is None:
            called_at = n
            flags.append(f"{lab}: {', '.join(sorted(set(c + '()' for c in calls)))} called "
                         f"while grading, by exercise {n}'s check; "
                         f"{_exercise_word(list(range(n, count + 1)))} not scored")
        void = [why for i, why in void_from.items() if i <= check_at[n]]
        if own[check_at[n]] in stopped or reports[n] in stopped:
            outcomes[n] = Outcome("not run", "time limit")
        elif void:
            outcomes[n] = Outcome("void", f"{void[0]} used")
        elif called_at is not None:
            outcomes[n] = Outcome("void", "solution accessor called while grading")
        elif any(o.output_type == "error" for o in cell_run.get("outputs", [])):
            err = next(o for o in cell_run.outputs if o.output_type == "error")
            outcomes[n] = Outcome("error", f"{err.ename}: {err.evalue}"[:300])
        elif line is None:
            outcomes[n] = Outcome("error", "the answer could not be read out of the kernel")
        else:
            outcomes[n] = _judge(make(*seeds[n - 1]), line[1])
    return LabResult(rel, lab, student, outcomes, flags)


def _report_line(cell, nonce: str, n: int):
    """``(calls, answer)`` from a report cell's output, or None."""
    head = f"MMU-GRADE {nonce} {n} "
    for out in cell.get("outputs", []):
        if out.get("output_type") != "stream":
            continue
        for ln in out.get("text", "").splitlines():
            if ln.startswith(head):
                decoder, rest = json.JSONDecoder(), ln[len(head):]
                try:
                    calls, end = decoder.raw_decode(rest)
                    answer = decode_answer(decoder.raw_decode(rest[end:].lstrip())[0])
                except (json.JSONDecodeError, RecursionError):
                    return None
                if not isinstance(calls, list):
                    return None
                return [str(c) for c in calls], answer
    return None


def _judge(problem, answer) -> Outcome:
    from mmu.book.exercises.base import is_blank
    if is_blank(answer):
        return Outcome("not answered")
    verdict = problem.check(answer)
    if verdict.ok:
        return Outcome("passed")
    return Outcome("wrong", f"step {verdict.step!r}: {verdict.hint}")


# ---------------------------------------------------------------------------
# A folder of submissions -> rows
# ---------------------------------------------------------------------------

def _row_key(result: LabResult) -> str:
    """The row a submission belongs to: its student id, else its folder below the
    submissions directory, else its file name without the extension."""
    if result.student:
        return result.student
    parts = Path(result.file).parts
    return parts[0] if len(parts) > 1 else Path(result.file).stem


def grade_dir(root: str | Path, roster: list[str] | None = None, *,
              cell_timeout: float = 60, time_limit: float = 300) -> list[Row]:
    """Grade every submission below ``root``; one :class:`Row` per student."""
    from mmu.book.exercises.notebooks import LABS
    root = Path(root)
    results = [grade_notebook(p, root, cell_timeout=cell_timeout, time_limit=time_limit)
               for p in find_submissions(root)]
    labs = [lab for lab in LABS if any(r.lab == lab for r in results)]
    columns = [f"{lab}.{n}" for lab in labs for n in range(1, len(LABS[lab]["exercises"]) + 1)]
    keys = list(roster or [])
    keys += sorted({_row_key(r) for r in results} - set(keys))
    rows = []
    for key in keys:
        mine = [r for r in results if _row_key(r) == key]
        cells = {c: "not submitted" for c in columns}
        flags: list[str] = []
        if roster is not None and key not in roster:
            flags.append("not in the roster")
        graded: dict[str, LabResult] = {}
        for r in mine:
            if r.lab is not None and r.lab in graded:
                flags.append(f"{r.lab}: more than one submission ({graded[r.lab].file}, "
                             f"{r.file}); the first is graded")
                continue
            if r.lab is not None:
                graded[r.lab] = r
                if r.student is None and roster is not None:
                    flags.append(f"{r.lab}: no student id in {r.file} (a copy made without "
                                 f"the roster): graded with the lab's own seeds")
                for n, outcome in r.outcomes.items():
                    cells[f"{r.lab}.{n}"] = str(outcome)
            flags += r.flags
        for lab in labs:
            if lab not in graded and (roster is not None or mine):
                flags.append(f"{lab}: no submission")
        score = sum(1 for v in cells.values() if v == "passed")
        rows.append(Row(key, cells, score, len(columns), flags, [r.file for r in mine]))
    return rows


def write_csv(rows: Iterable[Row], path: str | Path) -> None:
    """``student, <lab>.<n> ..., score, out_of, flags, files``."""
    rows = list(rows)
    columns = list(rows[0].cells) if rows else []
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["student", *columns, "score", "out_of", "flags", "files"])
        for r in rows:
            w.writerow([r.student, *(r.cells[c] for c in columns), r.score, r.out_of,
                        "; ".join(r.flags), "; ".join(r.files)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mmu.book.exercises.grade",
        description="Grade every submitted lab notebook below SUBMISSIONS into a CSV.")
    parser.add_argument("submissions", help="folder of submitted notebooks (any file names)")
    parser.add_argument("--roster", help="one student id a line (as for make student)")
    parser.add_argument("--csv", default="scores.csv", help="where the scores go")
    parser.add_argument("--cell-timeout", type=float, default=60,
                        help="seconds one cell may run (default 60)")
    parser.add_argument("--time-limit", type=float, default=300,
                        help="seconds one notebook may run in all (default 300)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    from mmu.book.exercises.seeds import read_roster
    if args.cell_timeout <= 0 or args.time_limit <= 0:
        parser.error("--cell-timeout and --time-limit must be > 0")
    try:
        roster = read_roster(args.roster) if args.roster else None
        rows = grade_dir(args.submissions, roster, cell_timeout=args.cell_timeout,
                         time_limit=args.time_limit)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    write_csv(rows, args.csv)
    print(f"wrote {args.csv}: {len(rows)} students")
    for r in rows:
        print(f"  {r.student}: {r.score}/{r.out_of}" + (f"  ({len(r.flags)} flags)"
                                                        if r.flags else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
