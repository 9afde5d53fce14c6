"""Shadow paging drawn (chapter 3): shadow pages and their (gfn, role) keys, the PAE root with
quadrants, the CR0.WP=0 trick, and write protection of the guest's tables.

Everything is computed by :class:`mmu.kvm.shadow.ShadowMMU` (``kvm_mmu_get_shadow_page``,
``mmu_alloc_shadow_roots``, ``FNAME(page_fault)``/``FNAME(fetch)``, ``kvm_mmu_track_write``
in arch/x86/kvm/mmu/mmu.c and paging_tmpl.h); this module runs small scenarios on the
chapter guest (:func:`mmu.book.views.walk_view.demo_guest`) and renders the results.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from mmu.x86.bits import check_access, check_int
from mmu.kvm.roles import cpu_role, shadow_root_role
from mmu.kvm.shadow import FaultOutcome, GuestWriteOutcome, Root, ShadowMMU
from mmu.book.views.common import Table, View, esc, hexword, role_field_table, wrap_html
from mmu.book.views.walk_view import MODES, acc_label, demo_guest

__all__ = ["ShadowState", "shadow_state", "pages_table", "pae_root_table", "render_state",
           "WpTrick", "wp_trick", "render_wp_trick", "WriteProtect", "write_protect",
           "render_write_protect", "TOUCHED"]

#: Addresses the chapter's guest touches: user code, user data, kernel text, kernel data.
TOUCHED = ((0x0040_0000, "read"), (0x0060_0000, "write"), (0x00C0_0000, "read"),
           (0x00D0_0000, "write"))


@dataclasses.dataclass(frozen=True)
class ShadowState:
    mode: str
    cr0_wp: bool
    mmu: ShadowMMU
    root: Root
    cpu_role: Any
    root_role: Any
    outcomes: tuple[tuple[int, str, FaultOutcome], ...]


def shadow_state(mode: str = "4-level", cr0_wp: bool = True,
                 touched: tuple[tuple[int, str], ...] = TOUCHED) -> ShadowState:
    """The chapter guest under shadow paging after it touched ``touched`` (GVA, access) at
    CPL 0: one ``FNAME(page_fault)`` per access, from an empty shadow MMU."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {MODES}")
    if not isinstance(cr0_wp, bool):
        raise TypeError(f"cr0_wp must be a bool, not {type(cr0_wp).__name__}")
    g = demo_guest(mode, wp=cr0_wp)
    role = cpu_role(g.regs)
    rrole = shadow_root_role(role)
    sm = ShadowMMU(g.mem)
    root, _, _ = sm.alloc_shadow_roots(role, rrole, g.regs.cr3)
    outs = []
    for gva, access in touched:
        check_access(access)
        outs.append((gva, access, sm.page_fault(root, g.regs, role, gva, access, 0)))
    return ShadowState(mode, cr0_wp, sm, root, role, rrole, tuple(outs))


def pages_table(sm: ShadowMMU, caption: str = "Shadow pages in the hash, key (gfn, role.word)"
                ) -> Table:
    """One row per shadow page a lookup can find, in allocation order (host address)."""
    if not isinstance(sm, ShadowMMU):
        raise TypeError(f"sm must be a ShadowMMU, not {type(sm).__name__}")
    rows = []
    for sp in sorted(sm.hash.values(), key=lambda p: p.hpa):
        r = sp.role
        kind = "direct" if r.direct else "shadows a guest table"
        wp = "write-tracked" if sm.write_track.get(sp.gfn) else (
            "write-protected" if sp.has_gptes else "-")
        rows.append((f"{sp.hpa:#x}", f"{sp.gfn:#x}", hexword(r.word), str(r.level), kind,
                     str(r.quadrant), acc_label(r.access), str(r.cr0_wp), str(len(sp.spt)),
                     "root" if sp.root_count else "", "unsync" if sp.unsync else wp))
    return Table(caption, ("host address", "gfn", "role.word", "level", "what", "quadrant",
                           "access", "cr0_wp", "SPTEs", "root?", "guest table"), tuple(rows))


def pae_root_table(root: Root) -> Table | None:
    """The PAE special root's 4 entries (None for a root that is a shadow page)."""
    if root.pae_sps is None:
        return None
    rows = []
    for i, sp in enumerate(root.pae_sps):
        span = f"{i << 30:#x}-{((i + 1) << 30) - 1:#x}"
        if sp is None:
            rows.append((str(i), span, "✘ invalid (PDPTE not present)", "-", "-", "-"))
        else:
            rows.append((str(i), span, f"{sp.hpa:#x}", f"{sp.gfn:#x}", str(sp.role.quadrant),
                         hexword(sp.role.word)))
    return Table(f"PAE root at host address {root.hpa:#x} (mmu->pae_root, not a shadow page): "
                 f"4 entries, 1 GiB of GVA each",
                 ("entry", "GVA range", "level-2 shadow page", "gfn", "quadrant", "role.word"),
                 tuple(rows))


def render_state(st: ShadowState) -> View:
    """Roles, the accesses and their outcomes, the PAE root (if any) and the page table."""
    head = (f"{st.mode} guest, CR0.WP={int(st.cr0_wp)}: cpu_role {st.cpu_role.as_u64:#018x}, "
            f"shadow root_role {hexword(st.root_role.word)} (level {st.root_role.level}, "
            f"has_4_byte_gpte={st.root_role.has_4_byte_gpte})")
    acc = Table("The guest's accesses (CPL 0), each one a #PF exit into FNAME(page_fault)",
                ("GVA", "access", "outcome", "SPTE", "SPTE rights", "new shadow pages"),
                tuple((f"{gva:#x}", a, "✔ SPTE installed" if o.spte is not None else
                       f"✘ {o.reason}", f"{o.spte:#x}" if o.spte is not None else "-",
                       acc_label(o.access) if o.spte is not None else "-", str(o.created))
                      for gva, a, o in st.outcomes))
    tables = [acc]
    pae = pae_root_table(st.root)
    if pae is not None:
        tables.append(pae)
    tables.append(pages_table(st.mmu))
    text = head + "\n\n" + "\n\n".join(t.text() for t in tables)
    html = f"<p>{esc(head)}</p>" + "".join(t.html() for t in tables)
    return View(text, wrap_html(html, "shadow-view"))


# ---------------------------------------------------------------------------
# The CR0.WP=0 trick (facts §7.6; paging_tmpl.h FNAME(page_fault) / FNAME(fetch))
# ---------------------------------------------------------------------------

#: The user code page: user, read-only, executable in every mode.
_RO_USER_GVA = 0x0040_0000


@dataclasses.dataclass(frozen=True)
class WpTrick:
    smep: bool
    read: FaultOutcome           # supervisor read with CR0.WP=0
    write: FaultOutcome          # supervisor write with CR0.WP=0: the trick
    write_wp1: FaultOutcome      # the same write with CR0.WP=1: injected
    role_wp0: Any
    role_wp1: Any


def wp_trick(smep: bool = False) -> WpTrick:
    """A supervisor write to a *user, read-only* page (the chapter guest's user code).

    With CR0.WP=0 the CPU allows it; KVM's SPTE must then be writable -- but a user access
    through that SPTE must still fault, so KVM strips ACC_USER (and ACC_EXEC with CR4.SMEP,
    or the kernel could execute what it just wrote in a user page).  With CR0.WP=1 the same
    write is the guest's own #PF, injected.  Because the SPTE's rights depend on CR0.WP,
    ``cr0_wp`` (and ``smep_andnot_wp``) are in the shadow page role.
    """
    if not isinstance(smep, bool):
        raise TypeError(f"smep must be a bool, not {type(smep).__name__}")
    outs, roles = {}, {}
    for wp in (False, True):
        g = demo_guest("4-level", wp=wp, smep=smep)
        role = cpu_role(g.regs)
        sm = ShadowMMU(g.mem)
        root, _, _ = sm.alloc_shadow_roots(role, shadow_root_role(role), g.regs.cr3)
        roles[wp] = shadow_root_role(role)
        if not wp:
            outs["read"] = sm.page_fault(root, g.regs, role, _RO_USER_GVA, "read", 0)
        outs[wp] = sm.page_fault(root, g.regs, role, _RO_USER_GVA, "write", 0)
    return WpTrick(smep, outs["read"], outs[False], outs[True], roles[False], roles[True])


def render_wp_trick(t: WpTrick) -> View:
    def rights(o: FaultOutcome) -> tuple[str, str, str]:
        if o.spte is None:
            return "-", "-", "✘ #PF injected into the guest (reason below)"
        return f"{o.spte:#x}", acc_label(o.access), ("✔ CR0.WP=0 trick" if o.wp_trick else "✔")
    rows = (("CR0.WP=0, supervisor read", *rights(t.read)),
            ("CR0.WP=0, supervisor write", *rights(t.write)),
            ("CR0.WP=1, supervisor write", *rights(t.write_wp1)))
    main = Table(f"SPTE for the user read-only page {_RO_USER_GVA:#x} "
                 f"(CR4.SMEP={int(t.smep)}); rights as U W X",
                 ("access", "SPTE", "SPTE rights", "outcome"), rows)
    roles = role_field_table("Shadow root_role: CR0.WP=0 (now) vs CR0.WP=1 (before)",
                             t.role_wp0, t.role_wp1,
                             only=("cr0_wp", "smep_andnot_wp", "smap_andnot_wp"))
    note = ("Before → after: the read left U and X and withheld W; the write under WP=0\n"
            "gives W but takes U away" + (" and X (SMEP)" if t.smep else "") +
            ", so a later user access faults into KVM again.")
    if t.write_wp1.spte is None:
        note = f"CR0.WP=1 write, the guest's own fault: {t.write_wp1.reason}\n" + note
    text = "\n\n".join((main.text(), roles.text(), note))
    return View(text, wrap_html(main.html() + roles.html() + "".join(
        f"<p>{esc(line)}</p>" for line in note.splitlines()), "wp-trick-view"))


# ---------------------------------------------------------------------------
# Write protection of the guest's own tables
# ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class WriteProtect:
    pte_gpa: int                  # the guest PTE that was rewritten
    tracked_before: dict          # gfn -> write-track count (upper-level tables)
    shadowed_gfns: tuple[int, ...]
    write: GuestWriteOutcome
    hpa_before: int | None
    hpa_after_write: int | None   # translate() right after the write (None: SPTE zapped)
    refault: FaultOutcome
    hpa_after: int | None


def write_protect(mode: str = "4-level", new_gpa: int = 0x0050_0000) -> WriteProtect:
    """The guest rewrites the PTE of kernel data's first page to point at ``new_gpa``.

    KVM had write-protected that page table when it shadowed it (``account_shadowed``), so
    the guest's write faults, is emulated, and ``kvm_mmu_track_write`` drops the SPTE made
    from the old PTE; the next access faults again and picks up the new mapping.
    """
    new_gpa = check_int("new_gpa", new_gpa, 0, 1 << 32)
    if new_gpa % 4096:
        raise ValueError(f"new_gpa={new_gpa:#x} is not 4 KiB aligned")
    st = shadow_state(mode, True, ((0x00D0_0000, "write"),))
    sm, root = st.mmu, st.root
    g_walk = st.outcomes[0][2].walk
    pte = g_walk.trace[-1]
    before = sm.translate(root, 0x00D0_0000)
    tracked = dict(sm.write_track)
    shadowed = tuple(sorted(sm.gfn_sps))
    size = 4 if mode == "32-bit" else 8
    value = new_gpa | (pte.entry & 0xFFF) | (pte.entry & (1 << 63) if size == 8 else 0)
    w = sm.guest_write(pte.entry_addr, value.to_bytes(size, "little"))
    mid = sm.translate(root, 0x00D0_0000)
    g = demo_guest(mode)
    re = sm.page_fault(root, g.regs, st.cpu_role, 0x00D0_0000, "write", 0)
    after = sm.translate(root, 0x00D0_0000)
    return WriteProtect(pte.entry_addr, tracked, shadowed, w,
                        before.hpa if before else None, mid.hpa if mid else None, re,
                        after.hpa if after else None)


def render_write_protect(wp: WriteProtect) -> View:
    def h(v: int | None) -> str:
        return f"{v:#x}" if v is not None else "✘ no SPTE (zapped)"
    rows = (("guest tables shadowed (gfns)", ", ".join(f"{g:#x}" for g in wp.shadowed_gfns)),
            ("write-tracked upper-level gfns", ", ".join(f"{g:#x}×{n}" for g, n in
                                                         sorted(wp.tracked_before.items()))),
            ("HPA of GVA 0xd00000 before", h(wp.hpa_before)),
            (f"guest writes its PTE at GPA {wp.pte_gpa:#x}",
             "✔ trapped (write-protected), emulated" if wp.write.trapped else "✘ not trapped"),
            ("SPTEs dropped by kvm_mmu_track_write", str(wp.write.zapped_sptes)),
            ("HPA right after the write", h(wp.hpa_after_write)),
            ("next access: FNAME(page_fault) again", "✔ SPTE installed" if wp.refault.spte
             is not None else f"✘ {wp.refault.reason}"),
            ("HPA after", h(wp.hpa_after)))
    t = Table("Write protection of a shadowed guest page table", ("step", "what happened"), rows)
    return View(t.text(), wrap_html(t.html(), "write-protect-view"))
