"""Property tests for mmu.x86.walker and mmu.x86.pagetable (hypothesis).

(a) Bad input: arbitrary registers, addresses, access kinds, CPLs, MAXPHYADDRs and
    page tables full of cycles and out-of-range bits give a WalkResult or a
    ValueError/TypeError -- never another exception, never a hang.
(b) Properties: builder-mapped pages translate to their gpa in every mode; a walk
    that faults leaves memory untouched; set_ad=False never writes.
"""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmu import GuestMemory, Regs, make_regs
from mmu.x86.pagetable import PageTableBuilder
from mmu.x86.walker import WalkResult, ept_walk, npt_walk, walk

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

FRAMES = (0x1000, 0x2000, 0x3000, 0x4000)


def u64(): return st.integers(0, (1 << 64) - 1)


@st.composite
def random_entry(draw):
    """An entry pointing at one of FRAMES (so walks chain and loop), with random
    flag bits and sometimes random high (reserved / key / XD) bits."""
    e = draw(st.sampled_from(FRAMES)) | draw(st.integers(0, 0xFFF))
    if draw(st.integers(0, 3)):
        e |= 1                                      # mostly present, so walks go deep
    if draw(st.integers(0, 3)) == 0:
        e |= draw(st.integers(0, (1 << 52) - 1)) & ~0xFFF
    if draw(st.integers(0, 3)) == 0:
        e |= draw(st.integers(0, 0xFFF)) << 52
    return e


@st.composite
def tables(draw, gva):
    """Random entries at every index ``gva`` uses, in every frame, for both entry sizes."""
    mem = GuestMemory()
    idx = {(gva >> s) & 0x1FF for s in (12, 21, 30, 39, 48)}
    idx |= {(gva >> s) & 0x3FF for s in (12, 22)}
    for frame in FRAMES:
        for i in sorted(idx):
            if draw(st.integers(0, 5)):
                e = draw(random_entry())
                if draw(st.integers(0, 3)) == 0:
                    mem.write_u32(frame + 4 * i, e & 0xFFFF_FFFF)
                else:
                    mem.write_u64(frame + 8 * (i & 0x1FF), e)
    return mem


@st.composite
def random_regs(draw):
    bits = st.one_of(u64(), st.integers(0, 0xFFFF_FFFF))
    cr0 = draw(st.sampled_from([0x8001_0033, 0x8000_0011, 0x11, 0x8000_0000])) | (
        draw(bits) if draw(st.integers(0, 4)) == 0 else 0)
    cr4 = draw(st.integers(0, (1 << 25) - 1))
    efer = draw(st.sampled_from([0, 0x500, 0xD01, 0x800, 0x100])) | (
        draw(bits) if draw(st.integers(0, 4)) == 0 else 0)
    cr3 = draw(st.sampled_from(FRAMES)) | draw(st.integers(0, 0xFFF))
    if draw(st.integers(0, 4)) == 0:
        cr3 = draw(u64())
    return Regs(cr0=cr0 & ((1 << 64) - 1), cr3=cr3, cr4=cr4, efer=efer & ((1 << 64) - 1),
                rflags=draw(st.sampled_from([2, 2 | 1 << 18])), pkru=draw(st.integers(0, (1 << 32) - 1)))


GVAS = st.one_of(u64(), st.integers(0, 0xFFFF_FFFF),
                 st.sampled_from([0x80_4020_3456, 0x1_0080_4020_3456, 0x4020_3456, 0x40_3456,
                                  1 << 47, (1 << 64) - 0x1000]))


@SETTINGS
@given(data=st.data(), gva=GVAS, access=st.sampled_from(["read", "write", "fetch", "exec", 3]),
       cpl=st.integers(-1, 4), maxphyaddr=st.integers(30, 54), set_ad=st.booleans(),
       gbpages=st.booleans())
def test_walk_only_returns_results_or_value_errors(data, gva, access, cpl, maxphyaddr, set_ad,
                                                   gbpages):
    mem = data.draw(tables(gva & 0xFFFF_FFFF_FFFF_F000 | 0x456))
    regs = data.draw(random_regs())
    try:
        r = walk(mem, regs, gva, access, cpl, maxphyaddr, set_ad=set_ad, gbpages=gbpages)
    except (ValueError, TypeError):
        return
    assert isinstance(r, WalkResult)
    assert (r.gpa is None) == (r.fault is not None)
    if r.ok and r.gpa is not None:
        assert r.gpa < 1 << maxphyaddr
    if r.fault is not None and r.fault.vector == 14:
        assert not (r.fault.error_code & 0x20 and r.fault.error_code & 0x8)   # PK never with RSVD
        assert not (r.fault.error_code & 0x20 and not r.fault.error_code & 0x1)


@SETTINGS
@given(data=st.data(), gpa=st.integers(0, (1 << 57) - 1), access=st.sampled_from(["read", "write", "fetch"]),
       eptp=st.one_of(u64(), st.sampled_from([0x101E, 0x105E, 0x2026, 0x3066])),
       maxphyaddr=st.integers(32, 52), execonly=st.booleans(), levels=st.sampled_from([4, 5]))
def test_ept_and_npt_walks_only_return_results_or_value_errors(data, gpa, access, eptp, maxphyaddr,
                                                               execonly, levels):
    mem = data.draw(tables(gpa))
    try:
        r = ept_walk(mem, eptp, gpa, access, maxphyaddr=maxphyaddr, execonly=execonly)
        assert isinstance(r, WalkResult)
    except (ValueError, TypeError):
        pass
    try:
        r = npt_walk(mem, data.draw(st.sampled_from(FRAMES)), gpa, access, levels,
                     maxphyaddr=maxphyaddr)
        assert isinstance(r, WalkResult)
    except (ValueError, TypeError):
        pass


MODES = {"32-bit": ((1 << 12, 1 << 22), 1 << 32), "PAE": ((1 << 12, 1 << 21), 1 << 32),
         "4-level": ((1 << 12, 1 << 21, 1 << 30), 1 << 47),
         "5-level": ((1 << 12, 1 << 21, 1 << 30), 1 << 56)}


@SETTINGS
@given(data=st.data(), mode=st.sampled_from(sorted(MODES)), upper=st.booleans(),
       writable=st.booleans(), user=st.booleans(), nx=st.booleans(), pkey=st.integers(0, 15))
def test_builder_mapped_pages_translate_in_every_mode(data, mode, upper, writable, user, nx, pkey):
    sizes, half = MODES[mode]
    page_size = data.draw(st.sampled_from(sizes))
    n = data.draw(st.integers(1, 3))
    gva = data.draw(st.integers(0, half // page_size - n)) * page_size
    if upper and mode in ("4-level", "5-level"):
        gva += (1 << 64) - half                     # the canonical upper half
    # Tables sit at 0x1000_0000; keep data frames anywhere below 2^32 (40 bits for 4 MiB).
    pa_limit = (1 << 40) if page_size == 1 << 22 else (1 << 32)
    gpa = data.draw(st.integers(0, pa_limit // page_size - n)) * page_size
    nx = nx and mode != "32-bit"
    pkey = pkey if mode in ("4-level", "5-level") else 0
    mem = GuestMemory()
    b = PageTableBuilder(mem, mode, maxphyaddr=40)
    b.map(gva, gpa, n * page_size, writable=writable, user=user, nx=nx, pkey=pkey,
          page_size=page_size)
    regs = b.regs()
    for i in range(n):
        off = data.draw(st.integers(0, page_size - 1))
        r = walk(mem, regs, gva + i * page_size + off, "read", maxphyaddr=40)
        assert r.ok and r.gpa == gpa + i * page_size + off, r.fault
        assert r.page_size == page_size
        # Non-leaf entries grant everything, so the effective rights are the leaf's.
        assert r.access_bits == (0 if nx else 1) | (2 if writable else 0) | (4 if user else 0)


@SETTINGS
@given(data=st.data(), gva=GVAS, access=st.sampled_from(["read", "write", "fetch"]),
       cpl=st.sampled_from([0, 3]), mode=st.sampled_from(["32-bit", "PAE", "4-level", "5-level"]),
       wp=st.booleans(), smep=st.booleans(), smap=st.booleans(), pke=st.booleans(),
       nx=st.booleans(), pkru=st.integers(0, (1 << 32) - 1))
def test_faulting_walks_and_set_ad_false_never_write(data, gva, access, cpl, mode, wp, smep, smap,
                                                     pke, nx, pkru):
    mem = data.draw(tables(gva))
    regs = make_regs(mode, cr3=data.draw(st.sampled_from(FRAMES)), wp=wp, smep=smep, smap=smap,
                     pke=pke, nx=nx, pkru=pkru)
    before, n = mem.copy(), mem.writes
    r = walk(mem, regs, gva, access, cpl, 40, set_ad=False)
    assert mem.writes == n and mem == before
    r = walk(mem, regs, gva, access, cpl, 40)
    if not r.ok:
        assert mem.writes == n and mem == before
    else:
        # Success: only A/D bits may have changed, in the entries the walk used.
        used = {s.entry_addr for s in r.trace}
        for s in r.trace:
            read = mem.read_u32 if mode == "32-bit" else mem.read_u64
            assert read(s.entry_addr) & ~0x60 == s.entry & ~0x60 or \
                sum(t.entry_addr == s.entry_addr for t in r.trace) > 1
        assert mem.writes - n <= len(used)
