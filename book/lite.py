"""Build the live edition: JupyterLite + the Pyodide kernel, served entirely by the site.

``python book/lite.py build/lite`` (``make lite``) stages ``build/lite-src`` and runs
``jupyter lite build`` into the given folder.  What a reader's browser then loads, all from
the site itself:

* the JupyterLab-like app and the Pyodide kernel extension (jupyterlite-core,
  jupyterlite-pyodide-kernel from PyPI), and the ipywidgets lab extension, all from the
  venv this runs in (``make lite``: .venv-lite, kept apart from .venv so that the kernel
  extension does not load in ``make lab``);
* the Pyodide runtime from the npm package ``pyodide`` (node_modules, pinned by
  package-lock.json), at ``static/pyodide``;
* beside it, the pure-Python wheels the kernel needs at start (micropip, IPython, jedi and
  their dependencies; from PyPI at the exact versions the Pyodide lock names), plus comm,
  ipywidgets, jupyterlab_widgets and this project's own wheel;
* our copy of ``pyodide-lock.json``: entries for the wheels above point at the local files,
  so ``import mmu`` in a cell loads the project (the kernel loads packages named by a
  cell's imports from the lock) with no ``%pip`` cell; every other entry (numpy,
  matplotlib, ...) points at Pyodide's own build on its CDN, fetched only if a reader
  imports it while online.  No chapter does: the book draws its figures as SVG itself and
  walks address spaces without numpy when numpy is absent.

The project's browser wheel declares only ``ipywidgets>=8``: pyproject.toml pins exact
versions for pip users (numpy, matplotlib 3.11.2), which Pyodide cannot satisfy (it ships
matplotlib 3.10) and the browser does not need.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYODIDE_NPM = REPO / "node_modules" / "pyodide"
#: Pyodide's own distribution of the version in node_modules, for what we do not ship.
PYODIDE_CDN = "https://cdn.jsdelivr.net/pyodide/v{version}/full/"

#: Lock packages the kernel loads when it starts (micropip by the worker; IPython, jedi by
#: piplite.install in initKernel); their dependencies in the lock are added to these.
KERNEL_LOCK_PACKAGES = ("micropip", "ipython", "jedi", "traitlets")
#: Wheels not in Pyodide's lock that we ship and add to it: (distribution, import names).
#: The versions are this venv's, so the browser runs what the tests ran.
EXTRA_WHEELS = (("comm", ["comm"]), ("jupyterlab_widgets", ["jupyterlab_widgets"]),
                ("ipywidgets", ["ipywidgets"]))
EXTRA_DEPENDS = {"ipywidgets": ["comm", "ipython", "jupyterlab-widgets", "traitlets"],
                 "comm": ["traitlets"]}
#: The project itself: its import name and what it needs in the browser.
PROJECT = "mmu-roles"
PROJECT_IMPORTS = ["mmu"]
PROJECT_BROWSER_DEPENDENCIES = ["ipywidgets>=8"]


def norm(name: str) -> str:
    """PEP 503 name, as Pyodide's lock keys are."""
    return re.sub(r"[-_.]+", "-", name).lower()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(*cmd: str, **kw) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)


def lock_closure(lock: dict, roots) -> list[str]:
    """The lock names ``roots`` need, following ``depends``."""
    seen: list[str] = []
    todo = [norm(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        if name not in lock["packages"]:
            raise SystemExit(f"{name!r} is not in Pyodide's lock {lock['info']}")
        seen.append(name)
        todo += [norm(d) for d in lock["packages"][name]["depends"]]
    return sorted(seen)


def pip_download(specs: list[str], dest: Path, python: str) -> None:
    """Pure-Python wheels for the browser's Python, without dependencies (we name them)."""
    run(sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
        "--python-version", python, "--implementation", "py", "--abi", "none",
        "--platform", "any", "-d", str(dest), *specs)


def find_wheel(folder: Path, dist: str) -> Path:
    want = norm(dist).replace("-", "_")
    hits = [p for p in folder.glob("*.whl") if norm(p.name.split("-")[0]).replace("-", "_") == want]
    if len(hits) != 1:
        raise SystemExit(f"expected one wheel of {dist} in {folder}, found {hits}")
    return hits[0]


def browser_wheel(dest: Path) -> Path:
    """This project's wheel with browser dependencies (see the module docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(REPO / "mmu", src / "mmu",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        shutil.copy(REPO / "README.md", src)
        text = (REPO / "pyproject.toml").read_text()
        deps = ", ".join(json.dumps(d) for d in PROJECT_BROWSER_DEPENDENCIES)
        text, n = re.subn(r"(?ms)^dependencies = \[.*?^\]", f"dependencies = [{deps}]", text)
        if n != 1:
            raise SystemExit("pyproject.toml: no `dependencies = [...]` block to rewrite")
        text = re.sub(r"(?ms)^\[project\.optional-dependencies\].*?(?=^\[)", "", text)
        (src / "pyproject.toml").write_text(text)
        run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dest), str(src))
    return find_wheel(dest, PROJECT)


def lock_entry(wheel: Path, name: str, imports: list[str], depends: list[str]) -> dict:
    version = wheel.name.split("-")[1]
    return {"name": name, "version": version, "file_name": wheel.name, "install_dir": "site",
            "sha256": sha256(wheel), "package_type": "package", "imports": imports,
            "depends": [norm(d) for d in depends], "unvendored_tests": False, "shared_library": False}


def stage_pyodide(static: Path, wheels: Path) -> dict:
    """Pyodide from npm + the wheels the kernel needs + our lock; returns a summary."""
    static.mkdir(parents=True)
    for f in PYODIDE_NPM.iterdir():
        if f.is_file() and f.suffix in {".mjs", ".js", ".wasm", ".zip", ".json", ".map"} \
                and f.name != "package.json":
            shutil.copy(f, static / f.name)
    lock = json.loads((PYODIDE_NPM / "pyodide-lock.json").read_text())
    python = ".".join(lock["info"]["python"].split(".")[:2])
    version = json.loads((PYODIDE_NPM / "package.json").read_text())["version"]

    names = lock_closure(lock, KERNEL_LOCK_PACKAGES)
    pip_download([f"{lock['packages'][n]['name']}=={lock['packages'][n]['version']}"
                  for n in names], wheels, python)
    repacked = []
    for n in names:
        entry = lock["packages"][n]
        wheel = find_wheel(wheels, entry["name"])
        if wheel.name != entry["file_name"] or sha256(wheel) != entry["sha256"]:
            # Pyodide rebuilt it (same version, other bytes): serve PyPI's and say so.
            repacked.append(n)
            entry.update(file_name=wheel.name, sha256=sha256(wheel))
        shutil.copy(wheel, static / wheel.name)

    extra = [f"{dist}=={importlib.metadata.version(dist)}" for dist, _ in EXTRA_WHEELS]
    pip_download(extra, wheels, python)
    for dist, imports in EXTRA_WHEELS:
        wheel = find_wheel(wheels, dist)
        shutil.copy(wheel, static / wheel.name)
        lock["packages"][norm(dist)] = lock_entry(wheel, norm(dist), imports,
                                                  EXTRA_DEPENDS.get(dist, []))
    own = browser_wheel(wheels)
    shutil.copy(own, static / own.name)
    lock["packages"][PROJECT] = lock_entry(own, PROJECT, PROJECT_IMPORTS, ["ipywidgets"])

    local = set(names) | {norm(d) for d, _ in EXTRA_WHEELS} | {PROJECT}
    cdn = PYODIDE_CDN.format(version=version)
    for name, entry in lock["packages"].items():
        if name not in local:
            entry["file_name"] = cdn + entry["file_name"]
    (static / "pyodide-lock.json").write_text(json.dumps(lock, indent=1, sort_keys=True))
    return {"pyodide": version, "python": python, "local": sorted(local),
            "sha256 differs from Pyodide's build": repacked, "project wheel": own.name}


#: The live edition's kernel.  The sources name JupyterLab's "python3", which JupyterLite
#: matches only through language_info (the labs have none: it would ask which kernel).
PYODIDE_KERNELSPEC = {"name": "python", "display_name": "Python (Pyodide)", "language": "python"}


def stage_notebook(src: Path, dest: Path) -> None:
    """Copy a notebook for the live edition, naming the Pyodide kernel."""
    nb = json.loads(src.read_text())
    nb.setdefault("metadata", {})["kernelspec"] = PYODIDE_KERNELSPEC
    nb["metadata"].setdefault("language_info", {"name": "python"})
    dest.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("output", type=Path)
    ap.add_argument("--sourcemaps", action="store_true",
                    help="keep the apps' and Pyodide's source maps (about 40%% more bytes)")
    args = ap.parse_args(argv)
    if not (PYODIDE_NPM / "pyodide.mjs").exists():
        raise SystemExit(f"{PYODIDE_NPM} is missing: run `npm ci` (make lite does)")
    out = args.output.resolve()
    stage = REPO / "build" / "lite-src"
    shutil.rmtree(stage, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    contents = stage / "contents"
    contents.mkdir(parents=True)
    for nb in sorted((REPO / "notebooks").glob("*.ipynb")):
        stage_notebook(nb, contents / nb.name)
    # The labs' student copies (make student), so a class can work in the browser.
    (contents / "labs").mkdir()
    for nb in sorted((REPO / "student").glob("*.ipynb")):
        stage_notebook(nb, contents / "labs" / nb.name)
    summary = stage_pyodide(stage / "static" / "pyodide", stage / "wheels")
    if not args.sourcemaps:
        for m in (stage / "static" / "pyodide").glob("*.map"):
            m.unlink()
    (stage / "jupyter-lite.json").write_text(json.dumps({
        "jupyter-lite-schema-version": 0,
        "jupyter-config-data": {"appName": "mmu-roles (live)"}}, indent=1))
    # Every cell stays in the page (no windowing): the chapters are short, and the
    # browser test reads each cell's prompt and output.
    (stage / "overrides.json").write_text(json.dumps({
        "@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"}}, indent=1))
    cmd = [str(Path(sys.executable).with_name("jupyter")), "lite", "build",
           "--lite-dir", str(stage), "--contents", str(contents), "--output-dir", str(out)]
    if not args.sourcemaps:
        cmd.append("--no-sourcemaps")
    env = dict(os.environ, JUPYTERLITE_NO_JUPYTER_SERVER="0")
    run(*cmd, cwd=stage, env=env)
    (out / "build-summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
