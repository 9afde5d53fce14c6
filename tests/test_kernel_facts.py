"""Facts read in the kernel sources, pinned as tests (independent fact check, docs/fact-check.md).

Every expected value below comes from reading the named kernel function, never from the
model's output.  Sources actually read (through the stored-code index; see fact-check.md
for which trees were available):

* [K61]  atho13/linux-6.1.y ``arch/x86/kvm/mmu/mmu.c`` (6.1.175: post-series role code,
  identical to 6.4 for the functions used here, plus the May-2023 CR0.WP backport).
* [KPT]  ``arch/x86/kvm/mmu/paging_tmpl.h`` ``FNAME(walk_addr_generic)``, label ``error``,
  as in 5.14+ (after Sean Christopherson's "Drop kvm_mmu.nx") through 6.x.
* [KSVM] ``arch/x86/kvm/svm/nested.c`` ``nested_svm_init_mmu_context`` (5.14+) and
  ``arch/x86/kvm/svm/svm.c`` ``svm_set_cr0`` (5.12+ form with ``hcr0``).
* [KX86] ``arch/x86/kvm/x86.c`` ``kvm_vcpu_reset`` (5.15+: "CR0.CD/NW are set on RESET").
* [KVMX] ``arch/x86/kvm/vmx/vmx.c`` ``vmx_set_cr0`` (CR0_READ_SHADOW = the guest's CR0,
  GUEST_CR0 without KVM_VM_CR0_ALWAYS_OFF = NW|CD; same in 5.x and 6.x copies).
* [KTDP] upstream edbdb43fc96b "KVM: x86: Preserve TDP MMU roots until they are explicitly
  invalidated", merged in the 6.4 merge window (listed with "Merge tag 'net-next-6.4'").

Tests marked ``xfail(strict=True)`` were discrepancies between the model and the kernel;
each marker was removed when the model was fixed (none is left).
"""
from __future__ import annotations

import pytest

from mmu.x86.bits import PFErr
from mmu.x86.memory import GuestMemory
from mmu.x86.regs import CR0, CR4, EFER, make_regs
from mmu.kvm.roles import PageRole, child_role, cpu_role, nested_npt_roles, shadow_root_role
from mmu.kvm.shadow import ShadowMMU
from mmu.kvm.vcpu import VCpu
from mmu.x86.walker import walk

PFERR_FETCH = 0x10          # PFERR_FETCH_MASK, kvm_host.h (bit 4)
CR3_32 = 0x1000             # an all-zero guest page directory: every PDE is not present


def kvm_walker_fetch_bit(efer_nx: bool, cr4_smep: bool) -> int:
    """[KPT] FNAME(walk_addr_generic), label ``error``: the fetch bit is ORed into the
    error code iff ``is_efer_nx(mmu) || is_cr4_smep(mmu)``, i.e. cpu_role.base.efer_nx
    (5.18: mmu_role.base.efer_nx) or ext.cr4_smep -- no test of CR4.PAE."""
    return PFERR_FETCH if (efer_nx or cr4_smep) else 0


def sdm_fetch_bit(pae: bool, efer_nx: bool, cr4_smep: bool) -> int:
    """SDM Vol. 3A 4.7: I/D is set only if CR4.SMEP=1 or (CR4.PAE=1 and IA32_EFER.NXE=1)."""
    return PFERR_FETCH if (cr4_smep or (pae and efer_nx)) else 0


# --- 1. the fetch bit of a guest #PF error code: SDM vs KVM --------------------------------
@pytest.mark.parametrize("nx, smep", [(False, False), (True, False), (False, True), (True, True)])
def test_walker_follows_sdm_for_32bit_fetch_bit(nx, smep):
    """Our walker is the SDM's.  For 32-bit paging with EFER.NX=1 and SMEP=0 the SDM does
    not report I/D; KVM's software walker does (teaching point, see the next test)."""
    regs = make_regs("32-bit", cr3=CR3_32, nx=nx, smep=smep)
    r = walk(GuestMemory(), regs, 0x0040_0000, "fetch", cpl=0)
    assert r.fault is not None and r.fault.vector == 14
    assert r.fault.error_code & PFERR_FETCH == sdm_fetch_bit(False, nx, smep)


def test_kvm_reports_fetch_bit_in_32bit_paging_with_nx():
    """[KPT]+[K61 kvm_calc_cpu_role]: with CR0.PG=1 cpu_role.base.efer_nx = EFER.NX whatever
    CR4.PAE says, so KVM's walker sets PFERR_FETCH for a 32-bit guest with EFER.NX=1 even
    though the SDM (and our walker) clear it.  Visible only where KVM walks guest tables in
    software: shadow paging and emulation."""
    regs = make_regs("32-bit", cr3=CR3_32, nx=True, smep=False)
    role = cpu_role(regs)
    assert role.base.efer_nx == 1 and role.ext.cr4_smep == 0       # kvm_calc_cpu_role
    kvm = kvm_walker_fetch_bit(role.base.efer_nx, role.ext.cr4_smep)
    assert kvm == PFERR_FETCH
    assert sdm_fetch_bit(False, True, False) == 0
    # In every other mode the two rules agree (PAE/long mode with NX, or SMEP).
    for pae in (True,):
        for nx in (False, True):
            for smep in (False, True):
                assert kvm_walker_fetch_bit(nx, smep) == sdm_fetch_bit(pae, nx, smep)


def test_shadow_injects_kvm_error_code_for_32bit_fetch():
    mem = GuestMemory()
    regs = make_regs("32-bit", cr3=CR3_32, nx=True, smep=False)
    cpu = cpu_role(regs)
    shadow = ShadowMMU(mem)
    root, _, _ = shadow.alloc_shadow_roots(cpu, shadow_root_role(cpu), CR3_32)
    out = shadow.page_fault(root, regs, cpu, 0x0040_0000, "fetch", 0)
    assert out.injected is not None
    # KVM's paging32 walker (paging_tmpl.h FNAME(walk_addr_generic), 5.14+) adds
    # PFERR_FETCH when is_efer_nx(mmu) || is_cr4_smep(mmu): also for 32-bit paging.
    assert out.injected.error_code & PFERR_FETCH == PFERR_FETCH
    # ... and only there: with NX=0 and SMEP=0 neither KVM nor the SDM reports it.
    regs0 = make_regs("32-bit", cr3=CR3_32, nx=False, smep=False)
    cpu0 = cpu_role(regs0)
    root0, _, _ = shadow.alloc_shadow_roots(cpu0, shadow_root_role(cpu0), CR3_32)
    out0 = shadow.page_fault(root0, regs0, cpu0, 0x0040_0000, "fetch", 0)
    assert out0.injected.error_code & PFERR_FETCH == 0


# --- 2. nested NPT: L1's CR0.WP never reaches the role ------------------------------------
def test_nested_npt_ignores_l1_cr0_wp():
    """[KSVM] nested_svm_init_mmu_context passes CR0 = X86_CR0_PG only ("CR0.WP is explicitly
    ignored, while CR0.PG is required"), CR4/EFER from vmcb01; [K61] kvm_init_shadow_npt_mmu
    masks CR4.PKE.  So with L1 SMEP=SMAP=1 the NPT CPU role has cr0_wp=0 and both
    sm*p_andnot_wp=1, for L1 WP=0 and WP=1 alike.  Word by hand: level 4 | access 0x700 |
    efer_nx 0x1000 | smep_andnot_wp 0x4000 | smap_andnot_wp 0x8000 | guest_mode 0x20000."""
    want_base = 4 | 0x700 | 0x1000 | 0x4000 | 0x8000 | 0x20000
    words = set()
    for wp in (False, True):
        l1 = make_regs("4-level", wp=wp, nx=True, smep=True, smap=True, pke=True)
        cpu, root = nested_npt_roles(l1, tdp_level=4)
        assert cpu.base.word == want_base
        # ext: valid 1 | cr4_pse 0x4 | cr4_smap 0x10 | cr4_smep 0x20 | efer_lma 0x80; no pke
        assert cpu.ext.word == 1 | 0x4 | 0x10 | 0x20 | 0x80
        assert root.word == want_base           # root = base with level = TDP level (4)
        words.add((cpu.as_u64, root.word))
    assert len(words) == 1


# --- 3. 6.4 refresh: only cr0_wp is refreshed -----------------------------------------------
def test_6_4_refresh_updates_only_cr0_wp():
    """[K61] __kvm_mmu_refresh_passthrough_bits: reads the live CR0.WP, and if it differs
    from is_cr0_wp(mmu) sets cpu_role.base.cr0_wp and resets guest paging metadata -- it
    does not touch smep_andnot_wp/smap_andnot_wp.  After a guest-owned WP 1->0 flip with
    SMEP=1 the refreshed role therefore has cr0_wp=0 and a stale smep_andnot_wp=0 (the
    permission bitmap reads ext.cr4_smep and cr0_wp only, so permissions are right)."""
    v = VCpu(kernel="6.4", mmu="tdp", vendor="intel")
    v.boot_long_mode(smep=True)
    assert v.cpu_role.base.cr0_wp == 1 and v.cpu_role.base.smep_andnot_wp == 0
    assert not v.set_cr0(v.regs.cr0 & ~int(CR0.WP)).exited       # WP guest-owned with EPT
    role = v.emulated_permission_check()
    assert role.base.cr0_wp == 0
    assert role.base.smep_andnot_wp == 0          # not recomputed by the refresh
    assert role.ext.cr4_smep == 1


# --- 4. TDP MMU root lifetime: 5.19 frees on the last put, 6.4 preserves ----------------------
@pytest.mark.parametrize("kernel, survives", [("5.19", False), ("6.4", True)])
def test_tdp_root_lifetime_across_reset(kernel, survives):
    """5.19 kvm_tdp_mmu_put_root frees a root when its refcount drops to 0; [KTDP] (6.4)
    gives the TDP MMU its own reference, so a valid root survives the last vCPU put and
    kvm_tdp_mmu_get_vcpu_root_hpa finds it again.  A CR4.SMEP toggle (a role bit) resets
    the context in both (kvm_post_set_cr4 -> kvm_mmu_reset_context -> unload); the TDP
    root role is the same before and after (cr0_wp/efer_nx constant, SMEP not in it)."""
    v = VCpu(kernel=kernel, mmu="tdp", vendor="intel")
    v.boot_long_mode()
    v.enter()
    role_before = v.root_role.word
    created, reused = v.stats["roots_created"], v.stats["roots_reused"]
    v.set_cr4(v.regs.cr4 ^ int(CR4.SMEP))
    v.enter()
    assert v.root_role.word == role_before
    assert v.stats["roots_created"] - created == (0 if survives else 1)
    assert v.stats["roots_reused"] - reused == (1 if survives else 0)


# --- 5. child roles (6.x kvm_mmu_child_role) --------------------------------------------------
def test_child_role_of_4_byte_gpte_parent_direct_child_gets_quadrant():
    """[K61] kvm_mmu_child_role: role = parent's, level-1, access and direct set,
    passthrough cleared, and if has_4_byte_gpte the quadrant = spte_index & 1 -- for
    direct children too (a guest 4 MiB page shadowed by 4 KiB SPTEs)."""
    parent = PageRole(level=2, has_4_byte_gpte=1, quadrant=3, access=7, cr0_wp=1, efer_nx=1)
    child = child_role(parent, level=1, direct=True, access=5, quadrant=1)
    # level 1 | 4-byte 0x10 | quadrant 1<<5 | direct 0x80 | access 5<<8 | efer_nx | cr0_wp
    assert child.word == 1 | 0x10 | 0x20 | 0x80 | 0x500 | 0x1000 | 0x2000


# --- 6. CR0 at RESET and SVM's CR0 intercept ---------------------------------------------------
def test_reset_cr0_has_cd_nw():
    """[KX86] kvm_vcpu_reset (5.15+): new_cr0 = ET, plus NW|CD on RESET (kept on INIT),
    i.e. 0x10 | 0x2000_0000 | 0x4000_0000 = 0x6000_0010, for every vendor and MMU."""
    for vendor in ("intel", "amd"):
        for mmu in ("tdp", "legacy", "shadow"):
            v = VCpu(kernel="6.4", mmu=mmu, vendor=vendor)
            assert v.regs.cr0 == int(CR0.ET | CR0.CD | CR0.NW) == 0x6000_0010


def test_svm_intercepts_every_cr0_write_while_cd_set():
    """[KSVM] svm_set_cr0: with KVM_X86_QUIRK_CD_NW_CLEARED (on by default) hcr0 drops
    CD/NW, so while the guest has CR0.CD (or NW) set hcr0 != cr0 and INTERCEPT_CR0_WRITE
    is on: even a TS-only MOV to CR0 exits.  Also straight from RESET (CD|NW set)."""
    v = VCpu(kernel="6.4", mmu="tdp", vendor="amd")
    v.boot_long_mode()
    v.set_cr0(v.regs.cr0 | int(CR0.CD))        # e.g. MTRR update: caches off
    res = v.set_cr0(v.regs.cr0 ^ int(CR0.TS))
    assert res.exited
    fresh = VCpu(kernel="6.4", mmu="tdp", vendor="amd")
    assert fresh.set_cr0(fresh.regs.cr0 ^ int(CR0.TS)).exited


def test_vmx_ts_only_write_does_not_exit_with_cd_set():
    """[KVMX] vmx_set_cr0 writes the guest's CR0 (CD included) to CR0_READ_SHADOW and
    drops CD|NW only from GUEST_CR0 (KVM_VM_CR0_ALWAYS_OFF); CD/NW are host-owned bits of
    CR0_GUEST_HOST_MASK, and a MOV to CR0 exits only if a host-owned bit differs from the
    read shadow (SDM 25.1.3).  So VMX has no SVM-like rule: a TS-only write with CD=1
    does not exit, while changing CD itself does."""
    v = VCpu(kernel="6.4", mmu="tdp", vendor="intel")
    assert not v.set_cr0(v.regs.cr0 ^ int(CR0.TS)).exited      # from RESET: CD|NW set
    v = VCpu(kernel="6.4", mmu="tdp", vendor="intel")
    v.boot_long_mode()
    assert v.set_cr0(v.regs.cr0 | int(CR0.CD)).exited
    assert not v.set_cr0(v.regs.cr0 ^ int(CR0.TS)).exited


def test_svm_ts_only_write_does_not_exit_with_cd_clear():
    """svm_set_cr0 with NPT and CD=NW=0: hcr0 == cr0, INTERCEPT_CR0_WRITE cleared; only the
    selective CR0 write intercept remains, which ignores TS/MP changes (AMD APM 15.9)."""
    v = VCpu(kernel="6.4", mmu="tdp", vendor="amd")
    v.boot_long_mode()
    assert not v.set_cr0(v.regs.cr0 ^ int(CR0.TS)).exited
    assert v.set_cr0(v.regs.cr0 ^ int(CR0.WP)).exited      # WP: selective intercept


def test_pferr_fetch_constant():
    assert int(PFErr.ID) == PFERR_FETCH
    assert int(EFER.NXE) == 1 << 11
