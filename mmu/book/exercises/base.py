"""Shared machinery of the exercises: seeded problems, ordered solution steps, checks.

The pattern is OSTEP's paging simulators: a problem comes from a seed
(``random.Random(seed)``, never the global generator), prints itself, and has a
``solve()`` twin.  Here the twin does not compute anything itself -- it asks the model
(:mod:`mmu.x86.walker`, :mod:`mmu.kvm.roles`, :mod:`mmu.kvm.shadow`, :mod:`mmu.kvm.vcpu`) and turns what
the model did into an ordered list of :class:`Step` s, the way a teacher would write the
solution on the board: first the PML4E index, then the entry read, ..., then the answer.

``check(answer)`` compares the student's answer with those steps *in order* and stops at
the first one that differs; the hint it returns names that step (which level, which bit,
which rule) and states the rule without giving the value away.  ``grade(answer)`` is the
notebook form: it prints the verdict once and never raises for a wrong or missing answer,
so a student copy runs top to bottom.  Grades come from :mod:`mmu.book.exercises.grade`,
which re-creates each problem itself and checks the answer a submission left behind.

The checker takes only the plain types a student writes: an int step takes an ``int``
(not a bool, a numpy scalar, a float or a complex), a str step a ``str``, a bool step
``True``/``False`` (or 0/1), a set step a set (or list/tuple) of ``str``.  Anything else is
a wrong-type hint naming the step, never a comparison with ``==`` (which an object with
an always-true ``__eq__``, such as ``unittest.mock.ANY``, would win).
"""
from __future__ import annotations

import dataclasses
import random
from typing import Any, Callable, ClassVar, Mapping

__all__ = ["Step", "Verdict", "CheckFailed", "Problem", "check_seed", "check_difficulty",
           "DIFFICULTIES", "hexs", "Template", "TemplateList", "Blank", "is_blank",
           "type_name", "set_hint", "Foreign"]

#: Difficulty levels every generator offers (1 = warm-up ... 3 = exam).
DIFFICULTIES = (1, 2, 3)


def hexs(value: int) -> str:
    """An int as the hex a student would write (``0x1f``)."""
    return f"{value:#x}"


def _blank_repr(value: Any, indent: str = "") -> str:
    if value is ...:
        return "..."
    if isinstance(value, dict):
        inner = indent + "    "
        return "{\n" + "".join(f"{inner}{k!r}: {_blank_repr(v, inner)},\n"
                               for k, v in value.items()) + indent + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_blank_repr(v, indent) for v in value) + "]"
    return repr(value)


class Template(dict):
    """``problem.template()`` for a dict answer: printed with ``...`` (never ``Ellipsis``)."""

    def __repr__(self) -> str:
        return _blank_repr(dict(self))

    def _repr_pretty_(self, p, cycle) -> None:      # IPython's display of a cell's value
        p.text(repr(self))


class TemplateList(list):
    """``problem.template()`` for a list answer (one value per step)."""

    def __repr__(self) -> str:
        return _blank_repr(list(self))

    def _repr_pretty_(self, p, cycle) -> None:
        p.text(repr(self))


class Blank:
    """``problem.template()`` for a one-value answer: prints ``...  # <what to give>``."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __repr__(self) -> str:
        return f"...  # {self.what}"

    def _repr_pretty_(self, p, cycle) -> None:
        p.text(repr(self))


def is_blank(answer: Any) -> bool:
    """Nothing filled in: ``...``, a :class:`Blank`, or a container of nothing but blanks."""
    if answer is ... or isinstance(answer, Blank):
        return True
    if type(answer) in (dict, Template):
        return bool(answer) and all(is_blank(v) for v in answer.values())
    if type(answer) in (list, tuple, TemplateList):
        return bool(answer) and all(is_blank(v) for v in answer)
    return False


class Foreign:
    """A value of a type the checker does not take, as the grader read it out of a student's
    kernel (:mod:`mmu.book.exercises.grade`): only its type's name survives."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


def type_name(value: Any) -> str:
    """``int``, ``numpy.float64``, ``list of list``: what a wrong-type hint calls a value."""
    if isinstance(value, Foreign):
        return value.name
    t = type(value)
    name = t.__name__ if t.__module__ == "builtins" else \
        f"{t.__module__.split('.')[0]}.{t.__name__}"
    if t in (list, tuple, set, frozenset) and value:
        inner = sorted({type_name(v) for v in value})
        name += " of " + "/".join(inner)
    return name


def set_hint(step: "Step", given: Any, known: list[str], like: str) -> str:
    """The hint for a wrong set of names: how many are missing and how many extra, and the
    step's rule -- never which names (that would give the answer away)."""
    names = {str(g) for g in given}
    unknown = sorted(names - set(known))
    if unknown:
        return f"{unknown[0]!r} is not a field name here; names look like {like}."
    missing, extra = len(step.value - names), len(names - step.value)
    parts = [f"{n} {'name' if n == 1 else 'names'} {what}"
             for n, what in ((missing, "missing"), (extra, "that should not be there")) if n]
    return f"{_shown(step, given)} is not right: {' and '.join(parts)}. {step.why}"


def check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, not {type(seed).__name__}")
    if not 0 <= seed < 1 << 32:
        raise ValueError(f"seed={seed} is out of range: allowed 0 <= seed < 2**32")
    return seed


def check_difficulty(difficulty: object) -> int:
    if isinstance(difficulty, bool) or not isinstance(difficulty, int):
        raise TypeError(f"difficulty must be an int, not {type(difficulty).__name__}")
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty={difficulty} is out of range: allowed {DIFFICULTIES}")
    return difficulty


@dataclasses.dataclass(frozen=True)
class Step:
    """One step of a worked solution.

    ``why`` is the rule for this step, phrased so that it teaches without giving the value
    away (it becomes the hint); ``worked`` is the rule applied, value included (it goes
    into the teacher's solution and into :meth:`Problem.explain`).  ``show`` formats a
    value for humans (hex for addresses and words).
    """

    name: str
    value: Any
    why: str
    worked: str = ""
    show: Callable[[Any], str] = repr

    def render(self, value: Any = None) -> str:
        return self.show(self.value if value is None else value)


class CheckFailed(AssertionError):
    """A wrong or missing answer (the only exception a graded cell raises)."""


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What :meth:`Problem.check` found: ``ok``, or the first wrong ``step`` and a ``hint``."""

    ok: bool
    step: str | None = None
    hint: str = ""
    right: int = 0          # steps right before the first wrong one
    total: int = 0

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        if self.ok:
            return f"✔ pass: all {self.total} steps right"
        return (f"✘ step {self.step!r} ({self.right} of {self.total} steps right before it)\n"
                f"  hint: {self.hint}")

    def _repr_html_(self) -> str:
        import html
        return f"<pre class='exercise-verdict'>{html.escape(str(self))}</pre>"

    def require(self) -> "Verdict":
        """Raise :class:`CheckFailed` with the hint unless the answer passed."""
        if not self.ok:
            raise CheckFailed(str(self))
        return self


class Problem:
    """A generated exercise.  Subclasses set ``kind`` and ``title`` and implement
    :meth:`_statement` and :meth:`_steps` (the latter by calling the model).

    ``answer`` is a mapping step-name -> value (see :meth:`template`); subclasses may
    accept other shapes (a role word) by overriding :meth:`_normalise`.
    """

    kind: ClassVar[str] = ""
    title: ClassVar[str] = ""

    def __init__(self, seed: int, difficulty: int = 1) -> None:
        self.seed = check_seed(seed)
        self.difficulty = check_difficulty(difficulty)
        self.rng = random.Random(f"{self.kind}/{difficulty}/{seed}")
        self._solution: tuple[Step, ...] | None = None

    # -- what subclasses provide ------------------------------------------------------
    def _statement(self) -> str:
        raise NotImplementedError

    def _steps(self) -> list[Step]:
        raise NotImplementedError

    def _normalise(self, answer: Any) -> Mapping[str, Any]:
        if not isinstance(answer, Mapping):
            raise CheckFailed(
                f"✘ the answer must be a dict of steps, like problem.template(), not "
                f"{type_name(answer)}")
        return answer

    def _wrong_type(self, step: Step, given: Any) -> str | None:
        """A wrong-type hint naming the step, or None when ``given`` has the step's type.
        Exact types only: bool is not an int here, nor is a numpy scalar."""
        expected = step.value
        if isinstance(expected, bool):
            ok, what = type(given) is bool or (type(given) is int and given in (0, 1)), \
                "True or False"
        elif isinstance(expected, int):
            ok, what = type(given) is int, "an int (like 0x1f or 31)"
        elif isinstance(expected, str):
            ok, what = type(given) is str, "a str"
        elif isinstance(expected, frozenset):
            ok = type(given) in (set, frozenset, list, tuple) and \
                all(type(g) is str for g in given)
            what = "a set of str (set() if none)"
        else:                                             # a generator bug, not the student's
            raise TypeError(f"step {step.name!r} has a value of type {type(expected).__name__}")
        return None if ok else f"{step.name!r} must be {what}, not {type_name(given)}."

    def _same(self, step: Step, given: Any) -> bool:
        """Equal to the step's value; ``given`` already has the right type."""
        expected = step.value
        if isinstance(expected, str):
            return given.strip().lower() == expected.lower()
        if isinstance(expected, frozenset):
            return frozenset(given) == expected
        if isinstance(expected, bool):
            return bool(given) == expected
        return given == expected

    def _hint(self, step: Step, given: Any) -> str:
        """The hint for a wrong value at ``step`` (subclasses refine it, e.g. per bit)."""
        return f"{_shown(step, given)} is not right. {step.why}"

    # -- the public face ---------------------------------------------------------------
    def steps(self) -> tuple[Step, ...]:
        """The worked solution, in the order a student should work."""
        if self._solution is None:
            self._solution = tuple(self._steps())
        return self._solution

    def solve(self) -> dict[str, Any]:
        """The answer the model gives: ``{step name: value}``, in step order."""
        return {s.name: s.value for s in self.steps()}

    def template(self) -> Template:
        """The answer's shape with every value left as ``...`` to fill in."""
        return Template({s.name: ... for s in self.steps()})

    @property
    def text(self) -> str:
        head = f"{self.title} (seed {self.seed}, difficulty {self.difficulty})"
        return f"{head}\n{'=' * len(head)}\n{self._statement()}\n\nAnswer steps: " + \
            ", ".join(repr(s.name) for s in self.steps())

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed}, difficulty={self.difficulty})"

    def explain(self) -> str:
        """The worked solution, one line per step (the teacher's view)."""
        return "\n".join(f"{i}. {s.name} = {s.render()}: {s.worked or s.why}"
                         for i, s in enumerate(self.steps(), 1))

    def solution_code(self, var: str = "answer") -> str:
        """The teacher's solution as Python source (``var = {...}`` with one commented line
        per step), for the solution regions of the lab notebooks."""
        lines = [f"{var} = {{"]
        for s in self.steps():
            lines.append(f"    {s.name!r}: {s.render()},  # {s.worked or s.why}"[:200])
        return "\n".join(lines + ["}"])

    def check(self, answer: Any) -> Verdict:
        """Compare ``answer`` with the solution step by step; stop at the first wrong one."""
        steps = self.steps()
        total = len(steps)
        if is_blank(answer):
            return Verdict(False, steps[0].name, "not answered yet: replace `...` with your "
                           "answer (problem.template() shows its shape)", 0, total)
        try:
            given = self._normalise(answer)
        except CheckFailed as e:
            return Verdict(False, steps[0].name, str(e).removeprefix("✘ "), 0, total)
        for i, step in enumerate(steps):
            if step.name not in given or is_blank(given[step.name]):
                return Verdict(False, step.name, f"missing: fill in {step.name!r}. "
                               f"{step.why}", i, total)
            wrong_type = self._wrong_type(step, given[step.name])
            if wrong_type:
                return Verdict(False, step.name, wrong_type, i, total)
            if not self._same(step, given[step.name]):
                return Verdict(False, step.name, self._hint(step, given[step.name]), i, total)
        names = {s.name for s in steps}
        extra = [k for k in given if k not in names]
        if extra:
            return Verdict(False, extra[0], f"{extra[0]!r} is not a step of this problem; "
                           f"the steps are {[s.name for s in steps]}", total, total)
        return Verdict(True, None, "", total, total)

    def grade(self, answer: Any) -> None:
        """Check and print the verdict, once.  A wrong or missing answer is a printed hint,
        not an exception, so a student's notebook runs on to the next exercise; the
        teacher's grades come from :mod:`mmu.book.exercises.grade`, not from this call."""
        print(self.check(answer))


def _shown(step: Step, value: Any) -> str:
    try:
        return step.show(value) if isinstance(value, type(step.value)) else repr(value)
    except (TypeError, ValueError):
        return repr(value)


def registry() -> dict[str, Callable[..., Problem]]:
    """``{kind: make_problem}`` for every exercise module."""
    from mmu.book.exercises import cr0_wp, legacy, nested, permissions, roles, root_reuse, shadow, walks
    return {m.KIND: m.make_problem for m in (walks, permissions, roles, shadow, root_reuse,
                                             cr0_wp, legacy, nested)}
