"""``make app`` serves the role explorer as a standalone Voilà page.

Started the way a teacher starts it (``make app``, extra options through the
Makefile's ``APP_ARGS``) on a free port with config/runtime dirs in a temporary
directory; the test waits (bounded) for the page to answer 200, checks that Voilà
executed the notebook (the explorer's HTML is in the page), and stops the process
group.  Fails with the server log if it never answers.
"""
from __future__ import annotations

import shutil
import urllib.request

import pytest

from conftest import free_port, jupyter_env, make_cmd, serve

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def test_make_app_serves_the_role_explorer(tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = make_cmd("app", "APP_ARGS", [f"--port={port}", "--Voila.open_browser=False"])
    with serve(cmd, env=jupyter_env(tmp_path), base=base, ready_path="/",
               log=tmp_path / "voila.log") as server:
        # Voilà runs the notebook before it answers; the rendered page holds the
        # widget's initial HTML model state and the printed text form.
        with urllib.request.urlopen(base + "/", timeout=60) as r:
            page = r.read().decode("utf-8", "replace")
            status = r.status
    assert status == 200, server.log_text()
    assert "cpu_role" in page and "root_role" in page, page[:2000]
    assert "no change yet" in page, "the explorer's text form is missing from the page"
