"""Shadow paging of a 4-level guest: how fast the model builds shadow tables, and whether
the cost is linear in the number of pages.

A guest maps N 4 KiB pages (writable, dirty, user) at GVA 0x40000000; a shadow root is built
and every page is faulted in through :meth:`mmu.kvm.shadow.ShadowMMU.prefault` (one
``page_fault`` per page: guest walk + shadow links + SPTE).  Printed: pages/s at two sizes
(1/8 GiB and 1 GiB = 262,144 pages by default) and their ratio, which is ~1 if the build is
linear.  Numbers, not asserts: run ``.venv/bin/python benchmarks/shadow_build.py``
(``--small-mib``/``--large-mib`` to change the sizes, ``--check`` to verify every page).
"""
from __future__ import annotations

import argparse
import time

from mmu.x86.memory import GuestMemory
from mmu.x86.pagetable import PageTableBuilder
from mmu.kvm.roles import cpu_role, shadow_root_role
from mmu.kvm.shadow import ShadowMMU, gpa_to_hpa

GVA = 0x4000_0000
GPA = 0x1_0000_0000


def build(mib: int, check: bool) -> tuple[int, float, float, ShadowMMU]:
    pages = mib * 256
    mem = GuestMemory()
    b = PageTableBuilder(mem, "4-level")
    t0 = time.perf_counter()
    b.map(GVA, GPA, pages * 4096, writable=True, user=True, dirty=True)
    t_guest = time.perf_counter() - t0
    regs = b.regs()
    cpu = cpu_role(regs)
    mmu = ShadowMMU(mem)
    root, _, _ = mmu.alloc_shadow_roots(cpu, shadow_root_role(cpu), regs.cr3)
    t0 = time.perf_counter()
    n = mmu.prefault(root, regs, cpu, GVA, pages * 4096, "write", 3)
    t_shadow = time.perf_counter() - t0
    assert n == pages, (n, pages)
    if check:
        for i in range(pages):
            t = mmu.translate(root, GVA + i * 4096)
            assert t is not None and t.hpa == gpa_to_hpa(GPA + i * 4096), i
    return pages, t_guest, t_shadow, mmu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small-mib", type=int, default=128)
    ap.add_argument("--large-mib", type=int, default=1024)
    ap.add_argument("--check", action="store_true", help="translate every page afterwards")
    ap.add_argument("--repeat", type=int, default=3,
                    help="builds per size; the fastest counts (a shared machine is noisy)")
    args = ap.parse_args()
    rates = []
    for mib in (args.small_mib, args.large_mib):
        runs = [build(mib, args.check) for _ in range(max(1, args.repeat))]
        pages, tg, ts, mmu = min(runs, key=lambda r: r[2])
        rate = pages / ts
        rates.append(rate)
        print(f"{mib:5d} MiB  {pages:7d} pages  guest tables {tg:6.2f} s  shadow build {ts:6.2f} s"
              f"  {rate:9.0f} pages/s  {len(mmu.hash):5d} shadow pages"
              f"  ({mmu.stats['sps_created']} created)")
    print(f"ratio pages/s small/large = {rates[0] / rates[1]:.3f} (1.0 = linear; "
          f"best of {max(1, args.repeat)} builds per size)")


if __name__ == "__main__":
    main()
