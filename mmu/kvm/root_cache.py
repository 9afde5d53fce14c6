"""The per-MMU root cache: the current root plus three previous roots (facts §5).

Kernel counterparts (``arch/x86/kvm/mmu/mmu.c``; the logic is identical in 5.18.12 and
6.4.6): ``struct kvm_mmu_root_info``, ``is_root_usable``,
``cached_root_find_and_keep_current``, ``cached_root_find_without_current``,
``fast_pgd_switch`` and ``kvm_mmu_free_roots`` with the masks ``KVM_MMU_ROOT_CURRENT``,
``KVM_MMU_ROOT_PREVIOUS(i)`` and ``KVM_MMU_ROOTS_ALL`` (``kvm_host.h``).

Why a cache at all: under shadow paging every guest CR3 load exits, and building a new
shadow root means write-protecting and re-shadowing guest page tables.  Keeping the last
three roots lets a guest that switches among up to four address spaces find its root
again with a few integer compares.  With TDP the root is direct (``role.direct``) so the
PGD is ignored and any root with the right role word is usable.

The cache does not know what a shadow page is.  It is given two callbacks:

* ``sp_role_word(hpa) -> int | None`` -- ``to_shadow_page(hpa)->role.word`` (``root_to_sp``
  since 6.6), or ``None``
  for a root that has no shadow page (the PAE "special" root built from ``pae_root``);
* ``free_root(hpa)`` -- ``mmu_free_root_page`` (drop a reference; the owner decides
  whether the page dies).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Protocol

from mmu.x86.bits import check_int

__all__ = [
    "INVALID_PAGE", "KVM_MMU_NUM_PREV_ROOTS", "KVM_MMU_ROOT_CURRENT", "KVM_MMU_ROOTS_ALL",
    "KVM_MMU_ROOT_PREVIOUS", "RootInfo", "ROOT_INFO_INVALID", "RootCache", "SwitchResult",
    "is_root_usable",
]

#: ``INVALID_PAGE`` = (hpa_t)-1.
INVALID_PAGE = (1 << 64) - 1
KVM_MMU_NUM_PREV_ROOTS = 3
KVM_MMU_ROOT_CURRENT = 1 << 0
KVM_MMU_ROOTS_ALL = (1 << (1 + KVM_MMU_NUM_PREV_ROOTS)) - 1   # 0xF


def KVM_MMU_ROOT_PREVIOUS(i: int) -> int:  # noqa: N802 -- the kernel's macro name
    """Mask bit of ``prev_roots[i]`` (bit 1 + i)."""
    check_int("i", i, 0, KVM_MMU_NUM_PREV_ROOTS)
    return 1 << (1 + i)


@dataclasses.dataclass(frozen=True)
class RootInfo:
    """``struct kvm_mmu_root_info``: the guest PGD a root shadows and the root's address."""

    pgd: int = INVALID_PAGE
    hpa: int = INVALID_PAGE

    def __post_init__(self) -> None:
        check_int("pgd", self.pgd, 0, 1 << 64)
        check_int("hpa", self.hpa, 0, 1 << 64)

    @property
    def valid(self) -> bool:
        """``VALID_PAGE(root.hpa)``."""
        return self.hpa != INVALID_PAGE

    def __str__(self) -> str:
        if not self.valid:
            return "invalid"
        pgd = "-" if self.pgd == INVALID_PAGE else f"{self.pgd:#x}"
        return f"pgd={pgd} hpa={self.hpa:#x}"


#: ``KVM_MMU_ROOT_INFO_INVALID``: both fields INVALID_PAGE.
ROOT_INFO_INVALID = RootInfo()


class _Role(Protocol):
    word: int
    direct: int


def is_root_usable(root: RootInfo, pgd: int, role: _Role,
                   sp_role_word: Callable[[int], "int | None"]) -> bool:
    """``is_root_usable``: valid hpa, same PGD unless the role is direct, and the root's
    shadow page has exactly ``role.word``.

    The whole 32-bit word is compared, so a root whose page was invalidated (the
    ``invalid`` bit is part of the word) never matches; a root without a shadow page
    (PAE special root) never matches either (6.x ``root_to_sp`` returns NULL for it).
    """
    if not root.valid:
        return False
    if not role.direct and pgd != root.pgd:
        return False
    word = sp_role_word(root.hpa)
    return word is not None and word == role.word


@dataclasses.dataclass(frozen=True)
class SwitchResult:
    """What ``fast_pgd_switch`` did.

    ``hit``: a usable root is now current.  ``slot``: where it was found ("current" or
    0..2 for ``prev_roots[i]``), None on a miss.  ``freed_special``: the current root had no
    shadow page (PAE root) and was freed before the search.  ``evicted``: hpa freed because
    it fell out of the cache (the former LRU entry on a miss), or None.
    """

    hit: bool
    slot: "str | int | None"
    freed_special: bool = False
    evicted: "int | None" = None


class RootCache:
    """``mmu->root`` and ``mmu->prev_roots[]`` of one ``struct kvm_mmu``, MRU first."""

    def __init__(self, sp_role_word: Callable[[int], "int | None"],
                 free_root: Callable[[int], None]) -> None:
        self.sp_role_word = sp_role_word
        self.free_root = free_root
        self.root = ROOT_INFO_INVALID
        self.prev_roots: list[RootInfo] = [ROOT_INFO_INVALID] * KVM_MMU_NUM_PREV_ROOTS

    def __repr__(self) -> str:
        prev = ", ".join(str(r) for r in self.prev_roots)
        return f"RootCache(root={self.root}, prev_roots=[{prev}])"

    def usable(self, root: RootInfo, pgd: int, role: _Role) -> bool:
        return is_root_usable(root, pgd, role, self.sp_role_word)

    # -- kvm_mmu_free_roots ---------------------------------------------------------
    def free_roots(self, mask: int = KVM_MMU_ROOTS_ALL) -> list[int]:
        """``kvm_mmu_free_roots(kvm, mmu, mask)``; returns the hpas released, in order.

        Previous roots first (``mmu_free_root_page`` invalidates only their hpa, the pgd
        stays), then the current root, which becomes {pgd=0, hpa=INVALID_PAGE}.  A PAE
        special root is released through the same callback (the owner frees its four
        ``pae_root`` entries).
        """
        mask = check_int("mask", mask, 0, KVM_MMU_ROOTS_ALL + 1)
        freed: list[int] = []
        for i in range(KVM_MMU_NUM_PREV_ROOTS):
            if mask & KVM_MMU_ROOT_PREVIOUS(i) and self.prev_roots[i].valid:
                freed.append(self.prev_roots[i].hpa)
                self.free_root(self.prev_roots[i].hpa)
                self.prev_roots[i] = RootInfo(self.prev_roots[i].pgd, INVALID_PAGE)
        if mask & KVM_MMU_ROOT_CURRENT and self.root.valid:
            freed.append(self.root.hpa)
            self.free_root(self.root.hpa)
            self.root = RootInfo(0, INVALID_PAGE)
        return freed

    # -- lookups ---------------------------------------------------------------------
    def _swap(self, i: int) -> None:
        self.root, self.prev_roots[i] = self.prev_roots[i], self.root

    def cached_root_find_and_keep_current(self, new_pgd: int, role: _Role) -> SwitchResult:
        """Current root valid: test it, then rotate each previous root into place.

        The swaps turn ``C | 0 1 2`` into ``i | C 0 .. (i-1) (i+1) ..`` on a hit at slot
        i (the old current becomes MRU), and into ``2 | C 0 1`` when nothing matched; the
        current root -- now the former LRU entry -- is then freed and left invalid.
        """
        if self.usable(self.root, new_pgd, role):
            return SwitchResult(True, "current")
        for i in range(KVM_MMU_NUM_PREV_ROOTS):
            self._swap(i)
            if self.usable(self.root, new_pgd, role):
                return SwitchResult(True, i)
        lru = self.root.hpa if self.root.valid else None
        self.free_roots(KVM_MMU_ROOT_CURRENT)
        return SwitchResult(False, None, evicted=lru)

    def cached_root_find_without_current(self, new_pgd: int, role: _Role) -> SwitchResult:
        """Current root invalid: take the first usable previous root, bubble the later
        entries up one slot and invalidate the last slot's hpa."""
        for i in range(KVM_MMU_NUM_PREV_ROOTS):
            if self.usable(self.prev_roots[i], new_pgd, role):
                break
        else:
            return SwitchResult(False, None)
        slot = i
        self._swap(i)
        for j in range(i, KVM_MMU_NUM_PREV_ROOTS - 1):
            self.prev_roots[j] = self.prev_roots[j + 1]
        last = KVM_MMU_NUM_PREV_ROOTS - 1
        self.prev_roots[last] = RootInfo(self.prev_roots[last].pgd, INVALID_PAGE)
        return SwitchResult(True, slot)

    def fast_pgd_switch(self, new_pgd: int, role: _Role) -> SwitchResult:
        """``fast_pgd_switch``: free a current root that has no shadow page (it cannot be
        cached: ``pae_root`` is per vCPU), then search with or without the current root."""
        new_pgd = check_int("new_pgd", new_pgd, 0, 1 << 64)
        freed_special = False
        if self.root.valid and self.sp_role_word(self.root.hpa) is None:
            self.free_roots(KVM_MMU_ROOT_CURRENT)
            freed_special = True
        if self.root.valid:
            res = self.cached_root_find_and_keep_current(new_pgd, role)
        else:
            res = self.cached_root_find_without_current(new_pgd, role)
        return dataclasses.replace(res, freed_special=freed_special) if freed_special else res
