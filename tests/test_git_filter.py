"""A chapter a reader ran and saved leaves ``git status`` clean, and commits stay stripped.

In a temporary ``git clone`` of HEAD (commit first), with ``.venv`` pointing at the
environment running the tests, the filter is set up the way ``make setup`` does it
(``make git-filter``).  Chapter 05 (the role explorer) is then executed with nbclient and saved with its
outputs, execution counts and widget state -- what JupyterLab's Run All and Ctrl+S
write -- and:

* before the filter is set up, ``git status`` reports the notebook modified (so the
  check below can fail);
* with the filter, ``git status`` is clean and the staged blob equals HEAD's;
* a real edit (a markdown cell) made in the same run is staged and committed, and the
  committed blob has the edit and no outputs (tests/test_notebook_hygiene.py's check).
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest

from conftest import BIN, REPO, jupyter_env
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


def _run_and_save(path: Path, tmp: Path) -> None:
    """Execute the notebook top to bottom and save it with everything a run leaves."""
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(nb, kernel_name="python3", timeout=120, store_widget_state=True,
                            resources={"metadata": {"path": str(path.parent)}}).execute(
        env=jupyter_env(tmp))
    nbformat.write(nb, path)


@pytest.fixture
def clone(tmp_path) -> Path:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    (clone / ".venv").symlink_to(BIN.parent)
    return clone


def test_saved_run_chapter_leaves_git_status_clean(clone, tmp_path):
    path = clone / CHAPTER
    committed = _git(clone, "show", f"HEAD:{CHAPTER}")
    _run_and_save(path, tmp_path)
    ran = nbformat.read(path, as_version=4)
    assert "widgets" in ran.metadata and any(c.get("outputs") for c in ran.cells), \
        "the run left no outputs or widget state: this test would prove nothing"

    # Without the filter, git sees the outputs.
    assert _git(clone, "status", "--porcelain") == f" M {CHAPTER}\n"

    setup = subprocess.run(["make", "--no-print-directory", "-o", ".venv/.installed",
                            "git-filter"], cwd=clone, capture_output=True, text=True,
                           timeout=60)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    assert "nbstripout" in _git(clone, "config", "filter.nbstripout.clean")
    assert _git(clone, "status", "--porcelain") == ""
    _git(clone, "add", "-A")
    assert _git(clone, "show", f":{CHAPTER}") == committed
    # The working file still has the reader's outputs.
    assert any(c.get("outputs") for c in nbformat.read(path, as_version=4).cells)

    # A real edit in a run notebook is committed, stripped.
    ran.cells[0].source += "\n\nA reader's note."
    nbformat.write(ran, path)
    assert _git(clone, "status", "--porcelain") == f" M {CHAPTER}\n"
    _git(clone, "commit", "-q", "-am", "a note")
    blob = nbformat.reads(_git(clone, "show", f"HEAD:{CHAPTER}"), as_version=4)
    assert blob.cells[0].source.endswith("A reader's note.")
    assert notebook_problems(blob) == []
    assert _git(clone, "status", "--porcelain") == ""
