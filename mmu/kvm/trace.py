"""The vCPU's event log and counters: what KVM's tracepoints and vCPU stats show.

Kernel counterparts: ``arch/x86/kvm/trace.h`` (``trace_kvm_exit``, ``trace_kvm_cr_write``,
the ``kvm_mmu_*`` events of ``mmu/mmutrace.h``) and ``struct kvm_vcpu_stat``
(``arch/x86/include/asm/kvm_host.h``).  The model's events are coarser than tracepoints:
one :class:`Event` per decision, naming the kernel function that made it, so a reader can
follow a register write through the kernel's own function names.  Every part of the vCPU
(:mod:`mmu.kvm.cr`, :mod:`mmu.kvm.mmu_context`, :mod:`mmu.kvm.smm`, :mod:`mmu.kvm.nested`)
logs through :class:`Trace`.

Guest-visible faults (#GP from a bad register write) are results (:class:`WriteResult`),
never exceptions; bad *arguments* raise.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from mmu.x86.walker import Fault

__all__ = ["Event", "WriteResult", "Preview", "Trace", "gp", "ud", "bit_names"]

#: Fault vector -> (mnemonic, counter): the guest-visible faults the model injects.
_INJECTED = {13: ("#GP", "gp_faults"), 6: ("#UD", "ud_faults")}


@dataclasses.dataclass(frozen=True)
class Event:
    """One decision: ``step`` is the number of the guest operation that caused it."""

    step: int
    func: str
    detail: str = ""

    def __str__(self) -> str:
        return f"[{self.step}] {self.func}" + (f": {self.detail}" if self.detail else "")


@dataclasses.dataclass(frozen=True)
class WriteResult:
    """What a register write did: ``fault`` is a modelled #GP (vector 13) or None."""

    ok: bool
    exited: bool
    fault: "Fault | None" = None
    events: tuple[Event, ...] = ()


@dataclasses.dataclass(frozen=True)
class Preview:
    """What a sequence of writes would do (:meth:`VCpu.preview`); the vCPU is untouched."""

    results: tuple[WriteResult, ...]
    events: tuple[Event, ...]
    stats: dict[str, int]          # counters that would change, with their increments
    cpu_role: Any
    root_role: Any


def gp(reason: str) -> Fault:
    """A modelled #GP (vector 13, error code 0) with the reason it was raised."""
    return Fault(vector=13, error_code=0, level=None, reason=reason, addr=0)


def ud(reason: str) -> Fault:
    """A modelled #UD (vector 6, no error code) with the reason it was raised."""
    return Fault(vector=6, error_code=0, level=None, reason=reason, addr=0)


def bit_names(flags: type, value: int) -> str:
    """``CR0.WP|CR0.PG``: the register bits in ``value``, for event text readers see."""
    return "|".join(f"{flags.__name__}.{m.name}" for m in flags if m & value) or "none"


class Trace:
    """The event log and counters of a vCPU (mixed into :class:`mmu.kvm.vcpu.VCpu`).

    ``events`` holds at most ``max_events`` entries (then ``stats["events_dropped"]``
    counts the rest); ``step`` numbers the guest operations, so every event says which
    operation caused it."""

    events: list
    stats: Any
    step: int
    max_events: int

    def _event(self, func: str, detail: str = "") -> None:
        if len(self.events) < self.max_events:
            self.events.append(Event(self.step, func, detail))
        else:
            self.stats["events_dropped"] += 1

    def _begin(self) -> int:
        if getattr(self, "shut_down", False):
            raise ValueError("the vCPU shut down after a triple fault (KVM_EXIT_SHUTDOWN): no "
                             "guest operation runs any more; make a new VCpu, as a VMM resets "
                             "the VM")
        self.step += 1
        return len(self.events)

    def _result(self, mark: int, *, exited: bool, fault: Fault | None = None) -> WriteResult:
        return WriteResult(ok=fault is None, exited=exited, fault=fault,
                           events=tuple(self.events[mark:]))

    def _exit(self, why: str) -> None:
        """A VM exit (``trace_kvm_exit``; ``stat.exits``)."""
        self.stats["vm_exits"] += 1
        self._event("vm-exit", why)

    def _gp_fault(self, func: str, fault: Fault) -> Fault:
        """``func`` refused the operation with #GP (``kvm_inject_gp``) or #UD
        (``kvm_queue_exception(vcpu, UD_VECTOR)``); the registers keep their values."""
        name, counter = _INJECTED[fault.vector]
        self.stats[counter] += 1
        self._event(f"{func}: {name}", fault.reason + "; register unchanged")
        return fault
