"""Scenarios: guest behaviour x kernel era x MMU kind x vendor, counted by hand.

Every expected number is derived in the comment beside it from the fact sheet
(/work/shared/reference/kvm-mmu-facts.md, cited "§N"), never from running the model.
Counts are deltas taken after the boot sequence, for one vCPU.
"""
from collections import Counter

import pytest

from mmu.kvm.eras import era
from mmu.x86.memory import GuestMemory
from mmu.x86.pagetable import PageTableBuilder
from mmu.x86.regs import CR0, CR4, EFER
from mmu.kvm.vcpu import VCpu

KEYS = ("vm_exits", "mmu_resets", "mmu_unloads", "roots_created", "roots_reused")
ERAS = ("5.15", "5.18", "5.19", "6.1", "6.4")


def booted(kernel, kind, vendor="intel", **kw):
    v = VCpu(kernel=kernel, mmu=kind, vendor=vendor, **kw)
    assert all(r.ok for r in v.boot_long_mode(cr3=0x100000))
    return v


def delta(v, before):
    d = Counter(v.stats)
    d.subtract(before)
    return d


def run(v, fn):
    """Counter increments caused by fn(v)."""
    before = Counter(v.stats)
    fn(v)
    return delta(v, before)


def counts(v, fn):
    """The KEYS increments of fn(v), as a tuple (fn runs once)."""
    d = run(v, fn)
    return tuple(d[k] for k in KEYS)


def toggle_wp_20_pairs(v):
    cr0 = v.regs.cr0
    for _ in range(20):
        assert v.set_cr0(cr0 & ~int(CR0.WP)).ok
        assert v.set_cr0(cr0).ok


# --- CR0.WP toggled 40 times (20 off/on pairs) on a booted 4-level guest ---------------
#
# Derivations (tuples are vm_exits, mmu_resets, mmu_unloads, roots_created, roots_reused):
#
# TDP MMU, <= 6.1: every WP write exits (VMX: WP is host-owned before fb509f76acc8;
#   SVM: no per-bit CR0 control, §3.3).  kvm_post_set_cr0 sees a KVM_MMU_CR0_ROLE_BITS
#   change -> kvm_mmu_reset_context = unload + init (§3.2, §4): 40 resets, 40 unloads.
#   The unload drops the only reference to the TDP root, which is freed (no
#   edbdb43fc96b, §4), so the next kvm_mmu_load finds nothing: 40 created, 0 reused.
#   (<= 5.18 the root role also holds cr0_wp, §2.2; 5.19/6.1 it does not, §2.3 -- the
#   count is the same because the root was freed anyway.)
TDP_OLD = (40, 40, 40, 40, 0)
# TDP MMU, 6.4, Intel: WP is guest-owned with EPT (§3.3): no exit, no MMU work at all.
TDP_64_INTEL = (0, 0, 0, 0, 0)
# TDP MMU, 6.4, AMD: every write exits; only WP changed and TDP is on -> kvm_init_mmu only
#   (01b31714bd90, §3.2): no reset, no unload, the root stays loaded: nothing allocated.
TDP_64_AMD = (40, 0, 0, 0, 0)
# Legacy (EPT/NPT, tdp_mmu=0), <= 5.18: exits and resets as above.  The direct root role
#   holds the guest's cr0_wp (§2.2), so WP=0 needs a second root: created once (first
#   WP=1->0), then both roots stay in the shadow-page hash after unload (§4, "with the
#   shadow MMU an unloaded root stays in the per-VM hash"): 1 created, 39 reused.
LEGACY_OLD = (40, 40, 40, 1, 39)
# Legacy, 5.19/6.1: the root role has cr0_wp=1 constant (§2.3): the same root is found in
#   the hash each time: 0 created, 40 reused.
LEGACY_NEW = (40, 40, 40, 0, 40)
# Legacy, 6.4: like TDP 6.4 (same exit and kvm_post_set_cr0 rules: tdp_enabled).
LEGACY_64_INTEL = (0, 0, 0, 0, 0)
LEGACY_64_AMD = (40, 0, 0, 0, 0)
# Shadow paging, every era and vendor: WP is intercepted without EPT (§3.3) and is in the
#   shadow root role (§2.2, §2.3, §7.6), so each write resets; the WP=0 root is created
#   once and both stay hashed: 40 exits/resets/unloads, 1 created, 39 reused.
SHADOW_ALL = (40, 40, 40, 1, 39)

WP_TABLE = {}
for e in ERAS:
    for vendor in ("intel", "amd"):
        WP_TABLE[(e, "shadow", vendor)] = SHADOW_ALL
        if e == "6.4":
            WP_TABLE[(e, "tdp", vendor)] = TDP_64_INTEL if vendor == "intel" else TDP_64_AMD
            WP_TABLE[(e, "legacy", vendor)] = (LEGACY_64_INTEL if vendor == "intel"
                                               else LEGACY_64_AMD)
        else:
            WP_TABLE[(e, "tdp", vendor)] = TDP_OLD
            WP_TABLE[(e, "legacy", vendor)] = LEGACY_OLD if e in ("5.15", "5.18") else LEGACY_NEW


@pytest.mark.parametrize("key", sorted(WP_TABLE), ids=lambda k: "-".join(k))
def test_cr0_wp_toggle_table(key):
    kernel, kind, vendor = key
    assert counts(booted(kernel, kind, vendor), toggle_wp_20_pairs) == WP_TABLE[key]


def test_cr0_wp_toggle_6_4_amd_runs_kvm_init_mmu_each_time():
    # 40 exits each reach kvm_init_mmu; cpu_role.base.cr0_wp changes each time, so no
    # early return (§2.3: early return iff both roles unchanged).
    d = run(booted("6.4", "tdp", "amd"), toggle_wp_20_pairs)
    assert (d["mmu_inits"], d["init_early_returns"]) == (40, 0)


@pytest.mark.parametrize("vendor,expected", [
    # v6.1.y after the May-2023 backport (§3.2 "Stable-backport variant"): same counts as
    # 6.4 for a paging guest -- Intel no exits; AMD 40 exits, kvm_init_mmu only.
    ("intel", (0, 0, 0, 0, 0)),
    ("amd", (40, 0, 0, 0, 0)),
])
def test_cr0_wp_toggle_6_1_stable_backport(vendor, expected):
    v = VCpu(kernel=era("6.1", cr0_wp_tdp_no_unload=True, cr0_wp_guest_owned=True),
             mmu="tdp", vendor=vendor)
    v.boot_long_mode(cr3=0x100000)
    assert counts(v, toggle_wp_20_pairs) == expected


def test_6_1_with_tdp_root_preservation_keeps_the_root():
    # v6.3.2-like: reset still unloads, but the TDP MMU keeps its own reference
    # (edbdb43fc96b, §4), so every reload finds the root: 0 created, 40 reused.
    v = VCpu(kernel=era("6.1", tdp_root_preserved=True), mmu="tdp")
    v.boot_long_mode(cr3=0x100000)
    assert counts(v, toggle_wp_20_pairs) == (40, 40, 40, 0, 40)


# --- CR3 round robin under shadow paging (§5) -----------------------------------------
def switch_round_robin(n, switches=40, base=0x200000):
    def go(v):
        for k in range(1, switches + 1):
            assert v.set_cr3(base + 0x1000 * (k % n)).ok
    return go


@pytest.mark.parametrize("kernel", ERAS)
def test_cr3_round_robin_4_processes_shadow(kernel):
    v = VCpu(kernel=kernel, mmu="shadow")
    v.boot_long_mode(cr3=0x200000)         # process 0 is current
    d = run(v, switch_round_robin(4))
    # First round: processes 1, 2, 3 are not cached -> 3 misses, 3 roots created.
    # Then current + 3 prev_roots hold all four: the other 37 switches hit (§5).
    assert (d["prev_root_misses"], d["prev_root_hits"]) == (3, 37)
    assert (d["roots_created"], d["roots_reused"]) == (3, 0)
    # Every CR3 load exits under shadow paging; no reset is involved.
    assert (d["vm_exits"], d["mmu_resets"], d["mmu_unloads"]) == (40, 0, 0)


@pytest.mark.parametrize("kernel", ERAS)
def test_cr3_round_robin_5_processes_shadow(kernel):
    v = VCpu(kernel=kernel, mmu="shadow")
    v.boot_long_mode(cr3=0x200000)
    d = run(v, switch_round_robin(5))
    # Five address spaces in four slots: each miss evicts the LRU -- exactly the one
    # needed four switches later -- so prev_roots never hit.  Roots for 1..4 are created
    # in the first round; afterwards every miss finds its root in the hash (the evicted
    # root only lost its reference, §5 kvm_mmu_free_roots): 4 created, 36 reused.
    assert (d["prev_root_misses"], d["prev_root_hits"]) == (40, 0)
    assert (d["roots_created"], d["roots_reused"]) == (4, 36)


@pytest.mark.parametrize("kind", ["tdp", "legacy"])
@pytest.mark.parametrize("vendor", ["intel", "amd"])
def test_cr3_with_ept_npt_does_nothing(kind, vendor):
    v = VCpu(kernel="6.1", mmu=kind, vendor=vendor)
    v.boot_long_mode(cr3=0x200000)
    root = v.root
    d = run(v, switch_round_robin(5))
    # CR3 is the guest's with EPT/NPT: no exit, no kvm_mmu_new_pgd, root untouched.
    assert d["vm_exits"] == 0 and d["new_pgd_calls"] == 0 and d["cr3_writes_no_exit"] == 40
    assert v.root == root and v.regs.cr3 == 0x200000 + 0x1000 * (40 % 5)


def test_pae_guest_under_shadow_never_hits_prev_roots():
    mem = GuestMemory()
    cr3s = []
    for p in range(4):
        b = PageTableBuilder(mem, "PAE", table_base=0x100_0000 + p * 0x10_0000)
        b.map(0x40_0000, 0x80_0000 + p * 0x1000, 0x1000)
        # The builder gives every PAE table all four page directories up front (PDPTEs
        # are loaded at MOV CR3, as a PAE Linux does): 4 present PDPTEs per process.
        assert all(mem.read_u64(b.cr3 + 8 * i) & 1 for i in range(4))
        cr3s.append(b.cr3)
    v = VCpu(mem, kernel="6.4", mmu="shadow")
    v.boot_protected(pae=True, cr3=cr3s[0])
    before = Counter(v.stats)
    freed_special = 0
    for k in range(1, 41):
        r = v.set_cr3(cr3s[k % 4])
        assert r.ok
        freed_special += any("PAE root" in e.detail for e in r.events)
    d = delta(v, before)
    # The current root is the PAE special root (no shadow page), freed before every
    # search, so it never enters prev_roots (§5): 0 hits, 40 misses.
    assert (d["prev_root_hits"], d["prev_root_misses"]) == (0, 40)
    assert freed_special == 40
    # Four present PDPTEs per process -> four level-2 root pages each (§6).  Processes
    # 1..3 are new in the first round (3 x 4 created), then every switch finds its four
    # pages in the hash (37 x 4 reused).
    assert (d["roots_created"], d["roots_reused"]) == (12, 148)


# --- EFER.NX toggle (1->0->1) ----------------------------------------------------------
# WRMSR always exits; NX is in KVM_MMU_EFER_ROLE_BITS in every era (§3.1) -> 2 resets.
#   TDP <= 6.1: the root is freed at each unload (§4) -> 2 created.  6.4 keeps it -> 2 reused.
#   Legacy <= 5.18: root role efer_nx = guest NX (§2.2) -> NX=0 root created, NX=1 found.
#   Legacy 5.19+: efer_nx=1 constant (§2.3) -> 2 reused.
#   Shadow <= 5.18: efer_nx = guest NX (§2.2 "not forced") -> 1 created, 1 reused.
#   Shadow 5.19+: efer_nx forced to 1 (362505deb8e2, §2.3) -> root role unchanged -> 2 reused.
NX_TABLE = {
    ("5.15", "tdp"): (2, 2, 2, 2, 0), ("5.18", "tdp"): (2, 2, 2, 2, 0),
    ("5.19", "tdp"): (2, 2, 2, 2, 0), ("6.1", "tdp"): (2, 2, 2, 2, 0),
    ("6.4", "tdp"): (2, 2, 2, 0, 2),
    ("5.15", "legacy"): (2, 2, 2, 1, 1), ("5.18", "legacy"): (2, 2, 2, 1, 1),
    ("5.19", "legacy"): (2, 2, 2, 0, 2), ("6.1", "legacy"): (2, 2, 2, 0, 2),
    ("6.4", "legacy"): (2, 2, 2, 0, 2),
    ("5.15", "shadow"): (2, 2, 2, 1, 1), ("5.18", "shadow"): (2, 2, 2, 1, 1),
    ("5.19", "shadow"): (2, 2, 2, 0, 2), ("6.1", "shadow"): (2, 2, 2, 0, 2),
    ("6.4", "shadow"): (2, 2, 2, 0, 2),
}


@pytest.mark.parametrize("key", sorted(NX_TABLE), ids=lambda k: "-".join(k))
def test_efer_nx_toggle(key):
    kernel, kind = key
    v = booted(kernel, kind)
    efer = v.regs.efer

    def go(v):
        assert v.set_efer(efer & ~int(EFER.NXE)).ok
        assert v.set_efer(efer).ok
    assert counts(v, go) == NX_TABLE[key]


# --- CR4.SMEP toggle (0->1->0), CR0.WP=1 -----------------------------------------------
# CR4 role bits are never guest-owned (§3.1) -> 2 exits, 2 resets.  No root role holds
# SMEP itself; with WP=1 smep_andnot_wp stays 0 (§2.2, §2.3), so every root role is
# unchanged: TDP <= 6.1 frees and re-creates (2 created), 6.4 keeps (2 reused); legacy and
# shadow find the root in the hash (2 reused).
@pytest.mark.parametrize("kernel", ERAS)
@pytest.mark.parametrize("kind", ["tdp", "legacy", "shadow"])
def test_cr4_smep_toggle(kernel, kind):
    v = booted(kernel, kind)
    cr4 = v.regs.cr4

    def go(v):
        assert v.set_cr4(cr4 | int(CR4.SMEP)).ok
        assert v.set_cr4(cr4).ok
    got = counts(v, go)
    if kind == "tdp" and kernel != "6.4":
        assert got == (2, 2, 2, 2, 0)
    else:
        assert got == (2, 2, 2, 0, 2)


# --- CR0.PG 1->0 from a booted 4-level guest (via compatibility mode) ----------------------
# One exit, PG is a role bit -> 1 reset (§3.2), plus KVM_REQ_TLB_FLUSH_GUEST.
#   TDP: 5.19+ root role unchanged (constant bits), <= 5.18 changes (cr0_wp/efer_nx only
#   when PG, §2.2); either way the root was freed before 6.4 -> 1 created; 6.4 -> 1 reused.
#   Legacy: <= 5.18 the role changes (no cr0_wp/efer_nx without PG) -- but to exactly the
#   role the vCPU had in real mode at boot, whose root is still hashed -> 1 reused; 5.19+
#   the role does not change at all -> 1 reused.
#   Shadow: the nonpaging root (direct PAE root, 4 level-2 pages, §6) has the same role as
#   at boot in real mode -> its 4 pages are found in the hash: 0 created, 4 reused.
@pytest.mark.parametrize("kernel", ERAS)
@pytest.mark.parametrize("kind", ["tdp", "legacy", "shadow"])
def test_cr0_pg_off(kernel, kind):
    v = booted(kernel, kind)
    v.far_jump(False)
    got = counts(v, lambda v: v.set_cr0(v.regs.cr0 & ~int(CR0.PG)))
    assert not v.regs.efer & EFER.LMA and v.regs.efer & EFER.LME   # LMA follows PG
    exp = {"tdp": (1, 1, 1, 0, 1) if kernel == "6.4" else (1, 1, 1, 1, 0),
           "legacy": (1, 1, 1, 0, 1),
           "shadow": (1, 1, 1, 0, 4)}[kind]
    assert got == exp
    assert any("TLB_FLUSH_GUEST" in e.detail for e in v.events[-12:])
    assert v.cpu_role.base.direct == 1 and v.cpu_role.base.level == 0


# --- SMM entry and exit ------------------------------------------------------------------
# Each transition exits and calls kvm_mmu_reset_context (§3.2 callers).  role.smm differs,
# so SMM needs its own root.  Entry: TDP/legacy 1 created; shadow: SMM runs unpaged -> a
# direct PAE root, 4 new level-2 pages.  Exit: TDP <= 6.1 freed the normal root at entry ->
# created again; 6.4 kept it -> reused; legacy/shadow find it in the hash.
@pytest.mark.parametrize("kernel", ERAS)
@pytest.mark.parametrize("kind", ["tdp", "legacy", "shadow"])
def test_smm_entry_exit(kernel, kind):
    v = booted(kernel, kind)
    regs = v.regs

    def go(v):
        assert v.enter_smm().ok
        assert v.root_role.smm == 1 and v.cpu_role.base.smm == 1
        assert v.leave_smm().ok
    got = counts(v, go)
    created_in = 4 if kind == "shadow" else 1
    if kind == "tdp" and kernel != "6.4":
        exp = (2, 2, 2, created_in + 1, 0)
    else:
        exp = (2, 2, 2, created_in, 1)
    assert got == exp
    assert v.regs == regs and v.root_role.smm == 0


# --- bad writes: #GP modelled, vCPU unchanged --------------------------------------------
BAD = [
    ("set_cr0", lambda v: v.regs.cr0 & ~int(CR0.PE), "PG=1 requires PE=1"),
    ("set_cr0", lambda v: v.regs.cr0 | int(CR0.NW), "NW=1 requires CD=1"),
    ("set_cr0", lambda v: v.regs.cr0 | (1 << 32), "63:32"),
    ("set_cr4", lambda v: v.regs.cr4 & ~int(CR4.PAE), "PAE in long mode"),
    ("set_cr4", lambda v: v.regs.cr4 | int(CR4.LA57), "LA57"),
    ("set_cr4", lambda v: v.regs.cr4 | (1 << 15), "reserved"),
    ("set_efer", lambda v: v.regs.efer & ~int(EFER.LME), "LME while paging"),
    ("set_efer", lambda v: v.regs.efer | (1 << 20), "reserved"),
]


@pytest.mark.parametrize("kernel", ERAS)
@pytest.mark.parametrize("kind", ["tdp", "shadow"])
@pytest.mark.parametrize("method,value,why", BAD, ids=[b[2] for b in BAD])
def test_bad_writes_gp_and_unchanged(kernel, kind, method, value, why):
    v = booted(kernel, kind)
    state = (v.regs, v.cpu_role, v.root_role, v.root, v.prev_roots)
    before = Counter(v.stats)
    r = getattr(v, method)(value(v))
    assert not r.ok and r.fault.vector == 13 and why in r.fault.reason
    assert (v.regs, v.cpu_role, v.root_role, v.root, v.prev_roots) == state
    d = delta(v, before)
    assert d["gp_faults"] == 1 and d["mmu_resets"] == 0 and d["roots_created"] == 0


def test_enable_long_mode_paging_without_pae_is_gp():
    for kernel in ERAS:
        v = VCpu(kernel=kernel, mmu="tdp")
        v.set_cr0(int(CR0.ET | CR0.PE))
        v.set_efer(int(EFER.LME))
        regs = v.regs
        r = v.set_cr0(int(CR0.ET | CR0.PE | CR0.PG))
        assert r.fault is not None and "PAE" in r.fault.reason and v.regs == regs
