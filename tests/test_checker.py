"""The checker cannot be fooled by an answer of the wrong type, and hints never give the
value asked for away (issue 11).

Type confusion: for every generator (each difficulty, several seeds) and every step, the
right answer with that one step replaced by a bool, an always-equal object
(``unittest.mock.ANY`` and a hand-made one), numpy scalars, a complex, an array or a
nested list is refused at that step, with a hint that names the step.  The replacement
values are chosen by hand so that a plain ``==`` would accept them.

Hints: over 200 seeds per generator and difficulty, the hint for a wrong value at each step
never contains the expected answer as the solution writes it (hex for addresses and words,
the quoted string for names and outcomes, the missing names of a set).
"""
from __future__ import annotations

import random
import re
from unittest import mock

import numpy as np
import pytest

import test_exercises
from mmu.book.exercises.base import (DIFFICULTIES, Blank, Template, TemplateList, hexs,
                                     registry)

KINDS = sorted(registry())
CASES = [(k, d) for k in KINDS for d in DIFFICULTIES]
IDS = [f"{k}-{d}" for k, d in CASES]


class AlwaysEqual:
    """Equal to everything, hashable: what a plain ``given == expected`` would accept."""

    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False

    __hash__ = object.__hash__


def impostors(value):
    """Values of another type that ``==`` would take for ``value`` (by Python's rules:
    True == 1, np.int64(5) == 5, complex(5) == 5, ANY == anything)."""
    out = [mock.ANY, AlwaysEqual()]
    if isinstance(value, bool):
        out += [np.bool_(value), np.int64(int(value)), float(value), complex(int(value)),
                [value], np.array([value])]
    elif isinstance(value, int):
        out += [bool(value), np.int64(value), np.uint64(value), float(value),
                np.float64(value), complex(value), np.array([value]), [value], [[value]],
                str(value)]
    elif isinstance(value, str):
        out += [np.str_(value), [value], value.encode(), np.array([value])]
    else:                                   # a frozenset of names
        out += [[list(value)], np.array(sorted(value)), {v: 1 for v in value},
                tuple(np.str_(v) for v in value) or (1,), [1] * max(1, len(value))]
    return out


@pytest.mark.parametrize("kind,difficulty", CASES, ids=IDS)
def test_type_confusion_fails_at_the_step(kind, difficulty):
    make = registry()[kind]
    for seed in range(6):
        p = make(seed, difficulty)
        right = p.solve()
        assert p.check(right).ok
        for name, value in right.items():
            for fake in impostors(value):
                v = p.check({**right, name: fake})
                assert not v.ok, (p, name, fake)
                assert v.step == name and repr(name) in str(v), (p, name, fake, v)
                assert "must be" in v.hint, v.hint


@pytest.mark.parametrize("kind,difficulty", CASES, ids=IDS)
def test_whole_answer_of_the_wrong_type_is_refused(kind, difficulty):
    p = registry()[kind](1, difficulty)
    for fake in (mock.ANY, AlwaysEqual(), np.array([1, 2]), [[1]], True, 1.5, None, "x"):
        v = p.check(fake)
        assert not v.ok and v.step == p.steps()[0].name and v.hint, (fake, v)


def test_the_reported_gpa_true_case():
    """The issue's probe: a walk's gpa answered with True passed (True == 1 and the bool
    branch compared truthiness)."""
    p = registry()["walks"](1, 1)
    v = p.check({**p.solve(), "gpa": True})
    assert not v.ok and v.step == "gpa" and "must be an int" in v.hint and "bool" in v.hint


BAD_DIFFICULTIES = [(0, ValueError), (4, ValueError), (None, TypeError), ("1", TypeError),
                    (1.0, TypeError), (True, TypeError), (np.int64(1), TypeError),
                    ([1], TypeError)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bad,err", BAD_DIFFICULTIES, ids=[repr(b) for b, _ in BAD_DIFFICULTIES])
def test_every_make_problem_validates_difficulty(kind, bad, err):
    with pytest.raises(err, match="difficulty"):
        registry()[kind](1, bad)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bad,err", [(-1, ValueError), (1 << 32, ValueError), ("1", TypeError),
                                     (1.0, TypeError), (None, TypeError), (False, TypeError),
                                     (np.int64(1), TypeError)])
def test_every_make_problem_validates_seed(kind, bad, err):
    with pytest.raises(err, match="seed"):
        registry()[kind](bad, 1)


@pytest.mark.parametrize("kind,difficulty", CASES, ids=IDS)
def test_template_prints_dots_not_ellipsis(kind, difficulty):
    p = registry()[kind](2, difficulty)
    t = p.template()
    assert isinstance(t, (Template, TemplateList, Blank))
    assert "Ellipsis" not in repr(t) and "Ellipsis" not in str(t) and "..." in repr(t)
    assert not p.check(t).ok and "not answered" in p.check(t).hint
    from IPython.lib.pretty import pretty            # what a cell ending in it displays
    assert "Ellipsis" not in pretty(t)


# ---------------------------------------------------------------------------
# hints never contain the answer
# ---------------------------------------------------------------------------

def _wrong_values(value, rng, options):
    """A few wrong values of the right type for one step (for a str step: every other
    answer the step has across the seeds, e.g. every other rule name)."""
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value ^ 1, value ^ (1 << rng.randrange(1, 40)), value + 0x1000]
    if isinstance(value, str):
        return sorted(options - {value})
    names = sorted(value)
    out = [set(), set(names[1:]), set(names) | {"base.level"}, set(names) | {"level"}]
    return [w for w in out if w != value]


def _forbidden(value, given) -> list[str]:
    """The texts of ``value`` a hint must not contain (regexes)."""
    if isinstance(value, bool):
        return []                 # two values: a wrong one already says which is right
    if isinstance(value, int):
        # As the solution writes it (hex), and in decimal when it is not a small number
        # that rules mention anyway (bit numbers, levels).
        out = [re.escape(hexs(value)) + r"\b"]
        if value >= 64:
            out.append(rf"\b{value}\b")
        return out
    if isinstance(value, str):
        if isinstance(given, str) and given.strip().lower() == value.lower():
            return []
        return [re.escape(repr(value)), re.escape(f'"{value}"'), rf"\b{re.escape(value)} "
                rf"(refuses|decides|is right|is the answer)"]
    return [rf"(?<!\w){re.escape(n)}(?![\w])" for n in value - set(given)]


@pytest.mark.parametrize("kind,difficulty", CASES, ids=IDS)
def test_hints_never_contain_the_expected_answer(kind, difficulty):
    rng = random.Random(f"hints/{kind}/{difficulty}")
    checked = 0
    problems = test_exercises.problems(kind, difficulty)      # the same 200 seeds, built once
    assert len(problems) == 200
    options: dict[str, set] = {}
    for p in problems:
        for name, value in p.solve().items():
            if isinstance(value, str):
                options.setdefault(name, set()).add(value)
    for p in problems:
        right = p.solve()
        for name, value in right.items():
            for wrong in _wrong_values(value, rng, options.get(name, set())):
                v = p.check({**right, name: wrong})
                if v.ok or v.step != name:
                    continue
                for pattern in _forbidden(value, wrong):
                    assert not re.search(pattern, v.hint, re.IGNORECASE), \
                        (p, name, value, wrong, pattern, v.hint)
                checked += 1
    assert checked > 200


def test_the_forbidden_texts_can_match():
    """The patterns above do find an answer a hint gives away (the old set hint)."""
    old_hint = "cpu_role.base.smep_andnot_wp does change: its rule is '...'"
    assert any(re.search(p, old_hint) for p in _forbidden(frozenset({"base.smep_andnot_wp"}),
                                                            set()))
    assert re.search(_forbidden(0x142, 0)[0], "the index is 0x142.")
    assert re.search(_forbidden("kept", "new")[0], "the root is ('kept')")
