"""Lab notebooks (a package only so that exercises/conftest.py imports as
``exercises.conftest`` and does not clash with tests/conftest.py, which the tests
import as ``conftest``)."""
