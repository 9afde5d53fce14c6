"""``make lab`` starts a JupyterLab that serves the textbook.

The server is started exactly as a student starts it (``make lab``), with extra
options passed through the Makefile's ``LAB_ARGS``: no browser, 127.0.0.1, a free
port, a random token, config and runtime dirs in a temporary directory -- and *no*
``--allow-root``: the Makefile adds it itself when it runs as root (containers, CI),
which is how this test runs there.  It runs in a temporary copy of the repository's
Makefile, notebooks/ and exercises/ with student copies made by ``make student``
(exercises/README.md sends students to ``student/``).

The test waits (bounded) for ``GET /api/status`` to answer 200, checks that the served
root is the repository (notebooks/, exercises/ and student/ are reachable),
that ``/`` opens the book's start page, and stops the process group.  When the server
never answers it fails and shows the server's log.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request

import pytest

from conftest import BIN, REPO, jupyter_env, lab_args, make_cmd, new_token, free_port, serve

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")

START_PAGE = "notebooks/00_start_here.ipynb"


def _api(base: str, path: str, token: str) -> dict:
    with urllib.request.urlopen(f"{base}/api/contents/{path}?token={token}", timeout=10) as r:
        return json.load(r)


@pytest.fixture
def root(tmp_path):
    """A copy of what ``make lab`` serves, with ``make student`` run in it."""
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy(REPO / "Makefile", root)
    for d in ("notebooks", "exercises"):
        shutil.copytree(REPO / d, root / d, ignore=shutil.ignore_patterns(
            ".ipynb_checkpoints", "student", "__pycache__"))
    run = subprocess.run(["make", "--no-print-directory", "-o", ".venv/.installed", "student",
                          f"BIN={BIN}"], cwd=root, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert list((root / "student").glob("*.ipynb"))
    return root


def test_make_lab_serves_the_repository(tmp_path, root):
    port, token = free_port(), new_token()
    base = f"http://127.0.0.1:{port}"
    cmd = make_cmd("lab", "LAB_ARGS", lab_args(tmp_path, port, token, allow_root=False))
    with serve(cmd, env=jupyter_env(tmp_path), base=base, ready_path=f"/api/status?token={token}",
               log=tmp_path / "lab.log", cwd=root) as server:
        assert server.get(f"/lab?token={token}") == 200, server.log_text()
        # Without the token the API must refuse: the server is not open to anyone.
        assert server.get("/api/contents") == 403
        top = {item["name"] for item in _api(base, "", token)["content"]}
        student = {item["name"] for item in _api(base, "student", token)["content"]}
        assert _api(base, START_PAGE, token)["type"] == "notebook"
        # "/" sends the browser to the start page (the URL the server prints, too).
        opener = urllib.request.build_opener(_NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as redirect:
            opener.open(f"{base}/?token={token}", timeout=10)
        log = server.log_text()
    assert redirect.value.code == 302
    assert redirect.value.headers["Location"].startswith(f"/lab/tree/{START_PAGE}")
    assert f"/lab/tree/{START_PAGE}?token=" in log
    assert {"notebooks", "exercises", "Makefile"} <= top, f"served root: {sorted(top)}"
    assert {p.name for p in (root / "student").glob("*.ipynb")} <= student
    # The process group is gone: nothing keeps the port.
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{base}/api/status", timeout=2)


@pytest.mark.parametrize("uid, flagged", [("0", True), ("1000", False)])
def test_allow_root_only_as_root(tmp_path, uid, flagged):
    """``make -n lab`` with an ``id`` that answers ``uid``: --allow-root appears for
    root only (Jupyter refuses to run as root without it, and warns about it otherwise)."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    (fake / "id").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run(["make", "-n", "--no-print-directory", "-o", ".venv/.installed", "lab"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert ("--allow-root" in out.stdout) is flagged, out.stdout
    assert f"--LabApp.default_url=/lab/tree/{START_PAGE}" in out.stdout


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None
