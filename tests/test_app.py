"""``make app`` serves the role explorer as a standalone Voilà page for projection.

Started the way a teacher starts it (``make app``, extra options through the
Makefile's ``APP_ARGS``) on a free port with config/runtime dirs in a temporary
directory; the test waits (bounded) for the page to answer 200 and checks what the
server sent: the page of app/role_explorer.ipynb (the explorer, and none of chapter
05's check cells or their leftovers), no reference to any other host (Voilà's lab
template links Font Awesome from a CDN; the projector template drops it), and kernel
culling switched on.  tests/test_browser_app.py looks at the page in Chromium.
Fails with the server log if it never answers.
"""
from __future__ import annotations

import re
import shutil
import urllib.request

import nbformat
import pytest

from conftest import REPO, free_port, jupyter_env, make_cmd, serve

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")

APP_PAGE = REPO / "app" / "role_explorer.ipynb"
#: Text only chapter 05's check cells and their introductions print or say.
CHAPTER_05_LEFTOVERS = ("outcomes as in the table above", "the browser test looks for",
                        "## Checks", "Things to try")
_URL = re.compile(r"""(?:src|href)\s*=\s*["']([a-z][a-z0-9+.-]*:)?//([^/"']+)""", re.I)


def external_hosts(html: str, allowed: str) -> set[str]:
    """Hosts other than ``allowed`` that a page's src/href attributes name."""
    return {m.group(2) for m in _URL.finditer(html) if m.group(2) != allowed}


def test_external_hosts_finds_a_cdn_link():
    page = ('<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/x.css"/>'
            '<script src="http://127.0.0.1:8866/voila/static/voila.js"></script>'
            '<img src="/static/a.png"><a href="//example.org/x">')
    assert external_hosts(page, "127.0.0.1:8866") == {"cdn.jsdelivr.net", "example.org"}


def test_app_page_is_the_explorer_alone():
    nb = nbformat.read(APP_PAGE, as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert len(code) == 1 and "RoleExplorer(" in code[0]
    assert not any("assert" in src for src in code)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("app")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = make_cmd("app", "APP_ARGS", [f"--port={port}", "--Voila.open_browser=False"])
    with serve(cmd, env=jupyter_env(tmp), base=base, ready_path="/voila/static/voila.js",
               log=tmp / "voila.log") as server:
        # Voilà runs the notebook while it streams the page.
        with urllib.request.urlopen(base + "/", timeout=120) as r:
            page = r.read().decode("utf-8", "replace")
            status = r.status
        yield port, status, page, server.log_text()


def test_make_app_serves_the_role_explorer(served):
    _, status, page, log = served
    assert status == 200, log
    assert "cpu_role" in page and "root_role" in page, page[:2000]
    # Voilà executed the notebook: the explorer's widget view is among the outputs.
    assert page.count("application/vnd.jupyter.widget-view+json") == 1, log
    for text in CHAPTER_05_LEFTOVERS:
        assert text not in page, f"{text!r} from chapter 05 is on the app page"


def test_app_page_names_no_other_host(served):
    port, _, page, _ = served
    assert external_hosts(page, f"127.0.0.1:{port}") == set()
    assert "cdn.jsdelivr.net" not in page


def test_idle_kernels_are_culled(served):
    log = served[3]
    assert re.search(r"Culling kernels with idle durations > \d+ seconds", log), log
