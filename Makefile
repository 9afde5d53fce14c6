# The two commands the README starts with are `make lab` and `make test`;
# both set up .venv first when it is missing or older than pyproject.toml.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Jupyter servers refuse to start as root (containers, CI images) unless told.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u 2>/dev/null)),--allow-root)
# The book's start page, opened by `make lab` (the server's root is the repository,
# so student/, where `make student` writes, is reachable too).
START_PAGE := notebooks/00_start_here.ipynb

# Notebooks are committed without outputs: git runs every .ipynb through nbstripout
# (.gitattributes names the filter) when it stages or compares it, so a chapter a
# reader ran and saved shows as unchanged.  --keep-id keeps the committed cell ids;
# the extra keys are what Jupyter adds to language_info when it saves (the committed
# notebooks keep only its name).  A relative path: git runs filters from the top of
# the work tree, and each clone or worktree has its own .venv.
NBSTRIPOUT := $(VENV)/bin/nbstripout --keep-id --extra-keys "$(foreach k,codemirror_mode file_extension mimetype nbconvert_exporter pygments_lexer version,metadata.language_info.$(k))"

.PHONY: setup git-filter lab test app student grade bench book lite sites clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[lab,test,book,dev]'
	$(MAKE) --no-print-directory git-filter
	touch $(STAMP)

# Outside a git checkout (a tarball) there is nothing to set up.
git-filter:
	@if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
	    git config filter.nbstripout.clean '$(NBSTRIPOUT)' && \
	    git config filter.nbstripout.smudge cat && \
	    git config diff.ipynb.textconv '$(NBSTRIPOUT) --textconv' && \
	    echo "git filter nbstripout: set up (see .gitattributes)"; fi

# LAB_ARGS / APP_ARGS pass extra server options through, e.g.
#   make lab LAB_ARGS="--no-browser --port=8899"   (tests/test_lab.py starts it this way)
# The post-save hook keeps `git status` clean when a save changed only outputs
# (mmu/book/saving.py says why the filter alone does not).
lab: setup
	$(BIN)/jupyter lab --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/$(START_PAGE) \
	    --ContentsManager.post_save_hook=mmu.book.saving.refresh_git_index \
	    $(ALLOW_ROOT) $(LAB_ARGS)

# Both sites are built first: tests/test_book.py checks them, in chromium too.
test: setup book lite
	$(BIN)/python -m pytest

# `make app`: the role explorer alone, for classroom projection (Voila).  The page is
# app/role_explorer.ipynb, rendered with app/jupyter/voila/templates/projector (no CDN,
# the explorer on the first screen at 1280x720).  A kernel whose page was closed has
# no connection left and is shut down after KERNEL_CULL_S idle seconds.  The page has
# one view per widget, so the kernel need not echo each click's new value back
# (JUPYTER_WIDGETS_ECHO=0: one websocket message fewer per click; see
# benchmarks/explorer_latency.py).
APP_PAGE := app/role_explorer.ipynb
KERNEL_CULL_S ?= 30
app: setup
	JUPYTER_PATH="$(CURDIR)/app/jupyter$(if $(JUPYTER_PATH),:$(JUPYTER_PATH))" JUPYTER_WIDGETS_ECHO=0 \
	$(BIN)/voila $(APP_PAGE) --template=projector --no-browser --Voila.ip=127.0.0.1 \
	    --MappingKernelManager.cull_idle_timeout=$(KERNEL_CULL_S) \
	    --MappingKernelManager.cull_interval=5 \
	    $(APP_ARGS)

# make student [ROSTER=roster.csv]: student copies in student/ (one folder per student
# with a roster); make grade SUBMISSIONS=dir [ROSTER=roster.csv] [CSV=scores.csv].
# exercises/README.md explains both.
student: setup
	$(BIN)/python -m mmu.book.exercises.student exercises/ student/ $(if $(ROSTER),--roster $(ROSTER))

grade: setup
	@test -n "$(SUBMISSIONS)" || { \
	  echo "usage: make grade SUBMISSIONS=dir [ROSTER=roster.csv] [CSV=scores.csv]" >&2; exit 2; }
	$(BIN)/python -m mmu.book.exercises.grade $(SUBMISSIONS) \
	  $(if $(ROSTER),--roster $(ROSTER)) --csv $(or $(CSV),scores.csv)

# Browser assets (widget manager, Pyodide, axe-core) come from npm, pinned by package-lock.json.
NPM_STAMP := node_modules/.installed
$(NPM_STAMP): package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $(NPM_STAMP)

# The rendered book (with docs/sources.md, which the chapters cite): every chapter executed (any exception fails the build; so does any
# warning, e.g. a link that does not resolve; -T prints the failing cell), static HTML in build/book.  The chapters
# are staged beside the landing page so that their links resolve inside the source tree.
# PATH: the chapters' kernel ("python3", argv "python") is this venv's interpreter.
book: setup $(NPM_STAMP) student
	rm -rf build/book build/book-src build/book-doctrees
	mkdir -p build/book-src/notebooks build/book-src/docs
	cp book/index.md build/book-src/
	cp docs/sources.md build/book-src/docs/
	cp notebooks/*.ipynb build/book-src/notebooks/
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/sphinx-build -b html -c book -W --keep-going -q -T \
		-d build/book-doctrees build/book-src build/book

# The live edition: JupyterLite + Pyodide (from npm) + the project's own wheel, in build/lite.
# Its tools live in their own venv: jupyterlite-pyodide-kernel installs a JupyterLab
# extension that would otherwise load in `make lab` (and put a dialog in front of it).
LITE_VENV := .venv-lite
LITE_STAMP := $(LITE_VENV)/.installed
$(LITE_STAMP): pyproject.toml
	$(PY) -m venv $(LITE_VENV)
	$(LITE_VENV)/bin/pip install --quiet --upgrade pip
	$(LITE_VENV)/bin/pip install --quiet -e '.[lite]'
	touch $(LITE_STAMP)

lite: $(LITE_STAMP) $(NPM_STAMP) student
	$(LITE_VENV)/bin/python book/lite.py build/lite

# Both sites as GitHub Pages publishes them (.github/workflows/pages.yml): build/site with
# book/ and lite/ side by side and an index.html that leads to the book.
sites: book lite
	rm -rf build/site
	mkdir -p build/site
	cp -r build/book build/lite build/site/
	cp book/redirect.html build/site/index.html
	touch build/site/.nojekyll

bench: setup
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) $(LITE_VENV) student exercises/student .pytest_cache .hypothesis build node_modules
