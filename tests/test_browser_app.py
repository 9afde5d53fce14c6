"""The ``make app`` page in Chromium at a projector's 1280×720: what the class sees.

``make app`` is started with ``KERNEL_CULL_S=4`` (the Makefile's culling, shortened so
the test does not wait half a minute).  In a 1280×720 page the test checks that

* the explorer's controls, its root verdict (``.root-outcome``) and every row a click
  marks ``▲ changed`` lie inside the first screen, with the page not scrolled: after
  unticking CR0.WP (a ``cpu_role`` row) and, with shadow paging, flipping CR0.WP again
  (``root_role`` rows too);
* every request the page makes, websockets included, goes to the server on 127.0.0.1
  (Voilà's stock template fetches Font Awesome from cdn.jsdelivr.net);
* the console logs no errors;
* the page's kernel outlives several cull intervals while the page is open, and is
  shut down once the page is closed (the server logs ``Kernel shutdown: <id>``).

It saves artifacts/browser/app_1280x720.png (after the shadow-paging flip).
"""
from __future__ import annotations

import json
import time

import pytest

from browser_support import browser_page, needs_chromium
from conftest import REPO, free_port, jupyter_env, make_cmd, serve

pytestmark = needs_chromium

VIEWPORT = (1280, 720)
CULL_S = 4
SCREENSHOT = REPO / "artifacts" / "browser" / "app_1280x720.png"

#: Bottom edges (px) of what must be on the first screen; the page must not be scrolled.
_BOTTOMS = """() => {
  const bottom = s => [...document.querySelectorAll(s)].map(e => e.getBoundingClientRect().bottom);
  return {scrollY: window.scrollY, width: [document.documentElement.scrollWidth], controls: bottom('.role-explorer input, .role-explorer select'),
          outcome: bottom('.root-outcome'), changed: bottom('.role-view tr.changed'),
          tables: bottom('.role-view table.cpu-role, .role-view table.root-role')};
}"""


def _on_first_screen(page, min_changed: int) -> dict:
    box = page.evaluate(_BOTTOMS)
    assert box["scrollY"] == 0
    assert len(box["controls"]) >= 15 and len(box["outcome"]) == 1, box
    assert len(box["changed"]) >= min_changed, box
    assert box["width"] == [VIEWPORT[0]], f"the page is wider than {VIEWPORT[0]} px: {box}"
    below = {k: [b for b in v if b > VIEWPORT[1]] for k, v in box.items()
             if k not in ("scrollY", "width")}
    assert not any(below.values()), f"below the fold at {VIEWPORT}: {below}"
    return box


def _kernel_shutdown(server, kernel_id: str) -> bool:
    return f"Kernel shutdown: {kernel_id}" in server.log_text()


def test_app_page_fits_a_projector_and_stays_local(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = make_cmd("app", "APP_ARGS", [f"--port={port}"]) + [f"KERNEL_CULL_S={CULL_S}"]
    with serve(cmd, env=jupyter_env(tmp_path), base=base, ready_path="/voila/static/voila.js",
               log=tmp_path / "voila.log") as server:
        with browser_page(tmp_path, viewport=VIEWPORT) as (page, errors):
            urls: list[str] = []
            page.on("request", lambda r: urls.append(r.url))
            page.on("websocket", lambda ws: urls.append(ws.url))
            page.goto(base + "/")
            outcome = page.locator(".root-outcome")
            sync_api.expect(outcome).to_contain_text("no change yet")
            config = json.loads(page.locator("#jupyter-config-data").text_content())
            kernel_id = config["kernelId"]
            _on_first_screen(page, min_changed=0)

            page.get_by_role("checkbox", name="CR0.WP").uncheck()
            sync_api.expect(page.locator(".role-view tr.changed", has_text="base.cr0_wp")
                            ).to_have_count(1)
            _on_first_screen(page, min_changed=1)

            # Shadow paging: a CR0.WP flip changes rows in both tables.
            page.get_by_role("checkbox", name="TDP (EPT/NPT)").uncheck()
            sync_api.expect(outcome).to_contain_text("Root")
            page.get_by_role("checkbox", name="CR0.WP").check()
            sync_api.expect(page.locator(".role-view table.root-role tr.changed",
                                         has_text="cr0_wp")).to_have_count(1)
            box = _on_first_screen(page, min_changed=2)
            page.wait_for_timeout(300)
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT))

            # An open page keeps its kernel through several cull intervals.
            page.wait_for_timeout((CULL_S + 8) * 1000)
            assert not _kernel_shutdown(server, kernel_id), server.log_text()
            page.get_by_role("checkbox", name="CR0.WP").uncheck()
            sync_api.expect(page.locator(".role-view tr.changed", has_text="base.cr0_wp")
                            ).to_have_count(1)
            assert errors == []
            page.close()

        deadline = time.monotonic() + CULL_S + 30
        while not _kernel_shutdown(server, kernel_id) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _kernel_shutdown(server, kernel_id), \
            f"kernel {kernel_id} still running after its page closed\n{server.log_text()}"
    foreign = [u for u in urls if not u.startswith((base, f"ws://127.0.0.1:{port}/",
                                                     "data:", "blob:"))]
    assert urls and foreign == [], foreign
    print(f"\napp page: {len(urls)} requests, all to 127.0.0.1:{port}; changed rows end "
          f"at y={max(box['changed']):.0f} of {VIEWPORT[1]}; screenshot "
          f"{SCREENSHOT.relative_to(REPO)}")
