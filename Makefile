# The two commands of the quick start are `make demo` and `make test`; each creates what it
# needs. `make check` adds ruff and mypy --strict.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv demo test lint typecheck check lock clean

$(STAMP): pyproject.toml requirements/dev.lock
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "hopper needs Python 3.11 or later (PYTHON=$(PYTHON))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		-c requirements/dev.lock -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/hopper run examples/datasets --mode prefixes --target examples/worker.py:handler

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

lock: $(STAMP)
	{ echo "# Exact versions the test suite runs against; the Makefile installs with these as constraints."; \
	  echo "# Regenerate: make lock"; \
	  $(BIN)/pip freeze --exclude-editable | grep -v '^hopper'; } > requirements/dev.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
