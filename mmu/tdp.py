"""Two-dimensional paging: the TDP MMU's roots and tables, and the 2D (nested) walk.

Kernel counterparts: ``arch/x86/kvm/mmu/tdp_mmu.c`` (``kvm_tdp_mmu_get_vcpu_root_hpa``,
``kvm_tdp_mmu_put_root``, ``kvm_tdp_mmu_invalidate_all_roots``, ``kvm_tdp_mmu_map``) and, for
the walk, ``paging_tmpl.h`` ``FNAME(walk_addr_generic)`` where every guest table address goes
through ``kvm_translate_gpa`` (nested paging, as the hardware page walker does with EPT/NPT).

With TDP (Intel EPT, AMD NPT) the guest's page tables translate GVA -> GPA on their own and
KVM only builds GPA -> HPA tables, one set per *root role*: the TDP root role has constant
``cr0_wp = efer_nx = 1`` and depends on the guest only through SMM and guest mode (facts §2.3),
so at most a handful of roots exist per VM.  :class:`TdpMMU` keeps them:

* ``get_root(role)`` reuses a valid root with the same role word or allocates one;
* roots are reference counted.  Before upstream commit edbdb43fc96b ("KVM: x86/mmu: Preserve
  TDP MMU roots until they are explicitly invalidated", Linux 6.3) a root was freed when the
  last vCPU reference went, so an MMU unload + reload rebuilt every table; since then the TDP
  MMU holds its own reference (new roots start at refcount 2) until ``invalidate_all``.
  :meth:`TdpMMU.put_root` takes ``preserve`` to model either behaviour.  One vCPU is enough:
  ``refcount`` counts vCPU references only, and "the TDP MMU's own reference" is a flag.
* ``map(root, gpa, access)`` is an EPT-violation / NPT-fault handler: it builds the missing
  tables and a 4 KiB leaf for the faulting page (``kvm_tdp_mmu_map``; the host backs guest RAM
  with 4 KiB pages, so no huge leaves), using the fixed host layout of :mod:`mmu.shadow`
  (``hpa = gpa + 2**51``).  Tables are real entries in host memory (``TdpMMU.mem``), written by
  :class:`mmu.pagetable.EptBuilder` (Intel) or a 4/5-level :class:`~mmu.pagetable.PageTableBuilder`
  (AMD NPT tables are ordinary x86-64 tables, walked as user accesses).

:func:`two_d_walk` is the hardware's nested walk: the guest walk of :func:`mmu.walker.walk`
(same rules, same faults), except that every guest table read -- starting with the table CR3
points to -- and finally the data GPA are first translated by an EPT/NPT walk.  With n guest
levels and m TDP levels that is n·(m+1) + m = (n+1)(m+1) - 1 memory references: 24 for
4-level on 4-level, 35 for 5-on-5.
"""
from __future__ import annotations

import dataclasses

from .bits import MAX_PHYS_BITS, PAGE_SIZE, check_access, check_int
from .memory import GuestMemory
from .pagetable import EptBuilder, PageTableBuilder
from .regs import PagingMode, Regs
from .roles import PageRole
from .shadow import HOST_RAM_BASE, gpa_to_hpa
from .walker import EptMisconfig, EptViolation, Fault, WalkResult, ept_walk, npt_walk, walk

__all__ = ["TdpRoot", "TdpMMU", "TdpMapOutcome", "Ref", "TwoDWalkResult", "two_d_walk",
           "TDP_TABLE_BASE", "TDP_ROOT_REGION", "VENDORS"]

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
    own), ``mmu_ref`` whether the TDP MMU still holds its own reference (6.3+ semantics).
    ``sp`` is the root itself (``to_shadow_page(hpa)`` is the root page, never NULL) and
    ``pae_sps`` is None, so code written for :class:`mmu.shadow.Root` works unchanged.
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
        """``kvm_tdp_mmu_get_vcpu_root_hpa``: reuse a valid root whose role word equals
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
        it.  ``preserve=True`` (6.3+): the TDP MMU's own reference keeps a valid root alive,
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
        """``kvm_tdp_mmu_invalidate_all_roots`` (fast zap): mark every root invalid and drop
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
                   root: TdpRoot, *, set_ad: bool = True) -> "TwoDWalkResult":
        """:func:`two_d_walk` through ``root``'s tables (EPTP or nCR3 and levels from it)."""
        if not isinstance(root, TdpRoot):
            raise TypeError(f"root must be a TdpRoot, not {type(root).__name__}")
        return two_d_walk(guest_mem, regs, gva, access, cpl, self.mem, root.pointer, root.vendor,
                          levels=None if root.vendor == "intel" else root.role.level,
                          set_ad=set_ad)

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
    and ``name`` are the entry's level and name in its own dimension.
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
    :func:`mmu.walker.walk`'s :class:`~mmu.walker.Fault`), injected into the guest.
    ``tdp_fault`` True: the EPT/NPT walk of ``fault_gpa`` failed -- an
    :class:`~mmu.walker.EptViolation`/``EptMisconfig`` (Intel) or the NPT walk's #PF-style
    ``Fault`` (AMD: a #NPF exit whose EXITINFO1 is that error code) -- and ``final`` says
    whether it was the final GPA (EPT exit qualification bit 8 = 1) or a guest table access.
    ``refs`` lists every entry read, the faulting one included; ``ad_writes`` the guest A/D
    updates as ``(gpa, new value)``.
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


class _NestedMemory(GuestMemory):
    """Guest-physical memory seen through EPT/NPT: what the guest walker reads.

    Every entry read first translates its GPA with an EPT/NPT walk (recording each TDP entry
    read), then reads the guest entry (recorded too).  Like KVM's walker (``nested_access`` in
    ``FNAME(walk_addr_generic)``: "(have_ad ? PFERR_WRITE_MASK : 0) | PFERR_USER_MASK") the
    table accesses are translated as (user) *writes*, since the walk may set A/D bits in them
    -- the SDM's rule when EPT A/D is enabled.  The guest walk through this memory runs with
    ``set_ad=False`` (so the walker's A/D re-reads are not counted as references); the A/D
    updates are applied afterwards on the guest memory, reusing the translations already made.
    """

    __slots__ = ("_guest", "_tdp", "_ptr", "_vendor", "_levels", "_set_ad", "refs")

    def __init__(self, guest: GuestMemory, tdp: GuestMemory, ptr: int, vendor: str,
                 levels: int, set_ad: bool) -> None:
        super().__init__()
        self._guest, self._tdp, self._ptr = guest, tdp, ptr
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

    def _entry_read(self, addr: int, size: int) -> int:
        hpa = self.tdp_translate(addr, "write")
        value = (self._guest.read_u32 if size == 4 else self._guest.read_u64)(addr)
        self.refs.append(Ref("guest", 0, "entry", addr, hpa, value))
        return value

    def read_u32(self, addr: int) -> int:
        return self._entry_read(addr, 4)

    def read_u64(self, addr: int) -> int:
        return self._entry_read(addr, 8)

    def write_u32(self, addr: int, value: int) -> None:
        raise NotImplementedError("the 2D walk's guest walk runs with set_ad=False")

    write_u64 = write_u32

    def read(self, addr: int, size: int) -> bytes:      # the walker reads entries only
        raise NotImplementedError("the 2D walk reads guest memory one entry at a time")

    def write(self, addr: int, data: bytes) -> None:
        raise NotImplementedError("the 2D walk writes guest memory one entry at a time")


def two_d_walk(guest_mem: GuestMemory, regs: Regs, gva: int, access: str, cpl: int,
               tdp_mem: GuestMemory, eptp_or_ncr3: int, vendor: str = "intel", *,
               levels: int | None = None, set_ad: bool = True) -> TwoDWalkResult:
    """Translate ``gva`` the way a CPU with EPT (``vendor="intel"``) or NPT ("amd") does.

    ``guest_mem`` holds the guest's view of its physical memory (its page tables), ``tdp_mem``
    the host memory with the EPT/NPT tables that ``eptp_or_ncr3`` points to.  The guest walk is
    :func:`mmu.walker.walk` itself (same faults and reasons); each of its entry reads is
    preceded by the EPT/NPT walk of that entry's GPA, and the final GPA is translated last with
    the access's own kind (NPT: always as a user access).  ``levels`` is the NPT depth (EPT
    takes it from the EPTP); default 4.

    PAE guests: the model reads the PDPTE during the walk, so a PAE-on-4-level walk makes
    (3+1)(4+1) - 1 = 19 references.  That is AMD's behaviour under NPT; Intel CPUs load the 4
    PDPTEs into registers at MOV CR3 (through EPT, once) and then walk only PD and PT:
    (2+1)(4+1) - 1 = 14 references per walk.
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
    nested = _NestedMemory(guest_mem, tdp_mem, ptr, vendor, tdp_levels, set_ad)
    guest = None
    try:
        guest = walk(nested, regs, gva, access, cpl, set_ad=False)
        if guest.ok:
            hpa = nested.tdp_translate(guest.gpa, access)
    except _TdpExit as e:
        final = guest is not None
        return TwoDWalkResult(gva, guest.gpa if final else None, None, e.result.fault, True,
                              e.gpa, final, guest, tuple(nested.refs), ())
    if not guest.ok:
        return TwoDWalkResult(gva, None, None, guest.fault, False, None, False, guest,
                              tuple(nested.refs), ())
    ad_writes = ()
    if set_ad:
        # FNAME(update_accessed_dirty_bits): the same walk on the guest memory sets A/D.
        walk(guest_mem, regs, gva, access, cpl, set_ad=True)
        read = guest_mem.read_u32 if guest.mode == PagingMode.BIT32 else guest_mem.read_u64
        ad_writes = tuple((s.entry_addr, read(s.entry_addr)) for s in guest.trace
                          if read(s.entry_addr) != s.entry)
    return TwoDWalkResult(gva, guest.gpa, hpa, None, False, None, True, guest,
                          tuple(nested.refs), ad_writes)
