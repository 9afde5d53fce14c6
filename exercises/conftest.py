"""pytest markers per exercise, so a teacher can grade one lab at a time.

``pytest -m ex_walks exercises/`` runs only the walks lab's solution notebook (grading
student submissions is ``make grade``, see exercises/README.md).  Markers are
registered here with ``config.addinivalue_line`` (pyproject.toml is not touched), and
attached to

* nbval items of ``<kind>.ipynb`` anywhere below this directory;
* tests in tests/test_exercises.py and tests/test_student_copies.py that carry a
  ``kind`` parameter, when this conftest is loaded (``pytest`` with no arguments loads it
  through ``testpaths``; so does naming ``exercises`` on the command line).
"""
from __future__ import annotations

from pathlib import Path

#: One marker per lab notebook / exercise kind.
KINDS = ("walks", "permissions", "roles", "shadow", "root_reuse", "cr0_wp", "legacy",
         "nested")


def pytest_configure(config):
    for kind in KINDS:
        config.addinivalue_line("markers", f"ex_{kind}: the {kind} exercises "
                                           f"(exercises/{kind}.ipynb and its generators)")


def _kind_of(item) -> str | None:
    path = Path(str(getattr(item, "path", getattr(item, "fspath", ""))))
    if path.suffix == ".ipynb" and path.stem in KINDS:
        return path.stem
    params = getattr(getattr(item, "callspec", None), "params", {})
    kind = params.get("kind")
    return kind if kind in KINDS else None


def pytest_collection_modifyitems(config, items):
    for item in items:
        kind = _kind_of(item)
        if kind is not None:
            item.add_marker(f"ex_{kind}")
