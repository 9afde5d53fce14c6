"""Eras 6.12 and 6.18 against the kernel trees they name (docs/eras.md has the table).

Source tags, all read with ``git show HEAD:<path>`` in the trees fetched for this work:

* [K64]  lewisevans2007/linux-6.4   (6.4.6,   9862bdef2c0d)
* [K612] wishday/linux-6.12.y       (6.12.19, 21ae40e85ea7)
* [K618] gfunkmonk/linux-6.18.2     (6.18.2,  062668f4d006)

Every expected value below is derived by hand from those sources and the SDM, with the
arithmetic in a comment; none is copied from the model's output.
"""
from __future__ import annotations

import itertools
import random

import pytest

from mmu.book.views.roles_view import (FLAG_LABELS, ExplorerState, explore, impossible,
                                       never_in_kvm, render)
from mmu.kvm.eras import ERA_NAMES, era
from mmu.kvm.vcpu import MMU_KINDS, VENDORS, VCpu

OLD_ERAS = tuple(k for k in ERA_NAMES if k != "6.18")
CET = 1 << 23                       # CR4.CET (SDM Vol. 3A 2.5)
# boot_long_mode(): CR0 = PE 0x1 | ET 0x10 | NE 0x20 | WP 0x10000 | PG 0x80000000,
# CR4 = PSE 0x10 | PAE 0x20 | PGE 0x80.
BOOT_CR0, BOOT_CR4 = 0x8001_0031, 0xB0
WP = 0x1_0000


def booted(kernel, mmu="tdp", vendor="intel", *, cet=False):
    v = VCpu(kernel=kernel, mmu=mmu, vendor=vendor)
    v.boot_long_mode(cr3=0x100000)
    v.enter()
    assert (v.regs.cr0, v.regs.cr4) == (BOOT_CR0, BOOT_CR4)
    if cet:
        assert v.set_cr4(BOOT_CR4 | CET).ok
        v.enter()
    return v


# --- CR4_RESERVED_BITS ([K64], [K612], [K618] kvm_host.h) ------------------------------
def test_cr4_valid_bits_per_era():
    # Allowed in every tree read: VME..OSXMMEXCPT = bits 0-10, UMIP 11, LA57 12, VMXE 13,
    # FSGSBASE 16, PCIDE 17, OSXSAVE 18, SMEP 20, SMAP 21, PKE 22 -> 0x3fff | 0x70000 |
    # 0x700000 = 0x773fff.  Never SMXE (bit 14) or PKS (bit 24).  [K618] adds CET (bit 23):
    # 0x773fff | 0x800000 = 0xf73fff.
    for k in OLD_ERAS:
        assert era(k).cr4_valid_bits == 0x773FFF, k
    assert era("6.18").cr4_valid_bits == 0xF73FFF


@pytest.mark.parametrize("kernel", OLD_ERAS)
@pytest.mark.parametrize("vendor", VENDORS)
def test_cet_is_a_reserved_cr4_bit_before_6_18(kernel, vendor):
    # [K64]/[K612] CR4_RESERVED_BITS lacks X86_CR4_CET, so kvm_is_valid_cr4 fails: #GP.
    # CR4.CET is not guest-owned before 6.18 ([K612] KVM_POSSIBLE_CR4_GUEST_BITS), so the
    # write exits on VMX too.
    for mmu in MMU_KINDS:
        v = booted(kernel, mmu, vendor)
        r = v.set_cr4(BOOT_CR4 | CET)
        assert (r.exited, r.ok, r.fault.vector) == (True, False, 13), (mmu, r)
        assert "reserved bits 0x800000 set (CR4.CET)" in r.fault.reason
        assert v.regs.cr4 == BOOT_CR4


@pytest.mark.parametrize("kernel", ERA_NAMES)
def test_smxe_and_pks_are_reserved_in_every_era(kernel):
    # Neither X86_CR4_SMXE nor X86_CR4_PKS is in the allowed list of any tree read
    # ([K64], [K612], [K618]): 0x4000 and 0x1000000 #GP (issue 14's X1).
    for bit, name in ((1 << 14, "CR4.SMXE"), (1 << 24, "CR4.PKS")):
        v = booted(kernel)
        r = v.set_cr4(BOOT_CR4 | bit)
        assert not r.ok and r.exited and f"({name})" in r.fault.reason
        assert v.regs.cr4 == BOOT_CR4


# --- 6.18 CET: guest-owned on VMX, no role bit ------------------------------------------
@pytest.mark.parametrize("mmu", MMU_KINDS)
def test_cet_toggle_on_6_18_intel_is_exit_free(mmu):
    # [K618] kvm_cache_regs.h: KVM_POSSIBLE_CR4_GUEST_BITS has X86_CR4_CET;
    # set_cr4_guest_host_mask drops only TLBFLUSH (PGE|PCIDE|PAE|SMEP) and PDPTR
    # (PGE|PSE|PAE|SMEP) bits without EPT, so CET is guest-owned with and without EPT.
    v = booted("6.18", mmu, "intel")
    words = (v.cpu_role.as_u64, v.root_role.word)
    exits = v.stats["vm_exits"]
    r = v.set_cr4(BOOT_CR4 | CET)
    assert (r.ok, r.exited) == (True, False)
    assert v.regs.cr4 == 0x8000B0 and v.stats["vm_exits"] == exits
    r = v.set_cr4(BOOT_CR4)
    assert (r.ok, r.exited) == (True, False) and v.regs.cr4 == BOOT_CR4
    assert (v.cpu_role.as_u64, v.root_role.word) == words


@pytest.mark.parametrize("mmu", MMU_KINDS)
def test_cet_toggle_on_6_18_amd_exits_without_mmu_work(mmu):
    # svm.c sets INTERCEPT_CR4_WRITE ([K618] init_vmcb); CET is not in
    # KVM_MMU_CR4_ROLE_BITS (PSE|PAE|LA57|SMEP|SMAP|PKE, [K618] mmu.h), so
    # kvm_post_set_cr4 neither resets nor re-inits.
    v = booted("6.18", mmu, "amd")
    before = dict(v.stats)
    r = v.set_cr4(BOOT_CR4 | CET)
    assert (r.ok, r.exited) == (True, True)
    assert any("kvm_post_set_cr4: no MMU role bit changed" in str(e) for e in r.events)
    for k in ("mmu_resets", "mmu_unloads", "mmu_inits"):
        assert v.stats[k] == before.get(k, 0), k


@pytest.mark.parametrize("mmu,vendor,exited,where", [
    # EPT: WP guest-owned (fb509f76acc8) -> no exit, the CPU raises #GP (SDM Vol. 3A 2.5).
    ("tdp", "intel", False, "raised by the CPU"), ("legacy", "intel", False, "raised by the CPU"),
    # No EPT: WP host-owned -> exit, [K618] kvm_set_cr0 returns 1.
    ("shadow", "intel", True, "kvm_set_cr0: #GP"),
    # SVM: the selective CR0 write intercept sees WP -> exit, kvm_set_cr0 returns 1.
    ("tdp", "amd", True, "kvm_set_cr0: #GP"), ("legacy", "amd", True, "kvm_set_cr0: #GP"),
    ("shadow", "amd", True, "kvm_set_cr0: #GP"),
])
def test_clearing_wp_with_cet_is_gp_on_6_18(mmu, vendor, exited, where):
    v = booted("6.18", mmu, vendor, cet=True)
    inits = v.stats["mmu_inits"]
    r = v.set_cr0(BOOT_CR0 & ~WP)
    assert (r.ok, r.exited, r.fault.vector) == (False, exited, 13)
    assert "CR4.CET=1 requires CR0.WP=1" in r.fault.reason
    assert any(where in str(e) for e in r.events) or where in r.fault.reason
    assert v.regs.cr0 == BOOT_CR0 and v.stats["mmu_inits"] == inits


@pytest.mark.parametrize("vendor,exited", [("intel", False), ("amd", True)])
def test_setting_cet_with_wp_clear_is_gp_on_6_18(vendor, exited):
    # [K618] kvm_set_cr4: CR4.CET with !CR0.WP returns 1; on VMX the bit is guest-owned, so
    # the CPU raises the same #GP without an exit.
    v = booted("6.18", "tdp", vendor)
    assert v.set_cr0(BOOT_CR0 & ~WP).ok            # CET off: WP may be cleared
    r = v.set_cr4(BOOT_CR4 | CET)
    assert (r.ok, r.exited) == (False, exited)
    assert "CR4.CET=1 requires CR0.WP=1" in r.fault.reason and v.regs.cr4 == BOOT_CR4


def test_cet_rules_hold_only_from_6_18():
    # Every era x MMU x vendor: the KERNEXEC order (CET off, WP off, WP on, CET on) runs
    # without a fault only on 6.18; everywhere else the first write (CET on) is refused as
    # a reserved bit, and WP can then be toggled freely as in 6.4.
    for k, mmu, vendor in itertools.product(ERA_NAMES, MMU_KINDS, VENDORS):
        v = booted(k, mmu, vendor)
        r = v.set_cr4(BOOT_CR4 | CET)
        assert r.ok == (k == "6.18"), (k, mmu, vendor)
        if k != "6.18":
            assert "reserved" in r.fault.reason
            continue
        out = [v.set_cr4(BOOT_CR4), v.set_cr0(BOOT_CR0 & ~WP), v.set_cr0(BOOT_CR0),
               v.set_cr4(BOOT_CR4 | CET)]
        assert all(x.ok for x in out), (mmu, vendor)
        # ...and the wrong order faults.
        assert not v.set_cr0(BOOT_CR0 & ~WP).ok


# --- chapter 7's sequel: a KERNEXEC window ----------------------------------------------
# Per window, steady state (story_view.kernexec_window).  6.4: WP off, WP on (no CET).
# 6.18: CET off, WP off, WP on, CET on.  Columns: exits, resets, unloads, init rebuilds,
# roots built, roots found again.  By hand:
# * Intel+EPT (tdp, legacy): WP and CET guest-owned -> nothing at all.
# * AMD+NPT: every write exits (CR4 always, WP through the selective CR0 intercept); WP-only
#   with TDP -> kvm_init_mmu (01b31714bd90), which rebuilds (cpu_role.cr0_wp changed).
# * shadow: each WP write exits and resets (WP is in the shadow root role); the reload
#   finds the 4-level root page in the hash.  Intel's CET writes stay exit-free.
WINDOWS = {
    ("6.4", "tdp", "intel"): (0, 0, 0, 0, 0, 0), ("6.18", "tdp", "intel"): (0, 0, 0, 0, 0, 0),
    ("6.4", "legacy", "intel"): (0, 0, 0, 0, 0, 0),
    ("6.18", "legacy", "intel"): (0, 0, 0, 0, 0, 0),
    ("6.4", "tdp", "amd"): (2, 0, 0, 2, 0, 0), ("6.18", "tdp", "amd"): (4, 0, 0, 2, 0, 0),
    ("6.4", "legacy", "amd"): (2, 0, 0, 2, 0, 0), ("6.18", "legacy", "amd"): (4, 0, 0, 2, 0, 0),
    ("6.4", "shadow", "intel"): (2, 2, 2, 2, 0, 2), ("6.18", "shadow", "intel"): (2, 2, 2, 2, 0, 2),
    ("6.4", "shadow", "amd"): (2, 2, 2, 2, 0, 2), ("6.18", "shadow", "amd"): (4, 2, 2, 2, 0, 2),
}


@pytest.mark.parametrize("key", list(WINDOWS))
def test_kernexec_window_counts(key):
    from mmu.book.views.story_view import kernexec_window
    r = kernexec_window(*key)
    assert r.cet == (key[0] == "6.18") and r.faults == 0
    got = tuple(r.per_window[c] for c in ("vm_exits", "mmu_resets", "mmu_unloads",
                                           "inits_rebuilt", "roots_created", "roots_reused"))
    assert got == WINDOWS[key]


# --- event texts: each era's function names ([K64]/[K612]/[K618] tdp_mmu.h) -------------
@pytest.mark.parametrize("kernel,name", [("6.4", "kvm_tdp_mmu_get_vcpu_root_hpa"),
                                         ("6.12", "kvm_tdp_mmu_alloc_root"),
                                         ("6.18", "kvm_tdp_mmu_alloc_root")])
def test_tdp_root_load_event_uses_the_eras_function_name(kernel, name):
    v = VCpu(kernel=kernel, mmu="tdp")
    v.enter()
    load = [str(e) for e in v.events if e.func.startswith("kvm_mmu_load")]
    assert load and f": {name}: new root allocated" in load[0]


# --- KVM_SET_CPUID2 ([K64] / [K612] kvm_mmu_after_set_cpuid) -------------------------------
@pytest.mark.parametrize("kernel,text", [
    # Real mode on a 4-level TDP host: root role = level 4 | direct 0x80 | access 7 << 8 |
    # efer_nx 0x1000 | cr0_wp 0x2000 = 0x3784 (the TDP root role's constants).
    ("5.19", "root_role.word = 0: root_role 0x3784 -> 0x0"),
    ("6.4", "root_role.word = 0: root_role 0x3784 -> 0x0"),
    # 6.9+: invalid (bit 11, 0x800) set instead: 0x3784 | 0x800 = 0x3f84.
    ("6.12", "root_role.invalid = 1: root_role 0x3784 -> 0x3f84"),
    ("6.18", "root_role.invalid = 1: root_role 0x3784 -> 0x3f84"),
    ("5.18", "mmu_role.ext.valid = 0"),
])
def test_set_cpuid_marks_the_roles_stale_per_era(kernel, text):
    v = VCpu(kernel=kernel)
    words = (v.cpu_role.as_u64, v.root_role.word)
    resets = v.stats["mmu_resets"]
    v.kvm_set_cpuid()
    events = [str(e) for e in v.events]
    assert any(f"kvm_mmu_after_set_cpuid: {text}" in e for e in events), events
    # ...then kvm_mmu_reset_context recomputes the same roles (no early return possible).
    assert v.stats["mmu_resets"] == resets + 1
    assert (v.cpu_role.as_u64, v.root_role.word) == words
    v.enter()
    with pytest.raises(ValueError, match="before the vCPU first runs"):
        v.kvm_set_cpuid()


# --- the explorer --------------------------------------------------------------------------
def test_explorer_cet_control():
    s = ExplorerState(kernel="6.18")
    r = explore(s.replace(cr4_cet=True), s)
    assert r.outcome == "no-exit" and r.effective.cr4_cet
    s_amd = s.replace(vendor="amd")
    assert explore(s_amd.replace(cr4_cet=True), s_amd).outcome == "no-mmu-work"
    on = s.replace(cr4_cet=True)
    r = explore(on.replace(cr0_wp=False), on)            # WP off with CET on
    assert r.outcome == "gp" and "CR0.WP=1" in r.fault and r.effective == on
    r = explore(s.replace(kernel="6.4", cr4_cet=True), s.replace(kernel="6.4"))
    assert r.outcome == "gp" and "reserved" in r.fault
    # Clearing both at once: CET goes first, so nothing faults (no exit on Intel+EPT).
    r = explore(s.replace(cr0_wp=False), on)
    assert r.writes[0].startswith("MOV to CR4") and r.outcome == "no-exit"


def test_explorer_widget_enables_cet_only_on_6_18():
    from mmu.book.widgets import RoleExplorer
    ex = RoleExplorer(kernel="6.12")
    assert ex.checkboxes["cr4_cet"].disabled
    with pytest.raises(ValueError, match="CR4.CET control is disabled for Linux 6.12"):
        ex.set(cr4_cet=True)
    assert ex.state.kernel == "6.12" and not ex.state.cr4_cet
    ex.set(kernel="6.18")
    assert not ex.checkboxes["cr4_cet"].disabled
    assert ex.set(cr4_cet=True).outcome == "no-exit"
    ex.set(kernel="6.4")                                   # CET dropped with the kernel
    assert ex.checkboxes["cr4_cet"].disabled and not ex.checkboxes["cr4_cet"].value
    assert not ex.state.cr4_cet


def test_explorer_shows_is_mirror_only_on_6_18():
    rows18 = render(explore(ExplorerState(kernel="6.18"))).text
    rows12 = render(explore(ExplorerState(kernel="6.12"))).text
    # 6.18: the row in both tables (cpu_role.base and root_role), bit 19, value 0.
    assert rows18.count("is_mirror") == 2 and "is_mirror        19     0       0" in rows18
    assert "is_mirror" not in rows12


# --- the audit's finding, exhaustively: same words as 6.4 ---------------------------------
def _explorer_states():
    names = [n for n in FLAG_LABELS if n != "cr4_cet"]
    for bits in itertools.product((False, True), repeat=len(names)):
        s = ExplorerState(**dict(zip(names, bits)))
        if s.tdp or not s.tdp_mmu:                 # tdp_mmu means nothing without TDP
            yield s


def _words(v, s):
    """The roles the vCPU's own kvm_init_mmu computes for explorer state ``s``."""
    v.regs, v.smm, v.guest_mode = s.regs(), s.smm, s.guest_mode
    v.kvm_init_mmu()
    return v.cpu_role.as_u64, v.root_role.word


def test_6_12_and_6_18_give_6_4s_words_for_every_reachable_explorer_state():
    # [K64]/[K612]/[K618]: kvm_calc_cpu_role, kvm_calc_tdp_mmu_root_page_role (same value),
    # kvm_init_shadow_mmu, shadow_mmu_init_context, init_kvm_tdp_mmu and kvm_init_mmu are
    # the same text, and CET is no role bit: so the words must be equal, state by state.
    states = [s for s in _explorer_states() if not impossible(s) and not never_in_kvm(s)]
    # 13 host/guest flags with tdp_mmu counted only with TDP: 2^12 * 3 = 12288 states; 1/4
    # have SMM with guest mode (never in KVM) and 1/8 of the (PG, PAE, LME) combinations
    # is long mode without PAE (#GP): 12288 * 3/4 * 7/8 = 8064.
    assert len(states) == 8064
    vcpus = {(k, m, vnd): VCpu(kernel=k, mmu=m, vendor=vnd)
             for k in ("6.4", "6.12", "6.18") for m in MMU_KINDS for vnd in VENDORS}
    checked = 0
    for s in states:
        for vnd in VENDORS:
            want = _words(vcpus[("6.4", s.mmu, vnd)], s)
            for k in ("6.12", "6.18"):
                assert _words(vcpus[(k, s.mmu, vnd)], s) == want, (k, vnd, s)
            if s.cr0_wp:
                cet = s.replace(kernel="6.18", cr4_cet=True)
                assert _words(vcpus[("6.18", s.mmu, vnd)], cet) == want, (vnd, cet)
            checked += 1
    assert checked == 2 * len(states)


def test_explorer_transitions_agree_across_6_4_6_12_6_18():
    # A seeded sample of explorer transitions: the same outcome, writes and role words on
    # all three kernels, and the same events once the 6.9 rename is undone.
    rng = random.Random(612618)
    states = [s for s in _explorer_states() if not impossible(s) and not never_in_kvm(s)]
    for _ in range(60):
        a, b = rng.choice(states), rng.choice(states)
        b = b.replace(tdp=a.tdp, tdp_mmu=a.tdp_mmu, vendor=rng.choice(VENDORS))
        a = a.replace(vendor=b.vendor)
        res = {k: explore(b.replace(kernel=k), a.replace(kernel=k)) for k in ("6.4", "6.12", "6.18")}
        ref = res["6.4"]
        for k in ("6.12", "6.18"):
            r = res[k]
            assert (r.outcome, r.writes, r.cpu_role.as_u64, r.root_role.word) == \
                (ref.outcome, ref.writes, ref.cpu_role.as_u64, ref.root_role.word), (k, a, b)
            assert [e.replace("kvm_tdp_mmu_alloc_root", "kvm_tdp_mmu_get_vcpu_root_hpa")
                    for e in r.events] == list(ref.events), (k, a, b)


# --- 6.6: a CR3 outside every memslot under shadow paging ([K64] / [K612] mmu.c) -------------
RAM = 16 << 20          # one 16 MiB memslot: gfns 0 .. 0xfff are visible
FAR_CR3 = 0x200_0000    # gfn 0x2000: outside it


@pytest.mark.parametrize("kernel", ["5.15", "5.18", "5.19", "6.1", "6.4"])
def test_cr3_outside_memory_is_a_triple_fault_before_6_6(kernel):
    # [K64] mmu_alloc_shadow_roots -> mmu_check_root: !kvm_vcpu_is_visible_gfn(root_gfn)
    # -> KVM_REQ_TRIPLE_FAULT; no root.  The vCPU's run ends (KVM_EXIT_SHUTDOWN).
    v = VCpu(kernel=kernel, mmu="shadow", ram_size=RAM)
    v.boot_long_mode(cr3=0x100000)
    v.enter()
    r = v.set_cr3(FAR_CR3)
    assert any("mmu_check_root: CR3 gfn 0x2000 is outside every memslot: "
               "KVM_REQ_TRIPLE_FAULT" in str(e) for e in r.events)
    assert v.shut_down and not v.cache.root.valid and v.stats["triple_faults"] == 1
    with pytest.raises(ValueError, match="shut down after a triple fault"):
        v.set_cr3(0x100000)


@pytest.mark.parametrize("kernel", ["6.12", "6.18"])
def test_cr3_outside_memory_gets_the_dummy_root_from_6_6(kernel):
    # [K612] mmu_alloc_shadow_roots: root.hpa = kvm_mmu_get_dummy_root(); no shadow page.
    # fast_pgd_switch then frees it first (root_to_sp() is NULL) and the old root, kept in
    # prev_roots[0] by the miss, is found again.
    v = VCpu(kernel=kernel, mmu="shadow", ram_size=RAM)
    v.boot_long_mode(cr3=0x100000)
    v.enter()
    built = v.stats["roots_created"]
    r = v.set_cr3(FAR_CR3)
    assert r.ok and not v.shut_down
    assert any(e.func == "kvm_mmu_load: dummy root" for e in r.events)
    assert v.cache.root.hpa == 0 and v.stats["dummy_roots"] == 1        # the zero page
    assert v.stats["roots_created"] == built                            # no shadow page
    r = v.set_cr3(0x100000)
    funcs = [e.func for e in r.events]
    assert "kvm_mmu_free_roots" in funcs and "fast_pgd_switch: prev_roots[0] hit" in funcs


def _pae_guest_with_far_pdpte(kernel):
    from mmu.x86.memory import GuestMemory
    mem = GuestMemory()
    # PDPT at 0x5000: PDPTE 0 -> PD at 0x6000 (visible), PDPTE 1 -> PD at 0x300_0000 (gfn
    # 0x3000, outside the 16 MiB slot); bit 0 = present.
    mem.write_u64(0x5000, 0x6000 | 1)
    mem.write_u64(0x5008, 0x300_0000 | 1)
    v = VCpu(mem, kernel=kernel, mmu="shadow", ram_size=RAM)
    res = v.boot_protected(pae=True, cr3=0x5000)
    return v, res[-1]


def test_pae_pdpte_outside_memory_per_era():
    # [K64]: mmu_check_root(pdptrs[i] >> PAGE_SHIFT) -> triple fault.
    v, r = _pae_guest_with_far_pdpte("6.4")
    assert v.shut_down and any("PDPTE 1 gfn 0x3000" in str(e) for e in r.events)
    # [K612]: an invisible PDPTE is zeroed: not present; the PAE root has one page (entry 0).
    v, r = _pae_guest_with_far_pdpte("6.12")
    assert not v.shut_down
    assert any("PDPTE 1 points at gfn 0x3000" in str(e) for e in r.events)
    pages = v.root_object.pae_sps
    assert pages[0] is not None and pages[1:] == (None, None, None)


def test_a_fault_on_the_dummy_root_asks_for_a_new_root():
    # 6.6+ FNAME(fetch) ([K612] paging_tmpl.h): on a dummy root, request
    # KVM_REQ_MMU_FREE_OBSOLETE_ROOTS and retry.  (The model's walker reads the guest's
    # tables wherever they are; the kernel's would find no memslot behind FAR_CR3.)
    from mmu.x86.pagetable import PageTableBuilder
    v = VCpu(kernel="6.12", mmu="shadow", ram_size=RAM)
    b = PageTableBuilder(v.mem, "4-level", table_base=FAR_CR3)
    b.map(0x40_0000, 0x10_0000, 0x1000)
    v.boot_long_mode(cr3=b.cr3)
    out = v.vm.shadow.page_fault(v.root_object, v.regs, v.cpu_role, 0x40_0000, "read")
    assert out.retry and "dummy root" in out.reason
