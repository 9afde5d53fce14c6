"""Your own KVM: the book's experiments on the host's ``/dev/kvm``, beside the model.

Everything the book claims is checked against the SDM, QEMU and the kernel sources as
read; this package checks it against the running kernel.  It boots small guests straight
into a paging mode, runs them, reads what KVM did -- root role words and root lookups
(``kvm_mmu_get_page``), injected faults (``kvm_inj_exception``), binary statistics
(``KVM_GET_STATS_FD``) -- and compares each answer with the model's.

Commands (see :mod:`mmu.kvmhost.__main__`)::

    python -m mmu.kvmhost run [--json out.json]   # side by side; exit 1 on a disagreement
    python -m mmu.kvmhost diff a.json b.json      # two hosts, or a kernel before/after a patch
    python -m mmu.kvmhost show [file.json]        # render a record (default: the reference run)

Modules: :mod:`~mmu.kvmhost.abi` (ioctl numbers, C structures), :mod:`~mmu.kvmhost.host`
(VM, vCPU, bounded runs), :mod:`~mmu.kvmhost.stats`, :mod:`~mmu.kvmhost.trace`,
:mod:`~mmu.kvmhost.backend` (which KVM the host runs), :mod:`~mmu.kvmhost.vendor` (what is
the vendor's and what the common MMU's), :mod:`~mmu.kvmhost.guest` (guests built on
purpose), :mod:`~mmu.kvmhost.runner`, :mod:`~mmu.kvmhost.model_side`,
:mod:`~mmu.kvmhost.experiments`, :mod:`~mmu.kvmhost.report`.

SAFETY -- what this package does and does not do to the host (each point is tested in
``tests/test_kvmhost*.py``):

1. **Only well-formed guests built on purpose.**  Every guest comes from
   :class:`~mmu.kvmhost.guest.GuestImage` (fixed layout, GDT/IDT/stack, page tables from
   ``PageTableBuilder``) and every register state from ``make_regs`` (checked by
   ``paging_mode``); no random register state is ever handed to ``KVM_SET_SREGS``.
2. **Every run is bounded** in returns to userspace (``max_exits``, at most
   :data:`~mmu.kvmhost.host.MAX_EXITS`) and in time (``time_limit``, at most
   :data:`~mmu.kvmhost.host.MAX_SECONDS`; a watchdog interrupts ``KVM_RUN``), guest RAM is
   at most :data:`~mmu.kvmhost.host.MAX_RAM`, and guest code is straight-line.
3. **No module parameter or system setting is changed.**  ``/sys/module`` and
   ``/proc/cpuinfo`` are only read.
4. **Tracing only this process, in a private tracefs instance that is always removed.**
   With root, one instance ``instances/kvmhost-<pid>-<n>`` with ``set_event_pid`` = our
   pid; on leaving -- normally, on an error, on Ctrl-C or SIGTERM -- its events are
   disabled, its buffer cleared, the instance removed, and tracefs unmounted if we mounted
   it.  Without root, the experiments that need tracing are reported as skipped.
5. **Where /dev/kvm is absent or unusable** the tests skip and say why
   (:func:`~mmu.kvmhost.host.kvm_unusable_reason`); the book then shows the recorded
   reference run (:func:`~mmu.kvmhost.report.reference`), never a made-up result.
"""
from __future__ import annotations

__all__ = ["kvm_unusable_reason"]


def kvm_unusable_reason(path: str = "/dev/kvm") -> str | None:
    """None when ``path`` can run our guests, else why not (one sentence)."""
    from mmu.kvmhost.host import kvm_unusable_reason as why
    return why(path)
