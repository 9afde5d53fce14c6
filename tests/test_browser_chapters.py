"""Every chapter in JupyterLab, as a reader sees it after Run → Run All.

One JupyterLab (tests/browser_support.py ``serve_lab``) serves a temporary copy of
notebooks/ in which each chapter gets one extra, last cell: a probe printing
:func:`mmu.book.widget_state.introduced_json` -- for every widget displayed, in display
order, the controls and view words it was introduced with, and the kernel's drift report.
For each chapter the test runs Run All in headless Chromium and asserts:

* **no drift**: the kernel reports none, and every widget in the page shows its
  introduced state -- each control's value as displayed (checkbox ticks, the selected
  option's text, text boxes, slider read-outs, the active toggle) and the words of its view
  (``textContent`` of the view against the words of the introduced HTML);
* **no clipped control**: every description, label, read-out and button has
  ``scrollWidth <= clientWidth``; every option of every dropdown, and every text box's
  value, fits the box's inner width (measured with the box's own font: a ``<select>`` does
  not report its clipping through scrollWidth);
* **no console error** and no uncaught page error.

The notebook's windowing is turned off (``windowingMode: none``) so cells far below the
fold are laid out and can be measured.  Each chapter's kernel is started through the REST
API before the page opens (Lab joins that session): under load, Lab left to start it
itself sometimes asked "Select Kernel", and its ``autoStartDefaultKernel`` started two.  A screenshot of each chapter's first widget after
Run All goes to artifacts/browser/chapters/.  Skips only when no ``chromium`` is on PATH.
"""
from __future__ import annotations

import json
import urllib.request

import nbformat
import pytest
from nbformat.v4 import new_code_cell

from browser_support import browser_page, needs_chromium, run_all_until, serve_lab
from conftest import REPO

pytestmark = needs_chromium

CHAPTERS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SHOTS = REPO / "artifacts" / "browser" / "chapters"
MARK = "WIDGET-PROBE "
PROBE = ("from mmu.book.widget_state import introduced_json\n"
         f"print({MARK!r} + introduced_json())")
WIDGET_OUTPUT = ".jp-OutputArea-output:has(.jupyter-widgets)"

#: What the page shows of every widget output, in page order (see the module docstring).
INSPECT = """(sel) => {
  const norm = s => s.replace(/\\s+/g, ' ').trim();
  const ctx = document.createElement('canvas').getContext('2d');
  const textWidth = (el, text) => {
    const cs = getComputedStyle(el);
    ctx.font = `${cs.fontStyle} ${cs.fontWeight} ${cs.fontSize} ${cs.fontFamily}`;
    return ctx.measureText(text).width;
  };
  const inner = el => {
    const cs = getComputedStyle(el);
    return el.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
  };
  const shown = el => el.getClientRects().length > 0;
  return [...document.querySelectorAll(sel)].map(out => {
    const controls = [], clipped = [];
    const kinds = '.widget-checkbox, .widget-dropdown, .widget-text, .widget-hslider, ' +
                  '.widget-toggle-buttons';
    for (const el of out.querySelectorAll(kinds)) {
      const label = el.querySelector(':scope > .widget-label');
      const desc = label ? norm(label.textContent) : '';
      const has = c => el.classList.contains(c);
      if (has('widget-checkbox')) {
        controls.push(['Checkbox', norm(el.querySelector('.widget-label-basic span').textContent),
                       el.querySelector('input').checked]);
      } else if (has('widget-dropdown')) {
        const s = el.querySelector('select');
        controls.push(['Dropdown', desc, s.selectedIndex < 0 ? null : norm(s.options[s.selectedIndex].text)]);
        for (const o of s.options) {
          const w = textWidth(s, o.text), room = inner(s);
          if (w > room) clipped.push(`dropdown "${desc}" option "${o.text}": ${w.toFixed(1)} > ${room.toFixed(1)} px`);
        }
      } else if (has('widget-text')) {
        const i = el.querySelector('input');
        controls.push(['Text', desc, i.value]);
        const w = textWidth(i, i.value), room = inner(i);
        if (w > room) clipped.push(`text box "${desc}" value "${i.value}": ${w.toFixed(1)} > ${room.toFixed(1)} px`);
      } else if (has('widget-hslider')) {
        controls.push(['IntSlider', desc, parseInt(el.querySelector('.widget-readout').textContent)]);
      } else {
        const b = el.querySelector('.widget-toggle-button.mod-active');
        controls.push(['ToggleButtons', desc, b ? norm(b.textContent) : null]);
      }
    }
    for (const el of out.querySelectorAll('.widget-label, .widget-label-basic, .widget-readout, ' +
                                           '.widget-toggle-button, button')) {
      if (shown(el) && norm(el.textContent) && el.scrollWidth > el.clientWidth)
        clipped.push(`"${norm(el.textContent)}": scrollWidth ${el.scrollWidth} > clientWidth ${el.clientWidth}`);
    }
    const view = out.querySelector('.widget-html-content');
    return {controls, clipped, view: view ? norm(view.textContent) : null};
  });
}"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """One JupyterLab for every chapter, over copies that end with the probe cell."""
    def add_probe(root):
        for path in root.glob("[0-9][0-9]_*.ipynb"):
            nb = nbformat.read(path, as_version=4)
            nb.cells.append(new_code_cell(PROBE))
            nbformat.write(nb, path)
    # Lay out every cell, so controls far below the fold can be measured.
    tracker = {"@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"}}
    with serve_lab(tmp_path_factory.mktemp("lab-chapters"), tracker, add_probe) as running:
        yield running


def start_session(base: str, token: str, name: str) -> None:
    """A running python3 kernel for notebook ``name``, as if the reader had opened it."""
    body = json.dumps({"path": name, "name": name, "type": "notebook",
                       "kernel": {"name": "python3"}}).encode()
    req = urllib.request.Request(f"{base}/api/sessions", data=body, method="POST",
                                 headers={"Authorization": f"token {token}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        assert r.status == 201, r.status


def shut_kernels(base: str, token: str) -> None:
    """Stop the chapter's kernel, so the next chapter has the CPU to itself."""
    auth = {"Authorization": f"token {token}"}
    with urllib.request.urlopen(urllib.request.Request(f"{base}/api/sessions",
                                                       headers=auth)) as r:
        sessions = json.load(r)
    for s in sessions:
        urllib.request.urlopen(urllib.request.Request(f"{base}/api/sessions/{s['id']}",
                                                      headers=auth, method="DELETE"))


def run_chapter(lab, tmp_path, path):
    """Open the chapter with a running kernel, Run All; (probe, page widgets, errors)."""
    base, token, server = lab
    start_session(base, token, path.name)
    try:
        with browser_page(tmp_path) as (page, errors):
            page.goto(f"{base}/lab/tree/{path.name}?token={token}&reset")
            page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for()
            probe_out = page.locator(".jp-OutputArea-output", has_text=MARK).first
            try:
                run_all_until(page, probe_out, server)
            except BaseException:
                dialogs = page.locator(".jp-Dialog").all_inner_texts()
                if dialogs:
                    pytest.fail(f"a dialog blocked Run All: {dialogs!r}")
                raise
            probe = json.loads(probe_out.inner_text().split(MARK, 1)[1])
            widgets = probe["widgets"]
            # Widget views render asynchronously: wait until every one has its view.
            rendered = ("([sel, n]) => document.querySelectorAll(sel).length === n && "
                        "[...document.querySelectorAll(sel)].every("
                        "o => o.querySelector('.widget-html-content'))")
            try:
                page.wait_for_function(rendered, arg=[WIDGET_OUTPUT, len(widgets)])
            except Exception:        # playwright's TimeoutError: say what the page has
                pytest.fail(f"{len(widgets)} widgets displayed, the page rendered "
                            f"{page.locator(WIDGET_OUTPUT).count()} widget outputs, "
                            f"{page.locator('.widget-html-content').count()} views; "
                            f"errors {errors!r}")
            page.wait_for_timeout(300)                       # let fonts and layout settle
            seen = page.evaluate(INSPECT, WIDGET_OUTPUT)
            if widgets:
                first = page.locator(WIDGET_OUTPUT).first
                first.evaluate("e => e.scrollIntoView({block: 'start'})")
                page.wait_for_timeout(200)
                SHOTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(SHOTS / f"{path.stem}.png"))
            return probe, seen, errors
    finally:
        shut_kernels(base, token)


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_after_run_all_shows_what_its_text_says(lab, tmp_path, path):
    server = lab[2]
    try:
        probe, seen, errors = run_chapter(lab, tmp_path / "try1", path)
    except pytest.fail.Exception as first:
        # Under heavy load JupyterLab sometimes swaps the notebook's kernel while Run All
        # starts (server log: a second "Kernel started"), and the probe never prints.
        # That is the server's session handling, not the chapter: one fresh try, which
        # must then pass every check below.
        if "never appeared after Run All" not in str(first):
            raise
        probe, seen, errors = run_chapter(lab, tmp_path / "try2", path)
    widgets = probe["widgets"]
    assert probe["drift"] == [], "kernel reports drift:\n" + "\n".join(probe["drift"])
    problems = []
    for i, (want, got) in enumerate(zip(widgets, seen)):
        name = f"{path.stem} widget {i} ({want['class']})"
        if got["controls"] != want["controls"]:
            problems.append(f"{name}: page shows controls {got['controls']}, introduced "
                            f"{want['controls']}")
        if got["view"] != want["view"]:
            problems.append(f"{name}: page view differs from the introduced view:\n"
                            f"  page:       {got['view'][:300]!r}\n"
                            f"  introduced: {want['view'][:300]!r}")
        problems += [f"{name}: clipped {c}" for c in got["clipped"]]
    assert len(seen) == len(widgets), (len(seen), len(widgets))
    assert problems == [], "\n".join(problems)
    assert errors == [], "\n".join(errors) + "\n--- server log ---\n" + server.log_text()
