"""The role explorer works in a real browser: headless Chromium drives JupyterLab.

Playwright for Python with Debian's ``chromium`` (``executable_path``; no
``playwright install``), launch arguments from jupyter-tooling.md §2.  JupyterLab
runs on 127.0.0.1 with a random token over a *temporary copy* of notebooks/ (Lab
autosaves into the files it opens), with config/runtime dirs in the temp dir and an
overrides.json that stops the "Jupyter news?" toast.

The test opens 05_role_explorer.ipynb with ``&reset`` (no saved workspace), runs
Run → Run All (menu command ``runmenu:run-all``), waits for the explorer, ticks off
the CR0.WP checkbox *in the page*, and checks that the role view and the root-outcome
indicator change, that the text says cr0_wp changed, and that the console logged no
errors.  It saves artifacts/browser/role_explorer.png (after the flip).  Then it
chooses Linux 6.18, ticks CR0.WP again and ticks CR4.CET (enabled only on 6.18): the
outcome must be "no VM exit at all" (CR4.CET is guest-owned on 6.18's VMX and is no role
bit) and the role tables must show 6.18's is_mirror row; artifacts/browser/role_explorer_cet.png.

Skips, saying why, only when no ``chromium`` is on PATH.
"""
from __future__ import annotations

import time

import pytest

from browser_support import browser_page, choose, needs_chromium, run_all_until, serve_lab
from conftest import REPO

NOTEBOOK = "05_role_explorer.ipynb"
SCREENSHOT = REPO / "artifacts" / "browser" / "role_explorer.png"
SCREENSHOT_CET = REPO / "artifacts" / "browser" / "role_explorer_cet.png"

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab over a temporary copy of notebooks/; yields (base url, token, server)."""
    with serve_lab(tmp_path_factory.mktemp("lab")) as running:
        yield running


def test_role_explorer_flips_cr0_wp_in_chromium(lab, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    base, token, server = lab
    started = time.monotonic()
    with browser_page(tmp_path) as (page, errors):
        page.goto(f"{base}/lab/tree/{NOTEBOOK}?token={token}&reset")
        page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for()
        view = page.locator(".role-view").first
        outcome = page.locator(".root-outcome").first
        checkbox = page.get_by_role("checkbox", name="CR0.WP").first
        run_all_until(page, view, server)
        sync_api.expect(checkbox).to_be_checked()
        sync_api.expect(outcome).to_contain_text("no change")
        before_view, before_outcome = view.inner_text(), outcome.inner_text()

        checkbox.scroll_into_view_if_needed()
        checkbox.uncheck()
        sync_api.expect(outcome).not_to_have_text(before_outcome)
        sync_api.expect(view).to_contain_text("▲ changed")
        after_view = view.inner_text()
        assert after_view != before_view
        # The CR0.WP row now reads "1 0 ▲ changed" (before, now, marker).
        row = page.locator(".role-view tr", has_text="base.cr0_wp").first
        sync_api.expect(row).to_contain_text("▲ changed")
        page.wait_for_timeout(300)          # let the layout settle for the picture
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        # Controls (CR0.WP now unticked) and the outcome box at the top of the picture.
        page.locator(".role-explorer").first.evaluate(
            "e => e.scrollIntoView({block: 'start'})")
        page.wait_for_timeout(200)
        page.screenshot(path=str(SCREENSHOT))

        # One CET toggle on 6.18: the box is disabled on 6.4 and enabled on 6.18.
        cet = page.get_by_role("checkbox", name="CR4.CET").first
        sync_api.expect(cet).to_be_disabled()
        choose(page, ".role-explorer", "Linux 6.18")
        sync_api.expect(outcome).to_have_attribute("data-outcome", "new-vm")
        sync_api.expect(cet).to_be_enabled()
        checkbox.check()                              # CR4.CET needs CR0.WP=1
        sync_api.expect(outcome).to_have_attribute("data-outcome", "no-exit")
        cet.check()
        sync_api.expect(view).to_contain_text("MOV to CR4")
        sync_api.expect(outcome).to_have_attribute("data-outcome", "no-exit")
        sync_api.expect(outcome).to_contain_text("no VM exit at all")
        sync_api.expect(page.locator(".role-view tr", has_text="is_mirror").first
                        ).to_contain_text("= same")
        page.locator(".role-explorer").first.evaluate(
            "e => e.scrollIntoView({block: 'start'})")
        page.wait_for_timeout(200)
        page.screenshot(path=str(SCREENSHOT_CET))
    print(f"\nbrowser test: {time.monotonic() - started:.1f} s in the browser; "
          f"screenshots {SCREENSHOT.relative_to(REPO)}, {SCREENSHOT_CET.relative_to(REPO)}")
    assert errors == [], "\n".join(errors) + "\n--- server log ---\n" + server.log_text()
