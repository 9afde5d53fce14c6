"""The single ``mmu_role`` of Linux 5.18 and before, and the "no functional change" check.

Kernel counterparts (5.18.12, ``arch/x86/kvm/mmu/mmu.c``): ``kvm_calc_mmu_role_ext``,
``kvm_calc_mmu_role_common``, ``kvm_calc_tdp_mmu_root_page_role``,
``kvm_calc_shadow_root_page_role_common``, ``kvm_calc_shadow_mmu_root_page_role``,
``kvm_calc_shadow_npt_root_page_role``, ``kvm_calc_shadow_ept_root_page_role``,
``kvm_calc_nested_mmu_role``; ``init_kvm_tdp_mmu``, ``shadow_mmu_init_context``,
``kvm_init_shadow_npt_mmu`` and ``kvm_init_shadow_ept_mmu`` for the ``struct kvm_mmu``
fields.

Before the 5.19 refactoring a ``struct kvm_mmu`` had one ``union kvm_mmu_role mmu_role``
whose ``base`` was the root page's role *and* carried CPU state, plus four side fields for
whatever differed between the two: ``root_level`` (the guest's), ``shadow_root_level``
(KVM's), ``direct_map`` and ``ept_ad`` (facts §1.4, §2.2).  The series replaced them by
``cpu_role.base.level``, ``root_role.level``, ``root_role.direct`` and
``!cpu_role.base.ad_disabled``.  :func:`nfc_report` checks, over every reachable register
state, that those decisions did not change -- and shows the few role bits that did on
purpose.
"""
from __future__ import annotations

import dataclasses
import itertools
from collections import Counter, defaultdict
from typing import ClassVar, Iterable

from mmu.x86.bits import ACC_ALL
from mmu.x86.regs import CR0, CR4, EFER, Regs, paging_mode
from mmu.kvm.roles import (
    PT32_ROOT_LEVEL, PT32E_ROOT_LEVEL, PT64_ROOT_4LEVEL, PT64_ROOT_5LEVEL, TDP_LEVELS,
    FieldRow, PageRole, _bits, _check_flag, _check_tdp_level, _RolePair, _RoleWord,
    cpu_role, nested_ept_role, nested_mmu_role as nested_mmu_role_519, nested_npt_roles,
    shadow_root_role, tdp_root_role,
)


@dataclasses.dataclass(frozen=True)
class LegacyExtendedRole(_RoleWord):
    """``union kvm_mmu_extended_role`` as in 5.18 and before (facts §1.2, left column).

    Still has ``cr0_pg`` and ``cr4_pae``, which 5.19 found redundant with ``base.direct``
    and ``base.has_4_byte_gpte`` once the CPU role kept those for every MMU.  Bits 10-31
    are unused.
    """

    valid: int = _bits(0, 1)
    execonly: int = _bits(1, 1)
    cr0_pg: int = _bits(2, 1)
    cr4_pae: int = _bits(3, 1)
    cr4_pse: int = _bits(4, 1)
    cr4_pke: int = _bits(5, 1)
    cr4_smap: int = _bits(6, 1)
    cr4_smep: int = _bits(7, 1)
    cr4_la57: int = _bits(8, 1)
    efer_lma: int = _bits(9, 1)


@dataclasses.dataclass(frozen=True)
class MmuRole(_RolePair):
    """``union kvm_mmu_role`` (5.18): ``base`` is the root page role *and* CPU state.

    ``base`` uses the page-role layout of 5.18, which had no ``passthrough``: bit 18 is part
    of the unused bits, so it must be 0 here.
    """

    _EXT: ClassVar[type] = LegacyExtendedRole

    base: PageRole = dataclasses.field(default_factory=PageRole)
    ext: LegacyExtendedRole = dataclasses.field(default_factory=LegacyExtendedRole)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, since in (("passthrough", "5.19"), ("is_mirror", "6.14")):
            if getattr(self.base, name):
                raise ValueError(f"MmuRole.base.{name}=1 is out of range: 5.18 has no {name} "
                                 f"bit (added in {since}; unused in 5.18), allowed 0")

    def fields(self, era: object = None) -> list[FieldRow]:
        """As for a CPU role, without the 5.19-only ``passthrough`` row (and, whatever
        ``era`` says, without 6.14's ``is_mirror``: both are 0 in a 5.18 role)."""
        return [r for r in super().fields() if r.name not in ("base.passthrough",
                                                              "base.is_mirror")]


@dataclasses.dataclass(frozen=True)
class LegacyMmu:
    """The role-related fields of a 5.18 ``struct kvm_mmu`` after initialisation."""

    mmu_role: MmuRole
    root_level: int          # guest paging level (0 = off); 5.19: cpu_role.base.level
    shadow_root_level: int   # KVM's root level;             5.19: root_role.level
    direct_map: bool         # roots map GPAs directly;      5.19: root_role.direct
    ept_ad: bool             # nested EPT walker sets A/D;   5.19: !cpu_role.base.ad_disabled


def _root_level(regs: Regs) -> int:
    """``role_regs_to_root_level``: 0, PT32, PT32E, PT64 4/5-level."""
    if not regs.pg:
        return 0
    if regs.lma:
        return PT64_ROOT_5LEVEL if regs.la57 else PT64_ROOT_4LEVEL
    return PT32E_ROOT_LEVEL if regs.pae else PT32_ROOT_LEVEL


def _role_ext(regs: Regs) -> LegacyExtendedRole:
    """``kvm_calc_mmu_role_ext`` (5.18): CPU bits, only when paging is on; always valid."""
    if not regs.pg:
        return LegacyExtendedRole(valid=1)
    lma = regs.lma
    return LegacyExtendedRole(
        valid=1, cr0_pg=1, cr4_pae=regs.pae, cr4_pse=regs.pse, cr4_smap=regs.smap,
        cr4_smep=regs.smep,
        cr4_pke=lma and regs.pke,      # "PKEY and LA57 are active iff long mode is active"
        cr4_la57=lma and regs.la57, efer_lma=lma)


def _role_common(regs: Regs, smm: int, guest_mode: int) -> MmuRole:
    """``kvm_calc_mmu_role_common`` (5.18): access, NX/WP when paging, SMM, guest mode, ext.

    efer_nx and cr0_wp are the guest's even for TDP -- which is why a guest CR0.WP toggle
    changed the TDP root role before 5.19.
    """
    paging_mode(regs)
    base = PageRole(access=ACC_ALL, smm=_check_flag("smm", smm),
                    guest_mode=_check_flag("guest_mode", guest_mode))
    if regs.pg:
        base = base.replace(efer_nx=regs.nx, cr0_wp=regs.wp)
    return MmuRole(base, _role_ext(regs))


def _shadow_common(regs: Regs, smm: int, guest_mode: int) -> MmuRole:
    """``kvm_calc_shadow_root_page_role_common`` (5.18): adds the bits shadow pages need."""
    role = _role_common(regs, smm, guest_mode)
    wp = regs.wp
    base = role.base.replace(
        smep_andnot_wp=role.ext.cr4_smep and not wp,
        smap_andnot_wp=role.ext.cr4_smap and not wp,
        has_4_byte_gpte=regs.pg and not regs.pae)
    return role.replace(base=base)


def mmu_role(regs: Regs, tdp: bool = True, smm: bool = False, guest_mode: bool = False,
             tdp_level: int = 4, ad_enabled: bool = True) -> MmuRole:
    """The 5.18 root_mmu role: ``kvm_calc_tdp_mmu_root_page_role`` (``tdp=True``) or
    ``kvm_calc_shadow_mmu_root_page_role`` (``tdp=False``; tdp_level/ad_enabled unused).

    TDP: common + ad_disabled = (shadow_accessed_mask == 0), level = TDP level, direct=1,
    has_4_byte_gpte=0.  Shadow: shadow common + direct = !CR0.PG, level 3 unless long mode
    (then 4 or 5); efer_nx stays the guest's (5.19 forces 1, 362505deb8e2).
    """
    tdp = _check_flag("tdp", tdp)
    tdp_level = _check_tdp_level(tdp_level)
    ad_enabled = _check_flag("ad_enabled", ad_enabled)
    if tdp:
        role = _role_common(regs, smm, guest_mode)
        return role.replace(base=role.base.replace(
            ad_disabled=not ad_enabled, level=tdp_level, direct=1, has_4_byte_gpte=0))
    role = _shadow_common(regs, smm, guest_mode)
    level = (PT64_ROOT_5LEVEL if regs.la57 else PT64_ROOT_4LEVEL) if regs.lma else PT32E_ROOT_LEVEL
    return role.replace(base=role.base.replace(direct=not regs.pg, level=level))


def _npt_regs(l1_regs: Regs, tdp_level: int) -> Regs:
    """What nested_svm_init_mmu_context passes: CR0 = X86_CR0_PG, CR4 without PKE."""
    paging_mode(l1_regs)
    if not l1_regs.pg:
        raise ValueError("nested NPT needs L1 paging on (CR0.PG=1)")
    if _root_level(l1_regs) > tdp_level:
        raise ValueError(f"tdp_level={tdp_level} cannot shadow L1's {_root_level(l1_regs)}-"
                         f"level NPT: allowed tdp_level >= {_root_level(l1_regs)}")
    return l1_regs.replace(cr0=int(CR0.PE | CR0.PG), cr4=l1_regs.cr4 & ~int(CR4.PKE))


def shadow_npt_mmu_role(l1_regs: Regs, tdp_level: int = 4, smm: bool = False) -> MmuRole:
    """5.18 ``kvm_calc_shadow_npt_root_page_role``: shadow common over L1's NPT regs (CR0
    = PG only, CR4.PKE masked, as nested_svm_init_mmu_context passes them), direct=0,
    level = TDP level, guest mode.  No passthrough bit in 5.18: a 5-level root over L1's
    4-level NPT was mishandled until 84e5ffd045f3 (5.19)."""
    tdp_level = _check_tdp_level(tdp_level)
    role = _shadow_common(_npt_regs(l1_regs, tdp_level), smm, 1)
    return role.replace(base=role.base.replace(direct=0, level=tdp_level))


def shadow_ept_mmu_role(level: int = 4, accessed_dirty: bool = True, execonly: bool = False,
                        smm: bool = False) -> MmuRole:
    """5.18 ``kvm_calc_shadow_ept_root_page_role``: built from zero; smm copied from
    root_mmu's role (5.19 WARNs instead, daed87b8767c); ext = {execonly, valid} only."""
    cpu = nested_ept_role(level, accessed_dirty, execonly)     # validates the arguments
    base = cpu.base.replace(smm=_check_flag("smm", smm))
    return MmuRole(base, LegacyExtendedRole(valid=1, execonly=cpu.ext.execonly))


def nested_mmu_role(l2_regs: Regs, smm: bool = False) -> MmuRole:
    """5.18 ``kvm_calc_nested_mmu_role``: shadow common + direct=1 ("to try to detect bogus
    usage of the nested MMU", it has no pages) + level = L2's paging level; guest mode."""
    role = _shadow_common(l2_regs, smm, 1)
    return role.replace(base=role.base.replace(direct=1, level=_root_level(l2_regs)))


def init_mmu(regs: Regs, *, tdp: bool = True, smm: bool = False, guest_mode: bool = False,
             tdp_level: int = 4, ad_enabled: bool = True) -> LegacyMmu:
    """root_mmu after 5.18 ``init_kvm_tdp_mmu`` (tdp) or ``kvm_init_shadow_mmu`` ->
    ``shadow_mmu_init_context`` (shadow).

    TDP: shadow_root_level = TDP level, direct_map = true.  Shadow: direct_map set by
    nonpaging_init_context (true) or paging32/64_init_context (false), shadow_root_level =
    role level.  Both: root_level from the registers.  ``ept_ad`` is only written by
    kvm_init_shadow_ept_mmu, so root_mmu keeps its zero-initialised 0.
    """
    role = mmu_role(regs, tdp, smm, guest_mode, tdp_level, ad_enabled)
    direct = True if tdp else not regs.pg
    return LegacyMmu(role, _root_level(regs), role.base.level, direct, False)


def init_shadow_npt_mmu(l1_regs: Regs, tdp_level: int = 4, smm: bool = False) -> LegacyMmu:
    """guest_mmu after 5.18 ``kvm_init_shadow_npt_mmu`` (-> shadow_mmu_init_context)."""
    role = shadow_npt_mmu_role(l1_regs, tdp_level, smm)
    return LegacyMmu(role, _root_level(l1_regs), role.base.level, False, False)


def init_shadow_ept_mmu(level: int = 4, accessed_dirty: bool = True, execonly: bool = False,
                        smm: bool = False) -> LegacyMmu:
    """guest_mmu after 5.18 ``kvm_init_shadow_ept_mmu``: shadow_root_level = root_level =
    EPT level, ept_ad = accessed_dirty, direct_map = false."""
    role = shadow_ept_mmu_role(level, accessed_dirty, execonly, smm)
    return LegacyMmu(role, level, level, False, bool(accessed_dirty))


# --- the exhaustive "no functional change" check --------------------------------------
#: (smm, guest_mode) a vCPU can be in: KVM leaves guest mode before entering SMM.
SMM_GUEST_MODES = ((0, 0), (1, 0), (0, 1))

_ROLE_BITS = ((CR0.PG, "cr0"), (CR0.WP, "cr0"), (CR4.PSE, "cr4"), (CR4.PAE, "cr4"),
              (CR4.LA57, "cr4"), (CR4.SMEP, "cr4"), (CR4.SMAP, "cr4"), (CR4.PKE, "cr4"),
              (EFER.LME, "efer"), (EFER.LMA, "efer"), (EFER.NXE, "efer"))


def reachable_role_regs() -> list[Regs]:
    """Every register state that differs in a role-relevant bit (KVM_MMU_CR0/CR4/EFER
    role bits, plus EFER.LMA) and that ``paging_mode`` accepts: 896 states."""
    out = []
    for bits in itertools.product((0, 1), repeat=len(_ROLE_BITS)):
        val = {"cr0": int(CR0.PE), "cr4": 0, "efer": 0}
        for on, (flag, reg) in zip(bits, _ROLE_BITS):
            if on:
                val[reg] |= int(flag)
        regs = Regs(cr0=val["cr0"], cr3=0, cr4=val["cr4"], efer=val["efer"])
        try:
            paging_mode(regs)
        except ValueError:
            continue
        out.append(regs)
    return out


def describe_state(regs: Regs, smm: int = 0, guest_mode: int = 0) -> str:
    """``"PAE paging; WP NX SMEP"``-style one-liner of the role-relevant state."""
    names = [n for n, on in (("WP", regs.wp), ("PSE", regs.pse), ("PAE", regs.pae),
                             ("LA57", regs.la57), ("SMEP", regs.smep), ("SMAP", regs.smap),
                             ("PKE", regs.pke), ("LME", regs.lme), ("NX", regs.nx),
                             ("SMM", smm), ("guest-mode", guest_mode)) if on]
    mode = paging_mode(regs)
    return (f"{'no' if mode == 0 else mode.label} paging; "
            f"{' '.join(names) or 'no other role bits'}")


@dataclasses.dataclass(frozen=True)
class NfcRow:
    decision: str
    identical: int
    differing: int
    example: str        # one differing case, or "" when there is none
    explanation: str


@dataclasses.dataclass(frozen=True)
class NfcReport:
    rows: tuple[NfcRow, ...]
    register_states: int            # reachable register states enumerated (896)
    configs: tuple[str, ...]        # the MMU configurations each was run under

    def row(self, decision: str) -> NfcRow:
        for r in self.rows:
            if r.decision == decision:
                return r
        raise KeyError(f"no row {decision!r}; rows: {[r.decision for r in self.rows]}")


@dataclasses.dataclass
class _Tally:
    identical: int = 0
    differing: int = 0
    example: str = ""

    def add(self, same: bool, example) -> None:
        if same:
            self.identical += 1
        else:
            self.differing += 1
            if not self.example:
                self.example = example() if callable(example) else example


def _pairs(n: int) -> int:
    return n * (n - 1) // 2


def _pairwise(tally: _Tally, items: list[tuple[object, object, str]]) -> None:
    """Count pairs of states whose "equal?" verdict differs between the 5.18 key and the
    5.19 key (items: (key_518, key_519, label)), without visiting all pairs."""
    old, new = Counter(k for k, _, _ in items), Counter(k for _, k, _ in items)
    both = Counter((a, b) for a, b, _ in items)
    eq_old = sum(_pairs(c) for c in old.values())
    eq_new = sum(_pairs(c) for c in new.values())
    eq_both = sum(_pairs(c) for c in both.values())
    differing = eq_old + eq_new - 2 * eq_both
    tally.differing += differing
    tally.identical += _pairs(len(items)) - differing
    if differing and not tally.example:
        for side, (key_idx, other_idx) in (("5.18", (0, 1)), ("5.19", (1, 0))):
            groups: dict[object, dict[object, str]] = defaultdict(dict)
            for it in items:
                groups[it[key_idx]].setdefault(it[other_idx], it[2])
            for labels in groups.values():
                if len(labels) > 1:
                    a, b = list(labels.values())[:2]
                    other = "5.19" if side == "5.18" else "5.18"
                    tally.example = f"{a}  vs  {b}: equal in {side}, not in {other}"
                    return


def _hexdiff(old: PageRole, new: PageRole) -> str:
    changes = ", ".join(f"{n} {a}->{b}" for n, a, b in old.diff(new))
    return f"5.18 {old.word:#x} vs 5.19 {new.word:#x} ({changes})"


_WHY = {
    "root_level == cpu_role.base.level":
        "4d25502aa12e: both are the guest's paging level computed from CR0/CR4/EFER "
        "(0 with paging off).",
    "shadow_root_level == root_role.level":
        "a972e29c1d6c: TDP level for TDP; for shadow paging both take PAE (3) unless the "
        "guest is in long mode.",
    "direct_map == root_role.direct":
        "347a0d0ded16: TDP roots are always direct; shadow roots are direct exactly when "
        "guest paging is off.",
    "root page role word (TDP)":
        "Deliberate (2ba676774dfc): 5.19 sets cr0_wp=efer_nx=1 in the TDP root role, the "
        "format of KVM's pages; 5.18 copied the guest's CR0.WP/EFER.NX when CR0.PG=1 "
        "(0 otherwise).  Identical only for PG=1 with WP=1 and NX=1.",
    "root page role word (shadow)":
        "Deliberate (362505deb8e2): 5.19 stores efer_nx=1 because KVM runs shadowed guests "
        "with hardware EFER.NX=1; 5.18 had the guest's NX.  Identical only for PG=1, NX=1.",
    "states share a root (TDP)":
        "Consequence of the TDP role change: in 5.19 all states with the same SMM/guest "
        "mode share one TDP root; in 5.18 a CR0.WP or EFER.NX toggle (with paging on) or "
        "a CR0.PG toggle (unless WP=NX=0, when both words are 0x784) needed another "
        "root -- the grsecurity slowdown.",
    "states share a root (shadow)":
        "Consequence of the forced efer_nx: paging-on states whose 5.18 roots differed only "
        "in the guest's EFER.NX share one shadow root in 5.19.",
    "early return in init (TDP)":
        "No functional change: 5.18 compared mmu_role.as_u64, 5.19 compares cpu_role.as_u64 "
        "and root_role.word; both keys hold the same information (PG, paging level, PAE, "
        "WP, NX, SMEP, SMAP, PSE, PKE/LA57 in long mode, SMM, guest mode).",
    "early return in init (shadow)":
        "No functional change, as for TDP: the root role adds nothing the CPU role lacks.",
    "early return in init (nested MMU)":
        "No functional change: 5.18's nested role (direct forced to 1, level from regs) "
        "and the 5.19 cpu_role hold the same information.",
    "ept_ad == !cpu_role.base.ad_disabled (nested EPT)":
        "ec283cb1dcb9: the EPT walker's PT_HAVE_ACCESSED_DIRTY reads the role bit instead "
        "of the side field; both are the EPTP's A/D enable.",
    "root page role word (nested EPT)":
        "No change outside SMM; 5.18 copied root_mmu's smm bit, 5.19 WARNs (daed87b8767c) "
        "because KVM has no SMM transfer monitor (a state this check does not enumerate).",
    "root page role word (nested NPT)":
        "Deliberate (84e5ffd045f3, 5.19): passthrough=1 on a 5-level NPT root over L1's "
        "4-level NPT, which 5.18 mishandled (\"Fix shadowing 5-level NPT for 4-level NPT L1 "
        "guest\").",
}


def nfc_report(*, tdp_levels: Iterable[int] = TDP_LEVELS,
               ad_settings: Iterable[bool] = (True, False)) -> NfcReport:
    """Compare every 5.18 decision with its 5.19 replacement over all reachable states.

    States: :func:`reachable_role_regs` x (smm, guest_mode) in :data:`SMM_GUEST_MODES`;
    MMU configurations: TDP for each (tdp_level, A/D) and shadow paging, plus the nested
    EPT/NPT/MMU variants.  Per-state rows count states; "share a root" and "early return"
    rows count *pairs* of states within one configuration whose verdict (same role words?)
    differs between the eras.
    """
    tdp_levels = tuple(_check_tdp_level(t) for t in tdp_levels)
    ad_settings = tuple(bool(_check_flag("ad_enabled", a)) for a in ad_settings)
    states = reachable_role_regs()
    t: dict[str, _Tally] = defaultdict(_Tally)
    configs = [(True, lvl, ad) for lvl in tdp_levels for ad in ad_settings] + [(False, 4, True)]
    names = []
    for tdp, lvl, ad in configs:
        kind = "TDP" if tdp else "shadow"
        cfg = f"TDP {lvl}-level A/D {'on' if ad else 'off'}" if tdp else "shadow paging"
        names.append(cfg)
        share, early = [], []
        for regs, (smm, gm) in itertools.product(states, SMM_GUEST_MODES):
            old = init_mmu(regs, tdp=tdp, smm=smm, guest_mode=gm, tdp_level=lvl, ad_enabled=ad)
            cpu = cpu_role(regs, smm, gm)
            root = tdp_root_role(cpu, lvl, ad) if tdp else shadow_root_role(cpu)
            label = f"[{cfg}] {describe_state(regs, smm, gm)}"
            t["root_level == cpu_role.base.level"].add(
                old.root_level == cpu.base.level, label)
            t["shadow_root_level == root_role.level"].add(
                old.shadow_root_level == root.level, label)
            t["direct_map == root_role.direct"].add(old.direct_map == bool(root.direct), label)
            t[f"root page role word ({kind})"].add(
                old.mmu_role.base.word == root.word,
                lambda: f"{label}: {_hexdiff(old.mmu_role.base, root)}")
            share.append((old.mmu_role.base.word, root.word, label))
            early.append((old.mmu_role.as_u64, (cpu.as_u64, root.word), label))
        _pairwise(t[f"states share a root ({kind})"], share)
        _pairwise(t[f"early return in init ({kind})"], early)

    nested = []
    for regs, smm in itertools.product(states, (0, 1)):
        label = f"[nested MMU] L2 {describe_state(regs, smm, 1)}"
        nested.append((nested_mmu_role(regs, smm).as_u64, nested_mmu_role_519(regs, smm).as_u64,
                       label))
        if not regs.pg:
            continue
        for lvl in tdp_levels:
            if _root_level(regs) > lvl:
                continue
            old = init_shadow_npt_mmu(regs, lvl, smm)
            _, root = nested_npt_roles(regs, lvl, smm)
            t["root page role word (nested NPT)"].add(
                old.mmu_role.base.word == root.word,
                lambda: (f"[nested NPT, TDP {lvl}-level] L1 {describe_state(regs, smm)}: "
                         f"{_hexdiff(old.mmu_role.base, root)}"))
    _pairwise(t["early return in init (nested MMU)"], nested)
    for lvl, ad, xo in itertools.product(TDP_LEVELS, (True, False), (False, True)):
        old = init_shadow_ept_mmu(lvl, ad, xo)
        new = nested_ept_role(lvl, ad, xo)
        label = f"[nested EPT] level {lvl}, A/D {'on' if ad else 'off'}, execonly={int(xo)}"
        t["ept_ad == !cpu_role.base.ad_disabled (nested EPT)"].add(
            old.ept_ad == (not new.base.ad_disabled), label)
        t["root page role word (nested EPT)"].add(old.mmu_role.base.word == new.base.word,
                                                  label)
    names += ["nested NPT", "nested EPT", "nested MMU"]
    rows = tuple(NfcRow(d, t[d].identical, t[d].differing, t[d].example, why)
                 for d, why in _WHY.items() if d in t)
    return NfcReport(rows, len(states), tuple(names))


def render_nfc_table(report: NfcReport) -> str:
    """Plain-text table of :func:`nfc_report` for a reviewer: one line per decision with
    its counts and a verdict word (no colour needed), then the example and the reason."""
    if not isinstance(report, NfcReport):
        raise TypeError(f"report must be an NfcReport, not {type(report).__name__}")
    width = max(len(r.decision) for r in report.rows)
    head = f"{'decision':<{width}}  {'identical':>9}  {'differing':>9}  verdict"
    lines = [f"5.18 vs 5.19 over {report.register_states} register states x "
             f"(SMM, guest mode) in {len(SMM_GUEST_MODES)} combinations; configurations: "
             f"{', '.join(report.configs)}", "", head, "-" * len(head)]
    for r in report.rows:
        verdict = "same" if r.differing == 0 else "CHANGED"
        lines.append(f"{r.decision:<{width}}  {r.identical:>9}  {r.differing:>9}  {verdict}")
    lines.append("")
    for r in report.rows:
        lines.append(f"* {r.decision}")
        if r.example:
            lines.append(f"    example: {r.example}")
        lines.append(f"    why: {r.explanation}")
    return "\n".join(lines) + "\n"
