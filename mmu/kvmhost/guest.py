"""Guests built on purpose: memory layout, page tables, code bytes and register state.

Every guest the experiments run is made here, from a fixed layout, by a
:class:`GuestImage`: a GDT with flat 64-bit kernel and user segments, an IDT whose
exception stubs report (vector, error code) with OUT and halt, a stack, the code, and
page tables written by the project's own :class:`~mmu.x86.pagetable.PageTableBuilder`
into an :class:`~mmu.x86.memory.GuestMemory` -- the same memory object the model walks,
and the bytes that :meth:`HostVm.load` copies into the real guest.  Register states
come only from :func:`sregs_for` (a consistent :class:`~mmu.x86.regs.Regs` from
``make_regs``, checked by ``paging_mode``); nothing here makes a random state.

The few instructions needed are hand-encoded (Intel SDM Vol. 2 opcode tables); each
helper names its instruction.  Code is straight-line (no loops), so a guest's length
bounds its run.
"""
from __future__ import annotations

import struct

from mmu.kvmhost import abi
from mmu.x86.memory import GuestMemory
from mmu.x86.pagetable import PageTableBuilder
from mmu.x86.regs import CR0, PagingMode, Regs, make_regs, paging_mode

__all__ = ["GuestImage", "sregs_for", "Asm", "GDT_GPA", "IDT_GPA", "STACK_TOP", "CODE_GPA",
           "DATA_GPA", "TABLE_GPA", "RAM_SIZE", "PORT_DONE", "PORT_SYNC", "PORT_VECTOR",
           "PORT_ERROR",
           "KERNEL_CS", "KERNEL_DS", "USER_CS", "USER_DS", "LOW_MAP", "long_mode_regs",
           "USER_GPA", "TABLE_SPAN", "STUB_GPA"]

RAM_SIZE = 4 << 20
GDT_GPA = 0x1000
IDT_GPA = 0x2000
STUB_GPA = 0x3000          # one 16-byte exception stub per vector 0..31
STACK_TOP = 0x8000         # stack page 0x7000..0x7fff
CODE_GPA = 0x10000         # up to 64 KiB of code
DATA_GPA = 0x20000         # data pages for loads and stores
USER_GPA = 0x40000         # pages a CPL3 guest uses
TABLE_GPA = 0x100000       # page tables; address space k at TABLE_GPA + k * TABLE_SPAN
TABLE_SPAN = 0x40000
LOW_MAP = 0x40000          # [0, LOW_MAP) is identity-mapped, supervisor, RW, executable

PORT_DONE = 0x10           # the guest finished its work
PORT_SYNC = 0x12           # an exit and nothing else (KVM reloads the root before resuming)
PORT_VECTOR = 0xE0         # an exception stub: the vector
PORT_ERROR = 0xE1          # an exception stub: the error code (32 bits)

KERNEL_CS, KERNEL_DS, USER_CS, USER_DS = 0x08, 0x10, 0x1B, 0x23
_VECTORS_WITH_ERROR = {8, 10, 11, 12, 13, 14, 17, 21, 29, 30}


class Asm:
    """Straight-line x86-64 code, one method per instruction (SDM Vol. 2 encodings)."""

    _REG = {"rax": 0, "rcx": 1, "rdx": 2, "rbx": 3, "rsp": 4, "rbp": 5, "rsi": 6, "rdi": 7}

    def __init__(self) -> None:
        self.code = bytearray()
        #: Offsets of every MOV to a control register, in order (to find them in a trace).
        self.cr_writes: list[int] = []

    def _r(self, reg: str) -> int:
        if reg not in self._REG:
            raise ValueError(f"register {reg!r}: allowed {tuple(self._REG)}")
        return self._REG[reg]

    def mov_imm(self, reg: str, imm: int) -> "Asm":
        """MOV r64, imm64 (REX.W B8+r io)."""
        self.code += bytes([0x48, 0xB8 + self._r(reg)]) + struct.pack("<Q", imm & (2**64 - 1))
        return self

    def mov_to_cr(self, cr: int, reg: str) -> "Asm":
        """MOV CRn, r64 (0F 22 /r)."""
        if cr not in (0, 3, 4):
            raise ValueError(f"cr{cr}: allowed 0, 3, 4")
        self.cr_writes.append(len(self.code))
        self.code += bytes([0x0F, 0x22, 0xC0 | cr << 3 | self._r(reg)])
        return self

    def load(self, dst: str, addr_reg: str) -> "Asm":
        """MOV r64, [r64] (REX.W 8B /r)."""
        self.code += bytes([0x48, 0x8B, self._r(dst) << 3 | self._r(addr_reg)])
        return self

    def store(self, addr_reg: str, src: str) -> "Asm":
        """MOV [r64], r64 (REX.W 89 /r)."""
        self.code += bytes([0x48, 0x89, self._r(src) << 3 | self._r(addr_reg)])
        return self

    def call(self, reg: str) -> "Asm":
        """CALL r64 (FF /2): an instruction fetch from the target; a data page filled
        with RET (C3) returns at once."""
        self.code += bytes([0xFF, 0xD0 | self._r(reg)])
        return self

    def out(self, port: int, value: int) -> "Asm":
        """MOV AL, imm8 (B0 ib); OUT imm8, AL (E6 ib)."""
        self.code += bytes([0xB0, value & 0xFF, 0xE6, port & 0xFF])
        return self

    def hlt(self) -> "Asm":
        self.code += b"\xF4"
        return self

    def done(self) -> "Asm":
        """Report success on PORT_DONE, then halt."""
        return self.out(PORT_DONE, 1).hlt()

    def access(self, kind: str, addr: int) -> "Asm":
        """One read, write or fetch of ``addr`` (via RAX)."""
        self.mov_imm("rax", addr)
        if kind == "read":
            return self.load("rcx", "rax")
        if kind == "write":
            return self.store("rax", "rcx")
        if kind == "fetch":
            return self.call("rax")
        raise ValueError(f"access {kind!r}: allowed 'read', 'write', 'fetch'")


def _descriptor(code: bool, dpl: int) -> int:
    """A flat segment descriptor: code = 64-bit (L=1), data = writable (SDM 3.4.5)."""
    access = 0x80 | dpl << 5 | 0x10 | (0x0A if code else 0x02)
    flags = 0xA if code else 0xC           # G|L for code, G|D/B for data
    return 0xFFFF | access << 40 | 0xF << 48 | flags << 52


def _stub(vector: int) -> bytes:
    stub = b""
    if vector in _VECTORS_WITH_ERROR:
        stub += bytes([0x58, 0xE7, PORT_ERROR])          # POP RAX; OUT imm8, EAX
    stub += bytes([0xB0, vector, 0xE6, PORT_VECTOR, 0xF4])   # MOV AL,v; OUT; HLT
    return stub.ljust(16, b"\xF4")


class GuestImage:
    """The memory of one guest, built into ``mem`` (a GuestMemory the model can walk).

    ``spaces`` address spaces (each its own 4-level page tables from PageTableBuilder, at
    ``TABLE_GPA + k * TABLE_SPAN``) all identity-map ``[0, LOW_MAP)`` for the GDT, IDT,
    stubs, stack, code and data.  Experiments add their own mappings with
    :meth:`map` before :meth:`HostVm.load`.
    """

    def __init__(self, mode: str = "4-level", spaces: int = 1) -> None:
        if not isinstance(spaces, int) or not 1 <= spaces <= 8:
            raise ValueError(f"spaces={spaces!r}: allowed 1..8")
        self.mem = GuestMemory()
        self.mode = mode
        gdt = [0, _descriptor(True, 0), _descriptor(False, 0), _descriptor(True, 3),
               _descriptor(False, 3)]
        self.mem.write(GDT_GPA, b"".join(struct.pack("<Q", d) for d in gdt))
        idt = bytearray()
        for v in range(32):
            h = STUB_GPA + 16 * v
            # 64-bit interrupt gate, DPL 0, present (SDM 6.14.1)
            idt += struct.pack("<HHBBHIL", h & 0xFFFF, KERNEL_CS, 0, 0x8E, (h >> 16) & 0xFFFF,
                               h >> 32, 0)
            self.mem.write(STUB_GPA + 16 * v, _stub(v))
        self.mem.write(IDT_GPA, bytes(idt))
        self.mem.write(STACK_TOP - 0x1000, bytes(0x1000))
        self.builders: list[PageTableBuilder] = []
        if mode != "none":
            for k in range(spaces):
                b = PageTableBuilder(self.mem, mode, table_base=TABLE_GPA + k * TABLE_SPAN)
                b.map(0, 0, LOW_MAP)
                self.builders.append(b)

    def map(self, gva: int, gpa: int, size: int = 0x1000, *, spaces=None, **flags) -> None:
        """``PageTableBuilder.map`` in every address space (or those listed)."""
        for k in (range(len(self.builders)) if spaces is None else spaces):
            self.builders[k].map(gva, gpa, size, **flags)

    def set_code(self, code: bytes | Asm, gpa: int = CODE_GPA) -> int:
        data = bytes(code.code if isinstance(code, Asm) else code)
        if not 0 < len(data) <= 0x10000:
            raise ValueError(f"code is {len(data)} bytes: allowed 1..65536")
        self.mem.write(gpa, data)
        return gpa

    def fill(self, gpa: int, byte: int = 0xC3, size: int = 0x1000) -> None:
        """Fill a data page (default RET, so a CALL into it returns)."""
        self.mem.write(gpa, bytes([byte]) * size)

    def cr3(self, space: int = 0) -> int:
        return self.builders[space].cr3 if self.builders else 0


def _seg(selector: int, *, code: bool, dpl: int, long: bool) -> abi.KvmSegment:
    s = abi.KvmSegment()
    s.base, s.limit, s.selector = 0, 0xFFFFFFFF, selector
    s.type = 0x0B if code else 0x03       # accessed execute/read code, accessed read/write data
    s.present, s.dpl, s.s, s.g = 1, dpl, 1, 1
    s.l = 1 if code and long else 0
    s.db = 0 if code and long else 1
    return s


def sregs_for(sregs: abi.KvmSregs, regs: Regs, *, cpl: int = 0) -> abi.KvmSregs:
    """``sregs`` (from KVM_GET_SREGS) changed to ``regs``' CR0/CR3/CR4/EFER with flat
    segments, the GDT and IDT above, as a booted kernel (cpl 0) or its user (cpl 3)
    would have them.  ``regs`` must be a state ``paging_mode`` accepts."""
    if not isinstance(regs, Regs):
        raise TypeError(f"regs must be an mmu.Regs, not {type(regs).__name__}")
    mode = paging_mode(regs)
    if cpl not in (0, 3):
        raise ValueError(f"cpl={cpl!r}: allowed 0 or 3")
    if cpl == 3 and not regs.cr0 & CR0.PE:
        raise ValueError("cpl=3 needs protected mode (CR0.PE=1)")
    long = mode >= PagingMode.LEVEL4
    if regs.cr0 & CR0.PE:
        cs, ds = (USER_CS, USER_DS) if cpl == 3 else (KERNEL_CS, KERNEL_DS)
        sregs.cs = _seg(cs, code=True, dpl=cpl, long=long)
        for name in ("ds", "es", "fs", "gs", "ss"):
            setattr(sregs, name, _seg(ds, code=False, dpl=cpl, long=long))
        sregs.gdt.base, sregs.gdt.limit = GDT_GPA, 5 * 8 - 1
        sregs.idt.base, sregs.idt.limit = IDT_GPA, 32 * 16 - 1
    sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer = regs.cr0, regs.cr3, regs.cr4, regs.efer
    return sregs


def long_mode_regs(cr3: int, *, wp=True, nx=True, smep=False, smap=False, pke=False,
                   mode: str = "4-level") -> Regs:
    """``make_regs`` for a booted guest (PSE off: Linux leaves it to long mode's PS bits)."""
    return make_regs(mode, cr3=cr3, wp=wp, nx=nx, pse=False, smep=smep, smap=smap, pke=pke)

