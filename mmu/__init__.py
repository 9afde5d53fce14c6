"""mmu: a teaching model of how KVM virtualises x86 paging.

Three layers, one folder each:

* ``mmu.x86``  -- the architecture (SDM): registers, memory, the page walker, the batch
  walker and the page-table builders; no KVM in it;
* ``mmu.kvm``  -- KVM's MMU, split as arch/x86/kvm/ splits it: roles, legacy roles,
  permissions, shadow pages, TDP, the root cache, the eras and the vCPU's parts
  (register writes, MMU context, vendors, SMM, nesting);
* ``mmu.book`` -- the textbook: views, widgets, exercises, workloads, the cost model and
  the series.

The names most chapters need are importable from ``mmu`` itself.
"""
from mmu.x86.bits import ACCESS_KINDS, EPT, GP_VECTOR, PF_VECTOR, PTE, PFErr
from mmu.x86.memory import GuestMemory
from mmu.x86.regs import CR0, CR4, EFER, RFLAGS, PagingMode, Regs, make_regs, paging_mode

__all__ = [
    "ACCESS_KINDS", "EPT", "GP_VECTOR", "PF_VECTOR", "PTE", "PFErr",
    "GuestMemory",
    "CR0", "CR4", "EFER", "RFLAGS", "PagingMode", "Regs", "make_regs", "paging_mode",
]

# The heavier modules load on first use, so ``import mmu`` stays cheap for the
# widgets and each module can be read (and imported) on its own.
_LAZY = {
    "walk": "x86.walker", "WalkResult": "x86.walker", "Fault": "x86.walker", "TraceStep": "x86.walker",
    "ept_walk": "x86.walker", "npt_walk": "x86.walker", "EptViolation": "x86.walker",
    "EptMisconfig": "x86.walker", "EptBuilder": "x86.pagetable",
    "walk_many": "x86.batch", "BatchResult": "x86.batch",
    "PageTableBuilder": "x86.pagetable",
    "PageRole": "kvm.roles", "ExtendedRole": "kvm.roles", "CpuRole": "kvm.roles",
    "cpu_role": "kvm.roles", "tdp_root_role": "kvm.roles", "shadow_root_role": "kvm.roles",
    "nested_npt_roles": "kvm.roles", "nested_ept_role": "kvm.roles",
    "nested_mmu_role": "kvm.roles", "child_role": "kvm.roles",
    "update_permission_bitmask": "kvm.permissions", "update_pkru_bitmask": "kvm.permissions",
    "permission_fault": "kvm.permissions", "guest_rsvd_masks": "kvm.permissions",
    "reset_guest_paging_metadata": "kvm.permissions", "GuestMetadata": "kvm.permissions",
    "render_permissions_table": "kvm.permissions",
    "ShadowMMU": "kvm.shadow", "ShadowPage": "kvm.shadow", "Root": "kvm.shadow",
    "TdpMMU": "kvm.tdp", "TdpRoot": "kvm.tdp", "two_d_walk": "kvm.tdp",
    "VCpu": "kvm.vcpu", "Vm": "kvm.vcpu", "GuestMmu": "kvm.nested",
    "Era": "kvm.eras", "era": "kvm.eras",
    "RootCache": "kvm.root_cache", "RootInfo": "kvm.root_cache",
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
