"""Control registers, EFER, RFLAGS and the paging mode they select.

Bit names are the SDM's (Vol. 3A 2.5, "Control Registers"; 2.2.1 "IA32_EFER").
``Regs`` is the slice of vCPU state that decides how a linear address is
translated; ``paging_mode`` names the mode and refuses states no CPU can be in
(the MOV-to-CR0/CR4 and WRMSR checks that would have raised #GP).
"""
from __future__ import annotations

import dataclasses
import enum

from mmu.x86.bits import check_bool, check_int


class CR0(enum.IntFlag):
    PE = 1 << 0
    MP = 1 << 1
    EM = 1 << 2
    TS = 1 << 3
    ET = 1 << 4
    NE = 1 << 5
    WP = 1 << 16
    AM = 1 << 18
    NW = 1 << 29
    CD = 1 << 30
    PG = 1 << 31


class CR4(enum.IntFlag):
    VME = 1 << 0
    PVI = 1 << 1
    TSD = 1 << 2
    DE = 1 << 3
    PSE = 1 << 4
    PAE = 1 << 5
    MCE = 1 << 6
    PGE = 1 << 7
    PCE = 1 << 8
    OSFXSR = 1 << 9
    OSXMMEXCPT = 1 << 10
    UMIP = 1 << 11
    LA57 = 1 << 12
    VMXE = 1 << 13
    SMXE = 1 << 14
    FSGSBASE = 1 << 16
    PCIDE = 1 << 17
    OSXSAVE = 1 << 18
    SMEP = 1 << 20
    SMAP = 1 << 21
    PKE = 1 << 22
    CET = 1 << 23
    PKS = 1 << 24


class EFER(enum.IntFlag):
    SCE = 1 << 0
    LME = 1 << 8
    LMA = 1 << 10
    NXE = 1 << 11
    SVME = 1 << 12
    LMSLE = 1 << 13
    FFXSR = 1 << 14
    TCE = 1 << 15


class RFLAGS(enum.IntFlag):
    CF = 1 << 0
    FIXED1 = 1 << 1   # always reads as 1 on hardware
    PF = 1 << 2
    AF = 1 << 4
    ZF = 1 << 6
    SF = 1 << 7
    TF = 1 << 8
    IF = 1 << 9
    DF = 1 << 10
    OF = 1 << 11
    NT = 1 << 14
    RF = 1 << 16
    VM = 1 << 17
    AC = 1 << 18
    VIF = 1 << 19
    VIP = 1 << 20
    ID = 1 << 21


class PagingMode(enum.IntEnum):
    """The paging mode; the value is the number of paging-structure levels
    (KVM's ``cpu_role.base.level``: 0, PT32_ROOT_LEVEL=2, PT32E_ROOT_LEVEL=3,
    PT64_ROOT_4LEVEL=4, PT64_ROOT_5LEVEL=5)."""

    NONE = 0
    BIT32 = 2
    PAE = 3
    LEVEL4 = 4
    LEVEL5 = 5

    @property
    def label(self) -> str:
        return {0: "none", 2: "32-bit", 3: "PAE", 4: "4-level", 5: "5-level"}[self.value]


@dataclasses.dataclass(frozen=True)
class Regs:
    """The registers that select and steer paging.

    Values are plain ints (IntFlag members are ints too).  Construction checks
    only widths; architectural consistency is checked by :func:`paging_mode`,
    which every consumer calls, so a teaching notebook can still *show* an
    impossible combination and explain why it is refused.
    """

    cr0: int
    cr3: int
    cr4: int
    efer: int
    rflags: int = int(RFLAGS.FIXED1)
    pkru: int = 0

    def __post_init__(self) -> None:
        for name, bits in (("cr0", 64), ("cr3", 64), ("cr4", 64), ("efer", 64),
                           ("rflags", 64), ("pkru", 32)):
            object.__setattr__(self, name, check_int(name, getattr(self, name), 0, 1 << bits))

    def replace(self, **changes: int) -> "Regs":
        return dataclasses.replace(self, **changes)

    # Convenience predicates, named like the kernel's is_cr0_wp() & co.
    @property
    def pg(self) -> bool: return bool(self.cr0 & CR0.PG)
    @property
    def wp(self) -> bool: return bool(self.cr0 & CR0.WP)
    @property
    def pse(self) -> bool: return bool(self.cr4 & CR4.PSE)
    @property
    def pae(self) -> bool: return bool(self.cr4 & CR4.PAE)
    @property
    def la57(self) -> bool: return bool(self.cr4 & CR4.LA57)
    @property
    def smep(self) -> bool: return bool(self.cr4 & CR4.SMEP)
    @property
    def smap(self) -> bool: return bool(self.cr4 & CR4.SMAP)
    @property
    def pke(self) -> bool: return bool(self.cr4 & CR4.PKE)
    @property
    def nx(self) -> bool: return bool(self.efer & EFER.NXE)
    @property
    def lme(self) -> bool: return bool(self.efer & EFER.LME)
    @property
    def lma(self) -> bool: return bool(self.efer & EFER.LMA)
    @property
    def ac(self) -> bool: return bool(self.rflags & RFLAGS.AC)

    @property
    def mode(self) -> PagingMode:
        return paging_mode(self)


def paging_mode(regs: Regs) -> PagingMode:
    """Name the paging mode of ``regs`` (SDM Vol. 3A 4.1.1, table 4-1).

    Raises ValueError for register states that no CPU can reach, each of which
    a MOV to CR0/CR4 or WRMSR(EFER) would have refused with #GP:

    * CR0.PG=1 with CR0.PE=0;  CR0.NW=1 with CR0.CD=0;
    * EFER.LMA set but not equal to EFER.LME AND CR0.PG (the CPU sets LMA itself);
    * long mode (LME and PG) without CR4.PAE.
    """
    if not isinstance(regs, Regs):
        raise TypeError(f"regs must be an mmu.Regs, not {type(regs).__name__}")
    cr0, cr4, efer = regs.cr0, regs.cr4, regs.efer
    if cr0 & CR0.PG and not cr0 & CR0.PE:
        raise ValueError(f"cr0={cr0:#x}: CR0.PG=1 requires CR0.PE=1 (MOV to CR0 would #GP)")
    if cr0 & CR0.NW and not cr0 & CR0.CD:
        raise ValueError(f"cr0={cr0:#x}: CR0.NW=1 requires CR0.CD=1 (MOV to CR0 would #GP)")
    if cr0 >> 32:
        raise ValueError(f"cr0={cr0:#x}: bits 63:32 are reserved (allowed cr0 < 0x100000000)")
    pg = bool(cr0 & CR0.PG)
    lme = bool(efer & EFER.LME)
    lma = bool(efer & EFER.LMA)
    if lma != (lme and pg):
        raise ValueError(
            f"efer={efer:#x} with cr0={cr0:#x}: EFER.LMA must equal EFER.LME AND CR0.PG "
            f"(the CPU sets LMA itself when it enables paging with LME=1)")
    if lma and not cr4 & CR4.PAE:
        raise ValueError(f"cr4={cr4:#x}: long mode (EFER.LMA=1) requires CR4.PAE=1 "
                         f"(enabling paging would #GP)")
    if not pg:
        return PagingMode.NONE
    if not cr4 & CR4.PAE:
        return PagingMode.BIT32
    if not lma:
        return PagingMode.PAE
    return PagingMode.LEVEL5 if cr4 & CR4.LA57 else PagingMode.LEVEL4


_MODE_NAMES = {"none": PagingMode.NONE, "32-bit": PagingMode.BIT32, "pae": PagingMode.PAE,
               "4-level": PagingMode.LEVEL4, "5-level": PagingMode.LEVEL5}


def make_regs(mode: str | PagingMode, *, cr3: int = 0, wp: bool = True, nx: bool = True,
              pse: bool = True, smep: bool = False, smap: bool = False, pke: bool = False,
              ac: bool = False, pkru: int = 0) -> Regs:
    """Build a consistent ``Regs`` for a paging mode by name.

    ``mode`` is one of "none", "32-bit", "PAE", "4-level", "5-level" (or a
    PagingMode).  Everything not named here is what a booted Linux guest has:
    CR0.PE|ET|NE, and EFER.SCE in long mode.
    """
    if isinstance(mode, str):
        key = mode.lower()
        if key not in _MODE_NAMES:
            raise ValueError(f"mode {mode!r} is not one of {tuple(_MODE_NAMES)}")
        m = _MODE_NAMES[key]
    elif isinstance(mode, PagingMode):
        m = mode
    else:
        raise TypeError(f"mode must be a str or PagingMode, not {type(mode).__name__}")
    for name, flag in (("wp", wp), ("nx", nx), ("pse", pse), ("smep", smep), ("smap", smap),
                       ("pke", pke), ("ac", ac)):
        check_bool(name, flag)
    cr0 = CR0.PE | CR0.ET | CR0.NE
    cr4 = CR4(0)
    efer = EFER(0)
    if m != PagingMode.NONE:
        cr0 |= CR0.PG
    if wp:
        cr0 |= CR0.WP
    if pse:
        cr4 |= CR4.PSE
    if m >= PagingMode.PAE:
        cr4 |= CR4.PAE
    if m >= PagingMode.LEVEL4:
        efer |= EFER.LME | EFER.LMA | EFER.SCE
    if m == PagingMode.LEVEL5:
        cr4 |= CR4.LA57
    if nx:
        efer |= EFER.NXE
    if smep:
        cr4 |= CR4.SMEP
    if smap:
        cr4 |= CR4.SMAP
    if pke:
        cr4 |= CR4.PKE
    rflags = RFLAGS.FIXED1 | (RFLAGS.AC if ac else 0)
    regs = Regs(cr0=int(cr0), cr3=cr3, cr4=int(cr4), efer=int(efer), rflags=int(rflags), pkru=pkru)
    paging_mode(regs)
    return regs
