"""Chapter 8, nested virtualisation: the roles of the three MMUs a vCPU has while it runs
an L2 guest, and the role bits (``guest_mode``, ``smm``) that keep roots apart.

When L1 (a guest hypervisor) runs L2, KVM (L0) has three ``struct kvm_mmu`` per vCPU
(facts §2.3):

* ``root_mmu``: L1's own MMU (TDP or shadow), used for L1 and for L2 when L1 gives L2 no
  EPT/NPT of its own;
* ``guest_mmu``: shadows *L1's* EPT or NPT tables for L2 (``kvm_init_shadow_ept_mmu`` /
  ``kvm_init_shadow_npt_mmu``), so its CPU role describes L1's EPT/NPT format;
* ``nested_mmu``: walks *L2's* page tables (L2 GVA -> L2 GPA) when KVM emulates for L2 with
  TDP (``init_kvm_nested_mmu``); it has no roots, only a CPU role.

Everything is computed by :mod:`mmu.kvm.roles` (5.19+ builders) and, for the SMM/guest-mode
trace, by :mod:`mmu.kvm.vcpu` through :func:`mmu.book.views.root_cache_view.trace_steps`.
"""
from __future__ import annotations

import dataclasses

from mmu.kvm import roles
from mmu.x86.regs import make_regs
from mmu.book.views.common import Table, View, bullet_html, esc, hexword, role_field_table, wrap_html
from mmu.book.sources import cite
from mmu.book.views.root_cache_view import wrap_notes

__all__ = ["KIND_LABELS", "MODES", "NestedParams", "NestedResult", "nested_roles",
           "render_nested", "separation", "render_separation", "smm_guest_mode_trace"]

KIND_LABELS = {
    "npt": "nested NPT (guest_mmu shadows L1's NPT)",
    "ept": "nested EPT (guest_mmu shadows L1's EPT)",
    "nested_mmu": "nested MMU (walks L2's own tables)",
}
MODES = ("none", "32-bit", "PAE", "4-level", "5-level")


@dataclasses.dataclass(frozen=True)
class NestedParams:
    """``mode``: L1's paging mode at VMRUN (= its NPT format) for "npt", L2's paging mode
    for "nested_mmu"; unused for "ept".  ``tdp_level``: L0's NPT level (npt).
    ``ept_level``/``ad``/``execonly``: the EPTP's page-walk length, its A/D enable and
    whether L1 exposes execute-only EPT (ept).  ``smm``: the vCPU is in SMM."""

    kind: str = "npt"
    mode: str = "4-level"
    tdp_level: int = 4
    ept_level: int = 4
    ad: bool = True
    execonly: bool = False
    smm: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KIND_LABELS:
            raise ValueError(f"kind={self.kind!r}: allowed {tuple(KIND_LABELS)}")
        if self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r}: allowed {MODES}")
        for name in ("tdp_level", "ept_level"):
            v = getattr(self, name)
            if isinstance(v, bool) or v not in roles.TDP_LEVELS:
                raise ValueError(f"{name}={v!r}: allowed {roles.TDP_LEVELS}")
        for name in ("ad", "execonly", "smm"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, not {type(getattr(self, name)).__name__}")


@dataclasses.dataclass(frozen=True)
class NestedResult:
    params: NestedParams
    cpu_role: "roles.CpuRole | None"
    root_role: "roles.PageRole | None"      # None: nested MMU (no roots) or refused
    refused: str | None                    # why the kernel would WARN / the state is impossible
    notes: tuple[str, ...]


def nested_roles(p: NestedParams) -> NestedResult:
    """The CPU role and root role of the chosen nested MMU (or why there are none)."""
    if not isinstance(p, NestedParams):
        raise TypeError(f"p must be a NestedParams, not {type(p).__name__}")
    try:
        if p.kind == "ept":
            cpu = roles.nested_ept_role(p.ept_level, p.ad, p.execonly, smm=p.smm)
            return NestedResult(p, cpu, cpu.base, None, (
                "kvm_calc_shadow_ept_root_page_role builds the role from zero: EPT walks do "
                "not depend on L1's or L2's CR0/CR4/EFER, only on the EPTP.",
                f"level = EPTP page-walk length ({p.ept_level}); ad_disabled = "
                f"{int(not p.ad)} (EPTP A/D {'on' if p.ad else 'off'}); ext.execonly = "
                f"{int(p.execonly)}; guest_mode = 1; smm = 0.",
                "kvm_init_shadow_ept_mmu compares only cpu_role.as_u64 and uses cpu_role.base "
                "unchanged as root_role.",
                "permissions are built with ept=true and pkru_mask = 0; the EPT walker sets "
                "A/D bits iff !cpu_role.base.ad_disabled (the old ept_ad field)."))
        regs = make_regs(p.mode)
        if p.kind == "npt":
            cpu, root = roles.nested_npt_roles(regs, p.tdp_level, smm=p.smm)
            notes = [
                "kvm_init_shadow_npt_mmu: CPU role from L1's CR4/EFER with CR0 = PG only "
                "(CR0.WP ignored: NPT walks are user-like) and CR4.PKE masked off.",
                f"cr0_wp = {cpu.base.cr0_wp}, smep_andnot_wp/smap_andnot_wp follow "
                "CR4.SMEP/SMAP; efer_nx is L1's EFER.NX, not forced; guest_mode = 1.",
                f"root_role = cpu_role.base with level = L0's TDP level ({p.tdp_level}).",
            ]
            if root.passthrough:
                notes.append("passthrough = 1: L0's NPT is 5-level but L1's is 4-level, so "
                             "the root has no guest PTEs of its own (84e5ffd045f3); its only "
                             "entry points at the page shadowing L1's top table, whose role "
                             "clears passthrough again.")
            return NestedResult(p, cpu, root, None, tuple(notes))
        cpu = roles.nested_mmu_role(regs, smm=p.smm)
        return NestedResult(p, cpu, None, None, (
            "init_kvm_nested_mmu: the CPU role of L2's own paging (kvm_calc_cpu_role with "
            "guest_mode = 1); it walks L2 GVA -> L2 GPA when KVM emulates an L2 instruction.",
            "Only cpu_role is stored and compared: this MMU never has roots, so root_role is "
            "unused (5.18 set its role's direct = 1 to catch bogus use)."))
    except ValueError as e:
        return NestedResult(p, None, None, str(e), ())


def render_nested(res: NestedResult) -> View:
    """Role tables (named fields, raw words), the notes, or the refusal."""
    if not isinstance(res, NestedResult):
        raise TypeError(f"res must be a NestedResult, not {type(res).__name__}")
    p = res.params
    head = f"{KIND_LABELS[p.kind]}; " + (
        f"EPTP {p.ept_level}-level, A/D {'on' if p.ad else 'off'}, execonly={int(p.execonly)}"
        if p.kind == "ept" else
        f"{'L1' if p.kind == 'npt' else 'L2'} {p.mode} paging"
        + (f", L0 TDP {p.tdp_level}-level" if p.kind == "npt" else "")) + \
        ("; in SMM" if p.smm else "")
    if res.refused:
        msg = f"refused: {res.refused}"
        return View(f"{head}\n{msg}", wrap_html(
            f"<p><b>{esc(head)}</b></p><div class=\"gp\">{esc(msg)}</div>", "nested-view"))
    tables = [role_field_table(f"cpu_role = {hexword(res.cpu_role.as_u64, 64)}", res.cpu_role)]
    if res.root_role is not None:
        tables.append(role_field_table(f"root_role = {hexword(res.root_role.word)}",
                                       res.root_role))
    else:
        tables.append(Table("root_role", ("field", "value"), (("(none)", "unused: no roots"),)))
    text = "\n\n".join([head] + [t.text() for t in tables] + [wrap_notes(res.notes)])
    html = f"<p><b>{esc(head)}</b></p>" + "".join(t.html() for t in tables) + \
        bullet_html(res.notes)
    return View(text, wrap_html(html, "nested-view"))


# ---- roots that must not mix ---------------------------------------------------------------

def separation(tdp_level: int = 4) -> list[tuple[str, str, roles.PageRole]]:
    """(who, which MMU, root role) for the roots a vCPU of a nesting VM can need with TDP,
    all for a 4-level L1/L2 with WP/NX and EPT A/D on."""
    regs = make_regs("4-level")
    rows = []
    for who, smm, gm in (("L1", False, False), ("L1 in SMM", True, False),
                         ("L2, L1 gives it no EPT/NPT", False, True)):
        cpu = roles.cpu_role(regs, smm=smm, guest_mode=gm)
        rows.append((who, "root_mmu (TDP)", roles.tdp_root_role(cpu, tdp_level)))
    rows.append(("L2 under L1's EPT", "guest_mmu (nested EPT)",
                 roles.nested_ept_role(4, True, False).base))
    rows.append(("L2 under L1's NPT", "guest_mmu (nested NPT)",
                 roles.nested_npt_roles(regs, tdp_level)[1]))
    return rows


def render_separation(tdp_level: int = 4) -> View:
    rows = separation(tdp_level)
    words = [r.word for _, _, r in rows]
    t = Table(f"Root roles a nesting VM needs (L0 TDP {tdp_level}-level); shared? = does "
              f"another row have the same word", ("who runs", "MMU", "root_role.word",
                                                  "direct", "guest_mode", "smm", "shared?"),
              tuple((who, mmu, hexword(r.word), str(r.direct), str(r.guest_mode), str(r.smm),
                     "yes ▲" if words.count(r.word) > 1 else "no ✔")
                    for who, mmu, r in rows))
    return View(t.text(), wrap_html(t.html(), "nested-separation"))


def smm_guest_mode_trace(kernel: str = "6.4", mmu: str = "tdp", vendor: str = "intel"):
    """A booted 64-bit guest takes an SMI, returns (RSM), enters L2 and exits back to L1;
    the timeline of :mod:`mmu.book.views.root_cache_view` shows each step's root."""
    from mmu.kvm.vcpu import VCpu
    from mmu.book.views.root_cache_view import Timeline, trace_steps
    v = VCpu(kernel=kernel, mmu=mmu, vendor=vendor)
    v.boot_long_mode(cr3=0x100000)
    v.enter()
    def run_l2():
        return v.nested_enter(l2_cr3=0x200000)
    ops = [("SMI (enter SMM)", v.enter_smm), ("RSM (leave SMM)", v.leave_smm),
           ("VMLAUNCH/VMRUN L2", run_l2), ("L2 exit to L1", v.nested_exit),
           ("VMLAUNCH/VMRUN L2 again", run_l2)]
    steps = trace_steps(v, ops, {0x100000: "L1", 0x200000: "L2"})
    return Timeline(f"SMM and guest mode, Linux {kernel}, mmu={mmu} ({vendor})", steps, (
        "smm and guest_mode are bits of the root role, so SMM code and L2 each need roots of "
        f"their own even when the paging mode is the same "
        f"({cite('facts §1.1', 'facts §2.3')}).",
        "Model limit: L2 runs on root_mmu with guest_mode = 1 and the same register layout; "
        "the guest_mmu that would shadow L1's EPT/NPT is not simulated here.",))
