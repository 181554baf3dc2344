# The two commands of the quick start are `make demo` and `make test`; each creates what it
# needs. `make demo` installs the runtime alone (runtime.lock); `make test`, `check` and `bench`
# add the dev toolchain (dev.lock) to the same .venv. `make check` adds ruff and mypy --strict.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.runtime
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check
PYTEST_ARGS ?=
# Tools with pins of their own live in venvs of their own: checkov (template lint) and
# ministack (the emulator the end-to-end tests run real Lambda functions on).
CHECKOV := .venv-checkov/bin/checkov
MINISTACK := .venv-ministack/bin/ministack

.PHONY: venv tools demo test unit bench lint typecheck check lock clean

$(RUNTIME): pyproject.toml requirements/runtime.lock
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "hopper needs Python 3.11 or later (PYTHON=$(PYTHON))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) -c requirements/runtime.lock -e .
	touch $(RUNTIME)

$(STAMP): $(RUNTIME) requirements/dev.lock
	$(PIP) -c requirements/dev.lock -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

$(CHECKOV): requirements/checkov.lock
	$(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/python -m pip install --quiet --disable-pip-version-check -r requirements/checkov.lock
	touch $@

$(MINISTACK): requirements/ministack.lock
	$(PYTHON) -m venv .venv-ministack
	.venv-ministack/bin/python -m pip install --quiet --disable-pip-version-check -r requirements/ministack.lock
	touch $@

tools: $(CHECKOV) $(MINISTACK)

demo: $(RUNTIME)
	$(BIN)/hopper run examples/datasets --mode prefixes --target examples/worker.py:handler
	@echo
	@echo "hopper is installed in $(VENV): run $(BIN)/hopper --help, or source $(BIN)/activate first."

test: $(STAMP) tools
	HOPPER_REQUIRE_TOOLS=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

# The unit tier alone (no I/O), without the tests marked slow: a few seconds.
unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit -m "not slow" $(PYTEST_ARGS)

# Ratios against baselines measured in the same run; rewrites BENCHMARKS.md. Needs node.
bench: $(STAMP)
	$(BIN)/python benchmarks/suite.py --write

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
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet --disable-pip-version-check -c requirements/dev.lock .
	{ echo "# The runtime's exact versions, the same as in dev.lock: make demo installs only these."; \
	  echo "# Regenerate: make lock"; \
	  .venv-lock/bin/pip freeze | grep -v '^hopper'; } > requirements/runtime.lock
	rm -rf .venv-lock

clean:
	rm -rf $(VENV) .venv-checkov .venv-ministack .pytest_cache .mypy_cache .ruff_cache
