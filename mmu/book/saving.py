"""After JupyterLab saves a notebook, tell git it is unchanged when only outputs changed.

Notebooks are committed without outputs: ``make setup`` sets up the nbstripout clean
filter that ``.gitattributes`` names, so what git stages or compares is the stripped
notebook and ``git diff`` of a run-and-saved chapter is empty.  ``git status`` still
lists it as modified, though: git trusts a changed *file size* in its index stat cache
and reports the file modified without running the filter (read-cache.c,
``ie_modified``).  This hook, which ``make lab`` installs as the contents manager's
``post_save_hook``, closes that gap: when the saved file, filtered, is exactly the blob
git has staged, it refreshes that one index entry (``git add`` of identical content
changes nothing but the stat cache).  A real edit is left alone, so it still shows as
modified.  Any failure (no git, an untracked file, no filter) is logged and ignored:
a save must never fail because of it.
"""
from __future__ import annotations

import logging
import subprocess
from pathlib import Path

__all__ = ["refresh_git_index"]

_log = logging.getLogger(__name__)


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True,
                          check=True, timeout=60).stdout.strip()


def refresh_git_index(os_path: str, model: dict, contents_manager=None, **_) -> bool:
    """jupyter_server ``post_save_hook``; True when the index entry was refreshed."""
    if model.get("type") != "notebook":
        return False
    path = Path(os_path).resolve()
    try:
        top = Path(_git(path.parent, "rev-parse", "--show-toplevel"))
        rel = path.relative_to(top).as_posix()
        if not _git(top, "config", "--get", "filter.nbstripout.clean"):
            return False
        staged = _git(top, "rev-parse", f":{rel}")
        # --path applies .gitattributes, i.e. the same clean filter `git add` runs.
        if _git(top, "hash-object", f"--path={rel}", rel) != staged:
            return False                       # a real change: git status must show it
        _git(top, "add", "--", rel)
        return True
    except (OSError, ValueError, subprocess.SubprocessError) as e:
        _log.debug("git index not refreshed for %s: %s", os_path, e)
        return False
