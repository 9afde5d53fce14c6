"""What every real-browser test shares: Debian's chromium through Playwright.

Playwright for Python drives Debian's ``chromium`` (``executable_path``; ``playwright
install`` cannot download browsers here) with the launch arguments of
jupyter-tooling.md §2.  Tests that use it are marked ``browser`` and skip, saying why,
only when no ``chromium`` is on PATH (``needs_chromium``).

* ``browser_page(tmp_path)`` -- a context manager giving a fresh page in a fresh profile
  and the list into which console errors and page errors are collected;
* ``run_all`` / ``run_all_until`` -- JupyterLab's Run → Run All, with one retry when the
  kernel was still starting;
* ``choose`` -- pick an option of an ipywidgets Dropdown (a ``<select>``) by its label;
* ``serve_lab(tmp)`` -- JupyterLab over a temporary copy of notebooks/ (Lab autosaves
  into what it opens), quiet and token-protected, optionally with settings overrides.
"""
from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Iterator

import pytest

CHROMIUM = shutil.which("chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--disable-dev-shm-usage", "--headless=new"]
#: Generous bounds for a slow 2-core machine; a healthy run needs about 10 s in all.
UI_TIMEOUT_MS = 60_000

needs_chromium = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="no `chromium` on PATH: install Debian's "
                       "chromium (apt-get install chromium; .ci/run does) to run the browser test"),
]


@contextlib.contextmanager
def browser_page(tmp_path: Path, viewport=(1400, 1000), extra_args: tuple[str, ...] = ()
                 ) -> Iterator[tuple[object, list[str]]]:
    """A new page in a fresh Chromium profile; yields (page, errors).

    ``errors`` collects console errors and uncaught page errors as text, so a test can
    end with ``assert errors == []``.  ``extra_args`` go to Chromium after LAUNCH_ARGS."""
    sync_api = pytest.importorskip("playwright.sync_api")
    errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True,
            args=[*LAUNCH_ARGS, *extra_args], viewport={"width": viewport[0], "height": viewport[1]})
        try:
            page = ctx.new_page()
            page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}")
                    if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            page.set_default_timeout(UI_TIMEOUT_MS)
            yield page, errors
        finally:
            ctx.close()


def run_all(page) -> None:
    """Run → Run All.  The menu command is ``runmenu:run-all`` in JupyterLab 4."""
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator("li.lm-Menu-item[data-command='runmenu:run-all']").click()


#: True once some cell's prompt reads [*] (queued/running) or [n] (ran).
_CELLS_STARTED = ("() => [...document.querySelectorAll('.jp-InputPrompt')]"
                  ".some(p => /\\[(\\*|\\d+)\\]/.test(p.textContent))")


def run_all_until(page, locator, server, attempts: int = 2,
                  timeout_ms: int = 3 * UI_TIMEOUT_MS) -> None:
    """Run All, and wait (up to ``timeout_ms``) for ``locator``.  On a loaded machine the
    kernel can still be starting when the toolbar first reads idle, and a Run All sent
    then is lost: send it again only if no cell has started -- a second Run All while the
    first still runs would execute the notebook twice.  Fails with the notebook's error
    outputs and the server log, never a bare timeout."""
    for attempt in range(attempts):
        run_all(page)
        try:
            page.wait_for_function(_CELLS_STARTED, timeout=UI_TIMEOUT_MS // 2)
            break
        except Exception:  # playwright's TimeoutError: the Run All was lost
            page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for()
    try:
        locator.wait_for(timeout=timeout_ms)
        return
    except Exception:  # playwright's TimeoutError
        pass
    errors = page.locator(".jp-OutputArea-output[data-mime-type*='stderr'], "
                          ".jp-RenderedText[data-mime-type*='error']").all_inner_texts()
    pytest.fail(f"{locator} never appeared after Run All; error outputs: "
                f"{errors!r}\n--- server log ---\n{server.log_text()}")


@contextlib.contextmanager
def serve_lab(tmp: Path, overrides: dict | None = None, prepare=None):
    """JupyterLab over a temporary copy of notebooks/ (Lab autosaves into what it opens);
    yields (base url, token, server).  ``prepare(root)`` may change the copy first;
    ``overrides`` are added to the settings overrides.json (e.g. the windowing mode)."""
    from conftest import (BIN, REPO, free_port, jupyter_env, lab_args, lab_settings_dir,
                          new_token, serve)
    root = tmp / "notebooks"
    shutil.copytree(REPO / "notebooks", root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    if prepare is not None:
        prepare(root)
    port, token = free_port(), new_token()
    base = f"http://127.0.0.1:{port}"
    args = lab_args(tmp, port, token)
    if overrides:
        path = lab_settings_dir(tmp) / "overrides.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **overrides}))
    cmd = [str(BIN / "jupyter"), "lab", str(root), *args]
    with serve(cmd, env=jupyter_env(tmp), base=base, ready_path=f"/api/status?token={token}",
               log=tmp / "lab.log", cwd=tmp) as server:
        yield base, token, server


def choose(page, scope: str, label: str) -> None:
    """Select the option labelled ``label`` in the first ipywidgets Dropdown inside the
    element matched by CSS ``scope`` that offers it (the widget renders a ``<select>``)."""
    select = page.locator(f"{scope} select", has=page.locator("option", has_text=label)).first
    select.scroll_into_view_if_needed()
    select.select_option(label=label)
