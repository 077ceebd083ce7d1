# Two commands do all the set-up: `make run` and `make test` create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.runtime-installed
TEST_STAMP := $(VENV)/.test-installed

.PHONY: run test venv bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(RUNTIME_STAMP): requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

# The Ray engine's test runs in the suite (it fails, not skips, in CI without Ray), so tests install the extra.
$(TEST_STAMP): requirements-test.txt requirements-ray.txt $(RUNTIME_STAMP)
	$(BIN)/python -m pip install -q -r requirements-test.txt -r requirements-ray.txt
	touch $@

venv: $(RUNTIME_STAMP)

# A checkout keeps its downloads in its own weights/ (parts2whole/core/weights.py: the one rule).
export P2W_WEIGHTS_DIR ?= $(CURDIR)/weights

run: $(RUNTIME_STAMP)
	$(BIN)/python app.py $(ARGS)

# `pip check` first: an inconsistent dependency set fails the suite.
test: $(TEST_STAMP)
	$(BIN)/python -m pip check
	$(BIN)/python -m pytest

bench: $(RUNTIME_STAMP)
	$(BIN)/python bench/bench_pipeline.py

clean:
	rm -rf $(VENV)
