"""mmu.kvmhost on the host's /dev/kvm: the comparisons agree on every case the host
accepts, a wrong model answer is caught, runs are bounded, nothing is left behind.

Skips (saying why) where /dev/kvm is absent or unusable; the tracing tests also need
root.  Expected values marked "hand-derived" come from the role layout (facts §1.1:
level bits 0-3, direct 7, access 8-10, efer_nx 12, cr0_wp 13, smep_andnot_wp 14,
smap_andnot_wp 15) and the SDM's #PF error-code bits, not from the model.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from mmu.kvmhost import guest as g, kvm_unusable_reason, report as rep
from mmu.kvmhost.backend import detect
from mmu.kvmhost.model_side import Model
from mmu.kvmhost.runner import Host
from mmu.kvmhost.trace import leftovers, tracing_unusable_reason

_WHY = kvm_unusable_reason()
pytestmark = pytest.mark.skipif(_WHY is not None, reason=f"needs a usable /dev/kvm: {_WHY}")
needs_root = pytest.mark.skipif(tracing_unusable_reason() is not None,
                                reason=f"needs tracing: {tracing_unusable_reason()}")


def _params() -> dict[str, str]:
    out = {}
    for mod in ("kvm", "kvm_intel", "kvm_amd", "kvm_pvm"):
        d = f"/sys/module/{mod}/parameters"
        if os.path.isdir(d):
            for name in sorted(os.listdir(d)):
                try:
                    with open(os.path.join(d, name)) as f:
                        out[f"{mod}.{name}"] = f.read()
                except OSError:
                    pass
    return out


@pytest.fixture(scope="module")
def record():
    before = _params()
    r = rep.run()
    # Safety point 3: no module parameter changed by a whole run.
    assert _params() == before
    return r


def test_every_case_the_host_accepts_agrees_with_the_model(record):
    bad = [(c.name, c.real, c.model) for c in record.disagreements]
    assert not bad, bad
    assert record.summary["agree"] > 0
    for c in record.cases:
        assert c.status in ("agree", "refused", "skipped", "measured"), c


def test_no_tracefs_instance_or_event_is_left_after_a_run(record):
    assert record.cleanup == {"instances": [], "enabled": [], "mounts": []}
    assert leftovers() == {"instances": [], "enabled": [], "mounts": []}


@needs_root
def test_real_root_role_words_match_hand_derived_values(record):
    by_name = {c.name: c for c in record.cases_of("roles")}
    gfn = g.TABLE_GPA >> 12
    # hand-derived: level 4 | access 7<<8 | efer_nx<<12 | cr0_wp<<13 = 0x3704
    assert by_name["4-level WP=1 NX=1 SMEP=0 SMAP=0 PKE=0"].real == [[gfn, 0x3704]]
    # EFER.NX=0 does not change the word (the shadow root forces efer_nx=1)
    assert by_name["4-level WP=1 NX=0 SMEP=0 SMAP=0 PKE=0"].real == [[gfn, 0x3704]]
    # WP=0 with SMEP: cr0_wp=0, smep_andnot_wp=1 -> 0x1704 | 1<<14
    assert by_name["4-level WP=0 NX=1 SMEP=1 SMAP=0 PKE=0"].real == [[gfn, 0x5704]]
    # paging off: 4 direct level-2 pages, direct<<7 | access 7<<8 | efer_nx -> 0x1782
    assert by_name["none WP=1 NX=1 SMEP=0 SMAP=0 PKE=0"].real == \
        [[0, 0x1782], [0x40000, 0x1782], [0x80000, 0x1782], [0xC0000, 0x1782]]


def test_refused_states_say_how(record):
    b = detect()
    for c in record.cases:
        if c.status == "refused":
            assert c.note and c.real is None, c
    if b.vendor == "pvm":
        # real-kvm-notes: PVM clears CR0.PG for 32-bit/PAE and refuses LA57 with EINVAL
        roles = {c.name: c for c in record.cases_of("roles")}
        assert "cleared CR0.PG" in roles["PAE WP=1 NX=1 SMEP=0 SMAP=0 PKE=0"].note
        assert roles["5-level WP=1 NX=1 SMEP=0 SMAP=0 PKE=0"].note == "KVM_SET_SREGS: EINVAL"


def test_pf_error_codes_match_the_sdm_bits(record):
    got = {c.name: c.real for c in record.cases_of("pf_error_codes")}
    # hand-derived from the SDM's error-code bits: P=1, W=2, U=4, I/D=0x10
    assert got["write, not present"] == "#PF 0x2"
    assert got["supervisor write to a read-only page, WP=1"] == "#PF 0x3"
    assert got["supervisor write to a read-only page, WP=0"] == "no fault"
    assert got["fetch from an XD page"] == "#PF 0x11"


class _WrongModel(Model):
    """The model with one answer deliberately wrong: every #PF error code gains W."""

    def fault(self, mem, regs, gva, access, cpl):
        right = super().fault(mem, regs, gva, access, cpl)
        return right if right == "no fault" else f"#PF {int(right.split()[1], 16) | 2:#x}"


def test_a_wrong_model_answer_is_reported_as_a_disagreement(monkeypatch, capsys):
    b = detect()
    r = rep.run(["pf_error_codes"], model=_WrongModel(b.era, b.mmu_kind, b.model_vendor))
    wrong = {c.name for c in r.disagreements}
    # cases whose right answer lacks W (read, fetch) must now disagree; ones with W agree
    assert "read, not present" in wrong and "fetch from an XD page" in wrong
    assert "write, not present" not in wrong
    # and the command line exits nonzero on it
    monkeypatch.setattr(rep, "Model", _WrongModel)
    from mmu.kvmhost.__main__ import main
    assert main(["run", "--only", "pf_error_codes", "--no-trace"]) == 1
    assert "✘ disagree" in capsys.readouterr().out


def test_a_guest_that_never_exits_is_stopped_by_the_time_limit():
    img = g.GuestImage()
    with Host(trace=False, time_limit=0.3) as h:
        t0 = time.monotonic()
        with pytest.raises(RuntimeError, match="time-limit"):
            h.boot(img, g.long_mode_regs(img.cr3()), bytes([0xEB, 0xFE]))   # JMP $ on purpose
        assert time.monotonic() - t0 < 3


_CHILD = textwrap.dedent("""
    import sys, time
    from mmu.kvmhost.runner import Host
    from mmu.kvmhost.experiments import run_experiments
    from mmu.kvmhost.backend import detect
    from mmu.kvmhost.model_side import Model
    b = detect()
    m = Model(b.era, b.mmu_kind, b.model_vendor)
    with Host() as h:
        print(h.session.instance, flush=True)
        while True:                                # until the parent interrupts us
            run_experiments(h, m, b, ["wp_toggles"])
""")


@needs_root
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_leaves_no_instance_behind(sig):
    p = subprocess.Popen([sys.executable, "-c", _CHILD], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        instance = p.stdout.readline().strip()
        assert instance and os.path.isdir(instance), p.stderr.read()
        time.sleep(0.5)                            # inside the loop of runs
        p.send_signal(sig)
        _, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode != 0, err                  # it was interrupted, not finished
    left = leftovers([p.pid])
    assert not os.path.exists(instance), (left, err[-2000:])
    assert left == {"instances": [], "enabled": [], "mounts": []}, err[-2000:]


@needs_root
def test_a_killed_run_is_cleaned_up_by_the_next_session():
    # SIGKILL cannot be caught: the instance (and our mount) stay until the next session
    # finds their process gone and removes them.
    from mmu.kvmhost.trace import TraceSession
    p = subprocess.Popen([sys.executable, "-c", _CHILD], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip()
        time.sleep(0.3)
    finally:
        p.kill()
        p.wait()
    # (a session of a concurrent test run may have removed it already)
    assert leftovers([p.pid])["instances"] in ([f"kvmhost-{p.pid}-0"], [])
    with TraceSession():
        pass
    assert leftovers() == {"instances": [], "enabled": [], "mounts": []}


def test_without_tracing_the_traced_cases_skip_and_say_why():
    r = rep.run(["roles", "pf_error_codes", "wp_toggles"], trace=False)
    assert not r.tracing and r.trace_note == "tracing turned off"
    roles = r.cases_of("roles")
    assert roles and all(c.status == "skipped" and "tracing" in c.note for c in roles)
    pf = {c.name: c for c in r.cases_of("pf_error_codes")}
    # kernel-mode faults come from the guest's own handlers: no tracing needed
    assert pf["write, not present"].status == "agree"
    assert pf["user write to a read-only user page, WP=1"].status == "skipped"
    assert not r.disagreements


@needs_root
def test_trace_session_is_private_and_limited_to_this_process():
    from mmu.kvmhost.trace import TraceSession
    with TraceSession() as t:
        inst = t.instance
        assert os.path.basename(inst).startswith(f"kvmhost-{os.getpid()}-")
        with open(os.path.join(inst, "set_event_pid")) as f:
            assert f.read().split() == [str(os.getpid())]
        with open(os.path.join(inst, "events", "kvmmmu", "kvm_mmu_get_page", "enable")) as f:
            assert f.read().strip() == "1"
        # the top-level instance is not touched: our events stay off there
        with open(os.path.join(t.root, "events", "kvmmmu", "kvm_mmu_get_page", "enable")) as f:
            assert f.read().strip() == "0"
    assert not os.path.exists(inst)
    assert leftovers() == {"instances": [], "enabled": [], "mounts": []}
