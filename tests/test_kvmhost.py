"""mmu.kvmhost without a host: ABI layouts, stats and trace parsing, backend detection,
guests, the report record and its rendering.  Runs everywhere (no /dev/kvm needed)."""
from __future__ import annotations

import ctypes
import json
import os
import struct

import pytest

from mmu.book.views.kvmhost_view import first_difference, format_value, render_diff, \
    render_report
from mmu.kvmhost import abi, guest as g, report as rep
from mmu.kvmhost.backend import Backend, detect, era_for_kernel
from mmu.kvmhost.experiments import Case, PF_CASES, verdict
from mmu.kvmhost.host import HostVcpu, MAX_SECONDS
from mmu.kvmhost.stats import delta, read_stats
from mmu.kvmhost.trace import TraceSession, parse_trace
from mmu.x86.regs import Regs, make_regs
from mmu.x86.walker import walk


# -- ABI ----------------------------------------------------------------------------------
def test_ioctl_numbers_match_the_kernel_headers():
    # Values as the kernel's _IO/_IOR/_IOW macros give them (checked by hand against
    # include/uapi/linux/kvm.h: KVM_RUN = _IO(0xAE, 0x80), KVM_GET_SREGS = _IOR(.., 0x83,
    # struct kvm_sregs) with sizeof 312 = 0x138).
    assert abi.KVM_RUN == 0xAE80
    assert abi.KVM_CREATE_VM == 0xAE01
    assert abi.KVM_GET_SREGS == 0x8138AE83
    assert abi.KVM_SET_SREGS == 0x4138AE84
    assert abi.KVM_GET_REGS == 0x8090AE81            # struct kvm_regs: 18 u64 = 144 = 0x90
    assert abi.KVM_SET_USER_MEMORY_REGION == 0x4020AE46
    assert abi.KVM_GET_STATS_FD == 0xAECE


def test_kvm_run_io_fields_sit_where_api_rst_puts_them():
    # struct kvm_run: exit_reason at 8, the exit union at 32 (api.rst "kvm_run").
    assert abi.KvmRun.exit_reason.offset == 8
    assert abi.KvmRun.exit.offset == 32


# -- binary stats ---------------------------------------------------------------------------
def _stats_blob(values: dict[str, int], name_size: int = 48) -> bytes:
    # api.rst 4.133 layout, written independently of stats.read_stats
    n = len(values)
    head_size, id_size = 24, name_size
    desc_size = 16 + name_size
    desc_off = head_size + id_size
    data_off = desc_off + n * desc_size
    head = struct.pack("<6I", 0, name_size, n, head_size, desc_off, data_off)
    descs, data = b"", b""
    for i, (name, v) in enumerate(values.items()):
        descs += struct.pack("<IhHII", 0, 0, 1, 8 * i, 0) + name.encode().ljust(name_size, b"\0")
        data += struct.pack("<Q", v)
    return head + b"vm-1".ljust(id_size, b"\0") + descs + data


def test_read_stats_parses_the_documented_layout(tmp_path):
    p = tmp_path / "stats"
    p.write_bytes(_stats_blob({"mmu_cache_miss": 4, "mmu_shadow_zapped": 0, "exits": 123}))
    fd = os.open(p, os.O_RDONLY)
    try:
        assert read_stats(fd) == {"mmu_cache_miss": 4, "mmu_shadow_zapped": 0, "exits": 123}
    finally:
        os.close(fd)
    assert delta({"a": 1, "b": 5}, {"a": 3, "b": 5}) == {"a": 2}


# -- trace parsing --------------------------------------------------------------------------
TRACE = """# tracer: nop
          python-2517    [001] .N.1.   918.847290: kvm_mmu_get_page: mmu_valid_gen=(0) gfn=0x100 (256) role=0x3704 (14084) root_count=0x0 (0) unsync=(0) created=(1)
          python-2517    [001] ...1.   918.847421: kvm_pio: rw=0x1 (1) port=0x11 (17) size=0x1 (1) count=0x1 (1) val=0x0 (0)
          python-2517    [001] ...1.   918.847450: kvm_inj_exception: exception=(14) has_error=(1) error_code=0x7 (7) reinjected=(0)
"""


def test_parse_trace_reads_raw_fields():
    evs = parse_trace(TRACE)
    assert [e.name for e in evs] == ["kvm_mmu_get_page", "kvm_pio", "kvm_inj_exception"]
    assert evs[0]["role"] == 0x3704 and evs[0]["gfn"] == 0x100 and evs[0]["created"] == 1
    assert evs[2]["exception"] == 14 and evs[2]["error_code"] == 7
    assert evs[0].pid == 2517


def test_trace_session_refuses_bad_event_names_before_touching_tracefs():
    if os.geteuid() != 0:
        with pytest.raises(PermissionError, match="root"):
            TraceSession()
        return
    with pytest.raises(ValueError, match="system/name"):
        TraceSession(("kvm_mmu_get_page",))
    with pytest.raises(ValueError, match="buffer_kb"):
        TraceSession(buffer_kb=1)


# -- backend detection ----------------------------------------------------------------------
def _fake_sys(tmp_path, modules: dict[str, dict[str, str]]):
    for mod, params in modules.items():
        d = tmp_path / "module" / mod / "parameters"
        d.mkdir(parents=True)
        for k, v in params.items():
            (d / k).write_text(v + "\n")
    cpu = tmp_path / "cpuinfo"
    cpu.write_text("flags\t\t: fpu vme hypervisor\n")
    return str(tmp_path), str(cpu)


@pytest.mark.parametrize("modules, vendor, kind", [
    ({"kvm": {"tdp_mmu": "N"}, "kvm_pvm": {}}, "pvm", "shadow"),
    ({"kvm": {"tdp_mmu": "Y"}, "kvm_intel": {"ept": "Y"}}, "intel", "tdp"),
    ({"kvm": {"tdp_mmu": "N"}, "kvm_intel": {"ept": "Y"}}, "intel", "legacy"),
    ({"kvm": {"tdp_mmu": "Y"}, "kvm_intel": {"ept": "N"}}, "intel", "shadow"),
    ({"kvm": {"tdp_mmu": "Y"}, "kvm_amd": {"npt": "1"}}, "amd", "tdp"),
])
def test_detect_maps_modules_and_parameters_to_the_model(tmp_path, modules, vendor, kind):
    root, cpu = _fake_sys(tmp_path, modules)
    b = detect(root, release="6.18.44-fc", cpuinfo=cpu)
    assert (b.vendor, b.mmu_kind, b.nested) == (vendor, kind, True)
    assert b.era == era_for_kernel("6.18.44")
    assert f"mmu={kind}" in b.line()
    assert Backend.from_dict(b.as_dict()) == b


def test_era_for_kernel_takes_the_newest_era_not_newer():
    eras = ("5.15", "5.18", "5.19", "6.1", "6.4")
    assert era_for_kernel("6.18.44-fc-v1272", eras) == "6.4"
    assert era_for_kernel("6.3.2", eras) == "6.1"
    assert era_for_kernel("5.19.0", eras) == "5.19"
    assert era_for_kernel("5.10.1", eras) == "5.15"     # older than all: the oldest
    with pytest.raises(ValueError, match="MAJOR.MINOR"):
        era_for_kernel("linux")


# -- guests built on purpose -----------------------------------------------------------------
def test_guest_image_identity_maps_its_low_memory_and_has_exception_stubs():
    img = g.GuestImage()
    regs = g.long_mode_regs(img.cr3())
    for gva in (g.GDT_GPA, g.IDT_GPA, g.CODE_GPA, g.STACK_TOP - 8, g.DATA_GPA):
        assert walk(img.mem, regs, gva, "read").gpa == gva
    # the #PF stub (vector 14) pops the error code, reports it and the vector, halts
    stub = img.mem.read(g.STUB_GPA + 16 * 14, 10)
    assert stub[:3] == bytes([0x58, 0xE7, g.PORT_ERROR])
    assert stub[3:8] == bytes([0xB0, 14, 0xE6, g.PORT_VECTOR, 0xF4])


def test_sregs_for_refuses_states_no_cpu_can_be_in():
    # Safety point 1: only consistent register states reach KVM_SET_SREGS.
    bad = Regs(cr0=0x8000_0000, cr3=0, cr4=0, efer=0)     # PG without PE
    with pytest.raises(ValueError, match="CR0.PE"):
        g.sregs_for(abi.KvmSregs(), bad)
    lma_without_pae = Regs(cr0=0x8000_0011, cr3=0, cr4=0, efer=0x500)
    with pytest.raises(ValueError, match="PAE"):
        g.sregs_for(abi.KvmSregs(), lma_without_pae)
    with pytest.raises(ValueError, match="cpl"):
        g.sregs_for(abi.KvmSregs(), make_regs("4-level"), cpl=1)


def test_sregs_for_long_mode_has_a_64_bit_code_segment():
    s = g.sregs_for(abi.KvmSregs(), make_regs("4-level", cr3=0x100000))
    assert (s.cs.l, s.cs.db, s.cs.dpl, s.cs.selector) == (1, 0, 0, g.KERNEL_CS)
    assert s.cr3 == 0x100000 and s.efer & 0x500 == 0x500
    u = g.sregs_for(abi.KvmSregs(), make_regs("4-level"), cpl=3)
    assert (u.cs.dpl, u.ss.dpl, u.cs.selector) == (3, 3, g.USER_CS)


def test_asm_encodes_the_few_instructions_by_the_sdm():
    a = g.Asm().mov_imm("rax", 0x1234).mov_to_cr(0, "rbx").mov_to_cr(3, "rax")
    assert bytes(a.code) == bytes([0x48, 0xB8, 0x34, 0x12, 0, 0, 0, 0, 0, 0,
                                   0x0F, 0x22, 0xC3, 0x0F, 0x22, 0xD8])
    assert bytes(g.Asm().load("rcx", "rax").store("rdx", "rcx").call("rax").code) == \
        bytes([0x48, 0x8B, 0x08, 0x48, 0x89, 0x0A, 0xFF, 0xD0])
    with pytest.raises(ValueError, match="cr"):
        g.Asm().mov_to_cr(2, "rax")
    with pytest.raises(ValueError, match="access"):
        g.Asm().access("exec", 0)


def test_run_bounds_are_checked_before_running():
    v = HostVcpu.__new__(HostVcpu)           # no /dev/kvm needed: refused before any ioctl
    with pytest.raises(ValueError, match="time_limit"):
        v.run(time_limit=MAX_SECONDS + 1)
    with pytest.raises(ValueError, match="max_exits"):
        v.run(max_exits=0)


def test_pf_cases_are_distinct():
    assert len({c.name for c in PF_CASES}) == len(PF_CASES)


# -- the record, its rendering and its diff ---------------------------------------------------
def test_verdict_and_rendering_of_a_disagreement():
    assert verdict([[256, 0x3704]], [[256, 0x3704]]) == "agree"
    assert verdict("#PF 0x3", "#PF 0x1") == "disagree"
    assert format_value([[0x100, 0x3704]]) == "0x100: 0x3704"
    assert format_value(["new"] + ["found"] * 39) == "1 new, 39 found"
    assert first_difference(["new", "found"], ["new", "new"]) == "step 1: host found, model new"


def test_reference_run_is_labelled_and_renders():
    r = rep.reference()
    for key in ("kernel", "backend", "date", "command"):
        assert r.label[key]
    assert r.label["command"].startswith("python -m mmu.kvmhost run --json")
    assert not any(r.cleanup.values()), r.cleanup
    assert r.summary["disagree"] == 0 and r.summary["agree"] > 0
    text = render_report(r).text
    assert r.label["backend"] in text and "✔ agree" in text


def test_diff_reports_a_changed_answer_and_nothing_else(tmp_path):
    a = rep.reference()
    d = a.as_dict()
    first = next(i for i, c in enumerate(d["cases"]) if c["experiment"] == "roles"
                 and c["status"] == "agree")
    d["cases"][first]["real"] = [[256, 0x1704]]
    d["cases"][first]["status"] = "disagree"
    path = tmp_path / "b.json"
    path.write_text(json.dumps(d))
    b = rep.load(str(path))
    diffs = rep.diff(a, b)
    assert [(x.experiment, x.name) for x in diffs] == [("roles", a.cases[first].name)]
    assert "Host answers that differ: 1" in render_diff(a, b, diffs).text
    assert rep.diff(a, a) == []
    from mmu.kvmhost.__main__ import main
    assert main(["diff", rep.REFERENCE_PATH, str(path)]) == 1
    assert main(["diff", rep.REFERENCE_PATH, rep.REFERENCE_PATH]) == 0


def test_load_refuses_an_unknown_format(tmp_path):
    p = tmp_path / "x.json"
    p.write_text(json.dumps({"format": 99}))
    with pytest.raises(ValueError, match="format 99"):
        rep.load(str(p))
    assert ctypes.sizeof(abi.KvmSregs) == 312
    assert Case("e", "n", 1, 1, "agree").as_dict()["status"] == "agree"


def test_without_a_usable_kvm_nothing_is_run_and_the_reason_is_given(monkeypatch, capsys):
    import mmu.kvmhost.host as host
    monkeypatch.setattr(host, "kvm_unusable_reason", lambda *a: "/dev/kvm does not exist")
    live, how = rep.live_run()
    assert live is None and "/dev/kvm does not exist" in how and "reference run" in how
    from mmu.kvmhost.__main__ import main
    assert main(["run"]) == 2
    assert "cannot run on this host: /dev/kvm does not exist" in capsys.readouterr().err


def test_kvm_unusable_reason_names_a_missing_device(tmp_path):
    from mmu.kvmhost import kvm_unusable_reason
    assert "does not exist" in kvm_unusable_reason(str(tmp_path / "kvm"))


def test_long_layouts_mark_the_page_that_differs():
    r = rep.reference()
    d = r.as_dict()
    i = next(k for k, c in enumerate(d["cases"]) if c["experiment"] == "cpl3_shadow_tree")
    case = d["cases"][i]
    # hand-made wrong host answer: the last page (the PT under the read-only PDE, access 5)
    # read back with access 7 instead
    gfn, word = case["real"][-1]
    case["real"][-1] = [gfn, word | 0x700]
    case["status"] = "disagree"
    from mmu.book.views.kvmhost_view import render_experiment
    b = rep.Report.from_dict(d)
    lines = render_experiment(b, "cpl3_shadow_tree").text.splitlines()
    bad = [ln for ln in lines if "✘" in ln]
    assert len(bad) == 1 and f"{gfn:#x}" in bad[0] and f"{word | 0x700:#06x}" in bad[0]
    cost = render_experiment(r, "toggle_cost").text
    assert "µs per WP toggle" in cost and "cycles per toggle" in cost


class _NoBootHost:
    """A host that traces but must not be asked to run anything."""

    tracing, trace_note, kvm = True, "", None

    def boot(self, *a, **kw):
        raise AssertionError("this case cannot be observed on this backend: no run expected")


def _backend(kind: str, vendor: str) -> Backend:
    return Backend("6.18.0", {"intel": "kvm_intel", "amd": "kvm_amd", "pvm": "kvm_pvm"}[vendor],
                   vendor, kind != "shadow", kind == "tdp", False, "6.4", kind)


def test_what_a_tdp_mmu_host_cannot_show_is_skipped_not_compared():
    from mmu.kvmhost.experiments import cpl3_shadow_tree, roles
    from mmu.kvmhost.model_side import Model
    b = _backend("tdp", "intel")
    m = Model(b.era, b.mmu_kind, b.model_vendor)
    cases = roles(_NoBootHost(), m, b) + cpl3_shadow_tree(_NoBootHost(), m, b)
    assert cases and all(c.status == "skipped" for c in cases)
    assert "TDP MMU" in cases[0].note and "shadow paging" in cases[-1].note


def test_with_ept_the_model_answers_a_fault_with_the_cpus_error_code():
    # Intel, EPT: the CPU walks the guest tables and delivers the #PF itself; a supervisor
    # write to a read-only page with WP=1 is P|W = 0x3 (SDM 4.7), a user read of a
    # supervisor page P|U = 0x5.
    from mmu.kvmhost.experiments import TEST_VA
    from mmu.kvmhost.model_side import Model
    img = g.GuestImage()
    img.map(TEST_VA, g.DATA_GPA, 0x1000, writable=False)
    regs = g.long_mode_regs(img.cr3())
    for kind in ("tdp", "legacy", "shadow"):
        m = Model("6.4", kind, "intel")
        assert m.fault(img.mem, regs, TEST_VA, "write", 0) == "#PF 0x3"
        assert m.fault(img.mem, regs, TEST_VA, "read", 3) == "#PF 0x5"


def test_tracing_reason_without_a_host_kernel(monkeypatch):
    """In the live edition (Pyodide) os has no geteuid: chapter 10 says why it cannot trace
    instead of failing (the live-edition sweep in tests/test_book.py runs the chapter)."""
    import os
    from mmu.kvmhost import trace
    monkeypatch.delattr(os, "geteuid")
    reason = trace.tracing_unusable_reason()
    assert reason is not None and "no os.geteuid" in reason
