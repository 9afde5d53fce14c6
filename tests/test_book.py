"""The rendered book (build/book, `make book`) and the live edition (build/lite, `make lite`).

`make test` builds both first; run alone, this module builds what is missing.  Static
checks read the built files; browser checks (marked ``browser``; they skip, saying why,
only without ``chromium``) serve build/ from 127.0.0.1 as GitHub Pages would (book/ and
lite/ side by side) with every other host blocked twice over: Playwright aborts any
request to another host, and Chromium's resolver knows no other host (that also covers
the kernel's web worker).

* book: every page loads only its own files; internal links and anchors resolve (the
  chapters' ``00_start_here.ipynb#Glossary`` included); no chapter page over 1 MiB;
  widgets render from saved state with their text form visible under each; chapter 5
  shows the role table and the explorer's text form, chapter 1 its figures; no console
  error; axe-core finds no serious or critical violation in any chapter's content;
* live edition: the Pyodide runtime, the kernel's wheels and ours are local and match
  our lock; the project's browser wheel pins nothing Pyodide cannot satisfy; chapter 5
  runs all cells offline, and unticking CR0.WP in the page changes the outcome and marks
  the role row changed; every chapter the landing page calls *offline* runs all cells
  offline without an error.

Timings and findings go to artifacts/book/ (report.json, screenshots).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import html.parser
import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import zipfile
from pathlib import Path

import pytest

from browser_support import browser_page, needs_chromium, run_all
from conftest import REPO

BUILD = REPO / "build"
BOOK = BUILD / "book"
LITE = BUILD / "lite"
ART = REPO / "artifacts" / "book"
AXE = REPO / "node_modules" / "axe-core" / "axe.min.js"
MIB = 1 << 20
#: Seconds for one chapter of the live edition to run all its cells (Pyodide starts in
#: about 10 s here; chapter 9 runs longest).
LITE_CHAPTER_S = 240


def _ensure(target: str, marker: Path) -> None:
    if not marker.exists():
        subprocess.run(["make", "-s", target], cwd=REPO, check=True)


@pytest.fixture(scope="session")
def book() -> Path:
    _ensure("book", BOOK / "index.html")
    return BOOK


@pytest.fixture(scope="session")
def lite() -> Path:
    _ensure("lite", LITE / "lab" / "index.html")
    return LITE


def _record(key: str, value) -> None:
    """Add one finding to artifacts/book/report.json (the report's figures)."""
    ART.mkdir(parents=True, exist_ok=True)
    path = ART / "report.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[key] = value
    path.write_text(json.dumps(data, indent=1, sort_keys=True))


# ---- the landing page's chapter map: the list every check below goes by ---------------

_ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*\[[^\]]+\]\(notebooks/(\d\d_\w+)\.ipynb\)\s*\|[^|]*\|\s*([^|]+?)\s*\|$")


def chapter_map() -> list[tuple[str, str]]:
    """(notebook stem, live-edition column) for each row of book/index.md's map."""
    rows = [m.groups() for line in (REPO / "book" / "index.md").read_text().splitlines()
            if (m := _ROW.match(line))]
    return [(stem, live) for _, stem, live in rows]


CHAPTERS = sorted(p.stem for p in (REPO / "notebooks").glob("*.ipynb"))
OFFLINE = [stem for stem, live in chapter_map() if live == "offline"]


def test_chapter_map_lists_every_chapter_once():
    assert [stem for stem, _ in chapter_map()] == CHAPTERS
    assert all(live == "offline" or live.startswith("online: ") for _, live in chapter_map())


def test_saved_widget_state_keeps_only_what_the_views_reach():
    """nbclient saves closed widgets' models too; the page keeps the ones its views reach."""
    sys.path.insert(0, str(REPO / "book" / "_ext"))
    from mmu_book import prune_widget_state
    m = lambda **s: {"model_name": "X", "state": s}           # noqa: E731
    state = {"version_major": 2, "state": {
        "a": m(children=["IPY_MODEL_b"], layout="IPY_MODEL_c"),   # the displayed box
        "b": m(layout="IPY_MODEL_c", style="IPY_MODEL_e"),        # its child
        "c": m(), "e": m(),
        "d": m(layout="IPY_MODEL_f"), "f": m()}}                  # a closed check widget
    pruned = prune_widget_state(state, {"a"})
    assert sorted(pruned["state"]) == ["a", "b", "c", "e"] and pruned["version_major"] == 2
    assert prune_widget_state(state, {"zz"})["state"] == {}


def test_jupyterlab_heading_ids():
    """JupyterLab's rule (createHeaderId, @jupyterlab/rendermime): the heading's text with
    each space turned into "-", case and punctuation kept."""
    sys.path.insert(0, str(REPO / "book" / "_ext"))
    from mmu_book import jupyterlab_heading_id
    assert jupyterlab_heading_id("Glossary") == "Glossary"
    assert jupyterlab_heading_id("What you learned, and where next") == \
        "What-you-learned,-and-where-next"


# ---- Binder: runtime only, same pins as pyproject.toml ----------------------------------

#: What a reader on Binder needs: the runtime dependencies and the `lab` extra.
BINDER_GROUPS = ("lab",)
TEST_ONLY = {"pytest", "hypothesis", "unicorn", "playwright", "nbval"}


def test_binder_environment_is_runtime_only_and_pinned_like_pyproject():
    import tomllib
    import yaml
    from test_environment import _norm, environment_pins
    with open(REPO / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    want = {}
    for req in [*project["dependencies"],
                *(r for g in BINDER_GROUPS for r in project["optional-dependencies"][g])]:
        name, version = req.split("==")
        want[_norm(name)] = version
    env = yaml.safe_load((REPO / ".binder" / "environment.yml").read_text())
    conda, pip, _ = environment_pins(env)
    have = {k: v for k, v in {**conda, **pip}.items() if k not in ("python", "pip")}
    assert have == want
    assert not TEST_ONLY & set(have)
    post = (REPO / ".binder" / "postBuild").read_text()
    assert "pip install --no-deps ." in post and os.access(REPO / ".binder" / "postBuild", os.X_OK)


def test_binder_links_name_the_repository():
    sys.path.insert(0, str(REPO / "book" / "_ext"))
    from mmu_book import binder_markdown
    line = binder_markdown("someone/mmu-roles")
    assert ("https://mybinder.org/v2/gh/someone/mmu-roles/HEAD?urlpath="
            "lab/tree/notebooks/00_start_here.ipynb") in line
    assert "urlpath=voila/render/app/role_explorer.ipynb" in line
    assert (REPO / "notebooks" / "00_start_here.ipynb").is_file()
    assert "<owner>/<repository>" in binder_markdown(None)


# ---- lazy numpy / matplotlib -------------------------------------------------------------

def _blocked_python(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run ``code`` in a Python where importing numpy or matplotlib fails."""
    for mod in ("numpy", "matplotlib"):
        (tmp_path / mod).mkdir(exist_ok=True)
        (tmp_path / mod / "__init__.py").write_text(f"raise ImportError('{mod} is blocked')")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                          capture_output=True, text=True)


def test_import_mmu_and_widgets_without_numpy_or_matplotlib(tmp_path):
    r = _blocked_python("import numpy", tmp_path)
    assert "numpy is blocked" in r.stderr            # the blocker works
    r = _blocked_python(
        "import mmu, mmu.book.widgets, mmu.book.widgets_story, mmu.book.widgets_walk\n"
        "from mmu.book.views import walk_view as wv\n"
        "g = wv.demo_guest('4-level'); am = wv.address_map(g.mem, g.regs, 0x40_0000, 64)\n"
        "print(am.present.sum(), am.runs()[0])", tmp_path)
    assert r.returncode == 0, r.stderr
    # 64 pages from 0x400000: the chapter guest's user code region (64 pages, read-only,
    # user, executable; tests/test_views_walk.py lays out the regions).
    assert r.stdout.split(maxsplit=1) == ["64", "(4194304, 4456447, 'read-only, user, executable')\n"]


def test_address_map_without_numpy_matches_the_batch_walker(monkeypatch):
    from mmu.book.views import walk_view as wv
    for mode in ("32-bit", "PAE", "4-level", "5-level"):
        g = wv.demo_guest(mode)
        batch = wv.address_map(g.mem, g.regs, 0, 4096)
        with monkeypatch.context() as m:
            m.setattr(wv, "_numpy", lambda: None)
            scalar = wv.address_map(g.mem, g.regs, 0, 4096)
        assert scalar == batch, mode


# ---- the rendered book: files ------------------------------------------------------------

class _Page(html.parser.HTMLParser):
    """Every id, every link/asset URL of one HTML page."""

    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []      # <a href>
        self.assets: list[str] = []     # script src, link href, img src

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])
        elif tag in ("script", "img", "iframe") and a.get("src"):
            self.assets.append(a["src"])
        elif tag == "link" and a.get("href") and a.get("rel") not in ("next", "prev", "index", "search"):
            self.assets.append(a["href"])


@functools.lru_cache(maxsize=None)
def _parse(path: Path) -> _Page:
    p = _Page()
    p.feed(path.read_text())
    return p


def _pages(book: Path) -> list[Path]:
    return sorted(book.glob("*.html")) + sorted((book / "notebooks").glob("*.html"))


def _sphinx(tmp_path: Path, index: str, cells: list[str]) -> subprocess.CompletedProcess:
    """Build a one-chapter book with the real configuration (book/conf.py)."""
    import nbformat
    src = tmp_path / "src"
    (src / "notebooks").mkdir(parents=True)
    (src / "index.md").write_text(index)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# A chapter\n\n## Its Section"),
                *(nbformat.v4.new_code_cell(c) for c in cells)]
    nbformat.write(nb, src / "notebooks" / "ch.ipynb")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-c", str(REPO / "book"),
                           "-W", "--keep-going", "-q", "-T", str(src), str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=300)


def test_book_build_fails_on_an_exception_or_a_broken_anchor(book, tmp_path):
    """The real configuration, on a tiny book: a good one builds; an exception in a cell
    fails the build, naming it; so does a link to an anchor the chapter does not have."""
    toc = "```{toctree}\nnotebooks/ch\n```\n"
    ok = _sphinx(tmp_path / "ok", "# Book\n\n[in](notebooks/ch.ipynb#Its-Section)\n" + toc,
                 ["print(6 * 7)"])
    assert ok.returncode == 0, ok.stderr[-2000:]
    bad = _sphinx(tmp_path / "raise", "# Book\n" + toc, ["raise ValueError('boom 42')"])
    assert bad.returncode != 0 and "boom 42" in bad.stdout + bad.stderr
    link = _sphinx(tmp_path / "link", "# Book\n\n[in](notebooks/ch.ipynb#No-Such-Section)\n"
                   + toc, ["print(1)"])
    assert link.returncode != 0 and "No-Such-Section" in link.stderr


def test_book_has_a_page_per_chapter(book):
    assert sorted(p.stem for p in (book / "notebooks").glob("*.html")) == CHAPTERS


def test_book_pages_load_only_their_own_files(book):
    """No page names an asset on another host (no CDN at view time), and every local
    asset is there; CSS too (url(...) in the theme's and the widgets' style sheets)."""
    bad = []
    for page in _pages(book):
        for url in _parse(page).assets:
            u = urllib.parse.urlsplit(url)
            if u.scheme or u.netloc:
                bad.append(f"{page.name}: {url}")
            elif not (page.parent / urllib.parse.unquote(u.path)).exists():
                bad.append(f"{page.name}: {url} is missing")
    for css in book.glob("_static/**/*.css"):
        for url in re.findall(r"url\(\s*['\"]?(https?:)?//", css.read_text(errors="replace")):
            bad.append(f"{css.name}: remote url()")
    assert bad == []


def test_book_internal_links_resolve(book, lite):
    """Every relative link leads to a file that exists, and its #fragment to an element
    with that id; links into the live edition lead to its app and to a notebook it has."""
    bad, checked = [], 0
    for page in _pages(book):
        for href in _parse(page).links:
            u = urllib.parse.urlsplit(href)
            if u.scheme or u.netloc or href.startswith("mailto:"):
                continue
            target = (page.parent / urllib.parse.unquote(u.path)).resolve() if u.path else page
            checked += 1
            if not target.exists():
                bad.append(f"{page.name}: {href}")
            elif target.suffix == ".html" and u.fragment and \
                    urllib.parse.unquote(u.fragment) not in _parse(target).ids:
                bad.append(f"{page.name}: {href} (no such anchor)")
            if LITE in target.parents:
                path = urllib.parse.parse_qs(u.query).get("path", [""])[0]
                if not (LITE / "files" / path).is_file():
                    bad.append(f"{page.name}: {href} (the live edition has no {path!r})")
    assert checked > 50 and bad == []


def test_glossary_links_reach_the_glossary(book):
    """Chapter 1 links ``00_start_here.ipynb#Glossary`` (JupyterLab's heading id); in the
    book that link lands on the Glossary section of chapter 0."""
    page = _parse(book / "notebooks" / "01_guest_walks.html")
    hrefs = [h for h in page.links if h.startswith("00_start_here.html#")]
    assert hrefs, page.links
    start = (book / "notebooks" / "00_start_here.html").read_text()
    for h in hrefs:
        anchor = h.split("#", 1)[1]
        assert re.search(rf'<section id="{re.escape(anchor)}">\s*(<span id="[^"]*"></span>)?'
                         r'<h2>Glossary', start), h
    # The JupyterLab id itself is an anchor too, so a link typed from Lab works as well.
    assert '<span id="Glossary"></span><h2>Glossary' in start


def test_chapter_pages_weigh_at_most_one_mib(book):
    weights = {p.stem: p.stat().st_size for p in (book / "notebooks").glob("*.html")}
    _record("book page bytes", weights)
    heavy = {k: v for k, v in weights.items() if v > MIB}
    assert heavy == {}, "check cells must close their widgets (mmu.book.widget_state)"


def test_lab_student_copies_are_linked_for_download(book):
    students = sorted(p.name for p in (REPO / "student").glob("*.ipynb"))
    assert students
    links = [h for h in _parse(book / "index.html").links if "_downloads/" in h]
    assert sorted(h.rsplit("/", 1)[1] for h in links) == students
    for h in links:
        assert json.loads((book / h).read_text())["cells"]     # a real notebook


def test_landing_page_has_three_reader_paths(book):
    text = (book / "index.html").read_text()
    for who in ("Learner.", "Teacher.", "Reviewer."):
        assert f"<strong>{who}</strong>" in text


# ---- the live edition: files ----------------------------------------------------------------

def _lock(lite: Path) -> dict:
    return json.loads((lite / "static" / "pyodide" / "pyodide-lock.json").read_text())


def test_live_edition_serves_its_runtime_and_wheels(lite):
    """Every lock entry is either a file beside the lock with the lock's sha256, or
    Pyodide's own build on its CDN (fetched only if a reader imports it while online)."""
    pyodide = lite / "static" / "pyodide"
    assert (pyodide / "pyodide.mjs").is_file() and (pyodide / "pyodide.asm.wasm").is_file()
    local, remote = [], []
    for name, entry in _lock(lite)["packages"].items():
        if entry["file_name"].startswith("https://cdn.jsdelivr.net/pyodide/"):
            remote.append(name)
            continue
        wheel = pyodide / entry["file_name"]
        assert wheel.is_file(), name
        assert hashlib.sha256(wheel.read_bytes()).hexdigest() == entry["sha256"], name
        local.append(name)
    # What the kernel loads when it starts, ipywidgets, and the project itself.
    for name in ("micropip", "ipython", "jedi", "traitlets", "comm", "ipywidgets", "mmu-roles"):
        assert name in local
    assert "numpy" in remote and "matplotlib" in remote
    jl = json.loads((lite / "jupyter-lite.json").read_text())["jupyter-config-data"]
    assert "static/pyodide/pyodide.mjs" in json.dumps(jl)


def test_browser_wheel_pins_nothing_pyodide_cannot_satisfy(lite):
    entry = _lock(lite)["packages"]["mmu-roles"]
    assert entry["imports"] == ["mmu"]            # `import mmu` loads it, no %pip needed
    with zipfile.ZipFile(lite / "static" / "pyodide" / entry["file_name"]) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA")))
    requires = [line.split(":", 1)[1].strip() for line in meta.decode().splitlines()
                if line.startswith("Requires-Dist:")]
    assert requires == ["ipywidgets>=8"]
    with zipfile.ZipFile(lite / "static" / "pyodide" / entry["file_name"]) as z:
        assert "mmu/kvm/roles.py" in z.namelist()


def test_live_edition_size(lite):
    total = sum(p.stat().st_size for p in lite.rglob("*") if p.is_file())
    maps = sum(p.stat().st_size for p in lite.rglob("*.map"))
    _record("lite bytes", {"total": total, "source maps": maps})
    assert maps == 0 and total < 80 * MIB       # built without source maps (make lite)


# ---- serving build/ on 127.0.0.1 ------------------------------------------------------

class _Quiet(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".wasm": "application/wasm", ".mjs": "text/javascript",
                      ".js": "text/javascript", ".json": "application/json"}

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site(book, lite):
    """build/ over HTTP on 127.0.0.1 (book/ and lite/ side by side, as Pages has them)."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(BUILD)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


#: Chromium resolves no host name: 127.0.0.1 is an address, so only the local server
#: is reachable, from the page and from its workers alike.
OFFLINE_ARGS = ("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",)


@contextlib.contextmanager
def offline_page(tmp_path: Path, base: str):
    """A browser page that can reach ``base`` only; yields (page, errors, blocked)."""
    blocked: list[str] = []
    with browser_page(tmp_path, extra_args=OFFLINE_ARGS) as (page, errors):
        def route(r):
            if r.request.url.startswith(base + "/"):
                r.continue_()
            else:
                blocked.append(r.request.url)
                r.abort()
        page.context.route("**/*", route)
        page.on("response", lambda r: errors.append(f"HTTP {r.status}: {r.url}")
                if r.status >= 400 else None)
        page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
        yield page, errors, blocked


# ---- the rendered book in the browser ---------------------------------------------------

def in_chromium(fn):
    """Mark a test ``browser``; it skips, saying why, only without chromium."""
    for mark in reversed(needs_chromium):
        fn = mark(fn)
    return fn


def _axe(page) -> list[dict]:
    page.add_script_tag(path=str(AXE))
    return page.evaluate("""async () => {
        const scope = document.querySelector('article.bd-article') || document;
        const r = await axe.run(scope, {resultTypes: ['violations']});
        return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.length, targets: v.nodes.slice(0, 3).map(n => n.target.join(' '))}));
    }""")


@in_chromium
def test_book_in_chromium(site, tmp_path):
    """Every page: widgets from saved state, a text form under each, nothing from another
    host, no console error, no serious or critical axe finding; chapter 5 and chapter 1
    in detail.  Screenshots of chapters 1 and 5 in artifacts/book/."""
    sync_api = pytest.importorskip("playwright.sync_api")
    assert AXE.is_file(), "axe-core is missing: run `npm ci` (make book does)"
    ART.mkdir(parents=True, exist_ok=True)
    findings, serious = {}, []
    with offline_page(tmp_path, site) as (page, errors, blocked):
        for stem in ["index", *CHAPTERS]:
            path = "index.html" if stem == "index" else f"notebooks/{stem}.html"
            page.goto(f"{site}/book/{path}")
            page.wait_for_load_state("networkidle")
            widgets = page.locator("script[type='application/vnd.jupyter.widget-view+json']")
            cells = page.locator("div.cell")
            shown = 0
            for i in range(cells.count()):
                cell = cells.nth(i)
                if cell.locator("script[type='application/vnd.jupyter.widget-view+json']").count():
                    # rendered from the saved state ...
                    sync_api.expect(cell.locator(".jupyter-widgets").first).to_be_visible()
                    # ... with its text form printed right under it: in the same cell's
                    # output after the widget (chapter 9's show_patch), or the next cell's
                    same = cell.locator("div.cell_output pre")
                    text = (same if same.count() else
                            cells.nth(i + 1).locator("div.cell_output pre")).first
                    sync_api.expect(text).to_be_visible()
                    assert text.inner_text().strip(), f"{stem}: empty text form under widget {i}"
                    shown += 1
            assert shown > 0 or widgets.count() == 0, stem
            if stem == "05_role_explorer":
                table = page.locator(".role-view table").first
                sync_api.expect(table).to_be_visible()
                sync_api.expect(page.locator(".role-view tr", has_text="base.cr0_wp").first
                                ).to_contain_text("= same")
                form = page.locator("div.cell_output pre", has_text="root_role.word").first
                sync_api.expect(form).to_be_visible()
                sync_api.expect(form).to_contain_text("cpu_role")
                page.locator(".role-explorer").first.screenshot(path=str(ART / "book_ch05.png"))
            if stem == "01_guest_walks":
                figs = page.locator("div.cell_output svg:has(title)")
                assert figs.count() >= 2
                for j in range(figs.count()):
                    sync_api.expect(figs.nth(j)).to_be_visible()
                    box = figs.nth(j).bounding_box()
                    assert box["width"] > 300 and box["height"] > 100, box
                figs.last.screenshot(path=str(ART / "book_ch01_figure.png"))
            found = _axe(page)
            findings[stem] = found
            serious += [f"{stem}: {v['id']} ({v['impact']}) {v['targets']}" for v in found
                        if v["impact"] in ("serious", "critical")]
    _record("axe findings", {k: [f"{v['id']} ({v['impact']}, {v['nodes']} nodes)" for v in vs]
                             for k, vs in findings.items()})
    assert blocked == [] and errors == []
    assert serious == []


# ---- the live edition in the browser ----------------------------------------------------

def _run_notebook(page, site: str, path: str, timeout_s: float) -> tuple[float, list[str]]:
    """Open a notebook of the live edition, Run All, wait until every code cell has run
    or one has failed (Run All stops there); returns (seconds from opening it, the texts
    of its error outputs)."""
    started = time.monotonic()
    page.goto(f"{site}/lite/lab/index.html?path={path}")
    page.locator(".jp-Notebook .jp-Cell").first.wait_for()
    page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(
        timeout=timeout_s * 1000)
    run_all(page)
    # Run All queues every cell ("[*]"); it is over when none is queued any more: all
    # numbered, or the rest back to "[ ]" after a failing cell.
    page.wait_for_function("""() => {
        const ps = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputArea-prompt')]
            .map(p => p.textContent);
        return ps.some(t => /\\d/.test(t)) && !ps.some(t => t.includes('*'));
    }""", timeout=timeout_s * 1000, polling=500)
    prompts = page.locator(".jp-Notebook .jp-CodeCell .jp-InputArea-prompt").all_inner_texts()
    # The Pyodide kernel shows a failing cell's traceback as stderr, JupyterLab as an error.
    errors = page.locator(".jp-Notebook [data-mime-type='application/vnd.jupyter.error'], "
                          ".jp-Notebook [data-mime-type='application/vnd.jupyter.stderr']")
    if not errors.count() and not all(re.search(r"\[\d+\]", t) for t in prompts if t.strip()):
        return time.monotonic() - started, [f"not every cell ran: {prompts}"]
    return time.monotonic() - started, errors.all_inner_texts()


def _run_chapter(page, site: str, stem: str, timeout_s: float) -> float:
    """A chapter runs all its cells in the live edition, without an error."""
    seconds, errors = _run_notebook(page, site, f"{stem}.ipynb", timeout_s)
    if errors:
        pytest.fail(f"{stem} in the live edition: {errors[0][-1500:]}")
    return seconds


@in_chromium
def test_live_role_explorer_offline(site, tmp_path):
    """Chapter 5 in the live edition with no network beyond 127.0.0.1: all cells run;
    unticking CR0.WP in the page changes the outcome and marks the cr0_wp row changed."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with offline_page(tmp_path, site) as (page, errors, blocked):
        page.set_default_timeout(LITE_CHAPTER_S * 1000)
        started = time.monotonic()
        ran = _run_chapter(page, site, "05_role_explorer", LITE_CHAPTER_S)
        outcome = page.locator(".root-outcome").first
        checkbox = page.get_by_role("checkbox", name="CR0.WP").first
        outcome.scroll_into_view_if_needed()
        sync_api.expect(checkbox).to_be_checked()
        sync_api.expect(outcome).to_contain_text("no change")
        before = outcome.inner_text()
        checkbox.uncheck()
        sync_api.expect(outcome).not_to_have_text(before)
        row = page.locator(".role-view tr", has_text="base.cr0_wp").first
        sync_api.expect(row).to_contain_text("▲ changed")
        working = time.monotonic() - started
        ART.mkdir(parents=True, exist_ok=True)
        page.locator(".role-explorer").first.screenshot(path=str(ART / "lite_ch05.png"))
    _record("lite ch05 seconds", {"all cells run": round(ran, 1),
                                  "first working checkbox": round(working, 1)})
    assert blocked == [] and [e for e in errors if "favicon" not in e] == []


@pytest.mark.slow
@in_chromium
@pytest.mark.parametrize("stem", [s for s in OFFLINE if s != "05_role_explorer"])
def test_live_chapter_runs_offline(site, tmp_path, stem):
    with offline_page(tmp_path, site) as (page, errors, blocked):
        page.set_default_timeout(LITE_CHAPTER_S * 1000)
        seconds = _run_chapter(page, site, stem, LITE_CHAPTER_S)
    data = json.loads((ART / "report.json").read_text()) if (ART / "report.json").exists() else {}
    _record("lite chapter seconds", {**data.get("lite chapter seconds", {}), stem: round(seconds, 1)})
    assert blocked == [] and [e for e in errors if "favicon" not in e] == []


@in_chromium
def test_live_lab_runs_to_the_end_unanswered(site, tmp_path):
    """A lab's student copy in the live edition: the problems are generated and checked in
    the browser, Run All is not stopped by an unanswered exercise (every cell the page holds
    is numbered, no error output), and the first check says "not answered yet".  (That each check
    says it exactly once is tests/test_student_copies.py's, headless: JupyterLab renders only
    the cells near the view, so the page does not hold every output at once.)"""
    with offline_page(tmp_path, site) as (page, errors, blocked):
        page.set_default_timeout(LITE_CHAPTER_S * 1000)
        _, failures = _run_notebook(page, site, "labs/walks.ipynb", LITE_CHAPTER_S)
        outputs = page.locator(".jp-Notebook .jp-OutputArea-output").all_text_contents()
    assert failures == [], failures
    assert any("not answered yet" in o for o in outputs), outputs
    assert blocked == []
