"""Sparse guest-physical memory.

A dict of 4 KiB frames, allocated on first write; memory never written reads
as zero.  Addresses go up to 2**52, the architectural MAXPHYADDR limit, so a
page table may point anywhere a real one could.  Little-endian, like x86.

KVM itself reads guest memory through memslots (``kvm_vcpu_read_guest`` and
friends); the model needs none of that machinery, only bytes at addresses.
"""
from __future__ import annotations

from typing import Iterator

from mmu.x86.bits import MAX_PHYS_BITS, PAGE_SHIFT, PAGE_SIZE, check_int

_LIMIT = 1 << MAX_PHYS_BITS
_PAGE_MASK = PAGE_SIZE - 1


class GuestMemory:
    """Byte-addressable sparse memory of up to 2**52 bytes."""

    __slots__ = ("_frames", "writes")

    def __init__(self) -> None:
        self._frames: dict[int, bytearray] = {}
        #: Count of write calls, so tests can see whether a walk wrote (A/D updates).
        self.writes = 0

    # -- validation -------------------------------------------------------
    @staticmethod
    def _check(addr: object, size: int) -> int:
        addr = check_int("addr", addr, 0, _LIMIT)
        if addr + size > _LIMIT:
            raise ValueError(
                f"addr={addr:#x} with size {size} runs past the end of guest-physical memory "
                f"(allowed 0 <= addr <= {_LIMIT - size:#x})")
        return addr

    # -- frames -----------------------------------------------------------
    def frame(self, fn: int) -> bytearray | None:
        """The 4 KiB frame with frame number ``fn``, or None if never written."""
        return self._frames.get(fn)

    def frame_numbers(self) -> Iterator[int]:
        """Frame numbers of every allocated frame, in no particular order."""
        return iter(self._frames.keys())

    def _frame_for_write(self, fn: int) -> bytearray:
        f = self._frames.get(fn)
        if f is None:
            f = self._frames[fn] = bytearray(PAGE_SIZE)
        return f

    def __len__(self) -> int:
        """Number of allocated frames."""
        return len(self._frames)

    def copy(self) -> "GuestMemory":
        other = GuestMemory()
        other._frames = {fn: bytearray(f) for fn, f in self._frames.items()}
        return other

    def __eq__(self, other: object) -> bool:
        # Unallocated frames read as zero, so an all-zero frame equals a missing one.
        if not isinstance(other, GuestMemory):
            return NotImplemented
        zero = bytes(PAGE_SIZE)
        for fn in set(self._frames) | set(other._frames):
            if bytes(self._frames.get(fn, zero)) != bytes(other._frames.get(fn, zero)):
                return False
        return True

    __hash__ = None  # mutable

    # -- bytes ------------------------------------------------------------
    def read(self, addr: int, size: int) -> bytes:
        addr = self._check(addr, check_int("size", size, 0, PAGE_SIZE * 1024 + 1))
        out = bytearray()
        while size:
            off = addr & _PAGE_MASK
            n = min(size, PAGE_SIZE - off)
            f = self._frames.get(addr >> PAGE_SHIFT)
            out += f[off:off + n] if f is not None else bytes(n)
            addr += n
            size -= n
        return bytes(out)

    def write(self, addr: int, data: bytes) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        data = bytes(data)
        addr = self._check(addr, len(data))
        self.writes += 1
        pos = 0
        while pos < len(data):
            off = addr & _PAGE_MASK
            n = min(len(data) - pos, PAGE_SIZE - off)
            self._frame_for_write(addr >> PAGE_SHIFT)[off:off + n] = data[pos:pos + n]
            addr += n
            pos += n

    def read_u8(self, addr: int) -> int:
        return self.read(addr, 1)[0]

    def write_u8(self, addr: int, value: int) -> None:
        self.write(addr, check_int("value", value, 0, 1 << 8).to_bytes(1, "little"))

    # Aligned 4- and 8-byte accesses stay inside one frame: a fast path that
    # matters for the walker, which does little else.
    def read_u32(self, addr: int) -> int:
        addr = self._check(addr, 4)
        if addr & 3 == 0:
            f = self._frames.get(addr >> PAGE_SHIFT)
            if f is None:
                return 0
            off = addr & _PAGE_MASK
            return int.from_bytes(f[off:off + 4], "little")
        return int.from_bytes(self.read(addr, 4), "little")

    def read_u64(self, addr: int) -> int:
        addr = self._check(addr, 8)
        if addr & 7 == 0:
            f = self._frames.get(addr >> PAGE_SHIFT)
            if f is None:
                return 0
            off = addr & _PAGE_MASK
            return int.from_bytes(f[off:off + 8], "little")
        return int.from_bytes(self.read(addr, 8), "little")

    def write_u32(self, addr: int, value: int) -> None:
        self.write(addr, check_int("value", value, 0, 1 << 32).to_bytes(4, "little"))

    def write_u64(self, addr: int, value: int) -> None:
        self.write(addr, check_int("value", value, 0, 1 << 64).to_bytes(8, "little"))

    def __repr__(self) -> str:
        return f"GuestMemory({len(self._frames)} frames)"
