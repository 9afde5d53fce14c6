"""``make lab`` starts a JupyterLab that serves the textbook.

The server is started exactly as a student starts it (``make lab``), with extra
options passed through the Makefile's ``LAB_ARGS``: no browser, 127.0.0.1, a free
port, a random token, config and runtime dirs in a temporary directory.  The test
waits (bounded) for ``GET /api/status`` to answer 200, checks that the served root
is notebooks/, and stops the process group.  When the server never answers it
fails and shows the server's log.
"""
from __future__ import annotations

import json
import shutil
import urllib.request

import pytest

from conftest import REPO, jupyter_env, lab_args, make_cmd, new_token, free_port, serve

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def test_make_lab_serves_the_notebooks(tmp_path):
    port, token = free_port(), new_token()
    base = f"http://127.0.0.1:{port}"
    cmd = make_cmd("lab", "LAB_ARGS", lab_args(tmp_path, port, token))
    with serve(cmd, env=jupyter_env(tmp_path), base=base, ready_path=f"/api/status?token={token}",
               log=tmp_path / "lab.log") as server:
        assert server.get(f"/lab?token={token}") == 200, server.log_text()
        # Without the token the API must refuse: the server is not open to anyone.
        assert server.get("/api/contents") == 403
        with urllib.request.urlopen(f"{base}/api/contents?token={token}", timeout=10) as r:
            listing = json.load(r)
    served = {item["name"] for item in listing["content"]}
    expected = {p.name for p in (REPO / "notebooks").iterdir() if not p.name.startswith(".")}
    assert expected <= served, f"served root is not notebooks/: {sorted(served)}"
    assert "pyproject.toml" not in served
    # The process group is gone: nothing keeps the port.
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{base}/api/status", timeout=2)
