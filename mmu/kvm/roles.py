"""KVM's MMU roles as of Linux 5.19 (unchanged through 6.13; 6.14 adds ``is_mirror``), bit-exact.

Kernel counterparts: ``union kvm_mmu_page_role``, ``union kvm_mmu_extended_role`` and
``union kvm_cpu_role`` in ``arch/x86/include/asm/kvm_host.h``; the builders
``kvm_calc_cpu_role``, ``kvm_calc_tdp_mmu_root_page_role``, ``kvm_init_shadow_mmu``,
``kvm_init_shadow_npt_mmu``, ``kvm_calc_shadow_ept_root_page_role``, ``init_kvm_nested_mmu``
and ``kvm_mmu_child_role`` in ``arch/x86/kvm/mmu/mmu.c``.

Since the 2022 role refactoring (Paolo Bonzini, "KVM: MMU: MMU role refactoring", merged
for 5.19 -- facts §0.3) every ``struct kvm_mmu`` carries two roles:

* ``cpu_role`` (a :class:`CpuRole`, 64 bits): *how the guest's page tables look* -- the
  paging mode and every CR0/CR4/EFER bit that changes how a guest PTE is interpreted, plus
  SMM and guest mode.  The guest walker, permission bitmap and reserved-bit masks are
  derived from it.
* ``root_role`` (a :class:`PageRole`, 32 bits): *how KVM's own page tables look* -- the
  role of the root shadow/TDP page.  Two roots can be shared exactly when their words
  are equal, which is why the role is a union with a raw ``word``.

Before 5.19 the two were mixed into a single ``mmu_role``; see :mod:`mmu.kvm.legacy`.

Each role is a frozen dataclass whose fields are the kernel's, in bit order; ``.word``
(``.as_u64`` for the CPU role) packs it exactly as GCC lays out the bitfields on x86
(LSB first), so comparing roles is what the kernel does: comparing integers.

Which kernels have which fields.  The layout and the builders below were read, and found
identical, in 6.4.6, 6.12.19, 6.18.2 and 7.1.5 (``kvm_host.h``; ``kvm_calc_cpu_role``,
``kvm_calc_tdp_mmu_root_page_role``, ``kvm_init_shadow_mmu``, ``kvm_mmu_child_role`` and
the nested builders in ``mmu.c``), with one exception: 6.14 ("KVM: x86/mmu: Add an
is_mirror member for union kvm_mmu_page_role", TDX mirror page tables) named bit 19
``is_mirror``.  A field that exists only in some kernels carries the era flag that says so
(``PageRole.is_mirror``: :attr:`mmu.kvm.eras.Era.page_role_is_mirror`), and the calls that
depend on the kernel -- ``layout``, ``used_mask``, ``from_word``/``from_u64`` and
``fields`` -- take an ``era`` (an :class:`~mmu.kvm.eras.Era` or a preset name).  Without
one they describe the 5.19-6.13 union, the one every era before "6.18" has.  Mainline 7.2
changed the layout again (4-bit ``access``, no ``smep_andnot_wp``, ``cr4_smep`` in the base
role); no 7.2 tree could be read, so that layout is not modelled (chapter 9).
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

from mmu.x86.bits import ACC_ALL, check_int
from mmu.x86.regs import CR0, CR4, Regs, paging_mode

#: Page-table levels, as in arch/x86/kvm/mmu.h.
PT32_ROOT_LEVEL = 2
PT32E_ROOT_LEVEL = 3
PT64_ROOT_4LEVEL = 4
PT64_ROOT_5LEVEL = 5

#: TDP (EPT/NPT) root levels KVM can use (kvm_mmu_get_tdp_level).
TDP_LEVELS = (PT64_ROOT_4LEVEL, PT64_ROOT_5LEVEL)


class FieldRow(NamedTuple):
    """One bitfield of a role, as a view renders it."""

    name: str
    offset: int   # first bit, counted from bit 0 of the word (of as_u64 for a CpuRole)
    width: int
    value: int


def _bits(offset: int, width: int = 1, *, era_flag: str | None = None):
    """A role field occupying ``width`` bits from ``offset`` (declared in bit order).

    ``era_flag``: the :class:`~mmu.kvm.eras.Era` flag that is True in the kernels that
    have this field (None: every kernel the class describes)."""
    return dataclasses.field(default=0, metadata={"offset": offset, "width": width,
                                                  "era_flag": era_flag})


def _era_has(era: object, flag: str) -> bool:
    """Whether ``era`` (None, a preset name or an Era) has ``flag``; None means an era
    before the flag (the 5.19-6.13 layout every preset before "6.18" has)."""
    if era is None:
        return False
    from mmu.kvm.eras import era as make_era
    return bool(getattr(make_era(era), flag))


def _check_flag(name: str, value: object) -> int:
    """A 0/1 input such as ``smm`` or ``guest_mode``: bool or 0/1 int, else an error."""
    if isinstance(value, bool):
        return int(value)
    if not isinstance(value, int):
        raise TypeError(f"{name} must be a bool (or 0/1), not {type(value).__name__}")
    if value not in (0, 1):
        raise ValueError(f"{name}={value} is out of range: allowed 0 or 1 (or a bool)")
    return value


class _RoleWord:
    """Packing shared by the 32-bit role unions.

    Subclasses are frozen dataclasses whose fields are declared with :func:`_bits`; the
    layout is read from the field metadata, so the declaration *is* the bit table.
    """

    _WORD_BITS: ClassVar[int] = 32
    _layout_cache: ClassVar[dict] = {}

    @classmethod
    def _all_fields(cls) -> tuple[tuple[str, int, int], ...]:
        """``(name, offset, width)`` of every field any kernel has, in bit order (what
        packing, validation and ``diff`` use)."""
        lay = _RoleWord._layout_cache.get(cls)
        if lay is None:
            lay = tuple((f.name, f.metadata["offset"], f.metadata["width"])
                        for f in dataclasses.fields(cls))
            _RoleWord._layout_cache[cls] = lay
        return lay

    @classmethod
    def layout(cls, era: object = None) -> tuple[tuple[str, int, int], ...]:
        """``(name, offset, width)`` of every field the union has in ``era``, in bit
        order (None: the 5.19-6.13 union; "6.18" adds ``is_mirror``)."""
        gated = cls._era_flags()
        return tuple(f for f in cls._all_fields() if gated.get(f[0]) is None
                     or _era_has(era, gated[f[0]]))

    @classmethod
    def _era_flags(cls) -> dict[str, str | None]:
        return {f.name: f.metadata.get("era_flag") for f in dataclasses.fields(cls)}

    @classmethod
    def used_mask(cls, era: object = None) -> int:
        """Bits of the word that belong to a named field in ``era`` (the rest are
        ``unused``; None: the 5.19-6.13 union)."""
        mask = 0
        for _, off, width in cls.layout(era):
            mask |= ((1 << width) - 1) << off
        return mask

    def __post_init__(self) -> None:
        cls = type(self).__name__
        for name, off, width in self._all_fields():
            value = getattr(self, name)
            if isinstance(value, bool):
                value = int(value)
                object.__setattr__(self, name, value)
            if not isinstance(value, int):
                raise TypeError(f"{cls}.{name} must be an int, not {type(value).__name__}")
            if not 0 <= value < 1 << width:
                raise ValueError(
                    f"{cls}.{name}={value} is out of range: allowed 0 <= {name} < {1 << width} "
                    f"({width}-bit field at bit {off})")

    @property
    def word(self) -> int:
        """The union's ``word``: the fields packed LSB-first as GCC does on x86."""
        w = 0
        for name, off, _ in self._all_fields():
            w |= getattr(self, name) << off
        return w

    @classmethod
    def from_word(cls, word: int, era: object = None):
        """Unpack a word; refuses words with bits outside every field of ``era``'s union
        (the ``unused`` bits; ``era`` None: the 5.19-6.13 union, so bit 19 is refused
        unless ``era`` is a 6.14+ one such as "6.18")."""
        word = check_int(f"{cls.__name__} word", word, 0, 1 << cls._WORD_BITS)
        mask = cls.used_mask(era)
        stray = word & ~mask
        if stray:
            later = [n for n, off, w in cls._all_fields()
                     if (((1 << w) - 1) << off) & stray and not ((((1 << w) - 1) << off) & mask)]
            hint = (f"; {', '.join(later)} exists only in kernels whose era sets "
                    f"{', '.join(sorted({cls._era_flags()[n] for n in later}))} (e.g. "
                    f"era='6.18')" if later else "")
            raise ValueError(
                f"{cls.__name__} word {word:#x} sets unused bits {stray:#x}: allowed only "
                f"bits of {mask:#x} ({', '.join(n for n, _, _ in cls.layout(era))})"
                + hint)
        return cls(**{name: (word >> off) & ((1 << width) - 1)
                      for name, off, width in cls._all_fields()})

    def replace(self, **changes: int):
        """A copy with some fields changed (validated like the constructor)."""
        return dataclasses.replace(self, **changes)

    def diff(self, other) -> list[tuple[str, int, int]]:
        """``[(field, self's value, other's value)]`` for every field that differs."""
        if type(other) is not type(self):
            raise TypeError(f"can only diff a {type(self).__name__} with another, "
                            f"not {type(other).__name__}")
        return [(name, getattr(self, name), getattr(other, name))
                for name, _, _ in self._all_fields() if getattr(self, name) != getattr(other, name)]

    def fields(self, offset: int = 0, prefix: str = "", era: object = None) -> list[FieldRow]:
        """Rows ``(name, bit offset, width, value)`` for a table view: the fields of
        ``era``'s union (None: 5.19-6.13), plus any other field that is set (never hidden)."""
        keep = {n for n, _, _ in self.layout(era)}
        return [FieldRow(prefix + name, offset + off, width, getattr(self, name))
                for name, off, width in self._all_fields() if name in keep or getattr(self, name)]

    def brief(self) -> str:
        """The non-zero fields, e.g. ``level=4 direct access=7 efer_nx cr0_wp``."""
        parts = []
        for name, _, width in self._all_fields():
            v = getattr(self, name)
            if v:
                parts.append(name if width == 1 else f"{name}={v}")
        return " ".join(parts) or "(all zero)"


@dataclasses.dataclass(frozen=True)
class PageRole(_RoleWord):
    """``union kvm_mmu_page_role`` (5.19+ layout; facts §1.1).

    The role of one shadow or TDP page table page.  A page is looked up by (gfn, role.word),
    so every bit here splits pages that *must not* be shared -- the kvm_host.h comment
    counts how few combinations actually occur.  Bits 19-23 are unused before 6.14; 6.14
    names bit 19 ``is_mirror`` (see the module docstring on era-dependent fields).
    """

    #: Page-table level of this page (1 = 4 KiB PTEs ... 5).  In a CPU role: the guest's
    #: paging level, 0 when paging is off.
    level: int = _bits(0, 4)
    #: Guest PTEs are 4 bytes (32-bit non-PAE paging): one guest table is shadowed by
    #: several KVM pages, told apart by ``quadrant``.  0 for 8-byte gptes and direct pages.
    has_4_byte_gpte: int = _bits(4, 1)
    #: Which part of a 4-byte-gpte guest table this page shadows (level 1: 2 halves,
    #: level 2: 4 quarters).  Only non-zero with ``has_4_byte_gpte``.
    quadrant: int = _bits(5, 2)
    #: The page maps a gfn range directly (TDP, guest paging off, or a guest huge page),
    #: instead of shadowing a guest page table.
    direct: int = _bits(7, 1)
    #: ACC_* rights accumulated down to this page; parent entries with different rights
    #: aliasing one guest table need different pages (access.c check_effective_sp_permissions).
    access: int = _bits(8, 3)
    #: The page is being zapped and must never match a lookup.
    invalid: int = _bits(11, 1)
    #: SPTEs use the NX bit.
    efer_nx: int = _bits(12, 1)
    #: With CR0.WP=0 a supervisor write to a read-only gpte is allowed; KVM makes the SPTE
    #: writable but not user, so the same gfn needs different pages for WP=0 and WP=1.
    cr0_wp: int = _bits(13, 1)
    #: CR4.SMEP && !CR0.WP: the WP=0 trick above must also drop exec.  Implies !cr0_wp.
    smep_andnot_wp: int = _bits(14, 1)
    #: CR4.SMAP && !CR0.WP.  Implies !cr0_wp.
    smap_andnot_wp: int = _bits(15, 1)
    #: SPTEs track accessed/dirty without A/D bits (EPT with A/D off, or no A/D hardware).
    ad_disabled: int = _bits(16, 1)
    #: The page belongs to L2 (nested guest): L1's and L2's pages must not mix.
    guest_mode: int = _bits(17, 1)
    #: 5.19+ (84e5ffd045f3): a nested-NPT root of level 5 over L1's 4-level NPT; it has no
    #: gptes of its own.  Never set on child pages.
    passthrough: int = _bits(18, 1)
    #: 6.14+ (TDX, "KVM: x86/mmu: Add an is_mirror member for union kvm_mmu_page_role"):
    #: the page belongs to the *mirror* copy of a TD's private EPT, which KVM keeps and the
    #: TDX module is told about.  ``kvm_tdp_mmu_alloc_root(vcpu, true)`` sets it on the
    #: mirror root and ``tdp_mmu_init_child_sp`` copies it down; ``mmu->root_role`` never
    #: has it (the root-role builders are unchanged), so it is 0 for every VM this model
    #: runs (read: 6.18.2 kvm_host.h, mmu.c, tdp_mmu.c).  Bits 20-23 are unused.
    is_mirror: int = _bits(19, 1, era_flag="page_role_is_mirror")
    #: System management mode: selects memslot address space 1.  A whole byte so that
    #: kvm_mmu_role_as_id() is a shift.
    smm: int = _bits(24, 8)


@dataclasses.dataclass(frozen=True)
class ExtendedRole(_RoleWord):
    """``union kvm_mmu_extended_role`` (5.19+ layout; facts §1.2).

    CPU-role bits that affect only how guest PTEs are *interpreted* (permissions, reserved
    bits, huge pages), never the format of KVM's own pages -- so they are not in the page
    role.  Bits 8-31 are unused.  5.19 dropped the old ``cr0_pg`` and ``cr4_pae``
    (faf729621c96): "paging on" is ``!base.direct`` and "PAE" is ``!base.has_4_byte_gpte``.
    """

    #: Set whenever the role was computed; cleared by kvm_mmu_after_set_cpuid to force a
    #: recomputation (a role with valid=0 never matches a computed one).  The same call
    #: zeroes ``root_role.word`` in 5.19-6.8 and sets ``root_role.invalid`` since 6.9
    #: ("KVM: x86/mmu: Invalidate MMU root_role during CPUID update"; read in 6.4.6 and
    #: 6.12.19 mmu.c).
    valid: int = _bits(0, 1)
    #: Nested EPT: L1 allows execute-only EPT entries.
    execonly: int = _bits(1, 1)
    #: CR4.PSE: 4 MiB pages in 32-bit paging.
    cr4_pse: int = _bits(2, 1)
    #: CR4.PKE, only while in long mode (protection keys exist only in IA-32e paging).
    cr4_pke: int = _bits(3, 1)
    #: CR4.SMAP: the permission bitmap depends on it.
    cr4_smap: int = _bits(4, 1)
    #: CR4.SMEP: the permission bitmap depends on it.
    cr4_smep: int = _bits(5, 1)
    #: CR4.LA57, only while in long mode.
    cr4_la57: int = _bits(6, 1)
    #: EFER.LMA: 64-bit paging (reserved-bit masks, gbpages).
    efer_lma: int = _bits(7, 1)


class _RolePair:
    """``union { u64 as_u64; struct { kvm_mmu_page_role base; <ext> ext; } }``: packing
    shared by the 5.19 ``kvm_cpu_role`` and the 5.18 ``kvm_mmu_role`` (mmu.kvm.legacy), which
    differ only in the extended role's layout (``_EXT``)."""

    _EXT: ClassVar[type]

    def __post_init__(self) -> None:
        cls = type(self).__name__
        if not isinstance(self.base, PageRole):
            raise TypeError(f"{cls}.base must be a PageRole, not {type(self.base).__name__}")
        if not isinstance(self.ext, self._EXT):
            raise TypeError(f"{cls}.ext must be a {self._EXT.__name__}, "
                            f"not {type(self.ext).__name__}")

    @property
    def as_u64(self) -> int:
        """``base.word | ext.word << 32`` (little-endian union)."""
        return self.base.word | self.ext.word << 32

    @classmethod
    def from_u64(cls, value: int, era: object = None):
        """Unpack ``as_u64``; ``era`` as for :meth:`PageRole.from_word`."""
        value = check_int(f"{cls.__name__} as_u64", value, 0, 1 << 64)
        return cls(PageRole.from_word(value & 0xFFFF_FFFF, era), cls._EXT.from_word(value >> 32))

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def diff(self, other) -> list[tuple[str, int, int]]:
        """Differences as ``("base.cr0_wp", old, new)`` / ``("ext.cr4_smep", old, new)``."""
        if type(other) is not type(self):
            raise TypeError(f"can only diff a {type(self).__name__} with another, "
                            f"not {type(other).__name__}")
        return ([("base." + n, a, b) for n, a, b in self.base.diff(other.base)]
                + [("ext." + n, a, b) for n, a, b in self.ext.diff(other.ext)])

    def fields(self, era: object = None) -> list[FieldRow]:
        """Rows for both halves; ext offsets count from bit 32 of ``as_u64``."""
        return self.base.fields(0, "base.", era) + self.ext.fields(32, "ext.", era)

    def brief(self) -> str:
        return f"base[{self.base.brief()}] ext[{self.ext.brief()}]"


@dataclasses.dataclass(frozen=True)
class CpuRole(_RolePair):
    """``union kvm_cpu_role`` (5.19+; facts §1.3).

    ``base`` reuses the page-role layout so that, for shadow paging, the root role can be
    derived from it by changing a few fields (:func:`shadow_root_role`).
    """

    _EXT: ClassVar[type] = ExtendedRole

    base: PageRole = dataclasses.field(default_factory=PageRole)
    ext: ExtendedRole = dataclasses.field(default_factory=ExtendedRole)


def cpu_role(regs: Regs, smm: bool = False, guest_mode: bool = False) -> CpuRole:
    """``kvm_calc_cpu_role`` (mmu.c, 5.19 through 6.4): the role of the guest's paging.

    Inputs are what ``vcpu_to_role_regs`` keeps (CR0.PG/WP, CR4.PSE/PAE/LA57/SMEP/SMAP/PKE,
    EFER) plus is_smm() and is_guest_mode().  With paging off only ``direct`` (plus access,
    smm, guest_mode, ext.valid) is set: with no guest PTEs, nothing else has a meaning, so
    toggling WP/NX/SMEP... while paging is off yields the same role.
    """
    paging_mode(regs)   # refuse states no CPU can be in
    smm = _check_flag("smm", smm)
    guest_mode = _check_flag("guest_mode", guest_mode)
    if not regs.pg:
        return CpuRole(PageRole(access=ACC_ALL, direct=1, smm=smm, guest_mode=guest_mode),
                       ExtendedRole(valid=1))
    wp, lma = regs.wp, regs.lma
    if lma:
        level = PT64_ROOT_5LEVEL if regs.la57 else PT64_ROOT_4LEVEL
    else:
        level = PT32E_ROOT_LEVEL if regs.pae else PT32_ROOT_LEVEL
    base = PageRole(
        level=level,
        has_4_byte_gpte=not regs.pae,
        access=ACC_ALL,
        efer_nx=regs.nx,
        cr0_wp=wp,
        smep_andnot_wp=regs.smep and not wp,
        smap_andnot_wp=regs.smap and not wp,
        guest_mode=guest_mode,
        smm=smm,
    )
    ext = ExtendedRole(
        valid=1,
        cr4_pse=regs.pse,
        cr4_pke=lma and regs.pke,      # protection keys and LA57 exist only in long mode
        cr4_smap=regs.smap,
        cr4_smep=regs.smep,
        cr4_la57=lma and regs.la57,
        efer_lma=lma,
    )
    return CpuRole(base, ext)


def _check_cpu_role(role: object) -> CpuRole:
    if not isinstance(role, CpuRole):
        raise TypeError(f"cpu_role must be a CpuRole, not {type(role).__name__}")
    return role


def _check_tdp_level(tdp_level: object) -> int:
    if isinstance(tdp_level, bool) or not isinstance(tdp_level, int):
        raise TypeError(f"tdp_level must be an int, not {type(tdp_level).__name__}")
    if tdp_level not in TDP_LEVELS:
        raise ValueError(f"tdp_level={tdp_level} is out of range: allowed {TDP_LEVELS}")
    return tdp_level


def tdp_root_role(cpu_role: CpuRole, tdp_level: int = 4, ad_enabled: bool = True) -> PageRole:
    """``kvm_calc_tdp_mmu_root_page_role`` (5.19-6.4): the root of a direct EPT/NPT table.

    ``cr0_wp`` and ``efer_nx`` are constant 1 -- "matching the format of shadow pages rather
    than the format of guest pages" (2ba676774dfc): TDP pages translate GPAs and never
    contain guest permissions, so a guest CR0.WP/NX/SMEP/SMAP/PG or paging-level change does
    not change the root role.  Only SMM and guest mode carry over from the CPU role, which
    leaves at most 6 distinct direct roots (level 4/5 x {normal, SMM, guest mode}).
    ``ad_disabled`` is ``!kvm_ad_enabled()`` (no A/D bits in the EPT/NPT format in use).
    ``tdp_level`` is kvm_mmu_get_tdp_level()'s result.
    """
    cpu = _check_cpu_role(cpu_role)
    return PageRole(
        level=_check_tdp_level(tdp_level),
        direct=1,
        has_4_byte_gpte=0,
        access=ACC_ALL,
        cr0_wp=1,
        efer_nx=1,
        ad_disabled=not _check_flag("ad_enabled", ad_enabled),
        guest_mode=cpu.base.guest_mode,
        smm=cpu.base.smm,
    )


def shadow_root_role(cpu_role: CpuRole) -> PageRole:
    """Root role of ``kvm_init_shadow_mmu`` (5.19-6.4; shadow paging, root_mmu).

    The CPU role's base, because shadow pages inherit the guest's WP/SMEP/SMAP/PTE-size
    semantics, with two changes: ``level = max(level, 3)`` ("KVM uses PAE paging whenever
    the guest isn't using 64-bit paging", so 32-bit, PAE and nonpaging guests get a PAE
    root), and ``efer_nx = 1`` because KVM runs shadowed guests with hardware EFER.NX=1
    (362505deb8e2: NX is needed for the iTLB-multihit workaround and for the
    CR0.WP=0/CR4.SMEP=1/EFER.NX=0 permission trick).
    """
    base = _check_cpu_role(cpu_role).base
    return base.replace(level=max(base.level, PT32E_ROOT_LEVEL), efer_nx=1)


def nested_npt_roles(l1_regs: Regs, tdp_level: int = 4, smm: bool = False
                     ) -> tuple[CpuRole, PageRole]:
    """``kvm_init_shadow_npt_mmu`` (5.19-6.4): guest_mmu shadowing L1's nested page table.

    The NPT format is L1's own paging mode, so the CPU role is computed from L1's CR4 and
    EFER -- but, as ``nested_svm_init_mmu_context`` (svm/nested.c) calls it, with CR0 =
    X86_CR0_PG only ("CR0.WP is explicitly ignored, while CR0.PG is required": NPT walks
    are always user-mode-like accesses, WP is meaningless) and with CR4.PKE masked off
    (protection keys do not apply to NPT).  So ``cr0_wp`` is 0 and ``smep/smap_andnot_wp``
    follow CR4.SMEP/SMAP.  guest_mode is 1: this MMU exists only while L2 runs.

    Root role: the CPU base with ``level`` = KVM's TDP level, and ``passthrough = 1`` when
    that is 5 while L1's NPT is 4-level (84e5ffd045f3: the extra top level has no gptes).
    ``efer_nx`` is L1's EFER.NX, not forced.

    Raises ValueError if L1 paging is off (the kernel's WARN_ON_ONCE(cpu_role.base.direct):
    NPT needs CR0.PG=1) or if a 4-level TDP would have to shadow a 5-level L1 NPT (L1 can
    use LA57 only if the host can, and then KVM's NPT is 5-level).
    """
    paging_mode(l1_regs)
    if not l1_regs.pg:
        raise ValueError("nested NPT needs L1 paging on (CR0.PG=1): kvm_init_shadow_npt_mmu "
                         "WARNs when the NPT CPU role is direct")
    tdp_level = _check_tdp_level(tdp_level)
    regs = l1_regs.replace(cr0=int(CR0.PE | CR0.PG), cr4=l1_regs.cr4 & ~int(CR4.PKE))
    cpu = cpu_role(regs, smm=smm, guest_mode=True)
    if cpu.base.level > tdp_level:
        raise ValueError(f"tdp_level={tdp_level} cannot shadow L1's {cpu.base.level}-level "
                         f"NPT: allowed tdp_level >= {cpu.base.level}")
    root = cpu.base.replace(level=tdp_level)
    if tdp_level == PT64_ROOT_5LEVEL and cpu.base.level == PT64_ROOT_4LEVEL:
        root = root.replace(passthrough=1)
    return cpu, root


def nested_ept_role(level: int = 4, accessed_dirty: bool = True, execonly: bool = False,
                    *, smm: bool = False) -> CpuRole:
    """``kvm_calc_shadow_ept_root_page_role`` (5.19-6.4): guest_mmu shadowing L1's EPT.

    Built from zero, since nothing of L1's or L2's CR0/CR4/EFER affects an EPT walk:
    level = the EPTP's page-walk length, direct=0, has_4_byte_gpte=0, ad_disabled =
    !EPTP A/D enable, guest_mode=1, access=ACC_ALL; ext holds only ``execonly`` and
    ``valid``.  ``kvm_init_shadow_ept_mmu`` uses ``.base`` unchanged as the root role.
    smm is always 0: "KVM does not support SMM transfer monitors" (daed87b8767c), so
    ``smm=True`` raises ValueError where the kernel WARNs.
    """
    if isinstance(level, bool) or not isinstance(level, int):
        raise TypeError(f"level must be an int, not {type(level).__name__}")
    if level not in TDP_LEVELS:
        raise ValueError(f"EPT level={level} is out of range: allowed {TDP_LEVELS}")
    if _check_flag("smm", smm):
        raise ValueError("nested EPT cannot be used in SMM (smm=True): KVM does not support "
                         "SMM transfer monitors")
    base = PageRole(level=level, has_4_byte_gpte=0, direct=0, access=ACC_ALL,
                    ad_disabled=not _check_flag("accessed_dirty", accessed_dirty),
                    guest_mode=1)
    return CpuRole(base, ExtendedRole(valid=1, execonly=_check_flag("execonly", execonly)))


def nested_mmu_role(l2_regs: Regs, smm: bool = False) -> CpuRole:
    """``init_kvm_nested_mmu`` (5.19-6.4): the walker of L2's own page tables (L2 GVA ->
    L2 GPA) used when emulating for L2 with TDP.  Only the CPU role is computed and
    compared; this MMU has no roots, so its root_role is unused.  guest_mode is 1.
    """
    return cpu_role(l2_regs, smm=smm, guest_mode=True)


def child_role(parent: PageRole, *, level: int, direct: bool, access: int,
               quadrant: int = 0) -> PageRole:
    """``kvm_mmu_child_role`` (6.0+): the role of the page a parent SPTE points to.

    Start from the parent page's role, one level down, with the new ``access`` and
    ``direct``; ``passthrough`` is cleared (only a root can be passthrough).  With 4-byte
    gptes the child is a level-1 page and ``quadrant`` = (index of the parent SPTE) & 1
    selects which half of the 1024-entry guest page table it shadows; otherwise quadrant 0.
    (5.18/5.19 built child roles from the MMU's root role instead -- facts §6.)
    """
    if not isinstance(parent, PageRole):
        raise TypeError(f"parent must be a PageRole, not {type(parent).__name__}")
    level = check_int("level", level, 1, 5)
    if level != parent.level - 1:
        raise ValueError(f"child level={level} is out of range: allowed only parent.level - 1 "
                         f"= {parent.level - 1}")
    access = check_int("access", access, 0, ACC_ALL + 1)
    max_quadrant = 1 if parent.has_4_byte_gpte else 0
    quadrant = check_int("quadrant", quadrant, 0, max_quadrant + 1)
    if parent.has_4_byte_gpte and level != 1:
        raise ValueError(f"child level={level} of a 4-byte-gpte page: allowed only level 1 "
                         f"(kvm_mmu_child_role WARNs otherwise)")
    return parent.replace(level=level, direct=_check_flag("direct", direct), access=access,
                          passthrough=0, quadrant=quadrant)
