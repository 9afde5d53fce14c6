"""A chapter a reader ran and saved leaves ``git status`` clean; commits stay stripped.

In a temporary ``git clone`` of HEAD (commit first), with ``.venv`` pointing at the
environment running the tests:

* chapter 05 is executed with nbclient and written with its outputs, execution counts
  and widget state (what Run All and Ctrl+S leave); before the filter is set up,
  ``git status`` lists it as modified (so the checks below can fail);
* ``make git-filter`` (what ``make setup`` runs) sets up nbstripout: ``git diff`` is
  now empty and the staged blob is still HEAD's;
* ``make lab`` is started in the clone and the run notebook is saved through its
  contents API, as JupyterLab saves: ``git status`` is clean (the post-save hook of
  mmu/book/saving.py; without it git's size check keeps the file listed);
* resetting the chapter (``rm`` it, ``git checkout`` it) gives the committed file back;
* a real edit saved the same way shows as modified, is committed with ``commit -a``,
  and the committed blob has the edit and no outputs (test_notebook_hygiene's check).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from pathlib import Path

import nbformat
import pytest

from conftest import BIN, REPO, free_port, jupyter_env, lab_args, make_cmd, new_token, serve
from test_notebook_hygiene import notebook_problems

CHAPTER = "notebooks/05_role_explorer.ipynb"

pytestmark = pytest.mark.skipif(shutil.which("git") is None or shutil.which("make") is None,
                                reason="needs git and make")


def _git(clone: Path, *args: str) -> str:
    out = subprocess.run(["git", "-C", str(clone), "-c", "user.name=reader",
                          "-c", "user.email=reader@example.org", *args],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"git {' '.join(args)}: {out.stderr}"
    return out.stdout


def _run(path: Path, tmp: Path) -> nbformat.NotebookNode:
    """The notebook executed top to bottom, with everything a run leaves."""
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(nb, kernel_name="python3", timeout=120, store_widget_state=True,
                            resources={"metadata": {"path": str(path.parent)}}).execute(
        env=jupyter_env(tmp))
    assert "widgets" in nb.metadata and any(c.get("outputs") for c in nb.cells), \
        "the run left no outputs or widget state: this test would prove nothing"
    return nb


def _save(base: str, token: str, nb: nbformat.NotebookNode) -> None:
    """PUT /api/contents/<path>: the request JupyterLab sends on Ctrl+S and autosave."""
    body = json.dumps({"type": "notebook", "format": "json", "content": nb}).encode()
    req = urllib.request.Request(f"{base}/api/contents/{CHAPTER}?token={token}", data=body,
                                 method="PUT", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.status == 200


@pytest.fixture
def clone(tmp_path) -> Path:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    (clone / ".venv").symlink_to(BIN.parent)
    return clone


def test_saved_run_chapter_leaves_git_status_clean(clone, tmp_path):
    path = clone / CHAPTER
    committed = _git(clone, "show", f"HEAD:{CHAPTER}")
    ran = _run(path, tmp_path)
    nbformat.write(ran, path)
    # Without the filter, git sees the outputs.
    assert _git(clone, "status", "--porcelain") == f" M {CHAPTER}\n"
    assert _git(clone, "diff", "--numstat") != ""

    setup = subprocess.run(["make", "--no-print-directory", "-o", ".venv/.installed",
                            "git-filter"], cwd=clone, capture_output=True, text=True,
                           timeout=60)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    assert "nbstripout" in _git(clone, "config", "filter.nbstripout.clean")
    assert _git(clone, "diff", "--numstat") == ""
    assert _git(clone, "show", f":{CHAPTER}") == committed
    # ...yet git's stat cache (the file size changed) still lists it: the hook's job.
    assert _git(clone, "status", "--porcelain") == f" M {CHAPTER}\n"

    port, token = free_port(), new_token()
    base = f"http://127.0.0.1:{port}"
    cmd = make_cmd("lab", "LAB_ARGS", lab_args(tmp_path, port, token, allow_root=False))
    with serve(cmd, env=jupyter_env(tmp_path), base=base, cwd=clone,
               ready_path=f"/api/status?token={token}", log=tmp_path / "lab.log") as server:
        _save(base, token, ran)
        assert _git(clone, "status", "--porcelain") == "", server.log_text()
        assert _git(clone, "show", f":{CHAPTER}") == committed
        # The working file keeps the reader's outputs...
        assert any(c.get("outputs") for c in nbformat.read(path, as_version=4).cells)
        # ...until the reader resets the chapter as README and chapter 00 say.  (A bare
        # `git checkout -- <file>` would not: git now takes the file as up to date.)
        path.unlink()
        _git(clone, "checkout", "--", CHAPTER)
        assert path.read_text("utf-8") == committed
        assert _git(clone, "status", "--porcelain") == ""

        # A real edit in a run notebook shows, and is committed stripped.
        ran.cells[0].source += "\n\nA reader's note."
        _save(base, token, ran)
        assert _git(clone, "status", "--porcelain") == f" M {CHAPTER}\n"
    _git(clone, "commit", "-q", "-am", "a note")
    blob = nbformat.reads(_git(clone, "show", f"HEAD:{CHAPTER}"), as_version=4)
    assert blob.cells[0].source.endswith("A reader's note.")
    assert notebook_problems(blob) == []
    assert _git(clone, "status", "--porcelain") == ""
