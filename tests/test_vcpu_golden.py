"""The vCPU model does exactly what it did before the split of issue 8 (a pure refactor).

``tests/data/vcpu_golden.json.gz`` was recorded from the pre-split model by
``tests/vcpu_golden.py`` (see its docstring for what is recorded and how to regenerate
it): seeded operation sequences over every era x MMU kind x vendor.  This test replays
the stored operations -- it never regenerates the file -- and asserts that the events,
step counter, counter increments, role words, registers, roots and return values after
every operation are identical to the stored ones.
"""
from __future__ import annotations

import copy

import pytest

import vcpu_golden as golden

SEQUENCES = golden.load()


def _name(config: list) -> str:
    kernel, features, mmu, vendor = config
    return f"{kernel}{'+' + '+'.join(sorted(features)) if features else ''}-{mmu}-{vendor}"


def test_corpus_covers_every_configuration():
    """Every era x MMU kind x vendor row is in the file, with the stored number of ops."""
    configs = {(c[0], tuple(sorted(c[1].items())), c[2], c[3])
               for c in (s["config"] for s in SEQUENCES)}
    want = {(k, tuple(sorted(f.items())), m, v) for k, f, m, v in golden.CONFIGS}
    assert configs == want
    assert len(SEQUENCES) == len(golden.CONFIGS) * golden.SEQUENCES_PER_CONFIG
    assert all(len(s["ops"]) == golden.OPS_PER_SEQUENCE for s in SEQUENCES)


@pytest.mark.parametrize("config", sorted({_name(s["config"]) for s in SEQUENCES}))
def test_replay_is_identical(config):
    diffs = [d for s in SEQUENCES if _name(s["config"]) == config
             for d in [golden.first_difference(s)] if d]
    assert not diffs, "\n".join(diffs)


def test_replay_notices_a_difference():
    """The comparison can fail: a stored event text or role word altered is reported."""
    s = copy.deepcopy(SEQUENCES[1])
    rec = next(r for r in s["records"][1:] if r["events"])
    rec["events"][0] += " (altered)"
    assert "events differs" in golden.first_difference(s)
    s = copy.deepcopy(SEQUENCES[1])
    s["records"][-1]["step"] += 1
    assert "step differs" in golden.first_difference(s)
