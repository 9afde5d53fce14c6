"""The shadow-paging fault path: guest walk, shadow pages down to the leaf, the SPTE.

Kernel counterparts (Linux 6.x; 6.4 read for the details): ``paging_tmpl.h``
(``FNAME(page_fault)``, ``FNAME(walk_addr_generic)``, ``FNAME(fetch)``,
``FNAME(protect_clean_gpte)``), ``arch/x86/kvm/mmu/mmu.c`` (``direct_page_fault``,
``kvm_mmu_get_child_sp``, ``link_shadow_page``, ``mmu_set_spte``,
``mmu_try_to_unsync_pages``, ``kvm_mmu_pte_write`` -- renamed ``kvm_mmu_track_write``
after 6.4 -- with ``detect_write_misaligned``, ``detect_write_flooding`` and
``get_written_sptes``) and ``mmu/spte.c`` (``make_spte``).

:class:`ShadowFaults` is the fault half of :class:`mmu.kvm.shadow.ShadowMMU`: it fills
and reads the pages that :class:`mmu.kvm.shadow_pages.ShadowPages` finds and zaps.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

from mmu.x86.bits import (ACC_ALL, ACC_EXEC_MASK, ACC_USER_MASK, ACC_WRITE_MASK, MAX_PHYS_BITS,
                          PAGE_SHIFT, PAGE_SIZE, PF_VECTOR, PFErr, check_access, check_int)
from mmu.x86.regs import Regs
from mmu.kvm.permissions import kvm_reports_fetch
from mmu.kvm.roles import CpuRole, child_role
from mmu.kvm.shadow_pages import (_A, _ADDR_MASK, _D, _GPTE_AD, _NONLEAF_SPTE, _P, _RW, _US,
                                  _XD, HOST_RAM_BASE, KVM_PAGES_PER_HPAGE, Root, ShadowPage,
                                  gfn_to_pfn, gpa_to_hpa, shadow_index, spte_access)
from mmu.x86.walker import Fault, WalkResult, walk

__all__ = ["FaultOutcome", "GuestWriteOutcome", "SpteTranslation", "ShadowFaults",
           "WRITE_FLOODING_LIMIT"]

#: How many consecutive emulated writes to one SP before it is zapped (detect_write_flooding).
WRITE_FLOODING_LIMIT = 3


@dataclasses.dataclass(frozen=True)
class FaultOutcome:
    """What :meth:`ShadowMMU.page_fault` did.

    * ``injected``: the guest walk failed; KVM injects this fault into the guest
      (``kvm_inject_emulated_page_fault``), nothing is installed.
    * ``emulate``: a write to a write-protected guest page table (``write_fault_to_shadow_pgtable``
      / ``RET_PF_EMULATE``): the SPTE was installed read-only and the instruction must be
      emulated -- the caller models the write with :meth:`ShadowMMU.guest_write`.
    * ``retry``: the shadow root no longer matches the guest (a PAE PDPTE became present
      after the root was built): KVM returns ``RET_PF_RETRY``/reloads the root.
    * otherwise ``spte`` was installed at ``level`` (always 1 here) in ``sp``; ``hpa`` is the
      translation and ``access`` the ACC bits the SPTE grants.
    """

    walk: WalkResult | None
    injected: Fault | None = None
    emulate: bool = False
    retry: bool = False
    hpa: int | None = None
    spte: int | None = None
    access: int = 0
    sp: ShadowPage | None = None
    created: int = 0          # shadow pages allocated by this fault
    wp_trick: bool = False    # the CR0.WP=0 trick rewrote the access (facts §7.6)
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.injected is None and not self.retry


@dataclasses.dataclass(frozen=True)
class GuestWriteOutcome:
    """What :meth:`ShadowMMU.guest_write` did to the shadow pages of the written gfn."""

    gpa: int
    trapped: bool            # the write hit a write-protected gfn (emulated + tracked)
    zapped_sptes: int        # SPTEs for the written gptes dropped (mmu_page_zap_pte)
    zapped_sps: tuple[ShadowPage, ...]   # whole pages zapped (misaligned / flooded)
    unsync_sps: int          # unsync pages written directly (fixed up at the next sync)


@dataclasses.dataclass(frozen=True)
class SpteTranslation:
    """:meth:`ShadowMMU.translate`: the hardware's view of a GVA under a shadow root."""

    gva: int
    hpa: int
    spte: int
    access: int              # ACC bits of the leaf SPTE (non-leaf SPTEs grant all)
    level: int
    path: tuple[tuple[ShadowPage, int], ...]   # (page, index) from the root down


def _kvm_error_code(fault: Fault, access: str, cpu_role: CpuRole) -> Fault:
    """The #PF error code KVM's software walker builds, which is the SDM's except for one
    bit: ``FNAME(walk_addr_generic)`` (paging_tmpl.h, 5.14+, incl. 5.18 and 6.4) adds
    PFERR_FETCH for a fetch whenever ``is_efer_nx(mmu) || is_cr4_smep(mmu)``.  In 32-bit
    paging with EFER.NXE=1 the CPU role has efer_nx=1 (kvm_calc_cpu_role ignores CR4.PAE
    there), so KVM reports I/D where the SDM (and :func:`mmu.x86.walker.walk`) does not: the
    SDM sets I/D only with CR4.SMEP or with PAE/long mode and NXE (Vol. 3A 4.7).
    Checked against the kernel source in docs/fact-check.md."""
    if (fault.vector != PF_VECTOR or access != "fetch" or fault.error_code & PFErr.ID
            or not kvm_reports_fetch(cpu_role)):
        return fault
    return dataclasses.replace(
        fault, error_code=fault.error_code | int(PFErr.ID),
        reason=fault.reason + " (KVM also reports I/D here: EFER.NX=1 in 32-bit paging)")


class ShadowFaults:
    """Faults, guest writes and SPTE walks over the pages of :class:`ShadowPages`
    (mixed into :class:`mmu.kvm.shadow.ShadowMMU`)."""

    # -- the fault path --------------------------------------------------------
    def _link(self, parent: ShadowPage, idx: int, child: ShadowPage) -> None:
        """``link_shadow_page``: a non-leaf SPTE granting everything."""
        parent.spt[idx] = child.hpa | _NONLEAF_SPTE
        parent.children[idx] = child
        child.parent_ptes.add((parent, idx))

    def _child(self, parent: ShadowPage, idx: int, gfn: int, direct: bool, access: int
               ) -> tuple[ShadowPage, bool]:
        """``kvm_mmu_get_child_sp``: follow a present non-leaf SPTE, or get + link a page
        with ``kvm_mmu_child_role``."""
        child = parent.children.get(idx)
        if child is not None:
            return child, False
        if idx in parent.spt:            # a leaf where a table is needed (cannot happen at 4K)
            self._drop_spte(parent, idx)
        quadrant = idx & 1 if parent.role.has_4_byte_gpte else 0
        role = child_role(parent.role, level=parent.role.level - 1, direct=direct,
                          access=access, quadrant=quadrant)
        child, created = self.get_shadow_page(gfn, role)
        self._link(parent, idx, child)
        return child, created

    def page_fault(self, root: Root, regs: Regs, cpu_role: CpuRole, gva: int, access: str,
                   cpl: int = 0) -> FaultOutcome:
        """``FNAME(page_fault)`` + ``FNAME(fetch)`` (6.x): handle a shadow-paging #PF.

        1. Walk the guest tables (``FNAME(walk_addr)``, A/D bits written); a failed walk is
           injected into the guest.
        2. ``pte_access`` = the AND of the guest's rights; for a read or fetch of a page whose
           guest D bit is clear, W is withheld (``FNAME(protect_clean_gpte)``) so the first
           write faults and the guest D bit gets set.  CR0.WP=0 trick (facts §7.6): a
           supervisor write to a read-only page makes the SPTE writable but strips U (and X
           with CR4.SMEP).
        3. From the root down, above the guest's leaf level: indirect pages, gfn = the guest
           table at that level, access = the rights accumulated above it (``pt_access``).
           Below a guest huge page: direct pages, gfn = the large-page base gfn rounded to
           what the parent entry covers, access = ``pte_access``.
        4. The 4 KiB leaf SPTE: writable only if ``pte_access`` has W and the target gfn is not
           a shadowed guest table -- or it is only a last-level one that can be unsync
           (``mmu_try_to_unsync_pages``).  A write that cannot be allowed is emulated.
        """
        if not isinstance(root, Root):
            raise TypeError(f"root must be a Root, not {type(root).__name__}")
        if not isinstance(cpu_role, CpuRole):
            raise TypeError(f"cpu_role must be a CpuRole, not {type(cpu_role).__name__}")
        check_access(access)
        cpl = check_int("cpl", cpl, 0, 4)
        if root.role.direct:
            raise ValueError("root is direct (guest paging off): use direct_page_fault")
        self.stats["faults"] += 1
        w = walk(self.mem, regs, gva, access, cpl)
        if not w.ok:
            self.stats["injected"] += 1
            fault = _kvm_error_code(w.fault, access, cpu_role)
            return FaultOutcome(w, injected=fault, reason=fault.reason)
        gva = gva & 0xFFFF_FFFF if cpu_role.base.level < 4 else gva
        leaf = w.trace[-1]
        pte_access = w.access_bits
        if access != "write" and not leaf.entry & _D:
            pte_access &= ~ACC_WRITE_MASK                       # protect_clean_gpte
        trick = False
        if access == "write" and not pte_access & ACC_WRITE_MASK and cpl < 3 \
                and not cpu_role.base.cr0_wp:
            pte_access = (pte_access | ACC_WRITE_MASK) & ~ACC_USER_MASK
            if cpu_role.ext.cr4_smep:
                pte_access &= ~ACC_EXEC_MASK
            trick = True
        tables = {step.level: step for step in w.trace}
        created = 0
        if root.sp is None and not root.pae_sps:
            # 6.6+ FNAME(fetch): a dummy root (CR3 outside every memslot) has nothing to
            # build under; ask for a new root (KVM_REQ_MMU_FREE_OBSOLETE_ROOTS) and retry.
            return FaultOutcome(w, retry=True, reason=(
                "the root is the dummy root (CR3 outside every memslot): "
                "KVM_REQ_MMU_FREE_OBSOLETE_ROOTS, retry on a new root"))
        sp, lvl = self._top(root, gva)
        if sp is None:
            return FaultOutcome(w, retry=True, reason=(
                f"PAE root entry {(gva >> 30) & 3} is invalid but the guest PDPTE is present "
                f"now: the root is stale, reload it"))
        # Indirect pages down to the guest's leaf level.
        while lvl > leaf.level:
            step = tables.get(lvl)                       # the entry pointing to the table below
            below = tables[lvl - 1]
            pt_access = step.access_bits if step is not None else ACC_ALL
            sp, c = self._child(sp, shadow_index(gva, lvl), below.entry_addr >> PAGE_SHIFT,
                                False, pt_access)
            created += c
            lvl -= 1
        # Direct pages below a guest huge page (4 KiB host pages).
        gfn = w.gpa >> PAGE_SHIFT
        while lvl > 1:
            base = gfn & ~(KVM_PAGES_PER_HPAGE(lvl) - 1)
            sp, c = self._child(sp, shadow_index(gva, lvl), base, True, pte_access)
            created += c
            lvl -= 1
        return self._set_spte(w, sp, shadow_index(gva, 1), gfn, pte_access, access, trick,
                              created, leaf.entry if leaf.level == 1 else None)

    def _top(self, root: Root, gva: int) -> tuple[ShadowPage | None, int]:
        """The page the shadow walk starts in: the root page, or the PAE root's entry."""
        if root.sp is not None:
            if root.sp.role.invalid:
                return None, 0
            return root.sp, root.sp.role.level
        sp = root.pae_sps[(gva >> 30) & 3]
        if sp is None or sp.role.invalid:
            return None, 0
        return sp, 2

    def _set_spte(self, w: WalkResult | None, sp: ShadowPage, idx: int, gfn: int,
                  pte_access: int, access: str, trick: bool, created: int,
                  gpte: int | None) -> FaultOutcome:
        """``mmu_set_spte`` / ``make_spte`` for a 4 KiB leaf."""
        emulate = False
        if pte_access & ACC_WRITE_MASK and self._shadowed_at(gfn):
            if self.write_track.get(gfn) or not self.unsync_enabled:
                pte_access &= ~ACC_WRITE_MASK     # write-protected guest page table
                emulate = access == "write"
            else:
                for other in self._shadowed_at(gfn):
                    if not other.unsync:           # kvm_unsync_page
                        other.unsync = True
                        self.stats["unsynced"] += 1
        old = sp.spt.get(idx)
        if old is not None:
            self._drop_spte(sp, idx)
        spte = (gfn_to_pfn(gfn) << PAGE_SHIFT) | _P | _A
        if pte_access & ACC_WRITE_MASK:
            spte |= _RW
            if access == "write":
                spte |= _D
        if pte_access & ACC_USER_MASK:
            spte |= _US
        if not pte_access & ACC_EXEC_MASK:
            spte |= _XD
        sp.spt[idx] = spte
        self.rmap.setdefault(gfn, set()).add((sp, idx))
        if gpte is not None and sp.has_gptes:
            sp.gptes[idx] = gpte & ~_GPTE_AD
        self.stats["sptes_installed"] += 1
        if emulate:
            self.stats["emulated"] += 1
        return FaultOutcome(w, emulate=emulate, hpa=gpa_to_hpa(gfn << PAGE_SHIFT) | (
            (w.gpa if w is not None else 0) & (PAGE_SIZE - 1)), spte=spte,
            access=spte_access(spte), sp=sp, created=created, wp_trick=trick,
            reason="write to a write-protected guest page table: emulate" if emulate else "")

    def direct_page_fault(self, root: Root, gpa: int, access: str) -> FaultOutcome:
        """``direct_page_fault`` for a direct root (guest paging off under shadow paging):
        direct pages from the root down, gfn rounded to each level; leaf access ACC_ALL."""
        if not isinstance(root, Root):
            raise TypeError(f"root must be a Root, not {type(root).__name__}")
        check_access(access)
        if not root.role.direct:
            raise ValueError("root is indirect: use page_fault")
        gpa = check_int("gpa", gpa, 0, 1 << 32 if root.sp is None else HOST_RAM_BASE)
        self.stats["faults"] += 1
        sp, lvl = self._top(root, gpa)
        if sp is None:
            return FaultOutcome(None, retry=True, reason="root is invalid: reload it")
        gfn, created = gpa >> PAGE_SHIFT, 0
        while lvl > 1:
            base = gfn & ~(KVM_PAGES_PER_HPAGE(lvl) - 1)
            sp, c = self._child(sp, shadow_index(gpa, lvl), base, True, ACC_ALL)
            created += c
            lvl -= 1
        out = self._set_spte(None, sp, shadow_index(gpa, 1), gfn, ACC_ALL, access, False,
                             created, None)
        return dataclasses.replace(out, hpa=gpa_to_hpa(gpa))

    # -- guest writes ---------------------------------------------------------
    def _written_indexes(self, sp: ShadowPage, gpa: int, size: int) -> list[int] | None:
        """``get_written_sptes``: SPTE indexes of ``sp`` covering the written gpte bytes;
        None if the write is misaligned (``detect_write_misaligned``: not within one gpte)."""
        gsize = 4 if sp.role.has_4_byte_gpte else 8
        off = gpa & (PAGE_SIZE - 1)
        if off // gsize != (off + size - 1) // gsize:
            return None
        gidx = off // gsize
        if gsize == 8:
            return [gidx]
        # A 4-byte-gpte table has 1024 entries; each shadow page covers a quadrant of it.
        if sp.role.level == 1:
            per = 512                       # level 1: 2 halves of 512 gptes
        else:
            per = 256                       # level 2: 4 quarters of 256 gptes, 2 SPTEs each
        if gidx // per != sp.role.quadrant:
            return []
        local = gidx % per
        return [local] if sp.role.level == 1 else [2 * local, 2 * local + 1]

    def guest_write(self, gpa: int, data: bytes) -> GuestWriteOutcome:
        """The guest writes ``data`` at ``gpa``; keep the shadow pages of that gfn honest.

        If the gfn is write-protected (shadowed by a synced page with gptes), the write
        faulted and was emulated: memory is written, then ``kvm_mmu_pte_write`` runs for
        every valid page with gptes: a misaligned write, or the 3rd write in a row to a page
        (``detect_write_flooding``), zaps the whole page; otherwise the SPTEs made from the
        written gpte(s) are dropped (``mmu_page_zap_pte``; a child page is unlinked).
        Unsync pages see no fault: their stale SPTEs are fixed by the next :meth:`sync_roots`.
        Writes to unshadowed memory are plain memory writes.
        """
        gpa = check_int("gpa", gpa, 0, 1 << MAX_PHYS_BITS)
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        size = len(data)
        if not 1 <= size <= 8:
            raise ValueError(f"len(data)={size}: allowed 1..8 bytes (one instruction's write)")
        if (gpa & (PAGE_SIZE - 1)) + size > PAGE_SIZE:
            raise ValueError(f"gpa={gpa:#x} with {size} bytes crosses a page boundary "
                             f"(allowed: within one 4 KiB page)")
        self.mem.write(gpa, bytes(data))
        gfn = gpa >> PAGE_SHIFT
        sps = [sp for sp in self._shadowed_at(gfn) if not self.is_obsolete(sp)]
        synced = [sp for sp in sps if not sp.unsync]
        trapped = bool(synced)
        zapped_sps: list[ShadowPage] = []
        n = 0
        if trapped:
            self.stats["emulated"] += 1
        # kvm_mmu_pte_write walks every valid page with gptes, unsync ones included.
        for sp in (sps if trapped else ()):
            if sp.role.invalid:                 # zapped earlier in this loop
                continue
            idxs = self._written_indexes(sp, gpa, size)
            sp.write_flooding_count += 1
            if idxs is None or sp.write_flooding_count >= WRITE_FLOODING_LIMIT:
                if idxs is not None:
                    self.stats["flooded"] += 1
                self.zap_page(sp)
                zapped_sps.append(sp)
                continue
            for idx in idxs:
                n += self._drop_spte(sp, idx)
        return GuestWriteOutcome(gpa, trapped, n, tuple(zapped_sps),
                                 0 if trapped else len(sps))

    # -- inspection --------------------------------------------------------------
    def translate(self, root: Root, gva: int) -> SpteTranslation | None:
        """Walk the SPTEs as the hardware would; None if some SPTE on the way is missing."""
        if not isinstance(root, Root):
            raise TypeError(f"root must be a Root, not {type(root).__name__}")
        gva = check_int("gva", gva, 0, 1 << 64)
        if root.sp is None:
            gva &= 0xFFFF_FFFF
        sp, lvl = self._top(root, gva)
        path = []
        while sp is not None:
            idx = shadow_index(gva, lvl)
            path.append((sp, idx))
            spte = sp.spt.get(idx)
            if spte is None:
                return None
            child = sp.children.get(idx)
            if child is None:
                hpa = (spte & _ADDR_MASK) | (gva & (PAGE_SIZE - 1))
                return SpteTranslation(gva, hpa, spte, spte_access(spte), lvl, tuple(path))
            sp, lvl = child, lvl - 1
        return None

    def leaf_sptes(self, root: Root) -> Iterator[tuple[int, ShadowPage, int, int]]:
        """Every leaf SPTE reachable from ``root`` as ``(gva, sp, index, spte)`` (GVAs
        sign-extended for 4/5-level roots)."""
        if root.sp is not None:
            starts = [(root.sp, root.sp.role.level, 0)]
        else:
            starts = [(sp, 2, i << 30) for i, sp in enumerate(root.pae_sps or ()) if sp is not None]
        stack = list(starts)
        top_bits = None if root.sp is None else PAGE_SHIFT + 9 * root.sp.role.level
        while stack:
            sp, lvl, base = stack.pop()
            for idx, spte in sp.spt.items():
                gva = base | (idx << (PAGE_SHIFT + 9 * (lvl - 1)))
                child = sp.children.get(idx)
                if child is not None:
                    stack.append((child, lvl - 1, gva))
                    continue
                if top_bits is not None and gva >> (top_bits - 1) & 1:
                    gva |= ((1 << 64) - 1) & ~((1 << top_bits) - 1)
                yield gva, sp, idx, spte

    def prefault(self, root: Root, regs: Regs, cpu_role: CpuRole, gva: int, size: int,
                 access: str = "read", cpl: int = 0) -> int:
        """Fault in ``[gva, gva+size)`` page by page (what a guest touching every page does).

        The per-fault path is the honest one -- every page goes through :meth:`page_fault` --
        so this is only a loop; returns the number of pages installed.
        """
        gva = check_int("gva", gva, 0, 1 << 64)
        size = check_int("size", size, 1, 1 << 40)
        n = 0
        for off in range(0, size, PAGE_SIZE):
            if self.page_fault(root, regs, cpu_role, gva + off, access, cpl).spte is not None:
                n += 1
        return n
