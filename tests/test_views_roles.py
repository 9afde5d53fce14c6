"""The role explorer's summary puts each caveat beside the claim it qualifies."""
from __future__ import annotations

from mmu.book.views.roles_view import ExplorerState, explore, render


def summary_lines(res) -> list[str]:
    text = render(res).text
    return text.split("Summary\n", 1)[1].split("\n\n", 1)[0].splitlines()


def test_no_exit_caveat_sits_under_the_cpu_role_claim():
    # Linux 6.4 on Intel: CR0.WP is guest-owned (vmx.c), so the write never exits and
    # KVM's cached cpu_role is refreshed only later (kvm_mmu_refresh_passthrough_bits).
    start = ExplorerState()
    res = explore(start.replace(cr0_wp=False), start)
    assert res.outcome == "no-exit" and res.stale
    lines = summary_lines(res)
    i = next(i for i, line in enumerate(lines) if line.startswith("cpu_role.as_u64"))
    assert "▲ changed (the guest's; see next row)" in lines[i]
    assert "⚠ KVM's copy" in lines[i + 1] and "stale until kvm_mmu_refresh_passthrough_bits" \
        in lines[i + 1]
    assert "stale" not in "\n".join(res.notes)            # said once, beside the claim


def test_an_exit_has_no_stale_caveat():
    # AMD (SVM) intercepts every CR0 write: KVM recomputes cpu_role at once.
    start = ExplorerState(vendor="amd")
    res = explore(start.replace(cr0_wp=False), start)
    assert res.outcome == "root-kept" and res.stale is None
    assert not any("KVM's copy" in line for line in summary_lines(res))
