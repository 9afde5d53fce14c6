"""Root cache (facts §5): rotation, eviction, PAE special roots, free masks.

Expected states are written out by hand from the kernel's swap sequence (mmu.c,
cached_root_find_and_keep_current's comment "C 0 1 2 3 / 0 C 1 2 3 / ...")."""
import dataclasses

import pytest

from mmu.kvm.root_cache import (INVALID_PAGE, KVM_MMU_ROOT_CURRENT, KVM_MMU_ROOT_PREVIOUS,
                            KVM_MMU_ROOTS_ALL, RootCache, RootInfo, is_root_usable)


@dataclasses.dataclass(frozen=True)
class Role:
    word: int
    direct: int = 0


ROLE = Role(0x1234)


class Fake:
    """hpa -> role word; hpa 0xPAE0 has no shadow page (the PAE special root)."""

    def __init__(self):
        self.words = {}
        self.freed = []

    def add(self, hpa, word=ROLE.word):
        self.words[hpa] = word
        return hpa

    def cache(self):
        return RootCache(lambda hpa: self.words.get(hpa), self.freed.append)


def filled():
    f = Fake()
    c = f.cache()
    c.root = RootInfo(0x1000, f.add(0xA0))
    c.prev_roots = [RootInfo(0x2000, f.add(0xA1)), RootInfo(0x3000, f.add(0xA2)),
                    RootInfo(0x4000, f.add(0xA3))]
    return f, c


def test_constants():
    assert KVM_MMU_ROOT_CURRENT == 1
    assert [KVM_MMU_ROOT_PREVIOUS(i) for i in range(3)] == [2, 4, 8]
    assert KVM_MMU_ROOTS_ALL == 0xF
    assert INVALID_PAGE == 0xFFFF_FFFF_FFFF_FFFF
    with pytest.raises(ValueError):
        KVM_MMU_ROOT_PREVIOUS(3)


def test_current_still_usable():
    f, c = filled()
    r = c.fast_pgd_switch(0x1000, ROLE)
    assert (r.hit, r.slot) == (True, "current")
    assert c.root.hpa == 0xA0 and [p.hpa for p in c.prev_roots] == [0xA1, 0xA2, 0xA3]


@pytest.mark.parametrize("slot,pgd,prev_after", [
    # hit at slot i: current = p_i, prev = [C, p0 .. p_(i-1), p_(i+1) ..]
    (0, 0x2000, [0xA0, 0xA2, 0xA3]),
    (1, 0x3000, [0xA0, 0xA1, 0xA3]),
    (2, 0x4000, [0xA0, 0xA1, 0xA2]),
])
def test_keep_current_hit_rotation(slot, pgd, prev_after):
    f, c = filled()
    r = c.fast_pgd_switch(pgd, ROLE)
    assert (r.hit, r.slot) == (True, slot)
    assert c.root.pgd == pgd
    assert [p.hpa for p in c.prev_roots] == prev_after
    assert f.freed == []


def test_keep_current_miss_frees_former_lru():
    f, c = filled()
    r = c.fast_pgd_switch(0x9000, ROLE)
    assert not r.hit and r.evicted == 0xA3
    assert f.freed == [0xA3]                  # the former LRU, p2
    assert c.root == RootInfo(0, INVALID_PAGE)
    assert [p.hpa for p in c.prev_roots] == [0xA0, 0xA1, 0xA2]


def test_without_current_bubbles_up():
    f, c = filled()
    c.root = RootInfo(0, INVALID_PAGE)
    r = c.fast_pgd_switch(0x3000, ROLE)
    assert (r.hit, r.slot) == (True, 1)
    assert c.root.hpa == 0xA2
    # prev[1] <- prev[2]; prev[2].hpa invalidated (its pgd stays, as in the kernel's copy)
    assert c.prev_roots == [RootInfo(0x2000, 0xA1), RootInfo(0x4000, 0xA3),
                            RootInfo(0x4000, INVALID_PAGE)]
    assert f.freed == []


def test_without_current_miss_changes_nothing():
    f, c = filled()
    c.root = RootInfo(0, INVALID_PAGE)
    before = list(c.prev_roots)
    r = c.fast_pgd_switch(0x9000, ROLE)
    assert not r.hit and c.prev_roots == before and f.freed == []


def test_pae_special_root_is_freed_first_and_never_cached():
    f, c = filled()
    c.root = RootInfo(0x5000, 0xAE0)          # no shadow page behind it
    r = c.fast_pgd_switch(0x2000, ROLE)
    assert r.freed_special and f.freed == [0xAE0]
    assert (r.hit, r.slot) == (True, 0)
    assert c.root.hpa == 0xA1
    assert all(p.hpa != 0xAE0 for p in c.prev_roots)


def test_role_must_match_whole_word():
    f, c = filled()
    invalid_bit = 1 << 11
    f.words[0xA1] = ROLE.word | invalid_bit   # the root's page was invalidated
    r = c.fast_pgd_switch(0x2000, ROLE)
    assert not r.hit
    assert not is_root_usable(RootInfo(0x2000, 0xA1), 0x2000, ROLE, f.words.get)


def test_direct_role_ignores_pgd():
    f = Fake()
    direct = Role(0x5555, direct=1)
    assert is_root_usable(RootInfo(0, f.add(0xB0, direct.word)), 0x7777000, direct, f.words.get)
    assert not is_root_usable(RootInfo(0, f.add(0xB1, ROLE.word)), 0x7777000, ROLE, f.words.get)
    assert not is_root_usable(RootInfo(0, INVALID_PAGE), 0, direct, f.words.get)


def test_free_roots_masks():
    f, c = filled()
    assert c.free_roots(KVM_MMU_ROOT_PREVIOUS(1)) == [0xA2]
    assert c.prev_roots[1] == RootInfo(0x3000, INVALID_PAGE)
    assert c.root.hpa == 0xA0
    assert c.free_roots(KVM_MMU_ROOTS_ALL) == [0xA1, 0xA3, 0xA0]
    assert c.root == RootInfo(0, INVALID_PAGE)
    assert c.free_roots() == []               # nothing valid left: no work, no frees
    with pytest.raises(ValueError, match="mask"):
        c.free_roots(0x10)
    with pytest.raises(TypeError):
        c.free_roots("all")


def test_round_robin_four_fits_five_does_not():
    # Four address spaces fit in current + 3 previous; a fifth evicts the one needed next.
    for n, hits in ((4, 37), (5, 0)):
        f = Fake()
        c = f.cache()
        c.root = RootInfo(0x1000, f.add(0x100))
        got = 0
        for k in range(1, 41):
            pgd = 0x1000 * (1 + k % n)
            r = c.fast_pgd_switch(pgd, ROLE)
            if r.hit:
                got += 1
            else:                             # kvm_mmu_load would build/find the root
                c.root = RootInfo(pgd, f.add(0x100 + pgd))
        assert got == hits
