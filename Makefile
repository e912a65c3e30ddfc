# Two commands: `make run` (set up, then serve the API and the scheduler on SQLite)
# and `make test` (install the test dependencies, then run the whole suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
FLASK := $(BIN)/flask --app wsgi

.PHONY: run test install install-test bench

run: install
	$(FLASK) db upgrade
	$(FLASK) create-token admin --if-none
	$(FLASK) run

test: install-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install-test  ## against APScheduler; see BENCHMARKS.md (W4 also needs `apt-get install wrk`)
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.run --quick

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@
