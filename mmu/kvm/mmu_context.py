"""The MMU context and its roots, as ``arch/x86/kvm/mmu/mmu.c`` manages them.

Kernel counterparts (mmu.c and mmu.h; 6.4 read for the details, era differences below):

* :meth:`MmuContext.kvm_init_mmu` -- ``kvm_init_mmu`` -> ``init_kvm_tdp_mmu`` or
  ``kvm_init_shadow_mmu``/``shadow_mmu_init_context`` and their **early return**: 5.19+
  (e5ed0fb01004, 7a458f0e1ba1; era flag ``role_split``) returns early iff
  ``cpu_role.as_u64`` and ``root_role.word`` are both unchanged, <= 5.18 iff the single
  ``mmu_role.as_u64`` is (:mod:`mmu.kvm.legacy`).  While L2 runs with nested TDP it is
  ``init_kvm_nested_mmu`` (:mod:`mmu.kvm.nested`);
* :meth:`MmuContext.kvm_mmu_reset_context` = ``kvm_mmu_unload`` + ``kvm_init_mmu``;
  :meth:`MmuContext.kvm_mmu_unload` -- ``kvm_mmu_free_roots(KVM_MMU_ROOTS_ALL)`` on
  root_mmu, then on guest_mmu; ``mmu_free_root_page`` / ``kvm_tdp_mmu_put_root``
  (TDP MMU roots are kept until invalidated since edbdb43fc96b, 6.4: ``tdp_root_preserved``);
* :meth:`MmuContext.kvm_mmu_load` -- ``kvm_mmu_load``: ``kvm_tdp_mmu_get_vcpu_root_hpa``
  (``kvm_tdp_mmu_alloc_root`` from 6.9, :meth:`mmu.kvm.eras.Era.kernel_name`),
  ``mmu_alloc_direct_roots`` or ``mmu_alloc_shadow_roots`` by MMU kind and
  ``root_role.direct``; :meth:`MmuContext.kvm_mmu_reload` (mmu.h) loads only an invalid root;
* :meth:`MmuContext.kvm_mmu_new_pgd` -- ``kvm_mmu_new_pgd`` -> ``fast_pgd_switch`` over the
  current root and ``prev_roots`` (:mod:`mmu.kvm.root_cache`).  5.18+ uses the MMU's stored
  root role; <= 5.17 recomputed it from the registers (``kvm_mmu_calc_root_page_role``,
  era flag ``new_pgd_uses_mmu_role``);
* :meth:`MmuContext.kvm_mmu_refresh_passthrough_bits` -- the 6.4 refresh of the
  guest-owned CR0.WP before an emulated permission check (mmu.h
  ``kvm_mmu_refresh_passthrough_bits``, mmu.c ``__kvm_mmu_refresh_passthrough_bits``;
  :meth:`mmu.kvm.eras.Era.refreshes_passthrough_bits`);
* the memslot checks of ``mmu_alloc_shadow_roots`` (VMs with ``ram_size``): a CR3 or PAE
  PDPTE outside the memslot is a triple fault up to 6.5 (``mmu_check_root``); from 6.6 the
  CR3 gets the dummy root and the PDPTE counts as not present (era flag
  ``shadow_dummy_root``);
* :meth:`MmuContext.kvm_set_cpuid` -- ``KVM_SET_CPUID2`` before the first run:
  ``kvm_mmu_after_set_cpuid`` invalidates the roles (zeroing ``root_role.word`` in
  5.19-6.8, setting ``root_role.invalid`` from 6.9: era flag
  ``cpuid_invalidates_root_role``) and resets the context.

Three MMU set-ups, as in the published benchmarks (facts §9): ``"tdp"`` (EPT/NPT with
the TDP MMU: roots from :class:`mmu.kvm.tdp.TdpMMU`, looked up by role), ``"legacy"``
(EPT/NPT with ``tdp_mmu=0``: direct roots are shadow pages in the VM's hash of
:class:`mmu.kvm.shadow.ShadowMMU` and survive an unload) and ``"shadow"`` (no EPT/NPT).
"""
from __future__ import annotations

from collections import Counter
from typing import Any

from mmu.kvm.root_cache import KVM_MMU_ROOTS_ALL, RootCache, RootInfo
from mmu.x86.regs import CR0, Regs

__all__ = ["RootSlots", "MmuContext", "DUMMY_ROOT_HPA"]

#: The dummy root's hpa: the host zero page (``kvm_mmu_get_dummy_root``, 6.6+); the model
#: puts it at host address 0, where no shadow page or TDP table ever is.
DUMMY_ROOT_HPA = 0


def _gfn(addr: int) -> int:
    """The gfn in a CR3 or PDPTE value (``__PT_BASE_ADDR_MASK``, bits 51:12)."""
    return (addr & ((1 << 52) - 1)) >> 12


class RootSlots:
    """``root`` and ``prev_roots`` of one ``struct kvm_mmu`` (a :class:`RootCache` in
    ``cache``), the root objects behind their hpas and the references the slots hold
    (``_roots``, ``_root_refs``)."""

    cache: RootCache
    _roots: dict
    _root_refs: Counter

    @property
    def root(self) -> RootInfo:
        return self.cache.root

    @property
    def prev_roots(self) -> tuple[RootInfo, ...]:
        return tuple(self.cache.prev_roots)

    @property
    def root_object(self):
        """The shadow/TDP root object behind ``root.hpa`` (None when invalid)."""
        return self._roots.get(self.cache.root.hpa) if self.cache.root.valid else None

    def _drop_ref(self, hpa: int) -> Any:
        """A root-info slot lets go of ``hpa`` (each slot took its own reference when it
        was loaded); the object is forgotten when no slot holds it any more."""
        root = self._roots[hpa]
        self._root_refs[hpa] -= 1
        if self._root_refs[hpa] <= 0:
            del self._roots[hpa], self._root_refs[hpa]
        return root


class MmuContext(RootSlots):
    """``vcpu->arch.root_mmu`` and the functions that build, load and switch it (mixed
    into :class:`mmu.kvm.vcpu.VCpu`).  ``mmu_role`` (<= 5.18) or ``cpu_role`` +
    ``root_role`` (5.19+) are stored here; the roots are in ``cache``."""

    @property
    def cpu_role(self):
        """``root_mmu.cpu_role`` (5.19+).  For <= 5.18 the 5.19-style CPU role computed at
        the last non-early ``kvm_init_mmu`` (the kernel had no such field then)."""
        return self._cpu_role

    @property
    def root_role(self):
        """``root_mmu.root_role`` (5.19+); for <= 5.18 ``mmu_role.base``, the root's role."""
        return self._root_role

    def _sp_role_word(self, hpa: int) -> "int | None":
        root = self._roots.get(hpa)
        if root is None:
            return None
        sp = getattr(root, "sp", None)
        if sp is None:
            if self.kind == "tdp":          # TDP MMU roots are pages with a role of their own
                return root.role.word
            return None                     # PAE special root: no shadow page
        return sp.role.word

    def _free_root(self, hpa: int) -> None:
        """``mmu_free_root_page`` for one root-info slot: drop the reference that slot
        held; forget the hpa only when no other slot of this vCPU still holds it."""
        root = self._drop_ref(hpa)
        if self.kind == "tdp":
            preserve = self.era.tdp_root_preserved
            freed = self.vm.tdp.put_root(root, preserve)
            gone = freed if isinstance(freed, bool) else None
            self._event("kvm_tdp_mmu_put_root",
                        f"hpa={hpa:#x}" + ("" if gone is None else
                                           (": last reference, root freed" if gone else
                                            ": root kept" + (" (preserved until invalidated)"
                                                             if preserve else ""))))
            if gone:
                self.stats["roots_freed"] += 1
        elif hpa == DUMMY_ROOT_HPA:
            self._event("kvm_mmu_free_roots", "the dummy root: nothing to clean up (6.6+)")
        else:
            self.vm.shadow.put_root(root)
            self._event("mmu_free_root_page", f"hpa={hpa:#x}: --root_count; the page stays "
                                              f"in the hash")
        self.stats["roots_put"] += 1

    def _compute_roles(self, regs: Regs):
        """(mmu_role or None, cpu_role, root_role) the era's kvm_init_mmu would compute."""
        from mmu.kvm import roles
        cpu = roles.cpu_role(regs, smm=self.smm, guest_mode=self.guest_mode)
        if self.era.role_split:
            if self.tdp_enabled:
                root = roles.tdp_root_role(cpu, tdp_level=self.vm.tdp_level)
            else:
                root = roles.shadow_root_role(cpu)
            return None, cpu, root
        from mmu.kvm import legacy
        mmu = legacy.mmu_role(regs, tdp=self.tdp_enabled, smm=self.smm,
                              guest_mode=self.guest_mode, tdp_level=self.vm.tdp_level)
        return mmu, cpu, mmu.base

    def kvm_init_mmu(self) -> bool:
        """``kvm_init_mmu`` -> ``init_kvm_tdp_mmu`` or ``kvm_init_shadow_mmu``.

        5.19+: early return iff ``cpu_role.as_u64`` and ``root_role.word`` are both
        unchanged; <= 5.18: iff the single ``mmu_role.as_u64`` is unchanged.  Returns True
        when the MMU context was (re)built.  Roots are not touched here.
        """
        if self._mmu_is_guest:
            return self._init_kvm_nested_mmu()
        self.stats["mmu_inits"] += 1
        func = "init_kvm_tdp_mmu" if self.tdp_enabled else "shadow_mmu_init_context"
        mmu, cpu, root = self._compute_roles(self.regs)
        if self.era.role_split:
            same = (self._cpu_role is not None and self._root_role is not None
                    and cpu.as_u64 == self._cpu_role.as_u64
                    and root.word == self._root_role.word)
        else:
            same = self.mmu_role is not None and mmu.as_u64 == self.mmu_role.as_u64
        if same:
            self.stats["init_early_returns"] += 1
            self._event("kvm_init_mmu: early return",
                        f"{func}: " + ("cpu_role and root_role unchanged" if self.era.role_split
                                       else "mmu_role unchanged"))
            return False
        changes = []
        if self.era.role_split:
            if self._cpu_role is not None:
                changes += [f"cpu_role.{f} {a}->{b}" for f, a, b in self._cpu_role.diff(cpu)]
                changes += [f"root_role.{f} {a}->{b}" for f, a, b in self._root_role.diff(root)]
        elif self.mmu_role is not None:
            changes += [f"mmu_role.{f} {a}->{b}" for f, a, b in self.mmu_role.diff(mmu)]
        self.mmu_role, self._cpu_role, self._root_role = mmu, cpu, root
        self._event("kvm_init_mmu", f"{func}: " + (", ".join(changes) or "first init"))
        return True

    def kvm_mmu_unload(self) -> None:
        """``kvm_mmu_unload``: free the current and all previous roots (KVM_MMU_ROOTS_ALL)
        of ``root_mmu`` and then of ``guest_mmu`` (facts §4); the guest_mmu roots are
        reported in an event of their own, only when there were any."""
        self.stats["mmu_unloads"] += 1
        freed = self.cache.free_roots(KVM_MMU_ROOTS_ALL)
        self._event("kvm_mmu_unload", f"freed {len(freed)} root(s) (current + prev_roots)")
        gfreed = self.guest_mmu.cache.free_roots(KVM_MMU_ROOTS_ALL)
        if gfreed:
            self._event("kvm_mmu_unload", f"guest_mmu: freed {len(gfreed)} root(s) "
                                          "(current + prev_roots); the pages stay hashed")

    def kvm_mmu_reset_context(self) -> None:
        """``kvm_mmu_reset_context`` = ``kvm_mmu_unload`` + ``kvm_init_mmu`` (every era)."""
        self.stats["mmu_resets"] += 1
        self._event("kvm_mmu_reset_context", "unload all roots, then re-init")
        self.kvm_mmu_unload()
        self.kvm_init_mmu()

    def kvm_mmu_load(self) -> None:
        """``kvm_mmu_load``: allocate the root per ``root_role.direct`` and the MMU kind
        (on ``guest_mmu`` while L2 runs with nested TDP: :meth:`_guest_mmu_load`)."""
        if self._mmu_is_guest:
            self._guest_mmu_load()
            return
        self.stats["mmu_loads"] += 1
        role = self._root_role
        if self.kind == "tdp":
            root, created = self.vm.tdp.get_root(role)
            created, reused = int(bool(created)), int(not created)
            how = self.era.kernel_name("kvm_tdp_mmu_get_vcpu_root_hpa")
            pgd = 0
        elif role.direct:
            root, created, reused = self.vm.shadow.alloc_direct_roots(role)
            how = "mmu_alloc_direct_roots"
            pgd = 0
        else:
            pdptrs = self._visible_pdptrs()
            if pdptrs is False:
                return
            if pdptrs is True:
                self._load_dummy_root(role)
                return
            root, created, reused = self.vm.shadow.alloc_shadow_roots(
                self._cpu_role, role, self.regs.cr3, pdptrs)
            how = "mmu_alloc_shadow_roots"
            pgd = self.regs.cr3
        created, reused = int(created), int(reused)
        self._roots[root.hpa] = root
        self._root_refs[root.hpa] += 1
        self.cache.root = RootInfo(pgd, root.hpa)
        self.stats["roots_created"] += created
        self.stats["roots_reused"] += reused
        if self.kind == "tdp":
            outcome = "created" if created else "reused"
            what = "new root allocated" if created else "live root with this role found"
        elif created or reused:
            outcome = "created" if created else "hash hit"
            what = (f"{created} root-level page(s) created, {reused} found in the hash"
                    if created else f"{reused} root-level page(s) found in the hash")
        else:
            # A PAE guest whose four PDPTEs are all not present: mmu_alloc_shadow_roots
            # leaves every pae_root entry INVALID_PAE_ROOT; no shadow page is touched.
            outcome = "no PAE root pages"
            what = ("all PDPTEs not present: pae_root holds 4 invalid entries, no shadow "
                    "page created or reused")
        self._event(f"kvm_mmu_load: {outcome}", f"{how}: {what}; hpa={root.hpa:#x}")

    def _visible_pdptrs(self):
        """The memslot checks of ``mmu_alloc_shadow_roots`` for ``root_mmu`` (6.4.6 and
        6.12.19 read): the guest's root gfn (CR3, or a PAE guest's PDPT) and, for PAE, every
        present PDPTE must be in a memslot (:meth:`mmu.kvm.vcpu.Vm.gfn_visible`).

        Up to 6.5 ``mmu_check_root`` turns a miss into ``KVM_REQ_TRIPLE_FAULT``: returns
        False after shutting the vCPU down.  From 6.6 (era flag ``shadow_dummy_root``) an
        invisible root gfn gets the dummy root (returns True) and an invisible PDPTE is
        treated as not present.  Otherwise returns the PDPTEs to use (None: read them)."""
        if self.vm.ram_size is None:
            return None
        glevel = self._cpu_role.base.level
        root_gfn = _gfn(self.regs.cr3)
        bad = None if self.vm.gfn_visible(root_gfn) else ("CR3", root_gfn)
        pdptrs = None
        if bad is None and glevel == 3:
            base = self.regs.cr3 & 0xFFFF_FFE0
            pdptrs = [self.mem.read_u64(base + 8 * i) for i in range(4)]
            for i, p in enumerate(pdptrs):
                gfn = _gfn(p)
                if p & 1 and not self.vm.gfn_visible(gfn):
                    if not self.era.shadow_dummy_root:
                        bad = (f"PDPTE {i}", gfn)
                        break
                    self._event("mmu_alloc_shadow_roots", f"PDPTE {i} points at gfn {gfn:#x}, "
                                "outside every memslot: treated as not present (6.6+)")
                    pdptrs[i] = 0
        if bad is None:
            return pdptrs
        if self.era.shadow_dummy_root:
            return True
        what, gfn = bad
        self.stats["triple_faults"] += 1
        self._event("mmu_check_root", f"{what} gfn {gfn:#x} is outside every memslot: "
                                      "KVM_REQ_TRIPLE_FAULT; no root is loaded")
        self.shut_down = True
        self._event("KVM_EXIT_SHUTDOWN", "the triple fault ends the vCPU's run"
                    + (" (in L2, KVM would exit to L1 instead; not modelled)"
                       if self.guest_mode else "") + "; the VMM must reset it")
        return False

    def _load_dummy_root(self, role) -> None:
        """6.6+ ``mmu_alloc_shadow_roots`` for a CR3 outside every memslot:
        ``mmu->root.hpa = kvm_mmu_get_dummy_root()``, the zero page -- no shadow page, so
        ``root_to_sp`` is NULL and ``fast_pgd_switch`` frees it before any search, like the
        PAE root; a fault on it asks for a new root (``KVM_REQ_MMU_FREE_OBSOLETE_ROOTS``)."""
        from mmu.kvm.shadow import Root
        root = Root(DUMMY_ROOT_HPA, role, None, ())
        self._roots[root.hpa] = root
        self._root_refs[root.hpa] += 1
        self.cache.root = RootInfo(self.regs.cr3, root.hpa)
        self.stats["dummy_roots"] += 1
        gfn = _gfn(self.regs.cr3)
        self._event("kvm_mmu_load: dummy root",
                    f"mmu_alloc_shadow_roots: CR3 gfn {gfn:#x} is outside every memslot: "
                    f"kvm_mmu_get_dummy_root() (the zero page, no shadow page); "
                    f"hpa={root.hpa:#x}")

    def kvm_set_cpuid(self) -> None:
        """Host userspace's ``KVM_SET_CPUID2`` on a vCPU that has not run yet:
        ``kvm_vcpu_after_set_cpuid`` -> ``kvm_mmu_after_set_cpuid`` (mmu.c), which marks
        the roles stale -- CPUID feeds the reserved-bit masks, which the role words do not
        capture -- and then calls ``kvm_mmu_reset_context``, so the next ``kvm_init_mmu``
        cannot return early.

        How the root role is marked is what the eras differ in (read in 6.4.6 and 6.12.19
        ``kvm_mmu_after_set_cpuid``): 5.19-6.8 zero ``root_role.word`` ("a zero root role
        is impossible: level is never 0", 7a458f0e1ba1); 6.9+ set ``root_role.invalid = 1``
        instead, because the zeroed ``direct`` bit made ``kvm_mmu_free_roots`` treat a TDP
        MMU root as a shadow one (era flag ``cpuid_invalidates_root_role``).  Both clear
        ``cpu_role.ext.valid``; <= 5.18 cleared the single ``mmu_role.ext.valid``.  The
        model has one MMU context here (guest_mmu and nested_mmu get the same marking in
        the kernel).  Since 5.16 a *different* CPUID after ``KVM_RUN`` is refused and an
        identical one changes nothing (``kvm_cpuid_check_equal``), so calling this after the
        vCPU has run raises ValueError."""
        if self.step or self.stats["mmu_loads"]:
            raise ValueError("kvm_set_cpuid: allowed only before the vCPU first runs (no "
                             "guest operation or root load yet); after KVM_RUN KVM refuses "
                             "a different CPUID and an identical one changes nothing")
        if self.era.role_split:
            old = self._root_role
            if self.era.cpuid_invalidates_root_role:
                self._root_role = old.replace(invalid=1)
                how = "root_role.invalid = 1"
            else:
                self._root_role = type(old)()
                how = "root_role.word = 0"
            self._cpu_role = self._cpu_role.replace(ext=self._cpu_role.ext.replace(valid=0))
            self._event("kvm_mmu_after_set_cpuid",
                        f"{how}: root_role {old.word:#x} -> {self._root_role.word:#x}; "
                        f"cpu_role.ext.valid = 0")
        else:
            self.mmu_role = self.mmu_role.replace(ext=self.mmu_role.ext.replace(valid=0))
            self._event("kvm_mmu_after_set_cpuid", "mmu_role.ext.valid = 0")
        self.stats["cpuid_updates"] += 1
        self.kvm_mmu_reset_context()

    def kvm_mmu_reload(self) -> None:
        """``kvm_mmu_reload`` on guest entry: load only when the root of
        ``vcpu->arch.mmu`` (root_mmu, or guest_mmu under nested TDP) is invalid."""
        cache = self.guest_mmu.cache if self._mmu_is_guest else self.cache
        if not cache.root.valid:
            self.kvm_mmu_load()

    def enter(self) -> None:
        """Enter (or re-enter) the guest: ``vcpu_enter_guest`` -> ``kvm_mmu_reload``."""
        self.kvm_mmu_reload()

    def kvm_mmu_new_pgd(self, new_pgd: int) -> None:
        """``kvm_mmu_new_pgd``: look for a usable cached root, else leave the root invalid
        for ``kvm_mmu_reload``.  5.18+ uses the MMU's stored role; <= 5.17 recomputed it
        from the registers (``kvm_mmu_calc_root_page_role``).  Acts on
        ``vcpu->arch.mmu``: guest_mmu while L2 runs with nested TDP."""
        if self._mmu_is_guest:
            self._guest_mmu_new_pgd(new_pgd)
            return
        self.stats["new_pgd_calls"] += 1
        role = self._root_role
        if not self.era.new_pgd_uses_mmu_role:
            role = self._compute_roles(self.regs)[2]
        dummy = self.cache.root.valid and self.cache.root.hpa == DUMMY_ROOT_HPA
        res = self.cache.fast_pgd_switch(new_pgd, role)
        if res.freed_special:
            self._event("fast_pgd_switch", "current root has no shadow page ("
                        + ("the dummy root, root_to_sp() is NULL" if dummy else "PAE root")
                        + "): freed before the search")
        self._report_switch(res, new_pgd, "")

    def _report_switch(self, res, new_pgd: int, mmu: str) -> None:
        """Count and describe a ``fast_pgd_switch`` result; ``mmu`` is "" for root_mmu
        or "guest_mmu" (a stats prefix and an event tag)."""
        key = f"{mmu}_" if mmu else ""
        tag = f" ({mmu})" if mmu else ""
        if res.hit:
            self.stats[f"{key}prev_root_hits"] += 1
            where = "current root" if res.slot == "current" else f"prev_roots[{res.slot}]"
            self._event(f"fast_pgd_switch{tag}: {where} hit", f"pgd={new_pgd:#x}")
        else:
            self.stats[f"{key}prev_root_misses"] += 1
            extra = (f"; former LRU hpa={res.evicted:#x} freed" if res.evicted is not None else "")
            self._event(f"fast_pgd_switch{tag}: miss",
                        f"pgd={new_pgd:#x}: kvm_mmu_reload will find or build a root{extra}")

    def kvm_mmu_refresh_passthrough_bits(self) -> bool:
        """``kvm_mmu_refresh_passthrough_bits`` (6.4, [SC-REFRESH]): before an emulated
        permission check, re-read the guest-owned CR0.WP into the ``cpu_role.base.cr0_wp``
        of the MMU the check walks with -- ``walk_mmu``: root_mmu, or nested_mmu (L2's GVA
        walker, :attr:`nested_mmu_role`) while L2 runs with nested TDP.  6.4 mmu.h skips
        only ``!tdp_enabled`` and ``guest_mmu`` (nEPT/nNPT ignore CR0.WP); nested_mmu
        "needs to honor L2's CR0.WP", so L1's root_mmu role is left alone then.
        Returns True if the cached bit was stale."""
        nested = self._mmu_is_guest
        role = self.nested_mmu_role if nested else self._cpu_role
        if not (self.era.refreshes_passthrough_bits(tdp=self.tdp_enabled) and role is not None):
            return False
        live = int(bool(self.regs.cr0 & CR0.WP))
        if role.base.cr0_wp == live:
            return False
        # Only the cr0_wp bit, as __kvm_mmu_refresh_passthrough_bits does (then it
        # recomputes the permission bitmap from it).
        role = role.replace(base=role.base.replace(cr0_wp=live))
        if nested:
            self.nested_mmu_role = role
        else:
            self._cpu_role = role
        self.stats["passthrough_refreshes"] += 1
        self._event("kvm_mmu_refresh_passthrough_bits",
                    ("nested_mmu: " if nested else "")
                    + f"cpu_role.base.cr0_wp {1 - live}->{live}; permission bitmap recomputed")
        return True

    def _walk_role(self):
        """The CPU role of ``walk_mmu``: nested_mmu's while L2 runs with nested TDP
        (``nested_ept_init_mmu_context``/``nested_svm_init_mmu_context`` point walk_mmu
        at it), root_mmu's otherwise."""
        return self.nested_mmu_role if self._mmu_is_guest else self._cpu_role

    def emulated_permission_check(self):
        """Model of ``permission_fault`` being reached during emulation: refresh first (per
        era) and return the CPU role whose bits the check would use -- that of
        ``walk_mmu`` (FNAME(walk_addr_generic) is called with it): root_mmu's, or
        nested_mmu's while L2 runs with nested TDP.

        With paging off nothing is refreshed: ``permission_fault`` runs only on paged
        walks (``FNAME(walk_addr_generic)``; ``vcpu_mmio_gva_to_gpa`` tests
        ``!is_paging`` first), so the 6.4 refresh is never reached, and the PG=0 role
        keeps cr0_wp=0 as ``kvm_calc_cpu_role`` computes it."""
        self.step += 1
        if not self.regs.cr0 & CR0.PG:
            self._event("emulated access", "paging off: no page walk, permission_fault (and "
                                           "its CR0.WP refresh) not reached")
            return self._walk_role()
        self.kvm_mmu_refresh_passthrough_bits()
        return self._walk_role()
