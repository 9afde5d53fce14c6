"""Which seed each exercise of a lab uses, and the class roster that decides it.

Without a roster every copy of a lab uses the lab's own seeds (the ones in
``exercises/<lab>.ipynb``): everyone in the room gets the same problems.  With a roster
(``make student ROSTER=roster.csv``) each student gets their own, derived from the student
id, the lab and the exercise number:

* ``base = SHA-256("mmu-roles/<lab>/<exercise>/<student id>")``, first 4 bytes as a
  big-endian integer, modulo ``2**32 - SEARCH``;
* the seed is ``base`` itself, or -- for an exercise that asks for a kind of problem (a
  predicate in :data:`mmu.book.exercises.notebooks.LABS`, e.g. "a walk that faults") --
  the first seed ``>= base`` whose problem fits (:func:`find_seed`).

So a student's problems are the same on every machine and in every run (the grader
re-creates them from the id alone), and two students' problems differ unless two SHA-256
values collide in 32 bits.  A roster is a text/CSV file with one student id a line (the
first column; blank lines and lines starting with ``#`` are skipped, and a first line
``student``, ``student_id`` or ``id`` is a header).
"""
from __future__ import annotations

import csv
import functools
import hashlib
import re
from pathlib import Path
from typing import Callable

from mmu.book.exercises.base import check_difficulty, check_seed, registry

__all__ = ["SEARCH", "find_seed", "student_base", "exercise_seeds", "check_student_id",
           "read_roster"]

#: How many seeds :func:`find_seed` tries from its start (every exercise fits well within).
SEARCH = 10_000
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
_HEADERS = ("student", "student_id", "id")


def find_seed(kind: str, difficulty: int, want: Callable, start: int = 0,
              limit: int = SEARCH) -> int:
    """The first seed >= ``start`` whose problem satisfies ``want(problem)``."""
    make = registry()[kind]
    check_seed(start)
    for seed in range(start, min(start + limit, 1 << 32)):
        if want(make(seed, difficulty)):
            return seed
    raise ValueError(f"no seed in [{start}, {start + limit}) fits for {kind}/{difficulty}")


def check_student_id(student: object) -> str:
    """A student id: 1-64 characters from letters, digits and ``._@+-``, starting with a
    letter or digit (it names a directory of copies and a row of the scores)."""
    if not isinstance(student, str):
        raise TypeError(f"student id must be a str, not {type(student).__name__}")
    if not _ID.fullmatch(student):
        raise ValueError(f"student id {student!r} is not allowed: use 1-64 letters, digits "
                         f"and . _ @ + -, starting with a letter or digit")
    return student


def student_base(student: str, lab: str, exercise: int) -> int:
    """Where the seed search for ``student``'s exercise ``exercise`` of ``lab`` starts."""
    check_student_id(student)
    digest = hashlib.sha256(f"mmu-roles/{lab}/{exercise}/{student}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % ((1 << 32) - SEARCH)


@functools.lru_cache(maxsize=4096)
def exercise_seeds(lab: str, student: str | None = None) -> tuple[tuple[int, int], ...]:
    """``((seed, difficulty), ...)``, one per exercise of ``lab`` (exercise 1 first): the
    lab's own seeds without a student, else the student's."""
    from mmu.book.exercises.notebooks import LABS     # LABS imports this module
    if lab not in LABS:
        raise ValueError(f"unknown lab {lab!r}: allowed {sorted(LABS)}")
    out: list[tuple[int, int]] = []
    used: set[int] = set()
    for n, (_, _, difficulty, seed) in enumerate(LABS[lab]["exercises"], 1):
        check_difficulty(difficulty)
        if student is not None:
            base = student_base(student, lab, n)
            seed = find_seed(lab, difficulty, seed, start=base) if callable(seed) else base
        elif callable(seed):
            # The lab's own seeds: the first fitting seed after the ones already used.
            seed = find_seed(lab, difficulty, seed, start=max(used, default=0) + 1)
        used.add(seed)
        out.append((check_seed(seed), difficulty))
    return tuple(out)


def read_roster(path: str | Path) -> list[str]:
    """The student ids of a roster file, in file order.  A bad or repeated id is a
    ValueError naming the file and line; so is an empty roster."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"roster {str(path)!r} cannot be read: {e}") from None
    ids: list[str] = []
    where: dict[str, int] = {}
    for lineno, row in enumerate(csv.reader(text.splitlines()), 1):
        first = row[0].strip() if row else ""
        if not first or first.startswith("#"):
            continue
        if not ids and not where and first.lower() in _HEADERS:
            where[""] = lineno                       # the header line; not a student
            continue
        try:
            check_student_id(first)
        except ValueError as e:
            raise ValueError(f"{path}:{lineno}: {e}") from None
        if first in where:
            raise ValueError(f"{path}:{lineno}: student id {first!r} repeats line "
                             f"{where[first]}")
        where[first] = lineno
        ids.append(first)
    if not ids:
        raise ValueError(f"roster {str(path)!r} lists no student ids")
    return ids
