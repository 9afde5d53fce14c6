"""Two-dimensional paging drawn (chapter 4): the 2D walk as a grid, and why the TDP root role
ignores almost everything the guest does.

The walk is :func:`mmu.kvm.tdp.two_d_walk` (the hardware's nested walk; KVM's software
counterpart is ``FNAME(walk_addr_generic)`` with ``kvm_translate_gpa`` on every table
access, paging_tmpl.h), run through :func:`mmu.book.views.walk_view.tdp_translate` so the EPT
tables are built the way ``kvm_tdp_mmu_map`` (tdp_mmu.c) builds them, one violation at a
time.  The roles are :func:`mmu.kvm.roles.cpu_role`, :func:`~mmu.kvm.roles.tdp_root_role` and
:func:`~mmu.kvm.roles.shadow_root_role` (``kvm_calc_cpu_role``,
``kvm_calc_tdp_mmu_root_page_role``, ``kvm_init_shadow_mmu`` in mmu.c, 5.19+).
"""
from __future__ import annotations

import dataclasses

from mmu.x86.bits import check_access, check_int
from mmu.x86.regs import make_regs
from mmu.kvm.roles import cpu_role, shadow_root_role, tdp_root_role
from mmu.book.views.common import Table, View, count_noun, esc, hexword, wrap_html
from mmu.book.views import svg
from mmu.book.views.svg import SvgFigure
from mmu.book.views.walk_view import MODES, demo_guest, tdp_translate

__all__ = ["Grid", "two_d_grid", "render_grid", "plot_grid", "ROLE_CASES", "role_rows",
           "render_roles"]

_TDP_NAMES = {5: "PML5E", 4: "PML4E", 3: "PDPTE", 2: "PDE", 1: "PTE"}


@dataclasses.dataclass(frozen=True)
class Grid:
    """The 2D walk's references laid out: ``cells[row][col]`` = order number (1-based) of the
    reference, or 0 for none.  Rows: one per guest level, then the final GPA.  Columns:
    the TDP levels from the root down, then the guest entry itself.

    An Intel walk of a PAE guest takes its PDPTE from a PDPTE register (loaded at MOV CR3,
    :func:`mmu.kvm.tdp.load_pdptrs`): that row is all 0, and ``load_refs`` counts the references
    the load made (4 EPT walks + 4 reads), which ``refs`` does not include."""

    mode: str
    vendor: str
    gva: int
    row_labels: tuple[str, ...]
    col_labels: tuple[str, ...]
    cells: tuple[tuple[int, ...], ...]
    refs: int
    exits: int
    hpa: int | None
    outcome: str
    load_refs: int = 0


def two_d_grid(mode: str = "4-level", gva: int = 0x00C0_1234, access: str = "read",
               vendor: str = "intel", tdp_level: int = 4) -> Grid:
    """Run the chapter guest's access under TDP and lay the references out as a grid."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {MODES}")
    gva = check_int("gva", gva, 0, 1 << 64)
    check_access(access)
    tdp_level = check_int("tdp_level", tdp_level, 4, 6)
    g = demo_guest(mode)
    r, _, exits = tdp_translate(g, gva, access, 0, vendor, tdp_level)
    tdp_cols = [lvl for lvl in range(tdp_level, 0, -1)]
    cols = tuple(f"{'EPT' if vendor == 'intel' else 'NPT'} {_TDP_NAMES[lvl]}"
                 for lvl in tdp_cols) + ("guest entry",)
    guest_steps = list(r.guest.trace) if r.guest is not None else []
    rows: list[list[int]] = []
    labels: list[str] = []
    cur = [0] * len(cols)
    gi = 0
    if r.pdptrs is not None and guest_steps and guest_steps[0].level == 3:
        # Intel, PAE guest: the PDPTE comes from its register, no memory reference.
        labels.append(f"guest PDPTE {guest_steps[0].index} (PDPTE register: no reference)")
        rows.append([0] * len(cols))
        gi = 1
    for n, ref in enumerate(r.refs, 1):
        if ref.kind == "tdp":
            cur[tdp_cols.index(ref.level)] = n
        else:
            cur[-1] = n
            step = guest_steps[gi] if gi < len(guest_steps) else None
            labels.append(f"guest {step.name} (table at GPA {ref.gpa & ~0xFFF:#x})" if step
                          else f"guest entry at GPA {ref.gpa:#x}")
            rows.append(cur)
            cur = [0] * len(cols)
            gi += 1
    if any(cur):
        final = r.gpa if r.gpa is not None else r.fault_gpa
        labels.append(f"final GPA {final:#x}" if final is not None else "final GPA")
        rows.append(cur)
    if r.ok:
        outcome = f"✔ HPA {r.hpa:#x}"
    elif r.tdp_fault:
        outcome = f"✘ EPT/NPT fault at GPA {r.fault_gpa:#x}: {r.fault.reason}"
    else:
        outcome = f"✘ guest fault injected: {r.fault.reason}"
    return Grid(mode, vendor, gva, tuple(labels), cols, tuple(tuple(x) for x in rows),
                len(r.refs), exits, r.hpa, outcome, len(r.pdptr_load_refs))


def render_grid(gr: Grid) -> View:
    """The grid as a table: each cell is the reference's order number, ``·`` for none."""
    rows = tuple((lab, *[str(c) if c else "·" for c in row])
                 for lab, row in zip(gr.row_labels, gr.cells))
    t = Table(f"2D walk of GVA {gr.gva:#x}: {gr.mode} guest on {len(gr.col_labels) - 1}-level "
              f"{'EPT' if gr.vendor == 'intel' else 'NPT'}, {gr.refs} memory references "
              f"(numbers = order)", ("translating", *gr.col_labels), rows)
    tail = (f"Outcome: {gr.outcome}. The first access took {count_noun(gr.exits, 'TDP exit')} to build "
            f"the tables (one per missing GPA).")
    if gr.load_refs:
        tail += (f"\nThe PDPTE came from a PDPTE register: Intel loads all 4 at MOV to CR3, "
                 f"{gr.load_refs} references (4 EPT walks + 4 reads), not counted above.")
    return View(t.text() + "\n" + tail, wrap_html(t.html() + f"<p>{esc(tail)}</p>",
                                                 "two-d-grid"))


def plot_grid(gr: Grid) -> SvgFigure:
    """The grid as a figure: guest rows × TDP columns, each used cell a square with its
    order number written in it (the number carries the meaning; the shading repeats it;
    the guest's own entries are hatched).  Our own SVG (:mod:`mmu.book.views.svg`)."""
    if not isinstance(gr, Grid):
        raise TypeError(f"gr must be a Grid, not {type(gr).__name__}")
    nc = len(gr.col_labels)
    load = f" (+{gr.load_refs} at MOV CR3 to load the PDPTE registers)" if gr.load_refs else ""
    title = (f"2D walk, {gr.mode} guest on {nc - 1}-level "
             f"{'EPT' if gr.vendor == 'intel' else 'NPT'}: {gr.refs} references{load}")
    desc = (f"Rows: {', '.join(gr.row_labels)}. Columns: {', '.join(gr.col_labels)}. "
            f"Numbers give the order of the {gr.refs} references. Outcome: {gr.outcome}.")
    return svg.grid(title, desc, gr.row_labels, gr.col_labels, gr.cells,
                    "entry read: TDP levels (root → leaf), then the guest's own entry",
                    "guest level being translated", "two-d-grid-figure", hatched_col=nc - 1)


# ---------------------------------------------------------------------------
# cpu_role vs root roles across guest modes
# ---------------------------------------------------------------------------

#: (label, make_regs mode, keyword changes, smm) -- the guest states compared.
ROLE_CASES = (
    ("paging off", "none", {}, False),
    ("32-bit", "32-bit", {}, False),
    ("PAE", "PAE", {}, False),
    ("4-level", "4-level", {}, False),
    ("4-level, CR0.WP=0", "4-level", {"wp": False}, False),
    ("4-level, SMEP+SMAP", "4-level", {"smep": True, "smap": True}, False),
    ("4-level, EFER.NX=0", "4-level", {"nx": False}, False),
    ("5-level", "5-level", {}, False),
    ("4-level, in SMM", "4-level", {}, True),
)


def role_rows(tdp_level: int = 4) -> list[tuple[str, int, int, int]]:
    """``(label, cpu_role.as_u64, tdp root_role.word, shadow root_role.word)`` per case."""
    out = []
    for label, mode, kw, smm in ROLE_CASES:
        role = cpu_role(make_regs(mode, **kw), smm=smm)
        out.append((label, role.as_u64, tdp_root_role(role, tdp_level).word,
                    shadow_root_role(role).word))
    return out


def render_roles(tdp_level: int = 4) -> View:
    """The table, with a column saying whether each root role equals the first row's."""
    rows = role_rows(tdp_level)
    base_tdp, base_sh = rows[3][2], rows[3][3]     # the plain 4-level guest
    body = tuple((lab, f"{cpu:#018x}", hexword(tdp),
                  "= same" if tdp == base_tdp else "▲ differs", hexword(sh),
                  "= same" if sh == base_sh else "▲ differs") for lab, cpu, tdp, sh in rows)
    t = Table(f"cpu_role vs root_role (TDP level {tdp_level}) across guest states; "
              f"'same/differs' compares with the plain 4-level guest",
              ("guest state", "cpu_role.as_u64", "TDP root_role", "vs 4-level",
               "shadow root_role", "vs 4-level"), body)
    distinct = len({r[2] for r in rows})
    note = (f"{len(rows)} guest states, {len({r[1] for r in rows})} distinct CPU roles, "
            f"{distinct} distinct TDP root roles, {len({r[3] for r in rows})} distinct shadow "
            f"root roles.")
    return View(t.text() + "\n" + note, wrap_html(t.html() + f"<p>{esc(note)}</p>",
                                                 "tdp-roles"))
