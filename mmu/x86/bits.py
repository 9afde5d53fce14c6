"""Bit definitions shared by every part of the model.

Names follow the Intel SDM (Vol. 3A, ch. 4 "Paging") for hardware bits and the
kernel's ``arch/x86/kvm/mmu/spte.h`` / ``kvm_host.h`` for KVM's own constants
(``ACC_*``, ``PFERR_*``).  Entry and error-code bits are ``IntFlag`` so that a
value prints as the bits it holds (``<PTE.P|RW|A: 35>``) while still being an
int for arithmetic.
"""
from __future__ import annotations

import enum
import operator

#: Exception vectors the walker can report (SDM Vol. 3A, table 6-1).
GP_VECTOR = 13
PF_VECTOR = 14

#: The three kinds of access a walk can be asked for.
ACCESS_KINDS = ("read", "write", "fetch")


class PTE(enum.IntFlag):
    """Bits of a 32-bit, PAE or 4/5-level paging-structure entry (SDM 4.3-4.5)."""

    P = 1 << 0      # present
    RW = 1 << 1     # read/write: 0 = read-only
    US = 1 << 2     # user/supervisor: 1 = user pages allowed
    PWT = 1 << 3
    PCD = 1 << 4
    A = 1 << 5      # accessed
    D = 1 << 6      # dirty (leaf entries only)
    PS = 1 << 7     # page size in PDE/PDPTE; PAT in a 4 KiB PTE
    G = 1 << 8      # global (leaf only)
    PAT_LARGE = 1 << 12  # PAT bit of a 2 MiB / 1 GiB / 4 MiB leaf
    XD = 1 << 63    # execute-disable (only with EFER.NXE; 8-byte entries)


#: Protection-key field of a leaf entry in IA-32e paging: bits 62:59.
PTE_PKEY_SHIFT = 59
PTE_PKEY_MASK = 0xF << PTE_PKEY_SHIFT


class PFErr(enum.IntFlag):
    """#PF error code bits (SDM 4.7; kernel ``PFERR_*_MASK``)."""

    P = 1 << 0      # PFERR_PRESENT_MASK: 0 = not-present, 1 = protection
    WR = 1 << 1     # PFERR_WRITE_MASK
    US = 1 << 2     # PFERR_USER_MASK: the access was made at CPL 3
    RSVD = 1 << 3   # PFERR_RSVD_MASK
    ID = 1 << 4     # PFERR_FETCH_MASK: instruction fetch
    PK = 1 << 5     # PFERR_PK_MASK: protection-key violation


class EPT(enum.IntFlag):
    """Bits of an EPT paging-structure entry (SDM Vol. 3C, 29.3.2)."""

    R = 1 << 0
    W = 1 << 1
    X = 1 << 2      # supervisor-execute when mode-based execute control is on
    IPAT = 1 << 6
    PS = 1 << 7
    A = 1 << 8
    D = 1 << 9
    XU = 1 << 10


#: EPT memory-type field of a leaf, bits 5:3.
EPT_MEMTYPE_SHIFT = 3
EPT_MEMTYPE_MASK = 0x7 << EPT_MEMTYPE_SHIFT
EPT_MEMTYPE_WB = 6


# KVM's access bits (arch/x86/kvm/mmu/spte.h).  ACC_EXEC deliberately sits on
# the P bit position and ACC_WRITE/ACC_USER on RW/US, so a guest entry's low
# three bits, XORed with its NX bit moved to bit 0, *are* its ACC value
# (FNAME(gpte_access) in paging_tmpl.h).
ACC_EXEC_MASK = 1
ACC_WRITE_MASK = 2
ACC_USER_MASK = 4
ACC_ALL = ACC_EXEC_MASK | ACC_WRITE_MASK | ACC_USER_MASK

#: Paging-structure entries and frames.
PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT

#: Physical addresses never exceed 52 bits on x86 (SDM 4.1.4).
MAX_PHYS_BITS = 52


def check_access(access: object) -> str:
    """Return ``access`` if it names an access kind, else raise a clear error."""
    if not isinstance(access, str):
        raise TypeError(f"access must be a str, one of {ACCESS_KINDS}, not {type(access).__name__}")
    if access not in ACCESS_KINDS:
        raise ValueError(f"access {access!r} is not one of {ACCESS_KINDS}")
    return access


def _is_bool(value: object) -> bool:
    # numpy's bool_ is not a bool subclass; its dtype kind is "b".  Checked by duck type
    # so this module does not import numpy.
    return isinstance(value, bool) or getattr(getattr(value, "dtype", None), "kind", "") == "b"


def check_int(name: str, value: object, lo: int, hi: int) -> int:
    """Check ``lo <= value < hi`` for an integer argument; raise TypeError/ValueError naming it.

    The one rule for integers across the public API: an integer is a Python ``int`` or
    any integer type that implements ``__index__`` (numpy's ``int64``/``uint64``, which
    indexing an array gives you), and it is converted to a Python ``int`` before any
    arithmetic, so a numpy value cannot overflow a 64-bit sum.  ``bool`` (and
    ``numpy.bool_``) is refused: ``True`` as an address or register is always a mistake;
    so is a float, even an integral one (``4096.0``), as ``range()`` and indexing refuse it.
    """
    try:
        if _is_bool(value):
            raise TypeError
        value = int(operator.index(value))   # an IntFlag or numpy value becomes a plain int
    except TypeError:                        # also a numpy array, whose type has __index__
        raise TypeError(f"{name} must be an int, not {type(value).__name__} "
                        f"(allowed: an integer {lo:#x} <= {name} < {hi:#x})") from None
    if not lo <= value < hi:
        raise ValueError(f"{name}={value:#x} is out of range: allowed {lo:#x} <= {name} < {hi:#x}")
    return value


def check_bool(name: str, value: object) -> bool:
    """Return ``value`` if it is a ``bool``; otherwise a TypeError naming the argument.

    Flags take only True/False: ``1`` or ``"no"`` would be truthy by accident."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool (True or False), not {type(value).__name__}")
    return value
