"""Render functions of chapters 1-4 (mmu.book.views.walk_view, permissions_view, shadow_view,
tdp_view) and their widgets (mmu.book.widgets_walk).

Expected values are worked out by hand from the chapter guest's layout
(mmu.book.views.walk_view._REGIONS: user code 256 KiB, user data 128 KiB, one kernel large page,
kernel text 512 KiB, kernel data 256 KiB), from the SDM's #PF error-code bits (Vol. 3A
4.7) and from the fact sheet's permission rules (§7.3) -- never pasted from a run.
"""
from __future__ import annotations

import random
import xml.etree.ElementTree as ET

import pytest

from mmu import walk
from mmu.book.views import permissions_view as pv
from mmu.book.views import walk_view as wv

KiB, MiB = 1 << 10, 1 << 20


def _rows(table_text: str) -> list[list[str]]:
    """Data rows of a Table.text() (after the caption, header and dashes), split on 2+ spaces."""
    import re
    return [re.split(r"\s{2,}", line.strip()) for line in table_text.splitlines()[3:]]


# ---------------------------------------------------------------------------
# GVA split
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("mode,expected", [
    # 0xC01234: bits 31:22 = 3, 21:12 = 0x001 -> 1 (10-bit indexes)
    ("32-bit", [("PDE index", "31:22", "3"), ("PTE index", "21:12", "1")]),
    # 9-bit indexes: bits 31:30 = 0, 29:21 = 6 (6 * 2 MiB = 0xC00000), 20:12 = 1
    ("PAE", [("PDPTE index", "31:30", "0"), ("PDE index", "29:21", "6"),
             ("PTE index", "20:12", "1")]),
    ("4-level", [("PML4E index", "47:39", "0"), ("PDPTE index", "38:30", "0"),
                 ("PDE index", "29:21", "6"), ("PTE index", "20:12", "1")]),
    ("5-level", [("PML5E index", "56:48", "0"), ("PML4E index", "47:39", "0"),
                 ("PDPTE index", "38:30", "0"), ("PDE index", "29:21", "6"),
                 ("PTE index", "20:12", "1")]),
])
def test_gva_split_indexes(mode, expected):
    rows = _rows(wv.gva_split(0x00C0_1234, mode).text)
    got = [(r[0], r[1], r[2]) for r in rows if r[0].endswith("index")]
    assert got == expected
    assert ["page offset", "11:0", "0x234"] == rows[-1][:3]


def test_gva_split_high_half_and_ignored_bits():
    # 0xffff800000000000: bits 63:48 = 0xffff, bit 47 = 1 -> PML4 index 256, rest 0.
    rows = _rows(wv.gva_split(0xFFFF_8000_0000_0000, "4-level").text)
    assert rows[0][:3] == ["sign extension", "63:48", "0xffff"]
    assert rows[1][:3] == ["PML4E index", "47:39", "256"]
    # Outside long mode bits 63:32 are not part of the linear address.
    rows = _rows(wv.gva_split((5 << 32) | 0x1000, "32-bit").text)
    assert rows[0][:3] == ["ignored", "63:32", "0x5"]
    assert rows[1][:3] == ["PDE index", "31:22", "0"]
    assert rows[2][:3] == ["PTE index", "21:12", "1"]


def test_gva_split_refuses_bad_input():
    with pytest.raises(ValueError, match="none"):
        wv.gva_split(0, "none")
    with pytest.raises(ValueError, match="allowed"):
        wv.gva_split(-1, "4-level")
    with pytest.raises(TypeError):
        wv.gva_split("0x10", "4-level")


# ---------------------------------------------------------------------------
# The chapter guest and single walks
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("mode,size", [("32-bit", 4 * MiB), ("PAE", 2 * MiB),
                                       ("4-level", 2 * MiB), ("5-level", 2 * MiB)])
def test_large_page_walk(mode, size):
    g = wv.demo_guest(mode)
    r = walk(g.mem, g.regs, 0x0080_1234, "read", 0, set_ad=False)
    assert r.ok and r.gpa == 0x0080_1234 and r.page_size == size
    text = wv.render_walk(r, 0x0080_1234, "read", 0).text
    label = "4 MiB" if size == 4 * MiB else "2 MiB"
    assert f"✔ translated: GPA 0x801234 ({label} page)" in text
    # the leaf is the PDE (level 2), one row per level from the root down
    levels = {"32-bit": 2, "PAE": 3, "4-level": 4, "5-level": 5}[mode]
    rows = _rows(text.split("\n\n")[0])
    assert len(rows) == levels - 1
    assert rows[-1][0] == "2 PDE" and rows[-1][-1] == "leaf"


def test_write_to_kernel_text_is_a_protection_fault():
    g = wv.demo_guest("4-level")
    r = walk(g.mem, g.regs, 0x00C0_1234, "write", 0, set_ad=False)
    text = wv.render_walk(r, 0x00C0_1234, "write", 0).text
    # SDM 4.7: P=1 (present page) | W/R=1 (write) = 0x3
    assert "error code 0x3 (P|WR)" in text
    assert "R/W: supervisor write to a read-only page with CR0.WP=1" in text
    assert "#PF error code 0x3 bit by bit" in text
    rows = {row[0]: row for row in _rows(wv.error_code_table(r.fault.error_code).text())}
    assert rows["P"][2] == "1" and rows["W/R"][2] == "1" and rows["U/S"][2] == "0"
    # the PTE row: P only (read-only, supervisor, executable) -> ACC "--X"
    walk_rows = _rows(text.split("\n\n")[0])
    assert walk_rows[-1][0] == "1 PTE" and walk_rows[-1][4] == "P" and walk_rows[-1][5] == "--X"


def test_user_read_of_kernel_page_and_not_present():
    g = wv.demo_guest("PAE")
    r = walk(g.mem, g.regs, 0x00D0_0000, "read", 3, set_ad=False)
    assert "error code 0x5 (P|US)" in wv.outcome_line(r)          # P | U/S
    hole = walk(g.mem, g.regs, 0x0100_0000, "read", 0, set_ad=False)   # above all regions
    assert wv.outcome_line(hole).startswith("✘ #PF, error code 0x0 (-)")
    # 16 MiB = PDE index 8 (0x1000000 >> 21), which no region uses: the walk stops there
    last = _rows(wv.render_walk(hole, 0x0100_0000, "read", 0).text.split("\n\n")[0])[-1]
    assert last[0] == "2 PDE" and last[1] == "8" and last[-1] == "✘ stop: PDE not present"


def test_non_canonical_is_gp_with_empty_trace():
    g = wv.demo_guest("4-level")
    r = walk(g.mem, g.regs, 1 << 47, "read", 0)
    v = wv.render_walk(r, 1 << 47, "read", 0)
    assert "✘ #GP(0)" in v.text and "no entry read" in v.text
    assert "bit by bit" not in v.text          # no #PF error code for a #GP


def test_error_code_table_bits():
    rows = {r[0]: r[1:3] for r in _rows(wv.error_code_table(0x27).text())}
    # 0x27 = P(0) | W/R(1) | U/S(2) | PK(5)
    assert rows == {"P": ["0", "1"], "W/R": ["1", "1"], "U/S": ["2", "1"], "RSVD": ["3", "0"],
                    "I/D": ["4", "0"], "PK": ["5", "1"]}


def test_acc_label_and_flag_names():
    assert [wv.acc_label(a) for a in (0, 1, 2, 4, 7)] == ["---", "--X", "-W-", "U--", "UWX"]
    with pytest.raises(ValueError):
        wv.acc_label(8)
    from mmu import PTE
    assert wv.flag_names(int(PTE.P | PTE.US | PTE.XD), PTE) == "P|US|XD"
    assert wv.flag_names(0, PTE) == "-"


def test_walk_svg_is_well_formed_and_labelled():
    g = wv.demo_guest("4-level")
    ok = walk(g.mem, g.regs, 0x0040_2000, "read", 3, set_ad=False)
    root = ET.fromstring(wv.walk_svg(ok, 0x0040_2000))
    ns = {"s": "http://www.w3.org/2000/svg"}
    assert root.find("s:title", ns).text == "Page walk of GVA 0x402000 (4-level paging)"
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert any(t.startswith("walk step") for t in texts)           # x axis label
    assert any(t.startswith("entry index") for t in texts)         # y axis label
    assert sum(t.endswith("table @ " + t.split("@ ")[-1]) for t in texts if "table @" in t) == 4
    assert "✔ 4 KiB page" in texts
    bad = walk(g.mem, g.regs, 0x0040_2000, "write", 3, set_ad=False)
    texts = [t.text for t in ET.fromstring(wv.walk_svg(bad, 0x0040_2000))
             .iter("{http://www.w3.org/2000/svg}text")]
    assert "✘ #PF code 0x7" in texts                              # P | W | U


# ---------------------------------------------------------------------------
# Address map from the batch walker
# ---------------------------------------------------------------------------

# Pages per region (4 KiB each): user code 64, user data 32, large page 1024 (32-bit) or
# 512, kernel text 128, kernel data 64.
@pytest.mark.parametrize("mode,present,writable,user,executable", [
    ("32-bit", 64 + 32 + 1024 + 128 + 64, 32 + 1024 + 64, 96, 64 + 32 + 1024 + 128 + 64),
    ("PAE", 64 + 32 + 512 + 128 + 64, 32 + 512 + 64, 96, 64 + 128),
    ("4-level", 64 + 32 + 512 + 128 + 64, 32 + 512 + 64, 96, 64 + 128),
    ("5-level", 64 + 32 + 512 + 128 + 64, 32 + 512 + 64, 96, 64 + 128),
])
def test_address_map_counts(mode, present, writable, user, executable):
    g = wv.demo_guest(mode, smep=True, smap=True)      # the map ignores SMEP/SMAP
    before = g.mem.copy()
    am = wv.address_map(g.mem, g.regs, 0, 4096)
    assert (int(am.present.sum()), int(am.writable.sum()), int(am.user.sum()),
            int(am.executable.sum())) == (present, writable, user, executable)
    assert g.mem == before                                  # set_ad=False: nothing written
    runs = am.runs()
    assert runs[0] == (0, 0x3F_FFFF, "not mapped")
    assert runs[1] == (0x40_0000, 0x43_FFFF, "read-only, user, executable")
    text = wv.render_address_map(am).text
    assert ["0x400000", "0x43ffff", "64", "read-only, user, executable"] in _rows(text)


def test_address_map_plot_has_title_and_labels():
    g = wv.demo_guest("4-level")
    fig = wv.plot_address_map(wv.address_map(g.mem, g.regs, 0x40_0000, 1024))
    assert fig.title.startswith("Batch walk of 1024 pages (4-level paging)")
    assert "guest-virtual address (MiB)" in fig.labels
    assert "question asked of each page" in fig.labels
    lanes = [lab for lab in fig.labels if lab.endswith("(yes = bar)")]
    assert lanes == ["present (yes = bar)", "writable (yes = bar)", "user (yes = bar)",
                     "executable (yes = bar)"]
    # 1024 pages from 0x400000: user code 64 pages (4-4.25 MiB) is present, user and
    # executable; the <desc> says the counts in words for a screen reader.
    assert "user: 96 pages" in fig.svg and "<title" in fig.svg


def test_address_map_refuses_bad_input():
    g = wv.demo_guest("4-level")
    with pytest.raises(ValueError, match="aligned"):
        wv.address_map(g.mem, g.regs, 0x10, 4)
    with pytest.raises(ValueError, match="allowed"):
        wv.address_map(g.mem, g.regs, 0, 0)


# ---------------------------------------------------------------------------
# Permissions
# ---------------------------------------------------------------------------

def _perm(**kw) -> pv.PermResult:
    return pv.evaluate(pv.PermState(**kw))


# (controls, expected error code or None for "allowed", rule prefix, permissions[] index)
# Error codes by SDM 4.7: P=1, W/R=2, U/S=4, RSVD=8, I/D=16, PK=32.  Index = PFEC bits 4:1
# with RFLAGS.AC in the RSVD slot (facts §7.3).
CASES = [
    (dict(), None, None, 0),                                             # kernel reads own data
    (dict(page_user=True), 0x1, "SMAP", 0),
    (dict(page_user=True, rflags_ac=True), None, None, 4),               # AC overrides SMAP
    (dict(page_user=True, page_xd=False, access="fetch"), 0x11, "SMEP", 8),
    (dict(page_writable=False, access="write"), 0x3, "R/W", 1),
    (dict(page_writable=False, access="write", cr0_wp=False), None, None, 1),
    (dict(page_writable=False, access="write", cpl=3, page_user=True, cr0_wp=False),
     0x7, "R/W", 3),                                                     # WP=0 never helps CPL 3
    (dict(access="fetch"), 0x11, "XD", 8),
    (dict(access="fetch", cpl=3, page_xd=False, efer_nxe=False, cr4_smep=False),
     0x5, "U/S", 10),                                                    # no I/D without NX/SMEP
    (dict(page_user=True, cpl=3, cr4_pke=True, pkru_ad=True), 0x25, "PK", 2),
    (dict(page_user=True, cpl=3, cr4_pke=True, pkru_wd=True, access="write"), 0x27, "PK", 3),
    (dict(page_user=True, cpl=3, cr4_pke=True, pkru_wd=True), None, None, 2),   # WD: reads ok
    (dict(cr4_pke=True, pkru_ad=True), None, None, 0),                  # keys: user pages only
]


@pytest.mark.parametrize("controls,code,rule,index", CASES)
def test_permission_cases(controls, code, rule, index):
    r = _perm(**controls)
    if code is None:
        assert r.walk.ok and r.table_fault == 0 and r.table_error_code is None
    else:
        assert r.walk.fault.error_code == code
        assert r.walk.fault.reason.startswith(rule)
        assert r.table_error_code == code
    assert r.index == index
    assert r.agree is True
    text = pv.render(r).text
    assert "✔ the table verdict equals the walker's verdict" in text
    rows = _rows(pv.permissions_table(r.permissions, r.index, r.pte_access).text())
    used = [row for row in rows if row[-1] == pv.USED_ROW]
    assert len(used) == 1 and used[0][0] == str(index)
    # the marked cell: permissions[] alone says FAULT unless the fault is a PK fault
    word = "FAULT" if code and not code & 0x20 else "ok"
    assert used[0][3 + r.pte_access] == f"{pv.USED_COL}{word}{pv.USED_COL}"


def test_rsvd_fault_skips_the_tables():
    # EFER.NXE=0 makes bit 63 (XD) reserved: #PF P|RSVD = 0x9, before any permission check.
    r = _perm(efer_nxe=False, page_xd=True)
    assert r.walk.fault.error_code == 0x9
    assert r.table_fault is None and r.index is None and r.agree is None
    text = pv.render(r).text
    assert "not consulted" in text and pv.USED_ROW not in text


def test_permission_bytes_by_hand():
    # WP, NX, SMEP, SMAP on (the default state).  Bit a of a byte = ACC value a faults.
    perms = _perm().permissions
    assert perms[0] == 0xF0       # sup read: SMAP faults every U page (ACC 4..7)
    assert perms[2] == 0x0F       # user read: every supervisor page (ACC 0..3)
    assert perms[4] == 0x00       # sup read with AC: nothing
    # sup write: not-W pages (0,1,4,5) | SMAP on U pages (4..7) = 0b11110011
    assert perms[1] == 0xF3
    # sup fetch: not-X pages (0,2,4,6) | SMEP on U pages (4..7) = 0b11110101
    assert perms[8] == 0xF5
    rows = _rows(pv.permissions_table(perms).text())
    assert rows[0][:3] == ["0", "sup read", "0xf0"]
    assert rows[0][3:11] == ["ok"] * 4 + ["FAULT"] * 4


def test_table_and_walker_agree_on_a_seeded_sample():
    rng = random.Random(2024)
    names = ("cr0_wp", "cr4_smep", "cr4_smap", "cr4_pke", "efer_nxe", "pkru_ad", "pkru_wd",
             "rflags_ac", "page_user", "page_writable", "page_xd")
    for _ in range(300):
        kw = {n: rng.random() < 0.5 for n in names}
        kw.update(access=rng.choice(("read", "write", "fetch")), cpl=rng.randrange(4),
                  pkey=rng.randrange(16))
        r = _perm(**kw)
        assert r.agree is not False, kw


def test_perm_state_refuses_bad_input():
    with pytest.raises(ValueError, match="0..3"):
        pv.PermState(cpl=4)
    with pytest.raises(TypeError, match="bool"):
        pv.PermState(cr0_wp=1)
    with pytest.raises(ValueError, match="access"):
        pv.PermState(access="exec")
    with pytest.raises(ValueError, match="unknown control"):
        pv.PermState().replace(cr4_la57=True)
    with pytest.raises(TypeError):
        pv.render("not a result")


# ---------------------------------------------------------------------------
# Widgets, headless
# ---------------------------------------------------------------------------

def test_walk_explorer_headless():
    from mmu.book.widgets_walk import WalkExplorer
    w = WalkExplorer()
    w.set(mode="PAE", gva="0xd00010", access="write")
    assert w.result.ok and w.result.gpa == 0x0040_0010          # kernel data at GPA 0x400000
    assert 'class="mmu-view walk-view"' in w.html.value and "<svg" in w.html.value
    assert "PDPTE index" in w.text
    kept = w.result
    w.set(gva="zz")      # refused like any other change: the box goes back, the walk stays
    assert "'zz' is not a hex number" in w.text and "with or without 0x" in w.text
    assert "PDPTE index" in w.text and w.refused
    assert w.result is kept and w.values["gva"] == "0xd00010"
    assert '<div class="refused" role="alert">' in w.html.value
    w.set(mode="4-level", gva="c01234", access="read")      # bare hex, as the book writes it
    assert w.result.ok and w.result.gpa == 0x30_1234         # chapter 1: 0xc01234 -> 0x301234
    with pytest.raises(ValueError, match="unknown control"):
        w.set(colour="red")


def test_permission_lab_headless():
    from mmu.book.widgets_walk import PermissionLab
    lab = PermissionLab()
    lab.set(page_user=True)
    assert lab.result.walk.fault.reason.startswith("SMAP")
    assert pv.USED_ROW in lab.html.value and 'class="mmu-view perm-view"' in lab.html.value
    lab.set(rflags_ac=True)
    assert lab.result.walk.ok and lab.result.index == 4


# ---------------------------------------------------------------------------
# Shadow paging (chapter 3).  Role words by hand (facts §1.1, §2.3): level in bits 0-3,
# has_4_byte_gpte 0x10, quadrant << 5, access 7 << 8 = 0x700, efer_nx 0x1000 (forced to 1
# for shadow roots), cr0_wp 0x2000, smep_andnot_wp 0x4000.
# ---------------------------------------------------------------------------

def test_shadow_state_4level_pages_and_keys():
    from mmu.book.views import shadow_view as sv
    st = sv.shadow_state("4-level")
    keys = sorted((sp.role.level, sp.gfn, sp.role.word) for sp in st.mmu.hash.values())
    # CR3 = 0x10000000 -> root gfn 0x10000; PDPT and PD are the next two table frames; the
    # four touched pages use PDEs 2, 3 and 6 -> three page tables.
    assert [k for k in keys if k[0] > 1] == [(2, 0x10002, 0x3702), (3, 0x10001, 0x3703),
                                             (4, 0x10000, 0x3704)]
    assert len([k for k in keys if k[0] == 1]) == 3
    assert all(w == 0x3701 for lvl, _, w in keys if lvl == 1)
    assert set(st.mmu.write_track) == {0x10000, 0x10001, 0x10002}     # upper levels only
    rows = _rows(sv.pages_table(st.mmu).text())
    assert rows[0][1:5] == ["0x10000", "0x00003704", "4", "shadows a guest table"]
    assert rows[0][-2:] == ["root", "write-tracked"]


def test_shadow_state_32bit_pae_root_quadrants():
    from mmu.book.views import shadow_view as sv
    st = sv.shadow_state("32-bit")
    pae = _rows(sv.pae_root_table(st.root).text())
    # all four entries shadow the one guest page directory (gfn of CR3), quadrant i,
    # level 2 + 4-byte gptes: 0x3712 | i << 5
    assert [(r[0], r[3], r[4], r[5]) for r in pae] == [
        (str(i), "0x10000", str(i), f"{0x3712 | i << 5:#010x}") for i in range(4)]
    assert pae[3][1] == "0xc0000000-0xffffffff"
    assert "PAE root at host address" in sv.render_state(st).text
    assert sv.pae_root_table(sv.shadow_state("4-level").root) is None


@pytest.mark.parametrize("smep,write_acc", [(False, "-WX"), (True, "-W-")])
def test_wp_trick_before_after(smep, write_acc):
    from mmu.book.views import shadow_view as sv
    t = sv.wp_trick(smep)
    # user code page: user, read-only, executable; a read leaves U and X
    assert wv.acc_label(t.read.access) == "U-X" and not t.read.wp_trick
    assert t.write.wp_trick and wv.acc_label(t.write.access) == write_acc
    assert t.write_wp1.injected.error_code == 0x3                       # P | W/R
    assert (t.role_wp0.cr0_wp, t.role_wp1.cr0_wp) == (0, 1)
    assert t.role_wp0.smep_andnot_wp == int(smep) and t.role_wp1.smep_andnot_wp == 0
    text = sv.render_wp_trick(t).text
    assert "✔ CR0.WP=0 trick" in text and "▲ changed" in text


@pytest.mark.parametrize("mode", ["32-bit", "4-level"])
def test_write_protect_catches_pte_write(mode):
    from mmu.book.views import shadow_view as sv
    wp = sv.write_protect(mode, new_gpa=0x0050_0000)
    # kernel data at GVA 0xd00000 was GPA 0x400000; HPA = GPA + 2**51 in the model
    assert wp.hpa_before == 0x40_0000 + 2**51
    assert wp.write.trapped and wp.write.zapped_sptes == 1 and wp.hpa_after_write is None
    assert wp.hpa_after == 0x50_0000 + 2**51
    assert "✔ trapped" in sv.render_write_protect(wp).text


def test_shadow_bad_input():
    from mmu.book.views import shadow_view as sv
    with pytest.raises(ValueError, match="mode"):
        sv.shadow_state("none")
    with pytest.raises(TypeError):
        sv.shadow_state("4-level", cr0_wp=1)
    with pytest.raises(ValueError, match="aligned"):
        sv.write_protect("4-level", new_gpa=0x123)


# ---------------------------------------------------------------------------
# TDP (chapter 4): (n + 1)(m + 1) - 1 references for n guest levels on m TDP levels
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("mode,vendor,tdp_level,refs", [
    ("4-level", "intel", 4, 24), ("32-bit", "intel", 4, 14), ("5-level", "intel", 5, 35),
    ("4-level", "amd", 5, 29), ("PAE", "amd", 4, 19)])
def test_two_d_grid_refs(mode, vendor, tdp_level, refs):
    from mmu.book.views import tdp_view as tv
    g = tv.two_d_grid(mode, 0x00C0_1234, "read", vendor, tdp_level)
    assert g.refs == refs and g.hpa == 0x30_1234 + 2**51
    levels = {"32-bit": 2, "PAE": 3, "4-level": 4, "5-level": 5}[mode]
    assert len(g.cells) == levels + 1 and len(g.col_labels) == tdp_level + 1
    # row r: TDP refs r*(m+1)+1 .. r*(m+1)+m, then the guest entry; last row has no entry
    m = tdp_level
    assert g.cells[0] == tuple(range(1, m + 2))
    assert g.cells[-1] == tuple(range(levels * (m + 1) + 1, levels * (m + 1) + m + 1)) + (0,)
    assert g.row_labels[-1] == "final GPA 0x301234"


def test_two_d_grid_intel_pae_starts_at_the_pdpte_register():
    """Intel keeps a PAE guest's PDPTEs in registers (SDM Vol. 3A 4.4.1): the PDPTE row makes
    no reference, PD and PT rows (2+1)(4+1) - 1 = 14 in all; the load at MOV CR3 made
    4 x (4 EPT refs + 1 read) = 20, shown apart.  AMD reads the PDPTE: 19."""
    from mmu.book.views import tdp_view as tv
    g = tv.two_d_grid("PAE", 0x00C0_1234, "read", "intel", 4)
    assert g.refs == 14 and g.load_refs == 20 and g.hpa == 0x30_1234 + 2**51
    assert g.cells[0] == (0,) * 5 and g.row_labels[0].startswith("guest PDPTE 0 (PDPTE register")
    assert g.cells[1] == (1, 2, 3, 4, 5) and g.cells[-1] == (11, 12, 13, 14, 0)
    text = tv.render_grid(g).text
    assert "14 memory references" in text and "20 references (4 EPT walks + 4 reads)" in text
    title = tv.plot_grid(g).title
    assert title == ("2D walk, PAE guest on 4-level EPT: 14 references "
                     "(+20 at MOV CR3 to load the PDPTE registers)")
    amd = tv.two_d_grid("PAE", 0x00C0_1234, "read", "amd", 4)
    assert amd.refs == 19 and amd.load_refs == 0 and "PDPTE register" not in tv.render_grid(amd).text


def test_two_d_grid_render_and_plot():
    from mmu.book.views import tdp_view as tv
    g = tv.two_d_grid()
    rows = _rows(tv.render_grid(g).text.split("\nOutcome")[0])
    assert rows[-1] == ["final GPA 0x301234", "21", "22", "23", "24", "·"]
    fig = tv.plot_grid(g)
    assert fig.title == "2D walk, 4-level guest on 4-level EPT: 24 references"
    assert any(lab.startswith("entry read") for lab in fig.labels)
    assert any(lab.startswith("guest level") for lab in fig.labels)
    # 24 numbered cells, 1..24, each written as text (the number carries the order).
    assert [int(lab) for lab in fig.labels if lab.isdigit()] == list(range(1, 25))
    hole = tv.two_d_grid("4-level", 0x0100_0000)         # PDE 8 not present: guest #PF
    assert hole.refs == 3 * 5 and hole.outcome.startswith("✘ guest fault injected")


def test_tdp_root_role_ignores_the_guest():
    from mmu.book.views import tdp_view as tv
    rows = {lab: (cpu, tdp, sh) for lab, cpu, tdp, sh in tv.role_rows()}
    # TDP root: level 4 | direct 0x80 | access 0x700 | efer_nx 0x1000 | cr0_wp 0x2000
    assert {tdp for lab, (_, tdp, _) in rows.items() if "SMM" not in lab} == {0x3784}
    assert rows["4-level, in SMM"][1] == 0x0100_3784                 # smm byte at bit 24
    assert rows["4-level, CR0.WP=0"][2] == 0x1704                    # shadow: cr0_wp goes
    assert rows["32-bit"][2] == 0x3713 and rows["paging off"][2] == 0x1783
    text = tv.render_roles().text
    assert "2 distinct TDP root roles" in text and "▲ differs" in text


def test_chapter3_4_widgets_headless():
    from mmu.book.widgets_walk import ShadowExplorer, TwoDWalkExplorer
    s = ShadowExplorer()
    s.set(mode="32-bit")
    assert s.result.root.pae_sps is not None and "quadrant" in s.text
    s.set(mode="4-level", cr0_wp=False)
    assert s.result.root_role.cr0_wp == 0 and 'class="mmu-view shadow-view"' in s.html.value
    t = TwoDWalkExplorer()
    t.set(mode="5-level", tdp_level=5)
    assert t.result.refs == 35
    kept = t.result
    t.set(gva="nope")
    assert t.result is kept and "'nope' is not a hex number" in t.text
    assert t.values["gva"] == hex(0x00C0_1234)


@pytest.mark.parametrize("text, gva", [
    ("c01234", 0xC01234), ("0xC0_1234", 0xC01234), ("  0X600010 ", 0x600010),
    ("10", 0x10),                                   # hex, never decimal: 0x10 = 16
    ("ffffffffffffffff", (1 << 64) - 1), ("0", 0)])
def test_parse_gva_reads_hex_with_or_without_0x(text, gva):
    from mmu.book.widgets_walk import parse_gva
    assert parse_gva(text) == (gva, "")


@pytest.mark.parametrize("text, words", [
    ("zz", "is not a hex number"), ("", "is not a hex number"), ("0x", "is not a hex number"),
    ("-1", "is not a hex number"), ("1" + "0" * 16, "wider than 64 bits")])
def test_parse_gva_refuses_garbage_naming_it(text, words):
    from mmu.book.widgets_walk import parse_gva
    gva, error = parse_gva(text)
    assert gva is None and words in error and repr(text) in error
    assert "0xffffffffffffffff" in error


# ---------------------------------------------------------------------------
# Static renders: figures as SVG, text forms that fit a notebook's output width
# ---------------------------------------------------------------------------

def test_figure_svg_is_svg_with_the_titles_and_refuses_non_figures():
    from mmu.book.views.common import figure_svg
    from mmu.book.views import tdp_view as tv
    svg = figure_svg(tv.plot_grid(tv.two_d_grid()))
    root = ET.fromstring(svg.encode())
    assert root.tag.endswith("svg") and root.get("role") == "img"
    ns = "{http://www.w3.org/2000/svg}"
    # The title is an SVG <title> that aria-labelledby names, and real <text>.
    title = root.find(f"{ns}title")
    assert title.text == "2D walk, 4-level guest on 4-level EPT: 24 references"
    assert title.get("id") in root.get("aria-labelledby").split()
    assert title.text in [t.text for t in root.iter(f"{ns}text")]
    assert figure_svg(tv.plot_grid(tv.two_d_grid())) == svg          # deterministic
    with pytest.raises(TypeError, match="SvgFigure or a matplotlib Figure"):
        figure_svg("not a figure")


def test_regimes_text_fits_and_counts_by_hand():
    text = wv.render_regimes(wv.three_regimes("4-level")).text
    # 4-level read of 0xC01234 from empty KVM state: one #PF, then root + PDPT + PD + PT
    # shadow pages; under EPT one violation per guest table (4) and one for the data page.
    assert "1 #PF exit, 4 shadow pages" in text
    assert "5 EPT violations, 5 EPT pages" in text
    assert max(len(line) for line in text.splitlines()) <= 110


@pytest.mark.parametrize("render", ["perm", "wp_trick"])
def test_text_forms_fit_the_output_width(render):
    if render == "perm":
        text = pv.render(pv.evaluate(pv.PermState(page_user=True))).text
        assert text.splitlines()[0].startswith("  * Registers: CR0.WP=1")
    else:
        from mmu.book.views import shadow_view as sv
        text = sv.render_wp_trick(sv.wp_trick(smep=True)).text
        assert "CR0.WP=1 write, the guest's own fault: R/W" in text
    assert max(len(line) for line in text.splitlines()) <= 110


def test_w1_walk_explorer_set_validates_every_value_before_moving_any():
    from mmu.book.widgets_walk import WalkExplorer
    w = WalkExplorer()
    before = (dict(w.values), w.result, w.text, w.html.value)
    with pytest.raises(ValueError, match=r"cpl=7 is not one of the options: allowed 0, 1, 2, 3"):
        w.set(mode="PAE", cpl=7)
    assert (w.values, w.result, w.text, w.html.value) == before     # mode is still 4-level
    with pytest.raises(TypeError, match="gva must be a str"):
        w.set(mode="PAE", gva=0x1000)
    assert w.values == before[0]


def test_w2_a_dropdown_set_to_none_is_refused_and_reverted():
    # ipywidgets lets a Dropdown hold None ("nothing selected"); the callback used to raise.
    from mmu.book.widgets import RoleExplorer
    from mmu.book.widgets_walk import WalkExplorer
    w = WalkExplorer(mode="PAE")
    kept_result, kept_text = w.result, w.text
    w.controls["mode"].value = None                   # must not raise
    assert w.controls["mode"].value == "PAE" and w.result is kept_result
    assert w.refused.startswith("mode=None is not one of the options")
    assert w.text.startswith("✘ refused, nothing changed: mode=None") and w.text.endswith(kept_text)
    assert '<div class="refused" role="alert">' in w.html.value
    w.controls["cpl"].value = 3                        # the next accepted change clears it
    assert w.refused is None and "refused" not in w.text and w.result.fault is not None
    r = RoleExplorer()
    state, result = r.state, r.result
    r.dropdowns["kernel"].value = None
    assert r.dropdowns["kernel"].value == "6.4" and r.state == state and r.result is result
    assert "kernel=None" in r.refused and "kernel=None" in r.text
