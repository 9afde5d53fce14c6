"""Thin ipywidgets wrappers for chapters 6-9 (root cache, CR0.WP story, nesting, the
reviewer's walkthrough).

Same pattern as :mod:`mmu.book.widgets_walk`: controls wired with ``observe`` to one
``ipywidgets.HTML`` showing a pure view from :mod:`mmu.book.views`; ``.text`` mirrors the view,
``.result`` holds the model's answer and ``.set(**values)`` drives the widget from code,
so a notebook cell (or a test) can assert on what it shows.  No model logic here.
"""
from __future__ import annotations

from typing import Any


from mmu.book.views.common import View
from mmu.book.widgets_walk import ViewWidget, _check, _drop, _slider, _toggles

__all__ = ["SeriesWalkthrough", "PatchSection", "patch_section", "show_patch", "NestedExplorer",
           "RootCacheTimeline", "Cr0WpStory"]


def _series_state_controls(sv, st) -> dict[str, Any]:
    """The guest/host controls a series demo is computed for (chapter 9)."""
    return {
        "mode": _drop("guest paging", sv.MODES, st.mode),
        "wp": _check("CR0.WP", st.wp),
        "nx": _check("EFER.NX", st.nx),
        "smep": _check("CR4.SMEP", st.smep),
        "tdp": _check("TDP (EPT/NPT)", st.tdp),
        "smm": _check("SMM", st.smm),
        "tdp_level": _drop("TDP level", (4, 5), st.tdp_level),
    }


def _series_state(base, v: dict):
    return base.replace(mode=v["mode"], wp=v["wp"], nx=v["nx"], smep=v["smep"],
                        tdp=v["tdp"], smm=v["smm"], tdp_level=v["tdp_level"])


class SeriesWalkthrough(ViewWidget):
    """Chapter 9: pick a patch of the series, flip between before (5.18 model) and after
    (5.19 model), and change the guest state the demo is computed for."""

    css_class = "series-walkthrough"

    def __init__(self, patch: str = "2ba676774dfc", side: str = "before", **state: Any):
        from mmu.book.series import FOLLOW_UPS, PATCHES
        from mmu.book.views import series_view as sv
        self._sv = sv
        st = sv.SeriesState(**state)
        options = [(f"{p.order:2d} {p.hash} {p.subject.removeprefix(sv.SUBJECT_PREFIX)}",
                    p.hash) for p in PATCHES + FOLLOW_UPS]
        controls = {
            "patch": _drop("patch", options, sv.find_patch(patch).hash),
            "side": _toggles("show", [("before (5.18 model)", "before"),
                                      ("after (5.19 model)", "after")], side),
            **_series_state_controls(sv, st),
        }
        self._base = st
        super().__init__(controls, self._run)

    def _run(self, v: dict) -> tuple[Any, View]:
        d = self._sv.demo(v["patch"], _series_state(self._base, v))
        return d, self._sv.render_patch(d, v["side"])


class PatchSection(ViewWidget):
    """Chapter 9, one section per patch: the patch's commit (linked), what it changes, both
    sides of its demo side by side and the verdict, with the guest/host controls of its
    demo.  Its plain-text form is its text/plain output (no separate print needed)."""

    css_class = "series-section-widget"
    plain_text_repr = True

    def __init__(self, patch: str, **state: Any):
        from mmu.book.views import series_view as sv
        self._sv = sv
        self.patch = sv.find_patch(patch)
        if self.patch.demo is None:
            raise ValueError(f"patch {self.patch.hash} has no demo: show "
                             f"patch_section({patch!r}), a static view")
        self._base = sv.SeriesState(**state)
        super().__init__(_series_state_controls(sv, self._base), self._run)

    def _run(self, v: dict) -> tuple[Any, View]:
        d = self._sv.demo(self.patch, _series_state(self._base, v))
        return d, self._sv.render_section(d)


def patch_section(patch: "str | int") -> "PatchSection | View":
    """Chapter 9's section for one patch: a :class:`PatchSection` (controls + view) when
    the model can show the patch's effect, else the static section view."""
    from mmu.book.views import series_view as sv
    p = sv.find_patch(patch)
    return PatchSection(p.hash) if p.demo else sv.render_section(sv.demo(p))


def show_patch(patch: "str | int") -> None:
    """Display chapter 9's section for one patch and print its plain-text form right under
    it (the book's rule: every view also as text, which is what a rendered or static copy
    of the page shows).  Returns nothing, so the cell displays the section once."""
    from IPython.display import display
    section = patch_section(patch)
    display(section)
    print(section.text)


class NestedExplorer(ViewWidget):
    """Chapter 8: the roles of nested virtualisation -- nested NPT (L1's NPT shadowed by
    guest_mmu), nested EPT, the nested MMU (L2's own tables) -- for a chosen L1/L2 paging
    mode, KVM TDP level, EPT A/D and execute-only, and SMM."""

    css_class = "nested-explorer"

    def __init__(self, kind: str = "npt", **params: Any):
        from mmu.book.views import nested_view as nv
        self._nv = nv
        p = nv.NestedParams(kind=kind, **params)
        controls = {
            "kind": _drop("nested MMU", [(label, k) for k, label in nv.KIND_LABELS.items()],
                          p.kind),
            "mode": _drop("L1 NPT / L2 paging", nv.MODES, p.mode),
            "tdp_level": _drop("L0 TDP level", (4, 5), p.tdp_level),
            "ept_level": _drop("EPTP levels", (4, 5), p.ept_level),
            "ad": _check("EPTP A/D", p.ad),
            "execonly": _check("execute-only", p.execonly),
            "smm": _check("SMM", p.smm),
        }
        super().__init__(controls, self._run)

    def _run(self, v: dict) -> tuple[Any, View]:
        nv = self._nv
        res = nv.nested_roles(nv.NestedParams(**v))
        return res, nv.render_nested(res)


class RootCacheTimeline(ViewWidget):
    """Chapter 6: a guest switching among N processes; the root cache after every step.

    Controls: number of processes, kernel era, MMU kind, guest paging (64-bit or PAE),
    number of CR3 switches, vendor, and a CR0.WP toggle pair every k switches (0 = none).  ``.result`` is the :class:`~mmu.book.views.root_cache_view.Timeline`.
    """

    css_class = "root-cache-timeline"

    def __init__(self, n_procs: int = 4, kernel: str = "6.4", mmu: str = "shadow",
                 guest: str = "64-bit", switches: int = 12, vendor: str = "intel",
                 wp_every: int = 0):
        from mmu.kvm.eras import ERA_NAMES
        from mmu.book.views import root_cache_view as rv
        from mmu.kvm.vcpu import MMU_KINDS
        self._rv = rv
        controls = {
            "n_procs": _slider("processes", n_procs, 1, 8),
            "kernel": _drop("kernel", [(f"Linux {k}", k) for k in ERA_NAMES], kernel),
            "mmu": _drop("MMU", MMU_KINDS, mmu),
            "guest": _drop("guest paging", rv.GUESTS, guest),
            "switches": _slider("CR3 loads", switches, 1, 24),
            "vendor": _drop("vendor", [("Intel (EPT)", "intel"), ("AMD (NPT)", "amd")], vendor),
            "wp_every": _slider("WP pair every", wp_every, 0, 8),
        }
        super().__init__(controls, self._run)

    def _run(self, v: dict) -> tuple[Any, View]:
        t = self._rv.root_cache_timeline(**v)
        return t, self._rv.render_timeline(t)


class Cr0WpStory(ViewWidget):
    """Chapter 7: one guest CR0.WP toggle on a chosen kernel era, MMU kind and vendor --
    counts per toggle, the root role before/after, and the vCPU's events."""

    css_class = "cr0wp-story"

    def __init__(self, kernel: str = "5.19", mmu: str = "tdp", vendor: str = "intel"):
        from mmu.kvm.vcpu import MMU_KINDS
        from mmu.book.views import story_view as st
        self._st = st
        controls = {
            "kernel": _drop("kernel", [(f"Linux {k}", k) for k in st.STORY_KERNELS], kernel),
            "mmu": _drop("MMU", MMU_KINDS, mmu),
            "vendor": _drop("vendor", [("Intel (VMX, EPT)", "intel"), ("AMD (SVM, NPT)", "amd")],
                            vendor),
        }
        super().__init__(controls, self._run)

    def _run(self, v: dict) -> tuple[Any, View]:
        r = self._st.toggle(v["kernel"], v["mmu"], v["vendor"])
        return r, self._st.render_toggle(r)
