"""Guest page walks drawn (chapter 1): the GVA split, the walk level by level, an SVG of the
tables, and a map of an address space from the batch walker.

Everything here *renders* what :func:`mmu.x86.walker.walk` and :func:`mmu.x86.batch.walk_many`
computed; nothing re-walks a table.  The walk is KVM's ``FNAME(walk_addr_generic)``
(arch/x86/kvm/mmu/paging_tmpl.h) -- see :mod:`mmu.x86.walker` for the rules.

* :func:`demo_guest` -- the chapter's small guest, the same layout in every paging mode;
* :func:`gva_split` -- which bits of a guest-virtual address (GVA) index which table
  (the walker's :class:`~mmu.x86.walker.EntryFormat` gives the shifts);
* :func:`render_walk` -- one row per entry read: level, index, entry address, entry value,
  decoded bits, access accumulated so far, then the outcome (a GPA or the fault, its
  error code bit by bit and the rule that fired, ``Fault.reason``);
* :func:`walk_svg` -- the same walk as an SVG figure (title, axis labels, no colour-only
  meaning: every box carries its words);
* :func:`address_map` / :func:`render_address_map` / :func:`plot_address_map` -- which
  pages of a region are present, writable, user and executable, from four batch walks.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from mmu.x86.bits import ACC_EXEC_MASK, ACC_USER_MASK, ACC_WRITE_MASK, PFErr, check_access, check_int
from mmu.x86.memory import GuestMemory
from mmu.x86.pagetable import PageTableBuilder
from mmu.x86.regs import CR0, CR4, PagingMode, Regs, paging_mode
from mmu.x86.walker import LEVEL_NAMES, WalkResult, entry_format, walk
from mmu.book.views import svg
from mmu.book.views.common import Table, View, count_noun, esc, wrap_html
from mmu.book.views.svg import SvgFigure

__all__ = ["MODES", "ACCESS_LABELS", "DemoGuest", "demo_guest", "acc_label", "flag_names",
           "gva_split", "error_code_table", "outcome_line", "walk_table", "render_walk",
           "walk_svg", "AddressMap", "address_map", "render_address_map", "plot_address_map",
           "Regimes", "three_regimes", "tdp_translate", "render_regimes"]

#: Paging modes the chapter offers, by the names :func:`mmu.make_regs` takes.
MODES = ("32-bit", "PAE", "4-level", "5-level")
_MODE_BY_NAME = {"32-bit": PagingMode.BIT32, "PAE": PagingMode.PAE,
                 "4-level": PagingMode.LEVEL4, "5-level": PagingMode.LEVEL5}
ACCESS_LABELS = {"read": "read", "write": "write", "fetch": "instruction fetch"}


def _mode(mode: str | PagingMode) -> PagingMode:
    if isinstance(mode, PagingMode):
        if mode == PagingMode.NONE:
            raise ValueError("mode 'none' has no page walk; allowed " + ", ".join(MODES))
        return mode
    if mode not in _MODE_BY_NAME:
        raise ValueError(f"mode {mode!r} is not one of {MODES}")
    return _MODE_BY_NAME[mode]


# ---------------------------------------------------------------------------
# The chapter's guest
# ---------------------------------------------------------------------------

#: (name, gva, gpa, size or None for one large page, writable, user, nx).  All below
#: 16 MiB so one layout works in every mode and one plot shows it all.
_REGIONS = (
    ("user code", 0x0040_0000, 0x0010_0000, 0x4_0000, False, True, False),
    ("user data", 0x0060_0000, 0x0020_0000, 0x2_0000, True, True, True),
    ("kernel large page", 0x0080_0000, 0x0080_0000, None, True, False, True),
    ("kernel text", 0x00C0_0000, 0x0030_0000, 0x8_0000, False, False, False),
    ("kernel data", 0x00D0_0000, 0x0040_0000, 0x4_0000, True, False, True),
)


@dataclasses.dataclass(frozen=True)
class DemoGuest:
    """A small guest: its memory, registers and the regions mapped (for captions)."""

    mem: GuestMemory
    regs: Regs
    mode: PagingMode
    regions: tuple[tuple[str, int, int, int, str], ...]   # name, gva, gpa, size, rights

    def describe(self) -> View:
        rows = tuple((name, f"{gva:#010x}", f"{gva + size - 1:#010x}", f"{gpa:#010x}",
                      _size(size), rights) for name, gva, gpa, size, rights in self.regions)
        t = Table(f"The chapter's guest ({self.mode.label} paging, CR3 = {self.regs.cr3:#x}); "
                  f"everything else is not mapped",
                  ("region", "first GVA", "last GVA", "first GPA", "size", "rights"), rows)
        return View(t.text(), wrap_html(t.html(), "walk-guest"))


def _size(size: int) -> str:
    return f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"


def demo_guest(mode: str | PagingMode = "4-level", *, smep: bool = False, smap: bool = False,
               wp: bool = True, nx: bool = True) -> DemoGuest:
    """Build the chapter's guest in ``mode`` with :class:`~mmu.x86.pagetable.PageTableBuilder`.

    The same regions in every mode: user code (read-only, user), user data (writable,
    user, no-execute), one kernel large page (4 MiB in 32-bit paging, else 2 MiB),
    kernel text (read-only, supervisor) and kernel data (writable, supervisor, NX).
    32-bit paging has no XD bit, so its "NX" regions are executable.
    """
    m = _mode(mode)
    mem = GuestMemory()
    b = PageTableBuilder(mem, m)
    large = 1 << 22 if m == PagingMode.BIT32 else 1 << 21
    regions = []
    for name, gva, gpa, size, writable, user, xd in _REGIONS:
        xd = xd and m != PagingMode.BIT32
        page = large if size is None else 4096
        size = size or large
        b.map(gva, gpa, size, writable=writable, user=user, nx=xd, page_size=page)
        rights = ", ".join(("user" if user else "supervisor",
                            "writable" if writable else "read-only",
                            "no-execute" if xd else "executable")) + \
            (f", one {_size(page)} page" if page > 4096 else "")
        regions.append((name, gva, gpa, size, rights))
    regs = b.regs(smep=smep, smap=smap, wp=wp, nx=nx)
    return DemoGuest(mem, regs, m, tuple(regions))


# ---------------------------------------------------------------------------
# Small formatters shared by the walk and permission views
# ---------------------------------------------------------------------------

def acc_label(acc: int) -> str:
    """KVM's ACC bits as ``U W X`` letters, ``-`` where a right is missing (``"U-X"``)."""
    acc = check_int("acc", acc, 0, 8)
    return ("U" if acc & ACC_USER_MASK else "-") + ("W" if acc & ACC_WRITE_MASK else "-") + \
        ("X" if acc & ACC_EXEC_MASK else "-")


def flag_names(flags: int, enum_type: Any) -> str:
    """``P|RW|US|A`` for the set members of an IntFlag value (``-`` if none)."""
    names = [m.name for m in enum_type if m.value & int(flags)]
    return "|".join(names) if names else "-"


#: #PF error code bits (SDM Vol. 3A 4.7), what 1 and 0 mean.
_PFERR_MEANING = (
    (PFErr.P, "P", "protection violation (the page is present)", "not-present page"),
    (PFErr.WR, "W/R", "write access", "read access (or fetch)"),
    (PFErr.US, "U/S", "access at CPL 3 (user mode)", "supervisor access (CPL 0-2)"),
    (PFErr.RSVD, "RSVD", "a reserved bit was set in an entry", "no reserved bit"),
    (PFErr.ID, "I/D", "instruction fetch", "not a fetch (or NX and SMEP both off)"),
    (PFErr.PK, "PK", "protection-key violation (PKRU)", "no protection-key violation"),
)


def error_code_table(error_code: int) -> Table:
    """The #PF error code decoded bit by bit: bit, name, value, what it says."""
    error_code = check_int("error_code", error_code, 0, 1 << 64)
    rows = []
    for bit, name, one, zero in _PFERR_MEANING:
        v = 1 if error_code & bit else 0
        rows.append((name, str(int(bit).bit_length() - 1), str(v), one if v else zero))
    return Table(f"#PF error code {error_code:#x} bit by bit", ("bit name", "bit", "value",
                                                                "meaning"), tuple(rows))


def fault_reason(f) -> str:
    """The fault's reason without the vector the line already names: the walker says
    "#GP(0): 0x... is not canonical", and the view prints "✘ #GP(0)" before it."""
    return f.reason.removeprefix("#GP(0)").lstrip(": ") if f.vector == 13 else f.reason


def outcome_line(result: WalkResult, reason: bool = True) -> str:
    """One sentence: the GPA, or the fault with its vector, error code and (if ``reason``)
    the rule that fired."""
    if result.ok:
        size = f"{_size(result.page_size)} page" if result.page_size else "no paging"
        return f"✔ translated: GPA {result.gpa:#x} ({size})" + (
            f", protection key {result.pkey}" if result.pkey is not None else "")
    f = result.fault
    why = f": {fault_reason(f)}" if reason else ""
    if f.vector == 13:
        return f"✘ #GP(0){why}"
    return (f"✘ #PF, error code {f.error_code:#x} ({flag_names(f.error_code, PFErr)}), "
            f"CR2 = {f.addr:#x}{why}")


# ---------------------------------------------------------------------------
# The GVA split
# ---------------------------------------------------------------------------

def _va_width(mode: PagingMode) -> int:
    return {PagingMode.LEVEL5: 57, PagingMode.LEVEL4: 48}.get(mode, 32)


def gva_split(gva: int, mode: str | PagingMode) -> View:
    """How ``gva`` splits into one table index per level plus the page offset.

    Shifts and index widths come from the walker's entry format (10 bits per level for
    4-byte entries, 9 for 8-byte ones; PAE's top level uses the 2 bits left).  In long
    mode bits 63:48 (63:57 with 5-level paging) are a sign extension, not an index.
    """
    m = _mode(mode)
    gva = check_int("gva", gva, 0, 1 << 64)
    fmt = entry_format(m)
    width = _va_width(m)
    addr = gva if width > 32 else gva & 0xFFFF_FFFF
    rows = []
    if width > 32:
        top = gva >> width
        rows.append(("sign extension", f"63:{width}", f"{top:#x}",
                     "must copy bit %d (canonical), else #GP" % (width - 1)))
    elif gva >> 32:
        rows.append(("ignored", "63:32", f"{gva >> 32:#x}",
                     "outside long mode a linear address is 32 bits"))
    for level in range(fmt.root_level, 0, -1):
        lo = fmt.shift(level)
        hi = min(lo + fmt.index_bits, width) - 1
        idx = fmt.index(addr, level)
        rows.append((f"{LEVEL_NAMES[level]} index", f"{hi}:{lo}", str(idx),
                     f"entry {idx} of the level-{level} table, at table + {idx * fmt.entry_size:#x}"))
    rows.append(("page offset", "11:0", f"{addr & 0xFFF:#x}",
                 "byte in a 4 KiB page (a large page uses the lower indexes as offset too)"))
    t = Table(f"GVA {gva:#x} split for {m.label} paging ({fmt.entry_size}-byte entries)",
              ("field", "bits", "value", "meaning"), tuple(rows))
    return View(t.text(), wrap_html(t.html(), "gva-split"))


# ---------------------------------------------------------------------------
# One walk, as a table
# ---------------------------------------------------------------------------

def walk_table(result: WalkResult, caption: str) -> Table:
    """One row per entry the walk read (``walker->ptes[]``); the entry a faulting walk
    stopped at is the last row, marked ``✘ stop: <why>``."""
    if not isinstance(result, WalkResult):
        raise TypeError(f"result must be an mmu.WalkResult, not {type(result).__name__}")
    rows = []
    for s in result.trace:
        stop = getattr(s, "stop", None)
        what = f"✘ stop: {stop}" if stop else ("leaf" if s.leaf else "table")
        rows.append((f"{s.level} {s.name}", str(s.index), f"{s.entry_addr:#x}", f"{s.entry:#x}",
                     flag_names(s.flags, type(s.flags)), acc_label(s.access_bits), what))
    return Table(caption, ("level", "index", "entry address", "entry value", "decoded bits",
                           "access so far (U W X)", "role"), tuple(rows))


def render_walk(result: WalkResult, gva: int, access: str, cpl: int) -> View:
    """The walk table, the outcome sentence and (for a #PF) the error code bit by bit."""
    check_access(access)
    cpl = check_int("cpl", cpl, 0, 4)
    gva = check_int("gva", gva, 0, 1 << 64)
    mode = result.mode.label if result.mode is not None else "EPT"
    who = "user, CPL 3" if cpl == 3 else f"supervisor, CPL {cpl}"
    t = walk_table(result, f"Walk of GVA {gva:#x}: {ACCESS_LABELS[access]} ({who}), "
                           f"{mode} paging")
    if not result.trace:
        note = "(no entry read: " + ("paging is off)" if result.ok else "the walk stopped first)")
        tables_text, tables_html = f"{t.caption}\n{note}", f"<p>{esc(t.caption)} {esc(note)}</p>"
    else:
        tables_text, tables_html = t.text(), t.html()
    line = outcome_line(result)
    text = [tables_text, "", "Outcome: " + line]
    html = [tables_html, f'<p class="walk-outcome"><b>Outcome:</b> {esc(line)}</p>']
    if result.fault is not None and result.fault.vector == 14:
        e = error_code_table(result.fault.error_code)
        text += ["", e.text()]
        html.append(e.html())
    text.append("")
    text.append("U W X: the user/write/execute rights left after ANDing every level "
                "(KVM's ACC bits); '-' = that right is gone.")
    return View("\n".join(text), wrap_html("".join(html), "walk-view"))


# ---------------------------------------------------------------------------
# One walk, as an SVG figure
# ---------------------------------------------------------------------------

def walk_svg(result: WalkResult, gva: int) -> str:
    """An SVG of the walk: one column per table, root on the left.

    Each table is a tall box; the entry used is a slot drawn at the height of its index
    (y axis: entry index, 0 at the top), labelled with index and value; an arrow leads
    to the next table or to the final page.  The last box says the outcome in words
    (``✔ page at GPA …`` or ``✘ #PF …``), so nothing rests on colour.
    """
    if not isinstance(result, WalkResult):
        raise TypeError(f"result must be an mmu.WalkResult, not {type(result).__name__}")
    gva = check_int("gva", gva, 0, 1 << 64)
    steps = result.trace
    col_w, gap, left, top, box_h = 175, 36, 70, 50, 220
    n = len(steps) + 1
    mode = result.mode.label if result.mode is not None else "EPT"
    title = f"Page walk of GVA {gva:#x} ({mode} paging)"
    # Wide enough for the title too (a short walk is narrower than its title, which was
    # then cut at both edges): 14 px bold monospace advances 0.6 em per character.
    width = max(left + n * col_w + (n - 1) * gap + 20, svg.text_width(title, 14) + 40)
    height = top + box_h + 70
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="walk-svg" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
           # Scales down to the output's width instead of being cut at its right edge.
           f'style="max-width:100%;height:auto" '
           f'aria-label="{esc(title)}" font-family="monospace" font-size="11">',
           f"<title>{esc(title)}</title>",
           f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14" '
           f'font-weight="bold">{esc(title)}</text>']
    entries = 1 << (10 if result.mode == PagingMode.BIT32 else 9)
    prev_slot = None
    for i, s in enumerate(steps):
        x = left + i * (col_w + gap)
        n_entries = 4 if (result.mode == PagingMode.PAE and s.level == 3) else entries
        y = top + 14 + (box_h - 28) * s.index / max(1, n_entries - 1)
        table_addr = s.entry_addr - s.index * (4 if entries == 1024 else 8)
        out.append(f'<rect x="{x}" y="{top}" width="{col_w}" height="{box_h}" fill="#f4f4f4" '
                   f'stroke="#333"/>')
        out.append(f'<text x="{x + col_w / 2}" y="{top - 6}" text-anchor="middle">'
                   f'{esc(s.name)} table @ {table_addr:#x}</text>')
        out.append(f'<rect x="{x + 4}" y="{y - 12}" width="{col_w - 8}" height="24" '
                   f'fill="#fff" stroke="#000" stroke-width="2"/>')
        out.append(f'<text x="{x + 8}" y="{y - 1}">[{s.index}] {s.entry:#x}</text>')
        out.append(f'<text x="{x + 8}" y="{y + 9}" font-size="9">'
                   f'{esc(flag_names(s.flags, type(s.flags)))}</text>')
        if prev_slot is not None:
            out.append(_arrow(*prev_slot, x, top + 6))
        prev_slot = (x + col_w - 4, y)
    x = left + len(steps) * (col_w + gap)
    if result.ok:
        label = [f"✔ {_size(result.page_size)} page" if result.page_size else "✔ no paging",
                 f"at GPA {result.gpa - (gva & (result.page_size or 1) - 1):#x}",
                 f"byte GPA {result.gpa:#x}"]
        dash = ""
    else:
        f = result.fault
        label = [("✘ #GP(0)" if f.vector == 13 else f"✘ #PF code {f.error_code:#x}"),
                 *svg.wrap_chars(fault_reason(f), 22)[:6]]
        dash = ' stroke-dasharray="6 3"'
    out.append(f'<rect x="{x}" y="{top}" width="{col_w}" height="{box_h}" fill="#fff" '
               f'stroke="#333" stroke-width="2"{dash}/>')
    out.append(f'<text x="{x + col_w / 2}" y="{top - 6}" text-anchor="middle">'
               f'{"data page" if result.ok else "fault"}</text>')
    for j, line in enumerate(label):
        out.append(f'<text x="{x + 10}" y="{top + 24 + 14 * j}">{esc(line)}</text>')
    if prev_slot is not None:
        out.append(_arrow(*prev_slot, x, top + 12))   # above the first text line
    # Axes: x = walk step (root on the left), y = index of the entry within its table.
    out.append(f'<text x="{left + (width - left) / 2}" y="{height - 12}" text-anchor="middle" '
               f'font-size="12">walk step: table level, root → leaf → outcome</text>')
    out.append(f'<text x="16" y="{top + box_h / 2}" text-anchor="middle" font-size="12" '
               f'transform="rotate(-90 16 {top + box_h / 2})">entry index in table '
               f'(0 at top)</text>')
    out.append(f'<text x="{left - 6}" y="{top + 14}" text-anchor="end">0</text>')
    out.append(f'<text x="{left - 6}" y="{top + box_h - 10}" text-anchor="end">'
               f'{entries - 1}</text>')
    out.append("</svg>")
    return "".join(out)


def _arrow(x1: float, y1: float, x2: float, y2: float) -> str:
    return (f'<line x1="{x1}" y1="{y1}" x2="{x2 - 6}" y2="{y2}" stroke="#000" '
            f'stroke-width="1.5"/><polygon points="{x2},{y2} {x2 - 8},{y2 - 4} '
            f'{x2 - 8},{y2 + 4}" fill="#000"/>')


# ---------------------------------------------------------------------------
# An address space, from the batch walker
# ---------------------------------------------------------------------------

#: The four questions asked of every page: (name, access, cpl).  Each is one walk_many.
_MAP_QUESTIONS = (("present", "read", 0), ("writable", "write", 0), ("user", "read", 3),
                  ("executable", "fetch", 0))


class PageAnswers(tuple):
    """One yes/no per page, as a tuple of bools; ``.sum()`` counts the yeses (as numpy's
    does), so chapter 1 reads the same whichever walker answered."""

    def sum(self) -> int:
        return sum(self)


@dataclasses.dataclass(frozen=True)
class AddressMap:
    """Per-page answers for ``start + i * 4096``: yes/no per page, named after the question."""

    mode: PagingMode
    start: int
    pages: int
    present: PageAnswers
    writable: PageAnswers
    user: PageAnswers
    executable: PageAnswers

    def runs(self) -> list[tuple[int, int, str]]:
        """``(first gva, last gva, rights)`` for each run of pages with equal answers."""
        codes = [p | w << 1 | u << 2 | x << 3 for p, w, u, x in
                 zip(self.present, self.writable, self.user, self.executable)]
        out = []
        s = 0
        for e in range(1, self.pages + 1):
            if e < self.pages and codes[e] == codes[s]:
                continue
            c = codes[s]
            rights = "not mapped" if not c & 1 else ", ".join((
                "writable" if c & 2 else "read-only", "user" if c & 4 else "supervisor",
                "executable" if c & 8 else "no-execute"))
            out.append((self.start + s * 4096, self.start + e * 4096 - 1, rights))
            s = e
        return out


def _numpy():
    """numpy if it can be imported, else None.  The live edition (Pyodide) runs without
    it; the address map then asks the scalar walker, page by page."""
    try:
        return importlib.import_module("numpy")
    except ImportError:
        return None


def _answers(mem: GuestMemory, regs: Regs, start: int, pages: int, access: str,
             cpl: int) -> PageAnswers:
    """``walk(...).ok`` for each page, through :func:`mmu.walk_many` when numpy is there
    (about 100x faster) and :func:`mmu.walk` otherwise; both give the same answers
    (tests/test_book.py compares them)."""
    np = _numpy()
    if np is not None:
        from mmu.x86.batch import walk_many
        gvas = np.uint64(start) + np.arange(pages, dtype=np.uint64) * np.uint64(4096)
        return PageAnswers(walk_many(mem, regs, gvas, access, cpl, set_ad=False).ok.tolist())
    return PageAnswers(walk(mem, regs, start + i * 4096, access, cpl, set_ad=False).ok
                       for i in range(pages))


def address_map(mem: GuestMemory, regs: Regs, start: int, pages: int) -> AddressMap:
    """Ask four questions about each of ``pages`` 4 KiB pages (:func:`mmu.walk_many`, or
    the scalar walker without numpy).

    present = a CPL-0 read succeeds; writable = a CPL-0 write succeeds with CR0.WP=1;
    user = a CPL-3 read succeeds; executable = a CPL-0 fetch succeeds.  SMEP, SMAP and
    PKE are turned off for the questions, so the answers are the entries' own U/S, R/W
    and XD bits.  ``set_ad=False``: asking leaves memory untouched.
    """
    start = check_int("start", start, 0, 1 << 64)
    pages = check_int("pages", pages, 1, (1 << 20) + 1)
    if start % 4096:
        raise ValueError(f"start={start:#x} is not 4 KiB aligned")
    paging_mode(regs)
    plain = regs.replace(cr0=regs.cr0 | CR0.WP,
                         cr4=regs.cr4 & ~(CR4.SMEP | CR4.SMAP | CR4.PKE))
    answers = {name: _answers(mem, plain, start, pages, access, cpl)
               for name, access, cpl in _MAP_QUESTIONS}
    return AddressMap(paging_mode(regs), start, pages, **answers)


def render_address_map(amap: AddressMap) -> View:
    """The map as runs of pages with the same rights."""
    rows = tuple((f"{a:#x}", f"{b:#x}", str((b + 1 - a) // 4096), r) for a, b, r in amap.runs())
    t = Table(f"Pages {amap.start:#x}-{amap.start + amap.pages * 4096 - 1:#x} "
              f"({amap.mode.label} paging), grouped into runs of equal rights",
              ("first GVA", "last GVA", "pages", "rights"), rows)
    return View(t.text(), wrap_html(t.html(), "address-map"))


def plot_address_map(amap: AddressMap) -> SvgFigure:
    """The map as a figure: one horizontal lane per question, a bar where the answer is yes.

    Meaning is carried by the lane's label and the bar's presence, not colour; each lane
    also has its own hatch pattern for grey-scale prints.  (Our own SVG, see
    :mod:`mmu.book.views.svg`; ``figure_svg`` gives its text.)
    """
    if not isinstance(amap, AddressMap):
        raise TypeError(f"amap must be an AddressMap, not {type(amap).__name__}")
    mib = 1 << 20
    names = [q[0] for q in _MAP_QUESTIONS]
    spans = [[((amap.start + s * 4096) / mib, (amap.start + e * 4096) / mib)
              for s, e in _spans(getattr(amap, name))] for name in names]
    title = (f"Batch walk of {amap.pages} pages ({amap.mode.label} paging): "
             f"what each 4 KiB page allows")
    desc = "; ".join(f"{name}: {count_noun(sum(getattr(amap, name)), 'page')}"
                     for name in names) + "."
    return svg.lanes(title, desc, [f"{n} (yes = bar)" for n in names], spans,
                     (amap.start / mib, (amap.start + amap.pages * 4096) / mib),
                     "guest-virtual address (MiB)", "question asked of each page",
                     "address-map-figure")


def _spans(yes) -> list[tuple[int, int]]:
    """``[(start, end)]`` page-index runs where ``yes`` is True."""
    out, begin = [], None
    for i, y in enumerate((*yes, False)):
        if y and begin is None:
            begin = i
        elif not y and begin is not None:
            out.append((begin, i))
            begin = None
    return out


# ---------------------------------------------------------------------------
# One GVA, three regimes (chapter 0)
# ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Regimes:
    """What :func:`three_regimes` found: the guest walk, the shadow MMU, the TDP MMU."""

    gva: int
    guest: WalkResult
    shadow_hpa: int | None
    shadow_refs: int | None   # entries the hardware reads walking KVM's shadow tables
    shadow_pages: int         # shadow pages KVM built for this one access
    shadow_exits: int         # guest #PFs KVM intercepted (one per page_fault call)
    tdp_hpa: int | None
    tdp_refs: int             # entries read by the last 2D walk (guest + EPT)
    tdp_pages: int            # EPT table pages KVM built
    tdp_exits: int            # EPT violations KVM handled


#: Bound on the fault-and-retry loops below (a real vCPU retries forever; a book must not).
_MAX_RETRIES = 16


def three_regimes(mode: str | PagingMode = "4-level", gva: int = 0x00C0_1234,
                  access: str = "read", cpl: int = 0) -> Regimes:
    """Translate one GVA of the chapter guest the three ways KVM can run it.

    * guest walk (:func:`mmu.x86.walker.walk`): GVA -> GPA, the guest's own tables;
    * shadow paging (:class:`mmu.kvm.shadow.ShadowMMU`): the guest's access faults into KVM
      (``FNAME(page_fault)``), which walks the guest tables and builds shadow pages
      GVA -> HPA; the hardware then walks only KVM's tables;
    * TDP (:class:`mmu.kvm.tdp.TdpMMU`, Intel EPT): the hardware does the 2D walk
      (:func:`mmu.kvm.tdp.two_d_walk`); every EPT violation on the way is one exit to KVM,
      which maps that GPA (``kvm_tdp_mmu_map``) and lets the guest retry.

    Each regime starts from empty KVM state; guest memory is copied, so nothing leaks
    between them.
    """
    from mmu.kvm.roles import cpu_role, shadow_root_role
    from mmu.kvm.shadow import ShadowMMU
    from mmu.x86.walker import walk
    check_access(access)
    g = demo_guest(mode)
    role = cpu_role(g.regs)
    guest = walk(g.mem.copy(), g.regs, gva, access, cpl, set_ad=False)

    sm = ShadowMMU(g.mem.copy())
    root, _, _ = sm.alloc_shadow_roots(role, shadow_root_role(role), g.regs.cr3)
    exits = 0
    t = sm.translate(root, gva)
    while t is None and exits < _MAX_RETRIES:
        exits += 1
        if not sm.page_fault(root, g.regs, role, gva, access, cpl).ok:
            break                                   # the guest's own fault: injected
        t = sm.translate(root, gva)
    shadow = (t.hpa if t else None, len(t.path) if t else None, sm.stats["sps_created"], exits)

    r, tdp, texits = tdp_translate(g, gva, access, cpl)
    return Regimes(gva, guest, *shadow, r.hpa, len(r.refs),
                   tdp.stats["pages_allocated"], texits)


def tdp_translate(guest: DemoGuest, gva: int, access: str = "read", cpl: int = 0,
                  vendor: str = "intel", tdp_level: int = 4) -> tuple[Any, Any, int]:
    """Run ``guest``'s access under a fresh :class:`mmu.kvm.tdp.TdpMMU` until the 2D walk stops
    exiting: each EPT violation / NPT fault is one exit, fixed by ``TdpMMU.map``
    (``kvm_tdp_mmu_map``), then the guest retries.  Returns (the last
    :class:`~mmu.kvm.tdp.TwoDWalkResult`, the TDP MMU, the number of exits).  Guest memory is
    copied first, and the walks set no A/D bits.
    """
    from mmu.kvm.roles import cpu_role, tdp_root_role
    from mmu.kvm.tdp import TdpMMU, two_d_walk
    check_access(access)
    tdp = TdpMMU(vendor=vendor)
    root, _ = tdp.get_root(tdp_root_role(cpu_role(guest.regs), tdp_level))
    gmem = guest.mem.copy()
    levels = None if vendor == "intel" else tdp_level
    exits = 0
    r = two_d_walk(gmem, guest.regs, gva, access, cpl, tdp.mem, root.pointer, vendor,
                   levels=levels, set_ad=False)
    while r.tdp_fault and exits < _MAX_RETRIES:
        exits += 1
        tdp.map(root, r.fault_gpa)
        r = two_d_walk(gmem, guest.regs, gva, access, cpl, tdp.mem, root.pointer, vendor,
                       levels=levels, set_ad=False)
    return r, tdp, exits


def render_regimes(rg: Regimes) -> View:
    """The three regimes side by side, one row each (kept under ~110 columns so the text
    form fits a notebook's output without wrapping)."""
    def hexor(v: int | None) -> str:
        return f"{v:#x}" if v is not None else "✘ none (guest fault)"
    g = rg.guest
    rows = (
        ("guest walk", "the guest", "GVA -> GPA", hexor(g.gpa), str(len(g.trace)), "-"),
        ("shadow paging", "KVM (shadow)", "GVA -> HPA", hexor(rg.shadow_hpa),
         "-" if rg.shadow_refs is None else str(rg.shadow_refs),
         f"{count_noun(rg.shadow_exits, '#PF exit')}, {count_noun(rg.shadow_pages, 'shadow page')}"),
        ("TDP (EPT)", "guest + KVM", "GVA -> GPA -> HPA", hexor(rg.tdp_hpa),
         str(rg.tdp_refs),
         f"{count_noun(rg.tdp_exits, 'EPT violation')}, {count_noun(rg.tdp_pages, 'EPT page')}"),
    )
    mode = g.mode.label if g.mode is not None else "?"
    t = Table(f"GVA {rg.gva:#x} of the chapter guest ({mode} paging) in the three regimes",
              ("regime", "tables by", "translation", "result", "entries read",
               "KVM's work, first access"), rows)
    note = ("entries read = entries the hardware reads for one translation (a TLB miss).\n"
            "HPA = GPA + 2**51 in this model (guest RAM at a fixed host offset): the shadow "
            "and TDP results must agree.")
    return View(t.text() + "\n" + note, wrap_html(
        t.html() + "".join(f"<p>{esc(line)}</p>" for line in note.splitlines()),
        "regimes-view"))
