"""Permissions and faults (chapter 2): one access to one page, judged twice.

The controls (:class:`PermState`) are the register bits and page bits that decide
whether an access to a present page faults: CR0.WP, CR4.SMEP/SMAP/PKE, EFER.NXE, the
PKRU access-disable/write-disable (AD/WD) bits of the page's key, CPL, RFLAGS.AC, the
access kind, and the page's U/S, R/W, XD and protection key.

:func:`evaluate` builds that one-page guest (4-level paging, the only mode with both XD
and protection keys) with :class:`~mmu.x86.pagetable.PageTableBuilder` and asks two judges:

1. the guest walker (:func:`mmu.x86.walker.walk`, the SDM's rules one by one): its fault
   carries ``reason``, the rule that fired;
2. KVM's precomputed tables for the CPU role: ``permissions[16]`` from
   :func:`mmu.kvm.permissions.update_permission_bitmask` and ``pkru_mask`` from
   :func:`~mmu.kvm.permissions.update_pkru_bitmask`, consulted by
   :func:`~mmu.kvm.permissions.permission_fault` (mmu.h) exactly as
   ``FNAME(walk_addr_generic)`` (paging_tmpl.h) does after the walk.

:func:`render` shows the outcome, the error code bit by bit, the rule, KVM's table with
the byte and the ACC column used marked by ``▶`` / ``◆`` (symbols, not colour), and
whether the two judges agree.  Nothing is decided here; the view only reports.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from mmu.x86.bits import PTE, PFErr
from mmu.x86.memory import GuestMemory
from mmu.x86.pagetable import PageTableBuilder
from mmu.kvm.permissions import (kvm_reports_fetch, permission_fault, permission_index,
                           update_permission_bitmask, update_pkru_bitmask)
from mmu.x86.regs import PagingMode
from mmu.kvm.roles import CpuRole, cpu_role
from mmu.x86.walker import WalkResult, walk
from mmu.book.views.common import Table, View, bullet_html, bullet_text, esc, wrap_html
from mmu.book.views.walk_view import ACCESS_LABELS, acc_label, error_code_table, flag_names, outcome_line

__all__ = ["PermState", "PermResult", "evaluate", "permissions_table", "render", "sweep",
           "PAGE_GVA", "PAGE_GPA", "USED_ROW", "USED_COL"]

#: Where the one page lives.
PAGE_GVA = 0x7F00_0000_1000
PAGE_GPA = 0x0005_5000
#: Markers for the permission-table cell KVM consulted (a symbol and a word).
USED_ROW = "▶ used"
USED_COL = "◆"

_BOOLS = ("cr0_wp", "cr4_smep", "cr4_smap", "cr4_pke", "efer_nxe", "rflags_ac",
          "pkru_ad", "pkru_wd", "page_user", "page_writable", "page_xd")


@dataclasses.dataclass(frozen=True)
class PermState:
    """What the chapter's controls say.  Defaults: a Linux-like kernel (WP, NX, SMEP, SMAP)
    reading its own writable, non-executable data page at CPL 0."""

    cr0_wp: bool = True
    cr4_smep: bool = True
    cr4_smap: bool = True
    cr4_pke: bool = False
    efer_nxe: bool = True
    pkru_ad: bool = False     # PKRU.AD for the page's key
    pkru_wd: bool = False     # PKRU.WD for the page's key
    cpl: int = 0
    rflags_ac: bool = False
    access: str = "read"
    page_user: bool = False
    page_writable: bool = True
    page_xd: bool = True
    pkey: int = 1

    def __post_init__(self) -> None:
        for name in _BOOLS:
            v = getattr(self, name)
            if not isinstance(v, bool):
                raise TypeError(f"{name} must be a bool, not {type(v).__name__}")
        for name, lo, hi in (("cpl", 0, 3), ("pkey", 0, 15)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{name} must be an int, not {type(v).__name__}")
            if not lo <= v <= hi:
                raise ValueError(f"{name}={v} is out of range: allowed {lo}..{hi}")
        if self.access not in ACCESS_LABELS:
            raise ValueError(f"access {self.access!r} is not one of {tuple(ACCESS_LABELS)}")

    def replace(self, **changes: Any) -> "PermState":
        allowed = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(changes) - set(allowed))
        if unknown:
            raise ValueError(f"unknown control(s) {unknown}: allowed {allowed}")
        return dataclasses.replace(self, **changes)

    @property
    def pkru(self) -> int:
        """PKRU with AD/WD set for this page's key only (bits 2k and 2k+1)."""
        return (int(self.pkru_ad) | int(self.pkru_wd) << 1) << (2 * self.pkey)

    @property
    def pfec(self) -> int:
        """The access as PFEC input bits (what the walker passes to permission_fault)."""
        return ((PFErr.WR if self.access == "write" else 0)
                | (PFErr.US if self.cpl == 3 else 0)
                | (PFErr.ID if self.access == "fetch" else 0))


@dataclasses.dataclass(frozen=True)
class PermResult:
    state: PermState
    walk: WalkResult
    role: CpuRole
    permissions: tuple[int, ...]
    pkru_mask: int
    pte_access: int
    index: int | None          # permissions[] byte consulted (None: walk stopped earlier)
    table_fault: int | None    # permission_fault(): 0 or P(|PK); None if not consulted
    table_error_code: int | None   # the #PF error code KVM would build, None if no fault

    @property
    def agree(self) -> bool | None:
        """Do the walker and the tables give the same verdict and error code?
        None when the tables were not consulted (a reserved-bit fault came first)."""
        if self.table_fault is None:
            return None
        walker_code = self.walk.fault.error_code if self.walk.fault else None
        return walker_code == self.table_error_code


def evaluate(state: PermState) -> PermResult:
    """Build the one-page guest for ``state``, walk it, and consult KVM's tables."""
    if not isinstance(state, PermState):
        raise TypeError(f"state must be a PermState, not {type(state).__name__}")
    mem = GuestMemory()
    b = PageTableBuilder(mem, PagingMode.LEVEL4)
    b.map(PAGE_GVA, PAGE_GPA, 4096, writable=state.page_writable, user=state.page_user,
          nx=state.page_xd, pkey=state.pkey)
    regs = b.regs(wp=state.cr0_wp, nx=state.efer_nxe, smep=state.cr4_smep,
                  smap=state.cr4_smap, pke=state.cr4_pke, ac=state.rflags_ac, pkru=state.pkru)
    w = walk(mem, regs, PAGE_GVA, state.access, state.cpl, set_ad=False)
    role = cpu_role(regs)
    perms = update_permission_bitmask(role)
    pkru_mask = update_pkru_bitmask(role)
    reached_leaf = w.ok or not (w.fault.error_code & PFErr.RSVD or w.fault.vector != 14)
    pte_access = w.access_bits
    index = table_fault = code = None
    if reached_leaf:
        pfec = int(state.pfec)
        table_fault = permission_fault(perms, pkru_mask, pte_access, w.pkey or 0, pfec,
                                       rflags=regs.rflags, pkru=regs.pkru)
        index = permission_index(pfec, rflags=regs.rflags)     # the byte used, to mark it
        if table_fault:
            # paging_tmpl.h: the walker reports W/U always, F only as kvm_reports_fetch
            # says, then ORs in what permission_fault returned.
            fetch = state.access == "fetch" and kvm_reports_fetch(role)
            code = (pfec & ~int(PFErr.ID)) | (int(PFErr.ID) if fetch else 0) | table_fault
    return PermResult(state, w, role, perms, pkru_mask, pte_access, index, table_fault, code)


def permissions_table(permissions: tuple[int, ...], used_index: int | None = None,
                      used_acc: int | None = None) -> Table:
    """KVM's ``permissions[16]``: one row per PFEC index, one column per ACC value.

    A cell says ``FAULT`` or ``ok``.  The row KVM consulted is marked ``▶ used`` and the
    consulted cell is wrapped in ``◆`` -- symbols, so the highlight survives print.
    """
    heads = [acc_label(a) for a in range(8)]
    if used_acc is not None:
        heads[used_acc] = f"{USED_COL}{heads[used_acc]}{USED_COL}"
    rows, classes = [], []
    for b, byte in enumerate(permissions):
        pfec = b << 1
        who = "user" if pfec & PFErr.US else "sup"
        kinds = [k for bit, k in ((PFErr.ID, "fetch"), (PFErr.WR, "write")) if pfec & bit]
        desc = f"{who} {'+'.join(kinds) or 'read'}" + (" AC" if pfec & PFErr.RSVD else "")
        cells = []
        for a in range(8):
            c = "FAULT" if byte >> a & 1 else "ok"
            if b == used_index and a == used_acc:
                c = f"{USED_COL}{c}{USED_COL}"
            cells.append(c)
        mark = USED_ROW if b == used_index else ""
        rows.append((str(b), desc, f"{byte:#04x}", *cells, mark))
        classes.append("changed" if b == used_index else "")
    return Table("KVM's permissions[16] (update_permission_bitmask): row = PFEC bits 4:1, "
                 "column = page's ACC value U W X",
                 ("index", "access (PFEC)", "byte", *heads, "used"), tuple(rows), tuple(classes))


def _controls_lines(s: PermState) -> list[str]:
    """The controls as two short lines (registers; access and page), so the text form
    fits a notebook's output width."""
    on = lambda b: "1" if b else "0"  # noqa: E731
    return [f"Registers: CR0.WP={on(s.cr0_wp)} CR4.SMEP={on(s.cr4_smep)} "
            f"CR4.SMAP={on(s.cr4_smap)} CR4.PKE={on(s.cr4_pke)} EFER.NXE={on(s.efer_nxe)} "
            f"RFLAGS.AC={on(s.rflags_ac)} PKRU[key {s.pkey}]: AD={on(s.pkru_ad)} "
            f"WD={on(s.pkru_wd)}",
            f"Access: {ACCESS_LABELS[s.access]} at CPL {s.cpl}; page: "
            f"{'user' if s.page_user else 'supervisor'}, "
            f"{'writable' if s.page_writable else 'read-only'}, XD={on(s.page_xd)}, "
            f"key {s.pkey}"]


def render(result: PermResult) -> View:
    """Outcome, error code bit by bit, rule fired, KVM's table with the used cell, agreement."""
    if not isinstance(result, PermResult):
        raise TypeError(f"result must be a PermResult, not {type(result).__name__}")
    s, w = result.state, result.walk
    leaf = w.trace[-1]
    reached = result.table_fault is not None
    facts = [*_controls_lines(s),
             f"{leaf.name} read: {leaf.entry:#x} ({flag_names(leaf.flags, PTE)})"
             + (f", effective ACC {acc_label(result.pte_access)}" if reached else ""),
             "Walker's verdict: " + outcome_line(w, reason=False)]
    if w.fault is not None:
        facts.append("Rule that fired: " + w.fault.reason)
    if result.table_fault is None:
        facts.append("KVM's tables: not consulted -- the walk stopped at a reserved bit "
                     "before any permission check (PFERR_RSVD).")
    else:
        verdict = "FAULT" if result.table_fault else "allowed"
        pk = ", PK" if result.table_fault & PFErr.PK else ""
        facts.append(f"KVM's tables: permissions[{result.index}] bit {result.pte_access} "
                     f"(ACC {acc_label(result.pte_access)}) -> {verdict}{pk}; pkru_mask "
                     f"{result.pkru_mask:#010x}" + (
                         f"; error code {result.table_error_code:#x}"
                         if result.table_error_code is not None else ""))
        facts.append("✔ the table verdict equals the walker's verdict" if result.agree else
                     "✘ the table verdict DIFFERS from the walker's verdict")
    parts_t = [bullet_text(facts)]
    parts_h = [bullet_html(facts)]
    if w.fault is not None and w.fault.vector == 14:
        e = error_code_table(w.fault.error_code)
        parts_t.append(e.text())
        parts_h.append(e.html())
    t = permissions_table(result.permissions, result.index,
                          result.pte_access if result.index is not None else None)
    parts_t.append(t.text())
    parts_h.append(t.html())
    if result.index is not None:
        parts_t.append(f"{USED_ROW} = the byte KVM read; {USED_COL}…{USED_COL} = the bit for "
                       "this page's ACC value;\nPFEC = page-fault error code; AC = RFLAGS.AC "
                       "overrides SMAP (PFEC's RSVD slot).")
        parts_h.append(f"<p>{esc(parts_t[-1])}</p>")
    return View("\n\n".join(parts_t),
                wrap_html('<div class="perm-outcome">' + "".join(parts_h) + "</div>",
                          "perm-view"))


def sweep(n: int = 500, seed: int = 0) -> dict[str, int]:
    """Evaluate ``n`` random control settings (``random.Random(seed)``) and count how often
    the walker and KVM's tables agree, disagree, or the tables were not consulted (a
    reserved-bit fault came first).  For the chapter's "same verdict" section."""
    import random
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 100_000:
        raise ValueError(f"n={n!r} is out of range: allowed 1..100000")
    rng = random.Random(seed)
    counts = {"cases": 0, "agree": 0, "differ": 0, "not consulted": 0, "faults": 0}
    for _ in range(n):
        kw = {name: rng.random() < 0.5 for name in _BOOLS}
        kw.update(access=rng.choice(tuple(ACCESS_LABELS)), cpl=rng.randrange(4),
                  pkey=rng.randrange(16))
        r = evaluate(PermState(**kw))
        counts["cases"] += 1
        counts["faults"] += not r.walk.ok
        counts[{True: "agree", False: "differ", None: "not consulted"}[r.agree]] += 1
    return counts
