# The two commands the README starts with are `make lab` and `make test`;
# both set up .venv first when it is missing or older than pyproject.toml.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup lab test app student grade bench clean

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

bench: setup
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) student exercises/student .pytest_cache .hypothesis
