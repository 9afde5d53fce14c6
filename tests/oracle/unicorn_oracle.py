"""An independent x86 page-walk oracle: QEMU's TCG MMU, driven through Unicorn.

``run_access(mem, regs, gva, access, cpl)`` loads the paging registers into a fresh
Unicorn 2.1.4 CPU (QEMU 5.0 inside, CPU model Icelake-Server, ``UC_TLB_CPU`` so that
QEMU's own ``handle_mmu_fault`` in target/i386/excp_helper.c walks the tables), runs one
1-byte access at ``gva`` at the requested CPL, and reports what the emulated CPU did:
the exception vector and #PF error code, or the guest-physical address reached, plus
guest memory after the CPU's accessed/dirty write-backs.

How the facts are extracted:

* Memory.  All guest-physical memory below 2**40 (MAXPHYADDR of this CPU model), except
  a 64 KiB *oracle window* at ``WINDOW``, is MMIO backed by a copy of the caller's
  ``GuestMemory``.  Every paging-structure read, every A/D write-back and the data access
  itself reach the MMIO callbacks with their physical address.  The data access is the
  only 1-byte access, so its address is the GPA.  A fetch cannot execute from MMIO:
  QEMU walks first, then Unicorn raises ``UC_HOOK_MEM_FETCH_PROT`` with the physical
  address, which is the GPA of the fetch.  The data write itself is *not* applied to
  ``memory_after`` (the model's walker does not write data either).
* Exceptions.  Unicorn does not deliver exceptions through an IDT; it calls the
  ``UC_HOOK_INTR`` hook.  CR2 is a register; the error code lives in QEMU's
  ``CPUX86State.error_code``, which is part of the ``uc_context_save`` blob, 16 bytes
  before ``dr[0]`` (``error_code``, ``exception_is_int``, ``exception_next_eip``,
  ``dr[8]`` in target/i386/cpu.h).  The offset is found once per process by writing
  markers into DR0..DR7.
* Stub.  The oracle's own code runs from pages in the window, reached through one entry
  it writes into the caller's top-level table (index 1023 / 3 / 511, or the index below
  when ``gva`` uses that one).  The entry is restored in ``memory_after``; if the tested
  walk reads it (recursive tables) the call raises :class:`HarnessError`.
* CPL 3 is reached with SYSRET (SYSRETQ in long mode; QEMU accepts the legacy form in
  32-bit mode).  PKRU is loaded with WRPKRU when CR4.PKE=1; RFLAGS.AC with STAC at CPL 0
  or through R11 for SYSRETQ (legacy SYSRET does not load RFLAGS; AC does not matter
  for user-mode accesses, SDM 4.6.1).

Every call builds a fresh Unicorn instance, so the TLB is always empty.

Where QEMU departs from the SDM (the test must judge these, see ``QUIRKS``):
PAE PDPTEs are read on every walk instead of at MOV CR3 (no reserved-bit check on bits
1:2 and 5:8, reserved bits >= MAXPHYADDR give #PF RSVD rather than #GP), upper-level A
bits are set on walks that later fault, and a 1 GiB leaf PDPTE gets A before its
permission and large-page reserved-bit checks.
"""
from __future__ import annotations

import ctypes
import dataclasses
import struct

import unicorn as uc
import unicorn.x86_const as ux

from mmu.x86.bits import PAGE_SIZE, check_access, check_int
from mmu.x86.memory import GuestMemory
from mmu.x86.regs import CR4, EFER, PagingMode, Regs, paging_mode

#: Physical-address width of the emulated CPU (CPUID 0x80000008 EAX[7:0] = 0x28).
ORACLE_MAXPHYADDR = 40

#: The oracle's own RAM: stub code and stub page tables.  Below 4 GiB so that
#: 32-bit paging can reach it; callers must not put anything here.
WINDOW = 0xFFF0_0000
WINDOW_SIZE = 0x1_0000

#: Places where QEMU 5.0 (Unicorn 2.1.4) is known to depart from the SDM.  The
#: differential test refers to these names where it relaxes a comparison.
QUIRKS = {
    "upper_level_A_set_on_fault":
        "QEMU sets A in each non-leaf entry as soon as it passes its P and reserved-bit "
        "checks, even if a later level faults. SDM 4.8 only promises A/D for entries used "
        "by a translation that is cached or completes, so upper-level A on a faulting walk "
        "is neither required nor forbidden: not compared.",
    "1G_leaf_A_set_on_fault":
        "QEMU (handle_mmu_fault) sets A in a PDPTE before looking at PS, so a 1 GiB leaf "
        "gains A even when the access then faults on permissions or on bits 29:13. The SDM "
        "sets A on the leaf only for an access that does not fault: not compared.",
    "PAE_PDPTE_checked_at_access":
        "QEMU reads PAE PDPTEs on every walk: it does not check bits 2:1 and 8:5, and "
        "reserved bits 63 and 62:MAXPHYADDR give #PF with RSVD at access time, where the "
        "SDM (4.4.1) has MOV to CR3 raise #GP. Generated present PDPTEs carry no reserved bits.",
}

_GP, _PF = 13, 14
_MSR_EFER = 0xC000_0080
_MSR_STAR = 0xC000_0081

# Instruction bytes (same encodings in 32- and 64-bit mode; rbx/ebx holds gva).
_INSN = {
    "read": bytes.fromhex("8a03"),    # mov al, [rbx]
    "write": bytes.fromhex("8803"),   # mov [rbx], al
    "fetch": bytes.fromhex("ffe3"),   # jmp rbx
}
_WRPKRU = bytes.fromhex("0f01ef")     # eax -> PKRU (ecx = edx = 0)
_STAC = bytes.fromhex("0f01cb")
_SYSRETQ = bytes.fromhex("480f07")
_SYSRET = bytes.fromhex("0f07")

# Layout of the window: two code pages, then one table per stub level.
_CODE0 = WINDOW                  # CPL 0 code, supervisor page
_CODE3 = WINDOW + PAGE_SIZE      # CPL 3 code, user page
_TABLES = WINDOW + 2 * PAGE_SIZE

# Per mode: (top-level index used for the stub, shift of that index, entry size).
_TOP = {
    PagingMode.BIT32: (1023, 22, 4),
    PagingMode.PAE: (3, 30, 8),
    PagingMode.LEVEL4: (511, 39, 8),
    PagingMode.LEVEL5: (511, 48, 8),
}


class HarnessError(RuntimeError):
    """The oracle cannot answer this case (not a guest fault: a limit of the harness)."""


@dataclasses.dataclass(frozen=True)
class OracleResult:
    """What the emulated CPU did.

    ``vector``/``error_code`` are None when the access completed; ``gpa`` is None when
    it faulted.  ``memory_after`` is a copy of the input memory with the CPU's A/D
    write-backs applied.  ``cr2`` is the faulting linear address (None without #PF);
    ``walk_reads`` / ``walk_writes`` list the physical addresses of paging-structure
    reads and writes of the tested access, in order (writes as (addr, size, value)).
    """

    vector: int | None
    error_code: int | None
    gpa: int | None
    memory_after: GuestMemory
    cr2: int | None = None
    walk_reads: tuple[int, ...] = ()
    walk_writes: tuple[tuple[int, int, int], ...] = ()

    @property
    def ok(self) -> bool:
        return self.vector is None


_error_code_offset: dict[int, int] = {}


def _find_error_code_offset(u: uc.Uc, uc_mode: int) -> int:
    """Offset of ``CPUX86State.error_code`` in a saved context blob (once per mode).

    Markers that fit in 32 bits go into DR0..DR7 (``target_ulong dr[8]``, 8 bytes each
    in Unicorn's x86_64 build, also in 32-bit mode); ``error_code`` is 16 bytes before.
    """
    if uc_mode not in _error_code_offset:
        marks = [0x5A17_0D00 + i for i in range(8)]
        saved = [u.reg_read(ux.UC_X86_REG_DR0 + i) for i in range(8)]
        for i, m in enumerate(marks):
            u.reg_write(ux.UC_X86_REG_DR0 + i, m)
        blob = _context_bytes(u)
        for i, s in enumerate(saved):
            u.reg_write(ux.UC_X86_REG_DR0 + i, s)
        pattern = b"".join(struct.pack("<Q", m) for m in marks)
        at = blob.find(pattern)
        if at < 16 or blob.find(pattern, at + 1) != -1:
            raise HarnessError("cannot locate dr[0] in Unicorn's context blob")
        _error_code_offset[uc_mode] = at - 16
    return _error_code_offset[uc_mode]


def _context_bytes(u: uc.Uc) -> bytes:
    ctx = u.context_save()
    return ctypes.string_at(ctx.context, ctx.size)


def _sign_extend(va: int, bits: int) -> int:
    if va >> (bits - 1) & 1:
        va |= ((1 << 64) - 1) ^ ((1 << bits) - 1)
    return va


def root_table(regs: Regs, mode: PagingMode) -> int:
    if mode == PagingMode.PAE:
        return regs.cr3 & 0xFFFF_FFE0
    if mode == PagingMode.BIT32:
        return regs.cr3 & 0xFFFF_F000
    return regs.cr3 & ((1 << ORACLE_MAXPHYADDR) - 1) & ~0xFFF


class _Run:
    """State of one call: the Unicorn instance, the memory copy and the event log."""

    def __init__(self, mem: GuestMemory, regs: Regs, gva: int, access: str, cpl: int):
        self.mem = mem.copy()
        self.regs = regs
        self.mode = paging_mode(regs)
        self.gva = gva
        self.access = access
        self.cpl = cpl
        # Phases: "stub" until the access instruction starts, "testing" during its walk,
        # "after" once it faulted or reached its GPA (Unicorn may look up the next
        # instruction, a code walk, before it stops; that walk is not the tested one).
        self.phase = "stub"
        self.stub_vector: int | None = None
        self.reads: list[int] = []
        self.writes: list[tuple[int, int, int]] = []
        self.data_gpa: int | None = None
        self.vector: int | None = None
        self.error_code: int | None = None
        self.cr2: int | None = None
        self.stub_entry_addr = 0
        self.stub_entry_old = b""
        self.error: str | None = None

    def _fail_later(self, msg: str) -> None:
        # Exceptions must not cross Unicorn's C callbacks; run() raises after emu_start.
        if self.error is None:
            self.error = msg

    # -- MMIO callbacks: the whole of guest-physical memory outside the window.
    # They must not raise (ctypes would swallow the exception and hand QEMU garbage),
    # so problems are recorded with _fail_later.
    def _data_access(self, addr: int) -> None:
        # The 1-byte access ends the tested walk.  Unicorn may still look up the next
        # instruction (a code walk) before it stops at ``until``.
        if self.phase == "testing":
            self.data_gpa = addr
            self.phase = "after"

    def _mmio_read(self, u, offset, size, base):
        addr = base + offset
        try:
            if size == 1:
                self._data_access(addr)
            elif self.phase == "testing":
                self.reads.append(addr)
                if self.stub_entry_addr <= addr < self.stub_entry_addr + len(self.stub_entry_old):
                    self._fail_later(f"the tested walk read the oracle's stub entry at {addr:#x}")
            return int.from_bytes(self.mem.read(addr, size), "little")
        except Exception as e:  # pragma: no cover - defensive
            self._fail_later(f"MMIO read at {addr:#x} size {size}: {e!r}")
            return 0

    def _mmio_write(self, u, offset, size, value, base):
        addr = base + offset
        try:
            if size == 1:
                # The data store of "write": record the GPA, leave memory alone.
                self._data_access(addr)
                return
            if self.phase == "testing":
                self.writes.append((addr, size, value))
            self.mem.write(addr, (value & ((1 << 8 * size) - 1)).to_bytes(size, "little"))
        except Exception as e:  # pragma: no cover - defensive
            self._fail_later(f"MMIO write at {addr:#x} size {size}: {e!r}")

    def _on_intr(self, u, intno, _ud):
        if self.phase == "stub" and self.stub_vector is None:
            self.stub_vector = intno
        elif self.phase == "testing":
            self.phase = "after"
            self.vector = intno
            self.cr2 = u.reg_read(ux.UC_X86_REG_CR2)
            blob = _context_bytes(u)
            off = _error_code_offset[self.uc_mode]
            self.error_code = struct.unpack_from("<i", blob, off)[0] & 0xFFFF_FFFF
        u.emu_stop()

    def _on_fetch_prot(self, u, _type, address, _size, _value, _ud):
        # Fetch from MMIO: QEMU's walk allowed it; ``address`` is physical.
        self._data_access(address)
        return False

    def _on_access_insn(self, u, _address, _size, _ud):
        if self.phase == "stub":
            self.phase = "testing"

    # -- the stub ---------------------------------------------------------
    def _build_stub(self, u: uc.Uc) -> tuple[int, int, int]:
        """Write the stub tables and code; return (entry point, access insn VA, end VA)."""
        mode = self.mode
        top_idx, top_shift, esize = _TOP[mode]
        va_bits = 32 if mode <= PagingMode.PAE else (57 if mode == PagingMode.LEVEL5 else 48)
        gva_top = (self.gva >> top_shift) & ((1 << (va_bits - top_shift)) - 1)
        if gva_top == top_idx:
            top_idx -= 1
        base_va = _sign_extend(top_idx << top_shift, va_bits) if va_bits > 32 else top_idx << top_shift
        va0, va3 = base_va, base_va + PAGE_SIZE

        nonleaf = 0x1 | 0x2 | 0x4 | 0x20   # P RW US A: the leaf decides U/S
        levels = int(mode)
        window = bytearray(WINDOW_SIZE)
        # Tables below the top level: level levels-1 .. 1, one page each; index 0 each.
        tables = [_TABLES + i * PAGE_SIZE for i in range(levels - 1)]
        fmt = "<Q" if esize == 8 else "<I"
        for i, t in enumerate(tables[:-1]):
            struct.pack_into(fmt, window, t - WINDOW, tables[i + 1] | nonleaf)
        pt = tables[-1] - WINDOW
        struct.pack_into(fmt, window, pt, _CODE0 | 0x1 | 0x20)                  # P A, supervisor
        struct.pack_into(fmt, window, pt + esize, _CODE3 | 0x1 | 0x4 | 0x20)    # P US A, user
        # The top-level entry lives in the caller's table: PAE PDPTEs allow only P.
        top_entry = tables[0] | (0x1 if mode == PagingMode.PAE else nonleaf)
        self.stub_entry_addr = root_table(self.regs, mode) + top_idx * esize
        self.stub_entry_old = self.mem.read(self.stub_entry_addr, esize)
        self.mem.write(self.stub_entry_addr, top_entry.to_bytes(esize, "little"))

        insn = _INSN[self.access]
        code0 = bytearray()
        if self.regs.pke:
            code0 += _WRPKRU
        if self.cpl == 0:
            if self.regs.ac:
                code0 += _STAC
            insn_va = va0 + len(code0)
            code0 += insn
        else:
            # SYSRET jumps to RCX; load it here since WRPKRU above needs ECX=0.
            if mode >= PagingMode.LEVEL4:
                code0 += b"\x48\xb9" + struct.pack("<Q", va3) + _SYSRETQ   # mov rcx, imm64
            else:
                code0 += b"\xb9" + struct.pack("<I", va3) + _SYSRET         # mov ecx, imm32
            insn_va = va3
            window[_CODE3 - WINDOW:_CODE3 - WINDOW + len(insn)] = insn
        window[0:len(code0)] = code0
        u.mem_write(WINDOW, bytes(window))

        # In UC_MODE_32 only the E-registers are accepted.
        if mode >= PagingMode.LEVEL4:
            rax, rbx, rcx, rdx = (ux.UC_X86_REG_RAX, ux.UC_X86_REG_RBX, ux.UC_X86_REG_RCX,
                                  ux.UC_X86_REG_RDX)
            u.reg_write(ux.UC_X86_REG_R11, 0x2 | (self.regs.rflags & (1 << 18)))
        else:
            rax, rbx, rcx, rdx = (ux.UC_X86_REG_EAX, ux.UC_X86_REG_EBX, ux.UC_X86_REG_ECX,
                                  ux.UC_X86_REG_EDX)
        u.reg_write(rax, self.regs.pkru)
        u.reg_write(rbx, self.gva)
        u.reg_write(rcx, 0)
        u.reg_write(rdx, 0)
        return va0, insn_va, insn_va + len(insn)

    def _load_registers(self, u: uc.Uc) -> None:
        r = self.regs
        efer = r.efer | EFER.SCE
        u.msr_write(_MSR_EFER, efer)
        u.msr_write(_MSR_STAR, 0x0010_0008 << 32)
        u.reg_write(ux.UC_X86_REG_CR4, r.cr4)
        u.reg_write(ux.UC_X86_REG_CR3, r.cr3)
        u.reg_write(ux.UC_X86_REG_CR0, r.cr0)
        got = (u.reg_read(ux.UC_X86_REG_CR0), u.reg_read(ux.UC_X86_REG_CR3),
               u.reg_read(ux.UC_X86_REG_CR4), u.msr_read(_MSR_EFER))
        want = (r.cr0, r.cr3, r.cr4, efer)
        if got != want:
            raise HarnessError("Unicorn refused a control-register value: wrote "
                               f"{[hex(v) for v in want]}, read back {[hex(v) for v in got]}")

    def run(self) -> OracleResult:
        mode = self.mode
        self.uc_mode = uc.UC_MODE_64 if mode >= PagingMode.LEVEL4 else uc.UC_MODE_32
        u = uc.Uc(uc.UC_ARCH_X86, self.uc_mode)
        u.ctl_set_cpu_model(ux.UC_CPU_X86_ICELAKE_SERVER)
        u.ctl_set_tlb_mode(uc.UC_TLB_CPU)
        _find_error_code_offset(u, self.uc_mode)
        u.mem_map(WINDOW, WINDOW_SIZE, uc.UC_PROT_ALL)
        top = 1 << ORACLE_MAXPHYADDR
        for base, end in ((0, WINDOW), (WINDOW + WINDOW_SIZE, top)):
            u.mmio_map(base, end - base, self._mmio_read, base, self._mmio_write, base)
        entry, insn_va, end_va = self._build_stub(u)
        self._load_registers(u)
        u.hook_add(uc.UC_HOOK_INTR, self._on_intr)
        u.hook_add(uc.UC_HOOK_MEM_FETCH_PROT, self._on_fetch_prot)
        u.hook_add(uc.UC_HOOK_CODE, self._on_access_insn, begin=insn_va, end=insn_va)
        stopped_by = None
        try:
            u.emu_start(entry, end_va, timeout=2_000_000, count=16)
        except uc.UcError as e:          # expected for a fetch: MMIO is not executable
            stopped_by = e
        if self.error:
            raise HarnessError(self.error)
        if self.phase == "stub":
            raise HarnessError(f"the stub never reached the access (exception vector "
                               f"{self.stub_vector} in the stub, emulation error {stopped_by})")
        if self.vector is None and self.data_gpa is None:
            raise HarnessError(f"gva {self.gva:#x} completed without touching MMIO (it maps "
                               f"into the oracle window {WINDOW:#x}+{WINDOW_SIZE:#x}?), "
                               f"emulation error {stopped_by}")
        # Restore the entry the stub borrowed.
        self.mem.write(self.stub_entry_addr, self.stub_entry_old)
        return OracleResult(self.vector, self.error_code,
                            None if self.vector is not None else self.data_gpa, self.mem,
                            self.cr2, tuple(self.reads), tuple(self.writes))


def run_access(mem: GuestMemory, regs: Regs, gva: int, access: str, cpl: int = 0) -> OracleResult:
    """Perform one 1-byte ``access`` ("read", "write", "fetch") at ``gva`` on QEMU's MMU.

    ``regs`` must select paging (32-bit, PAE, 4-level or 5-level); ``cpl`` is 0 or 3.
    Physical addresses are limited to ``ORACLE_MAXPHYADDR`` = 40 bits; ``mem`` must hold
    nothing inside the oracle window and ``regs.cr3`` must not point into it.
    Guest faults are results; cases the harness cannot express raise :class:`HarnessError`.
    """
    if not isinstance(mem, GuestMemory):
        raise TypeError(f"mem must be an mmu.GuestMemory, not {type(mem).__name__}")
    mode = paging_mode(regs)
    if mode == PagingMode.NONE:
        raise ValueError("regs select no paging (CR0.PG=0): the oracle needs one of "
                         "32-bit, PAE, 4-level, 5-level paging")
    check_access(access)
    check_int("gva", gva, 0, 1 << (32 if mode <= PagingMode.PAE else 64))
    check_int("cpl", cpl, 0, 4)
    if cpl not in (0, 3):
        raise ValueError(f"cpl={cpl}: the oracle runs at CPL 0 or 3 only (allowed 0, 3)")
    if regs.cr4 & CR4.PCIDE:
        raise ValueError("CR4.PCIDE=1 is not supported by the oracle (allowed: PCIDE=0)")
    check_int("cr3 table address", root_table(regs, mode), 0, 1 << ORACLE_MAXPHYADDR)
    root = root_table(regs, mode)
    if WINDOW <= root < WINDOW + WINDOW_SIZE:
        raise HarnessError(f"cr3={regs.cr3:#x} points into the oracle window {WINDOW:#x}")
    for fn in mem.frame_numbers():
        if WINDOW <= fn * PAGE_SIZE < WINDOW + WINDOW_SIZE and any(mem.frame(fn)):
            raise HarnessError(f"guest memory frame {fn * PAGE_SIZE:#x} lies in the oracle "
                               f"window {WINDOW:#x}+{WINDOW_SIZE:#x}")
    return _Run(mem, regs, gva, access, cpl).run()


__all__ = ["run_access", "OracleResult", "HarnessError", "QUIRKS", "ORACLE_MAXPHYADDR",
           "WINDOW", "WINDOW_SIZE"]
