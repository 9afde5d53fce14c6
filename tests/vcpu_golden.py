"""The vCPU golden corpus: seeded operation sequences and what the vCPU model did on each.

Written for issue 8 (splitting ``mmu/kvm/vcpu.py`` along the kernel's files), a refactor
that must not change behaviour: ``tests/data/vcpu_golden.json.gz`` holds, for every kernel
era x MMU kind x vendor the model supports (plus the 6.1.y stable-backport row and both
TDP levels), seeded sequences of guest operations and, after every operation, the events
the vCPU logged (their text), its step counter, the counters that changed, the role words
(``cpu_role.as_u64``, ``root_role.word``, the <= 5.18 ``mmu_role.as_u64``, nested_mmu's
and guest_mmu's), the registers and the current root.  ``tests/test_vcpu_golden.py``
replays the stored operations and compares; it never regenerates the file.

The expected values are the model's own output *before* the split (commit 05f49d5),
regenerated once for issue 14's vCPU fixes (X1, V1, V2: the commit that did it lists
which sequences changed and why): a pin of behaviour, not a statement of what the
kernel does (the other vCPU tests are).
Regenerate only when behaviour is meant to change, and say so in the commit::

    .venv/bin/python tests/vcpu_golden.py --write     # rewrites tests/data/vcpu_golden.json
    .venv/bin/python tests/vcpu_golden.py --check     # replays and compares, as the test does

Operations are drawn from those of ``tests/test_vcpu_props.py`` (register writes with
random and invalid values, bit toggles, boots, SMI/RSM, ``kvm_smm_changed``, nested
entry/exit with and without nested EPT/NPT, far jumps, emulated permission checks,
``kvm_mmu_reset_context``/``kvm_mmu_unload``, ``preview``, bad arguments) on one vCPU or a
sibling of the same VM.  Refused calls are recorded with their exception type and text.
The file is gzip-compressed JSON (``zcat`` shows one sequence per line), written
byte-identically by every run.
"""
from __future__ import annotations

import gzip
import json
import random
import sys
from pathlib import Path

if __name__ == "__main__":          # run as a script from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmu.kvm.eras import ERA_NAMES
from mmu.kvm.vcpu import MMU_KINDS, VENDORS, VCpu
from mmu.x86.memory import GuestMemory
from mmu.x86.pagetable import PageTableBuilder
from mmu.x86.regs import CR0, CR4, EFER

PATH = Path(__file__).resolve().parent / "data" / "vcpu_golden.json.gz"
SEQUENCES_PER_CONFIG = 3
OPS_PER_SEQUENCE = 40
MAXPHYADDR = 46

#: (era name, era overrides): the presets, and 6.1.y after the May-2023 CR0.WP backport.
ERA_ROWS = [(name, {}) for name in ERA_NAMES] + [
    ("6.1", {"cr0_wp_tdp_no_unload": True, "cr0_wp_guest_owned": True,
             "wp_refresh_in_permission_fault": True, "tdp_root_preserved": True})]
CONFIGS = [(k, f, m, vnd) for k, f in ERA_ROWS for m in MMU_KINDS for vnd in VENDORS]

# Guest memory: two PAE page-table trees, so PAE shadow roots have present PDPTEs
# (tests/test_vcpu_props.py uses the same memory and value pools).
PAE_BASES = (0x40_0000, 0x80_0000)
CR0_BITS = [int(b) for b in (CR0.PE, CR0.MP, CR0.EM, CR0.TS, CR0.ET, CR0.NE, CR0.WP, CR0.AM,
                             CR0.NW, CR0.CD, CR0.PG)]
CR4_BITS = [int(b) for b in CR4]
EFER_BITS = [int(b) for b in EFER]
L2_SPECS = (None, "none", "32-bit", "PAE", "4-level", "5-level", "bad-pg-no-pe", "bad-lma")
#: EPTPs: 4-level walk with A/D, 4-level without, 5-level, a bad walk length, none set.
EPTPS = (0x30_0000 | (3 << 3) | (1 << 6), 0x31_0000 | (3 << 3), 0x32_0000 | (4 << 3) | (1 << 6),
         0x33_0000 | (4 << 3), 0x34_0000)


def memory() -> GuestMemory:
    mem = GuestMemory()
    for i, base in enumerate(PAE_BASES):
        PageTableBuilder(mem, "PAE", table_base=base).map(0x40_0000 * (i + 1), 0x100_0000, 0x1000)
    return mem


def pae_cr3s() -> tuple[int, ...]:
    mem = GuestMemory()
    return tuple(PageTableBuilder(mem, "PAE", table_base=b).cr3 for b in PAE_BASES)


# CR3 values: page-aligned ones, and ones sharing a frame with them but with other low
# bits -- PWT (bit 3), PCD (bit 4), a PCID (bits 11:0 under CR4.PCIDE) -- whose roots are
# one shadow page held by two pgds.  1 << 46 and bit 63 are above MAXPHYADDR (#GP unless
# bit 63 is stripped as NOFLUSH under CR4.PCIDE).
CR3_POOL = (0, 0x1000, 0x2000, 0x5000, 0x20_0000) + pae_cr3s() + (
    0x5008, 0x5018, 0x2001, 0x20_0ABC, 1 << MAXPHYADDR, 1 << 63, (1 << 63) | 0x2000)


def _value(rng: random.Random, bits: list[int]) -> int:
    """A register value: a random mix of defined bits, sometimes a reserved one too."""
    v = sum(b for b in bits if rng.random() < 0.35)
    if rng.random() < 0.1:
        v |= 1 << rng.randrange(64)
    return v


def draw_op(rng: random.Random) -> list:
    """One operation, as JSON-able list: [vcpu index, name, *arguments]."""
    cpu = 1 if rng.random() < 0.12 else 0
    k = rng.choices(
        ["cr0", "cr0^", "wp^", "cr4", "cr4^", "efer", "efer^", "cr3", "cr3^", "boot_long",
         "boot_prot", "smi", "rsm", "smm_changed", "vmenter", "vmenter_tdp", "vmexit",
         "far_jump", "perm", "reset_context", "unload", "preview", "bad"],
        [3, 4, 5, 3, 4, 2, 2, 4, 2, 3, 2, 2, 2, 1, 3, 2, 3, 1, 3, 1, 1, 1, 1])[0]
    if k == "cr0":
        args = [_value(rng, CR0_BITS)]
    elif k == "cr0^":
        args = [rng.choice(CR0_BITS)]
    elif k == "wp^":
        args = []
    elif k == "cr4":
        args = [_value(rng, CR4_BITS)]
    elif k == "cr4^":
        args = [rng.choice(CR4_BITS)]
    elif k == "efer":
        args = [_value(rng, EFER_BITS)]
    elif k == "efer^":
        args = [rng.choice(EFER_BITS)]
    elif k == "cr3":
        args = [rng.choice(CR3_POOL)]
    elif k == "cr3^":
        args = [rng.choice([0x8, 0x10, 0x18, 0x1])]
    elif k == "boot_long":
        args = [rng.random() < 0.3, rng.random() < 0.5, rng.random() < 0.5]
    elif k == "boot_prot":
        args = [rng.random() < 0.5, rng.random() < 0.5, rng.random() < 0.5,
                rng.choice(pae_cr3s() + (0x1000,))]
    elif k == "smm_changed" or k == "far_jump":
        args = [rng.random() < 0.5]
    elif k == "vmenter":
        args = [rng.choice(L2_SPECS), rng.choice(CR3_POOL[:11])]
    elif k == "vmenter_tdp":
        eptp = rng.choice(EPTPS)
        level, ad = ((eptp >> 3 & 7) + 1, bool(eptp & 1 << 6)) if eptp & 0x7F else (4, True)
        if rng.random() < 0.25:                     # sometimes disagreeing with the EPTP
            level, ad = rng.choice([4, 5, 3]), rng.random() < 0.5
        args = [rng.choice(L2_SPECS[:6]), rng.choice(CR3_POOL[:7]), eptp, level, ad]
    elif k == "preview":
        args = [rng.choice(["cr0", "cr4", "efer", "cr3"]), rng.choice(CR0_BITS)]
    elif k == "bad":
        args = [rng.randrange(len(BAD_CALLS))]
    else:
        args = []
    return [cpu, k, *args]


BAD_CALLS = (
    ("set_cr0", ("0x11",)), ("set_cr0", (1.5,)), ("set_cr0", (True,)), ("set_cr3", (-1,)),
    ("set_cr4", (1 << 64,)), ("set_efer", (1 << 64,)), ("kvm_smm_changed", (1,)),
    ("far_jump", (1,)), ("preview", ()), ("nested_enter", (1 << 40,)),
)


def l2_regs(spec: str, cr3: int) -> dict[str, int]:
    pe_ne = int(CR0.ET | CR0.PE | CR0.NE)
    table = {
        "none": (pe_ne, 0, 0),
        "32-bit": (pe_ne | int(CR0.PG | CR0.WP), int(CR4.PSE), 0),
        "PAE": (pe_ne | int(CR0.PG | CR0.WP), int(CR4.PAE | CR4.SMEP), int(EFER.NXE)),
        "4-level": (pe_ne | int(CR0.PG | CR0.WP), int(CR4.PAE | CR4.PKE),
                    int(EFER.LME | EFER.LMA | EFER.NXE)),
        "5-level": (pe_ne | int(CR0.PG), int(CR4.PAE | CR4.LA57 | CR4.SMAP),
                    int(EFER.LME | EFER.LMA)),
        "bad-pg-no-pe": (int(CR0.ET | CR0.PG), 0, 0),
        "bad-lma": (pe_ne, int(CR4.PAE), int(EFER.LME | EFER.LMA)),
    }
    cr0, cr4, efer = table[spec]
    return dict(l2_cr0=cr0, l2_cr3=cr3, l2_cr4=cr4, l2_efer=efer)


def _call(v: VCpu, op: list):
    """Apply one operation to ``v``; returns a JSON-able summary of the return value."""
    k, a = op[1], op[2:]
    r = v.regs
    if k in ("cr0", "cr4", "efer", "cr3"):
        return getattr(v, f"set_{k}")(a[0])
    if k.endswith("^") and k != "wp^":
        name = k[:-1]
        return getattr(v, f"set_{name}")(getattr(r, name) ^ a[0])
    if k == "wp^":
        return v.set_cr0(r.cr0 ^ int(CR0.WP))
    if k == "boot_long":
        return v.boot_long_mode(cr3=0x20_0000, la57=a[0], smep=a[1], smap=a[2])
    if k == "boot_prot":
        return v.boot_protected(pae=a[0], nx=a[1], wp=a[2], cr3=a[3])
    if k == "smi":
        return v.enter_smm()
    if k == "rsm":
        return v.leave_smm()
    if k == "smm_changed":
        return v.kvm_smm_changed(a[0])
    if k == "vmenter":
        return v.nested_enter(**({} if a[0] is None else l2_regs(a[0], a[1])))
    if k == "vmenter_tdp":
        spec, cr3, eptp, level, ad = a
        kw = {} if spec is None else l2_regs(spec, cr3)
        if v.vendor == "intel":
            kw.update(eptp=eptp, ept_level=level, ept_ad=ad)
        else:
            kw.update(ncr3=eptp & ~0xFFF)
        return v.nested_enter(**kw)
    if k == "vmexit":
        return v.nested_exit()
    if k == "far_jump":
        return v.far_jump(a[0])
    if k == "perm":
        return v.emulated_permission_check()
    if k == "reset_context":
        return v.kvm_mmu_reset_context()
    if k == "unload":
        return v.kvm_mmu_unload()
    if k == "preview":
        reg = a[0]
        return v.preview(**{reg: getattr(r, reg) ^ a[1]})
    if k == "bad":
        name, args = BAD_CALLS[a[0]]
        if name == "preview":
            return v.preview(cr2=0)
        return getattr(v, name)(*args)
    raise AssertionError(op)                        # pragma: no cover


def _summary(ret) -> object:
    """What a call returned, in words: WriteResults, lists of them, a Preview, a role."""
    from mmu.kvm.vcpu import Preview, WriteResult
    if isinstance(ret, WriteResult):
        return [ret.ok, ret.exited, None if ret.fault is None else ret.fault.reason,
                len(ret.events)]
    if isinstance(ret, list):
        return [_summary(x) for x in ret]
    if isinstance(ret, Preview):
        return {"results": [_summary(x) for x in ret.results],
                "events": [str(e) for e in ret.events], "stats": sorted(ret.stats.items()),
                "roles": [_word(ret.cpu_role, "as_u64"), _word(ret.root_role, "word")]}
    if ret is None:
        return None
    return ["role", _word(ret, "as_u64")]


def _word(role, attr: str):
    return None if role is None else getattr(role, attr)


def snapshot(v: VCpu) -> dict:
    """The state recorded after an operation (besides events and counters)."""
    gm = v.guest_mmu
    return {"regs": [v.regs.cr0, v.regs.cr3, v.regs.cr4, v.regs.efer],
            "flags": [v.smm, v.guest_mode, v.cs_l],
            "roles": [_word(v.cpu_role, "as_u64"), _word(v.root_role, "word"),
                      _word(v.mmu_role, "as_u64"), _word(v.nested_mmu_role, "as_u64"),
                      _word(gm.cpu_role, "as_u64"), _word(gm.root_role, "word")],
            "root": [[x.pgd, x.hpa] for x in (v.root, *v.prev_roots)]}


def run_sequence(config: tuple, seed: int, ops: list[list]) -> list[dict]:
    """Replay ``ops`` on a fresh vCPU of ``config``; one record per operation."""
    kernel, features, mmu, vendor = config
    tdp_level = 5 if seed % 2 else 4
    v0 = VCpu(memory(), kernel=kernel, mmu=mmu, vendor=vendor, tdp_level=tdp_level,
              maxphyaddr=MAXPHYADDR, **features)
    cpus = [v0]
    marks = [len(v0.events)]
    states = [snapshot(v0)]
    out = [{"events": [str(e) for e in v0.events], "stats": sorted(v0.stats.items()),
            "state": states[0]}]
    v0.enter()
    for op in ops:
        i = op[0]
        if i >= len(cpus):
            cpus.append(v0.sibling())
            marks.append(0)
            states.append({})
        v = cpus[i]
        before = dict(v.stats)
        try:
            ret = ["ok", _summary(_call(v, op))]
        except (ValueError, TypeError) as e:
            ret = [type(e).__name__, str(e)]
        v.enter()                                   # vcpu_enter_guest -> kvm_mmu_reload
        delta = sorted((k, n - before.get(k, 0)) for k, n in v.stats.items()
                       if n != before.get(k, 0))
        state = snapshot(v)
        # Only the parts of the state that changed since this vCPU's last record.
        changed = {k: x for k, x in state.items() if states[i].get(k) != x}
        out.append({"ret": ret, "step": v.step,
                    "events": [str(e) for e in v.events[marks[i]:]], "stats": delta,
                    "state": changed})
        marks[i], states[i] = len(v.events), state
    return out


def generate() -> list[dict]:
    seqs = []
    for ci, config in enumerate(CONFIGS):
        for s in range(SEQUENCES_PER_CONFIG):
            seed = ci * 1000 + s
            rng = random.Random(seed)
            ops = [draw_op(rng) for _ in range(OPS_PER_SEQUENCE)]
            if s:                   # most sequences start from a booted 64-bit guest
                ops[0] = [0, "boot_long", s == 2, rng.random() < 0.5, rng.random() < 0.5]
            seqs.append({"config": list(config), "seed": seed, "ops": ops,
                         "records": run_sequence(config, seed, ops)})
    return seqs


# -- storage: gzip-compressed JSON (deterministic: no name, mtime 0) ------------------------
def _plain(obj):
    """Tuples to lists, as a JSON round trip makes them."""
    return json.loads(json.dumps(obj))


def write(path: Path = PATH) -> dict:
    doc = {"about": "vCPU golden corpus; regenerate: .venv/bin/python tests/vcpu_golden.py "
                    "--write (see tests/vcpu_golden.py)",
           "sequences_per_config": SEQUENCES_PER_CONFIG, "ops_per_sequence": OPS_PER_SEQUENCE,
           "sequences": _plain(generate())}
    # One sequence per line, so a gunzipped copy diffs sequence by sequence.
    text = "{" + ",".join(f"{json.dumps(k)}:{json.dumps(v, separators=(',', ':'))}"
                          for k, v in doc.items() if k != "sequences")
    text += ',"sequences":[\n' + ",\n".join(json.dumps(s, separators=(",", ":"))
                                              for s in doc["sequences"]) + "\n]}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                                 mtime=0, compresslevel=9) as f:
        f.write(text.encode())
    return doc


def load(path: Path = PATH) -> list[dict]:
    """The stored sequences."""
    with gzip.open(path, "rt") as f:
        return json.load(f)["sequences"]


def first_difference(stored: dict) -> "str | None":
    """Replay one stored sequence; None if identical, else where and how it differs."""
    config = tuple(stored["config"][:1]) + (dict(stored["config"][1]),) + tuple(stored["config"][2:])
    got = _plain(run_sequence(config, stored["seed"], stored["ops"]))
    for n, (want, have) in enumerate(zip(stored["records"], got)):
        if want != have:
            op = "creation" if n == 0 else stored["ops"][n - 1]
            keys = [k for k in want if want.get(k) != have.get(k)]
            k = keys[0]
            return (f"config={stored['config']} seed={stored['seed']} op #{n} {op}: "
                    f"{k} differs:\n  stored: {want[k]}\n  now:    {have[k]}")
    if len(got) != len(stored["records"]):
        return f"seed={stored['seed']}: {len(got)} records, stored {len(stored['records'])}"
    return None


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        doc = write()
        n_ops = sum(len(s["ops"]) for s in doc["sequences"])
        print(f"wrote {PATH}: {len(CONFIGS)} configurations, {len(doc['sequences'])} sequences, "
              f"{n_ops} operations, "
              f"{PATH.stat().st_size} bytes")
    elif sys.argv[1:] == ["--check"]:
        bad = [d for d in map(first_difference, load()) if d]
        print("\n".join(bad) or "identical")
        sys.exit(1 if bad else 0)
    else:
        sys.exit("usage: tests/vcpu_golden.py --write | --check")
