"""Views and widgets of chapters 6-9: the reviewer's walkthrough (series), nesting, the
root-cache timeline and the CR0.WP story.

Expected values are worked out by hand from the fact sheet (bit positions §1.1/§1.2, the
builders §2.2/§2.3, the merged list §0.3), not copied from the code's output.
"""
from __future__ import annotations

import pytest

from mmu.kvm.legacy import NfcReport, NfcRow
from mmu.book.series import FOLLOW_UPS, NAME_CHANGES, NAMING_DEBATE, PATCHES, patch
from mmu.book.views import series_view as sv

# Page-role bits (facts §1.1), to spell expected words by hand.
LEVEL4, LEVEL5, DIRECT, ACC_ALL = 4, 5, 1 << 7, 7 << 8
EFER_NX, CR0_WP, GUEST_MODE, PASSTHROUGH, SMM = 1 << 12, 1 << 13, 1 << 17, 1 << 18, 1 << 24


# ---- series data ------------------------------------------------------------------------

#: facts §0.3, "Mainline hashes (from [LINUS-0527]), in order".
MERGED = ("daed87b8767c 82ffa13f7933 39e7e2bf321a 25cc05652cd6 6819af7597d8 b89805082adf "
          "e5ed0fb01004 60f3cb60a59d ec283cb1dcb9 19b5dcc3be2e 2ba676774dfc f417e1459a12 "
          "362505deb8e2 7a458f0e1ba1 7a7ae8292391 faf729621c96 56b321f9e332 a7f1de9b6066 "
          "a972e29c1d6c 4d25502aa12e 347a0d0ded16").split()


def test_patches_are_the_merged_series_in_order():
    assert [p.hash for p in PATCHES] == MERGED
    assert [p.order for p in PATCHES + FOLLOW_UPS] == list(range(1, 24))
    assert [p.hash for p in FOLLOW_UPS] == ["767d8d8d503f", "84e5ffd045f3"]
    assert {p.author for p in PATCHES} == {"Paolo Bonzini", "Sean Christopherson"}
    assert patch("6819af7").author == "Sean Christopherson"
    # v3's "remove valid from extended role" was not merged (facts §0.3)
    assert not any("remove valid" in p.subject for p in PATCHES)
    # the deliberate role changes are exactly the two the fact sheet names
    assert [p.hash for p in PATCHES if p.kind == "deliberate"] == ["2ba676774dfc",
                                                                   "362505deb8e2"]


def test_patch_lookup_refuses_bad_keys():
    assert patch(11).hash == "2ba676774dfc" and patch("2BA6767").order == 11
    with pytest.raises(ValueError, match="too short"):
        patch("2ba6")
    with pytest.raises(ValueError, match="out of range"):
        patch(24)
    with pytest.raises(ValueError, match="matches 0"):
        patch("fffffff")
    with pytest.raises(TypeError):
        patch(True)


def test_every_demo_key_exists_and_refactors_show_nothing():
    for p in PATCHES + FOLLOW_UPS:
        d = sv.demo(p)
        if p.demo is None:
            assert not d.visible and d.verdict.startswith("= same")
        else:
            assert p.demo in sv.DEMOS


def test_naming_debate_cites_dated_messages():
    dates = [m.date for m in NAMING_DEBATE]
    assert dates == sorted(dates)
    assert ("2022-03-08", "Sean Christopherson") in [(m.date, m.author) for m in NAMING_DEBATE]
    text = sv.render_naming().text
    for m in NAMING_DEBATE:         # each Message-Id, as its lore.kernel.org link
        assert "https://lore.kernel.org/r/" + m.message_id.strip("<>") in text
    olds = {n.old: n.new for n in NAME_CHANGES}
    assert olds["root_level"] == "cpu_role.base.level"
    assert olds["shadow_root_level"] == "root_role.level"
    assert olds["direct_map"] == "root_role.direct"


# ---- demos against hand-computed words ---------------------------------------------------

def test_tdp_role_demo_words():
    s = sv.SeriesState(mode="4-level", wp=False, nx=True, tdp=True)
    d = sv.demo("2ba676774dfc", s)
    before = LEVEL4 | DIRECT | ACC_ALL | EFER_NX                  # 5.18: guest WP=0 copied
    after = before | CR0_WP                                       # 5.19: constant 1
    assert f"= {before:#010x}" in sv.render_patch(d, "before").text
    assert f"= {after:#010x}" in sv.render_patch(d, "after").text
    assert d.visible and "in 5.18: yes, in 5.19: no" in d.verdict


def test_shadow_nx_demo_words():
    s = sv.SeriesState(mode="4-level", wp=True, nx=False, tdp=False)
    d = sv.demo("362505deb8e2", s)
    assert f"= {LEVEL4 | ACC_ALL | CR0_WP:#010x}" in sv.render_patch(d, "before").text
    assert f"= {LEVEL4 | ACC_ALL | CR0_WP | EFER_NX:#010x}" in sv.render_patch(d, "after").text
    assert d.visible
    # with paging on and NX=1 the two eras agree
    assert not sv.demo("362505deb8e2", s.replace(nx=True)).visible


def test_ext_layout_demo_words():
    d = sv.demo("faf729621c96", sv.SeriesState(mode="4-level"))
    # 5.18: valid(0) cr0_pg(2) cr4_pae(3) cr4_pse(4) efer_lma(9); 5.19: valid pse(2) lma(7)
    old, new = 1 | 4 | 8 | 16 | 512, 1 | 4 | 128
    assert f"({old:#010x} -> {new:#010x})" in d.verdict
    assert not sv.demo("faf729621c96", sv.SeriesState(mode="none")).visible


def test_passthrough_and_ept_smm_demos():
    d = sv.demo("84e5ffd045f3", sv.SeriesState(mode="4-level", tdp_level=5))
    base = LEVEL5 | ACC_ALL | EFER_NX | GUEST_MODE      # NPT regs: CR0 = PG only -> cr0_wp 0
    assert f"= {base:#010x}" in sv.render_patch(d, "before").text
    assert f"= {base | PASSTHROUGH:#010x}" in sv.render_patch(d, "after").text
    e = sv.demo("daed87b8767c", sv.SeriesState())
    assert not e.visible and f"{LEVEL4 | ACC_ALL | GUEST_MODE:#010x}" in e.verdict
    e = sv.demo("daed87b8767c", sv.SeriesState(smm=True))
    assert e.visible and "WARN_ON_ONCE" in sv.render_patch(e, "after").text
    assert f"{LEVEL4 | ACC_ALL | GUEST_MODE | SMM:#010x}" in sv.render_patch(e, "before").text


def test_side_fields_equal_their_replacements_in_every_mode():
    for mode in sv.MODES:
        for tdp in (True, False):
            s = sv.SeriesState(mode=mode, tdp=tdp)
            for key in ("a972e29c1d6c", "4d25502aa12e", "347a0d0ded16", "ec283cb1dcb9"):
                assert not sv.demo(key, s).visible, (key, mode, tdp)
    # the guest level of each mode, by hand: none 0, 32-bit 2, PAE 3, 4-level 4, 5-level 5
    for mode, level in zip(sv.MODES, (0, 2, 3, 4, 5)):
        d = sv.demo("4d25502aa12e", sv.SeriesState(mode=mode))
        assert f"cpu_role.base.level = {level} " in d.after.lines[0]


def test_series_state_refuses_bad_values():
    with pytest.raises(ValueError, match="allowed"):
        sv.SeriesState(mode="6-level")
    with pytest.raises(TypeError):
        sv.SeriesState(wp=1)
    with pytest.raises(ValueError, match="guest mode"):
        sv.SeriesState(smm=True, guest_mode=True)
    with pytest.raises(ValueError):
        sv.SeriesState(tdp_level=3)
    with pytest.raises(ValueError, match="side"):
        sv.demo(1).side("middle")
    with pytest.raises(TypeError):
        sv.render_patch("not a demo")


def test_nfc_view_flags_unexplained_changes():
    rows = (NfcRow("a", 10, 0, "", "No functional change."),
            NfcRow("b", 5, 5, "x vs y", "Deliberate (abc): on purpose."),
            NfcRow("c", 9, 1, "p vs q", "Nobody knows."))
    v = sv.render_nfc(NfcReport(rows, 896, ("TDP",)))
    lines = {line.split()[0]: line for line in v.text.splitlines()[3:6]}
    assert lines["a"].endswith("✔ same (no functional change)")
    assert lines["b"].endswith("▲ changed on purpose")
    assert lines["c"].endswith("✘ CHANGED (unexplained)")
    assert 'class="changed"' in v.html
    with pytest.raises(TypeError):
        sv.render_nfc(rows)


def test_series_widget_headless():
    from mmu.book.widgets_story import SeriesWalkthrough
    w = SeriesWalkthrough(patch="2ba676774dfc", side="before", wp=False)
    assert f"= {LEVEL4 | DIRECT | ACC_ALL | EFER_NX:#010x}" in w.text
    w.set(side="after")
    assert 'data-side="after"' in w.html.value and w.result.visible
    w.set(patch="82ffa13f7933")
    assert "no model-visible change" in w.text
    with pytest.raises(ValueError, match="unknown control"):
        w.set(colour="red")


# ---- chapter 6: root-cache timeline -------------------------------------------------------

def test_round_robin_hits_the_lru_slot():
    from mmu.book.views.root_cache_view import root_cache_timeline
    # N <= 4 processes, S switches: N-1 misses that build roots, then hits in prev_roots[N-2]
    for n in (2, 3, 4):
        t = root_cache_timeline(n, "6.4", "shadow", switches=9)
        assert t.counts() == {"new-root": n - 1, "prev-hit": 9 - (n - 1)}
        assert {s.slot for s in t.steps if s.outcome == "prev-hit"} == {n - 2}
    # after a hit at the LRU slot of a full cache, the slots read P(k) | P(k-1) P(k-2) P(k-3)
    t = root_cache_timeline(4, "6.4", "shadow", switches=6)
    assert [x.split()[0] for x in t.steps[6].slots] == ["P2", "P1", "P0", "P3"]


def test_five_processes_and_pae_never_hit():
    from mmu.book.views.root_cache_view import render_timeline, root_cache_timeline
    five = root_cache_timeline(5, "5.19", "shadow", switches=10)
    assert five.counts() == {"new-root": 4, "hash-hit": 6}
    pae = root_cache_timeline(3, "5.18", "shadow", guest="PAE", switches=6)
    assert pae.counts() == {"new-root": 2, "hash-hit": 4}
    assert all(s.slots[1:] == ("·",) * 3 for s in pae.steps)
    text = render_timeline(five).text
    assert "✘ miss, ✔ hash hit" in text and "[current | prev_roots 0 1 2]" in text
    assert "✘ miss = fast_pgd_switch found no usable root" in text    # the legend


def test_wp_pairs_empty_the_cache_per_era():
    from mmu.book.views.root_cache_view import root_cache_timeline
    def unloads(kernel, mmu, vendor="intel"):
        t = root_cache_timeline(4, kernel, mmu, switches=4, wp_every=2, vendor=vendor)
        return sum(s.cause == "unload" for s in t.steps), t.counts()
    assert unloads("5.19", "tdp") == (4, {"no-exit": 4, "new-root": 4})
    assert unloads("6.4", "tdp") == (0, {"no-exit": 8})
    assert unloads("6.4", "tdp", "amd") == (0, {"no-exit": 4, "root-kept": 4})
    assert unloads("6.4", "shadow")[0] == 4


def test_timeline_refuses_bad_input_and_widget_runs():
    from mmu.book.views.root_cache_view import build_guest, render_timeline, root_cache_timeline
    from mmu.book.widgets_story import RootCacheTimeline
    with pytest.raises(ValueError):
        build_guest("32-bit", 2)
    with pytest.raises(ValueError):
        build_guest("PAE", 0)
    with pytest.raises(ValueError):
        root_cache_timeline(kernel="4.0")
    with pytest.raises(ValueError):
        root_cache_timeline(wp_every=-1)
    with pytest.raises(TypeError):
        render_timeline(None)
    w = RootCacheTimeline(n_procs=5)
    assert w.result.counts()["hash-hit"] == 8
    w.set(mmu="tdp")
    assert "– no VM exit" in w.text and 'class="root-timeline"' in w.html.value


# ---- chapter 8: nesting ---------------------------------------------------------------------

def test_nested_roles_by_hand():
    from mmu.book.views.nested_view import NestedParams, nested_roles
    npt = nested_roles(NestedParams("npt", "4-level", tdp_level=4))
    assert npt.root_role.word == LEVEL4 | ACC_ALL | EFER_NX | GUEST_MODE
    assert npt.cpu_role.ext.word == 1 | 4 | 128          # valid, cr4_pse, efer_lma; no PKE
    npt5 = nested_roles(NestedParams("npt", "4-level", tdp_level=5))
    assert npt5.root_role.word == LEVEL5 | ACC_ALL | EFER_NX | GUEST_MODE | PASSTHROUGH
    ept = nested_roles(NestedParams("ept", ept_level=5, ad=False, execonly=True))
    assert ept.cpu_role.as_u64 == (3 << 32) | LEVEL5 | ACC_ALL | (1 << 16) | GUEST_MODE
    nm = nested_roles(NestedParams("nested_mmu", "32-bit"))
    # 32-bit (non-PAE) L2: level 2 with 4-byte gptes
    assert nm.cpu_role.base.level == 2 and nm.cpu_role.base.has_4_byte_gpte == 1
    assert nm.root_role is None and nm.cpu_role.base.guest_mode == 1
    for bad in (NestedParams("ept", smm=True), NestedParams("npt", "none"),
                NestedParams("npt", "5-level", tdp_level=4)):
        assert nested_roles(bad).refused


def test_nested_separation_and_trace():
    from mmu.book.views.nested_view import (NestedParams, render_nested, separation,
                                       smm_guest_mode_trace)
    words = [r.word for _, _, r in separation(5)]
    assert len(set(words)) == 5 and words[0] == LEVEL5 | DIRECT | ACC_ALL | EFER_NX | CR0_WP
    t = smm_guest_mode_trace("6.4", "shadow")
    assert t.steps[1].root_role & SMM and not t.steps[2].root_role & SMM
    assert t.steps[3].slots[0].startswith("L2") and t.steps[4].outcome == "prev-hit"
    with pytest.raises(ValueError):
        NestedParams("vmx")
    with pytest.raises(TypeError):
        NestedParams(ad=1)
    with pytest.raises(TypeError):
        render_nested(None)


def test_nested_widget_headless():
    from mmu.book.widgets_story import NestedExplorer
    w = NestedExplorer(kind="ept")
    assert f"{LEVEL4 | ACC_ALL | GUEST_MODE:#010x}" in w.text
    w.set(kind="npt", tdp_level=5)
    assert w.result.root_role.passthrough == 1 and 'class="mmu-view nested-view"' in w.html.value


# ---- chapter 7: the CR0.WP story -------------------------------------------------------------

@pytest.mark.parametrize("kernel,mmu,vendor,expected", [
    # (exits, resets, unloads, init rebuilds, roots built, roots found again) per toggle,
    # facts §3.2-§4: reset_context unloads until 6.4; the TDP MMU frees its root on the last
    # put (one vCPU); 6.4: WP guest-owned with EPT on VMX, init only with TDP on SVM.
    ("5.15", "tdp", "intel", (1, 1, 1, 1, 1, 0)),
    ("5.19", "tdp", "amd", (1, 1, 1, 1, 1, 0)),
    ("6.1", "legacy", "intel", (1, 1, 1, 1, 0, 1)),
    ("6.4", "tdp", "intel", (0, 0, 0, 0, 0, 0)),
    ("6.4", "legacy", "intel", (0, 0, 0, 0, 0, 0)),
    ("6.4", "tdp", "amd", (1, 0, 0, 1, 0, 0)),
    ("6.4", "shadow", "intel", (1, 1, 1, 1, 0, 1)),
])
def test_toggle_counts(kernel, mmu, vendor, expected):
    from mmu.book.views.story_view import toggle
    r = toggle(kernel, mmu, vendor)
    keys = ("vm_exits", "mmu_resets", "mmu_unloads", "inits_rebuilt", "roots_created",
            "roots_reused")
    assert tuple(r.per_toggle[k] for k in keys) == expected


def test_toggle_root_role_words():
    from mmu.book.views.story_view import render_toggle, toggle
    tdp_wp = LEVEL4 | DIRECT | ACC_ALL | EFER_NX | CR0_WP
    assert toggle("5.18", "tdp").root_role == (tdp_wp, tdp_wp & ~CR0_WP)
    assert toggle("5.19", "tdp").root_role == (tdp_wp, tdp_wp)
    shadow_wp = LEVEL4 | ACC_ALL | EFER_NX | CR0_WP
    assert toggle("5.19", "shadow").root_role == (shadow_wp, shadow_wp & ~CR0_WP)
    assert "▲ changed" in render_toggle(toggle("5.18", "tdp")).text
    with pytest.raises(ValueError):
        toggle("6.4", toggles=3)
    with pytest.raises(TypeError):
        render_toggle("x")


def test_refresh_demo_and_changes_view():
    import re
    from mmu.book.views.story_view import refresh_demo, render_changes
    rows = refresh_demo().text.splitlines()[3:]
    assert re.search(r"no exit +1 +0 +✔", rows[0]) and re.search(r"no exit +1 +1 +✘", rows[1])
    text = render_changes().text
    assert "v5.15.106 -> + patches" in text and "tdp" in text


def test_cost_views_have_titles_labels_and_hatching():
    from mmu.book.views.story_view import render_ssdd, render_vmexit
    v = render_vmexit()
    assert "46754" in v.text and "<svg" in v.html
    s = render_ssdd(rows=("v6.1.23", "v6.1.23 + patches"))
    assert "7.65" in s.text and "3.36" in s.text
    for needle in ("ssdd 10 50000", "seconds (lower is better)", "hatch", "legacy published"):
        assert needle in s.html, needle


def test_cr0wp_widget_headless():
    from mmu.book.widgets_story import Cr0WpStory
    w = Cr0WpStory(kernel="6.4", mmu="tdp", vendor="amd")
    assert "exit + kvm_init_mmu only: roots kept" in w.text
    w.set(vendor="intel")
    assert w.result.per_toggle["vm_exits"] == 0 and 'class="story-verdict"' in w.html.value


# Static renders: text forms fit a notebook's output width; the cost figures say which
# published figures were fitted; figures tell their series apart without colour.

def _story_texts():
    from mmu.kvm.legacy import nfc_report
    from mmu.book.views import nested_view as nv, root_cache_view as rc, story_view as st
    from mmu.book.widgets_story import Cr0WpStory, NestedExplorer, SeriesWalkthrough
    yield "timeline", rc.render_timeline(rc.root_cache_timeline(5, switches=6)).text
    yield "timeline wp", rc.render_timeline(rc.root_cache_timeline(
        4, "5.19", "tdp", switches=6, wp_every=3)).text
    yield "eras", rc.render_era_comparison(4, mmu="legacy", wp_every=3).text
    yield "story", Cr0WpStory(kernel="5.19").text
    yield "counts", st.render_counts(kernels=("5.18", "6.4")).text
    yield "vmexit", st.render_vmexit().text
    yield "ssdd", st.render_ssdd().text
    yield "changes", st.render_changes().text
    yield "refresh", st.refresh_demo().text
    for kind in ("npt", "ept", "nested_mmu"):
        yield kind, NestedExplorer(kind=kind).text
    yield "separation", nv.render_separation(4).text
    yield "smm trace", rc.render_timeline(nv.smm_guest_mode_trace()).text
    yield "patches", sv.render_patch_list().text
    yield "walk", SeriesWalkthrough(patch="2ba676774dfc").text
    for p in PATCHES + FOLLOW_UPS:
        yield f"section {p.order}", sv.render_section(sv.demo(p)).text
    yield "nfc", sv.render_nfc(nfc_report()).text
    yield "naming", sv.render_naming().text


def test_section_links_the_commit_and_shows_both_role_words():
    from mmu.book.widgets_story import PatchSection, patch_section
    s = sv.SeriesState(mode="4-level", wp=False, nx=True, tdp=True)
    view = sv.render_section(sv.demo("2ba676774dfc", s))
    assert view.text.startswith("[11] 2ba676774dfc  https://git.kernel.org/torvalds/c/2ba676774dfc")
    before = LEVEL4 | DIRECT | ACC_ALL | EFER_NX                  # 5.18 copies WP=0
    assert f"= {before:#010x}" in view.text and f"= {before | CR0_WP:#010x}" in view.text
    assert view.text.index("before: the 5.18") < view.text.index("after: the 5.19")
    assert 'href="https://git.kernel.org/torvalds/c/2ba676774dfc"' in view.html
    assert view.html.count('class="patch-side"') == 2 and 'data-visible="true"' in view.html
    assert "verdict: the patch changes a role bit on purpose" in view.text
    const = sv.render_section(sv.demo("82ffa13f7933"))          # constify: nothing to show
    assert "role words: none change" in const.text and "patch-side" not in const.html
    assert "claims no functional change" in const.text
    w = patch_section(11)
    assert isinstance(w, PatchSection) and "patch" not in w.controls   # fixed on its patch
    assert w._repr_mimebundle_()["text/plain"] == w.text
    w.close()
    assert isinstance(patch_section("82ffa13f7933"), sv.View)
    with pytest.raises(ValueError, match="has no demo"):
        PatchSection("82ffa13f7933")


def test_chapter_9_has_one_section_per_patch_in_merge_order():
    import nbformat
    from conftest import REPO
    nb = nbformat.read(REPO / "notebooks" / "09_reviewers_walkthrough.ipynb", as_version=4)
    src = [c.source for c in nb.cells]
    found = [(src[i], src[i + 1]) for i in range(len(src) - 1)
             if src[i].startswith("### ") and src[i + 1].startswith("show_patch(")]
    assert found == [(sv.patch_heading(p), f'show_patch("{p.hash}")')
                     for p in PATCHES + FOLLOW_UPS]
    assert "render_walkthrough_text" not in "".join(src)      # no 20-screen text dump


def test_text_forms_fit_the_output_width():
    for name, text in _story_texts():
        widest = max(text.splitlines(), key=len)
        assert len(widest) <= 110, (name, widest)


def test_calibrated_figures_are_the_ones_mmu_cost_names():
    """Every cell marked as fitted is named (by its value) in a calibrated constant's
    status, and the vmexit held-out figures are not."""
    from mmu.book import cost
    from mmu.book.views import story_view as st
    calibrated = " ".join(c.status for c in cost.CONSTANTS.values()
                          if c.status.startswith("calibrated"))
    for row, col in st.CALIBRATED_SSDD:
        value = cost.PUBLISHED_SSDD[row][cost.COLUMNS.index(col)]
        assert f"{value:g}" in calibrated, (row, col, value)
    for kind, when in st.CALIBRATED_VMEXIT:
        value = cost.PUBLISHED_VMEXIT[kind][("before", "after").index(when)]
        assert str(value) in calibrated, (kind, when)
    for held in (cost.PUBLISHED_VMEXIT["legacy"][1], *cost.PUBLISHED_VMEXIT["shadow"]):
        assert str(held) not in calibrated
    text = st.render_changes().text
    assert "calibrated" in text and "held out" in text
    assert "8.43*" in st.render_ssdd().text and "9.45*" not in st.render_ssdd().text


def test_cost_figures_do_not_rely_on_colour():
    """Published vs model: hatching and hollow vs filled markers; before vs after (vmexit)
    and legacy vs TDP (ssdd): marker shape.  Read back from the SVG's legend text."""
    from mmu.book.views import story_view as st
    vm = st.render_vmexit().html
    for label in ("published before", "model before", "published after", "model after"):
        assert label in vm
    assert "hollow markers" in vm and "hatched bars" in vm
    ss = st.render_ssdd().html
    for label in ("legacy published", "legacy model", "tdp published", "tdp model",
                  "shadow published", "shadow model"):
        assert label in ss
    assert "hollow markers" in ss


def test_w3_smm_ticked_in_guest_mode_is_refused_inside_the_callback():
    # SeriesState refuses smm with guest_mode (KVM leaves guest mode before SMM); the
    # checkbox callback used to let that ValueError escape.
    from mmu.book.widgets_story import SeriesWalkthrough
    w = SeriesWalkthrough(guest_mode=True)
    kept = w.result
    w.controls["smm"].value = True                     # must not raise
    assert w.controls["smm"].value is False and w.result is kept
    assert "smm=True with guest_mode=True" in w.refused and "smm=True" in w.text
    w.set(smm=True, wp=False)                          # from code: refused the same way
    assert w.values["smm"] is False and w.values["wp"] is True and w.result is kept
    w.set(wp=False)
    assert w.refused is None and w.result is not kept
