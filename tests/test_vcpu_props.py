"""Property tests: no sequence of guest operations can corrupt a vCPU's MMU state.

Random operation sequences (hypothesis, derandomized) run on a :class:`mmu.kvm.vcpu.VCpu` of
every era x MMU kind x vendor: CR0/CR3/CR4/EFER writes with random values (many of them
architecturally invalid), bit toggles, the boot helpers, SMI/RSM, ``kvm_smm_changed``,
nested entry/exit, far jumps, emulated permission checks and calls with bad arguments.
After every operation and re-entry (``vcpu_enter_guest`` -> ``kvm_mmu_reload``) the
invariants below are checked.  Expected values come from the role builders applied to the
live registers (facts §2.2/§2.3), the early-return and staleness rules (§2, §3.3) and the
root-cache rules (§5), never from the vCPU's own bookkeeping.

(a) a write that #GPs leaves registers, roles, root, prev_roots, the VM's root references
    and every counter except ``vm_exits``/``gp_faults`` unchanged;
(b) the stored cpu_role is ``kvm_calc_cpu_role`` of the live registers, except for exactly
    the staleness the kernel has (6.4, VMX with EPT, a guest-owned CR0.WP toggle that did
    not exit, §3.3); the root role is the builder's for that CPU role;
(c) after re-entry the root is valid, its page has role word ``root_role.word``, and an
    indirect root shadows the live CR3;
(d) prev_roots: 3 slots, no two equal (pgd, hpa), none equal to the current root, none
    that ``is_root_usable`` could never accept (no shadow page, page gone, invalid bit);
(e) counters never decrease; every ``kvm_mmu_load`` event is one load, and its
    roots_created + roots_reused increment is the number of root-level pages it took
    (1, or 0..4 for the PAE special root: the model counts root-level pages, as
    tests/test_scenarios.py pins);
(f) only ValueError/TypeError escape, only for bad arguments or calls in the wrong state,
    and they leave the vCPU and its VM exactly as they were;
(g) a MOV to CR0 on SVM that does not exit found a CR0 without CD/NW (and, without NPT,
    with PG|WP) and changed only TS/MP (``svm_set_cr0``: otherwise the hardware CR0
    differs from the guest's and INTERCEPT_CR0_WRITE is on);
(h) issue 14, the class of V1-V5/X1: smm and guest_mode are never both set (nor both bits
    in a role); a guest-visible fault (#GP, or the #UD of VMLAUNCH/VMRUN in SMM) leaves
    registers, roles, roots and guest/host memory unchanged and counts exactly the exit
    and the fault; an exception leaves everything unchanged, memory included, and a bad
    argument's TypeError/ValueError names the argument; with nested TDP, root_mmu keeps
    L1's roles, nested_mmu's role is the builder's for L2's registers (stale only in a
    guest-owned CR0.WP, refreshed by the emulated check, which returns nested_mmu's role)
    and guest_mmu's roles are the builders' for the entry's EPTP/nCR3.

Budget: ``EXAMPLES`` (25) sequences of 10..``STEPS`` (60) operations per configuration
(30 configurations), plus ``ERA_EXAMPLES`` random era-flag sets and set-ups in
:func:`test_random_eras_and_setups`.  A longer campaign:
``VCPU_PROPS_EXAMPLES=500 .venv/bin/python -m pytest tests/test_vcpu_props.py -s``
(``VCPU_PROPS_STEPS`` lengthens the sequences).

Operations the kernel can never perform are not generated.  The model bugs these
properties found are fixed; their minimal reproducers stay below as regression tests
(a new bug belongs there as a strict xfail until it is fixed).
"""
from __future__ import annotations

import hashlib
import os
import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmu.kvm import legacy, roles
from mmu.kvm.eras import ERA_NAMES, ERAS, FLAG_NAMES, REQUIRES, era as make_era
from mmu.x86.regs import CR0, CR4, EFER
from mmu.kvm.root_cache import KVM_MMU_NUM_PREV_ROOTS
from mmu.kvm.vcpu import MMU_KINDS, VENDORS, VCpu

import vcpu_golden as golden

CONFIGS = [(k, m, vnd) for k in ERA_NAMES for m in MMU_KINDS for vnd in VENDORS]
MAXPHYADDR = 46
STEPS = int(os.environ.get("VCPU_PROPS_STEPS", "60"))
EXAMPLES = int(os.environ.get("VCPU_PROPS_EXAMPLES", "25"))
ERA_EXAMPLES = max(60, EXAMPLES * 4)

# Guest memory (two PAE trees), the CR3 pool and the register bits: shared with the golden
# corpus (tests/vcpu_golden.py), whose sequences draw the same operations.
_memory, _pae_cr3s = golden.memory, golden.pae_cr3s
CR3_POOL, CR0_BITS, CR4_BITS, EFER_BITS = (golden.CR3_POOL, golden.CR0_BITS, golden.CR4_BITS,
                                           golden.EFER_BITS)
assert golden.MAXPHYADDR == MAXPHYADDR


def _value(bits: list[int], width: int) -> st.SearchStrategy[int]:
    """Mostly combinations of defined bits, sometimes reserved bits or any value."""
    combos = st.lists(st.sampled_from(bits), max_size=len(bits)).map(lambda bs: sum(set(bs)))
    return st.one_of(combos, combos,
                     st.tuples(combos, st.integers(0, width - 1)).map(lambda t: t[0] | 1 << t[1]),
                     st.integers(0, (1 << 64) - 1))


L2_SPECS = golden.L2_SPECS

#: (method, args, kwargs, exception, the argument its message must name).
BAD_CALLS = (
    ("set_cr0", ("0x11",), {}, TypeError, "cr0"), ("set_cr0", (1.5,), {}, TypeError, "cr0"),
    ("set_cr0", (None,), {}, TypeError, "cr0"), ("set_cr0", (True,), {}, TypeError, "cr0"),
    ("set_cr3", (-1,), {}, ValueError, "cr3"), ("set_cr4", (1 << 64,), {}, ValueError, "cr4"),
    ("set_efer", (1 << 64,), {}, ValueError, "efer"), ("set_cr4", ("1",), {}, TypeError, "cr4"),
    ("kvm_smm_changed", (1,), {}, TypeError, "smm"), ("far_jump", (1,), {}, TypeError, "cs_l"),
    ("preview", (), {"cr2": 0}, ValueError, "cr2"),
    ("nested_enter", (), {"l2_cr0": 1 << 40}, ValueError, "l2_cr0"),
    ("nested_enter", (), {"l2_cr3": -1}, ValueError, "l2_cr3"),
    ("nested_enter", (), {"l2_cs_l": 1}, TypeError, "l2_cs_l"),
    ("nested_enter", (), {"eptp": 0x5000, "ncr3": 0x5000}, ValueError, "ncr3"),
    ("nested_enter", (), {"eptp": 0x505E, "ept_ad": 1}, (TypeError, ValueError), "ept"),
)

#: The CR4 bits KVM lets a guest set, by hand from CR4_RESERVED_BITS (kvm_host.h, 5.15.85
#: and 6.4.6: VME..UMIP, LA57, VMXE, SMAP, PKE -- not SMXE, not PKS), plus CET, which the
#: model still accepts (the eras work owns CET's rules).
KVM_CR4_ALLOWED = int(CR4.VME | CR4.PVI | CR4.TSD | CR4.DE | CR4.PSE | CR4.PAE | CR4.MCE
                      | CR4.PGE | CR4.PCE | CR4.OSFXSR | CR4.OSXMMEXCPT | CR4.UMIP | CR4.LA57
                      | CR4.VMXE | CR4.FSGSBASE | CR4.PCIDE | CR4.OSXSAVE | CR4.SMEP
                      | CR4.SMAP | CR4.PKE | CR4.CET)

#: (L2 register, bit OR-ed into L1's value) -> does VM entry refuse it, by vendor.  Hand
#: rules (issue 14 V3/X1): CR4 -- CR4_RESERVED_BITS (kvm_host.h) lists OSFXSR, not bit 15,
#: SMXE, PKS or bits above 31; EFER -- bits 2, 9 and 46 are reserved, SVME only without
#: SVM (__kvm_valid_efer); CR3 -- VMX refuses bits >= MAXPHYADDR always
#: (nested_vmx_load_cr3), SVM only for EFER.LME && CR0.PG (__nested_vmcb_check_save);
#: PWT (bit 3) is fine.  None: decided by the vendor/L1 as just said.
L2_BAD = {("cr4", 1 << 15): True, ("cr4", int(CR4.SMXE)): True, ("cr4", int(CR4.PKS)): True,
          ("cr4", 1 << 40): True, ("cr4", int(CR4.OSFXSR)): False,
          ("efer", 1 << 2): True, ("efer", 1 << 9): True, ("efer", 1 << 46): True,
          ("efer", int(EFER.SVME)): None, ("cr3", 1 << MAXPHYADDR): None, ("cr3", 1 << 63): None,
          ("cr3", 0x8): False}


def l2_entry_refused(v: VCpu, reg: str, bit: int, l1) -> bool:
    """L2_BAD's rule for the vendor and L1 (L2 = L1's registers with ``bit`` OR-ed in)."""
    rule = L2_BAD[(reg, bit)]
    if rule is not None:
        return rule
    if reg == "efer":
        return v.vendor == "intel"
    long_mode = bool(l1.efer & EFER.LME and l1.cr0 & CR0.PG)
    return v.vendor == "intel" or long_mode


#: EPTPs of the golden corpus (4-level with/without A/D, 5-level, bad walk length, none).
EPTPS = golden.EPTPS

OPS = st.one_of(
    st.tuples(st.just("cr0"), _value(CR0_BITS, 64)),
    st.tuples(st.just("cr0^"), st.sampled_from(CR0_BITS)),
    st.tuples(st.just("cr0^"), st.sampled_from([int(CR0.WP)])),      # the WP story, often
    st.tuples(st.just("cr4"), _value(CR4_BITS, 64)),
    st.tuples(st.just("cr4^"), st.sampled_from(CR4_BITS)),
    st.tuples(st.just("efer"), _value(EFER_BITS, 64)),
    st.tuples(st.just("efer^"), st.sampled_from(EFER_BITS)),
    st.tuples(st.just("cr3"), st.sampled_from(CR3_POOL)),
    # same frame, other PWT/PCD/PCID bits: a second pgd for the same root page
    st.tuples(st.just("cr3^"), st.sampled_from([0x8, 0x10, 0x18, 0x1])),
    st.tuples(st.just("boot_long"), st.booleans(), st.booleans(), st.booleans()),
    st.tuples(st.just("boot_prot"), st.booleans(), st.booleans(), st.booleans(),
              st.sampled_from(_pae_cr3s() + (0x1000,))),
    st.tuples(st.just("smi")), st.tuples(st.just("rsm")),
    st.tuples(st.just("smm_changed"), st.booleans()),
    st.tuples(st.just("vmenter"), st.sampled_from(L2_SPECS), st.sampled_from(CR3_POOL[:11])),
    # nested TDP (issue 14 V1): EPTP/nCR3, and L2 registers with reserved bits (V3)
    *[st.tuples(st.just("vmenter_tdp"), st.sampled_from(L2_SPECS[:6]),
                st.sampled_from(CR3_POOL[:7]), st.sampled_from(EPTPS),
                st.sampled_from([None, None, 4, 5, 3]), st.booleans())] * 2,   # twice as often
    st.tuples(st.just("vmenter_bad"), st.sampled_from(list(L2_BAD))),
    st.tuples(st.just("vmexit")),
    st.tuples(st.just("far_jump"), st.booleans()),
    st.tuples(st.just("perm")),
    st.tuples(st.just("bad"), st.integers(0, len(BAD_CALLS) - 1)),
)


_l2_regs = golden.l2_regs


# -- state snapshots --------------------------------------------------------------------
def _vm_refs(v: VCpu) -> tuple:
    """Root references held in the VM: TDP roots and shadow pages' root_count."""
    tdp = () if v.vm.tdp is None else tuple(
        (r.hpa, r.refcount, r.freed, r.role.word) for r in v.vm.tdp.roots)
    sh = tuple(sorted((k, sp.root_count) for k, sp in v.vm.shadow.hash.items()))
    return tdp, sh


def _mem_digest(mem) -> str:
    """A digest of every frame of a GuestMemory (guest RAM, or the host's EPT/NPT tables)."""
    h = hashlib.blake2b(digest_size=16)
    for fn in sorted(mem.frame_numbers()):
        h.update(fn.to_bytes(8, "little"))
        h.update(mem.frame(fn))
    return h.hexdigest()


def _mmu_state(v: VCpu) -> tuple:
    gm = v.guest_mmu
    return (v.regs, v.smm, v.guest_mode, v.cs_l, v.cpu_role, v.root_role, v.mmu_role, v.root,
            v.prev_roots, v._saved_smm, v._saved_l1, tuple(sorted(v._roots)), _vm_refs(v),
            v.nested_mmu_role, v._mmu_is_guest, gm.kind, gm.pgd, gm.cpu_role, gm.root_role,
            gm.root, gm.prev_roots, _mem_digest(v.mem),
            None if v.vm.tdp is None else _mem_digest(v.vm.host_mem))


def _full_state(v: VCpu) -> tuple:
    return _mmu_state(v) + (v.step, len(v.events), tuple(sorted(v.stats.items())))


# -- the invariants -----------------------------------------------------------------------
def _wp_passthrough(v: VCpu) -> bool:
    """6.4 VMX with EPT: CR0.WP is guest-owned (fb509f76acc8, facts §3.3)."""
    return v.era.cr0_wp_guest_owned and v.vendor == "intel" and v.tdp_enabled


def _check_cpu_role(v: VCpu, stored, build, regs, wp_may_be_stale: bool, what: str):
    """``stored`` is ``build(regs)``, or stale exactly as §3.3 allows: computed with the
    other CR0.WP after a guest-owned WP toggle, perhaps since refreshed (cr0_wp only)."""
    fresh = build(regs)
    if stored != fresh:
        assert _wp_passthrough(v) and wp_may_be_stale, (
            f"stale {what} without a guest-owned WP toggle: {stored.diff(fresh)}")
        other = build(regs.replace(cr0=regs.cr0 ^ int(CR0.WP)))
        refreshed = other.replace(base=other.base.replace(cr0_wp=fresh.base.cr0_wp))
        assert stored in (other, refreshed), stored.diff(fresh)
    return fresh


def check_roles(v: VCpu, wp_may_be_stale: bool, nested_wp_may_be_stale: bool = False,
                guest_mmu_roles: tuple | None = None, root_mmu_regs=None) -> None:
    """(b), (h): root_mmu's cpu_role fresh for the registers it was built from, or stale
    as §3.3 allows; root role from the builder; under nested TDP nested_mmu's role and
    guest_mmu's roles from their builders, and root_mmu's from ``root_mmu_regs`` (L1's at
    the entry, or the SMM state an RSM back into L2 found: emulator_leave_smm's
    kvm_smm_changed(false) rebuilt root_mmu from it)."""
    assert not (v.smm and v.guest_mode), "smm=1 with guest_mode=1"
    nested_tdp = v._mmu_is_guest
    if nested_tdp:
        assert v.guest_mode and v.era.role_split and v.tdp_enabled
        regs, guest_mode = root_mmu_regs, False
        _check_cpu_role(v, v.nested_mmu_role,
                        lambda r: roles.nested_mmu_role(r, smm=v.smm), v.regs,
                        nested_wp_may_be_stale, "nested_mmu role")
        gm = v.guest_mmu
        assert (gm.cpu_role, gm.root_role) == guest_mmu_roles
    else:
        regs, guest_mode = v.regs, v.guest_mode
    for base in (v.cpu_role.base, v.root_role):
        assert not (base.smm and base.guest_mode), "a role with smm=1 and guest_mode=1"
    fresh = _check_cpu_role(v, v.cpu_role,
                            lambda r: roles.cpu_role(r, smm=v.smm, guest_mode=guest_mode),
                            regs, wp_may_be_stale, "cpu_role")
    if v.era.role_split:
        want = (roles.tdp_root_role(fresh, tdp_level=v.vm.tdp_level) if v.tdp_enabled
                else roles.shadow_root_role(fresh))
    else:
        mmu = legacy.mmu_role(regs, tdp=v.tdp_enabled, smm=v.smm, guest_mode=guest_mode,
                              tdp_level=v.vm.tdp_level)
        assert v.mmu_role == mmu
        want = mmu.base
    assert v.root_role == want, v.root_role.diff(want)


def check_guest_mmu_root(v: VCpu) -> None:
    """(c) under nested TDP: guest_mmu's root is loaded, a shadow page of the VM's hash
    with guest_mmu's root role, for the entry's EPTP/nCR3; root_mmu's root, if still
    loaded, is L1's."""
    gm = v.guest_mmu
    assert gm.root.valid and gm.root.pgd == gm.pgd
    sp = gm.root_object.sp
    assert sp.role.word == gm.root_role.word and v.vm.shadow.page_at(gm.root.hpa) is sp
    if v.root.valid:
        assert v.root_object.role.word == v.root_role.word


def check_root(v: VCpu) -> None:
    """(c): a valid root whose page(s) carry root_role.word, shadowing the live CR3."""
    if v._mmu_is_guest:
        check_guest_mmu_root(v)
        return
    assert v.root.valid
    obj = v.root_object
    assert obj is not None and obj.hpa == v.root.hpa
    assert obj.role.word == v.root_role.word
    if obj.sp is not None:
        assert obj.sp.role.word == v.root_role.word
        assert v._sp_role_word(v.root.hpa) == v.root_role.word
    else:                                   # PAE special root: level-2 pages, quadrants
        assert v.root_role.level == 3
        for sp in obj.pages():
            assert sp.role.replace(level=3, quadrant=0).word == v.root_role.word
    assert v.root.pgd == (0 if v.root_role.direct else v.regs.cr3)


def check_prev_roots(v: VCpu) -> None:
    """(d): the previous roots are distinct, not the current one, and could still match."""
    prev = v.prev_roots
    assert len(prev) == KVM_MMU_NUM_PREV_ROOTS
    valid = [r for r in prev if r.valid]
    pairs = [(r.pgd, r.hpa) for r in valid]
    assert len(set(pairs)) == len(pairs), prev
    assert (v.root.pgd, v.root.hpa) not in pairs, (v.root, prev)
    for r in valid:
        word = v._sp_role_word(r.hpa)
        assert word is not None, f"{r}: no shadow page, is_root_usable can never accept it"
        assert not roles.PageRole.from_word(word).invalid, f"{r}: invalid root cached"
        assert r.hpa in v._roots
        if v.kind == "tdp":
            assert not v._roots[r.hpa].freed
        else:
            assert v.vm.shadow.page_at(r.hpa) is v._roots[r.hpa].sp


class LoadRecorder:
    """Wraps one vCPU's kvm_mmu_load to see each load's counter increments and root."""

    def __init__(self, v: VCpu) -> None:
        self.loads: list[tuple[int, int]] = []
        inner = v.kvm_mmu_load

        def load() -> None:
            if v._mmu_is_guest:             # guest_mmu's load: counted apart (guest_mmu_*)
                inner()
                return
            before = v.stats["roots_created"] + v.stats["roots_reused"]
            inner()
            obj = v.root_object
            pages = 1 if v.kind == "tdp" else len(obj.pages())
            self.loads.append((v.stats["roots_created"] + v.stats["roots_reused"] - before,
                               pages))

        v.kvm_mmu_load = load


def check_stats(v: VCpu, before: Counter, rec: LoadRecorder) -> None:
    """(e): monotone counters; load events, loads and per-load page counts agree."""
    for k, n in before.items():
        assert v.stats[k] >= n, f"stats[{k!r}] went down: {n} -> {v.stats[k]}"
    load_events = sum(e.func.startswith("kvm_mmu_load:") for e in v.events)
    assert load_events == len(rec.loads) == v.stats["mmu_loads"]
    assert all(d == pages for d, pages in rec.loads), rec.loads
    assert v.stats["roots_created"] + v.stats["roots_reused"] == sum(p for _, p in rec.loads)
    assert v.stats["mmu_inits"] == v.stats["init_early_returns"] + sum(
        e.func == "kvm_init_mmu" for e in v.events)


# -- the driver ---------------------------------------------------------------------------
class Driver:
    """Applies operations, skipping only those the kernel can never perform."""

    def __init__(self, v: VCpu) -> None:
        self.v = v
        self.smm_saved = False      # SMM entered through enter_smm (so RSM has a save area)
        self.smi_from = None        # (regs, CS.L, guest_mode) the last SMI interrupted
        self.wp_may_be_stale = False            # root_mmu's cpu_role (§3.3)
        self.nested_wp_may_be_stale = False     # nested_mmu's, while L2 runs on guest_mmu
        self.guest_mmu_roles = None             # what the last nested-TDP entry built
        self.root_mmu_regs = None               # what root_mmu was built from, in L2 on guest_mmu
        self.smi_nested_tdp = False             # the last SMI hit L2 running on guest_mmu
        self.steps = 0

    def expect_refusal(self, exc, fn, *args, names: tuple = (), **kw) -> None:
        """(f): the call raises ``exc`` and changes nothing at all (memory included); a
        bad argument's message names it (one of ``names``)."""
        before = _full_state(self.v)
        with pytest.raises(exc) as info:
            fn(*args, **kw)
        assert _full_state(self.v) == before
        if names:
            assert any(n in str(info.value) for n in names), (names, str(info.value))

    def attempt(self, fn):
        """A call that may be refused (ValueError/TypeError, then (f)) or give a result."""
        before = _full_state(self.v)
        try:
            return self.write(lambda _: fn(), 0)
        except (TypeError, ValueError) as e:
            assert str(e)
            assert _full_state(self.v) == before
            return None

    def write(self, fn, value: int):
        """A register write or nested entry: (a)/(h) for a #GP or #UD, else the
        staleness bookkeeping of (b)."""
        v = self.v
        before, stats = _mmu_state(v), Counter(v.stats)
        old_cr0, smm = v.regs.cr0, v.smm
        r = fn(value)
        if not r.ok:
            # Every #GP exits, except where the CPU raises it itself without an exit: a
            # MOV to CR3 with EPT/NPT, and on 6.18's VMX a guest-owned CR0.WP/CR4.CET write
            # that breaks "CR4.CET=1 needs CR0.WP=1" (SDM Vol. 3A 2.5).  The only #UD is
            # VMLAUNCH/VMRUN in SMM (issue 14 V2).
            counter = {13: "gp_faults", 6: "ud_faults"}[r.fault.vector]
            assert r.fault.vector == 13 or smm
            assert r.exited or (fn == v.set_cr3 and v.tdp_enabled) or (
                fn in (v.set_cr0, v.set_cr4) and v.era.cet_virtualized and v.vendor == "intel"
                and "CR4.CET=1 requires CR0.WP=1" in r.fault.reason)
            assert _mmu_state(v) == before
            d = Counter(v.stats)
            d.subtract(stats)
            assert +d == Counter({"vm_exits": int(r.exited), counter: 1})
        elif fn == v.set_cr4:           # X1: an accepted MOV to CR4 sets only listed bits
            assert not v.regs.cr4 & ~KVM_CR4_ALLOWED, hex(v.regs.cr4)
        elif not r.exited and fn == v.set_cr0 and (old_cr0 ^ v.regs.cr0) & CR0.WP:
            assert _wp_passthrough(v), "a CR0.WP change without exit needs VMX+EPT in 6.4"
            if v._mmu_is_guest:
                self.nested_wp_may_be_stale = True
            else:
                self.wp_may_be_stale = True
        if not r.exited and fn == v.set_cr0 and v.vendor == "amd":
            # svm_set_cr0: the hardware CR0 drops CD|NW (KVM_X86_QUIRK_CD_NW_CLEARED) and,
            # without NPT, forces PG|WP; if that differs from the guest's CR0 every CR0
            # write is intercepted, else only the selective write intercept (TS/MP free).
            forced = 0 if v.tdp_enabled else int(CR0.PG | CR0.WP)
            assert not old_cr0 & (CR0.CD | CR0.NW) and old_cr0 | forced == old_cr0
            assert not (old_cr0 ^ v.regs.cr0) & ~int(CR0.TS | CR0.MP)
        return r

    def apply(self, op: tuple) -> None:
        v = self.v
        kind = op[0]
        mark = len(v.events)
        r = v.regs
        paging = bool(r.cr0 & CR0.PG)
        if kind in ("cr0", "cr4", "efer", "cr3"):
            self.write(getattr(v, f"set_{kind}"), op[1])
        elif kind.endswith("^"):
            name = kind[:-1]
            self.write(getattr(v, f"set_{name}"), getattr(r, name) ^ op[1])
        elif kind in ("boot_long", "boot_prot"):
            if r.cr0 & (CR0.PE | CR0.PG):
                fn = v.boot_long_mode if kind == "boot_long" else v.boot_protected
                self.expect_refusal(ValueError, fn)
            elif kind == "boot_long":
                out = v.boot_long_mode(cr3=0x20_0000, la57=op[1], smep=op[2], smap=op[3])
                assert all(x.ok for x in out)
            else:
                # Not always clean: a leftover EFER.LME makes its 32-bit CR0.PG write #GP.
                out = v.boot_protected(pae=op[1], nx=op[2], wp=op[3], cr3=op[4])
                assert all(x.ok or x.fault.vector == 13 for x in out)
        elif kind == "smi":
            if v.smm:
                self.expect_refusal(ValueError, v.enter_smm)
            else:
                self.smi_from = (r, v.cs_l, v.guest_mode)
                self.smi_nested_tdp = v._mmu_is_guest
                TOTALS["SMI in L2"] += v.guest_mode
                assert v.enter_smm().ok
                assert not v.guest_mode     # an SMI in L2 exits to L1 first
                self.smm_saved = True
        elif kind == "rsm":
            if not v.smm or not self.smm_saved:
                # not in SMM, or SMM set by kvm_smm_changed: no SMRAM save area
                self.expect_refusal(ValueError, v.leave_smm)
            else:
                assert v.leave_smm().ok
                if self.smi_nested_tdp:
                    self.root_mmu_regs = r      # root_mmu rebuilt from the SMM state
                assert (v.regs, v.cs_l, v.guest_mode) == self.smi_from  # back where the SMI hit
                self.smm_saved = False
        elif kind == "smm_changed":
            if op[1] == v.smm:
                return          # the kernel calls it only on a flip
            if op[1] and v.guest_mode:      # smm=1 with guest_mode=1 never exists
                self.expect_refusal(ValueError, v.kvm_smm_changed, True)
                return
            assert v.kvm_smm_changed(op[1]).ok
            self.smm_saved = False
        elif kind in ("vmenter", "vmenter_tdp", "vmenter_bad"):
            if v.guest_mode:
                self.expect_refusal(ValueError, v.nested_enter)
                return
            if not paging or not r.cr0 & CR0.PE:
                return          # VMLAUNCH/VMRUN needs L1 in paged protected mode
            self.vmenter(kind, op)
        elif kind == "vmexit":
            if not v.guest_mode:
                self.expect_refusal(ValueError, v.nested_exit)
            else:
                assert v.nested_exit().ok
        elif kind == "far_jump":
            if op[1] and not r.efer & EFER.LMA:
                self.expect_refusal(ValueError, v.far_jump, True)
            else:
                v.far_jump(op[1])
        elif kind == "perm":
            role = v.emulated_permission_check()
            # walk_mmu: nested_mmu (L2's GVA walker) under nested TDP, else root_mmu.
            assert role.base.guest_mode == int(v.guest_mode)
            if not paging:      # permission_fault runs only on paged walks: no refresh
                assert role.base.cr0_wp == 0
            elif v.era.wp_refresh_in_permission_fault and v.tdp_enabled:
                # 6.4: the refresh rewrites cr0_wp alone (__kvm_mmu_refresh_passthrough_bits),
                # so the walker's role is fresh but for sm[ae]p_andnot_wp, which it leaves.
                want = (roles.nested_mmu_role(r, smm=v.smm) if v._mmu_is_guest else
                        roles.cpu_role(r, smm=v.smm, guest_mode=v.guest_mode))
                assert role.base.cr0_wp == int(bool(r.cr0 & CR0.WP))
                assert role.replace(base=role.base.replace(
                    smep_andnot_wp=want.base.smep_andnot_wp,
                    smap_andnot_wp=want.base.smap_andnot_wp)) == want
        elif kind == "bad":
            name, args, kw, exc, argname = BAD_CALLS[op[1]]
            if name == "nested_enter" and v.guest_mode:
                self.expect_refusal(ValueError, v.nested_enter, *args, names=("L2",), **kw)
            else:
                names = (argname, "role_split") if "eptp" in kw else (argname,)
                self.expect_refusal(exc, getattr(v, name), *args, names=names, **kw)
        else:                                           # pragma: no cover
            raise AssertionError(op)
        if any(e.func.startswith("kvm_init_mmu") for e in v.events[mark:]):
            self.wp_may_be_stale = False    # kvm_init_mmu leaves the role fresh
        if any(e.func.startswith("init_kvm_nested_mmu") for e in v.events[mark:]):
            self.nested_wp_may_be_stale = False
        self.steps += 1

    def vmenter(self, kind: str, op: tuple) -> None:
        """VMLAUNCH/VMRUN from L1 in paged protected mode: #UD in SMM (V2), the L2 state
        checks (V3), nested TDP (V1); guest_mmu's roles are recorded for (h)."""
        v, r = self.v, self.v.regs
        kw, refused, tdp = {}, None, None
        if kind == "vmenter" and op[1] is not None:
            kw = _l2_regs(op[1], op[2])
        elif kind == "vmenter_bad":
            reg, bit = op[1]
            kw = {f"l2_{reg}": getattr(r, reg) | bit}
            refused = l2_entry_refused(v, reg, bit, r)
        elif kind == "vmenter_tdp":
            spec, cr3, eptp, level, ad = op[1:]
            kw = {} if spec is None else _l2_regs(spec, cr3)
            if level is None:
                level, ad = ((eptp >> 3 & 7) + 1, bool(eptp & 1 << 6)) if eptp & 0x7F else (4, True)
            if v.vendor == "intel":
                kw.update(eptp=eptp, ept_level=level, ept_ad=ad)
                tdp = ("ept", level, ad)
            else:
                kw.update(ncr3=eptp & ~0xFFF)
                tdp = ("npt",)
        cs_l, smm = v.cs_l, v.smm
        res = self.attempt(lambda: v.nested_enter(**kw))
        if res is None:
            assert kind == "vmenter_tdp", "only nested-TDP arguments are refused here"
            return
        if smm:
            assert res.fault is not None and res.fault.vector == 6      # (h): #UD, V2
            return
        if refused is not None:
            assert res.ok != refused, (kw, res.fault)
        if res.ok:              # L2's CS.L: L1's for an IA-32e L2, else 0 (no 64-bit code)
            assert v.cs_l == (cs_l and bool(v.regs.efer & EFER.LMA))
            if tdp is not None:
                if tdp[0] == "ept":
                    cpu = roles.nested_ept_role(tdp[1], tdp[2], False)
                    self.guest_mmu_roles = (cpu, cpu.base)
                else:
                    self.guest_mmu_roles = roles.nested_npt_roles(r, v.vm.tdp_level)
                self.root_mmu_regs = r


#: L2 on nested TDP (issue 14 V1): the same operations, with L2's guest-owned CR0.WP
#: toggle and the emulated check drawn as often as all the others together.
OPS_L2 = st.one_of(OPS, st.tuples(st.just("cr0^"), st.just(int(CR0.WP))), st.tuples(st.just("perm")))
NESTED_TDP_CONFIGS = [c for c in CONFIGS if make_era(c[0]).role_split and c[1] != "shadow"]


def nested_tdp_prefix(vendor: str, l2: str | None, level: int) -> list[tuple]:
    """Boot L1 into 4-level long mode and enter L2 with nested EPT (4/5-level, A/D on) or
    nested NPT; every later operation then starts from L2 on guest_mmu."""
    eptp = (0x30_0000 | (3 << 3) | (1 << 6)) if level == 4 else (0x32_0000 | (4 << 3) | (1 << 6))
    return [("boot_long", False, False, False), ("vmenter_tdp", l2, 0x5000, eptp, level, True)]


def run_sequence(kernel: str, kind: str, vendor: str, ops: list[tuple]) -> int:
    v = VCpu(_memory(), kernel=kernel, mmu=kind, vendor=vendor, maxphyaddr=MAXPHYADDR)
    rec = LoadRecorder(v)
    v.enter()
    d = Driver(v)
    for op in ops:
        before = Counter(v.stats)
        d.apply(op)
        v.enter()                            # vcpu_enter_guest -> kvm_mmu_reload
        check_roles(v, d.wp_may_be_stale, d.nested_wp_may_be_stale, d.guest_mmu_roles,
                    d.root_mmu_regs)
        check_root(v)
        check_prev_roots(v)
        check_stats(v, before, rec)
        _cover(v)
    return d.steps


TOTALS = Counter()


def _cover(v: VCpu) -> None:
    """Tally the states reached, so the report shows the sequences went somewhere."""
    base = v.cpu_role.base
    TOTALS[f"level {base.level}"] += 1
    TOTALS["smm"] += v.smm
    TOTALS["L2"] += v.guest_mode
    if v._mmu_is_guest:                 # L2 on guest_mmu: nested_mmu is the walker
        TOTALS["nested TDP"] += 1
        TOTALS["stale nested_mmu role"] += v.nested_mmu_role != roles.nested_mmu_role(
            v.regs, smm=v.smm)
        return
    TOTALS["stale cpu_role"] += v.cpu_role != roles.cpu_role(v.regs, smm=v.smm,
                                                             guest_mode=v.guest_mode)
    TOTALS["PAE special root"] += v.root_object.sp is None
    TOTALS["valid prev_roots"] += sum(r.valid for r in v.prev_roots)
    hpas = [r.hpa for r in (v.root, *v.prev_roots) if r.valid]
    TOTALS["one page, two pgds"] += len(hpas) != len(set(hpas))


@pytest.mark.parametrize("kernel,kind,vendor", CONFIGS)
@settings(derandomize=True, deadline=None, max_examples=EXAMPLES, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(OPS, min_size=10, max_size=STEPS))
def test_random_operations_never_corrupt_the_vcpu(kernel, kind, vendor, ops):
    t0 = time.perf_counter()
    TOTALS["steps"] += run_sequence(kernel, kind, vendor, ops)
    TOTALS["examples"] += 1
    TOTALS["us"] += int((time.perf_counter() - t0) * 1e6)


@pytest.mark.parametrize("kernel,kind,vendor", NESTED_TDP_CONFIGS)
@settings(derandomize=True, deadline=None, max_examples=max(5, EXAMPLES // 2), database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(l2=st.sampled_from([None, "4-level", "PAE", "32-bit", "none"]), level=st.sampled_from([4, 5]),
       ops=st.lists(OPS_L2, min_size=5, max_size=STEPS // 2))
def test_random_operations_in_l2_on_nested_tdp(kernel, kind, vendor, l2, level, ops):
    """The same invariants, every sequence starting in L2 on guest_mmu (nested EPT/NPT)."""
    t0 = time.perf_counter()
    TOTALS["steps"] += run_sequence(kernel, kind, vendor,
                                    nested_tdp_prefix(vendor, l2, level) + ops)
    TOTALS["examples"] += 1
    TOTALS["us"] += int((time.perf_counter() - t0) * 1e6)


SETUP_ARGS = {"kernel": st.sampled_from(ERA_NAMES), "mmu": st.sampled_from(MMU_KINDS),
              "vendor": st.sampled_from(VENDORS), "tdp_level": st.sampled_from([4, 5])}


@settings(derandomize=True, deadline=None, max_examples=ERA_EXAMPLES, database=None)
@given(base=st.sampled_from(ERA_NAMES),
       flags=st.dictionaries(st.sampled_from(FLAG_NAMES), st.booleans(), max_size=4),
       mmu=st.sampled_from(MMU_KINDS), vendor=st.sampled_from(VENDORS),
       other=st.fixed_dictionaries({}, optional=SETUP_ARGS))
def test_random_eras_and_setups(base, flags, mmu, vendor, other):
    """(h) for the set-up entry points (issue 14 V4, V5): ``era()`` refuses exactly the
    flag sets that break the stated rule (eras.REQUIRES: role_split needs
    new_pgd_uses_mmu_role, ignore_wp_nonpaging needs cr0_wp_tdp_no_unload), naming the
    flag, and ``VCpu(vm=...)`` refuses exactly the set-up arguments that differ from the
    VM's, naming the argument; a refusal builds nothing."""
    combined = {**ERAS[base].flags(), **flags}
    broken = [f for f, need in REQUIRES.items() if combined[f] and not combined[need]]
    TOTALS["era sets"] += 1
    if broken:
        TOTALS["era sets refused"] += 1
        with pytest.raises(ValueError, match=broken[0]):
            make_era(base, **flags)
        with pytest.raises(ValueError, match=broken[0]):
            VCpu(kernel=base, mmu=mmu, vendor=vendor, **flags)
        return
    e = make_era(base, **flags)
    assert e.flags() == combined
    first = VCpu(kernel=e, mmu=mmu, vendor=vendor)
    vm = first.vm
    own = {"kernel": e.name, "mmu": mmu, "vendor": vendor, "tdp_level": 4}
    conflicts = [k for k, val in other.items()
                 if (make_era(val).flags() != e.flags() if k == "kernel" else val != own[k])]
    if conflicts:
        TOTALS["set-ups refused"] += 1
        n_events = len(first.events)
        with pytest.raises(ValueError) as info:
            VCpu(vm=vm, **other)
        assert any(k in str(info.value) for k in conflicts), (conflicts, str(info.value))
        assert len(first.events) == n_events and first.vm is vm
    else:
        assert VCpu(vm=vm, **other).vm is vm


def test_report_totals():
    """Prints how much the property above ran (runs after it in file order)."""
    print(f"\nvcpu props: {TOTALS['examples']} examples, {TOTALS['steps']} operations, "
          f"{TOTALS['us'] / 1e6:.2f} s in the driver; states after a step: "
          + ", ".join(f"{k}: {n}" for k, n in sorted(TOTALS.items())
                      if k not in ("examples", "steps", "us")))


# -- the properties can fail ------------------------------------------------------------
def _booted(kind: str) -> VCpu:
    v = VCpu(kernel="6.4", mmu=kind)
    assert all(r.ok for r in v.boot_long_mode(cr3=0x5000))
    return v


def test_checks_catch_a_corrupted_vcpu():
    """Each invariant check rejects a hand-corrupted vCPU (so a pass means something)."""
    v = _booted("shadow")
    check_roles(v, False)
    check_root(v)
    check_prev_roots(v)
    v.set_cr3(0x6000)
    good_prev = v.cache.prev_roots[:]
    v.cache.prev_roots[1] = v.cache.prev_roots[0]          # duplicate entry
    with pytest.raises(AssertionError):
        check_prev_roots(v)
    v.cache.prev_roots = good_prev
    v.cache.prev_roots[0] = v.root                          # current root cached too
    with pytest.raises(AssertionError):
        check_prev_roots(v)
    v.cache.prev_roots = good_prev
    v._cpu_role = v._cpu_role.replace(base=v._cpu_role.base.replace(efer_nx=0))
    with pytest.raises(AssertionError):
        check_roles(v, True)
    w = VCpu(kernel="6.4", mmu="tdp", vendor="intel")
    w.boot_long_mode()
    w._cpu_role = w._cpu_role.replace(base=w._cpu_role.base.replace(cr0_wp=0))
    with pytest.raises(AssertionError):
        check_roles(w, False)                               # stale, but no WP toggle seen
    check_roles(w, True)                                    # the kernel's own staleness
    w._root_role = w._root_role.replace(smm=1)
    with pytest.raises(AssertionError):
        check_roles(w, True)
    # (h): smm with guest_mode; a stale nested_mmu role; guest_mmu roles not the builder's
    x = _booted("tdp")
    x.smm, x.guest_mode = True, True
    with pytest.raises(AssertionError, match="smm=1 with guest_mode=1"):
        check_roles(x, False)
    y = _booted("tdp")
    l1 = y.regs
    assert y.nested_enter(eptp=0x505E).ok
    ept = roles.nested_ept_role(4, True, False)
    check_roles(y, False, False, (ept, ept.base), l1)
    check_root(y)
    with pytest.raises(AssertionError):
        check_roles(y, False, False, (ept, ept.base.replace(ad_disabled=1)), l1)
    y.nested_mmu_role = y.nested_mmu_role.replace(
        base=y.nested_mmu_role.base.replace(cr0_wp=0))
    with pytest.raises(AssertionError, match="nested_mmu"):
        check_roles(y, False, False, (ept, ept.base), l1)


# -- model bugs found by the properties, now fixed (minimal reproducers) -----------------
def test_same_gfn_two_pgds_then_unload():
    """One shadow page, two cached pgds (same gfn, PWT set): both references are put."""
    v = _booted("shadow")
    assert v.set_cr3(0x5008).ok              # PWT set: same gfn, pgd differs -> same root page
    assert v.set_cr4(v.regs.cr4 ^ int(CR4.SMEP)).ok     # reset_context frees both entries
    check_prev_roots(v)


def test_nested_enter_bad_argument_changes_nothing():
    v = _booted("shadow")
    before = _full_state(v)
    with pytest.raises(ValueError):
        v.nested_enter(l2_cr0=1 << 40)
    assert _full_state(v) == before


def test_rsm_after_kvm_smm_changed():
    v = _booted("tdp")
    assert v.kvm_smm_changed(True).ok
    before = _full_state(v)
    try:
        r = v.leave_smm()
    except ValueError:                       # refusing it cleanly would be fine too
        assert _full_state(v) == before
        return
    assert r.ok and not v.smm


def test_smi_in_l2_leaves_guest_mode_first():
    v = _booted("tdp")
    assert v.nested_enter().ok
    assert v.enter_smm().ok
    assert not (v.cpu_role.base.smm and v.cpu_role.base.guest_mode)


def test_refresh_with_paging_off_keeps_the_role_fresh():
    v = VCpu(kernel="6.4", mmu="tdp", vendor="intel")
    assert v.set_cr0(int(CR0.ET | CR0.PE | CR0.WP)).ok     # PE/WP on, CD|NW off, PG=0
    v.emulated_permission_check()
    assert v.cpu_role == roles.cpu_role(v.regs)
