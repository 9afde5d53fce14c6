"""Kernel eras: which KVM MMU behaviour a given Linux version has.

Each :class:`Era` is a frozen set of feature flags, one flag per kernel change that
alters what a register write does to the MMU (facts §0.3, §3, §4, §9).  The vCPU's parts
(:mod:`mmu.kvm.cr`, :mod:`mmu.kvm.mmu_context`, :mod:`mmu.kvm.vmx`, ...) read only these
flags and the :class:`Era` methods that combine them, never the version string, so any
row of the published benchmark tables can be expressed by overriding flags on a preset::

    era("6.1")                                   # v6.1 as released (and v6.1.23)
    era("6.1", cr0_wp_tdp_no_unload=True,        # v6.1.y after the May-2023 backport
        cr0_wp_guest_owned=True, wp_refresh_in_permission_fault=True)

Presets model the *mainline* release named (X.Y.0); stable backports are listed in each
flag's note and are expressed with overrides.  Flags:

``role_split``
    e5ed0fb01004 "KVM: x86/mmu: split cpu_role from mmu_role" and 7a458f0e1ba1 "remove
    extended bits from mmu_role, rename field" (Paolo Bonzini, merged for **5.19**).
    True: ``struct kvm_mmu`` has ``cpu_role`` + ``root_role`` and ``init_kvm_tdp_mmu`` /
    ``shadow_mmu_init_context`` return early iff both are unchanged.  False (≤5.18): a
    single ``mmu_role`` (:mod:`mmu.kvm.legacy`), whose TDP flavour still holds the guest's
    CR0.WP and EFER.NX.
``efer_lme_resets``
    d6174299365d "KVM: x86: Reinitialize context if host userspace toggles EFER.LME"
    (Feb 2022, Cc stable; mainline **5.17**): ``KVM_MMU_EFER_ROLE_BITS`` = LME|NX.  False:
    only an EFER.NX change resets the MMU.  5.15.y picked it up through stable (a stable
    copy of the patch exists; the exact 5.15.y point release is UNVERIFIED), the "5.15"
    preset models 5.15.0.
``new_pgd_uses_mmu_role``
    "KVM: x86/mmu: Always use current mmu's role when loading new PGD" (Paolo, Feb 2022,
    merged for **5.18**; facts §2.2).  False (≤5.17): ``kvm_mmu_new_pgd`` recomputed the
    root role from the live registers (``kvm_mmu_calc_root_page_role``).
``tdp_root_preserved``
    edbdb43fc96b "KVM: x86: Preserve TDP MMU roots until they are explicitly invalidated"
    (mainline **6.4** per the fact sheet's 6.4.6 tree; stable 6.1.y and 6.3.2 as
    2ec1fe292d6e).  False: a TDP MMU root is freed when the last vCPU drops its reference.
``cr0_wp_tdp_no_unload``
    01b31714bd90 "KVM: x86: Do not unload MMU roots when only toggling CR0.WP with TDP
    enabled" (Mathias Krause, **6.4**; stable 6.1.y/6.2.y/6.3.y): ``kvm_post_set_cr0``
    calls only ``kvm_init_mmu`` when WP is the only changed bit and TDP is on.
``ignore_wp_nonpaging``
    e40bcf9f3a18 "KVM: x86: Ignore CR0.WP toggles in non-paging mode" (**6.4** only; not
    in the 5-patch stable backport, facts §3.2).
``cr0_wp_guest_owned``
    fb509f76acc8 "KVM: VMX: Make CR0.WP a guest owned bit" (**6.4**; stable 6.1.y+).
    Only VMX with EPT: ``KVM_POSSIBLE_CR0_GUEST_BITS`` gains WP, so a guest MOV to CR0
    that flips only WP/TS does not VM-exit.  SVM has no per-bit CR0 intercept.
``wp_refresh_in_permission_fault``
    Sean Christopherson, "KVM: x86/mmu: Refresh CR0.WP prior to checking for emulated
    permission faults" (Fixes: fb509f76acc8; **6.4**; upstream hash UNVERIFIED).  With WP
    guest-owned the MMU's ``cpu_role.base.cr0_wp`` can be stale;
    ``kvm_mmu_refresh_passthrough_bits`` re-reads it before an emulated permission check.

``page_role_is_mirror``
    "KVM: x86/mmu: Add an is_mirror member for union kvm_mmu_page_role" (Isaku Yamahata,
    TDX mirror page tables, **6.14**; read in the 6.18.2 kvm_host.h, absent from 6.12.19):
    bit 19 of the page role is named ``is_mirror``.  It is 0 in every role this model
    computes; the flag decides only whether ``PageRole.from_word`` accepts bit 19 and
    whether role tables show the row (:meth:`mmu.kvm.roles.PageRole.layout`).

``cet_virtualized``
    The 6.18 CET virtualization series (Yang Weijiang, Sean Christopherson, Mathias Krause;
    **6.18**).  Read in 6.18.2 against 6.12.19: ``CR4_RESERVED_BITS`` (kvm_host.h) no longer
    includes ``X86_CR4_CET`` (``__cr4_reserved_bits`` in x86.h still reserves it when the
    guest's CPUID has neither SHSTK nor IBT -- the model's guest has every CR4 feature);
    ``kvm_set_cr0`` returns 1 (#GP) when CR0.WP is cleared while CR4.CET=1;
    ``kvm_set_cr4`` returns 1 when CR4.CET=1 is written while CR0.WP=0; and
    ``KVM_POSSIBLE_CR4_GUEST_BITS`` (kvm_cache_regs.h) gains ``X86_CR4_CET`` ("KVM: VMX: Make
    CR4.CET a guest owned bit", Mathias Krause; d292035fb5d2 per the 6.18 KVM pull as quoted
    in the kernel-currency audit, the id not seen here), so on VMX a CET toggle does
    not exit -- with or without EPT, since ``set_cr4_guest_host_mask`` removes only the
    TLB-flush and PDPTR bits without EPT.  The two WP/CET rules are architectural (SDM Vol.
    3A 2.5, CR4.CET), so a guest-owned write that breaks them faults in the CPU without an
    exit.  False (every earlier kernel): CR4.CET is a reserved bit, a write setting it #GPs.

``tdp_root_alloc_read_lock``
    The 6.9 TDP MMU root rework ("Rework TDP MMU root unload, free, and alloc to run with
    mmu_lock held for read", Sean Christopherson's 6.9 MMU pull): ``mmu_alloc_direct_roots``
    calls ``kvm_tdp_mmu_alloc_root`` (int in 6.9-6.13, void with a ``mirror`` argument
    since 6.14) where 6.4 called ``kvm_tdp_mmu_get_vcpu_root_hpa`` under the write lock,
    and ``kvm_mmu_free_roots`` takes the lock for read for TDP MMU roots.  Read: 6.4.6 and
    6.12.19 ``mmu_alloc_direct_roots``, ``kvm_mmu_free_roots`` (mmu.c) and ``tdp_mmu.h``.
    The search -- reuse a valid root with the same role word, else allocate one with
    refcount 2 -- is unchanged, so only the event texts differ
    (:meth:`Era.kernel_name`).
``cpuid_invalidates_root_role``
    "KVM: x86/mmu: Invalidate MMU root_role during CPUID update" (Sean Christopherson,
    **6.9**, Fixes 576a15de8d29): ``kvm_mmu_after_set_cpuid`` sets ``root_role.invalid = 1``
    in root_mmu, guest_mmu and nested_mmu where 5.19-6.8 zeroed ``root_role.word`` (a
    zeroed role made ``kvm_mmu_free_roots`` take a TDP MMU root for a shadow one).  Read:
    6.4.6 and 6.12.19 ``kvm_mmu_after_set_cpuid``.  Both then clear ``cpu_role.ext.valid``
    and call ``kvm_mmu_reset_context``, so the roles after KVM_SET_CPUID2 are the same;
    what differs is the root role in between (:meth:`mmu.kvm.mmu_context.MmuContext.kvm_set_cpuid`).

``shadow_dummy_root``
    "KVM: x86/mmu: Use dummy root, backed by zero page, for !visible guest roots" (Sean
    Christopherson, in the **6.6** MMU pull).  With shadow paging, a guest CR3 whose gfn is in
    no memslot: 6.4.6 ``mmu_alloc_shadow_roots`` -> ``mmu_check_root`` requests
    ``KVM_REQ_TRIPLE_FAULT`` (the vCPU shuts down); 6.12.19 installs
    ``kvm_mmu_get_dummy_root()`` (the zero page, no shadow page) and the guest runs on.  A PAE
    PDPTE pointing outside every memslot: triple fault before, treated as not present since.
    Visible only on a VM made with ``ram_size`` (:class:`mmu.kvm.vcpu.Vm`); by default every
    gfn below MAXPHYADDR is in the VM's one memslot.

Dated but not modelled (no operation of the model reaches them; ``docs/eras.md``):

* asynchronous zapping of invalidated TDP roots: 22b94c4b63eb "KVM: x86/mmu: Zap
  invalidated roots via asynchronous worker" (5.18, per the kernel-currency audit) to
  0df9dab891ff "KVM: x86/mmu: Stop zapping invalidated TDP MMU roots asynchronously"
  (6.6-rc3).  Read: 6.4.6 ``tdp_mmu.c`` queues each invalidated root on
  ``tdp_mmu_zap_wq`` and ``kvm_tdp_mmu_zap_invalidated_roots`` flushes the queue; 6.12.19
  marks them ``tdp_mmu_scheduled_root_to_zap`` and zaps them in the caller under the read
  lock.  Either way the zap is done when ``kvm_mmu_zap_all_fast`` returns; only the thread
  differs, and the model has no memslot update;
* the CR0.CD zap: 6.4's ``kvm_post_set_cr0`` zaps every GFN when CR0.CD changes with
  non-coherent DMA and ``KVM_X86_QUIRK_CD_NW_CLEARED`` off; gone in 6.12.19 (removed for
  6.11 with "KVM: x86: Remove VMX support for virtualizing guest MTRR memtypes").  The
  model keeps the quirk on and has no assigned device, so the zap never ran here;
* nested EPT exempt from the CR0.WP=0 "writable, supervisor-only" SPTE rewrite (6.17,
  "KVM: x86/mmu: Exempt nested EPT page tables from !USER, CR0.WP=0 logic"; 6.18.2
  ``FNAME(page_fault)`` compiles it out for ``PTTYPE_EPT``, 6.12.19 does not): the model's
  nested-TDP guest_mmu never takes a fault;

Combinations no kernel had are refused (ValueError from :func:`era` and :class:`Era`), by
one rule: **a flag whose kernel change edits or relies on code that another flag's
setting says is absent needs that flag** (:data:`REQUIRES`):

* ``role_split`` needs ``new_pgd_uses_mmu_role``: the role series removed
  ``kvm_mmu_calc_root_page_role`` ("KVM: MMU: remove kvm_mmu_calc_root_page_role", Paolo,
  Feb 2022; absent from 6.4 mmu.c), which the old ``kvm_mmu_new_pgd`` called;
* ``ignore_wp_nonpaging`` needs ``cr0_wp_tdp_no_unload``: e40bcf9f3a18 puts its early
  return inside the WP-only branch of ``kvm_post_set_cr0`` that 01b31714bd90 added (6.4
  x86.c).

Derived, not refused: ``wp_refresh_in_permission_fault`` acts only with ``role_split``
(:meth:`Era.refreshes_passthrough_bits`: it rewrites ``cpu_role.base.cr0_wp``, a 5.19
field).  Allowed on purpose: the CR0.WP flags on a pre-split era (``role_split=False``),
the posted 5.4-5.15 backports Mathias Krause measured (``mmu.book.cost``, "v5.15.106 +
patches") and Paolo's unmerged Feb-2022 series (5.18 + ``cr0_wp_tdp_no_unload``).  Those
trees keep the TDP root over a CR0.WP toggle although their root role (``mmu_role.base``)
holds CR0.WP -- the premise of 01b31714bd90, "CR0.WP doesn't affect SPTEs", holds only
once the split took WP out of the TDP root role -- so on such an era the vCPU's
``root_role`` can differ from its root page's role in ``cr0_wp`` alone, as in those trees.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

__all__ = ["Era", "ERAS", "ERA_NAMES", "FLAG_NAMES", "REQUIRES", "era"]


@dataclasses.dataclass(frozen=True)
class Era:
    """A kernel's MMU behaviour as feature flags (see the module docstring for sources)."""

    name: str
    role_split: bool
    efer_lme_resets: bool
    new_pgd_uses_mmu_role: bool
    tdp_root_preserved: bool
    cr0_wp_tdp_no_unload: bool
    ignore_wp_nonpaging: bool
    cr0_wp_guest_owned: bool
    wp_refresh_in_permission_fault: bool
    page_role_is_mirror: bool = False
    cet_virtualized: bool = False
    tdp_root_alloc_read_lock: bool = False
    cpuid_invalidates_root_role: bool = False
    shadow_dummy_root: bool = False

    def __post_init__(self) -> None:
        for flag, needs in REQUIRES.items():
            if getattr(self, flag) and not getattr(self, needs):
                raise ValueError(
                    f"era {self.name!r}: {flag}=True needs {needs}=True (no kernel had one "
                    f"without the other: {REQUIRES_WHY[flag]}); set both or neither")

    def flags(self) -> dict[str, bool]:
        """The feature flags (everything but ``name``)."""
        return {f: getattr(self, f) for f in FLAG_NAMES}

    def diff(self, other: "Era") -> list[tuple[str, bool, bool]]:
        """Flags that differ, as (flag, self, other)."""
        return [(f, getattr(self, f), getattr(other, f)) for f in FLAG_NAMES
                if getattr(self, f) != getattr(other, f)]

    @property
    def efer_role_bits(self) -> int:
        """``KVM_MMU_EFER_ROLE_BITS`` of this era (mmu.h): LME|NX, or NX alone before d6174299365d."""
        from mmu.x86.regs import EFER
        return int(EFER.LME | EFER.NXE) if self.efer_lme_resets else int(EFER.NXE)

    # The rules the vCPU parts ask about where flags combine with the vCPU's state: the
    # parts call these instead of testing flags (or versions) themselves.
    def post_set_cr0_wp_only(self, *, paging: bool, tdp: bool) -> "str | None":
        """What ``kvm_post_set_cr0`` (x86.c) does when CR0.WP is the only changed bit:
        "ignore" with paging off (e40bcf9f3a18), "init_mmu" with TDP (01b31714bd90:
        ``kvm_init_mmu`` without unloading the roots), or None: the common path (a role
        bit changed, ``kvm_mmu_reset_context``)."""
        if self.ignore_wp_nonpaging and not paging:
            return "ignore"
        if self.cr0_wp_tdp_no_unload and tdp:
            return "init_mmu"
        return None

    @property
    def cr4_valid_bits(self) -> int:
        """The CR4 bits a guest may set: the complement of ``CR4_RESERVED_BITS``
        (kvm_host.h) among the bits :class:`mmu.x86.regs.CR4` names.  Read in 6.4.6,
        6.12.19 and 6.18.2: VME PVI TSD DE PSE PAE MCE PGE PCE OSFXSR PCIDE OSXSAVE SMEP
        FSGSBASE OSXMMEXCPT LA57 VMXE SMAP PKE UMIP (6.8 adds LAM_SUP, not modelled), plus
        CET from 6.18 (:attr:`cet_virtualized`); never SMXE or PKS.  The presets before
        6.4 are taken to have the same list (its newest bits, UMIP and LA57, are 4.x);
        that was not read.  The model's guest has every CPUID feature, so
        ``cr4_guest_rsvd_bits`` removes nothing."""
        from mmu.x86.regs import CR4
        bits = sum(CR4) & ~int(CR4.SMXE | CR4.PKS | CR4.CET)
        return int(bits | (CR4.CET if self.cet_virtualized else 0))

    def kernel_name(self, name: str) -> str:
        """The name this era's kernel gives a function the model logs under its 6.4 name
        (``kvm_tdp_mmu_get_vcpu_root_hpa`` -> ``kvm_tdp_mmu_alloc_root`` from 6.9); other
        names are returned unchanged."""
        if name == "kvm_tdp_mmu_get_vcpu_root_hpa" and self.tdp_root_alloc_read_lock:
            return "kvm_tdp_mmu_alloc_root"
        return name

    def refreshes_passthrough_bits(self, *, tdp: bool) -> bool:
        """Whether an emulated permission check first re-reads the guest-owned CR0.WP
        (``kvm_mmu_refresh_passthrough_bits``, mmu.h, 6.4): only with TDP (without it WP
        is never guest-owned) and the split roles (the bit lives in ``cpu_role``)."""
        return self.wp_refresh_in_permission_fault and tdp and self.role_split


#: flag -> the flag it needs (see the module docstring for the rule and the sources).
REQUIRES: Mapping[str, str] = {"role_split": "new_pgd_uses_mmu_role",
                               "ignore_wp_nonpaging": "cr0_wp_tdp_no_unload"}
REQUIRES_WHY: Mapping[str, str] = {
    "role_split": "the role series removed kvm_mmu_calc_root_page_role, which kvm_mmu_new_pgd "
                  "used before 'Always use current mmu's role when loading new PGD'",
    "ignore_wp_nonpaging": "e40bcf9f3a18 edits the CR0.WP-only branch of kvm_post_set_cr0 "
                           "that 01b31714bd90 added"}

FLAG_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Era) if f.name != "name")


def _preset(name: str, **flags: bool) -> Era:
    return Era(name=name, **flags)


_OLD = dict(role_split=False, efer_lme_resets=False, new_pgd_uses_mmu_role=False,
            tdp_root_preserved=False, cr0_wp_tdp_no_unload=False, ignore_wp_nonpaging=False,
            cr0_wp_guest_owned=False, wp_refresh_in_permission_fault=False)

_64 = dict(role_split=True, efer_lme_resets=True, new_pgd_uses_mmu_role=True,
           tdp_root_preserved=True, cr0_wp_tdp_no_unload=True, ignore_wp_nonpaging=True,
           cr0_wp_guest_owned=True, wp_refresh_in_permission_fault=True)

#: 6.12 = 6.4 plus the 6.6 dummy root and the 6.9 TDP-root and CPUID changes (docs/eras.md).
_612 = dict(_64, shadow_dummy_root=True, tdp_root_alloc_read_lock=True,
            cpuid_invalidates_root_role=True)

#: The presets, by mainline release.
ERAS: Mapping[str, Era] = {
    "5.15": _preset("5.15", **_OLD),
    "5.18": _preset("5.18", **{**_OLD, "efer_lme_resets": True, "new_pgd_uses_mmu_role": True}),
    "5.19": _preset("5.19", **{**_OLD, "efer_lme_resets": True, "new_pgd_uses_mmu_role": True,
                               "role_split": True}),
    "6.1": _preset("6.1", **{**_OLD, "efer_lme_resets": True, "new_pgd_uses_mmu_role": True,
                             "role_split": True}),
    "6.4": _preset("6.4", **_64),
    "6.12": _preset("6.12", **_612),
    "6.18": _preset("6.18", **{**_612, "page_role_is_mirror": True, "cet_virtualized": True}),
}
ERA_NAMES: tuple[str, ...] = tuple(ERAS)


def era(name: "str | Era" = "6.4", **overrides: bool) -> Era:
    """The preset ``name`` ("5.15", "5.18", "5.19", "6.1", "6.4", "6.12", "6.18") with
    flags overridden.

    An overridden era is named like ``6.1+cr0_wp_tdp_no_unload`` (or ``...-flag`` when a
    flag is turned off) so tables can print where a row comes from.  Unknown names or flags
    and non-bool values raise, listing what is allowed.
    """
    if isinstance(name, Era):
        base = name
    elif isinstance(name, str):
        if name not in ERAS:
            raise ValueError(f"unknown kernel era {name!r}: allowed {ERA_NAMES}")
        base = ERAS[name]
    else:
        raise TypeError(f"era must be a str (one of {ERA_NAMES}) or an Era, "
                        f"not {type(name).__name__}")
    label = base.name
    changes: dict[str, bool] = {}
    for flag, value in overrides.items():
        if flag not in FLAG_NAMES:
            raise ValueError(f"unknown era flag {flag!r}: allowed {FLAG_NAMES}")
        if not isinstance(value, bool):
            raise TypeError(f"era flag {flag} must be a bool, not {type(value).__name__}")
        if getattr(base, flag) != value:
            changes[flag] = value
            label += ("+" if value else "-") + flag
    return dataclasses.replace(base, name=label, **changes) if changes else base
