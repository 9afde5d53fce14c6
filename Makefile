# The two commands the README starts with are `make lab` and `make test`;
# both set up .venv first when it is missing or older than pyproject.toml.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup lab test app student bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[lab,test]'
	touch $(STAMP)

# LAB_ARGS / APP_ARGS pass extra server options through, e.g.
#   make lab LAB_ARGS="--no-browser --port=8899"   (tests/test_lab.py starts it this way)
lab: setup
	$(BIN)/jupyter lab notebooks/ $(LAB_ARGS)

test: setup
	$(BIN)/python -m pytest

app: setup
	$(BIN)/voila notebooks/05_role_explorer.ipynb --no-browser --Voila.ip=127.0.0.1 $(APP_ARGS)

student: setup
	$(BIN)/python -m mmu.book.exercises.student exercises/ exercises/student/

bench: setup
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) exercises/student .pytest_cache .hypothesis
