"""Two-dimensional paging: the TDP MMU's roots and tables, and the 2D (nested) walk.

Kernel counterparts: ``arch/x86/kvm/mmu/tdp_mmu.c`` (``kvm_tdp_mmu_get_vcpu_root_hpa`` up to
6.8, ``kvm_tdp_mmu_alloc_root`` since 6.9; ``kvm_tdp_mmu_put_root``;
``kvm_tdp_mmu_invalidate_all_roots`` up to 6.13, ``kvm_tdp_mmu_invalidate_roots(kvm, types)``
since 6.14; ``kvm_tdp_mmu_map``; names read in the 6.4.6, 6.12.19 and 6.18.2 tdp_mmu.h) and, for
the walk, ``paging_tmpl.h`` ``FNAME(walk_addr_generic)`` where every guest table address goes
through ``kvm_translate_gpa`` (nested paging, as the hardware page walker does with EPT/NPT).

With TDP (Intel EPT, AMD NPT) the guest's page tables translate GVA -> GPA on their own and
KVM only builds GPA -> HPA tables, one set per *root role*: the TDP root role has constant
``cr0_wp = efer_nx = 1`` and depends on the guest only through SMM and guest mode (facts §2.3),
so at most a handful of roots exist per VM.  :class:`TdpMMU` keeps them:

* ``get_root(role)`` reuses a valid root with the same role word or allocates one;
* roots are reference counted.  Before upstream commit edbdb43fc96b ("KVM: x86/mmu: Preserve
  TDP MMU roots until they are explicitly invalidated", mainline Linux 6.4; backported to
  6.3.2 as 2ec1fe292d6e and to 6.1.y) a root was freed when the
  last vCPU reference went, so an MMU unload + reload rebuilt every table; since then the TDP
  MMU holds its own reference (new roots start at refcount 2) until ``invalidate_all``.
  :meth:`TdpMMU.put_root` takes ``preserve`` to model either behaviour.  One vCPU is enough:
  ``refcount`` counts vCPU references only, and "the TDP MMU's own reference" is a flag.
* ``map(root, gpa, access)`` is an EPT-violation / NPT-fault handler: it builds the missing
  tables and a 4 KiB leaf for the faulting page (``kvm_tdp_mmu_map``; the host backs guest RAM
  with 4 KiB pages, so no huge leaves), using the fixed host layout of :mod:`mmu.kvm.shadow`
  (``hpa = gpa + 2**51``).  Tables are real entries in host memory (``TdpMMU.mem``), written by
  :class:`mmu.x86.pagetable.EptBuilder` (Intel) or a 4/5-level :class:`~mmu.x86.pagetable.PageTableBuilder`
  (AMD NPT tables are ordinary x86-64 tables, walked as user accesses).

:func:`two_d_walk` is the hardware's nested walk: the guest walk of :func:`mmu.x86.walker.walk`
(same rules, same faults), except that every guest table read -- starting with the table CR3
points to -- and finally the data GPA are first translated by an EPT/NPT walk.  With n guest
levels and m TDP levels that is n·(m+1) + m = (n+1)(m+1) - 1 memory references: 24 for
4-level on 4-level, 35 for 5-on-5.

PAE guests are where the vendors differ.  Intel CPUs keep the four PDPTEs in PDPTE registers,
loaded when MOV to CR3 (or a MOV to CR0/CR4 that enters PAE paging, or a task switch) executes
and, under VMX, from the VMCS ``GUEST_PDPTRn`` fields at VM entry (SDM Vol. 3A 4.4.1 "PDPTE
Registers"; KVM: ``load_pdptrs`` in x86.c,
``ept_load_pdptrs``/``ept_save_pdptrs`` in vmx.c).  With EPT the load translates the PDPTEs'
guest-physical addresses through EPT as *reads* (SDM Vol. 3C 29.3.1 and 29.3.3.2: "loads of
the PDPTE registers ... are treated as reads"); a walk then starts at the register and reads
only the guest PD and PT: (2+1)(m+1) - 1 = 14 references on 4-level EPT.  AMD has no PDPTE
registers under NPT (APM Vol. 2 15.25 "Nested Paging"; KVM's ``svm_cache_reg`` reads
``VCPU_EXREG_PDPTR`` back from guest memory with ``load_pdptrs`` for that reason): every walk
reads the PDPTE from guest memory through the nested tables, (3+1)(m+1) - 1 = 19.  So on
Intel a PDPTE changed in memory is not seen until CR3 is written again; on AMD the next walk
sees it.  :func:`load_pdptrs` is the Intel load (its references are reported apart, in
:attr:`PdptrLoad.refs` / :attr:`TwoDWalkResult.pdptr_load_refs`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from mmu.x86.bits import MAX_PHYS_BITS, PAGE_SIZE, check_access, check_int
from mmu.x86.memory import GuestMemory
from mmu.x86.pagetable import EptBuilder, PageTableBuilder
from mmu.x86.regs import PagingMode, Regs, paging_mode
from mmu.kvm.roles import PageRole
from mmu.kvm.shadow import HOST_RAM_BASE, gpa_to_hpa
from mmu.x86.walker import (EptMisconfig, EptViolation, Fault, WalkResult, entry_format, ept_walk,
                     npt_walk, walk)

__all__ = ["TdpRoot", "TdpMMU", "TdpMapOutcome", "Ref", "TwoDWalkResult", "two_d_walk",
           "PdptrLoad", "load_pdptrs", "TDP_TABLE_BASE", "TDP_ROOT_REGION", "VENDORS"]

VENDORS = ("intel", "amd")
#: Host-physical address where the TDP MMU's table frames start.
TDP_TABLE_BASE = 0x4000_0000
#: Host-physical space reserved per root for its tables (a bump allocator per root).
TDP_ROOT_REGION = 1 << 30


def _check_vendor(vendor: object) -> str:
    if not isinstance(vendor, str):
        raise TypeError(f"vendor must be a str, one of {VENDORS}, not {type(vendor).__name__}")
    if vendor not in VENDORS:
        raise ValueError(f"vendor {vendor!r} is not one of {VENDORS}")
    return vendor


@dataclasses.dataclass(eq=False)
class TdpRoot:
    """A TDP MMU root (``struct kvm_mmu_page`` with ``tdp_mmu_page`` set).

    ``hpa`` is the root table's host address, ``role`` its page role (``invalid`` set once
    invalidated), ``refcount`` the vCPU references (``tdp_mmu_root_count`` minus the TDP MMU's
    own), ``mmu_ref`` whether the TDP MMU still holds its own reference (edbdb43fc96b, 6.4+
    semantics).  ``sp`` is the root itself (``to_shadow_page(hpa)`` up to 6.5,
    ``root_to_sp(hpa)`` since 6.6, is the root page, never NULL) and
    ``pae_sps`` is None, so code written for :class:`mmu.kvm.shadow.Root` works unchanged.
    """

    hpa: int
    role: PageRole
    vendor: str
    builder: EptBuilder | PageTableBuilder
    refcount: int = 0
    mmu_ref: bool = False
    freed: bool = False
    pae_sps: None = None

    @property
    def sp(self) -> "TdpRoot":
        return self

    @property
    def root_count(self) -> int:
        return self.refcount

    @property
    def invalid(self) -> bool:
        return bool(self.role.invalid)

    @property
    def pointer(self) -> int:
        """What the CPU is given: the EPTP (root | WB | walk length - 1 | A/D) or nCR3."""
        if self.vendor == "intel":
            return self.builder.eptp
        return self.hpa

    @property
    def pages(self) -> int:
        """Table pages this root has allocated (root included)."""
        return len(self.builder.tables)

    def __repr__(self) -> str:
        return (f"TdpRoot(hpa={self.hpa:#x} level={self.role.level} word={self.role.word:#x} "
                f"refcount={self.refcount}{' +mmu' if self.mmu_ref else ''}"
                f"{' invalid' if self.invalid else ''}{' freed' if self.freed else ''})")


@dataclasses.dataclass(frozen=True)
class TdpMapOutcome:
    """:meth:`TdpMMU.map`: the translation installed (or found) for one faulting GPA."""

    gpa: int
    hpa: int
    pages_allocated: int     # table pages this fault allocated
    spurious: bool           # the translation already existed (nothing to do)


class TdpMMU:
    """The per-VM TDP MMU: roots by role, their EPT/NPT tables in host memory ``mem``."""

    def __init__(self, mem: GuestMemory | None = None, *, vendor: str = "intel",
                 ad: bool = True) -> None:
        if mem is None:
            mem = GuestMemory()
        if not isinstance(mem, GuestMemory):
            raise TypeError(f"mem must be an mmu.GuestMemory, not {type(mem).__name__}")
        if not isinstance(ad, bool):
            raise TypeError(f"ad must be a bool, not {type(ad).__name__}")
        self.mem = mem
        self.vendor = _check_vendor(vendor)
        self.ad = ad
        #: Live roots, oldest first (``kvm->arch.tdp_mmu_roots``).
        self.roots: list[TdpRoot] = []
        self._next_region = TDP_TABLE_BASE
        self.stats: dict[str, int] = dict.fromkeys(
            ("roots_created", "roots_reused", "roots_freed", "pages_allocated", "faults"), 0)

    # -- roots ---------------------------------------------------------------
    def get_root(self, role: PageRole) -> tuple[TdpRoot, bool]:
        """``kvm_tdp_mmu_get_vcpu_root_hpa`` (up to 6.8; ``kvm_tdp_mmu_alloc_root`` since
        6.9, same search under mmu_lock held for read): reuse a valid root whose role word equals
        ``role.word`` (taking a reference), else allocate a new one.  Returns (root, created)."""
        if not isinstance(role, PageRole):
            raise TypeError(f"role must be a PageRole, not {type(role).__name__}")
        if role.level not in (4, 5) or not role.direct:
            raise ValueError(f"role word {role.word:#x}: a TDP root needs direct=1 and level 4 "
                             f"or 5 (got level={role.level}, direct={role.direct})")
        if role.invalid:
            raise ValueError(f"role word {role.word:#x} has invalid=1 (allowed invalid=0)")
        for root in self.roots:
            if root.role.word == role.word:          # an invalid root's word never matches
                root.refcount += 1
                self.stats["roots_reused"] += 1
                return root, False
        base = self._next_region
        self._next_region += TDP_ROOT_REGION
        if self.vendor == "intel":
            builder = EptBuilder(self.mem, role.level, self.ad, table_base=base)
        else:
            builder = PageTableBuilder(self.mem, PagingMode(role.level), table_base=base)
        root = TdpRoot(builder.tables[0], role, self.vendor, builder, refcount=1, mmu_ref=True)
        self.roots.append(root)
        self.stats["roots_created"] += 1
        self.stats["pages_allocated"] += 1
        return root, True

    def put_root(self, root: TdpRoot, preserve: bool) -> bool:
        """``kvm_tdp_mmu_put_root``: drop a vCPU reference.  Returns True if the root was freed.

        ``preserve=False`` (before edbdb43fc96b): the root is freed as soon as no vCPU uses
        it.  ``preserve=True`` (6.4+): the TDP MMU's own reference keeps a valid root alive,
        to be found again by :meth:`get_root`; only an invalidated root is freed at zero.
        """
        if not isinstance(root, TdpRoot):
            raise TypeError(f"root must be a TdpRoot, not {type(root).__name__}")
        if not isinstance(preserve, bool):
            raise TypeError(f"preserve must be a bool, not {type(preserve).__name__}")
        if root.freed or root.refcount <= 0:
            raise ValueError(f"{root!r}: put_root without a matching get_root "
                             f"(allowed only while refcount >= 1)")
        root.refcount -= 1
        if root.refcount == 0 and (not preserve or root.invalid):
            self._free(root)
            return True
        return False

    def _free(self, root: TdpRoot) -> None:
        root.freed = True
        root.mmu_ref = False
        if root in self.roots:
            self.roots.remove(root)
        self.stats["roots_freed"] += 1

    def invalidate_all(self) -> int:
        """``kvm_tdp_mmu_invalidate_all_roots`` (up to 6.13; ``kvm_tdp_mmu_invalidate_roots``
        since 6.14) in the fast zap: mark every root invalid and drop
        the TDP MMU's own reference; unreferenced roots are freed, referenced ones linger
        (invalid, never matched again) until their last put.  Returns the number invalidated."""
        n = 0
        for root in list(self.roots):
            if not root.invalid:
                root.role = root.role.replace(invalid=1)
                n += 1
            root.mmu_ref = False
            if root.refcount == 0:
                self._free(root)
        return n

    def root_at(self, hpa: int) -> TdpRoot | None:
        for root in self.roots:
            if root.hpa == hpa:
                return root
        return None

    def sp_role_word(self, hpa: int) -> int | None:
        """Role word of the live root at ``hpa`` (None if freed) -- the RootCache callback."""
        root = self.root_at(hpa)
        return None if root is None else root.role.word

    # -- faults ----------------------------------------------------------------
    def translate(self, root: TdpRoot, gpa: int, access: str = "read") -> WalkResult:
        """The hardware's EPT/NPT walk of ``gpa`` under ``root`` (no A/D updates)."""
        return _tdp_walk(self.mem, root.pointer, root.vendor, root.role.level, gpa, access,
                         set_ad=False)

    def map(self, root: TdpRoot, gpa: int, access: str = "read") -> TdpMapOutcome:
        """``kvm_tdp_mmu_map`` on an EPT violation / NPT #NPF at ``gpa``: install a 4 KiB
        leaf GPA -> ``gpa + 2**51`` with all rights (RWX, WB for EPT; P|RW|US for NPT),
        allocating the tables on the way.  A fault whose translation already exists is
        spurious (another vCPU fixed it; ``RET_PF_SPURIOUS``)."""
        if not isinstance(root, TdpRoot):
            raise TypeError(f"root must be a TdpRoot, not {type(root).__name__}")
        if root.freed or root.invalid:
            raise ValueError(f"{root!r} is invalid or freed: the vCPU must load a new root "
                             f"before faulting (kvm_mmu_reload)")
        check_access(access)
        limit = min(HOST_RAM_BASE, 1 << (12 + 9 * root.role.level - (root.vendor == "amd")))
        gpa = check_int("gpa", gpa, 0, limit)
        self.stats["faults"] += 1
        page = gpa & ~(PAGE_SIZE - 1)
        if self.translate(root, page, access).ok:
            return TdpMapOutcome(gpa, gpa_to_hpa(gpa), 0, True)
        before = len(root.builder.tables)
        if root.vendor == "intel":
            root.builder.map(page, gpa_to_hpa(page), PAGE_SIZE)
        else:
            root.builder.map(page, gpa_to_hpa(page), PAGE_SIZE, writable=True, user=True)
        new = len(root.builder.tables) - before
        self.stats["pages_allocated"] += new
        return TdpMapOutcome(gpa, gpa_to_hpa(gpa), new, False)

    def two_d_walk(self, guest_mem: GuestMemory, regs: Regs, gva: int, access: str, cpl: int,
                   root: TdpRoot, *, set_ad: bool = True,
                   pdptrs: "PdptrLoad | Sequence[int] | None" = None) -> "TwoDWalkResult":
        """:func:`two_d_walk` through ``root``'s tables (EPTP or nCR3 and levels from it)."""
        if not isinstance(root, TdpRoot):
            raise TypeError(f"root must be a TdpRoot, not {type(root).__name__}")
        return two_d_walk(guest_mem, regs, gva, access, cpl, self.mem, root.pointer, root.vendor,
                          levels=None if root.vendor == "intel" else root.role.level,
                          set_ad=set_ad, pdptrs=pdptrs)

    def load_pdptrs(self, guest_mem: GuestMemory, regs: Regs, root: TdpRoot, *,
                    set_ad: bool = True) -> "PdptrLoad":
        """:func:`load_pdptrs` through ``root``'s EPT tables (Intel only)."""
        if not isinstance(root, TdpRoot):
            raise TypeError(f"root must be a TdpRoot, not {type(root).__name__}")
        if root.vendor != "intel":
            raise ValueError(f"vendor {root.vendor!r}: only Intel CPUs have PDPTE registers "
                             f"under TDP (allowed vendor 'intel')")
        return load_pdptrs(guest_mem, regs, self.mem, root.pointer, set_ad=set_ad)

    def prefault(self, root: TdpRoot, gpa: int, size: int) -> int:
        """``map`` every 4 KiB page of ``[gpa, gpa+size)``; returns table pages allocated."""
        size = check_int("size", size, 1, 1 << 40)
        return sum(self.map(root, gpa + off).pages_allocated for off in range(0, size, PAGE_SIZE))


# ---------------------------------------------------------------------------
# The two-dimensional walk
# ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Ref:
    """One memory reference of a 2D walk.

    ``kind`` is "tdp" (an EPT/NPT entry read while translating ``gpa``) or "guest" (a guest
    paging-structure entry read at guest-physical ``gpa``, host-physical ``hpa``).  ``level``
    and ``name`` are the entry's level and name in its own dimension (the walk's guest reads
    are level 0 "entry": the walk's trace names them; a PDPTE-register load's are 3 "PDPTE").
    """

    kind: str
    level: int
    name: str
    gpa: int
    hpa: int
    entry: int

    def __str__(self) -> str:
        what = (f"EPT/NPT {self.name} for gpa {self.gpa:#x}" if self.kind == "tdp"
                else f"guest {self.name} at gpa {self.gpa:#x}")
        return f"{what}: read {self.entry:#018x} at hpa {self.hpa:#x}"


@dataclasses.dataclass(frozen=True)
class TwoDWalkResult:
    """:func:`two_d_walk`.

    ``fault`` is None on success.  ``tdp_fault`` False: the guest's own #PF/#GP (exactly
    :func:`mmu.x86.walker.walk`'s :class:`~mmu.x86.walker.Fault`), injected into the guest.
    ``tdp_fault`` True: the EPT/NPT walk of ``fault_gpa`` failed -- an
    :class:`~mmu.x86.walker.EptViolation`/``EptMisconfig`` (Intel) or the NPT walk's #PF-style
    ``Fault`` (AMD: a #NPF exit whose EXITINFO1 is that error code) -- and ``final`` says
    whether it was the final GPA (EPT exit qualification bit 8 = 1) or a guest table access.
    ``refs`` lists every entry read, the faulting one included; ``ad_writes`` the guest A/D
    updates as ``(gpa, new value)``.

    Intel, PAE guest: ``pdptrs`` are the four PDPTE-register values the walk started from (the
    walk's PDPTE step in ``guest.trace`` holds the register value and makes no reference), and
    ``pdptr_load_refs`` the references of the :func:`load_pdptrs` that :func:`two_d_walk` made
    first when it was given no registers (empty when they were passed in).  An EPT exit during
    that load is a ``tdp_fault`` with ``guest`` None and ``refs`` empty.  Otherwise ``pdptrs``
    is None and ``pdptr_load_refs`` empty.
    """

    gva: int
    gpa: int | None
    hpa: int | None
    fault: Fault | EptViolation | EptMisconfig | None
    tdp_fault: bool
    fault_gpa: int | None
    final: bool
    guest: WalkResult | None
    refs: tuple[Ref, ...]
    ad_writes: tuple[tuple[int, int], ...]   # (gpa, new value) of guest A/D updates
    pdptrs: tuple[int, ...] | None = None
    pdptr_load_refs: tuple[Ref, ...] = ()

    @property
    def ok(self) -> bool:
        return self.fault is None


def _tdp_walk(mem: GuestMemory, pointer: int, vendor: str, levels: int, gpa: int, access: str,
              *, set_ad: bool) -> WalkResult:
    if vendor == "intel":
        return ept_walk(mem, pointer, gpa, access, levels=levels, set_ad=set_ad)
    return npt_walk(mem, pointer, gpa, access, levels, set_ad=set_ad)


class _TdpExit(Exception):
    """Raised inside the guest walk when an EPT/NPT translation of a table fails."""

    def __init__(self, result: WalkResult, gpa: int) -> None:
        super().__init__(gpa)
        self.result = result
        self.gpa = gpa


class _GuestView(GuestMemory):
    """Guest-physical memory as the CPU's guest walk reads it.

    With PDPTE registers (``pdptrs``: Intel, PAE guest) the walk's first read -- the PDPTE,
    which ``FNAME(walk_addr_generic)`` takes from ``mmu->get_pdptr``, not from memory -- is
    served from the register picked by the address's bits 4:3 (the PDPT is 32-byte aligned,
    so those are the PDPTE index); every other read and every write goes to guest memory.
    """

    __slots__ = ("_guest", "_pdptrs")

    def __init__(self, guest: GuestMemory, pdptrs: tuple[int, ...] | None) -> None:
        super().__init__()
        self._guest, self._pdptrs = guest, pdptrs

    def _memory_read(self, addr: int, size: int) -> int:
        return (self._guest.read_u32 if size == 4 else self._guest.read_u64)(addr)

    def _read(self, addr: int, size: int) -> int:
        if self._pdptrs is not None:
            value, self._pdptrs = self._pdptrs[(addr >> 3) & 3], None
            return value
        return self._memory_read(addr, size)

    def read_u32(self, addr: int) -> int:
        return self._read(addr, 4)

    def read_u64(self, addr: int) -> int:
        return self._read(addr, 8)

    def write_u32(self, addr: int, value: int) -> None:
        self._guest.write_u32(addr, value)

    def write_u64(self, addr: int, value: int) -> None:
        self._guest.write_u64(addr, value)

    def read(self, addr: int, size: int) -> bytes:      # the walker reads entries only
        raise NotImplementedError("the 2D walk reads guest memory one entry at a time")

    def write(self, addr: int, data: bytes) -> None:
        raise NotImplementedError("the 2D walk writes guest memory one entry at a time")


class _NestedMemory(_GuestView):
    """Guest-physical memory seen through EPT/NPT: what the guest walker reads.

    Every entry read from memory first translates its GPA with an EPT/NPT walk (recording each
    TDP entry read), then reads the guest entry (recorded too).  Like KVM's walker
    (``nested_access`` in ``FNAME(walk_addr_generic)``: "(have_ad ? PFERR_WRITE_MASK : 0) |
    PFERR_USER_MASK") the table accesses are translated as (user) *writes*, since the walk may
    set A/D bits in them -- the SDM's rule when EPT A/D is enabled.  The guest walk through
    this memory runs with ``set_ad=False`` (so the walker's A/D re-reads are not counted as
    references); the A/D updates are applied afterwards on the guest memory.  A PDPTE served
    from a register (see :class:`_GuestView`) is no memory reference at all.
    """

    __slots__ = ("_tdp", "_ptr", "_vendor", "_levels", "_set_ad", "refs")

    def __init__(self, guest: GuestMemory, tdp: GuestMemory, ptr: int, vendor: str,
                 levels: int, set_ad: bool, pdptrs: tuple[int, ...] | None = None) -> None:
        super().__init__(guest, pdptrs)
        self._tdp, self._ptr = tdp, ptr
        self._vendor, self._levels, self._set_ad = vendor, levels, set_ad
        self.refs: list[Ref] = []

    def tdp_translate(self, gpa: int, access: str) -> int:
        r = _tdp_walk(self._tdp, self._ptr, self._vendor, self._levels, gpa, access,
                      set_ad=self._set_ad)
        for step in r.trace:
            self.refs.append(Ref("tdp", step.level, step.name, gpa, step.entry_addr, step.entry))
        if not r.ok:
            raise _TdpExit(r, gpa)
        return r.gpa

    def _memory_read(self, addr: int, size: int, access: str = "write", level: int = 0,
                     name: str = "entry") -> int:
        hpa = self.tdp_translate(addr, access)
        value = super()._memory_read(addr, size)
        self.refs.append(Ref("guest", level, name, addr, hpa, value))
        return value

    def write_u32(self, addr: int, value: int) -> None:
        raise NotImplementedError("the 2D walk's guest walk runs with set_ad=False")

    write_u64 = write_u32


@dataclasses.dataclass(frozen=True)
class PdptrLoad:
    """:func:`load_pdptrs`: the Intel PDPTE registers loaded through EPT.

    ``pdpt`` is the PDPT's guest-physical address (CR3 bits 31:5), ``pdptrs`` the four values
    (None if an EPT exit stopped the load: ``fault`` is then the
    :class:`~mmu.x86.walker.EptViolation`/``EptMisconfig`` of the PDPTE at ``fault_gpa``; the CPU
    exits to KVM and the guest re-executes its MOV to CR3).  ``refs`` are the memory references
    made: per PDPTE an m-level EPT walk and the read, 4·(m+1) = 20 on 4-level EPT.  ``rsvd``
    lists the present PDPTEs with reserved bits set (``pdptr_rsvd_bits``: 63:MAXPHYADDR, 8:5,
    2:1); a real MOV to CR3 then raises #GP (``load_pdptrs`` returns false) -- the model keeps
    the values and, like :func:`mmu.x86.walker.walk`, reports the #GP from a walk that uses one.
    """

    pdpt: int
    pdptrs: tuple[int, ...] | None
    fault: EptViolation | EptMisconfig | None
    fault_gpa: int | None
    refs: tuple[Ref, ...]
    rsvd: tuple[int, ...]

    @property
    def ok(self) -> bool:
        return self.fault is None


def _pae_pdpt(regs: Regs) -> int:
    """The PDPT address of a PAE guest; ValueError for any other paging mode."""
    mode = paging_mode(regs)
    if mode != PagingMode.PAE:
        raise ValueError(f"PDPTE registers exist only with PAE paging (regs are in "
                         f"{mode.label} mode; allowed: PAE)")
    if regs.cr3 >> 32:
        raise ValueError(f"cr3={regs.cr3:#x}: CR3 is 32 bits wide outside long mode "
                         f"(allowed cr3 < 0x100000000)")
    return regs.cr3 & 0xFFFF_FFE0


def load_pdptrs(guest_mem: GuestMemory, regs: Regs, tdp_mem: GuestMemory, eptp: int, *,
                set_ad: bool = True, maxphyaddr: int = 52) -> PdptrLoad:
    """Load a PAE guest's four PDPTE registers the way an Intel CPU with EPT does.

    What MOV to CR3 (or a MOV to CR0/CR4 entering PAE paging) executes in the guest, and what
    KVM's ``load_pdptrs`` (x86.c) emulates; at VM entry the registers come from the VMCS
    ``GUEST_PDPTRn`` fields instead (``ept_load_pdptrs``, vmx.c).  Each PDPTE's guest-physical
    address is translated through EPT as a *read* (SDM Vol. 3C 29.3.3.2: these loads "are
    treated as reads" and so cause no EPT violation for a non-writable GPA), then read.  The
    SDM says only that the instruction's address is translated; the model translates each of
    the four 8-byte loads, 4 EPT walks + 4 reads.  The values stay in use until the next load:
    a PDPTE changed in memory afterwards is not seen by :func:`two_d_walk` (SDM Vol. 3A 4.4.1).
    """
    if not isinstance(guest_mem, GuestMemory) or not isinstance(tdp_mem, GuestMemory):
        raise TypeError("guest_mem and tdp_mem must be mmu.GuestMemory")
    if not isinstance(set_ad, bool):
        raise TypeError(f"set_ad must be a bool, not {type(set_ad).__name__}")
    pdpt = _pae_pdpt(regs)
    ptr = check_int("eptp", eptp, 0, 1 << MAX_PHYS_BITS)
    rsvd_mask = entry_format(PagingMode.PAE, maxphyaddr).rsvd[0][3]
    nested = _NestedMemory(guest_mem, tdp_mem, ptr, "intel", ((ptr >> 3) & 7) + 1, set_ad)
    values = []
    try:
        for i in range(4):
            values.append(nested._memory_read(pdpt + 8 * i, 8, "read", 3, "PDPTE"))
    except _TdpExit as e:
        return PdptrLoad(pdpt, None, e.result.fault, e.gpa, tuple(nested.refs), ())
    rsvd = tuple(i for i, v in enumerate(values) if v & 1 and v & rsvd_mask)
    return PdptrLoad(pdpt, tuple(values), None, None, tuple(nested.refs), rsvd)


def _check_pdptrs(pdptrs: object, regs: Regs) -> tuple[int, ...]:
    """The register values from a :class:`PdptrLoad` (which must be ok and for this CR3) or
    from a sequence of four u64s."""
    if isinstance(pdptrs, PdptrLoad):
        if not pdptrs.ok:
            raise ValueError(f"pdptrs: the load at PDPT {pdptrs.pdpt:#x} stopped on an EPT exit "
                             f"at gpa {pdptrs.fault_gpa:#x}; no registers were loaded")
        if pdptrs.pdpt != _pae_pdpt(regs):
            raise ValueError(f"pdptrs were loaded from PDPT {pdptrs.pdpt:#x} but CR3 points to "
                             f"{_pae_pdpt(regs):#x}: writing CR3 reloads them")
        return pdptrs.pdptrs
    if isinstance(pdptrs, (str, bytes)) or not isinstance(pdptrs, Sequence):
        raise TypeError(f"pdptrs must be a PdptrLoad or 4 ints, not {type(pdptrs).__name__}")
    if len(pdptrs) != 4:
        raise ValueError(f"pdptrs has {len(pdptrs)} entries; allowed exactly 4")
    return tuple(check_int(f"pdptrs[{i}]", p, 0, 1 << 64) for i, p in enumerate(pdptrs))


def two_d_walk(guest_mem: GuestMemory, regs: Regs, gva: int, access: str, cpl: int,
               tdp_mem: GuestMemory, eptp_or_ncr3: int, vendor: str = "intel", *,
               levels: int | None = None, set_ad: bool = True,
               pdptrs: PdptrLoad | Sequence[int] | None = None) -> TwoDWalkResult:
    """Translate ``gva`` the way a CPU with EPT (``vendor="intel"``) or NPT ("amd") does.

    ``guest_mem`` holds the guest's view of its physical memory (its page tables), ``tdp_mem``
    the host memory with the EPT/NPT tables that ``eptp_or_ncr3`` points to.  The guest walk is
    :func:`mmu.x86.walker.walk` itself (same faults and reasons); each of its entry reads is
    preceded by the EPT/NPT walk of that entry's GPA, and the final GPA is translated last with
    the access's own kind (NPT: always as a user access).  ``levels`` is the NPT depth (EPT
    takes it from the EPTP); default 4.

    PAE guests (module docstring): on AMD the walk reads the PDPTE through NPT every time,
    (3+1)(4+1) - 1 = 19 references on 4-level NPT.  On Intel it starts from the PDPTE
    registers: ``pdptrs`` as loaded earlier by :func:`load_pdptrs` (or four values, e.g. the
    VMCS ``GUEST_PDPTRn`` fields); if None, the registers are loaded now, as if the guest had
    just written CR3 (``pdptr_load_refs``: 20 more references on 4-level EPT).  Either way the
    walk itself reads only PD and PT: (2+1)(4+1) - 1 = 14 references.  ``pdptrs`` is refused
    for AMD and for guests not in PAE mode (they have no PDPTE registers).
    """
    if not isinstance(guest_mem, GuestMemory) or not isinstance(tdp_mem, GuestMemory):
        raise TypeError("guest_mem and tdp_mem must be mmu.GuestMemory")
    vendor = _check_vendor(vendor)
    check_access(access)
    cpl = check_int("cpl", cpl, 0, 4)
    ptr = check_int("eptp_or_ncr3", eptp_or_ncr3, 0, 1 << MAX_PHYS_BITS)
    if vendor == "intel":
        tdp_levels = ((ptr >> 3) & 7) + 1
        if levels is not None and levels != tdp_levels:
            raise ValueError(f"levels={levels} disagrees with eptp={ptr:#x} ({tdp_levels} levels)")
    else:
        tdp_levels = 4 if levels is None else check_int("levels", levels, 4, 6)
    registers = vendor == "intel" and paging_mode(regs) == PagingMode.PAE
    load_refs: tuple[Ref, ...] = ()
    if pdptrs is not None:
        if not registers:
            raise ValueError(f"pdptrs given for vendor {vendor!r} with {paging_mode(regs).label} "
                             f"paging: only Intel (EPT) with a PAE guest has PDPTE registers")
        pdptrs = _check_pdptrs(pdptrs, regs)
    elif registers:
        load = load_pdptrs(guest_mem, regs, tdp_mem, ptr, set_ad=set_ad)
        load_refs = load.refs
        if not load.ok:
            return TwoDWalkResult(gva, None, None, load.fault, True, load.fault_gpa, False, None,
                                  (), (), None, load_refs)
        pdptrs = load.pdptrs
    nested = _NestedMemory(guest_mem, tdp_mem, ptr, vendor, tdp_levels, set_ad, pdptrs)
    guest = None
    try:
        guest = walk(nested, regs, gva, access, cpl, set_ad=False)
        if guest.ok:
            hpa = nested.tdp_translate(guest.gpa, access)
    except _TdpExit as e:
        final = guest is not None
        return TwoDWalkResult(gva, guest.gpa if final else None, None, e.result.fault, True,
                              e.gpa, final, guest, tuple(nested.refs), (), pdptrs, load_refs)
    if not guest.ok:
        return TwoDWalkResult(gva, None, None, guest.fault, False, None, False, guest,
                              tuple(nested.refs), (), pdptrs, load_refs)
    ad_writes = ()
    if set_ad:
        # FNAME(update_accessed_dirty_bits): the same walk (PDPTE registers included) on the
        # guest memory sets A/D.  PAE PDPTEs have no A bit, so they are never written.
        read = guest_mem.read_u32 if guest.mode == PagingMode.BIT32 else guest_mem.read_u64
        used = [s.entry_addr for s in guest.trace
                if not (guest.mode == PagingMode.PAE and s.level == 3)]
        before = [read(a) for a in used]
        walk(_GuestView(guest_mem, pdptrs), regs, gva, access, cpl, set_ad=True)
        ad_writes = tuple((a, read(a)) for a, old in zip(used, before) if read(a) != old)
    return TwoDWalkResult(gva, guest.gpa, hpa, None, False, None, True, guest,
                          tuple(nested.refs), ad_writes, pdptrs, load_refs)
