"""Property tests: no sequence of guest operations can corrupt a vCPU's MMU state.

Random operation sequences (hypothesis, derandomized) run on a :class:`mmu.kvm.vcpu.VCpu` of
every era x MMU kind x vendor: CR0/CR3/CR4/EFER writes with random values (many of them
architecturally invalid), bit toggles, the boot helpers, SMI/RSM, ``kvm_smm_changed``,
nested entry/exit, far jumps, emulated permission checks and calls with bad arguments.
After every operation and re-entry (``vcpu_enter_guest`` -> ``kvm_mmu_reload``) the
invariants below are checked.  Expected values come from the role builders applied to the
live registers (facts §2.2/§2.3), the early-return and staleness rules (§2, §3.3) and the
root-cache rules (§5), never from the vCPU's own bookkeeping.

(a) a write that #GPs leaves registers, roles, root, prev_roots, the VM's root references
    and every counter except ``vm_exits``/``gp_faults`` unchanged;
(b) the stored cpu_role is ``kvm_calc_cpu_role`` of the live registers, except for exactly
    the staleness the kernel has (6.4, VMX with EPT, a guest-owned CR0.WP toggle that did
    not exit, §3.3); the root role is the builder's for that CPU role;
(c) after re-entry the root is valid, its page has role word ``root_role.word``, and an
    indirect root shadows the live CR3;
(d) prev_roots: 3 slots, no two equal (pgd, hpa), none equal to the current root, none
    that ``is_root_usable`` could never accept (no shadow page, page gone, invalid bit);
(e) counters never decrease; every ``kvm_mmu_load`` event is one load, and its
    roots_created + roots_reused increment is the number of root-level pages it took
    (1, or 0..4 for the PAE special root: the model counts root-level pages, as
    tests/test_scenarios.py pins);
(f) only ValueError/TypeError escape, only for bad arguments or calls in the wrong state,
    and they leave the vCPU and its VM exactly as they were;
(g) a MOV to CR0 on SVM that does not exit found a CR0 without CD/NW (and, without NPT,
    with PG|WP) and changed only TS/MP (``svm_set_cr0``: otherwise the hardware CR0
    differs from the guest's and INTERCEPT_CR0_WRITE is on).

Operations the kernel can never perform are not generated.  The model bugs these
properties found are fixed; their minimal reproducers stay below as regression tests
(a new bug belongs there as a strict xfail until it is fixed).
"""
from __future__ import annotations

import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmu.kvm import legacy, roles
from mmu.kvm.eras import ERA_NAMES
from mmu.x86.regs import CR0, CR4, EFER
from mmu.kvm.root_cache import KVM_MMU_NUM_PREV_ROOTS
from mmu.kvm.vcpu import MMU_KINDS, VENDORS, VCpu

import vcpu_golden as golden

CONFIGS = [(k, m, vnd) for k in ERA_NAMES for m in MMU_KINDS for vnd in VENDORS]
MAXPHYADDR = 46
STEPS = 60
EXAMPLES = 25

# Guest memory (two PAE trees), the CR3 pool and the register bits: shared with the golden
# corpus (tests/vcpu_golden.py), whose sequences draw the same operations.
_memory, _pae_cr3s = golden.memory, golden.pae_cr3s
CR3_POOL, CR0_BITS, CR4_BITS, EFER_BITS = (golden.CR3_POOL, golden.CR0_BITS, golden.CR4_BITS,
                                           golden.EFER_BITS)
assert golden.MAXPHYADDR == MAXPHYADDR


def _value(bits: list[int], width: int) -> st.SearchStrategy[int]:
    """Mostly combinations of defined bits, sometimes reserved bits or any value."""
    combos = st.lists(st.sampled_from(bits), max_size=len(bits)).map(lambda bs: sum(set(bs)))
    return st.one_of(combos, combos,
                     st.tuples(combos, st.integers(0, width - 1)).map(lambda t: t[0] | 1 << t[1]),
                     st.integers(0, (1 << 64) - 1))


L2_SPECS = golden.L2_SPECS

BAD_CALLS = (
    ("set_cr0", ("0x11",), TypeError), ("set_cr0", (1.5,), TypeError),
    ("set_cr0", (None,), TypeError), ("set_cr0", (True,), TypeError),
    ("set_cr3", (-1,), ValueError), ("set_cr4", (1 << 64,), ValueError),
    ("set_efer", (1 << 64,), ValueError), ("set_cr4", ("1",), TypeError),
    ("kvm_smm_changed", (1,), TypeError), ("far_jump", (1,), TypeError),
    ("preview", (), ValueError),            # preview(cr2=0): unknown register name
)

OPS = st.one_of(
    st.tuples(st.just("cr0"), _value(CR0_BITS, 64)),
    st.tuples(st.just("cr0^"), st.sampled_from(CR0_BITS)),
    st.tuples(st.just("cr0^"), st.sampled_from([int(CR0.WP)])),      # the WP story, often
    st.tuples(st.just("cr4"), _value(CR4_BITS, 64)),
    st.tuples(st.just("cr4^"), st.sampled_from(CR4_BITS)),
    st.tuples(st.just("efer"), _value(EFER_BITS, 64)),
    st.tuples(st.just("efer^"), st.sampled_from(EFER_BITS)),
    st.tuples(st.just("cr3"), st.sampled_from(CR3_POOL)),
    # same frame, other PWT/PCD/PCID bits: a second pgd for the same root page
    st.tuples(st.just("cr3^"), st.sampled_from([0x8, 0x10, 0x18, 0x1])),
    st.tuples(st.just("boot_long"), st.booleans(), st.booleans(), st.booleans()),
    st.tuples(st.just("boot_prot"), st.booleans(), st.booleans(), st.booleans(),
              st.sampled_from(_pae_cr3s() + (0x1000,))),
    st.tuples(st.just("smi")), st.tuples(st.just("rsm")),
    st.tuples(st.just("smm_changed"), st.booleans()),
    st.tuples(st.just("vmenter"), st.sampled_from(L2_SPECS), st.sampled_from(CR3_POOL[:11])),
    st.tuples(st.just("vmexit")),
    st.tuples(st.just("far_jump"), st.booleans()),
    st.tuples(st.just("perm")),
    st.tuples(st.just("bad"), st.integers(0, len(BAD_CALLS) - 1)),
)


_l2_regs = golden.l2_regs


# -- state snapshots --------------------------------------------------------------------
def _vm_refs(v: VCpu) -> tuple:
    """Root references held in the VM: TDP roots and shadow pages' root_count."""
    tdp = () if v.vm.tdp is None else tuple(
        (r.hpa, r.refcount, r.freed, r.role.word) for r in v.vm.tdp.roots)
    sh = tuple(sorted((k, sp.root_count) for k, sp in v.vm.shadow.hash.items()))
    return tdp, sh


def _mmu_state(v: VCpu) -> tuple:
    return (v.regs, v.smm, v.guest_mode, v.cs_l, v.cpu_role, v.root_role, v.mmu_role, v.root,
            v.prev_roots, v._saved_smm, v._saved_l1, tuple(sorted(v._roots)), _vm_refs(v))


def _full_state(v: VCpu) -> tuple:
    return _mmu_state(v) + (v.step, len(v.events), tuple(sorted(v.stats.items())))


# -- the invariants -----------------------------------------------------------------------
def _wp_passthrough(v: VCpu) -> bool:
    """6.4 VMX with EPT: CR0.WP is guest-owned (fb509f76acc8, facts §3.3)."""
    return v.era.cr0_wp_guest_owned and v.vendor == "intel" and v.tdp_enabled


def check_roles(v: VCpu, wp_may_be_stale: bool) -> None:
    """(b): cpu_role fresh (or stale exactly as §3.3 allows); root role from the builder."""
    fresh = roles.cpu_role(v.regs, smm=v.smm, guest_mode=v.guest_mode)
    if v.cpu_role != fresh:
        assert _wp_passthrough(v) and wp_may_be_stale, (
            f"stale cpu_role without a guest-owned WP toggle: {v.cpu_role.diff(fresh)}")
        # Computed at the last kvm_init_mmu with the other CR0.WP value; perhaps since
        # refreshed by kvm_mmu_refresh_passthrough_bits, which rewrites only cr0_wp.
        other = roles.cpu_role(v.regs.replace(cr0=v.regs.cr0 ^ int(CR0.WP)), smm=v.smm,
                               guest_mode=v.guest_mode)
        refreshed = other.replace(base=other.base.replace(cr0_wp=fresh.base.cr0_wp))
        assert v.cpu_role in (other, refreshed), v.cpu_role.diff(fresh)
    if v.era.role_split:
        want = (roles.tdp_root_role(fresh, tdp_level=v.vm.tdp_level) if v.tdp_enabled
                else roles.shadow_root_role(fresh))
    else:
        mmu = legacy.mmu_role(v.regs, tdp=v.tdp_enabled, smm=v.smm, guest_mode=v.guest_mode,
                              tdp_level=v.vm.tdp_level)
        assert v.mmu_role == mmu
        want = mmu.base
    assert v.root_role == want, v.root_role.diff(want)


def check_root(v: VCpu) -> None:
    """(c): a valid root whose page(s) carry root_role.word, shadowing the live CR3."""
    assert v.root.valid
    obj = v.root_object
    assert obj is not None and obj.hpa == v.root.hpa
    assert obj.role.word == v.root_role.word
    if obj.sp is not None:
        assert obj.sp.role.word == v.root_role.word
        assert v._sp_role_word(v.root.hpa) == v.root_role.word
    else:                                   # PAE special root: level-2 pages, quadrants
        assert v.root_role.level == 3
        for sp in obj.pages():
            assert sp.role.replace(level=3, quadrant=0).word == v.root_role.word
    assert v.root.pgd == (0 if v.root_role.direct else v.regs.cr3)


def check_prev_roots(v: VCpu) -> None:
    """(d): the previous roots are distinct, not the current one, and could still match."""
    prev = v.prev_roots
    assert len(prev) == KVM_MMU_NUM_PREV_ROOTS
    valid = [r for r in prev if r.valid]
    pairs = [(r.pgd, r.hpa) for r in valid]
    assert len(set(pairs)) == len(pairs), prev
    assert (v.root.pgd, v.root.hpa) not in pairs, (v.root, prev)
    for r in valid:
        word = v._sp_role_word(r.hpa)
        assert word is not None, f"{r}: no shadow page, is_root_usable can never accept it"
        assert not roles.PageRole.from_word(word).invalid, f"{r}: invalid root cached"
        assert r.hpa in v._roots
        if v.kind == "tdp":
            assert not v._roots[r.hpa].freed
        else:
            assert v.vm.shadow.page_at(r.hpa) is v._roots[r.hpa].sp


class LoadRecorder:
    """Wraps one vCPU's kvm_mmu_load to see each load's counter increments and root."""

    def __init__(self, v: VCpu) -> None:
        self.loads: list[tuple[int, int]] = []
        inner = v.kvm_mmu_load

        def load() -> None:
            before = v.stats["roots_created"] + v.stats["roots_reused"]
            inner()
            obj = v.root_object
            pages = 1 if v.kind == "tdp" else len(obj.pages())
            self.loads.append((v.stats["roots_created"] + v.stats["roots_reused"] - before,
                               pages))

        v.kvm_mmu_load = load


def check_stats(v: VCpu, before: Counter, rec: LoadRecorder) -> None:
    """(e): monotone counters; load events, loads and per-load page counts agree."""
    for k, n in before.items():
        assert v.stats[k] >= n, f"stats[{k!r}] went down: {n} -> {v.stats[k]}"
    load_events = sum(e.func.startswith("kvm_mmu_load:") for e in v.events)
    assert load_events == len(rec.loads) == v.stats["mmu_loads"]
    assert all(d == pages for d, pages in rec.loads), rec.loads
    assert v.stats["roots_created"] + v.stats["roots_reused"] == sum(p for _, p in rec.loads)
    assert v.stats["mmu_inits"] == v.stats["init_early_returns"] + sum(
        e.func == "kvm_init_mmu" for e in v.events)


# -- the driver ---------------------------------------------------------------------------
class Driver:
    """Applies operations, skipping only those the kernel can never perform."""

    def __init__(self, v: VCpu) -> None:
        self.v = v
        self.smm_saved = False      # SMM entered through enter_smm (so RSM has a save area)
        self.smi_from = None        # (regs, CS.L, guest_mode) the last SMI interrupted
        self.wp_may_be_stale = False
        self.steps = 0

    def expect_refusal(self, exc: type, fn, *args, **kw) -> None:
        """(f): the call raises ``exc`` and changes nothing at all."""
        before = _full_state(self.v)
        with pytest.raises(exc):
            fn(*args, **kw)
        assert _full_state(self.v) == before

    def write(self, fn, value: int):
        """A register write: (a) for a #GP, else the staleness bookkeeping of (b)."""
        v = self.v
        before, stats = _mmu_state(v), Counter(v.stats)
        old_cr0 = v.regs.cr0
        r = fn(value)
        if not r.ok:
            # Every #GP exits, except where the CPU raises it itself without an exit: a
            # MOV to CR3 with EPT/NPT, and on 6.18's VMX a guest-owned CR0.WP/CR4.CET write
            # that breaks "CR4.CET=1 needs CR0.WP=1" (SDM Vol. 3A 2.5).
            assert r.fault.vector == 13
            assert r.exited or (fn == v.set_cr3 and v.tdp_enabled) or (
                fn in (v.set_cr0, v.set_cr4) and v.era.cet_virtualized and v.vendor == "intel"
                and "CR4.CET=1 requires CR0.WP=1" in r.fault.reason)
            assert _mmu_state(v) == before
            d = Counter(v.stats)
            d.subtract(stats)
            assert {k for k, n in d.items() if n} <= {"vm_exits", "gp_faults"}
            assert d["vm_exits"] == int(r.exited) and d["gp_faults"] == 1
        elif not r.exited and fn == v.set_cr0 and (old_cr0 ^ v.regs.cr0) & CR0.WP:
            assert _wp_passthrough(v), "a CR0.WP change without exit needs VMX+EPT in 6.4"
            self.wp_may_be_stale = True
        if not r.exited and fn == v.set_cr0 and v.vendor == "amd":
            # svm_set_cr0: the hardware CR0 drops CD|NW (KVM_X86_QUIRK_CD_NW_CLEARED) and,
            # without NPT, forces PG|WP; if that differs from the guest's CR0 every CR0
            # write is intercepted, else only the selective write intercept (TS/MP free).
            forced = 0 if v.tdp_enabled else int(CR0.PG | CR0.WP)
            assert not old_cr0 & (CR0.CD | CR0.NW) and old_cr0 | forced == old_cr0
            assert not (old_cr0 ^ v.regs.cr0) & ~int(CR0.TS | CR0.MP)
        return r

    def apply(self, op: tuple) -> None:
        v = self.v
        kind = op[0]
        mark = len(v.events)
        r = v.regs
        paging = bool(r.cr0 & CR0.PG)
        if kind in ("cr0", "cr4", "efer", "cr3"):
            self.write(getattr(v, f"set_{kind}"), op[1])
        elif kind.endswith("^"):
            name = kind[:-1]
            self.write(getattr(v, f"set_{name}"), getattr(r, name) ^ op[1])
        elif kind in ("boot_long", "boot_prot"):
            if r.cr0 & (CR0.PE | CR0.PG):
                fn = v.boot_long_mode if kind == "boot_long" else v.boot_protected
                self.expect_refusal(ValueError, fn)
            elif kind == "boot_long":
                out = v.boot_long_mode(cr3=0x20_0000, la57=op[1], smep=op[2], smap=op[3])
                assert all(x.ok for x in out)
            else:
                # Not always clean: a leftover EFER.LME makes its 32-bit CR0.PG write #GP.
                out = v.boot_protected(pae=op[1], nx=op[2], wp=op[3], cr3=op[4])
                assert all(x.ok or x.fault.vector == 13 for x in out)
        elif kind == "smi":
            if v.smm:
                self.expect_refusal(ValueError, v.enter_smm)
            else:
                self.smi_from = (r, v.cs_l, v.guest_mode)
                TOTALS["SMI in L2"] += v.guest_mode
                assert v.enter_smm().ok
                assert not v.guest_mode     # an SMI in L2 exits to L1 first
                self.smm_saved = True
        elif kind == "rsm":
            if not v.smm or not self.smm_saved:
                # not in SMM, or SMM set by kvm_smm_changed: no SMRAM save area
                self.expect_refusal(ValueError, v.leave_smm)
            else:
                assert v.leave_smm().ok
                assert (v.regs, v.cs_l, v.guest_mode) == self.smi_from  # back where the SMI hit
                self.smm_saved = False
        elif kind == "smm_changed":
            if op[1] == v.smm or (op[1] and v.guest_mode):
                return          # the kernel calls it only on a flip, never in L2
            assert v.kvm_smm_changed(op[1]).ok
            self.smm_saved = False
        elif kind == "vmenter":
            if v.guest_mode:
                self.expect_refusal(ValueError, v.nested_enter)
                return
            if v.smm or not paging or not r.cr0 & CR0.PE:
                return          # VMLAUNCH/VMRUN needs L1 in paged protected mode, not SMM
            spec = op[1]
            kw = {} if spec is None else _l2_regs(spec, op[2])
            cs_l = v.cs_l
            res = self.write(lambda _: v.nested_enter(**kw), 0)
            if res.ok:          # L2's CS.L: L1's for an IA-32e L2, else 0 (no 64-bit code)
                assert v.cs_l == (cs_l and bool(v.regs.efer & EFER.LMA))
        elif kind == "vmexit":
            if not v.guest_mode:
                self.expect_refusal(ValueError, v.nested_exit)
            else:
                assert v.nested_exit().ok
        elif kind == "far_jump":
            if op[1] and not r.efer & EFER.LMA:
                self.expect_refusal(ValueError, v.far_jump, True)
            else:
                v.far_jump(op[1])
        elif kind == "perm":
            role = v.emulated_permission_check()
            if not paging:      # permission_fault runs only on paged walks: no refresh
                assert role.base.cr0_wp == 0
            elif v.era.wp_refresh_in_permission_fault and v.tdp_enabled:
                assert role.base.cr0_wp == int(bool(r.cr0 & CR0.WP))
        elif kind == "bad":
            name, args, exc = BAD_CALLS[op[1]]
            if name == "preview":
                self.expect_refusal(exc, v.preview, cr2=0)
            else:
                self.expect_refusal(exc, getattr(v, name), *args)
        else:                                           # pragma: no cover
            raise AssertionError(op)
        if any(e.func.startswith("kvm_init_mmu") for e in v.events[mark:]):
            self.wp_may_be_stale = False    # kvm_init_mmu leaves the role fresh
        self.steps += 1


def run_sequence(kernel: str, kind: str, vendor: str, ops: list[tuple]) -> int:
    v = VCpu(_memory(), kernel=kernel, mmu=kind, vendor=vendor, maxphyaddr=MAXPHYADDR)
    rec = LoadRecorder(v)
    v.enter()
    d = Driver(v)
    for op in ops:
        before = Counter(v.stats)
        d.apply(op)
        v.enter()                            # vcpu_enter_guest -> kvm_mmu_reload
        check_roles(v, d.wp_may_be_stale)
        check_root(v)
        check_prev_roots(v)
        check_stats(v, before, rec)
        _cover(v)
    return d.steps


TOTALS = Counter()


def _cover(v: VCpu) -> None:
    """Tally the states reached, so the report shows the sequences went somewhere."""
    base = v.cpu_role.base
    TOTALS[f"level {base.level}"] += 1
    TOTALS["smm"] += v.smm
    TOTALS["L2"] += v.guest_mode
    TOTALS["stale cpu_role"] += v.cpu_role != roles.cpu_role(v.regs, smm=v.smm,
                                                             guest_mode=v.guest_mode)
    TOTALS["PAE special root"] += v.root_object.sp is None
    TOTALS["valid prev_roots"] += sum(r.valid for r in v.prev_roots)
    hpas = [r.hpa for r in (v.root, *v.prev_roots) if r.valid]
    TOTALS["one page, two pgds"] += len(hpas) != len(set(hpas))


@pytest.mark.parametrize("kernel,kind,vendor", CONFIGS)
@settings(derandomize=True, deadline=None, max_examples=EXAMPLES, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(OPS, min_size=10, max_size=STEPS))
def test_random_operations_never_corrupt_the_vcpu(kernel, kind, vendor, ops):
    t0 = time.perf_counter()
    TOTALS["steps"] += run_sequence(kernel, kind, vendor, ops)
    TOTALS["examples"] += 1
    TOTALS["us"] += int((time.perf_counter() - t0) * 1e6)


def test_report_totals():
    """Prints how much the property above ran (runs after it in file order)."""
    print(f"\nvcpu props: {TOTALS['examples']} examples, {TOTALS['steps']} operations, "
          f"{TOTALS['us'] / 1e6:.2f} s in the driver; states after a step: "
          + ", ".join(f"{k}: {n}" for k, n in sorted(TOTALS.items())
                      if k not in ("examples", "steps", "us")))


# -- the properties can fail ------------------------------------------------------------
def _booted(kind: str) -> VCpu:
    v = VCpu(kernel="6.4", mmu=kind)
    assert all(r.ok for r in v.boot_long_mode(cr3=0x5000))
    return v


def test_checks_catch_a_corrupted_vcpu():
    """Each invariant check rejects a hand-corrupted vCPU (so a pass means something)."""
    v = _booted("shadow")
    check_roles(v, False)
    check_root(v)
    check_prev_roots(v)
    v.set_cr3(0x6000)
    good_prev = v.cache.prev_roots[:]
    v.cache.prev_roots[1] = v.cache.prev_roots[0]          # duplicate entry
    with pytest.raises(AssertionError):
        check_prev_roots(v)
    v.cache.prev_roots = good_prev
    v.cache.prev_roots[0] = v.root                          # current root cached too
    with pytest.raises(AssertionError):
        check_prev_roots(v)
    v.cache.prev_roots = good_prev
    v._cpu_role = v._cpu_role.replace(base=v._cpu_role.base.replace(efer_nx=0))
    with pytest.raises(AssertionError):
        check_roles(v, True)
    w = VCpu(kernel="6.4", mmu="tdp", vendor="intel")
    w.boot_long_mode()
    w._cpu_role = w._cpu_role.replace(base=w._cpu_role.base.replace(cr0_wp=0))
    with pytest.raises(AssertionError):
        check_roles(w, False)                               # stale, but no WP toggle seen
    check_roles(w, True)                                    # the kernel's own staleness
    w._root_role = w._root_role.replace(smm=1)
    with pytest.raises(AssertionError):
        check_roles(w, True)


# -- model bugs found by the properties, now fixed (minimal reproducers) -----------------
def test_same_gfn_two_pgds_then_unload():
    """One shadow page, two cached pgds (same gfn, PWT set): both references are put."""
    v = _booted("shadow")
    assert v.set_cr3(0x5008).ok              # PWT set: same gfn, pgd differs -> same root page
    assert v.set_cr4(v.regs.cr4 ^ int(CR4.SMEP)).ok     # reset_context frees both entries
    check_prev_roots(v)


def test_nested_enter_bad_argument_changes_nothing():
    v = _booted("shadow")
    before = _full_state(v)
    with pytest.raises(ValueError):
        v.nested_enter(l2_cr0=1 << 40)
    assert _full_state(v) == before


def test_rsm_after_kvm_smm_changed():
    v = _booted("tdp")
    assert v.kvm_smm_changed(True).ok
    before = _full_state(v)
    try:
        r = v.leave_smm()
    except ValueError:                       # refusing it cleanly would be fine too
        assert _full_state(v) == before
        return
    assert r.ok and not v.smm


def test_smi_in_l2_leaves_guest_mode_first():
    v = _booted("tdp")
    assert v.nested_enter().ok
    assert v.enter_smm().ok
    assert not (v.cpu_role.base.smm and v.cpu_role.base.guest_mode)


def test_refresh_with_paging_off_keeps_the_role_fresh():
    v = VCpu(kernel="6.4", mmu="tdp", vendor="intel")
    assert v.set_cr0(int(CR0.ET | CR0.PE | CR0.WP)).ok     # PE/WP on, CD|NW off, PG=0
    v.emulated_permission_check()
    assert v.cpu_role == roles.cpu_role(v.regs)
