"""Every committed notebook follows docs/notebooks.md, as git holds it.

What is checked is what a commit contains: the blob in git's index (staged) and in
HEAD, which the nbstripout filter (``make setup``, ``.gitattributes``) has stripped.
The working file may hold a reader's outputs after Run All and save; that must not fail
the suite.  A notebook git does not track yet (or a checkout without git) is checked
on disk.  tests/test_git_filter.py checks the filter itself in a temporary clone.

For each .ipynb under notebooks/, exercises/ and app/ (not exercises/student/, which is
generated, nor .ipynb_checkpoints/): valid nbformat 4; no outputs and no execution
counts (stale outputs lie, and nbval's lax mode relies on it); no widget state
(``metadata.widgets``: GitHub refuses to render it without the state); the first
cell is a markdown title with the notebook's only H1; headings never skip a level.

``notebook_problems`` is also run on deliberately bad copies, so the test can fail.
"""
from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from conftest import REPO

SOURCE_DIRS = ("notebooks", "exercises", "app")


def committed_notebooks(root: Path = REPO) -> list[Path]:
    """The notebooks that are sources of the book (what pytest's nbval collects)."""
    found = []
    for d in SOURCE_DIRS:
        for p in sorted((root / d).rglob("*.ipynb")):
            rel = p.relative_to(root).parts
            if any(part.startswith(".") for part in rel) or rel[:2] == ("exercises", "student"):
                continue
            found.append(p)
    return found


_FENCE = re.compile(r"^\s*(```|~~~)")
_ATX = re.compile(r"^ {0,3}(#{1,6})(?:\s|$)")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)\s*$")
#: A line that can be the text of a setext heading: not blank, not a heading,
#: list item, quote, table row or HTML block.
_PARAGRAPH = re.compile(r"^ {0,3}(?![#>*+|<-]|\d+[.)]\s)\S")
_HTML_H = re.compile(r"<h([1-6])[\s>]", re.IGNORECASE)


def headings(markdown: str) -> list[int]:
    """Heading levels in a markdown cell, in order (ATX, setext and <hN>),
    ignoring fenced code blocks."""
    levels: list[int] = []
    in_fence = False
    prev = ""
    for line in markdown.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
            prev = ""
            continue
        if in_fence:
            continue
        m = _ATX.match(line)
        if m:
            levels.append(len(m.group(1)))
        elif _SETEXT.match(line) and _PARAGRAPH.match(prev):
            levels.append(1 if "=" in line else 2)
        levels += [int(h) for h in _HTML_H.findall(line)]
        prev = line
    return levels


def notebook_problems(nb) -> list[str]:
    """Everything wrong with a notebook node, one sentence each (empty = clean)."""
    problems = []
    try:
        nbformat.validate(nb)
    except nbformat.ValidationError as e:
        problems.append(f"invalid nbformat: {e.message}")
    if nb.get("nbformat") != 4:
        problems.append(f"nbformat {nb.get('nbformat')}, expected 4")
    if "widgets" in nb.get("metadata", {}):
        problems.append("metadata.widgets (saved widget state) must be removed")
    all_levels: list[tuple[int, int]] = []
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") == "code":
            if cell.get("outputs"):
                problems.append(f"cell {i} has outputs")
            if cell.get("execution_count") is not None:
                problems.append(f"cell {i} has execution_count {cell['execution_count']}")
        if "widgets" in cell.get("metadata", {}):
            problems.append(f"cell {i} has widget metadata")
        if cell.get("cell_type") == "markdown":
            all_levels += [(i, lv) for lv in headings(cell.get("source", ""))]
    h1 = [i for i, lv in all_levels if lv == 1]
    if len(h1) != 1:
        problems.append(f"{len(h1)} H1 headings (cells {h1}); exactly one title is allowed")
    cells = nb.get("cells", [])
    if not cells or cells[0].get("cell_type") != "markdown" or 1 not in headings(
            cells[0].get("source", "")):
        problems.append("the first cell must be a markdown cell holding the H1 title")
    prev = 0
    for i, lv in all_levels:
        if lv > prev + 1:
            problems.append(f"cell {i}: heading level {lv} follows level {prev} (skips a level)")
        prev = lv
    return problems


def git_blobs(path: Path, root: Path = REPO) -> dict[str, str]:
    """{where: text} of ``path`` as git holds it: ``index`` (what the next commit
    takes) and ``HEAD`` (the last commit), each only where git has it.  Empty when the
    file is untracked or git (or the repository) is missing."""
    rel = path.relative_to(root).as_posix()
    blobs: dict[str, str] = {}
    for where, spec in (("index", f":{rel}"), ("HEAD", f"HEAD:{rel}")):
        try:
            out = subprocess.run(["git", "-C", str(root), "show", spec],
                                 capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return {}
        if out.returncode == 0:
            blobs[where] = out.stdout.decode("utf-8")
    return blobs


NOTEBOOKS = committed_notebooks()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[str(p.relative_to(REPO)) for p in NOTEBOOKS])
def test_committed_notebook_is_clean(path):
    rel = path.relative_to(REPO)
    versions = git_blobs(path) or {"working file (not tracked by git)": path.read_text("utf-8")}
    for where, text in versions.items():
        nb = nbformat.reads(text, as_version=nbformat.NO_CONVERT)
        assert notebook_problems(nb) == [], (
            f"{rel} ({where}); set up the output filter with `make git-filter` and "
            f"stage it again (docs/notebooks.md)")


def test_blobs_are_read_from_git_not_the_working_file(tmp_path):
    """A repository whose committed notebook is clean while the working file has outputs:
    ``git_blobs`` returns the committed text; an untracked file gives nothing."""
    if shutil.which("git") is None:
        pytest.skip("needs git")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    nb_path = tmp_path / "notebooks" / "a.ipynb"
    nb_path.parent.mkdir()
    nbformat.write(_good(), nb_path)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "clean"], check=True)
    ran = _good()
    ran.cells[2].execution_count = 1
    ran.cells[2].outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    nbformat.write(ran, nb_path)
    blobs = git_blobs(nb_path, tmp_path)
    assert set(blobs) == {"index", "HEAD"}
    assert all(notebook_problems(nbformat.reads(t, as_version=4)) == [] for t in blobs.values())
    # Staged without a filter, the outputs reach the index and are reported there.
    subprocess.run([*git, "add", "-A"], check=True)
    staged = nbformat.reads(git_blobs(nb_path, tmp_path)["index"], as_version=4)
    assert notebook_problems(staged) == ["cell 2 has outputs", "cell 2 has execution_count 1"]
    untracked = tmp_path / "notebooks" / "b.ipynb"
    nbformat.write(_good(), untracked)
    assert git_blobs(untracked, tmp_path) == {}


# ---- the check itself, on good and bad copies ---------------------------------

def _good() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# Title\n\nWhat you will see:\n\n* a thing"),
                nbformat.v4.new_markdown_cell("## Part\n\n```\n# not a heading\n```\n### Sub"),
                nbformat.v4.new_code_cell("x = 1")]
    return nb


def test_clean_notebook_passes():
    assert notebook_problems(_good()) == []


def _with(change) -> list[str]:
    nb = copy.deepcopy(_good())
    change(nb)
    return notebook_problems(nb)


def test_outputs_and_counts_are_reported():
    def run(nb):
        nb.cells[2].execution_count = 3
        nb.cells[2].outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    assert _with(run) == ["cell 2 has outputs", "cell 2 has execution_count 3"]


def test_widget_state_is_reported():
    def save_widgets(nb):
        nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {
            "state": {}, "version_major": 2, "version_minor": 0}}
    assert "metadata.widgets (saved widget state) must be removed" in _with(save_widgets)


def test_heading_rules_are_reported():
    def second_h1(nb):
        nb.cells.append(nbformat.v4.new_markdown_cell("Another\n======="))
    assert _with(second_h1) == ["2 H1 headings (cells [0, 3]); exactly one title is allowed"]

    def no_title(nb):
        nb.cells[0].source = "Just text"
    assert _with(no_title)[:2] == ["0 H1 headings (cells []); exactly one title is allowed",
                                   "the first cell must be a markdown cell holding the H1 title"]

    def skip(nb):
        nb.cells[1].source = "#### Too deep"
    assert _with(skip) == ["cell 1: heading level 4 follows level 1 (skips a level)"]

    def html_h1(nb):
        nb.cells[1].source = "<h1>Second title</h1>"
    assert "2 H1 headings (cells [0, 1]); exactly one title is allowed" in _with(html_h1)


def test_invalid_nbformat_is_reported():
    def break_it(nb):
        nb.cells[2]["source_code"] = nb.cells[2].pop("source")
    assert any(p.startswith("invalid nbformat") for p in _with(break_it))


def test_student_copies_and_checkpoints_are_not_sources(tmp_path):
    """Both the list above and pytest's own collection (pyproject's norecursedirs)
    leave out exercises/student/ and .ipynb_checkpoints/."""
    for rel in ("notebooks/01_x.ipynb", "notebooks/.ipynb_checkpoints/01_x-checkpoint.ipynb",
                "exercises/lab.ipynb", "exercises/student/lab.ipynb"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(_good(), p)
    (tmp_path / "tests").mkdir()
    (tmp_path / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text())
    assert [p.relative_to(tmp_path).as_posix() for p in committed_notebooks(tmp_path)] == \
        ["notebooks/01_x.ipynb", "exercises/lab.ipynb"]
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                          "-p", "no:cacheprovider"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    collected = {line.split("::")[0] for line in out.stdout.splitlines() if "::" in line}
    assert collected == {"notebooks/01_x.ipynb", "exercises/lab.ipynb"}, out.stdout + out.stderr
