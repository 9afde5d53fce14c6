"""KVM's binary statistics (``KVM_GET_STATS_FD``, Linux 5.14+).

Format: ``Documentation/virt/kvm/api.rst`` 4.133 "KVM_GET_STATS_FD": a header, an id
string, ``num_desc`` descriptors of ``16 + name_size`` bytes (flags, exponent, size,
offset, bucket_size, name) and a data block of u64 values; each statistic has ``size``
values at ``data_offset + offset``.  The fd is read with ``pread`` so one fd serves many
snapshots.  No root needed beyond access to the VM or vCPU fd.
"""
from __future__ import annotations

import ctypes
import os

from mmu.kvmhost import abi

__all__ = ["read_stats", "delta"]


def read_stats(fd: int) -> dict[str, int]:
    """Name -> value (the first u64 of each statistic; histograms give their bucket 0)."""
    head = abi.KvmStatsHeader.from_buffer_copy(os.pread(fd, ctypes.sizeof(abi.KvmStatsHeader), 0))
    dsize = ctypes.sizeof(abi.KvmStatsDesc) + head.name_size
    raw = os.pread(fd, dsize * head.num_desc, head.desc_offset)
    descs = []
    end = 0
    for i in range(head.num_desc):
        chunk = raw[i * dsize:(i + 1) * dsize]
        d = abi.KvmStatsDesc.from_buffer_copy(chunk)
        name = chunk[ctypes.sizeof(abi.KvmStatsDesc):].split(b"\0", 1)[0].decode()
        descs.append((name, d.offset))
        end = max(end, d.offset + 8 * max(1, d.size))
    data = os.pread(fd, end, head.data_offset)
    return {name: int.from_bytes(data[off:off + 8], "little") for name, off in descs}


def delta(before: dict[str, int], after: dict[str, int], names=None) -> dict[str, int]:
    """after - before for ``names`` (default: every statistic that changed)."""
    keys = names if names is not None else [k for k in after if after[k] != before.get(k, 0)]
    return {k: after.get(k, 0) - before.get(k, 0) for k in keys}
