"""Throughput of the scalar walker (mmu.walk) against the numpy batch walker (mmu.walk_many).

Builds 4-level tables mapping 100,000 4 KiB pages with PageTableBuilder, then times
scalar walks over a sample of the addresses and one batch walk over all of them (the
sample is a prefix of the same shuffled list).  Each repeat starts from a fresh copy
of the memory, so both walkers do the same A/D write-back work.  The best and the
median of the repeats are reported (the ratio of the bests is the headline; the ratio
of the medians shows how much machine noise moves it).  Prints numbers and ratios,
never asserts on time.

    .venv/bin/python benchmarks/walk.py [--pages 100000] [--sample 3000] [--repeats 7]
"""
from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmu import GuestMemory, PageTableBuilder, walk, walk_many  # noqa: E402

GVA_BASE = 0x7F00_0000_0000     # user half, spans several PML4/PDPT/PD entries
GPA_BASE = 0x1_0000_0000


def build(pages: int) -> tuple[GuestMemory, object]:
    mem = GuestMemory()
    b = PageTableBuilder(mem, "4-level")
    b.map(GVA_BASE, GPA_BASE, pages * 4096, writable=True, user=True)
    return mem, b.regs()


def timings(repeats: int, mem: GuestMemory, fn) -> tuple[float, float]:
    """(best, median) wall time of ``fn(copy)`` over ``repeats`` fresh copies of ``mem``."""
    times = []
    for _ in range(repeats):
        m = mem.copy()
        t0 = time.perf_counter()
        fn(m)
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=100_000)
    ap.add_argument("--sample", type=int, default=3_000, help="addresses walked by the scalar walker")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--access", default="write", choices=("read", "write", "fetch"))
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    mem, regs = build(args.pages)
    t_build = time.perf_counter() - t0
    rng = random.Random(2024)
    gvas = [GVA_BASE + 4096 * k + rng.randrange(4096) for k in range(args.pages)]
    rng.shuffle(gvas)
    arr = np.array(gvas, dtype=np.uint64)
    sample = gvas[:min(args.sample, len(gvas))]

    def scalar(m: GuestMemory) -> None:
        for gva in sample:
            walk(m, regs, gva, args.access, 3)

    def batch(m: GuestMemory) -> None:
        walk_many(m, regs, arr, args.access, 3)

    t_scalar, med_scalar = timings(args.repeats, mem, scalar)
    t_batch, med_batch = timings(args.repeats, mem, batch)

    # Sanity: the batch agrees with the scalar walker on the sample (same memory state).
    m1, m2 = mem.copy(), mem.copy()
    expect = [walk(m1, regs, g, args.access, 3).gpa for g in sample]
    got = walk_many(m2, regs, sample, args.access, 3)
    agree = got.ok.all() and got.gpa.tolist() == expect and m1 == m2 and m1.writes == m2.writes

    scalar_rate, scalar_med = len(sample) / t_scalar, len(sample) / med_scalar
    batch_rate, batch_med = len(arr) / t_batch, len(arr) / med_batch
    print(f"python {platform.python_version()}, numpy {np.__version__}")
    print(f"tables: {args.pages:,} mapped 4 KiB pages, {len(mem):,} frames, built in {t_build:.2f} s")
    print(f"addresses: scalar {len(sample):,} (sample), batch {len(arr):,}; access={args.access}, "
          f"cpl=3, {args.repeats} repeats each")
    print(f"scalar walks/s: best {scalar_rate:12,.0f} ({t_scalar * 1e3:8.1f} ms), "
          f"median {scalar_med:12,.0f} ({med_scalar * 1e3:8.1f} ms)")
    print(f"batch  walks/s: best {batch_rate:12,.0f} ({t_batch * 1e3:8.1f} ms), "
          f"median {batch_med:12,.0f} ({med_batch * 1e3:8.1f} ms)")
    print(f"ratio batch/scalar: {batch_rate / scalar_rate:.1f}x best, "
          f"{batch_med / scalar_med:.1f}x median   (target >= 30x)")
    print(f"batch agrees with scalar on the sample: {'yes' if agree else 'NO'}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
