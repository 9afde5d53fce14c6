"""mmu: a teaching model of how KVM virtualises x86 paging.

Modules mirror the kernel's split (arch/x86/kvm/mmu/):

* ``regs``, ``bits``, ``memory`` -- registers, entry bits, guest-physical memory;
* ``walker``      -- the guest page walker (paging_tmpl.h FNAME(walk_addr_generic));
* ``batch``       -- the same walk vectorised over numpy arrays;
* ``pagetable``   -- a builder that maps ranges, so nobody hand-assembles entries;
* ``roles``       -- kvm_mmu_page_role, kvm_cpu_role and their builders (5.19+);
* ``legacy``      -- the single mmu_role of 5.18 and before;
* ``permissions`` -- update_permission_bitmask, update_pkru_bitmask, permission_fault;
* ``shadow``      -- shadow pages keyed by (gfn, role);
* ``tdp``         -- two-dimensional paging (EPT/NPT) roots and the 2D walk;
* ``vcpu``        -- kvm_set_cr0/cr3/cr4, set_efer, kvm_init_mmu and the root cache, per era.
"""
from .bits import ACCESS_KINDS, EPT, GP_VECTOR, PF_VECTOR, PTE, PFErr
from .memory import GuestMemory
from .regs import CR0, CR4, EFER, RFLAGS, PagingMode, Regs, make_regs, paging_mode

__all__ = [
    "ACCESS_KINDS", "EPT", "GP_VECTOR", "PF_VECTOR", "PTE", "PFErr",
    "GuestMemory",
    "CR0", "CR4", "EFER", "RFLAGS", "PagingMode", "Regs", "make_regs", "paging_mode",
]

# The heavier modules load on first use, so ``import mmu`` stays cheap for the
# widgets and each module can be read (and imported) on its own.
_LAZY = {
    "walk": "walker", "WalkResult": "walker", "Fault": "walker", "TraceStep": "walker",
    "ept_walk": "walker", "npt_walk": "walker", "EptViolation": "walker",
    "EptMisconfig": "walker", "EptBuilder": "pagetable",
    "walk_many": "batch", "BatchResult": "batch",
    "PageTableBuilder": "pagetable",
    "PageRole": "roles", "ExtendedRole": "roles", "CpuRole": "roles",
    "cpu_role": "roles", "tdp_root_role": "roles", "shadow_root_role": "roles",
    "nested_npt_roles": "roles", "nested_ept_role": "roles",
    "nested_mmu_role": "roles", "child_role": "roles",
    "update_permission_bitmask": "permissions", "update_pkru_bitmask": "permissions",
    "permission_fault": "permissions", "guest_rsvd_masks": "permissions",
    "reset_guest_paging_metadata": "permissions", "GuestMetadata": "permissions",
    "render_permissions_table": "permissions",
    "ShadowMMU": "shadow", "ShadowPage": "shadow", "Root": "shadow",
    "TdpMMU": "tdp", "TdpRoot": "tdp", "two_d_walk": "tdp",
    "VCpu": "vcpu", "Vm": "vcpu", "GuestMmu": "vcpu",
    "Era": "eras", "era": "eras",
    "RootCache": "root_cache", "RootInfo": "root_cache",
}
__all__ += list(_LAZY)


def __getattr__(name: str):
    import importlib
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'mmu' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value
