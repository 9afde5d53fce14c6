"""The CR0.WP cost model beside the published figures, row by row, with ratios.

    .venv/bin/python benchmarks/cr0_wp_cost.py

Prints (1) Paolo Bonzini's vmexit.flat cycles per CR0.WP toggle (facts §4) and the model's,
(2) Mathias Krause's ssdd 10 50000 seconds (facts §9) and the model's, (3) every
"+ patches" change with its direction and before/after ratio, (4) the constants and where
each comes from.  Which figures are calibrated and which are held out: see mmu/book/cost.py.
"""
from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from mmu.book import cost  # noqa: E402


def main() -> None:
    print("== vmexit.flat: cycles per CR0.WP toggle (Paolo, [ROOTS-v2-18]) ==")
    print(f"{'column':8s} {'pub before':>10s} {'pub after':>10s} {'model before':>12s} "
          f"{'model after':>11s} {'pub ratio':>9s} {'model ratio':>11s} {'model/pub':>9s}")
    for kind, (pb, pa) in cost.PUBLISHED_VMEXIT.items():
        mb = cost.vmexit_cycles_per_toggle(cost.VMEXIT_CONFIGS["before"], kind)
        ma = cost.vmexit_cycles_per_toggle(cost.VMEXIT_CONFIGS["after"], kind)
        print(f"{kind:8s} {pb:10d} {pa:10d} {mb:12.0f} {ma:11.0f} {pb / pa:9.2f} "
              f"{mb / ma:11.2f} {(mb / ma) / (pb / pa):9.2f}")
    print("  calibrated: tdp before, tdp after, legacy before; held out: legacy after, shadow")

    print("\n== ssdd 10 50000, seconds, Intel (Mathias, facts §9) ==")
    print(f"{'row':36s} " + " ".join(f"{c + ' pub':>11s} {c + ' model':>12s}"
                                     for c in cost.COLUMNS))
    for row, pub in cost.PUBLISHED_SSDD.items():
        cells = []
        for i, kind in enumerate(cost.COLUMNS):
            m = cost.ssdd_seconds(cost.SSDD_CONFIGS[row], kind)
            p = "-" if pub[i] is None else f"{pub[i]:.2f}"
            cells.append(f"{p:>11s} {m:12.2f}")
        print(f"{row:36s} " + " ".join(cells))
    print("  calibrated: v4 legacy (all three rows), v4 shadow + patches 4-6, v5.15.106 legacy "
          "and TDP; everything else held out")

    print("\n== every '+ patches' change: direction and before/after ratio ==")
    worst = 1.0
    for ch in cost.ssdd_changes():
        ok = ch.model_direction == ch.published_direction and (
            ch.published_direction == "no change" or ch.ratio_error <= 1.5)
        if ch.published_direction != "no change":
            worst = max(worst, ch.ratio_error)
        print(f"{ch.before:34s} -> +patches {ch.column:7s} pub {ch.published_ratio:6.2f}x "
              f"({ch.published_direction:9s}) model {ch.model_ratio:6.2f}x "
              f"({ch.model_direction:9s}) {'ok' if ok else 'MISMATCH'}")
    print(f"  worst ratio error over real changes: {worst:.2f}x (acceptance: <= 1.5x)")

    print("\n== AMD (no WP pass-through, facts §3.3): model only ==")
    for label in ("kvm-x86/next@d8708b", "kvm-x86/next@d8708b + patches 1-3",
                  "kvm-x86/next@d8708b + patches 4-6"):
        t = cost.ssdd_seconds(cost.SSDD_CONFIGS[label], "tdp", "amd")
        print(f"{label:36s} tdp {t:6.2f} s")

    print("\n== constants ==")
    for c in cost.CONSTANTS.values():
        print(f"{c.name:24s} {c.value:14.1f} {c.unit:18s} {c.status}")


if __name__ == "__main__":
    main()
