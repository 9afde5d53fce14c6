"""Sphinx configuration of the rendered book (`make book` -> build/book).

Sphinx + myst-nb execute every chapter on a fresh kernel (the build fails on the first
exception) and render it with sphinx-book-theme.  Everything a page loads is served by
the site itself: the widget manager comes from npm (see ``_ext/mmu_book.py``), the
theme ships its own fonts and icons, and no chapter has math, so no MathJax is loaded.
"""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

project = "mmu-roles"
author = "mmu-roles contributors"
copyright = "mmu-roles contributors, MIT licence"

extensions = ["myst_nb", "mmu_book"]
root_doc = "index"
# `make book` stages this folder and notebooks/*.ipynb into build/book-src (sphinx-build
# -c book): a chapter must sit under the source folder for its links to resolve.
exclude_patterns = ["_build", "**/.ipynb_checkpoints", "_ext"]

# -- execution: every chapter, every build, on this interpreter's kernel ---------------
nb_execution_mode = "force"
nb_execution_raise_on_error = True   # an exception in any chapter fails the build
nb_execution_show_tb = True
nb_execution_timeout = 300
nb_execution_in_temp = False         # chapters run in notebooks/, as in JupyterLab
nb_merge_streams = True

# -- links: heading anchors as JupyterLab makes them --------------------------------
# JupyterLab gives a heading the id of its text with spaces turned into "-", keeping
# case ("## Glossary" -> #Glossary); the chapters link that way, so the book resolves
# `00_start_here.ipynb#Glossary` with the same rule instead of a lower-cased slug.
myst_heading_anchors = 3
myst_heading_slug_func = "mmu_book.jupyterlab_heading_id"
myst_enable_extensions = ["colon_fence"]

# -- the sources page -----------------------------------------------------------------
# docs/sources.md (staged into the book as docs/sources) marks its citable entries with
# raw HTML anchors, <a id="facts-2-3"></a>, which GitHub and the rendered page both keep
# but which MyST does not know as targets: a chapter's link to one is resolved to that
# anchor with a "local id not found" warning.  Exactly the ids the page has are exempt, so
# a link to an id it lacks still fails the build (tests/test_sources.py checks the same).
import re as _re

_SOURCES_IDS = _re.findall(r'<a id="([^"]+)"></a>', (HERE.parent / "docs" / "sources.md").read_text())
nitpick_ignore = [("myst", i) for i in _SOURCES_IDS]

# -- widgets: embed manager and its AMD loader from the site itself ------------------
# (paths are relative to _static; mmu_book copies them there from node_modules)
nb_ipywidgets_js = {
    "widgets/require.min.js": {},
    "widgets/config.js": {},
    "widgets/a11y.js": {},
    "widgets/embed-amd.js": {
        # Only ipywidgets' own modules are used, and they are inside embed-amd.js.  A
        # third-party widget would be fetched from here: a local path, so it fails in
        # the browser test instead of quietly reaching a CDN.
        "data-jupyter-widgets-cdn": "_static/widgets/npm/",
    },
}

# -- HTML ------------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = "mmu-roles: KVM's MMU roles, live"
html_static_path = ["_static"]
html_css_files = ["book.css"]
html_favicon = "_static/favicon.svg"
html_theme_options = {
    "home_page_in_toc": True,
    "show_navbar_depth": 1,
    "use_download_button": True,
    "use_fullscreen_button": False,
    "navigation_with_keys": False,
}
# The theme's light/dark switch reads this; left empty it logs a console error.
html_context = {"default_mode": "light"}
html_last_updated_fmt = None
html_copy_source = False
html_show_sourcelink = False
