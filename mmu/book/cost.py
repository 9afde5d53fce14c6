"""A cycle-cost model: vCPU counters (:mod:`mmu.kvm.vcpu`) x documented constants -> time.

The model only prices what the vCPU model counts -- VM exits, ``kvm_init_mmu`` runs,
root (re)loads, roots built from scratch, fast PGD switches -- plus the guest's own work
per unit of a workload.  It is meant to reproduce the *shape* of the published numbers
(facts §4 and §9): which change helps which MMU, and by roughly how much.  It is not a
simulator of a CPU.

Every constant below says where it comes from:

* **calibrated** -- fitted to one published figure, named; that figure then cannot be
  used as evidence for the model;
* **assumed** -- a round number chosen by us, with the reason; UNVERIFIED;
* everything else published is **held out**: :data:`PUBLISHED_VMEXIT`,
  :data:`PUBLISHED_SSDD` and :func:`ssdd_changes` compare the model with them.

Calibration, in order (the arithmetic is in :func:`_calibrate`, run at import):

1. Paolo Bonzini's ``vmexit.flat`` CR0.WP cycles (facts §4; units presumed cycles --
   UNVERIFIED): legacy/TDP "after" (4,879, TDP column) = exit + ``kvm_init_mmu`` ->
   ``VMEXIT_CR`` (with ``MMU_INIT`` assumed); legacy "before" (5,096) - 4,879 = one root
   unload + reload with a hash hit -> ``ROOT_LOAD``; TDP "before" (46,754) - 5,096 = one TDP
   root torn down and rebuilt for vmexit.flat's working set -> ``ROOT_REBUILD['vmexit']``.
   Held out: both shadow figures (5,150 and 5,006).
2. Mathias Krause's ``ssdd 10 50000`` seconds, Intel, v4 cover row (kvm-x86/next@d8708b,
   facts §9): legacy + patches 4-6 (3.51 s) = guest work alone -> ``GUEST_ROUND_TRIP``;
   legacy + patches 1-3 (5.39 s) - 3.51 s = exits + inits of all CR0.WP toggles ->
   toggles per round trip (:data:`mmu.book.workloads.KERNEXEC_WP_PAIRS`); legacy (8.43 s) -
   5.39 s = the unload + reload (+ TLB refill) of those toggles -> ``TLB_REFILL['ssdd']``;
   shadow + patches 4-6 (67.8 s) -> ``SHADOW_EXTRA`` (shadow paging's own per-round-trip
   overhead, which none of the patches touch).
3. v5.15.106 TDP (66.1 s) - v5.15.106 legacy (9.94 s) = TDP roots rebuilt because 5.15's
   TDP root role holds CR0.WP -> ``ROOT_REBUILD['ssdd']`` (one rebuild per KERNEXEC window
   with the guest's other vCPU holding the WP=1 root).
   Held out: every other row of the table and every "+ patches" change.

``CLOCK_HZ`` (3.0 GHz) is assumed: Mathias's host CPU is not in the fact sheet.  It only
converts seconds to cycles; a different clock changes the fitted toggles per round trip,
not the ratios.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Mapping

from mmu.kvm.eras import Era, era
from mmu.book.workloads import KERNEXEC_WP_PAIRS, SSDD_ROUND_TRIPS, RunResult, Workload, run, ssdd, \
    vmexit_cr0_wp

__all__ = ["Constant", "CONSTANTS", "CLOCK_HZ", "PUBLISHED_VMEXIT", "PUBLISHED_SSDD",
           "SSDD_CONFIGS", "NOISE", "cycles", "breakdown", "vmexit_cycles_per_toggle",
           "ssdd_seconds", "ssdd_changes", "vmexit_ratios", "Change", "run_on"]


@dataclasses.dataclass(frozen=True)
class Constant:
    name: str
    value: float
    unit: str
    status: str        # "calibrated on ...", "assumed: ...", "derived: ..."


#: Paolo's vmexit.flat CR0.WP numbers, [ROOTS-v2-18] via facts §4 (cycles per toggle, units
#: presumed): {column: (before, after)}.
PUBLISHED_VMEXIT: Mapping[str, tuple[int, int]] = {
    "tdp": (46754, 4879), "legacy": (5096, 4875), "shadow": (5150, 5006)}

#: Mathias's ssdd seconds, Intel (facts §9): {row: (legacy, tdp, shadow)}; None = not given.
PUBLISHED_SSDD: Mapping[str, tuple] = {
    "kvm.git/queue": (11.55, 13.91, 75.2),
    "kvm.git/queue + patches 1-3": (7.32, 7.31, 74.6),
    "kvm.git/queue + patches 4-6": (4.89, 4.89, 73.4),
    "kvm-x86/next@d8708b": (8.43, 9.45, 70.3),
    "kvm-x86/next@d8708b + patches 1-3": (5.39, 5.63, 70.2),
    "kvm-x86/next@d8708b + patches 4-6": (3.51, 3.47, 67.8),
    "v5.15.106": (9.94, 66.1, 64.9),
    "v5.15.106 + patches": (4.81, 4.79, 64.6),
    "v6.1.23": (7.65, 8.23, 68.7),
    "v6.1.23 + patches": (3.36, 3.36, 69.1),
    "v6.2.10": (7.61, 7.98, 68.6),
    "v6.2.10 + patches": (3.37, 3.41, 70.2),
    "v6.3.1": (7.60, 8.29, None),
    "v6.3.1 + patches": (3.39, 3.39, None),
    "v6.3.2": (7.82, 7.81, None),
    "v6.3.2 + patches": (3.38, 3.38, None),
}
COLUMNS = ("legacy", "tdp", "shadow")

_NO_UNLOAD = dict(cr0_wp_tdp_no_unload=True)
_V3_ALL = dict(cr0_wp_tdp_no_unload=True, ignore_wp_nonpaging=True, cr0_wp_guest_owned=True,
               wp_refresh_in_permission_fault=True)
#: The stable backport: 5 patches, without e40bcf9f3a18 (facts §3.2).
_STABLE = dict(cr0_wp_tdp_no_unload=True, cr0_wp_guest_owned=True,
               wp_refresh_in_permission_fault=True)

#: Which era each published row runs.  The development trees of Jan/Mar 2023 behave like
#: 6.1 for every flag we model (UNVERIFIED for tdp_root_preserved on kvm-x86/next@d8708b);
#: 5.15.106 has the EFER.LME fix from stable; 6.3.2 has the TDP-root-preservation backport.
SSDD_CONFIGS: Mapping[str, Era] = {
    "kvm.git/queue": era("6.1"),
    "kvm.git/queue + patches 1-3": era("6.1", **_NO_UNLOAD),
    "kvm.git/queue + patches 4-6": era("6.1", **_V3_ALL),
    "kvm-x86/next@d8708b": era("6.1"),
    "kvm-x86/next@d8708b + patches 1-3": era("6.1", **_NO_UNLOAD),
    "kvm-x86/next@d8708b + patches 4-6": era("6.1", **_V3_ALL),
    "v5.15.106": era("5.15", efer_lme_resets=True),
    "v5.15.106 + patches": era("5.15", efer_lme_resets=True, **_STABLE),
    "v6.1.23": era("6.1"),
    "v6.1.23 + patches": era("6.1", **_STABLE),
    "v6.2.10": era("6.1"),
    "v6.2.10 + patches": era("6.1", **_STABLE),
    "v6.3.1": era("6.1"),
    "v6.3.1 + patches": era("6.1", **_STABLE),
    "v6.3.2": era("6.1", tdp_root_preserved=True),
    "v6.3.2 + patches": era("6.1", tdp_root_preserved=True, **_STABLE),
}

#: A published change smaller than this (relative) is treated as measurement noise
#: ("no change"), e.g. shadow 68.7 -> 69.1 s.
NOISE = 0.05

CLOCK_HZ = 3.0e9
_C: dict[str, Constant] = {}


def _const(name: str, value: float, unit: str, status: str) -> float:
    _C[name] = Constant(name, value, unit, status)
    return value


# -- constants that are assumed ---------------------------------------------------------------
_const("CLOCK_HZ", CLOCK_HZ, "Hz", "assumed: host clock of the ssdd runs (not published)")
MMU_INIT = _const("MMU_INIT", 300, "cycles",
                  "assumed: a kvm_init_mmu that rebuilds the context (role computation, "
                  "16-entry permission bitmap, PKRU mask, reserved-bit masks)")
MMU_INIT_EARLY = _const("MMU_INIT_EARLY", 50, "cycles",
                        "assumed: kvm_init_mmu returning early (two role computations and "
                        "compares)")
FAST_SWITCH = _const("FAST_SWITCH", 100, "cycles",
                     "assumed: fast_pgd_switch over current + 3 prev_roots (a few compares "
                     "and swaps)")
RETPOLINE = _const("RETPOLINE", 30, "cycles",
                   "assumed: one retpolined indirect call (mmu->get_guest_pgd on each root "
                   "load and PGD switch, 2fdcc1b32418 removes it); < 0.1% of any result here")

# -- constants calibrated on Paolo's vmexit.flat figures ------------------------------------------
_TDP_BEFORE, _TDP_AFTER = PUBLISHED_VMEXIT["tdp"]
_LEGACY_BEFORE = PUBLISHED_VMEXIT["legacy"][0]
VMEXIT_CR = _const("VMEXIT_CR", _TDP_AFTER - MMU_INIT, "cycles",
                   "calibrated on Paolo's TDP 'after' (4879) = exit + kvm_init_mmu")
ROOT_LOAD = _const("ROOT_LOAD", _LEGACY_BEFORE - _TDP_AFTER - RETPOLINE, "cycles",
                   "calibrated on Paolo's legacy 'before' - 'after' (5096 - 4879): free a "
                   "root at unload, find it again at kvm_mmu_load (hash hit), minus RETPOLINE")
ROOT_REBUILD = {
    "vmexit": _const("ROOT_REBUILD[vmexit]", _TDP_BEFORE - _LEGACY_BEFORE, "cycles",
                     "calibrated on Paolo's TDP 'before' - legacy 'before' (46754 - 5096): a "
                     "TDP root freed and rebuilt for vmexit.flat's few pages"),
}
TLB_REFILL = {"vmexit": _const("TLB_REFILL[vmexit]", 0, "cycles",
                               "assumed: vmexit.flat's working set is a few pages; its "
                               "refill is inside ROOT_LOAD")}

# -- constants calibrated on Mathias's ssdd table --------------------------------------------------
_V4 = "kvm-x86/next@d8708b"
_s2c = CLOCK_HZ / SSDD_ROUND_TRIPS      # seconds of a full run -> cycles per round trip
GUEST_ROUND_TRIP = {"ssdd": _const(
    "GUEST_ROUND_TRIP[ssdd]", PUBLISHED_SSDD[_V4 + " + patches 4-6"][0] * _s2c, "cycles",
    "calibrated on v4 legacy + patches 4-6 (3.51 s): no exit is left, so this is the guest's "
    "own work per ptrace/signal round trip")}
_toggles = 2 * KERNEXEC_WP_PAIRS       # CR0 writes per round trip
_const("KERNEXEC_WP_PAIRS", KERNEXEC_WP_PAIRS, "pairs/round trip",
       "calibrated on v4 legacy + patches 1-3 - + patches 4-6 (5.39 - 3.51 s) / (VMEXIT_CR + "
       f"MMU_INIT): {(PUBLISHED_SSDD[_V4 + ' + patches 1-3'][0] - PUBLISHED_SSDD[_V4 + ' + patches 4-6'][0]) * _s2c / (2 * (VMEXIT_CR + MMU_INIT)):.3f}")
TLB_REFILL["ssdd"] = _const(
    "TLB_REFILL[ssdd]",
    (PUBLISHED_SSDD[_V4][0] - PUBLISHED_SSDD[_V4 + " + patches 1-3"][0]) * _s2c / _toggles
    - ROOT_LOAD - RETPOLINE, "cycles",
    "calibrated on v4 legacy - legacy + patches 1-3 (8.43 - 5.39 s): per reset, refilling "
    "the TLB that kvm_mmu_load flushes, for a real kernel's working set")
ROOT_REBUILD["ssdd"] = _const(
    "ROOT_REBUILD[ssdd]",
    (PUBLISHED_SSDD["v5.15.106"][1] - PUBLISHED_SSDD["v5.15.106"][0]) * _s2c / KERNEXEC_WP_PAIRS,
    "cycles",
    "calibrated on v5.15.106 TDP - legacy (66.1 - 9.94 s), one rebuild per KERNEXEC window: "
    "EPT violations re-mapping a guest kernel's working set into a fresh root")
SHADOW_EXTRA = {"ssdd": 0.0}          # set by _calibrate_shadow() below

CONSTANTS: Mapping[str, Constant] = _C


# -- the model ------------------------------------------------------------------------------------
def _wl_key(name: str) -> str:
    return "ssdd" if name.startswith("ssdd") else "vmexit"


def breakdown(result: RunResult, workload: str, kind: str) -> dict[str, float]:
    """Cycles by cause for a run's counters (``workload`` "ssdd..." or "vmexit...")."""
    s, w = result.stats, result.work
    key = _wl_key(workload)
    early = s.get("init_early_returns", 0)
    out = {
        "vm exits": s.get("vm_exits", 0) * VMEXIT_CR,
        "kvm_init_mmu": (s.get("mmu_inits", 0) - early) * MMU_INIT + early * MMU_INIT_EARLY,
        "root loads": s.get("mmu_loads", 0) * (ROOT_LOAD + RETPOLINE),
        "TLB refill": s.get("mmu_loads", 0) * TLB_REFILL[key],
        "root rebuilds": s.get("roots_created", 0) * ROOT_REBUILD[key],
        "PGD switches": s.get("new_pgd_calls", 0) * (FAST_SWITCH + RETPOLINE),
        "guest work": w.get("round_trip", 0) * GUEST_ROUND_TRIP.get(key, 0.0),
    }
    if kind == "shadow":
        out["shadow paging"] = w.get("round_trip", 0) * SHADOW_EXTRA.get(key, 0.0)
    return out


def cycles(result: RunResult, workload: str, kind: str) -> float:
    return sum(breakdown(result, workload, kind).values())


def run_on(workload: Workload, kernel: "str | Era", kind: str, vendor: str = "intel"
           ) -> RunResult:
    """Run ``workload`` on fresh vCPUs of one VM (events off, to stay fast)."""
    from mmu.kvm.vcpu import VCpu
    v = VCpu(kernel=kernel, mmu=kind, vendor=vendor, max_events=0)
    vcpus = [v] + [v.sibling() for _ in range(workload.n_cpus - 1)]
    return run(workload, vcpus)


@functools.lru_cache(maxsize=None)
def _ssdd_run(kernel: Era, kind: str, vendor: str, seed: int, sample: int) -> RunResult:
    return run_on(ssdd(seed, sample=sample), kernel, kind, vendor)


def ssdd_seconds(kernel: "str | Era", kind: str, vendor: str = "intel", *, seed: int = 0,
                 sample: int = 400) -> float:
    """Model time of ``ssdd 10 50000`` (seconds) on ``kernel`` with MMU ``kind``."""
    e = era(kernel) if isinstance(kernel, str) else kernel
    return cycles(_ssdd_run(e, kind, vendor, seed, sample), "ssdd", kind) / CLOCK_HZ


def vmexit_cycles_per_toggle(kernel: "str | Era", kind: str, vendor: str = "intel") -> float:
    wl = vmexit_cr0_wp()
    res = run_on(wl, kernel, kind, vendor)
    return cycles(res, wl.name, kind) / res.work["toggle"]


#: Paolo's "before" = kvm/queue of Feb 2022 (pre-split, like 5.18); "after" = his unmerged
#: series, which stops reset_context from unloading.  For TDP and legacy that is what
#: 01b31714bd90 later did for CR0.WP, so "after" = 5.18 + cr0_wp_tdp_no_unload.  For shadow
#: paging no era flag expresses the unmerged series (WP is in the shadow root role, so it
#: still resets): the model's shadow "after" equals "before".
VMEXIT_CONFIGS = {"before": era("5.18"), "after": era("5.18", cr0_wp_tdp_no_unload=True)}


def vmexit_ratios(vendor: str = "intel") -> dict[str, tuple[float, float, float]]:
    """{column: (model before/after, published before/after, model / published)}."""
    out = {}
    for kind, (pb, pa) in PUBLISHED_VMEXIT.items():
        mb = vmexit_cycles_per_toggle(VMEXIT_CONFIGS["before"], kind, vendor)
        ma = vmexit_cycles_per_toggle(VMEXIT_CONFIGS["after"], kind, vendor)
        out[kind] = (mb / ma, pb / pa, (mb / ma) / (pb / pa))
    return out


def _calibrate_shadow() -> None:
    row = _V4 + " + patches 4-6"
    SHADOW_EXTRA["ssdd"] = 0.0
    rest = ssdd_seconds(SSDD_CONFIGS[row], "shadow") * CLOCK_HZ
    SHADOW_EXTRA["ssdd"] = (PUBLISHED_SSDD[row][2] * CLOCK_HZ - rest) / SSDD_ROUND_TRIPS
    _const("SHADOW_EXTRA[ssdd]", SHADOW_EXTRA["ssdd"], "cycles",
           "calibrated on v4 shadow + patches 4-6 (67.8 s): shadow paging's own cost per round "
           "trip (guest page-table write protection, INVLPG, fault handling) beyond the CR0/CR3 "
           "exits the model counts")


@dataclasses.dataclass(frozen=True)
class Change:
    """One published change (row -> row with patches) in one column, beside the model."""

    before: str
    after: str
    column: str
    published: tuple[float, float]
    model: tuple[float, float]

    @staticmethod
    def _direction(a: float, b: float) -> str:
        r = b / a
        if abs(r - 1) < NOISE:
            return "no change"
        return "faster" if r < 1 else "slower"

    @property
    def published_ratio(self) -> float:
        return self.published[0] / self.published[1]

    @property
    def model_ratio(self) -> float:
        return self.model[0] / self.model[1]

    @property
    def published_direction(self) -> str:
        return self._direction(*self.published)

    @property
    def model_direction(self) -> str:
        return self._direction(*self.model)

    @property
    def ratio_error(self) -> float:
        """max(model/published, published/model) of the before/after ratios (>= 1)."""
        q = self.model_ratio / self.published_ratio
        return max(q, 1 / q)


def _pairs() -> list[tuple[str, str]]:
    rows = list(PUBLISHED_SSDD)
    out = []
    for i, r in enumerate(rows[:-1]):
        nxt = rows[i + 1]
        if nxt.startswith(r.split(" + ")[0]) and nxt != r and " + " in nxt:
            out.append((r, nxt))
    return out


def ssdd_changes(vendor: str = "intel") -> list[Change]:
    """Every published "+ patches" step, per column, with the model beside it."""
    out = []
    for before, after in _pairs():
        for c, kind in enumerate(COLUMNS):
            pb, pa = PUBLISHED_SSDD[before][c], PUBLISHED_SSDD[after][c]
            if pb is None or pa is None:
                continue
            mb = ssdd_seconds(SSDD_CONFIGS[before], kind, vendor)
            ma = ssdd_seconds(SSDD_CONFIGS[after], kind, vendor)
            out.append(Change(before, after, kind, (pb, pa), (mb, ma)))
    return out


_calibrate_shadow()
