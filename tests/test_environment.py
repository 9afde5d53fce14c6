"""environment.yml (conda, Binder) and pyproject.toml (pip, the source of truth)
list the same packages at the same pinned versions.

``drift(pyproject, environment)`` returns one message per disagreement; the real
files must give none, and hand-made drifted copies must give the message that
names the drift (so this test can fail).
"""
from __future__ import annotations

import copy
import re
import tomllib

import pytest
import yaml

from conftest import REPO

#: PyPI name -> conda-forge name, where they differ.  (None of the current pins
#: differ; the map exists so a rename is one line, e.g. "torch": "pytorch".)
NAME_MAP: dict[str, str] = {}
#: Conda-only entries that have no PyPI counterpart in pyproject.toml.
CONDA_ONLY = {"python", "pip"}
#: The project itself, installed editable by pip inside the conda env.
SELF_INSTALL = "-e ."

_PIP_REQ = re.compile(r"^\s*([A-Za-z0-9_.\-\[\]]+)\s*==\s*([^\s;]+)\s*$")
_CONDA_REQ = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*=\s*([^\s=]+)\s*$")


def _norm(name: str) -> str:
    """PEP 503 normalisation (case, and runs of -_. are equal)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject_pins(pyproject: dict) -> dict[str, str]:
    """{normalised name: version} over the runtime deps and every optional group."""
    project = pyproject["project"]
    reqs = list(project.get("dependencies", []))
    for group in project.get("optional-dependencies", {}).values():
        reqs += group
    pins: dict[str, str] = {}
    for req in reqs:
        m = _PIP_REQ.match(req)
        if not m:
            raise ValueError(f"pyproject requirement {req!r} is not pinned as name==version")
        pins[_norm(m.group(1).split("[")[0])] = m.group(2)
    return pins


def environment_pins(env: dict) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """(conda pins, pip pins, raw pip lines) of an environment.yml mapping."""
    conda: dict[str, str] = {}
    pip: dict[str, str] = {}
    pip_lines: list[str] = []
    for dep in env.get("dependencies", []):
        if isinstance(dep, dict):
            pip_lines += [str(x) for x in dep.get("pip", [])]
            continue
        m = _CONDA_REQ.match(str(dep))
        name = _norm(m.group(1)) if m else _norm(str(dep).strip())
        conda[name] = m.group(2) if m else ""
    for line in pip_lines:
        if line.strip() == SELF_INSTALL:
            continue
        m = _PIP_REQ.match(line)
        pip[_norm(m.group(1)) if m else line] = m.group(2) if m else ""
    return conda, pip, pip_lines


def drift(pyproject: dict, env: dict) -> list[str]:
    """Every way the two files disagree, one sentence each (empty = in sync)."""
    want = pyproject_pins(pyproject)
    conda, pip, pip_lines = environment_pins(env)
    conda_to_pypi = {v: k for k, v in NAME_MAP.items()}
    have: dict[str, tuple[str, str]] = {}
    problems = []
    for name, version in conda.items():
        if name in CONDA_ONLY:
            continue
        have[conda_to_pypi.get(name, name)] = (version, "conda")
    for name, version in pip.items():
        if name in have:
            problems.append(f"{name} is listed twice in environment.yml (conda and pip)")
        have[name] = (version, "pip")
    for name, version in sorted(want.items()):
        if name not in have:
            problems.append(f"{name}=={version} is in pyproject.toml but not in environment.yml")
        elif have[name][0] != version:
            problems.append(f"{name}: pyproject.toml pins {version}, environment.yml "
                            f"({have[name][1]}) pins {have[name][0] or 'no version'}")
    for name in sorted(set(have) - set(want)):
        problems.append(f"{name} is in environment.yml but not in pyproject.toml")
    if SELF_INSTALL not in [line.strip() for line in pip_lines]:
        problems.append(f"environment.yml does not pip-install the project ({SELF_INSTALL!r})")
    missing = CONDA_ONLY - set(conda)
    if missing:
        problems.append(f"environment.yml lacks {sorted(missing)}")
    return problems


@pytest.fixture(scope="module")
def files() -> tuple[dict, dict]:
    with open(REPO / "pyproject.toml", "rb") as f:
        pyproject = tomllib.load(f)
    with open(REPO / "environment.yml") as f:
        env = yaml.safe_load(f)
    return pyproject, env


def test_environment_yml_matches_pyproject(files):
    assert drift(*files) == []


def test_python_floor_is_respected(files):
    pyproject, env = files
    floor = re.fullmatch(r">=\s*3\.(\d+)", pyproject["project"]["requires-python"])
    conda, _, _ = environment_pins(env)
    assert floor and int(conda["python"].split(".")[1]) >= int(floor.group(1))


def _set_dep(env: dict, old: str, new: str | None) -> dict:
    env = copy.deepcopy(env)
    deps = env["dependencies"]
    for i, dep in enumerate(deps):
        if isinstance(dep, dict):
            pip = dep["pip"]
            for j, line in enumerate(pip):
                if line == old:
                    pip[j:j + 1] = [] if new is None else [new]
                    return env
        elif dep == old:
            deps[i:i + 1] = [] if new is None else [new]
            return env
    raise AssertionError(f"{old!r} not in environment.yml: the drift test needs updating")


@pytest.mark.parametrize("old, new, message", [
    ("ipywidgets=8.1.9", "ipywidgets=7.8.5",
     "ipywidgets: pyproject.toml pins 8.1.9, environment.yml (conda) pins 7.8.5"),
    ("numpy=2.4.6", None, "numpy==2.4.6 is in pyproject.toml but not in environment.yml"),
    ("unicorn==2.1.4", "unicorn==2.1.3",
     "unicorn: pyproject.toml pins 2.1.4, environment.yml (pip) pins 2.1.3"),
    ("-e .", None, "environment.yml does not pip-install the project ('-e .')"),
    ("pyyaml=6.0.4", "pyyaml", "pyyaml: pyproject.toml pins 6.0.4, environment.yml (conda) pins no version"),
])
def test_drifted_environment_is_reported(files, old, new, message):
    pyproject, env = files
    assert message in drift(pyproject, _set_dep(env, old, new))


def test_extra_and_renamed_packages_are_reported(files):
    pyproject, env = files
    env = copy.deepcopy(env)
    env["dependencies"].insert(2, "scipy=1.14.0")
    assert drift(pyproject, env) == ["scipy is in environment.yml but not in pyproject.toml"]
    # A drifted pyproject is caught too, including a new optional group.
    pyproject = copy.deepcopy(pyproject)
    pyproject["project"]["optional-dependencies"]["docs"] = ["furo==2024.8.6"]
    assert "furo==2024.8.6 is in pyproject.toml but not in environment.yml" in drift(pyproject, env)


def test_unpinned_pyproject_requirement_is_refused(files):
    pyproject = copy.deepcopy(files[0])
    pyproject["project"]["dependencies"].append("rich>=13")
    with pytest.raises(ValueError, match="rich>=13"):
        pyproject_pins(pyproject)
