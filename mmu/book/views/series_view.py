"""Chapter 9, the reviewer's walkthrough: the series' patches, a before/after per patch,
the exhaustive no-functional-change check and the naming debate, as pure views.

"Before" is the 5.18 model (:mod:`mmu.kvm.legacy`: one ``mmu_role`` plus the side fields
``root_level``, ``shadow_root_level``, ``direct_map``, ``ept_ad``), "after" the 5.19 model
(:mod:`mmu.kvm.roles`: ``cpu_role`` + ``root_role``).  The model has no state *between* two
patches, so a patch's demo compares the two ends on the one aspect that patch touches;
patches that only reshape code (:data:`mmu.book.series.KINDS` "refactor", "comment") have no
demo and say so.  Everything shown is computed by :mod:`mmu.kvm.legacy` and :mod:`mmu.kvm.roles`;
nothing is recomputed here.
"""
from __future__ import annotations

import dataclasses
import textwrap
from typing import Callable

from mmu.kvm import legacy, roles
from mmu.kvm.legacy import NfcReport
from mmu.x86.regs import Regs, make_regs
from mmu.book.sources import SOURCES_PAGE, anchor, cite, message_url
from mmu.book.series import (FOLLOW_UPS, KINDS, NAME_CANDIDATES, NAME_CHANGES, NAMING_DEBATE,
                      PATCHES, POSTINGS, Patch, patch as find_patch)
from mmu.book.views.common import (CHANGED, SAME, Table, View, bullet_html, bullet_text, esc, hexword,
                     marker, role_field_table, wrap_html)
from mmu.book.views.root_cache_view import TEXT_WIDTH, wrap_notes

__all__ = ["SeriesState", "Side", "Demo", "DEMOS", "SIDES", "MODES", "demo",
           "render_patch_list", "render_patch", "render_section", "patch_heading", "commit_url",
           "render_nfc",
           "render_naming"]

MODES = ("none", "32-bit", "PAE", "4-level", "5-level")
SIDES = ("before", "after")
SIDE_LABELS = {"before": "before: the 5.18 model (mmu.kvm.legacy)",
               "after": "after: the 5.19 model (mmu.kvm.roles)"}


@dataclasses.dataclass(frozen=True)
class SeriesState:
    """The guest and host a demo is computed for.  Defaults: a 64-bit guest with WP and NX
    on a host with TDP (EPT/NPT), 4-level TDP, A/D bits on, outside SMM and guest mode."""

    mode: str = "4-level"
    wp: bool = True
    nx: bool = True
    smep: bool = False
    smap: bool = False
    tdp: bool = True
    smm: bool = False
    guest_mode: bool = False
    tdp_level: int = 4
    ad: bool = True

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r}: allowed {MODES}")
        for name in ("wp", "nx", "smep", "smap", "tdp", "smm", "guest_mode", "ad"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, not {type(getattr(self, name)).__name__}")
        if self.tdp_level not in roles.TDP_LEVELS or isinstance(self.tdp_level, bool):
            raise ValueError(f"tdp_level={self.tdp_level!r}: allowed {roles.TDP_LEVELS}")
        if self.smm and self.guest_mode:
            raise ValueError("smm=True with guest_mode=True: KVM leaves guest mode before "
                             "entering SMM; allowed at most one of them")

    def replace(self, **changes) -> "SeriesState":
        return dataclasses.replace(self, **changes)

    def regs(self) -> Regs:
        return make_regs(self.mode, wp=self.wp, nx=self.nx, smep=self.smep, smap=self.smap)

    def describe(self) -> str:
        bits = [n for n, on in (("WP", self.wp), ("NX", self.nx), ("SMEP", self.smep),
                                ("SMAP", self.smap), ("SMM", self.smm),
                                ("guest mode", self.guest_mode)) if on]
        host = (f"TDP {self.tdp_level}-level, A/D {'on' if self.ad else 'off'}" if self.tdp
                else "shadow paging")
        return f"guest {self.mode} paging; {' '.join(bits) or 'no other bits'}; host {host}"


@dataclasses.dataclass(frozen=True)
class Side:
    """One side of a demo: tables and sentences, all computed by the model."""

    label: str
    tables: tuple[Table, ...] = ()
    lines: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Demo:
    """What a patch changes in the model for one state.  ``visible``: the two sides differ
    (a role bit or a field value) for this state; ``verdict`` says how, in words."""

    patch: Patch
    state: SeriesState
    before: Side
    after: Side
    visible: bool
    verdict: str

    def side(self, which: str) -> Side:
        if which not in SIDES:
            raise ValueError(f"side={which!r}: allowed {SIDES}")
        return self.before if which == "before" else self.after


# ---- the demos -------------------------------------------------------------------------

def _legacy_mmu(s: SeriesState) -> legacy.LegacyMmu:
    return legacy.init_mmu(s.regs(), tdp=s.tdp, smm=s.smm, guest_mode=s.guest_mode,
                           tdp_level=s.tdp_level, ad_enabled=s.ad)


def _roles_519(s: SeriesState) -> tuple[roles.CpuRole, roles.PageRole]:
    cpu = roles.cpu_role(s.regs(), smm=s.smm, guest_mode=s.guest_mode)
    root = (roles.tdp_root_role(cpu, s.tdp_level, s.ad) if s.tdp
            else roles.shadow_root_role(cpu))
    return cpu, root


def _field_demo(s: SeriesState, old_name: str, new_name: str,
                get_old: Callable[[legacy.LegacyMmu], object],
                get_new: Callable[[roles.CpuRole, roles.PageRole], object]):
    """A side field of 5.18 against the role bit that replaced it in 5.19."""
    old = get_old(_legacy_mmu(s))
    new = get_new(*_roles_519(s))
    same = int(old) == int(new)
    before = Side(SIDE_LABELS["before"], lines=(f"struct kvm_mmu.{old_name} = {int(old)}",))
    after = Side(SIDE_LABELS["after"],
                 lines=(f"{new_name} = {int(new)}  ({marker(not same)} vs {old_name})",))
    verdict = (f"{SAME}: {old_name} and {new_name} hold the same value ({int(new)}) -- the "
               f"side field was a copy" if same else
               f"{CHANGED}: {old_name}={int(old)} but {new_name}={int(new)}")
    return before, after, not same, verdict


def _demo_split(s: SeriesState):
    old = _legacy_mmu(s)
    cpu, root = _roles_519(s)
    before = Side(SIDE_LABELS["before"],
                  (role_field_table(f"mmu_role (64 bits) = {hexword(old.mmu_role.as_u64, 64)}",
                                    old.mmu_role),),
                  (f"side fields: root_level={old.root_level} shadow_root_level="
                   f"{old.shadow_root_level} direct_map={int(old.direct_map)} "
                   f"ept_ad={int(old.ept_ad)}",
                   "one role for two jobs: the root page's format and the guest's paging"))
    after = Side(SIDE_LABELS["after"],
                 (role_field_table(f"cpu_role (64 bits) = {hexword(cpu.as_u64, 64)}", cpu),
                  role_field_table(f"root_role (32 bits) = {hexword(root.word)}", root)),
                 ("cpu_role: how the guest's page tables look (walker, permissions)",
                  "root_role: how KVM's root page looks (roots are shared iff words are equal)",
                  "no side fields left"))
    return before, after, True, (f"{CHANGED}: one 64-bit mmu_role + 4 side fields became "
                                 f"cpu_role (64 bits) + root_role (32 bits)")


def _demo_tdp_role(s: SeriesState):
    s = s.replace(tdp=True)
    flip = s.replace(wp=not s.wp)
    old, old_flip = _legacy_mmu(s).mmu_role.base, _legacy_mmu(flip).mmu_role.base
    (_, new), (_, new_flip) = _roles_519(s), _roles_519(flip)
    wp_line = "after the guest flips CR0.WP ({} -> {}): root word {} -> {}  {}"
    before = Side(SIDE_LABELS["before"],
                  (role_field_table(f"TDP root role (mmu_role.base) = {hexword(old.word)}",
                                    old),),
                  (wp_line.format(int(s.wp), int(flip.wp), hexword(old.word),
                                  hexword(old_flip.word), marker(old.word != old_flip.word)),))
    after = Side(SIDE_LABELS["after"],
                 (role_field_table(f"TDP root_role = {hexword(new.word)} (vs 5.18)", new, old),),
                 (wp_line.format(int(s.wp), int(flip.wp), hexword(new.word),
                                 hexword(new_flip.word), marker(new.word != new_flip.word)),))
    visible = old.word != new.word or (old.word != old_flip.word) != (new.word != new_flip.word)
    verdict = (f"{CHANGED if old.word != new.word else SAME} root word for this state; a "
               f"CR0.WP flip changes the TDP root role in 5.18: "
               f"{'yes' if old.word != old_flip.word else 'no'}, in 5.19: "
               f"{'yes' if new.word != new_flip.word else 'no'}")
    return before, after, visible, verdict


def _demo_shadow_nx(s: SeriesState):
    s = s.replace(tdp=False)
    old = _legacy_mmu(s).mmu_role.base
    _, new = _roles_519(s)
    before = Side(SIDE_LABELS["before"],
                  (role_field_table(f"shadow root role (mmu_role.base) = {hexword(old.word)}",
                                    old),))
    after = Side(SIDE_LABELS["after"],
                 (role_field_table(f"shadow root_role = {hexword(new.word)} (vs 5.18)", new,
                                   old),))
    changed = [n for n, _, _ in old.diff(new)]
    return before, after, bool(changed), (
        f"{CHANGED}: {', '.join(changed)} differ (efer_nx is forced to 1 in 5.19)" if changed
        else f"{SAME}: with paging on and guest EFER.NX=1 the words agree; clear NX to see "
        f"the difference")


def _demo_ext_bits(s: SeriesState):
    old = _legacy_mmu(s).mmu_role
    _, root = _roles_519(s)
    before = Side(SIDE_LABELS["before"],
                  (role_field_table(f"mmu_role = {hexword(old.as_u64, 64)}", old,
                                    only=[r.name for r in old.fields()
                                          if r.name.startswith("ext.")]),),
                  ("the root's role carries 32 extended bits that no shadow page uses",))
    after = Side(SIDE_LABELS["after"], (),
                 (f"root_role = {hexword(root.word)}: a union kvm_mmu_page_role, 32 bits, "
                  f"no ext; renamed mmu_role -> root_role",
                  "kvm_mmu_after_set_cpuid zeroes root_role.word (level 0 never occurs in a "
                  "real root role) instead of clearing ext.valid (until 6.8; since 6.9 it "
                  "sets root_role.invalid = 1)"))
    return before, after, True, f"{CHANGED}: the root's role shrank from 64 to 32 bits"


def _demo_ext_layout(s: SeriesState):
    old = _legacy_mmu(s).mmu_role.ext
    cpu, _ = _roles_519(s)
    before = Side(SIDE_LABELS["before"],
                  (role_field_table(f"extended role, 5.18 layout = {hexword(old.word)}", old),))
    after = Side(SIDE_LABELS["after"],
                 (role_field_table(f"cpu_role.ext, 5.19 layout = {hexword(cpu.ext.word)} "
                                   f"(vs 5.18, by field name)", cpu.ext, old),),
                 (f"paging on = (cpu_role.base.level > 0) = {int(cpu.base.level > 0)} "
                  f"(5.18 ext.cr0_pg = {old.cr0_pg})",
                  f"PAE = !cpu_role.base.has_4_byte_gpte = "
                  f"{int(cpu.base.level > 0 and not cpu.base.has_4_byte_gpte)} "
                  f"(5.18 ext.cr4_pae = {old.cr4_pae})"))
    return before, after, old.word != cpu.ext.word, (
        f"{CHANGED}: cr0_pg and cr4_pae removed, later bits move down by two "
        f"({hexword(old.word)} -> {hexword(cpu.ext.word)})" if old.word != cpu.ext.word else
        f"{SAME}: with paging off only ext.valid is set in both layouts")


def _demo_ept_smm(s: SeriesState):
    old = legacy.shadow_ept_mmu_role(4, s.ad, False, smm=s.smm)
    before = Side(SIDE_LABELS["before"],
                  lines=(f"nested EPT root role = {hexword(old.base.word)} (smm={old.base.smm}, "
                         f"copied from root_mmu)",))
    try:
        new = roles.nested_ept_role(4, s.ad, False, smm=s.smm)
    except ValueError as e:
        after = Side(SIDE_LABELS["after"],
                     lines=(f"WARN_ON_ONCE(is_smm(vcpu)): {e}",))
        return before, after, True, (f"{CHANGED}: in SMM 5.18 built an smm=1 nested-EPT "
                                     f"role; 5.19 warns, the state cannot occur")
    after = Side(SIDE_LABELS["after"],
                 lines=(f"nested EPT root role = {hexword(new.base.word)} (smm=0 always)",))
    return before, after, old.base.word != new.base.word, (
        f"{SAME}: outside SMM both give {hexword(new.base.word)}; tick SMM to see the "
        f"difference")


def _demo_ept_ad(s: SeriesState):
    rows_b, rows_a, diff = [], [], False
    for ad in (True, False):
        old = legacy.init_shadow_ept_mmu(4, ad, False)
        new = roles.nested_ept_role(4, ad, False)
        same = old.ept_ad == (not new.base.ad_disabled)
        diff |= not same
        rows_b.append(f"EPTP A/D {'on ' if ad else 'off'}: ept_ad = {int(old.ept_ad)}")
        rows_a.append(f"EPTP A/D {'on ' if ad else 'off'}: !cpu_role.base.ad_disabled = "
                      f"{int(not new.base.ad_disabled)}  ({marker(not same)})")
    return (Side(SIDE_LABELS["before"], lines=tuple(rows_b)),
            Side(SIDE_LABELS["after"], lines=tuple(rows_a)), diff,
            f"{SAME}: the role bit says what the side field said" if not diff else CHANGED)


def _demo_passthrough(s: SeriesState):
    regs = s.regs()
    if s.mode != "4-level" or s.tdp_level != 5:
        note = (f"shown for L1 with 4-level NPT under a 5-level TDP host; this state is "
                f"{s.mode} paging with TDP {s.tdp_level}-level")
        regs, lvl = make_regs("4-level", wp=s.wp, nx=s.nx, smep=s.smep, smap=s.smap), 5
    else:
        note, lvl = "", s.tdp_level
    old = legacy.shadow_npt_mmu_role(regs, lvl, s.smm).base
    _, new = roles.nested_npt_roles(regs, lvl, s.smm)
    extra = (note,) if note else ()
    return (Side(SIDE_LABELS["before"],
                 (role_field_table(f"nested NPT root role = {hexword(old.word)}", old),), extra),
            Side(SIDE_LABELS["after"],
                 (role_field_table(f"nested NPT root_role = {hexword(new.word)} (vs 5.18)", new,
                                   old),), extra),
            old.word != new.word,
            f"{CHANGED}: passthrough=1 marks the 5-level root that has no guest PTEs"
            if old.word != new.word else f"{SAME}")


DEMOS: dict[str, Callable] = {
    "split": _demo_split,
    "tdp_role": _demo_tdp_role,
    "shadow_nx": _demo_shadow_nx,
    "ext_bits": _demo_ext_bits,
    "ext_layout": _demo_ext_layout,
    "ept_smm": _demo_ept_smm,
    "ept_ad": _demo_ept_ad,
    "passthrough": _demo_passthrough,
    "root_level": lambda s: _field_demo(s, "root_level", "cpu_role.base.level",
                                        lambda m: m.root_level, lambda c, r: c.base.level),
    "shadow_root_level": lambda s: _field_demo(s, "shadow_root_level", "root_role.level",
                                               lambda m: m.shadow_root_level,
                                               lambda c, r: r.level),
    "direct_map": lambda s: _field_demo(s, "direct_map", "root_role.direct",
                                        lambda m: m.direct_map, lambda c, r: r.direct),
}


def demo(key: "str | int | Patch", state: SeriesState | None = None) -> Demo:
    """The before/after of one patch (hash prefix, order or :class:`Patch`) for ``state``."""
    p = key if isinstance(key, Patch) else find_patch(key)
    state = SeriesState() if state is None else state
    if not isinstance(state, SeriesState):
        raise TypeError(f"state must be a SeriesState, not {type(state).__name__}")
    if p.demo is None:
        line = (f"no model-visible change: {KINDS[p.kind]}; the model computes the same "
                f"roles before and after this patch",)
        return Demo(p, state, Side(SIDE_LABELS["before"], lines=line),
                    Side(SIDE_LABELS["after"], lines=line), False, f"{SAME}: {KINDS[p.kind]}")
    before, after, visible, verdict = DEMOS[p.demo](state)
    return Demo(p, state, before, after, visible, verdict)


# ---- rendering -------------------------------------------------------------------------

#: Every merged subject starts with this prefix unless the table shows another.
SUBJECT_PREFIX = "KVM: x86/mmu: "


def _initials(name: str) -> str:
    return "".join(w[0] for w in name.split())


def _patch_rows(patches) -> tuple[tuple[str, ...], ...]:
    return tuple((str(p.order), p.hash, p.subject.removeprefix(SUBJECT_PREFIX),
                  _initials(p.author), p.kind, "✔ demo" if p.demo else "– none")
                 for p in patches)


def render_patch_list() -> View:
    """The merged series in mainline order, then the two follow-ups, and the postings."""
    head = ("#", "hash", "subject", "by", "kind", "model")
    t1 = Table(f"The 21 merged patches, Linux 5.19 {cite('[LINUS-0527]')}; prefix "
               f"\"{SUBJECT_PREFIX.strip()}\"", head, _patch_rows(PATCHES))
    t2 = Table("Merged right after the series (same pull)", head, _patch_rows(FOLLOW_UPS))
    t3 = Table(f"Postings (source: its entry in {SOURCES_PAGE})", ("version", "date", "what",
               "source"), tuple((v, d, w, f"#{anchor(src)}") for v, d, w, src in POSTINGS))
    authors = sorted({p.author for p in PATCHES + FOLLOW_UPS})
    legend = [f"kind {k}: {v}" for k, v in KINDS.items()]
    legend += ["by: " + ", ".join(f"{_initials(a)} = {a}" for a in authors),
               "model: ✔ demo = the widget shows this patch's effect (5.18 vs 5.19 model); "
               "– none = the patch only reshapes code"]
    text = "\n\n".join([t3.text(), t1.text(), t2.text(), "columns:\n" + wrap_notes(legend)])
    html = t3.html() + t1.html() + t2.html() + bullet_html(legend)
    return View(text, wrap_html(html, "series-list"))


def _side_text(side: Side) -> str:
    parts = [side.label]
    parts += [t.text() for t in side.tables]
    parts += [textwrap.fill(line, TEXT_WIDTH, initial_indent="  ", subsequent_indent="    ")
              for line in side.lines]
    return "\n".join(parts)


def _fill(label: str, text: str) -> str:
    return textwrap.fill(f"{label}{text}", TEXT_WIDTH, subsequent_indent="    ",
                         break_long_words=False, break_on_hyphens=False)


def _patch_text(d: Demo, sides: tuple[str, ...]) -> str:
    p = d.patch
    head = f"[{p.order}] {p.hash} {p.subject}  ({p.author}; {p.kind})"
    return "\n".join([_fill("", head), _fill("what: ", p.what),
                      _fill("touches: ", ", ".join(p.touches)),
                      f"sources: {cite(*p.sources)}", f"state: {d.state.describe()}", ""]
                     + [_side_text(d.side(sd)) + "\n" for sd in sides]
                     + [_fill("verdict: ", d.verdict)])


def _side_html(side: Side) -> str:
    return (f"<h4>{esc(side.label)}</h4>" + "".join(t.html() for t in side.tables)
            + (bullet_html(side.lines) if side.lines else ""))


def render_patch(d: Demo, side: str = "after") -> View:
    """One patch: header, what it changes, the chosen side of its demo and the verdict."""
    if not isinstance(d, Demo):
        raise TypeError(f"d must be a Demo, not {type(d).__name__}")
    sd = d.side(side)
    p = d.patch
    head = f"[{p.order}] {p.hash} {p.subject}  ({p.author}; {p.kind})"
    text = _patch_text(d, (side,))
    html = (f'<div class="patch-head"><b>{esc(head)}</b></div><p>{esc(p.what)}</p>'
            f"<p>touches: <code>{esc(', '.join(p.touches))}</code>; sources: "
            f"{esc(cite(*p.sources))}</p><p>state: {esc(d.state.describe())}</p>"
            f'<div class="patch-side" data-side="{esc(side)}">{_side_html(sd)}</div>'
            f'<p class="patch-verdict">verdict: {esc(d.verdict)}</p>')
    return View(text, wrap_html(html, "series-patch"))


#: Mainline commits, by (abbreviated) hash, on git.kernel.org.
COMMIT_URL = "https://git.kernel.org/torvalds/c/{}"


def commit_url(p: Patch) -> str:
    """The patch's mainline commit on git.kernel.org."""
    return COMMIT_URL.format(p.hash)


def patch_heading(p: Patch) -> str:
    """The chapter's markdown heading for one patch's section."""
    return f"### {p.order}. {p.subject.removeprefix(SUBJECT_PREFIX)}"


def render_section(d: Demo) -> View:
    """One patch's section: its mainline commit (linked), what it changes, what changes in
    the role words -- both sides of its demo side by side -- and the verdict on its
    no-functional-change claim."""
    if not isinstance(d, Demo):
        raise TypeError(f"d must be a Demo, not {type(d).__name__}")
    p, url = d.patch, commit_url(d.patch)
    claim = {"deliberate": "changes a role bit on purpose", "fix": "fixes a corner case"}.get(
        p.kind, "claims no functional change")
    head_text = [f"[{p.order}] {p.hash}  {url}",
                 _fill("", f"{p.subject}  ({p.author}; {p.kind}: {KINDS[p.kind]})"),
                 _fill("what: ", p.what), _fill("touches: ", ", ".join(p.touches))]
    head_html = (f'<div class="patch-head"><a href="{esc(url)}" target="_blank" '
                 f'rel="noopener"><code>{esc(p.hash)}</code></a> {esc(p.subject)} '
                 f"({esc(p.author)}; {esc(p.kind)}: {esc(KINDS[p.kind])})</div>"
                 f"<p>{esc(p.what)}</p><p>touches: <code>{esc(', '.join(p.touches))}</code></p>")
    if p.demo is None:
        words = "role words: none change; the model computes the same roles before and after"
        verdict = (f"the patch {claim}; nothing the model computes changes (the exhaustive "
                   f"check at the end of the chapter covers the whole series)")
        text = "\n".join(head_text + [_fill("", words), _fill("verdict: ", verdict)])
        html = head_html + f"<p>{esc(words)}</p>"
    else:
        verdict = f"the patch {claim}; the model: {d.verdict}"
        text = "\n".join(head_text + [f"state: {d.state.describe()}", ""]
                          + [_side_text(d.side(sd)) + "\n" for sd in SIDES]
                          + [_fill("verdict: ", verdict)])
        sides = "".join(f'<div class="patch-side" data-side="{sd}">{_side_html(d.side(sd))}'
                        f"</div>" for sd in SIDES)
        html = (head_html + f"<p>state: {esc(d.state.describe())}</p>"
                f'<div class="patch-sides" style="display:flex;flex-wrap:wrap;gap:0 24px">'
                f"{sides}</div>")
    html += (f'<p class="patch-verdict" data-visible="{str(d.visible).lower()}">'
             f"<b>verdict:</b> {esc(verdict)}</p>")
    return View(text, wrap_html(html, "series-section"))


def render_nfc(report: NfcReport) -> View:
    """:func:`mmu.kvm.legacy.nfc_report` as a table: per decision, how many states (or pairs of
    states) agree and differ between 5.18 and 5.19, a verdict with a symbol, and why."""
    if not isinstance(report, NfcReport):
        raise TypeError(f"report must be an NfcReport, not {type(report).__name__}")
    rows, classes = [], []
    for r in report.rows:
        if r.differing == 0:
            verdict = "✔ same (no functional change)"
        elif r.explanation.startswith(("Deliberate", "Consequence")):
            verdict = "▲ changed on purpose"
        else:
            verdict = "✘ CHANGED (unexplained)"
        rows.append((r.decision, str(r.identical), str(r.differing), verdict))
        classes.append("" if r.differing == 0 else "changed")
    t = Table(f"5.18 vs 5.19 over {report.register_states} register states x "
              f"{len(legacy.SMM_GUEST_MODES)} (SMM, guest mode) combinations",
              ("decision", "identical", "differing", "verdict"), tuple(rows), tuple(classes))
    notes = []
    for r in report.rows:
        s = f"{r.decision}: {r.explanation}"
        if r.example:
            s += f"  Example: {r.example}"
        notes.append(s)
    cfg = "configurations: " + ", ".join(report.configs)
    return View("\n".join([t.text(), "", _fill("", cfg), "", "why:", wrap_notes(notes)]),
                wrap_html(t.html() + f"<p>{esc(cfg)}</p>" + bullet_html(notes), "nfc-report"))


def _records(caption: str, records) -> str:
    """A table too wide for a text line, as records: a headline, then the long cell
    wrapped and indented (Message-Ids and names are never broken)."""
    out = [caption]
    for headline, body in records:
        out.append(_fill("  ", headline))
        out.append(textwrap.fill(body, TEXT_WIDTH, initial_indent="      ",
                                 subsequent_indent="      ", break_long_words=False,
                                 break_on_hyphens=False))
    return "\n".join(out)


def render_naming() -> View:
    """Who proposed which name, the candidates' fate, and the old -> new name table.

    The HTML has the three tables; the text form prints each row as a record (headline
    and wrapped text), since the messages' positions do not fit a text table."""
    t1 = Table("The naming discussion, in date order (kvm@vger.kernel.org)",
               ("date", "author", "source", "Message-Id", "position"),
               tuple((m.date, m.author, m.tag, message_url(m.message_id), m.position)
                     for m in NAMING_DEBATE), row_headers=False)
    t2 = Table("Names proposed for the CPU-side and root roles",
               ("name", "proposed by", "date", "source", "outcome"),
               tuple((c.name, c.proposed_by, c.date, cite(c.tag), c.outcome)
                     for c in NAME_CANDIDATES))
    t3 = Table("Old name (5.18) -> new name (5.19)", ("old", "new", "commit", "note"),
               tuple((n.old, n.new, n.commit, n.note) for n in NAME_CHANGES))
    text = "\n\n".join([
        _records(t1.caption, ((f"{m.date}  {m.author}  {m.tag}  {message_url(m.message_id)}", m.position)
                              for m in NAMING_DEBATE)),
        _records(t2.caption, ((f"{c.name}: {c.proposed_by}, {c.date} {cite(c.tag)}", c.outcome)
                              for c in NAME_CANDIDATES)),
        _records(t3.caption, ((f"{n.old} -> {n.new}  ({n.commit})", n.note)
                              for n in NAME_CHANGES))])
    return View(text, wrap_html(t1.html() + t2.html() + t3.html(), "naming-debate"))
