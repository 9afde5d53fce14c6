"""Differential test: the model's walker (``mmu.walk``) against QEMU's MMU via Unicorn.

Seeded random cases (tests/oracle/cases.py) cover 32-bit (with PSE 4 MiB / PSE-36),
PAE, 4-level and 5-level paging with random entry bits at every level, CR0.WP,
CR4.PSE/SMEP/SMAP/PKE, EFER.NXE, RFLAGS.AC, PKRU, CPL 0/3 and read/write/fetch.  The
oracle's CPU has MAXPHYADDR = 40, so the model runs with ``maxphyaddr=40``.

Compared for every case, where the SDM fixes the answer:

* fault or not, the vector, the #PF error code and CR2, the GPA of a success;
* the paging-structure entries read: the model's trace (which ends with the entry
  where a faulting walk stopped), against the physical addresses QEMU read, in order;
* all of guest memory afterwards, which pins the A/D bits: on a successful walk A in
  every entry used and D in the leaf of a write (SDM 4.8), nothing else; on a faulting
  walk the leaf gains neither A nor D, and D appears nowhere.  Two relaxations, both
  QEMU departures from the SDM named in ``oracle.unicorn_oracle.QUIRKS``:
  ``upper_level_A_set_on_fault`` (A of the non-leaf entries of a faulting walk is not
  compared) and ``1G_leaf_A_set_on_fault`` (A of a 1 GiB leaf PDPTE on a faulting
  walk is not compared).  ``PAE_PDPTE_checked_at_access`` is avoided by generation:
  present PAE PDPTEs carry no reserved bits.

The default run is 5,000 cases (1,250 per mode); ``MMU_DIFF_CASES=N`` raises it and
``MMU_DIFF_SEED`` changes the stream.  Each mode is one looping test function that
reports every mismatch with a minimal description of the case.
"""
from __future__ import annotations

import collections
import os

import pytest

pytest.importorskip("unicorn")

import mmu  # noqa: E402
from mmu import GuestMemory, PagingMode  # noqa: E402
from oracle.cases import A, MODES, Case, entry_size, generate  # noqa: E402
from oracle.unicorn_oracle import ORACLE_MAXPHYADDR, QUIRKS, HarnessError, run_access  # noqa: E402

pytestmark = pytest.mark.differential

CASES = int(os.environ.get("MMU_DIFF_CASES", "5000"))
SEED = int(os.environ.get("MMU_DIFF_SEED", "20240607"))
#: Mismatches described in full in a failure message (all are counted).
SHOWN = 12

#: Relaxations applied by ``_normalise``; each must name a documented quirk.
RELAXED = ("upper_level_A_set_on_fault", "1G_leaf_A_set_on_fault")
assert all(q in QUIRKS for q in RELAXED)


def _outcome(vector, error_code) -> str:
    if vector is None:
        return "ok"
    return "#GP" if vector == 13 else f"#PF {error_code:#x}"


def _normalise(case: Case, faulted: bool, *mems: GuestMemory) -> None:
    """Give the bits the SDM leaves open their original value in every memory."""
    if not faulted:
        return
    *upper, last = case.path
    loose = list(upper)                                   # upper_level_A_set_on_fault
    if last.leaf and last.level == 3 and case.mode >= PagingMode.LEVEL4:
        loose.append(last)                                # 1G_leaf_A_set_on_fault
    for e in loose:
        original = e.value & A
        for m in mems:
            byte = m.read_u8(e.addr)
            m.write_u8(e.addr, (byte & ~A) | original)


def _entries_read(case: Case, reads: tuple[int, ...]) -> list[int]:
    """Entry addresses from QEMU's (4-byte-piece) reads, in order, each once."""
    out: list[int] = []
    for addr in reads:
        a = addr & ~(entry_size(case.mode) - 1)
        if not out or out[-1] != a:
            out.append(a)
    return out


def compare(case: Case) -> tuple[str, list[str]]:
    """Run both sides on ``case``; return (oracle outcome, list of disagreements)."""
    oracle = run_access(case.mem, case.regs, case.gva, case.access, case.cpl)
    model_mem = case.mem.copy()
    model = mmu.walk(model_mem, case.regs, case.gva, case.access, case.cpl,
                     maxphyaddr=ORACLE_MAXPHYADDR)
    f = model.fault
    problems = []
    want = _outcome(oracle.vector, oracle.error_code)
    got = _outcome(f.vector, f.error_code) if f else "ok"
    if want != got:
        problems.append(f"outcome: QEMU {want}, model {got}"
                        + (f" ({f.reason})" if f else f" gpa={model.gpa:#x}"))
    elif f is None and model.gpa != oracle.gpa:
        problems.append(f"gpa: QEMU {oracle.gpa:#x}, model {model.gpa:#x}")
    elif f is not None and f.vector == 14 and f.addr != oracle.cr2:
        problems.append(f"CR2: QEMU {oracle.cr2:#x}, model {f.addr:#x}")
    read_q = _entries_read(case, oracle.walk_reads)
    # The model's trace includes the entry a faulting walk stopped at (TraceStep.stop).
    read_m = [s.entry_addr for s in model.trace]
    if read_q != read_m:
        problems.append(f"entries read: QEMU {[hex(a) for a in read_q]}, "
                        f"model {[hex(a) for a in read_m]}")
    oracle_mem = oracle.memory_after.copy()
    _normalise(case, oracle.vector is not None, oracle_mem, model_mem)
    if oracle_mem != model_mem:
        size = entry_size(case.mode)
        diffs = []
        for e in case.path:
            q = int.from_bytes(oracle_mem.read(e.addr, size), "little")
            m = int.from_bytes(model_mem.read(e.addr, size), "little")
            if q != m:
                diffs.append(f"{e.name}@{e.addr:#x}: was {e.value:#x}, QEMU {q:#x}, model {m:#x}")
        problems.append("memory after (A/D): " + ("; ".join(diffs) or "differs outside the walk"))
    return want, problems


@pytest.mark.parametrize("mode", MODES, ids=[m.label for m in MODES])
def test_walker_matches_qemu(mode):
    per_mode = -(-CASES // len(MODES))
    first = MODES.index(mode)
    outcomes: collections.Counter[str] = collections.Counter()
    failures: list[str] = []
    for k in range(per_mode):
        case = generate(SEED, first + k * len(MODES))
        assert case.mode == mode
        try:
            outcome, problems = compare(case)
        except HarnessError as e:          # the generator must only make oracle-able cases
            outcome, problems = "harness", [f"HarnessError: {e}"]
        outcomes[outcome] += 1
        if problems:
            failures.append(case.describe() + "".join(f"\n  -> {p}" for p in problems))
    summary = ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items(), key=lambda kv: -kv[1]))
    print(f"\n{mode.label}: {per_mode} cases, {len(failures)} mismatches; {summary}")
    assert not failures, (f"{len(failures)} of {per_mode} {mode.label} cases disagree "
                          f"(first {min(len(failures), SHOWN)} shown):\n"
                          + "\n".join(failures[:SHOWN]))


def test_case_stream_is_reproducible_and_covers_the_space():
    """The generator is seeded (same seed, same case) and actually reaches the corners
    the differential test claims to cover; a cheap check, no oracle involved."""
    a, b = generate(SEED, 17), generate(SEED, 17)
    assert (a.regs, a.gva, a.path, a.access, a.cpl) == (b.regs, b.gva, b.path, b.access, b.cpl)
    assert a.mem == b.mem
    seen = collections.Counter()
    for i in range(800):
        c = generate(SEED, i)
        r, last = c.regs, c.path[-1]
        seen[c.mode] += 1
        seen["cpl3"] += c.cpl == 3
        seen[c.access] += 1
        for flag in ("wp", "smep", "smap", "pke", "nx", "ac"):
            seen[flag] += getattr(r, flag)
        seen["not present"] += not last.value & 1
        seen["large leaf"] += last.leaf and last.level > 1
        seen["1G leaf"] += last.leaf and last.level == 3
        seen["4M leaf"] += last.leaf and last.level == 2 and c.mode == PagingMode.BIT32
        seen["bits >= 40"] += any(e.value >> ORACLE_MAXPHYADDR & 0xFFF and c.mode != PagingMode.PAE
                                  for e in c.path)
        seen["xd"] += any(e.value >> 63 for e in c.path)
    for key in (*MODES, "cpl3", "read", "write", "fetch", "wp", "smep", "smap", "pke", "nx",
                "ac", "not present", "large leaf", "1G leaf", "4M leaf", "bits >= 40", "xd"):
        assert seen[key] >= 10, (key, seen[key])


def _mutants():
    """Wrong walkers the comparison must catch (each a plausible bug)."""
    real = mmu.walk

    def no_ad(mem, regs, gva, access, cpl, **kw):           # forgets A/D write-back
        return real(mem, regs, gva, access, cpl, **kw, set_ad=False)

    def wide_phys(mem, regs, gva, access, cpl, **kw):       # reserved bits from bit 52 only
        return real(mem, regs, gva, access, cpl, **{**kw, "maxphyaddr": 52})

    def no_wp(mem, regs, gva, access, cpl, **kw):           # ignores CR0.WP
        return real(mem, regs.replace(cr0=regs.cr0 & ~mmu.CR0.WP), gva, access, cpl, **kw)

    def ad_on_fault(mem, regs, gva, access, cpl, **kw):     # sets leaf A/D even on faults
        res = real(mem, regs, gva, access, cpl, **kw)
        if res.fault is not None and res.trace and res.trace[-1].leaf:
            step = res.trace[-1]
            mem.write_u8(step.entry_addr, mem.read_u8(step.entry_addr) | A)
        return res
    return {"no_ad": no_ad, "wide_phys": wide_phys, "no_wp": no_wp, "ad_on_fault": ad_on_fault}


@pytest.mark.parametrize("name", sorted(_mutants()))
def test_comparison_catches_a_wrong_walker(name, monkeypatch):
    """The differential comparison can fail: each deliberately broken walker is caught
    within the first 400 cases of the stream."""
    monkeypatch.setattr(mmu, "walk", _mutants()[name])
    caught = 0
    for i in range(400):
        caught += bool(compare(generate(SEED, i))[1])
        if caught:
            break
    assert caught, f"mutant {name} went unnoticed"
