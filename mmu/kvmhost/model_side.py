"""The model's answers to the experiments, asked the way the host is asked.

A host run starts with ``KVM_SET_SREGS``, which ends in ``kvm_mmu_reset_context``
(x86.c ``__set_sregs_common``), and ``KVM_RUN``, whose first entry loads a root
(``kvm_mmu_reload``).  :meth:`Model.vcpu` does the same to an :class:`mmu.kvm.vcpu.VCpu`
of the backend's era, MMU kind and vendor, over a copy of the guest's memory.

:class:`Model` is the one place the experiments get model answers from, so a test can
subclass it and return a wrong answer on purpose (it must then be reported as a
disagreement).
"""
from __future__ import annotations

from mmu.kvm.vcpu import VCpu
from mmu.x86.memory import GuestMemory
from mmu.x86.regs import Regs
from mmu.x86.walker import walk

__all__ = ["Model", "fault_label"]

_VECTOR_NAMES = {13: "#GP", 14: "#PF", 8: "#DF", 6: "#UD"}


def fault_label(vector: int | None, error_code: int | None) -> str:
    """"no fault", or the exception and its error code: "#PF 0x11"."""
    if vector is None:
        return "no fault"
    name = _VECTOR_NAMES.get(vector, f"vector {vector}")
    return name if error_code is None else f"{name} {error_code:#x}"


def _classify(before, after) -> str:
    """What one guest operation did to the root, from the model's counters:
    "new" (a root page created), "found" (looked up in the hash and found),
    "cached" (a prev_roots hit: no lookup at all), "none" (nothing)."""
    if after["roots_created"] > before["roots_created"]:
        return "new"
    if after["roots_reused"] > before["roots_reused"]:
        return "found"
    if after["prev_root_hits"] > before["prev_root_hits"]:
        return "cached"
    return "none"


class Model:
    """The model configured like the host: ``era``, ``kind`` ("tdp"/"legacy"/"shadow")
    and the model's vendor (:attr:`Backend.model_vendor`)."""

    def __init__(self, era: str, kind: str, vendor: str) -> None:
        self.era, self.kind, self.vendor = era, kind, vendor

    def vcpu(self, mem: GuestMemory, regs: Regs) -> VCpu:
        v = VCpu(mem.copy(), kernel=self.era, mmu=self.kind, vendor=self.vendor)
        v.regs = regs                       # KVM_SET_SREGS writes the registers ...
        v.cs_l = regs.lma
        v.kvm_mmu_reset_context()           # ... then resets the MMU context
        v.enter()                           # KVM_RUN: kvm_mmu_reload
        return v

    # -- experiment answers ---------------------------------------------------------------
    def root_pages(self, mem: GuestMemory, regs: Regs) -> list[list[int]]:
        """[gfn, role word] of each root-level page the first entry uses (a TDP MMU root
        is one direct page at gfn 0, ``tdp_mmu_alloc_sp`` in tdp_mmu.c)."""
        from mmu.kvm.tdp import TdpRoot
        v = self.vcpu(mem, regs)
        if isinstance(v.root_object, TdpRoot):
            return [[0, v.root_object.role.word]]
        return [[sp.gfn, sp.role.word] for sp in v.root_object.pages()]

    def writes(self, mem: GuestMemory, regs: Regs, ops: list[tuple[str, int]]
               ) -> tuple[list[str], list[bool], dict]:
        """For each ("cr0"|"cr3", value) guest write, what happened to the root
        (:func:`_classify`), the vCPU entering the guest after each write; whether the
        write reached KVM (``WriteResult.exited``, the vendor's decision); and the shadow
        pages created and zapped over the whole run, the first root included."""
        v = self.vcpu(mem, regs)
        out, exited = [], []
        for reg, value in ops:
            before = dict(v.stats)
            before.setdefault("roots_created", 0)
            res = v.set_cr0(value) if reg == "cr0" else v.set_cr3(value)
            if not res.ok:
                raise ValueError(f"the model refused {reg}={value:#x}: {res.fault}")
            exited.append(res.exited)
            v.enter()
            after = {k: v.stats[k] for k in ("roots_created", "roots_reused", "prev_root_hits")}
            out.append(_classify({k: before.get(k, 0) for k in after}, after))
        st = v.vm.shadow.stats
        return out, exited, {"created": st["sps_created"], "zapped": st["sps_zapped"]}

    def fault(self, mem: GuestMemory, regs: Regs, gva: int, access: str, cpl: int) -> str:
        """The fault the guest gets for this access as "#PF 0x<error code>", or "no fault":
        with shadow paging the one KVM's walker injects (``FNAME(page_fault)``), with
        EPT/NPT the CPU's own (the SDM walker: KVM is not involved)."""
        v = self.vcpu(mem, regs)
        if v.tdp_enabled:
            f = walk(v.mem, v.regs, gva, access, cpl).fault
        else:
            f = v.vm.shadow.page_fault(v.root_object, v.regs, v.cpu_role, gva, access,
                                       cpl).injected
        return fault_label(None if f is None else f.vector, None if f is None else f.error_code)

    def shadow_tree(self, mem: GuestMemory, regs: Regs, accesses: list[tuple[str, int]],
                    cpl: int) -> list[list[int]]:
        """[gfn, role word] of every shadow page after these accesses fault in, sorted."""
        v = self.vcpu(mem, regs)
        for access, gva in accesses:
            out = v.vm.shadow.page_fault(v.root_object, v.regs, v.cpu_role, gva, access, cpl)
            if out.injected is not None:
                raise ValueError(f"the model faults on {access} {gva:#x}: {out.reason}")
        return sorted([sp.gfn, sp.role.word] for sp in v.vm.shadow.pages())

    def toggle_cycles(self) -> float:
        """What the cycle-cost model says one CR0.WP toggle costs on this MMU kind
        (``mmu.book.cost.vmexit_cycles_per_toggle``)."""
        from mmu.book.cost import vmexit_cycles_per_toggle
        return vmexit_cycles_per_toggle(self.era, self.kind, self.vendor)

