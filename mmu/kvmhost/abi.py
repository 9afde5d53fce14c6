"""The slice of the KVM userspace ABI this package uses: ioctl numbers and C structures.

Source: ``include/uapi/linux/kvm.h`` and ``arch/x86/include/uapi/asm/kvm.h`` (layouts
stable since Linux 2.6 except the binary statistics, added in 5.14), and
``Documentation/virt/kvm/api.rst`` (sections 4.x name each ioctl).  Written from those
documents with :mod:`ctypes`; nothing here talks to the kernel.
"""
from __future__ import annotations

import ctypes

__all__ = ["KvmRegs", "KvmSregs", "KvmSegment", "KvmDtable", "KvmRun", "KvmCpuidEntry2",
           "KvmUserspaceMemoryRegion", "KvmStatsHeader", "KvmStatsDesc", "cpuid2_type",
           "EXIT_NAMES"]

KVMIO = 0xAE
_IOC_WRITE, _IOC_READ = 1, 2


def _ioc(direction: int, nr: int, size: int) -> int:
    # asm-generic/ioctl.h: dir in bits 31:30, size in 29:16, type in 15:8, nr in 7:0.
    return (direction << 30) | (size << 16) | (KVMIO << 8) | nr


class KvmSegment(ctypes.Structure):
    _fields_ = [("base", ctypes.c_uint64), ("limit", ctypes.c_uint32),
                ("selector", ctypes.c_uint16), ("type", ctypes.c_uint8),
                ("present", ctypes.c_uint8), ("dpl", ctypes.c_uint8), ("db", ctypes.c_uint8),
                ("s", ctypes.c_uint8), ("l", ctypes.c_uint8), ("g", ctypes.c_uint8),
                ("avl", ctypes.c_uint8), ("unusable", ctypes.c_uint8),
                ("padding", ctypes.c_uint8)]


class KvmDtable(ctypes.Structure):
    _fields_ = [("base", ctypes.c_uint64), ("limit", ctypes.c_uint16),
                ("padding", ctypes.c_uint16 * 3)]


class KvmSregs(ctypes.Structure):
    _fields_ = [("cs", KvmSegment), ("ds", KvmSegment), ("es", KvmSegment),
                ("fs", KvmSegment), ("gs", KvmSegment), ("ss", KvmSegment),
                ("tr", KvmSegment), ("ldt", KvmSegment), ("gdt", KvmDtable),
                ("idt", KvmDtable), ("cr0", ctypes.c_uint64), ("cr2", ctypes.c_uint64),
                ("cr3", ctypes.c_uint64), ("cr4", ctypes.c_uint64), ("cr8", ctypes.c_uint64),
                ("efer", ctypes.c_uint64), ("apic_base", ctypes.c_uint64),
                ("interrupt_bitmap", ctypes.c_uint64 * 4)]


class KvmRegs(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in (
        "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11",
        "r12", "r13", "r14", "r15", "rip", "rflags")]


class KvmUserspaceMemoryRegion(ctypes.Structure):
    _fields_ = [("slot", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("guest_phys_addr", ctypes.c_uint64), ("memory_size", ctypes.c_uint64),
                ("userspace_addr", ctypes.c_uint64)]


class KvmCpuidEntry2(ctypes.Structure):
    _fields_ = [("function", ctypes.c_uint32), ("index", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("eax", ctypes.c_uint32), ("ebx", ctypes.c_uint32),
                ("ecx", ctypes.c_uint32), ("edx", ctypes.c_uint32),
                ("padding", ctypes.c_uint32 * 3)]


def cpuid2_type(nent: int) -> type:
    """``struct kvm_cpuid2`` with room for ``nent`` entries (a flexible array in C)."""
    class KvmCpuid2(ctypes.Structure):
        _fields_ = [("nent", ctypes.c_uint32), ("padding", ctypes.c_uint32),
                    ("entries", KvmCpuidEntry2 * nent)]
    return KvmCpuid2


class _KvmRunIo(ctypes.Structure):
    _fields_ = [("direction", ctypes.c_uint8), ("size", ctypes.c_uint8),
                ("port", ctypes.c_uint16), ("count", ctypes.c_uint32),
                ("data_offset", ctypes.c_uint64)]


class _KvmRunInternal(ctypes.Structure):
    _fields_ = [("suberror", ctypes.c_uint32), ("ndata", ctypes.c_uint32),
                ("data", ctypes.c_uint64 * 16)]


class _KvmRunExit(ctypes.Union):
    _fields_ = [("io", _KvmRunIo), ("internal", _KvmRunInternal),
                ("hardware_entry_failure_reason", ctypes.c_uint64),
                ("padding", ctypes.c_char * 256)]


class KvmRun(ctypes.Structure):
    """The head of ``struct kvm_run`` (the shared page KVM_RUN reports through)."""
    _fields_ = [("request_interrupt_window", ctypes.c_uint8), ("immediate_exit", ctypes.c_uint8),
                ("padding1", ctypes.c_uint8 * 6), ("exit_reason", ctypes.c_uint32),
                ("ready_for_interrupt_injection", ctypes.c_uint8), ("if_flag", ctypes.c_uint8),
                ("flags", ctypes.c_uint16), ("cr8", ctypes.c_uint64),
                ("apic_base", ctypes.c_uint64), ("exit", _KvmRunExit)]


class KvmStatsHeader(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint32), ("name_size", ctypes.c_uint32),
                ("num_desc", ctypes.c_uint32), ("id_offset", ctypes.c_uint32),
                ("desc_offset", ctypes.c_uint32), ("data_offset", ctypes.c_uint32)]


class KvmStatsDesc(ctypes.Structure):
    """``struct kvm_stats_desc`` without its trailing name (``name_size`` bytes follow)."""
    _fields_ = [("flags", ctypes.c_uint32), ("exponent", ctypes.c_int16),
                ("size", ctypes.c_uint16), ("offset", ctypes.c_uint32),
                ("bucket_size", ctypes.c_uint32)]


assert ctypes.sizeof(KvmSegment) == 24 and ctypes.sizeof(KvmSregs) == 312
assert ctypes.sizeof(KvmRegs) == 144 and ctypes.sizeof(KvmCpuidEntry2) == 40
assert ctypes.sizeof(KvmUserspaceMemoryRegion) == 32 and ctypes.sizeof(KvmStatsDesc) == 16

KVM_GET_API_VERSION = _ioc(0, 0x00, 0)
KVM_CREATE_VM = _ioc(0, 0x01, 0)
KVM_CHECK_EXTENSION = _ioc(0, 0x03, 0)
KVM_GET_VCPU_MMAP_SIZE = _ioc(0, 0x04, 0)
KVM_GET_SUPPORTED_CPUID = _ioc(_IOC_READ | _IOC_WRITE, 0x05, 8)
KVM_CREATE_VCPU = _ioc(0, 0x41, 0)
KVM_SET_USER_MEMORY_REGION = _ioc(_IOC_WRITE, 0x46, ctypes.sizeof(KvmUserspaceMemoryRegion))
KVM_SET_TSS_ADDR = _ioc(0, 0x47, 0)
KVM_RUN = _ioc(0, 0x80, 0)
KVM_GET_REGS = _ioc(_IOC_READ, 0x81, ctypes.sizeof(KvmRegs))
KVM_SET_REGS = _ioc(_IOC_WRITE, 0x82, ctypes.sizeof(KvmRegs))
KVM_GET_SREGS = _ioc(_IOC_READ, 0x83, ctypes.sizeof(KvmSregs))
KVM_SET_SREGS = _ioc(_IOC_WRITE, 0x84, ctypes.sizeof(KvmSregs))
KVM_SET_CPUID2 = _ioc(_IOC_WRITE, 0x90, 8)
KVM_GET_STATS_FD = _ioc(0, 0xCE, 0)

KVM_API_VERSION = 12
KVM_CAP_BINARY_STATS_FD = 203

#: ``KVM_EXIT_*`` (kvm.h) for the exits a bounded run can end in.
EXIT_IO, EXIT_HLT, EXIT_MMIO, EXIT_SHUTDOWN, EXIT_FAIL_ENTRY, EXIT_INTR = 2, 5, 6, 8, 9, 10
EXIT_INTERNAL_ERROR = 17
EXIT_NAMES = {0: "UNKNOWN", 1: "EXCEPTION", 2: "IO", 3: "HYPERCALL", 4: "DEBUG", 5: "HLT",
              6: "MMIO", 7: "IRQ_WINDOW_OPEN", 8: "SHUTDOWN", 9: "FAIL_ENTRY", 10: "INTR",
              17: "INTERNAL_ERROR"}
