"""The 1+3 MRU root cache against a reference model written from facts §5's prose.

:class:`RefCache` below is a list model of ``mmu->root`` + ``mmu->prev_roots[3]``
written from the fact sheet's description of ``fast_pgd_switch`` and
``kvm_mmu_free_roots`` (facts §5; mmu.c in 5.18.12 and 6.4.6), not from
:mod:`mmu.kvm.root_cache`: a hit at slot i makes prev ``[C, p0 .. p(i-1), p(i+1) ..]``; a
miss with a valid current root rotates C in front and drops the former LRU, which is
freed; without a current root a hit bubbles the later entries up and invalidates the
last slot's hpa.  Random PGD switches, role changes, root loads (new page, hash hit on a
page already cached under another PGD, PAE special root), zaps that set a page's
``invalid`` bit and ``kvm_mmu_free_roots`` masks drive both; after every step they must
agree on hit/miss, slot, which roots were freed (in order) and the whole cache.
"""
from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmu.kvm.roles import PageRole
from mmu.kvm.root_cache import INVALID_PAGE, RootCache, RootInfo

#: (pgd, hpa) pairs; INVALID_PAGE in the hpa means "no root".
INV = INVALID_PAGE
PAE_ROOT = 0xFEE0_0000              # the special root: no shadow page, no role word

ROLES = (
    PageRole(level=4, access=7, cr0_wp=1, efer_nx=1),
    PageRole(level=4, access=7, cr0_wp=0, efer_nx=1),
    PageRole(level=4, access=7, cr0_wp=1, efer_nx=1, smm=1),
    PageRole(level=3, access=7, cr0_wp=1, efer_nx=1, has_4_byte_gpte=1),
    PageRole(level=4, access=7, cr0_wp=1, efer_nx=1, direct=1),
    PageRole(level=5, access=7, cr0_wp=1, efer_nx=1, direct=1, guest_mode=1),
)
PGDS = (0x1000, 0x2000, 0x3000, 0x4000, 0x1008)   # 0x1008: same gfn as 0x1000


class RefCache:
    """mmu->root and mmu->prev_roots as a plain list model (facts §5)."""

    def __init__(self, words: dict[int, "int | None"]) -> None:
        self.words = words          # hpa -> role word of its page (None: PAE special root)
        self.cur = (INV, INV)
        self.prev = [(INV, INV)] * 3
        self.freed: list[int] = []

    def _usable(self, entry, pgd, role) -> bool:
        epgd, hpa = entry
        return (hpa != INV and (bool(role.direct) or epgd == pgd)
                and self.words.get(hpa) is not None and self.words[hpa] == role.word)

    def switch(self, pgd: int, role) -> tuple[bool, "str | int | None", bool, "int | None"]:
        """(hit, slot, freed_special, evicted hpa)."""
        special = False
        if self.cur[1] != INV and self.words.get(self.cur[1]) is None:
            self.freed.append(self.cur[1])          # pae_root is per vCPU: never cached
            self.cur = (0, INV)
            special = True
        if self.cur[1] != INV:
            if self._usable(self.cur, pgd, role):
                return True, "current", special, None
            for i, e in enumerate(self.prev):
                if self._usable(e, pgd, role):
                    self.prev = [self.cur] + self.prev[:i] + self.prev[i + 1:]
                    self.cur = e
                    return True, i, special, None
            lru = self.prev[-1]
            self.prev = [self.cur] + self.prev[:-1]
            if lru[1] != INV:
                self.freed.append(lru[1])
                self.cur = (0, INV)
                return False, None, special, lru[1]
            self.cur = lru                          # an empty slot: nothing to free
            return False, None, special, None
        for i, e in enumerate(self.prev):
            if self._usable(e, pgd, role):
                # the emptied slot at the end keeps the pgd of what was last there
                last = self.prev[2] if i < 2 else self.cur
                self.prev = self.prev[:i] + self.prev[i + 1:] + [(last[0], INV)]
                self.cur = e
                return True, i, special, None
        return False, None, special, None

    def free_roots(self, mask: int) -> None:
        for i in range(3):
            if mask & (2 << i) and self.prev[i][1] != INV:
                self.freed.append(self.prev[i][1])
                self.prev[i] = (self.prev[i][0], INV)
        if mask & 1 and self.cur[1] != INV:
            self.freed.append(self.cur[1])
            self.cur = (0, INV)


# Each switch is followed, as kvm_mmu_reload does before the next entry, by a load when it
# left no root ("new" page, a "cached" page already held under another pgd, the PAE
# "special" root), or by nothing (None: another switch comes first, as in nested entry).
_LOADS = st.sampled_from(("new", "new", "new", "cached", "special", None, None))
OPS = st.one_of(
    *[st.tuples(st.just("switch"), st.sampled_from(PGDS), st.just(-1), _LOADS)] * 6,
    st.tuples(st.just("switch"), st.sampled_from(PGDS), st.integers(0, len(ROLES) - 1),
              _LOADS),
    st.tuples(st.just("zap"), st.integers(0, 7)),
    st.tuples(st.just("free"), st.integers(0, 15)),
)


def _load(cache, ref, words, role, pgd, how, next_hpa) -> int:
    """kvm_mmu_load into an invalid root; returns the next free hpa."""
    root_pgd = 0 if role.direct else pgd
    cached = [h for _, h in [ref.cur] + ref.prev if h != INV and words[h] == role.word]
    if how == "special":
        hpa = PAE_ROOT
    elif how == "cached" and cached:
        hpa = cached[0]                      # hash hit: a page cached under another pgd
    else:
        hpa, next_hpa = next_hpa, next_hpa + 0x1000
        words[hpa] = role.word
    cache.root = RootInfo(root_pgd, hpa)
    ref.cur = (root_pgd, hpa)
    return next_hpa


def compare(ops, cache_cls=RootCache) -> int:
    """Drive the model and the reference; return the number of steps compared."""
    words: dict[int, "int | None"] = {PAE_ROOT: None}
    freed: list[int] = []
    cache = cache_cls(words.get, freed.append)
    ref = RefCache(words)
    role, pgd, next_hpa, steps = ROLES[0], PGDS[0], 0x10_0000, 0
    for op in ops:
        if op[0] == "switch":
            pgd = op[1]
            role = role if op[2] < 0 else ROLES[op[2]]
            cur_valid = cache.root.valid and words[cache.root.hpa] is not None
            got = cache.fast_pgd_switch(pgd, role)
            want = ref.switch(pgd, role)
            assert (got.hit, got.slot, got.freed_special, got.evicted) == want, (op, got, want)
            OUTCOMES[("with" if cur_valid else "without") + f" current: {got.slot}"] += 1
            if not cache.root.valid and op[3] is not None:
                next_hpa = _load(cache, ref, words, role, pgd, op[3], next_hpa)
        elif op[0] == "zap":
            live = sorted(h for h, w in words.items() if w is not None)
            if live:                         # kvm_mmu_zap_all: the page's role.invalid = 1
                h = live[op[1] % len(live)]
                words[h] = PageRole.from_word(words[h]).replace(invalid=1).word
        else:
            cache.free_roots(op[1])
            ref.free_roots(op[1])
        assert freed == ref.freed, op
        assert (cache.root.pgd, cache.root.hpa) == ref.cur, op
        assert [(r.pgd, r.hpa) for r in cache.prev_roots] == ref.prev, op
        steps += 1
    return steps


STATS = {"examples": 0, "steps": 0}
OUTCOMES: Counter = Counter()


@settings(derandomize=True, deadline=None, max_examples=500, database=None)
@given(ops=st.lists(OPS, min_size=20, max_size=80))
def test_root_cache_matches_the_reference_model(ops):
    STATS["steps"] += compare(ops)
    STATS["examples"] += 1


def test_report_totals():
    print(f"\nroot cache props: {STATS['examples']} examples, {STATS['steps']} steps compared; "
          "switches (slot, None = miss): "
          + ", ".join(f"{k}: {n}" for k, n in sorted(OUTCOMES.items(), key=str)))


def _random_ops(rng: random.Random, n: int) -> list[tuple]:
    out = []
    for _ in range(n):
        k = rng.choice(("switch",) * 6 + ("zap", "free"))
        if k == "switch":
            out.append((k, rng.choice(PGDS), rng.randrange(-6, len(ROLES)) if rng.random() < .2
                        else -1, rng.choice(("new", "new", "cached", "special", None))))
        elif k == "zap":
            out.append((k, rng.randrange(8)))
        else:
            out.append((k, rng.randrange(16)))
    return out


class _NoLastSlotInvalidate(RootCache):
    """Mutant: a hit without a current root forgets to invalidate the last slot."""

    def cached_root_find_without_current(self, new_pgd, role):
        last = self.prev_roots[-1]
        res = super().cached_root_find_without_current(new_pgd, role)
        if res.hit:
            self.prev_roots[-1] = last
        return res


class _MissKeepsOrder(RootCache):
    """Mutant: a miss frees the former LRU but does not move the old current to MRU."""

    def cached_root_find_and_keep_current(self, new_pgd, role):
        saved = list(self.prev_roots)
        res = super().cached_root_find_and_keep_current(new_pgd, role)
        if not res.hit:
            self.prev_roots = saved[:2] + [self.prev_roots[0]]
        return res


@pytest.mark.parametrize("mutant", [_NoLastSlotInvalidate, _MissKeepsOrder])
def test_comparison_catches_a_mutant(mutant):
    """The same driver and reference reject a cache with one rule broken."""
    rng = random.Random(2023)
    for _ in range(300):
        ops = _random_ops(rng, 60)
        compare(ops)                         # the real cache passes this sequence
        try:
            compare(ops, mutant)
        except AssertionError:
            return
    pytest.fail(f"{mutant.__name__} was not detected in 300 sequences")
