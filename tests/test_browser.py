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
errors.  It saves artifacts/browser/role_explorer.png (after the flip).

Skips, saying why, only when no ``chromium`` is on PATH.
"""
from __future__ import annotations

import shutil
import time

import pytest

from conftest import BIN, REPO, free_port, jupyter_env, lab_args, new_token, serve

CHROMIUM = shutil.which("chromium")
NOTEBOOK = "05_role_explorer.ipynb"
SCREENSHOT = REPO / "artifacts" / "browser" / "role_explorer.png"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--disable-dev-shm-usage", "--headless=new"]
#: Generous bounds for a slow 2-core machine; a healthy run needs about 10 s in all.
UI_TIMEOUT_MS = 60_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="no `chromium` on PATH: install Debian's "
                       "chromium (apt-get install chromium; .ci/run does) to run the browser test"),
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab over a temporary copy of notebooks/; yields (base url, token, root)."""
    tmp = tmp_path_factory.mktemp("lab")
    root = tmp / "notebooks"
    shutil.copytree(REPO / "notebooks", root,
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    port, token = free_port(), new_token()
    base = f"http://127.0.0.1:{port}"
    cmd = [str(BIN / "jupyter"), "lab", str(root), *lab_args(tmp, port, token)]
    with serve(cmd, env=jupyter_env(tmp), base=base, ready_path=f"/api/status?token={token}",
               log=tmp / "lab.log", cwd=tmp) as server:
        yield base, token, server


def run_all(page) -> None:
    """Run → Run All.  The menu command is ``runmenu:run-all`` in JupyterLab 4."""
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator("li.lm-Menu-item[data-command='runmenu:run-all']").click()


def run_all_until(page, locator, server, attempts: int = 2) -> None:
    """Run All, and wait for ``locator``.  On a loaded machine the kernel can still be
    starting when the toolbar first reads idle, and a Run All sent then may be lost:
    send it once more before failing, and fail with the notebook's error outputs and
    the server log, never a bare timeout."""
    for attempt in range(attempts):
        run_all(page)
        try:
            locator.wait_for(timeout=UI_TIMEOUT_MS // attempts)
            return
        except Exception:  # playwright's TimeoutError
            if attempt + 1 < attempts:
                page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for()
    errors = page.locator(".jp-OutputArea-output[data-mime-type*='stderr'], "
                          ".jp-RenderedText[data-mime-type*='error']").all_inner_texts()
    pytest.fail(f"{locator} never appeared after {attempts} Run All; error outputs: "
                f"{errors!r}\n--- server log ---\n{server.log_text()}")


def test_role_explorer_flips_cr0_wp_in_chromium(lab, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    base, token, server = lab
    started = time.monotonic()
    errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True,
            args=LAUNCH_ARGS, viewport={"width": 1400, "height": 1000})
        try:
            page = ctx.new_page()
            page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}")
                    if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            page.set_default_timeout(UI_TIMEOUT_MS)
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
        finally:
            ctx.close()
    print(f"\nbrowser test: {time.monotonic() - started:.1f} s in the browser; "
          f"screenshot {SCREENSHOT.relative_to(REPO)}")
    assert errors == [], "\n".join(errors) + "\n--- server log ---\n" + server.log_text()
