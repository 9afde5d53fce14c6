"""Which KVM the host runs, and which model configuration matches it.

Read-only: ``uname -r``, ``/sys/module/<m>/parameters`` and ``/proc/cpuinfo`` are read,
nothing is written.  The vendor module decides the vendor (``kvm_intel`` -> VMX,
``kvm_amd`` -> SVM, ``kvm_pvm`` -> PVM, the "pagetable-based virtual machine" backend that
runs guests through shadow paging without VMX/SVM); ``ept``/``npt`` and ``kvm.tdp_mmu``
decide the MMU kind as the model names them (mmu.kvm.vcpu ``MMU_KINDS``):

* ``tdp``    -- EPT/NPT on and ``tdp_mmu=Y`` (the TDP MMU, tdp_mmu.c);
* ``legacy`` -- EPT/NPT on, ``tdp_mmu=N`` (direct roots in the shadow-page hash);
* ``shadow`` -- no EPT/NPT (always so on PVM): shadow paging.

The kernel version picks the model's era: the newest era the model has that is not newer
than the running kernel (``mmu.kvm.eras.ERA_NAMES``).
"""
from __future__ import annotations

import dataclasses
import os
import re

from mmu.kvm.eras import ERA_NAMES

__all__ = ["Backend", "detect", "era_for_kernel", "VENDOR_MODULES"]

VENDOR_MODULES = {"kvm_intel": "intel", "kvm_amd": "amd", "kvm_pvm": "pvm"}
_TDP_PARAM = {"kvm_intel": "ept", "kvm_amd": "npt"}


def _param(module: str, name: str, sys_root: str) -> str | None:
    try:
        with open(os.path.join(sys_root, "module", module, "parameters", name)) as f:
            return f.read().strip()
    except OSError:
        return None


def _yes(value: str | None) -> bool | None:
    if value is None:
        return None
    return value.upper() in ("Y", "1")


def era_for_kernel(release: str, eras: tuple[str, ...] = ERA_NAMES) -> str:
    """The newest model era not newer than ``release`` ("6.18.44-fc" -> "6.4" while the
    model's newest era is 6.4).  Older than every era: the oldest, said by the caller."""
    m = re.match(r"(\d+)\.(\d+)", release)
    if not m:
        raise ValueError(f"kernel release {release!r} does not start with MAJOR.MINOR")
    have = (int(m.group(1)), int(m.group(2)))

    def key(name: str) -> tuple[int, int]:
        a, b = name.split(".")[:2]
        return int(a), int(b)

    older = [e for e in eras if key(e) <= have]
    return max(older, key=key) if older else min(eras, key=key)


@dataclasses.dataclass(frozen=True)
class Backend:
    """The host's KVM and the model configuration that matches it."""

    kernel: str                 # uname -r
    vendor_module: str | None   # kvm_intel / kvm_amd / kvm_pvm, None if none loaded
    vendor: str | None          # intel / amd / pvm
    tdp: bool | None            # ept / npt parameter (None: PVM or unknown)
    tdp_mmu: bool | None        # kvm.tdp_mmu
    nested: bool                # the host is itself a guest (cpuinfo "hypervisor")
    era: str                    # the model's era for this kernel
    mmu_kind: str               # tdp / legacy / shadow

    @property
    def model_vendor(self) -> str:
        """The vendor the model's VCpu is built with.  PVM: see :mod:`mmu.kvmhost.vendor`."""
        from mmu.kvmhost.vendor import model_vendor
        return model_vendor(self.vendor)

    def line(self) -> str:
        """One line a report starts with."""
        tdp = {None: "n/a", True: "Y", False: "N"}[self.tdp]
        tdp_name = _TDP_PARAM.get(self.vendor_module or "", "ept/npt")
        mmu = {None: "?", True: "Y", False: "N"}[self.tdp_mmu]
        return (f"Linux {self.kernel}, {self.vendor_module or 'no vendor module'} "
                f"({self.vendor or '?'}{', nested' if self.nested else ''}), {tdp_name}={tdp}, "
                f"tdp_mmu={mmu} -> model: era {self.era}, mmu={self.mmu_kind}, "
                f"vendor={self.vendor or '?'}"
                + (f" (modelled as {self.model_vendor})" if self.model_vendor != self.vendor
                   else ""))

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["line"] = self.line()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Backend":
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls)})


def detect(sys_root: str = "/sys", release: str | None = None,
           cpuinfo: str = "/proc/cpuinfo") -> Backend:
    """Read the running host's KVM configuration (``sys_root`` etc. for tests)."""
    release = release if release is not None else os.uname().release
    module = next((m for m in VENDOR_MODULES
                   if os.path.isdir(os.path.join(sys_root, "module", m))), None)
    vendor = VENDOR_MODULES.get(module) if module else None
    tdp = _yes(_param(module, _TDP_PARAM[module], sys_root)) if module in _TDP_PARAM else None
    if vendor == "pvm":
        tdp = False                 # PVM has no EPT/NPT: shadow paging only
    tdp_mmu = _yes(_param("kvm", "tdp_mmu", sys_root))
    nested = False
    try:
        with open(cpuinfo) as f:
            nested = any(ln.startswith("flags") and " hypervisor" in ln for ln in f)
    except OSError:
        pass
    if not tdp:
        kind = "shadow"
    else:
        kind = "tdp" if tdp_mmu else "legacy"
    return Backend(release, module, vendor, tdp, tdp_mmu, nested, era_for_kernel(release), kind)
