"""Shadow pages and roots: the per-VM hash keyed by (gfn, role), write protection, zapping.

Kernel counterparts (``arch/x86/kvm/mmu/mmu.c``, Linux 6.x; 6.4 read for the details):
``kvm_mmu_get_shadow_page`` = ``kvm_mmu_find_shadow_page`` + ``kvm_mmu_alloc_shadow_page``
(5.18/5.19: one ``kvm_mmu_get_page``), ``account_shadowed``/``unaccount_shadowed``,
``rmap_write_protect``, ``mmu_alloc_root``, ``mmu_alloc_direct_roots``,
``mmu_alloc_shadow_roots``, ``mmu_free_root_page``, ``is_obsolete_sp``,
``mmu_page_zap_pte``, ``kvm_mmu_prepare_zap_page``, ``kvm_mmu_zap_all``,
``kvm_mmu_zap_all_fast``, ``kvm_sync_page`` and ``kvm_mmu_sync_roots``; the SPTE helpers
follow ``mmu/spte.h`` (``SPTE_INDEX``, ``SPTE_BASE_ADDR_MASK``).

:class:`ShadowPages` is the lookup half of :class:`mmu.kvm.shadow.ShadowMMU`; the fault
path that fills the pages is :mod:`mmu.kvm.shadow_fault`.  The model choices (host
memory at a fixed offset, 4 KiB host pages, one vCPU, invalid pages leaving the hash)
are described in :mod:`mmu.kvm.shadow`.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Iterator

from mmu.x86.bits import (ACC_EXEC_MASK, ACC_USER_MASK, ACC_WRITE_MASK, MAX_PHYS_BITS,
                          PAGE_SHIFT, PAGE_SIZE, PTE, check_int)
from mmu.x86.memory import GuestMemory
from mmu.kvm.roles import CpuRole, PageRole

__all__ = [
    "HOST_RAM_BASE", "SHADOW_PAGE_BASE", "PT64_ENT_PER_PAGE", "gfn_to_pfn", "gpa_to_hpa",
    "ShadowPage", "Root", "ShadowPages", "spte_access", "shadow_index", "KVM_PAGES_PER_HPAGE",
]

#: Host-physical address where guest RAM starts (bit 51): ``hpa = gpa + HOST_RAM_BASE``.
HOST_RAM_BASE = 1 << 51
#: Host-physical address of the first shadow page (the bump allocator's start).
SHADOW_PAGE_BASE = 0x10_0000_0000
#: Entries in a shadow page: shadow pages always use the 8-byte format, even for a 32-bit
#: guest (that is why a 4-byte-gpte guest table needs several shadow pages: quadrants).
PT64_ENT_PER_PAGE = 512
#: Bits 51:12 of an 8-byte entry (``SPTE_BASE_ADDR_MASK``).
_ADDR_MASK = ((1 << MAX_PHYS_BITS) - 1) & ~(PAGE_SIZE - 1)
#: Bits 31:12 of a 4-byte entry / of a 32-bit CR3.
_ADDR_MASK_32 = 0xFFFF_F000
# Plain ints on the hot path: IntFlag arithmetic builds enum members (slow in Python).
_P, _RW, _US, _A, _D, _XD = (int(f) for f in (PTE.P, PTE.RW, PTE.US, PTE.A, PTE.D, PTE.XD))
_NONLEAF_SPTE = _P | _RW | _US | _A
#: Guest-entry bits that decide what a leaf SPTE may be (A/D are KVM's own business:
#: FNAME(update_accessed_dirty_bits) writes them without write-tracking).
_GPTE_AD = _A | _D


def KVM_PAGES_PER_HPAGE(level: int) -> int:
    """4 KiB pages covered by one entry at ``level`` (``KVM_PAGES_PER_HPAGE``)."""
    return 1 << (9 * (level - 1))


def gfn_to_pfn(gfn: int) -> int:
    """Host frame backing guest frame ``gfn`` (the model's fixed memslot, see module doc)."""
    gfn = check_int("gfn", gfn, 0, 1 << (MAX_PHYS_BITS - 1 - PAGE_SHIFT))
    return gfn + (HOST_RAM_BASE >> PAGE_SHIFT)


def gpa_to_hpa(gpa: int) -> int:
    """``gfn_to_pfn`` at byte granularity: ``gpa + HOST_RAM_BASE`` for ``gpa < 2**51``."""
    gpa = check_int("gpa", gpa, 0, HOST_RAM_BASE)
    return gpa + HOST_RAM_BASE


def shadow_index(gva: int, level: int) -> int:
    """Index of ``gva`` in a shadow page of ``level`` (``SPTE_INDEX``: 9 bits per level)."""
    return (gva >> (PAGE_SHIFT + 9 * (level - 1))) & (PT64_ENT_PER_PAGE - 1)


def spte_access(spte: int) -> int:
    """ACC_* bits a leaf SPTE grants (the inverse of ``make_spte``'s permission bits)."""
    acc = 0 if spte & _XD else ACC_EXEC_MASK
    if spte & _RW:
        acc |= ACC_WRITE_MASK
    if spte & _US:
        acc |= ACC_USER_MASK
    return acc



# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------

@dataclasses.dataclass(eq=False)
class ShadowPage:
    """``struct kvm_mmu_page``: one shadow page table page.

    Identity matters (two pages may have equal fields after a zap), so equality is ``is``.
    ``gptes`` remembers, for each leaf SPTE of an indirect level-1 page, the guest entry it
    was made from (without A/D) -- the model's ``shadowed_translation``, used by
    :meth:`ShadowMMU.sync_page` to find entries the guest changed while the page was unsync.
    """

    gfn: int
    role: PageRole
    hpa: int
    mmu_valid_gen: int
    spt: dict[int, int] = dataclasses.field(default_factory=dict)
    children: dict[int, "ShadowPage"] = dataclasses.field(default_factory=dict)
    #: (parent SP, index) of every SPTE pointing here (``parent_ptes``).
    parent_ptes: set = dataclasses.field(default_factory=set)
    gptes: dict[int, int] = dataclasses.field(default_factory=dict)
    root_count: int = 0
    unsync: bool = False
    write_flooding_count: int = 0

    @property
    def parents(self) -> int:
        return len(self.parent_ptes)

    @property
    def has_gptes(self) -> bool:
        """``sp_has_gptes``: the page shadows a guest table (not direct, not passthrough)."""
        return not self.role.direct and not self.role.passthrough

    def __repr__(self) -> str:
        flags = "".join((" invalid" if self.role.invalid else "", " unsync" if self.unsync else "",
                         f" root_count={self.root_count}" if self.root_count else ""))
        return (f"ShadowPage(hpa={self.hpa:#x} gfn={self.gfn:#x} level={self.role.level} "
                f"{'direct' if self.role.direct else 'indirect'} q={self.role.quadrant} "
                f"access={self.role.access} word={self.role.word:#x} sptes={len(self.spt)}"
                f"{flags})")


@dataclasses.dataclass(frozen=True, eq=False)
class Root:
    """A root a vCPU can load: ``mmu->root.hpa`` plus what it points at.

    ``sp`` is the root shadow page, or None for the PAE special root (``mmu->pae_root``, not
    a shadow page: 4 PDPTE-like entries), in which case ``pae_sps`` holds the 4 level-2
    pages it points to (None for an entry left invalid, ``INVALID_PAE_ROOT``).
    """

    hpa: int
    role: PageRole
    sp: ShadowPage | None
    pae_sps: tuple[ShadowPage | None, ...] | None = None

    def pages(self) -> list[ShadowPage]:
        """The root-level shadow pages this root holds a reference on."""
        if self.sp is not None:
            return [self.sp]
        return [sp for sp in self.pae_sps or () if sp is not None]



class ShadowPages:
    """The per-VM shadow-page state: hash, write tracking, reverse maps, roots.

    ``mem`` is guest-physical memory (the guest's page tables live there).  ``unsync``
    enables ``mmu_try_to_unsync_pages`` (KVM's default): a last-level guest page table may
    be written by the guest without a fault, and its shadow page is brought back in line at
    the next :meth:`sync_roots` (the guest's INVLPG / MOV CR3).  With ``unsync=False`` every
    write to any shadowed guest table is trapped and emulated.
    """

    def __init__(self, mem: GuestMemory, *, unsync: bool = True) -> None:
        if not isinstance(mem, GuestMemory):
            raise TypeError(f"mem must be an mmu.GuestMemory, not {type(mem).__name__}")
        if not isinstance(unsync, bool):
            raise TypeError(f"unsync must be a bool, not {type(unsync).__name__}")
        self.mem = mem
        self.unsync_enabled = unsync
        #: {(gfn, role.word): ShadowPage} -- every page a lookup can find (mmu_page_hash).
        self.hash: dict[tuple[int, int], ShadowPage] = {}
        #: Zapped pages still referenced as roots (role.invalid=1), freed by put_root.
        self.obsolete: list[ShadowPage] = []
        #: ``kvm->arch.mmu_valid_gen``: toggled by the fast zap.
        self.mmu_valid_gen = 0
        #: gfn -> number of upper-level (level > 1) shadow pages shadowing it
        #: (``gfn_write_track``, added by account_shadowed).
        self.write_track: dict[int, int] = {}
        #: gfn -> shadow pages with gptes for that gfn (the hash bucket walked by
        #: ``for_each_gfn_valid_sp_with_gptes``).
        self.gfn_sps: dict[int, set[ShadowPage]] = {}
        #: gfn -> {(sp, index)} of the leaf SPTEs mapping that gfn (the rmap).
        self.rmap: dict[int, set[tuple[ShadowPage, int]]] = {}
        self._by_hpa: dict[int, ShadowPage] = {}
        self._next_hpa = SHADOW_PAGE_BASE
        #: ``mmu->pae_root``: one special page per vCPU, allocated once.
        self.pae_root_hpa = self._alloc_hpa()
        self.stats: dict[str, int] = dict.fromkeys((
            "sps_created", "sps_reused", "sps_zapped", "sps_freed", "faults", "injected",
            "emulated", "sptes_installed", "sptes_write_protected", "unsynced", "synced",
            "sptes_zapped", "flooded"), 0)

    def _alloc_hpa(self) -> int:
        hpa = self._next_hpa
        self._next_hpa += PAGE_SIZE
        return hpa

    def page_at(self, hpa: int) -> ShadowPage | None:
        """``to_shadow_page(hpa)``: the shadow page at a host address (None if none/freed)."""
        return self._by_hpa.get(hpa)

    def sp_role_word(self, hpa: int) -> int | None:
        """Role word of the page at ``hpa``, None for the PAE root or a freed page
        (the callback :class:`mmu.kvm.root_cache.RootCache` needs)."""
        sp = self._by_hpa.get(hpa)
        return None if sp is None else sp.role.word

    def is_obsolete(self, sp: ShadowPage) -> bool:
        """``is_obsolete_sp``: invalid, or from before the last fast zap."""
        return bool(sp.role.invalid) or sp.mmu_valid_gen != self.mmu_valid_gen

    def pages(self) -> Iterator[ShadowPage]:
        """Every live page: those in the hash, then the obsolete roots."""
        yield from self.hash.values()
        yield from self.obsolete

    # -- lookup / creation -------------------------------------------------
    def get_shadow_page(self, gfn: int, role: PageRole) -> tuple[ShadowPage, bool]:
        """``kvm_mmu_get_shadow_page`` (6.0+): find (gfn, role.word) or allocate it.

        ``kvm_mmu_find_shadow_page``: an exact match (same gfn, same 32-bit word; an invalid
        page never matches -- it is not in :attr:`hash`) is reused; an unsync match is synced
        first.  Pages of the same gfn with another role that are unsync are zapped when the
        requested page is upper-level (it will write-track the gfn, and unsync pages of a
        write-tracked gfn may not exist).  ``kvm_mmu_alloc_shadow_page``: otherwise a new
        page is allocated, hashed and -- if it has gptes -- accounted (write protection).
        """
        gfn = check_int("gfn", gfn, 0, 1 << (MAX_PHYS_BITS - PAGE_SHIFT))
        if not isinstance(role, PageRole):
            raise TypeError(f"role must be a PageRole, not {type(role).__name__}")
        check_int("role.level", role.level, 1, 6)
        if role.invalid:
            raise ValueError(f"role word {role.word:#x} has invalid=1: invalid pages are never "
                             f"looked up or created (allowed invalid=0)")
        sp = self.hash.get((gfn, role.word))
        if role.level > 1:
            for other in list(self.gfn_sps.get(gfn, ())):
                if other is not sp and other.unsync:
                    self.zap_page(other)
        if sp is not None:
            if sp.unsync:
                self.sync_page(sp)
            sp.write_flooding_count = 0
            self.stats["sps_reused"] += 1
            return sp, False
        sp = ShadowPage(gfn, role, self._alloc_hpa(), self.mmu_valid_gen)
        self.hash[(gfn, role.word)] = sp
        self._by_hpa[sp.hpa] = sp
        self.stats["sps_created"] += 1
        if sp.has_gptes:
            self._account_shadowed(sp)
        return sp, True

    def _account_shadowed(self, sp: ShadowPage) -> None:
        """``account_shadowed``: write-protect the guest table this page shadows.

        Level > 1: add a write-track on the gfn (upper-level guest tables are never unsync).
        Level 1: only write-protect.  Either way every SPTE that maps the gfn writable loses
        W now (``kvm_mmu_slot_gfn_write_protect``), so the next guest write faults.
        """
        gfn = sp.gfn
        self.gfn_sps.setdefault(gfn, set()).add(sp)
        if sp.role.level > 1:
            self.write_track[gfn] = self.write_track.get(gfn, 0) + 1
        self._write_protect_gfn(gfn)

    def _unaccount_shadowed(self, sp: ShadowPage) -> None:
        bucket = self.gfn_sps.get(sp.gfn)
        if bucket is not None:
            bucket.discard(sp)
            if not bucket:
                del self.gfn_sps[sp.gfn]
        if sp.role.level > 1:
            n = self.write_track[sp.gfn] - 1
            if n:
                self.write_track[sp.gfn] = n
            else:
                del self.write_track[sp.gfn]

    def _write_protect_gfn(self, gfn: int) -> int:
        """``rmap_write_protect``: clear W in every leaf SPTE mapping ``gfn``."""
        n = 0
        for sp, idx in self.rmap.get(gfn, ()):
            spte = sp.spt[idx]
            if spte & _RW:
                sp.spt[idx] = spte & ~(_RW | _D)
                n += 1
        self.stats["sptes_write_protected"] += n
        return n

    def _shadowed_at(self, gfn: int) -> set[ShadowPage]:
        return self.gfn_sps.get(gfn, set())

    # -- roots -------------------------------------------------------------
    def _alloc_root(self, gfn: int, quadrant: int, level: int, root_role: PageRole
                    ) -> tuple[ShadowPage, bool]:
        """``mmu_alloc_root``: a root-level page with the root role at ``level``/``quadrant``;
        takes a reference (``++sp->root_count``)."""
        role = root_role.replace(level=level, quadrant=quadrant)
        sp, created = self.get_shadow_page(gfn, role)
        sp.root_count += 1
        return sp, created

    @staticmethod
    def _check_root_role(root_role: object) -> PageRole:
        if not isinstance(root_role, PageRole):
            raise TypeError(f"root_role must be a PageRole, not {type(root_role).__name__}")
        check_int("root_role.level", root_role.level, 3, 6)
        return root_role

    def alloc_direct_roots(self, root_role: PageRole) -> tuple[Root, int, int]:
        """``mmu_alloc_direct_roots`` (legacy MMU, guest paging off under shadow paging).

        Level 4/5: one root page at gfn 0.  Level 3 (PAE shadow of an unpaged guest): the PAE
        special root with 4 direct level-2 pages at gfn ``i << 18`` (1 GiB each).
        Returns ``(root, created, reused)``: root-level pages allocated / found in the hash.
        """
        role = self._check_root_role(root_role)
        if not role.direct:
            raise ValueError(f"root_role word {role.word:#x} has direct=0: use alloc_shadow_roots")
        if role.level >= 4:
            sp, created = self._alloc_root(0, 0, role.level, role)
            return Root(sp.hpa, role, sp, None), int(created), int(not created)
        sps, created = [], 0
        for i in range(4):
            sp, c = self._alloc_root(i << (30 - PAGE_SHIFT), 0, 2, role)
            sps.append(sp)
            created += c
        return Root(self.pae_root_hpa, role, None, tuple(sps)), created, 4 - created

    def alloc_shadow_roots(self, cpu_role: CpuRole, root_role: PageRole, cr3: int,
                           pdptrs: Iterable[int] | None = None) -> tuple[Root, int, int]:
        """``mmu_alloc_shadow_roots``: the root for the guest table at CR3.

        * 4/5-level guest: one root page of ``root_role.level`` at gfn(CR3) (a 5-level
          ``passthrough`` root over a 4-level guest also lands here);
        * PAE guest: the PAE special root; entry i -> a level-2 page shadowing the page
          directory of PDPTE i (quadrant 0), left invalid when PDPTE i is not present.
          ``pdptrs`` are the 4 PDPTEs loaded at MOV CR3 (``mmu->pdptrs``); read from memory
          at CR3 & ~0x1f when not given;
        * 32-bit guest: the PAE special root; all 4 entries -> level-2 pages shadowing the
          one guest page directory at gfn(CR3), quadrants 0..3 (each 1 GiB of the 4 GiB);
        * guest paging off (``root_role.direct``): :meth:`alloc_direct_roots`.

        Returns ``(root, created, reused)`` counted over root-level pages.
        """
        if not isinstance(cpu_role, CpuRole):
            raise TypeError(f"cpu_role must be a CpuRole, not {type(cpu_role).__name__}")
        role = self._check_root_role(root_role)
        cr3 = check_int("cr3", cr3, 0, 1 << 64)
        if role.direct:
            return self.alloc_direct_roots(role)
        glevel = cpu_role.base.level
        if glevel >= 4:
            sp, created = self._alloc_root((cr3 & _ADDR_MASK) >> PAGE_SHIFT, 0, role.level, role)
            return Root(sp.hpa, role, sp, None), int(created), int(not created)
        if glevel not in (2, 3):
            raise ValueError(f"cpu_role.base.level={glevel}: allowed 2..5 for an indirect root")
        if role.level != 3:
            # pml4_root/pml5_root -> pae_root (nested NPT over a 32-bit/PAE L1) is not modelled.
            raise ValueError(f"root_role.level={role.level} over a {glevel}-level guest: only "
                             f"the PAE root (level 3) is modelled")
        if glevel == 3:
            if pdptrs is None:
                base = cr3 & 0xFFFF_FFE0
                pdptrs = [self.mem.read_u64(base + 8 * i) for i in range(4)]
            pdptrs = [check_int(f"pdptrs[{i}]", p, 0, 1 << 64) for i, p in enumerate(pdptrs)]
            if len(pdptrs) != 4:
                raise ValueError(f"pdptrs has {len(pdptrs)} entries; allowed exactly 4")
        sps: list[ShadowPage | None] = []
        created = reused = 0
        for i in range(4):
            if glevel == 3:
                if not pdptrs[i] & _P:
                    sps.append(None)
                    continue
                gfn, quadrant = (pdptrs[i] & _ADDR_MASK) >> PAGE_SHIFT, 0
            else:
                gfn, quadrant = (cr3 & _ADDR_MASK_32) >> PAGE_SHIFT, i
            sp, c = self._alloc_root(gfn, quadrant, 2, role)
            sps.append(sp)
            created += c
            reused += not c
        return Root(self.pae_root_hpa, role, None, tuple(sps)), created, reused

    def put_root(self, root: Root) -> None:
        """``mmu_free_root_page`` for each root-level page: drop the reference; a page that is
        invalid and no longer referenced is freed (a valid one stays hashed for reuse)."""
        if not isinstance(root, Root):
            raise TypeError(f"root must be a Root, not {type(root).__name__}")
        for sp in root.pages():
            if sp.root_count <= 0:
                raise ValueError(f"{sp!r} has root_count={sp.root_count}: put_root without a "
                                 f"matching alloc (allowed only for referenced roots)")
            sp.root_count -= 1
            if sp.root_count == 0 and sp.role.invalid:
                self._free(sp)

    def root_is_obsolete(self, root: Root) -> bool:
        """``is_obsolete_root``: a root with no shadow page counts as obsolete (6.x)."""
        return root.sp is None or self.is_obsolete(root.sp)

    # -- zapping -------------------------------------------------------------
    def _drop_spte(self, sp: ShadowPage, idx: int) -> bool:
        """``mmu_page_zap_pte``: clear one SPTE; a child page is only unlinked, not zapped
        (for shadow paging the kernel keeps parentless pages hashed for reuse)."""
        spte = sp.spt.pop(idx, None)
        if spte is None:
            return False
        child = sp.children.pop(idx, None)
        if child is not None:
            child.parent_ptes.discard((sp, idx))
        else:
            gfn = ((spte & _ADDR_MASK) >> PAGE_SHIFT) - (HOST_RAM_BASE >> PAGE_SHIFT)
            bucket = self.rmap.get(gfn)
            if bucket is not None:
                bucket.discard((sp, idx))
                if not bucket:
                    del self.rmap[gfn]
            sp.gptes.pop(idx, None)
        self.stats["sptes_zapped"] += 1
        return True

    def zap_page(self, sp: ShadowPage) -> bool:
        """``kvm_mmu_prepare_zap_page`` + commit: unlink the page's children and parents,
        unaccount it and mark it invalid.  A page still referenced as a root stays alive
        (in :attr:`obsolete`) until :meth:`put_root`; otherwise it is freed.  Returns True if
        the page was freed now."""
        if sp.role.invalid:
            return False
        for idx in list(sp.spt):
            self._drop_spte(sp, idx)
        for parent, idx in list(sp.parent_ptes):
            self._drop_spte(parent, idx)
        if sp.has_gptes:
            self._unaccount_shadowed(sp)
        sp.unsync = False
        self.hash.pop((sp.gfn, sp.role.word), None)
        sp.role = sp.role.replace(invalid=1)
        self.stats["sps_zapped"] += 1
        if sp.root_count:
            self.obsolete.append(sp)
            return False
        self._by_hpa.pop(sp.hpa, None)
        self.stats["sps_freed"] += 1
        return True

    def _free(self, sp: ShadowPage) -> None:
        if sp in self.obsolete:
            self.obsolete.remove(sp)
        self._by_hpa.pop(sp.hpa, None)
        self.stats["sps_freed"] += 1

    def zap_all(self) -> int:
        """``kvm_mmu_zap_all``: zap every page.  Returns the number zapped."""
        pages = list(self.hash.values())
        for sp in pages:
            self.zap_page(sp)
        return len(pages)

    def invalidate_all(self) -> int:
        """``kvm_mmu_zap_all_fast``: toggle ``mmu_valid_gen`` so every existing page is
        obsolete, mark them invalid and zap them; referenced roots survive as invalid pages
        (never matched again) until their last :meth:`put_root`."""
        self.mmu_valid_gen ^= 1
        return self.zap_all()

    # -- sync -----------------------------------------------------------------
    def sync_page(self, sp: ShadowPage) -> int:
        """``kvm_sync_page`` (6.4 ``sync_spte`` per entry): re-read the gpte behind every leaf
        SPTE of an unsync page and drop those whose gpte changed (other than A/D); then the page
        is synced and its gfn write-protected again.  Returns the SPTEs dropped."""
        dropped = 0
        if sp.has_gptes and sp.role.level == 1:
            gsize = 4 if sp.role.has_4_byte_gpte else 8
            base = (sp.gfn << PAGE_SHIFT) + (sp.role.quadrant * 512 * gsize if gsize == 4 else 0)
            read = self.mem.read_u32 if gsize == 4 else self.mem.read_u64
            for idx in list(sp.spt):
                old = sp.gptes.get(idx)
                if old is None or read(base + idx * gsize) & ~_GPTE_AD != old:
                    dropped += self._drop_spte(sp, idx)
        if sp.unsync:
            sp.unsync = False
            self.stats["synced"] += 1
            self._write_protect_gfn(sp.gfn)
        return dropped

    def sync_roots(self, root: Root | None = None) -> int:
        """``kvm_mmu_sync_roots`` (the guest's MOV CR3 / INVLPG / TLB flush): sync every unsync
        page (the model does not track ``unsync_children`` per root, so all are synced)."""
        return sum(self.sync_page(sp) for sp in list(self.hash.values()) if sp.unsync)
