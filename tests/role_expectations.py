"""Expected KVM role words, written independently of mmu/kvm/roles.py and mmu/kvm/legacy.py.

Every value is assembled with literal shifts from the fact sheet's tables
(kvm-mmu-facts.md §1.1 page role, §1.2 extended role, §2.2 5.18 builders, §2.3 5.19
builders and the per-mode tables).  Nothing here imports the code under test; register
values are built from the SDM's literal bit positions, and the reachable states come from
the SDM's rules (not from mmu.x86.regs.paging_mode, which the tests check against this list).
"""
from __future__ import annotations

import itertools
from typing import Iterator, NamedTuple

# --- register bits (SDM Vol. 3A 2.5 and 2.2.1), literal -------------------------------
CR0_PE = 1 << 0
CR0_WP = 1 << 16
CR0_PG = 1 << 31
CR4_PSE = 1 << 4
CR4_PAE = 1 << 5
CR4_LA57 = 1 << 12
CR4_SMEP = 1 << 20
CR4_SMAP = 1 << 21
CR4_PKE = 1 << 22
EFER_LME = 1 << 8
EFER_LMA = 1 << 10
EFER_NX = 1 << 11

REG_BITS = ("pg", "wp", "pse", "pae", "la57", "smep", "smap", "pke", "lme", "lma", "nx")


class State(NamedTuple):
    """One register state: the role-relevant bits (KVM_MMU_CR0/CR4/EFER_ROLE_BITS + LMA)."""

    pg: bool
    wp: bool
    pse: bool
    pae: bool
    la57: bool
    smep: bool
    smap: bool
    pke: bool
    lme: bool
    lma: bool
    nx: bool

    def cr0(self) -> int:
        return CR0_PE | (CR0_PG if self.pg else 0) | (CR0_WP if self.wp else 0)

    def cr4(self) -> int:
        return ((CR4_PSE if self.pse else 0) | (CR4_PAE if self.pae else 0)
                | (CR4_LA57 if self.la57 else 0) | (CR4_SMEP if self.smep else 0)
                | (CR4_SMAP if self.smap else 0) | (CR4_PKE if self.pke else 0))

    def efer(self) -> int:
        return ((EFER_LME if self.lme else 0) | (EFER_LMA if self.lma else 0)
                | (EFER_NX if self.nx else 0))


def all_states() -> Iterator[State]:
    """All 2^11 combinations, reachable or not."""
    for bits in itertools.product((False, True), repeat=len(REG_BITS)):
        yield State(*bits)


def is_reachable(s: State) -> bool:
    """SDM: the CPU sets EFER.LMA = LME && PG; entering long mode needs CR4.PAE."""
    return s.lma == (s.lme and s.pg) and (not s.lma or s.pae)


def reachable_states() -> list[State]:
    return [s for s in all_states() if is_reachable(s)]


#: PG=0: 2^9 (LMA=0, rest free); PG=1: LME=1 -> LMA=PAE=1, 2^7; LME=0 -> 2^8.  512+128+256.
REACHABLE_COUNT = 896

#: (smm, guest_mode) pairs a vCPU can be in: entering SMM leaves guest mode first.
SMM_GUEST_MODES = ((0, 0), (1, 0), (0, 1))


def guest_level(s: State) -> int:
    """Paging level per facts §2.3 table: none 0, 32-bit 2, PAE 3, 4-level 4, 5-level 5."""
    if not s.pg:
        return 0
    if not s.pae:
        return 2
    if not s.lma:
        return 3
    return 5 if s.la57 else 4


# --- 5.19+ ---------------------------------------------------------------------------
def expected_cpu_base_word(s: State, smm: int, guest_mode: int) -> int:
    """kvm_cpu_role.base (facts §2.3): access 7<<8, smm<<24, guest_mode<<17 always."""
    w = (7 << 8) | (smm << 24) | (guest_mode << 17)
    if not s.pg:
        return w | (1 << 7)                      # direct, level 0, nothing else
    w |= guest_level(s)                          # bits 0-3
    w |= int(not s.pae) << 4                     # has_4_byte_gpte
    w |= int(s.nx) << 12                         # efer_nx
    w |= int(s.wp) << 13                         # cr0_wp
    w |= int(s.smep and not s.wp) << 14          # smep_andnot_wp
    w |= int(s.smap and not s.wp) << 15          # smap_andnot_wp
    return w


def expected_cpu_ext_word(s: State) -> int:
    """kvm_mmu_extended_role, 5.19 layout: valid 0, execonly 1, pse 2, pke 3, smap 4,
    smep 5, la57 6, lma 7; only valid when paging is off."""
    w = 1
    if not s.pg:
        return w
    w |= int(s.pse) << 2
    w |= int(s.lma and s.pke) << 3
    w |= int(s.smap) << 4
    w |= int(s.smep) << 5
    w |= int(s.lma and s.la57) << 6
    w |= int(s.lma) << 7
    return w


def expected_cpu_role_u64(s: State, smm: int = 0, guest_mode: int = 0) -> int:
    return expected_cpu_base_word(s, smm, guest_mode) | expected_cpu_ext_word(s) << 32


def expected_tdp_root_word(smm: int, guest_mode: int, tdp_level: int, ad_enabled: bool) -> int:
    """kvm_calc_tdp_mmu_root_page_role: level, direct 1<<7, access 7<<8, efer_nx 1<<12,
    cr0_wp 1<<13 (constants), ad_disabled<<16, guest_mode<<17, smm<<24."""
    return (tdp_level | (1 << 7) | (7 << 8) | (1 << 12) | (1 << 13)
            | (int(not ad_enabled) << 16) | (guest_mode << 17) | (smm << 24))


def expected_shadow_root_word(s: State, smm: int, guest_mode: int) -> int:
    """Shadow root role per the facts §2.3 table: level 3 unless 4/5-level, direct = !PG,
    has_4_byte_gpte = PG && !PAE, efer_nx = 1, cr0_wp/sm*p_andnot_wp from the guest."""
    level = max(guest_level(s), 3)
    w = level | (7 << 8) | (1 << 12) | (smm << 24) | (guest_mode << 17)
    if not s.pg:
        return w | (1 << 7)
    w |= int(not s.pae) << 4
    w |= int(s.wp) << 13
    w |= int(s.smep and not s.wp) << 14
    w |= int(s.smap and not s.wp) << 15
    return w


def expected_npt_words(s: State, tdp_level: int, smm: int = 0) -> tuple[int, int]:
    """kvm_init_shadow_npt_mmu as called by nested_svm_init_mmu_context: CR0 = PG only
    (so WP=0), CR4.PKE cleared, guest_mode 1.  Returns (cpu_role.as_u64, root_role.word);
    root = cpu base with level = tdp_level and passthrough (1<<18) for 5-over-4."""
    npt = s._replace(wp=False, pke=False)
    cpu = expected_cpu_role_u64(npt, smm, 1)
    base = cpu & 0xFFFF_FFFF
    root = (base & ~0xF) | tdp_level
    if tdp_level == 5 and guest_level(s) == 4:
        root |= 1 << 18
    return cpu, root


def expected_ept_role_u64(level: int, accessed_dirty: bool, execonly: bool) -> int:
    """kvm_calc_shadow_ept_root_page_role: base = level | access 7<<8 | ad_disabled<<16 |
    guest_mode 1<<17; ext = valid | execonly<<1."""
    base = level | (7 << 8) | (int(not accessed_dirty) << 16) | (1 << 17)
    ext = 1 | (int(execonly) << 1)
    return base | ext << 32


# --- 5.18 (pre-series) ---------------------------------------------------------------
def expected_legacy_ext_word(s: State) -> int:
    """kvm_calc_mmu_role_ext, 5.18 layout: valid 0, execonly 1, cr0_pg 2, cr4_pae 3,
    cr4_pse 4, cr4_pke 5, cr4_smap 6, cr4_smep 7, cr4_la57 8, efer_lma 9."""
    w = 1
    if not s.pg:
        return w
    w |= 1 << 2
    w |= int(s.pae) << 3
    w |= int(s.pse) << 4
    w |= int(s.lma and s.pke) << 5
    w |= int(s.smap) << 6
    w |= int(s.smep) << 7
    w |= int(s.lma and s.la57) << 8
    w |= int(s.lma) << 9
    return w


def _legacy_common_base(s: State, smm: int, guest_mode: int) -> int:
    """kvm_calc_mmu_role_common: access 7; efer_nx/cr0_wp only when PG; smm; guest_mode."""
    w = (7 << 8) | (smm << 24) | (guest_mode << 17)
    if s.pg:
        w |= int(s.nx) << 12 | int(s.wp) << 13
    return w


def expected_legacy_tdp_u64(s: State, smm: int, guest_mode: int, tdp_level: int,
                            ad_enabled: bool) -> int:
    """5.18 kvm_calc_tdp_mmu_root_page_role: common + ad_disabled, level, direct 1<<7."""
    base = _legacy_common_base(s, smm, guest_mode)
    base |= tdp_level | (1 << 7) | (int(not ad_enabled) << 16)
    return base | expected_legacy_ext_word(s) << 32


def _legacy_shadow_common_base(s: State, smm: int, guest_mode: int) -> int:
    base = _legacy_common_base(s, smm, guest_mode)
    base |= int(s.pg and s.smep and not s.wp) << 14
    base |= int(s.pg and s.smap and not s.wp) << 15
    base |= int(s.pg and not s.pae) << 4
    return base


def expected_legacy_shadow_u64(s: State, smm: int, guest_mode: int) -> int:
    """5.18 kvm_calc_shadow_mmu_root_page_role: shadow common + direct = !PG, level 3
    unless long mode (4 or 5); efer_nx is the guest's (not forced)."""
    base = _legacy_shadow_common_base(s, smm, guest_mode)
    base |= int(not s.pg) << 7
    base |= (5 if s.la57 else 4) if s.lma else 3
    return base | expected_legacy_ext_word(s) << 32


def expected_legacy_npt_u64(s: State, tdp_level: int, smm: int = 0) -> int:
    """5.18 kvm_calc_shadow_npt_root_page_role (CR0 = PG only, PKE masked, guest mode)."""
    npt = s._replace(wp=False, pke=False)
    base = _legacy_shadow_common_base(npt, smm, 1) | tdp_level
    return base | expected_legacy_ext_word(npt) << 32
