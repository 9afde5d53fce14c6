"""How long one role-explorer callback takes (target: p95 <= 10 ms).

Flips every checkbox and dropdown of a RoleExplorer many times, in a seeded random
order, the way a reader clicks: each flip runs the widget's observe callback
(explore() on the vCPU model + render() + setting the HTML value).  Prints
p50 / p95 / max in milliseconds; no assertion (see docs/notebooks.md).

    .venv/bin/python benchmarks/explorer.py [flips]
"""
from __future__ import annotations

import random
import statistics
import sys
import time

from mmu.book.views.roles_view import KERNELS, VENDORS
from mmu.book.widgets import RoleExplorer


def main(flips: int = 2000, seed: int = 5) -> None:
    rng = random.Random(seed)
    ex = RoleExplorer()
    controls = [(w, None) for w in ex.checkboxes.values()] + [
        (ex.dropdowns["kernel"], KERNELS), (ex.dropdowns["vendor"], VENDORS)]
    times, outcomes = [], {}
    for _ in range(flips):
        w, choices = rng.choice(controls)
        value = (not w.value) if choices is None else rng.choice(
            [c for c in choices if c != w.value])
        t = time.perf_counter()
        w.value = value                      # fires RoleExplorer._on_change
        times.append((time.perf_counter() - t) * 1e3)
        outcomes[ex.result.outcome] = outcomes.get(ex.result.outcome, 0) + 1
    times.sort()
    p = lambda q: times[min(len(times) - 1, int(q * len(times)))]
    print(f"role explorer callback over {flips} flips (seed {seed}): "
          f"p50 {p(0.50):.2f} ms, p95 {p(0.95):.2f} ms, max {times[-1]:.2f} ms, "
          f"mean {statistics.fmean(times):.2f} ms")
    print("outcomes:", ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
