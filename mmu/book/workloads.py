"""Seeded generators of guest behaviour, as lists of operations that drive vCPUs.

A workload is a list of :class:`Op`: a register write (``"cr0"``, ``"cr3"``, ``"cr4"``,
``"efer"``), an SMM transition (``"smm_enter"``, ``"smm_leave"``), a boot sequence
(``"boot_long_mode"``), or ``"work"`` -- guest work that never exits (its ``value`` names it:
``"round_trip"``, ``"syscall"``, ``"page_fault"``...), counted so :mod:`mmu.book.cost` can price
it.  ``cpu`` says which vCPU runs the op.  Randomness comes only from
``random.Random(seed)``.

Generators:

* :func:`boot_long_mode` -- the register sequence of a 64-bit kernel's entry;
* :func:`context_switches` -- CR3 loads among N processes (round robin or random);
* :func:`kernexec` -- a grsecurity kernel: KERNEXEC brackets kernel writes to read-only data
  with CR0.WP=0 ... CR0.WP=1 (``pax_open_kernel``/``pax_close_kernel``, facts §9),
  interleaved with syscalls, context switches and page faults;
* :func:`ssdd` -- rt-tests ``ssdd 10 50000`` (10 tracer/tracee pairs x 50,000 ptrace/signal
  round trips) on such a kernel, as a seeded *sample* of round trips plus the factor that
  scales the sample to the full run (simulating 500,000 round trips in Python would take
  minutes; the per-round-trip counts are what matter);
* :func:`vmexit_cr0_wp` -- kvm-unit-tests ``vmexit.flat``'s CR0.WP test: toggles in a loop.

:func:`run` executes a workload on one or more vCPUs and returns the summed counters.
"""
from __future__ import annotations

import dataclasses
import random
from collections import Counter
from typing import Iterable, NamedTuple, Sequence

from mmu.x86.bits import check_int
from mmu.x86.regs import CR0, CR4, EFER

__all__ = ["Op", "Workload", "RunResult", "boot_long_mode", "context_switches", "kernexec",
           "ssdd", "vmexit_cr0_wp", "run", "SSDD_ROUND_TRIPS", "KERNEXEC_WP_PAIRS"]

#: ``ssdd 10 50000``: 10 pairs x 50,000 iterations (facts §9).
SSDD_ROUND_TRIPS = 10 * 50_000

#: Mean KERNEXEC open/close pairs (two CR0.WP writes each) per ssdd round trip.  Not a
#: published number: calibrated in :mod:`mmu.book.cost` (CALIBRATION) so that exit + kvm_init_mmu
#: per toggle (Paolo's 4,879 cycles) explains Mathias's 5.39 s -> 3.51 s step at 3 GHz.
KERNEXEC_WP_PAIRS = 1.156

_BOOT_CR0 = int(CR0.ET | CR0.PE | CR0.NE)
_CR0_PAGING = _BOOT_CR0 | int(CR0.PG | CR0.WP)
_CR4_LONG = int(CR4.PAE | CR4.PSE | CR4.PGE)
_EFER_LONG = int(EFER.LME | EFER.SCE | EFER.NXE)


class Op(NamedTuple):
    """One guest operation: ``kind``, its value (a register value, or a work label), and
    the vCPU index that runs it."""

    kind: str
    value: "int | str" = 0
    cpu: int = 0


@dataclasses.dataclass(frozen=True)
class Workload:
    """Operations plus what they stand for.

    ``warmup`` ops run first and are not counted (they build the roots and caches a long
    run would have built long ago); ``scale`` multiplies the counted ops' counters to the
    full run (1 when the ops *are* the full run); ``n_cpus`` vCPUs are needed.
    """

    name: str
    ops: tuple[Op, ...]
    warmup: tuple[Op, ...] = ()
    scale: float = 1.0
    n_cpus: int = 1
    description: str = ""


@dataclasses.dataclass(frozen=True)
class RunResult:
    """Counters of a run: ``stats`` summed over vCPUs, ``work`` by label; both scaled."""

    stats: dict[str, float]
    work: dict[str, float]
    scale: float


_KINDS = ("cr0", "cr3", "cr4", "efer", "smm_enter", "smm_leave", "boot_long_mode", "work",
          "far_jump")


def _rng(seed: object) -> random.Random:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, not {type(seed).__name__}")
    return random.Random(seed)


def boot_long_mode(cr3: int = 0x100000, cpu: int = 0) -> list[Op]:
    """``VCpu.boot_long_mode`` as one op (the sequence lives in :mod:`mmu.kvm.vcpu`)."""
    return [Op("boot_long_mode", check_int("cr3", cr3, 0, 1 << 52), cpu)]


def _cr3_of(proc: int) -> int:
    return 0x100000 + 0x1000 * proc


def context_switches(seed: int, n_procs: int, switches: int, *, pattern: str = "round_robin",
                     cpu: int = 0) -> list[Op]:
    """CR3 loads among ``n_procs`` processes (process p has CR3 0x100000 + p*0x1000).

    ``pattern``: "round_robin" (1, 2, ..., n-1, 0, 1, ...) or "random" (uniform, never the
    current process)."""
    rng = _rng(seed)
    n_procs = check_int("n_procs", n_procs, 1, 1 << 16)
    switches = check_int("switches", switches, 0, 1 << 24)
    if pattern not in ("round_robin", "random"):
        raise ValueError(f"pattern={pattern!r}: allowed ('round_robin', 'random')")
    ops, cur = [], 0
    for k in range(1, switches + 1):
        if pattern == "round_robin":
            cur = k % n_procs
        elif n_procs > 1:
            cur = rng.choice([p for p in range(n_procs) if p != cur])
        ops.append(Op("cr3", _cr3_of(cur), cpu))
    return ops


def _kernexec_window(cpu: int) -> list[Op]:
    """pax_open_kernel(); write; pax_close_kernel(): CR0.WP 1 -> 0 -> 1."""
    return [Op("cr0", _CR0_PAGING & ~int(CR0.WP), cpu), Op("work", "kernel_write", cpu),
            Op("cr0", _CR0_PAGING, cpu)]


def _wp_pairs(rng: random.Random, mean: float) -> int:
    """floor(mean) or floor(mean)+1 pairs, so the expectation is ``mean``."""
    whole = int(mean)
    return whole + (1 if rng.random() < mean - whole else 0)


def kernexec(seed: int, syscalls: int, *, n_procs: int = 4, wp_pairs_per_syscall: float = 0.5,
             switch_every: int = 4, fault_rate: float = 0.05, cpu: int = 0) -> list[Op]:
    """A grsecurity kernel at work: each syscall may open KERNEXEC windows (a seeded
    number with mean ``wp_pairs_per_syscall``); every ``switch_every`` syscalls a context
    switch to another process; page faults at ``fault_rate`` per syscall (guest work: with
    EPT/NPT, and with shadow paging when the SPTE already exists, they do not exit here)."""
    rng = _rng(seed)
    syscalls = check_int("syscalls", syscalls, 0, 1 << 24)
    switch_every = check_int("switch_every", switch_every, 1, 1 << 16)
    if not 0 <= wp_pairs_per_syscall <= 16:
        raise ValueError(f"wp_pairs_per_syscall={wp_pairs_per_syscall}: allowed 0..16")
    if not 0 <= fault_rate <= 1:
        raise ValueError(f"fault_rate={fault_rate}: allowed 0..1")
    ops: list[Op] = []
    cur = 0
    for i in range(syscalls):
        ops.append(Op("work", "syscall", cpu))
        for _ in range(_wp_pairs(rng, wp_pairs_per_syscall)):
            ops += _kernexec_window(cpu)
        if rng.random() < fault_rate:
            ops.append(Op("work", "page_fault", cpu))
        if (i + 1) % switch_every == 0 and n_procs > 1:
            cur = rng.choice([p for p in range(n_procs) if p != cur])
            ops.append(Op("cr3", _cr3_of(cur), cpu))
    return ops


def _ssdd_round_trip(rng: random.Random, pair: int, cpu: int, wp_pairs: float) -> list[Op]:
    """One ptrace/signal round trip of tracer/tracee ``pair``: the tracer's ptrace()/
    waitpid(), a switch to the tracee, its signal delivery and sigreturn, a switch back.
    The KERNEXEC windows fall in the kernel paths (signal frame set-up, ptrace accessors)."""
    tracer, tracee = _cr3_of(2 * pair), _cr3_of(2 * pair + 1)
    ops = [Op("work", "round_trip", cpu), Op("work", "syscall", cpu), Op("cr3", tracee, cpu),
           Op("work", "syscall", cpu)]
    for _ in range(_wp_pairs(rng, wp_pairs)):
        ops += _kernexec_window(cpu)
    ops += [Op("work", "syscall", cpu), Op("cr3", tracer, cpu), Op("work", "syscall", cpu)]
    return ops


def ssdd(seed: int = 0, *, pairs: int = 10, iterations: int = 50_000, sample: int = 400,
         warmup: int = 40, n_cpus: int = 2, wp_pairs_per_round_trip: float = KERNEXEC_WP_PAIRS
         ) -> Workload:
    """rt-tests ``ssdd <pairs> <iterations>`` in a grsecurity guest with ``n_cpus`` vCPUs.

    Round trips are spread over the vCPUs in turn (pair p on vCPU p mod n_cpus); each
    KERNEXEC window opens and closes within one round trip, so while one vCPU toggles WP
    the others run with WP=1 -- which decides whether a TDP root dies at unload (facts §4:
    a root is freed when the *last* vCPU drops it).  ``sample`` round trips are simulated
    after ``warmup`` uncounted ones and scaled by pairs*iterations/sample.
    """
    rng = _rng(seed)
    pairs = check_int("pairs", pairs, 1, 1 << 10)
    iterations = check_int("iterations", iterations, 1, 1 << 32)
    sample = check_int("sample", sample, 1, 1 << 20)
    warmup = check_int("warmup", warmup, 0, 1 << 20)
    check_int("n_cpus", n_cpus, 1, 64)
    boot = [op for c in range(n_cpus) for op in boot_long_mode(_cr3_of(2 * c), c)]
    trips = []
    for k in range(warmup + sample):
        pair = k % pairs
        trips.append(_ssdd_round_trip(rng, pair, pair % n_cpus, wp_pairs_per_round_trip))
    warm = boot + [op for t in trips[:warmup] for op in t]
    ops = [op for t in trips[warmup:] for op in t]
    return Workload(f"ssdd {pairs} {iterations}", tuple(ops), tuple(warm),
                    pairs * iterations / sample, n_cpus,
                    f"{sample} sampled round trips of {pairs * iterations} on {n_cpus} vCPUs, "
                    f"{wp_pairs_per_round_trip} KERNEXEC pairs per round trip on average")


def vmexit_cr0_wp(toggles: int = 200, warmup: int = 4) -> Workload:
    """kvm-unit-tests ``vmexit.flat`` CR0.WP test: a 64-bit guest flips CR0.WP in a loop
    (57c063c5, facts §10.1); cost is reported per toggle."""
    check_int("toggles", toggles, 1, 1 << 24)
    warmup = check_int("warmup", warmup, 0, 1 << 16)

    def flips(n: int, start: int) -> list[Op]:
        out = []
        for i in range(start, start + n):
            wp = int(CR0.WP) if i % 2 else 0
            out += [Op("cr0", (_CR0_PAGING & ~int(CR0.WP)) | wp), Op("work", "toggle")]
        return out
    return Workload("vmexit.flat cr0_wp", tuple(flips(toggles, warmup)),
                    tuple(boot_long_mode() + flips(warmup, 0)), 1.0, 1,
                    f"{toggles} CR0.WP writes")


def _apply(vcpus: Sequence, op: Op, work: Counter) -> None:
    if op.kind not in _KINDS:
        raise ValueError(f"op kind {op.kind!r}: allowed {_KINDS}")
    if not 0 <= op.cpu < len(vcpus):
        raise ValueError(f"op cpu={op.cpu}: allowed 0..{len(vcpus) - 1}")
    v = vcpus[op.cpu]
    if op.kind == "work":
        work[op.value] += 1
    elif op.kind == "boot_long_mode":
        v.boot_long_mode(cr3=op.value)
    elif op.kind == "smm_enter":
        v.enter_smm()
    elif op.kind == "smm_leave":
        v.leave_smm()
    elif op.kind == "far_jump":
        v.far_jump(bool(op.value))
    else:
        getattr(v, f"set_{op.kind}")(op.value)


def run(workload: "Workload | Iterable[Op]", vcpus) -> RunResult:
    """Run ``workload`` on ``vcpus`` (a VCpu or a list of VCpus of one VM).

    Warm-up ops run first and are not counted; the rest are counted and scaled."""
    from mmu.kvm.vcpu import VCpu
    vcpus = [vcpus] if isinstance(vcpus, VCpu) else list(vcpus)
    if not vcpus or not all(isinstance(v, VCpu) for v in vcpus):
        raise TypeError("vcpus must be a VCpu or a non-empty list of VCpu")
    if not isinstance(workload, Workload):
        workload = Workload("ops", tuple(workload))
    if workload.n_cpus > len(vcpus):
        raise ValueError(f"workload {workload.name!r} needs {workload.n_cpus} vCPUs, "
                         f"got {len(vcpus)}")
    scratch: Counter = Counter()
    for op in workload.warmup:
        _apply(vcpus, op, scratch)
    before = Counter()
    for v in vcpus:
        before.update(v.stats)
    work: Counter = Counter()
    for op in workload.ops:
        _apply(vcpus, op, work)
    after = Counter()
    for v in vcpus:
        after.update(v.stats)
    s = workload.scale
    stats = {k: (after[k] - before[k]) * s for k in after if after[k] != before[k]}
    return RunResult(stats, {k: n * s for k, n in work.items()}, s)
