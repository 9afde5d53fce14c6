"""Shadow paging: KVM's shadow pages keyed by (gfn, role), roots, the fault path, write protection.

Kernel counterparts (Linux 6.x; 6.4 read for the details): ``arch/x86/kvm/mmu/mmu.c``
(``kvm_mmu_get_shadow_page`` = ``kvm_mmu_find_shadow_page`` + ``kvm_mmu_alloc_shadow_page``,
``mmu_alloc_root``, ``mmu_alloc_direct_roots``, ``mmu_alloc_shadow_roots``,
``mmu_free_root_page``, ``account_shadowed``, ``mmu_try_to_unsync_pages``,
``kvm_mmu_prepare_zap_page``, ``kvm_mmu_zap_all_fast``, ``kvm_mmu_pte_write``) and
``paging_tmpl.h`` (``FNAME(page_fault)``, ``FNAME(fetch)``, ``FNAME(protect_clean_gpte)``).
5.18/5.19 had one ``kvm_mmu_get_page(vcpu, gfn, gaddr, level, direct, access)`` instead of the
find/alloc split and built child roles from the root role; the *results* modelled here (which
pages exist, their roles, the SPTEs) are the same, except that 5.18 has no ``passthrough``.

Two parts, as the kernel splits the work: :mod:`mmu.kvm.shadow_pages` (mmu.c: the hash
and role lookup, write protection, roots, zapping, sync) and :mod:`mmu.kvm.shadow_fault`
(paging_tmpl.h and mmu.c: the fault/fetch path, ``mmu_set_spte``, the guest-write
tracking of ``kvm_mmu_pte_write``, named ``kvm_mmu_track_write`` after 6.4, and SPTE
walks).  :class:`ShadowMMU` composes them; every name is importable from here.

What a shadow page is: when the guest's own page tables translate GVA -> GPA and KVM cannot
use EPT/NPT, KVM builds page tables the hardware walks, GVA -> HPA.  Each such page (a
:class:`ShadowPage`, ``struct kvm_mmu_page``) *shadows* one guest page table -- or, for guest
huge pages and guest paging off, maps a gfn range *directly* -- and is found again by
``(gfn, role.word)`` in a per-VM hash (``kvm->arch.mmu_page_hash``).  The role (see
:mod:`mmu.kvm.roles`) says everything that makes two pages for the same gfn different.

Model choices, each documented where it is made:

* **Host memory.**  Guest RAM is backed by host frames at a fixed offset:
  ``pfn = gfn + HOST_RAM_BASE >> 12`` (:func:`gfn_to_pfn`), i.e. ``hpa = gpa + 2**51``.  A
  real host pins arbitrary pages through the memslot; a fixed offset keeps every SPTE
  checkable by hand.  Shadow pages themselves get host addresses from a bump allocator
  starting at :data:`SHADOW_PAGE_BASE`; their 512 entries live in ``ShadowPage.spt`` (a dict
  index -> SPTE), not in a byte array.
* **4 KiB host pages.**  The host backs guest RAM with 4 KiB pages (as with THP off), so
  ``kvm_mmu_hugepage_adjust`` never maps large: every leaf SPTE is a 4 KiB SPTE, and a guest
  2 MiB/4 MiB/1 GiB page is mapped through *direct* shadow pages (facts §6).
* **One vCPU.**  Reference counts (``root_count``) are as for one vCPU; there are no
  remote TLB flushes or MMU-lock concerns.
* **Guest writes.**  The guest's own writes to its page tables are modelled by
  :meth:`ShadowMMU.guest_write` (what happens after the write-protection fault: the
  emulator's write plus ``kvm_mmu_pte_write``, or a direct write into an unsync page).
* **Invalid pages leave the hash.**  The kernel leaves a zapped root that vCPUs still
  reference in its hash bucket (marked ``role.invalid``, skipped by lookups) until the last
  reference goes.  The model moves it from :attr:`ShadowMMU.hash` to
  :attr:`ShadowMMU.obsolete`, so ``hash`` holds exactly the pages a lookup can find.

SPTE format: an x86-64 paging entry (KVM's ``shadow_*_mask`` values for shadow paging with
EPT off): P | RW (``ACC_WRITE``) | US (``ACC_USER``) | A, XD when ``ACC_EXEC`` is missing (the
shadow root role always has ``efer_nx`` = 1, facts §2.3), D on a leaf installed by a write,
address bits 51:12.  Non-leaf SPTEs grant everything (``make_nonleaf_spte``): the leaf decides.
"""
from __future__ import annotations

from mmu.kvm.shadow_fault import (WRITE_FLOODING_LIMIT, FaultOutcome, GuestWriteOutcome,
                                  ShadowFaults, SpteTranslation)
from mmu.kvm.shadow_pages import (HOST_RAM_BASE, KVM_PAGES_PER_HPAGE, PT64_ENT_PER_PAGE,
                                  SHADOW_PAGE_BASE, Root, ShadowPage, ShadowPages, gfn_to_pfn,
                                  gpa_to_hpa, shadow_index, spte_access)

__all__ = [
    "HOST_RAM_BASE", "SHADOW_PAGE_BASE", "PT64_ENT_PER_PAGE", "gfn_to_pfn", "gpa_to_hpa",
    "ShadowPage", "Root", "FaultOutcome", "GuestWriteOutcome", "SpteTranslation",
    "ShadowMMU", "spte_access", "shadow_index", "KVM_PAGES_PER_HPAGE", "WRITE_FLOODING_LIMIT",
]


class ShadowMMU(ShadowFaults, ShadowPages):
    """The per-VM shadow MMU: the pages and roots of :class:`~mmu.kvm.shadow_pages.ShadowPages`
    (mmu.c's hash, write protection, zapping) with the fault path of
    :class:`~mmu.kvm.shadow_fault.ShadowFaults` (paging_tmpl.h, guest-write tracking).

    ``ShadowMMU(mem, unsync=True)``: see :class:`~mmu.kvm.shadow_pages.ShadowPages`.
    """
