# Two commands do everything on a fresh clone: `make demo` and `make test`.
# Each sets up .venv first (idempotent: a stamp file skips the install when nothing changed).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OPENSPEC_DIR := $(VENV)/openspec
OPENSPEC := $(OPENSPEC_DIR)/node_modules/.bin/openspec
OPENSPEC_VERSION := 1.13.2
TEST_WORKERS ?= 2
# OpenSpec sends usage telemetry unless told not to: nothing the project runs reaches the network.
export OPENSPEC_TELEMETRY := 0
export DO_NOT_TRACK := 1

.PHONY: setup demo test

setup: $(STAMP) $(OPENSPEC)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

$(OPENSPEC):
	npm install --silent --no-audit --no-fund --prefix $(OPENSPEC_DIR) @fission-ai/openspec@$(OPENSPEC_VERSION)

demo: $(STAMP)
	$(PY) -m src.demo

test: setup
	$(PY) -m ruff check src tests bench
	$(OPENSPEC) validate --all --strict --no-interactive
	# stdin closed: a command a test starts that would wait for a terminal fails instead of waiting forever.
	# Two workers, one torch thread each (tests/conftest.py), a whole test file per worker (module fixtures are
	# built once); xdist hands out the files with many (quick) tests first, so each worker mixes quick files
	# with the multi-process runs. TEST_WORKERS=0 runs everything in this one process.
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile < /dev/null
