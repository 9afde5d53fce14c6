"""The book's own Sphinx extension: JupyterLab heading ids, local widget assets, lab downloads.

* :func:`jupyterlab_heading_id` -- the anchor JupyterLab gives a heading, so a chapter's
  link ``00_start_here.ipynb#Glossary`` works in JupyterLab and in the book alike;
* the widget manager (``@jupyter-widgets/html-manager``'s ``embed-amd.js`` and its fonts)
  and its AMD loader (``requirejs``) are copied from ``node_modules`` into
  ``_static/widgets`` (``npm ci`` at the repository root installs them from
  package-lock.json), so a page never asks a CDN for them;
* SVG outputs are put into the page inline, not as ``<img src=...svg>``: the book's
  figures carry a ``<title>``, a ``<desc>`` and text labels (``mmu.book.views.svg``),
  which a screen reader reaches only in inline SVG (myst-nb would give the ``<img>`` the
  file's path as its alt text);
* the saved widget state is pruned to the models the page's views reach
  (:func:`prune_widget_state`): nbclient keeps every model the kernel ever opened, the
  ones a check cell closed included, which would make chapter 05 weigh over 1 MiB;
* the landing page's ``<!-- labs -->`` marker becomes a list of download links to the
  labs' student copies (``make student`` writes them to ``student/``).
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from sphinx.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
NODE_MODULES = REPO / "node_modules"
STUDENT = REPO / "student"
LABS_MARKER = "<!-- labs -->"
BINDER_MARKER = "<!-- binder -->"
#: Binder URLs of a GitHub repository "owner/name": JupyterLab at chapter 0, and the role
#: explorer alone in Voila (.binder/ says what Binder installs).
BINDER = "https://mybinder.org/v2/gh/{repo}/HEAD?urlpath={path}"
BINDER_LAB = "lab/tree/notebooks/00_start_here.ipynb"
BINDER_VOILA = "voila/render/app/role_explorer.ipynb"

#: (source under node_modules, name under _static/widgets).  The html-manager's fonts
#: (FontAwesome, for icon buttons) sit beside embed-amd.js, which finds them relative
#: to its own URL; the source map is left out (the page does not need it).
WIDGET_ASSETS = (("requirejs/require.js", "require.min.js"),
                 ("@jupyter-widgets/html-manager/dist", ""))


def jupyterlab_heading_id(title: str) -> str:
    """JupyterLab's heading id: the heading's text with each space replaced by ``-``
    (``createHeaderId`` in @jupyterlab/rendermime's renderers.ts); case and punctuation
    are kept."""
    return title.strip().replace(" ", "-")


def _check_assets(app) -> None:
    missing = [src for src, _ in WIDGET_ASSETS if not (NODE_MODULES / src).exists()]
    if missing:
        raise ConfigError(f"widget assets {missing} are not in {NODE_MODULES}: run "
                          "`npm ci` at the repository root (make book does)")
    if not any(STUDENT.glob("*.ipynb")):
        raise ConfigError(f"no student copies in {STUDENT}: run `make student` first "
                          "(make book does)")


def _copy_assets(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    dest = Path(app.outdir) / "_static" / "widgets"
    for src, name in WIDGET_ASSETS:
        path = NODE_MODULES / src
        if path.is_dir():
            shutil.copytree(path, dest / name, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("*.map", "embed.js*", "libembed-amd.js"))
        else:
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest / name)


def lab_title(path: Path) -> str:
    """The H1 of a lab notebook, without the ``#``; the file name if it has none."""
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return path.stem


def labs_markdown(docdir: Path) -> str:
    """One bullet per student copy: its title, a download link (MyST ``{download}``) and
    a link to the same copy in the live edition (``make lite`` puts them under labs/)."""
    items = []
    for path in sorted(STUDENT.glob("*.ipynb")):
        rel = os.path.relpath(path, docdir)
        live = f"../lite/lab/index.html?path=labs/{path.name}"
        items.append(f"* {lab_title(path)}: {{download}}`{path.name} <{rel}>`, or "
                     f'<a href="{live}">open it in the live edition</a>')
    return "\n".join(items)


def binder_markdown(repo: str | None) -> str:
    """The landing page's Binder line: links when the GitHub repository is known
    (``GITHUB_REPOSITORY``, set in GitHub Actions), else how to make them."""
    if repo:
        lab = BINDER.format(repo=repo, path=BINDER_LAB)
        voila = BINDER.format(repo=repo, path=BINDER_VOILA)
        return (f"* **Binder**: [JupyterLab at chapter 0]({lab}) or [the role explorer as an "
                f"app (Voilà)]({voila}): a Jupyter server in the cloud with numpy and "
                "matplotlib, nothing to install (it takes a minute or two to start).")
    return ("* **Binder**: when this repository is on GitHub, "
            f"`{BINDER.format(repo='<owner>/<repository>', path=BINDER_LAB)}` opens it in "
            "JupyterLab in the cloud (`.binder/` says what Binder installs).")


def _fill_markers(app, docname, source) -> None:
    if LABS_MARKER in source[0]:
        docdir = (Path(app.srcdir) / docname).parent
        source[0] = source[0].replace(LABS_MARKER, labs_markdown(docdir))
    if BINDER_MARKER in source[0]:
        source[0] = source[0].replace(
            BINDER_MARKER, binder_markdown(os.environ.get("GITHUB_REPOSITORY")))


def _inline_svg(app, doctree, docname) -> None:
    """Replace each image node of an SVG output by the SVG itself (raw HTML)."""
    from docutils import nodes
    if app.builder.format != "html":
        return
    for img in list(doctree.findall(nodes.image)):
        uri = img.get("uri", "")
        if not uri.endswith(".svg"):
            continue
        path = Path(app.srcdir) / uri
        if not path.is_file():
            path = Path(uri)
        if not path.is_file():
            continue
        text = path.read_text()
        text = text[text.index("<svg"):]            # drop any XML declaration / doctype
        img.replace_self(nodes.raw("", f'<div class="mmu-svg-output">{text}</div>',
                                   format="html"))


_VIEW = re.compile(r'<script type="application/vnd\.jupyter\.widget-view\+json">(.*?)</script>', re.S)
_MODEL_REF = re.compile(r"IPY_MODEL_([0-9a-f]+)")


def prune_widget_state(state: dict, roots: set[str]) -> dict:
    """The widget state (``{"state": {model_id: model}, ...}``) with only the models that
    the view models ``roots`` reach through their ``IPY_MODEL_<id>`` references (children,
    layouts, styles).  A closed widget's model is in nbclient's saved state although no
    page can show it: ``NotebookClient.handle_comm_msg`` records every comm's state and
    never drops one on ``comm_close`` (nbclient 0.10)."""
    models = state["state"]
    keep, todo = set(), [r for r in roots if r in models]
    while todo:
        mid = todo.pop()
        if mid in keep:
            continue
        keep.add(mid)
        todo.extend(r for r in _MODEL_REF.findall(json.dumps(models[mid]["state"]))
                    if r in models and r not in keep)
    return {**state, "state": {k: v for k, v in models.items() if k in keep}}


def _prune_saved_widgets(app, doctree) -> None:
    from docutils import nodes
    from myst_nb.sphinx_ import NbMetadataCollector
    js = NbMetadataCollector.get_js_files(app.env, app.env.docname)
    if "ipywidgets_state" not in js:
        return
    _, kwargs = js["ipywidgets_state"]
    roots = {json.loads(body)["model_id"] for raw in doctree.findall(nodes.raw)
             for body in _VIEW.findall(raw.astext())}
    state = prune_widget_state(json.loads(kwargs["body"]), roots)
    # the same escaping myst-nb's sanitize_script_content applies
    kwargs["body"] = json.dumps(state).replace("</script>", r"<\/script>")


def setup(app):
    app.connect("doctree-read", _prune_saved_widgets)
    app.connect("builder-inited", _check_assets)
    app.connect("source-read", _fill_markers)
    app.connect("doctree-resolved", _inline_svg)
    app.connect("build-finished", _copy_assets)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
