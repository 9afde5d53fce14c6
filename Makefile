# The two commands the README starts with are `make lab` and `make test`;
# both set up .venv first when it is missing or older than pyproject.toml.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup lab test app student bench book lite sites clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[lab,test,book]'
	touch $(STAMP)

# LAB_ARGS / APP_ARGS pass extra server options through, e.g.
#   make lab LAB_ARGS="--no-browser --port=8899"   (tests/test_lab.py starts it this way)
lab: setup
	$(BIN)/jupyter lab notebooks/ $(LAB_ARGS)

# Both sites are built first: tests/test_book.py checks them, in chromium too.
test: setup book lite
	$(BIN)/python -m pytest

app: setup
	$(BIN)/voila notebooks/05_role_explorer.ipynb --no-browser --Voila.ip=127.0.0.1 $(APP_ARGS)

student: setup
	$(BIN)/python -m mmu.book.exercises.student exercises/ exercises/student/

# Browser assets (widget manager, Pyodide, axe-core) come from npm, pinned by package-lock.json.
NPM_STAMP := node_modules/.installed
$(NPM_STAMP): package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $(NPM_STAMP)

# The rendered book: every chapter executed (any exception fails the build; so does any
# warning, e.g. a link that does not resolve; -T prints the failing cell), static HTML in build/book.  The chapters
# are staged beside the landing page so that their links resolve inside the source tree.
# PATH: the chapters' kernel ("python3", argv "python") is this venv's interpreter.
book: setup $(NPM_STAMP) student
	rm -rf build/book build/book-src build/book-doctrees
	mkdir -p build/book-src/notebooks
	cp book/index.md build/book-src/
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
	rm -rf $(VENV) $(LITE_VENV) exercises/student .pytest_cache .hypothesis build node_modules
